"""sb3-contrib MaskablePPO on the single env, masking the levels the safety filter would zero.

    python examples/maskable_ppo.py --timesteps 20000

``env.action_masks()`` gives, per action dimension (a base station and band), which power levels
the next step allows: level 0 always, the others only where the safety mask opens the band.
MaskablePPO finds the method through the wrappers on its own. After training, one masked
episode is played: the filter never has to block a request. Prints one JSON line.
"""
import argparse
import json

import gymnasium
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.utils import get_action_masks

import testbed  # noqa: F401  (registers testbed/SpectrumAllocation-v0)

parser = argparse.ArgumentParser(description="MaskablePPO on testbed/SpectrumAllocation-v0")
parser.add_argument("--timesteps", type=int, default=20_000, help="env steps to train for")
parser.add_argument("--config", default="paper", help="preset name or YAML path")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

env = gymnasium.make("testbed/SpectrumAllocation-v0", config=args.config)
model = MaskablePPO("MlpPolicy", env, n_steps=500, batch_size=100, seed=args.seed, verbose=0)
model.learn(total_timesteps=args.timesteps)

# one evaluation episode, masked the same way
obs, info = env.reset(seed=args.seed + 1)
masked_requests, done = 0, False
while not done:
    action, _ = model.predict(obs, action_masks=get_action_masks(env), deterministic=True)
    obs, reward, terminated, truncated, info = env.step(action)
    masked_requests += int((info["requested_level"][~info["mask"]] > 0).sum())  # levels > 0 on closed bands
    done = terminated or truncated
# info["episode_metrics"]["blocked_unsafe"]: requests the filter zeroed in the episode
print(json.dumps({"timesteps": model.num_timesteps, "masked_requests": masked_requests, **info["episode_metrics"]}))
