"""End-to-end training throughput (env stepping, acting and learning) of every agent on the
default (paper) config, against the env alone stepped with random actions at the same N in the
same run. Prints one JSON line.

Samples/s = env lanes x steps per second of wall time, updates included.
Usage: python benchmarks/train_throughput.py [--num-envs 256] [--episodes 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from testbed.agent_factory import agent_config, make_agent
from testbed.config import load_config
from testbed.env import SpectrumVectorEnv

TARGET_PPO_SAMPLES_PER_S = 30_000


def env_only(num_envs: int, steps: int) -> float:
    """Env-steps/s with random actions (the baseline)."""
    env = SpectrumVectorEnv("paper", num_envs=num_envs)
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 4, size=(num_envs, 15)) for _ in range(16)]
    env.reset(seed=0)
    for i in range(10):
        env.step(pool[i % 16])
    start = time.perf_counter()
    for i in range(steps):
        env.step(pool[i % 16])
    return num_envs * steps / (time.perf_counter() - start)


def training(name: str, num_envs: int, episodes: int) -> float:
    """Samples/s of ``episodes`` training episodes after one warm-up episode."""
    config = agent_config(name, load_config("paper", {"env": {"num_envs": num_envs}}), "train")
    env = SpectrumVectorEnv(config)
    agent = make_agent(name, env, config, "train", seed=0)
    agent.start(env, seed=0)
    agent.run_episode(env)
    start = time.perf_counter()
    for _ in range(episodes):
        agent.run_episode(env)
    elapsed = time.perf_counter() - start
    return num_envs * config.network.episode_steps * episodes / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=256, help="env lanes of the headline PPO figure")
    parser.add_argument("--episodes", type=int, default=3, help="timed episodes per agent (after one warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    default_n = load_config("paper").env.num_envs
    results = {}
    for n in sorted({default_n, args.num_envs}):
        env_rate = env_only(n, 300)
        row = {"env_only_steps_per_s": round(env_rate)}
        for name in ("ppo", "maml", "rnn", "rnn_attention"):
            if name != "ppo" and n != default_n:
                continue
            rate = training(name, n, args.episodes)
            row[name] = {"samples_per_s": round(rate), "fraction_of_env_only": round(rate / env_rate, 3)}
        results[f"num_envs_{n}"] = row
    ppo = results[f"num_envs_{args.num_envs}"]["ppo"]["samples_per_s"]
    print(json.dumps({"benchmark": "train_throughput", "config": "paper", "threads": args.threads,
                      "results": results, "ppo_samples_per_s": ppo,
                      "target_ppo_samples_per_s": TARGET_PPO_SAMPLES_PER_S,
                      "meets_target": ppo >= TARGET_PPO_SAMPLES_PER_S}))


if __name__ == "__main__":
    main()
