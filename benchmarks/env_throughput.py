"""Env-steps/s of the vector env at N = 1, 256, 4096 (default config), against 4096 single envs
stepped in a Python loop, measured in the same run. Prints one JSON line.

Each figure runs in its own child process so its peak memory (max RSS) is its own.
Usage: python benchmarks/env_throughput.py [--steps 200] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def vector_rate(num_envs: int, steps: int, device: str) -> dict:
    from testbed.env import SpectrumVectorEnv

    env = SpectrumVectorEnv("paper", num_envs=num_envs, device=device)
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 4, size=(num_envs, 15)) for _ in range(16)]
    env.reset(seed=0)
    for i in range(10):
        env.step(pool[i % 16])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        env.step(pool[i % 16])
    elapsed = time.perf_counter() - start
    return {"env_steps_per_s": num_envs * steps / elapsed}


def loop_rate(num_envs: int, steps: int) -> dict:
    from testbed.env import SpectrumEnv

    envs = [SpectrumEnv("paper") for _ in range(num_envs)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 4, size=15) for _ in range(16)]
    start = time.perf_counter()
    for t in range(steps):
        for i, env in enumerate(envs):
            env.step(pool[(t + i) % 16])
    elapsed = time.perf_counter() - start
    return {"env_steps_per_s": num_envs * steps / elapsed}


def child(kind: str, num_envs: int, steps: int, device: str) -> None:
    torch.set_num_threads(torch.get_num_threads())
    out = vector_rate(num_envs, steps, device) if kind == "vector" else loop_rate(num_envs, steps)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(kind: str, num_envs: int, steps: int, device: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(num_envs), "--steps", str(steps), "--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} N={num_envs} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--loop-steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="1,256,4096", help="comma-separated N of the vector env")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.steps, args.device)
        return
    result = {"device": args.device, "config": "paper", "threads": torch.get_num_threads()}
    for n in (int(x) for x in args.sizes.split(",")):
        steps = args.steps if n > 1 else max(args.steps, 1000)
        r = run_child("vector", n, steps, args.device)
        result[f"vector_n{n}_steps_per_s"] = round(r["env_steps_per_s"])
        result[f"vector_n{n}_peak_rss_mb"] = round(r["peak_rss_mb"])
    loop = run_child("loop", 4096, args.loop_steps, "cpu")
    result["loop_4096_single_envs_steps_per_s"] = round(loop["env_steps_per_s"])
    result["ratio_vector_n4096_over_loop"] = round(result["vector_n4096_steps_per_s"] / loop["env_steps_per_s"], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
