"""Stable-Baselines3 PPO on the single env; SB3's Monitor logs the paper's episode metrics.

    python examples/sb3_ppo.py --timesteps 20000 --log-dir runs/sb3

At the last step of each episode the env puts the metrics in ``info`` under ``EPISODE_INFO_KEYS``
(``episode_throughput_mbps``, ``episode_sinr_violations``, ...). ``Monitor(info_keywords=...)``
copies them into ``info["episode"]``, which SB3 keeps in ``model.ep_info_buffer``, and into
``monitor.csv``. Prints one JSON line: the means over the last (up to 100) episodes.
"""
import argparse
import json
from pathlib import Path

import gymnasium
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor

import testbed  # noqa: F401  (registers testbed/SpectrumAllocation-v0)
from testbed.env import EPISODE_INFO_KEYS

parser = argparse.ArgumentParser(description="SB3 PPO on testbed/SpectrumAllocation-v0")
parser.add_argument("--timesteps", type=int, default=20_000, help="env steps to train for")
parser.add_argument("--config", default="paper", help="preset name or YAML path")
parser.add_argument("--log-dir", default=None, help="folder for Monitor's monitor.csv")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

if args.log_dir:
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
env = gymnasium.make("testbed/SpectrumAllocation-v0", config=args.config)
env = Monitor(env, args.log_dir, info_keywords=EPISODE_INFO_KEYS)

model = PPO("MlpPolicy", env, n_steps=500, batch_size=100, seed=args.seed, verbose=0)
model.learn(total_timesteps=args.timesteps)

episodes = list(model.ep_info_buffer)
summary = {key: float(np.mean([ep[key] for ep in episodes])) for key in ("r", *EPISODE_INFO_KEYS)}
print(json.dumps({"timesteps": model.num_timesteps, "episodes": len(episodes), **summary}))
