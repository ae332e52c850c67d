"""Env-steps/s of the vector env at N = 1, 256, 4096 (default config), against 4096 single envs
stepped in a Python loop, measured in the same run. Prints one JSON line.

Each figure runs in its own child process so its peak memory (max RSS) is its own.
``--against REF`` instead measures the git revision REF (exported to a temporary folder, removed
afterwards) beside the working tree: the vector env and the simulator's step alone at each N, and one
Gymnasium ``SpectrumEnv`` (``single_n1``), the two trees interleaved (A, B, A, B, ...) ``--rounds``
times, medians and their ratio (working tree / REF).
``--compiled`` measures the simulator's step through torch.compile beside the eager one (interleaved,
medians, ratio; compile time apart).
Usage: python benchmarks/env_throughput.py [--steps 200] [--device cpu] [--against HEAD~1 --rounds 3]
       python benchmarks/env_throughput.py --compiled [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def sim_rate(num_envs: int, steps: int, device: str, compiled: bool = False) -> dict:
    """The simulator's step alone (``SimNetwork.step``, no observation, no info); ``compiled``: through
    torch.compile, its compile time (the first steps) reported apart."""
    from sim.network import SimNetwork
    from testbed.config import load_config
    from testbed.env import make_network

    config = load_config("paper")
    net = (SimNetwork(config.network, config.task_ranges, num_envs, device, compiled=True) if compiled
           else make_network(config, num_envs, device))
    gen = torch.Generator().manual_seed(0)
    pool = [torch.randint(0, 4, (num_envs, 3, 5), generator=gen).to(net.device) for _ in range(16)]
    net.reset(seed=0)
    start = time.perf_counter()
    for i in range(10):
        net.step(pool[i % 16])
    warmup_s = time.perf_counter() - start
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        net.step(pool[i % 16])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"env_steps_per_s": num_envs * steps / (time.perf_counter() - start), "warmup_s": warmup_s}


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
    import testbed

    torch.set_num_threads(torch.get_num_threads())
    if kind == "vector":
        out = vector_rate(num_envs, steps, device)
    elif kind in ("sim", "sim_compiled"):
        out = sim_rate(num_envs, steps, device, compiled=kind == "sim_compiled")
    else:
        out = loop_rate(num_envs, steps)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["tree"] = str(Path(testbed.__file__).resolve().parents[1])
    print(json.dumps(out))


def run_child(kind: str, num_envs: int, steps: int, device: str, tree: Path | None = None) -> dict:
    """One figure in a fresh process; with ``tree``, the project is imported from that folder."""
    cmd = [sys.executable, __file__, "--child", kind, str(num_envs), "--steps", str(steps), "--device", device]
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree)] + [p for p in [env.get("PYTHONPATH")] if p])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} N={num_envs} failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if tree is not None and Path(result["tree"]) != tree.resolve():
        raise RuntimeError(f"the child imported the project from {result['tree']}, not from {tree}")
    return result


def export_revision(ref: str, dest: Path) -> None:
    """The files of git revision ``ref`` of this repository, written into ``dest`` (git's own state untouched)."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", ref], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"--against: git cannot export revision {ref!r}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


def against(ref: str, sizes: list[int], steps: int, rounds: int, device: str) -> dict:
    """Median env-steps/s of REF and of the working tree, measured interleaved, and their ratio: the
    simulator's step and the vector env at each N, one single env ("single", a loop over 1 env)."""
    repo = Path(__file__).resolve().parents[1]
    result = {"device": device, "config": "paper", "threads": torch.get_num_threads(), "against": ref,
              "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="env_throughput_ref_") as tmp:
        export_revision(ref, Path(tmp))
        for kind, n in [(kind, n) for kind in ("sim", "vector") for n in sizes] + [("loop", 1)]:
            n_steps = steps if n > 1 else max(steps, 1000)
            rates = {"ref": [], "tree": []}
            for _ in range(rounds):
                for name, tree in (("ref", Path(tmp)), ("tree", repo)):
                    rates[name].append(run_child(kind, n, n_steps, device, tree)["env_steps_per_s"])
            ref_rate, tree_rate = statistics.median(rates["ref"]), statistics.median(rates["tree"])
            label = "single" if kind == "loop" else kind
            result[f"{label}_n{n}_ref_steps_per_s"] = round(ref_rate)
            result[f"{label}_n{n}_tree_steps_per_s"] = round(tree_rate)
            result[f"{label}_n{n}_ratio"] = round(tree_rate / ref_rate, 2)
    return result


def compiled_against_eager(sizes: list[int], steps: int, rounds: int, device: str) -> dict:
    """Median env-steps/s of the simulator's step compiled and eager, interleaved, and their ratio."""
    result = {"device": device, "config": "paper", "threads": torch.get_num_threads(), "rounds": rounds}
    for n in sizes:
        n_steps = steps if n > 1 else max(steps, 1000)
        rates = {"sim": [], "sim_compiled": []}
        for _ in range(rounds):
            for kind in rates:
                r = run_child(kind, n, n_steps, device)
                rates[kind].append(r["env_steps_per_s"])
                if kind == "sim_compiled":
                    result[f"n{n}_compile_s"] = round(r["warmup_s"], 1)
        eager, compiled = statistics.median(rates["sim"]), statistics.median(rates["sim_compiled"])
        result[f"sim_n{n}_eager_steps_per_s"] = round(eager)
        result[f"sim_n{n}_compiled_steps_per_s"] = round(compiled)
        result[f"sim_n{n}_ratio"] = round(compiled / eager, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--loop-steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="1,256,4096", help="comma-separated N of the vector env")
    parser.add_argument("--against", metavar="REF", help="git revision to measure beside the working tree")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each tree with --against")
    parser.add_argument("--compiled", action="store_true",
                        help="the simulator's step through torch.compile against the eager one, interleaved")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.steps, args.device)
        return
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.compiled:
        print(json.dumps(compiled_against_eager([int(x) for x in args.sizes.split(",")], args.steps, args.rounds,
                                                args.device)))
        return
    if args.against:
        print(json.dumps(against(args.against, [int(x) for x in args.sizes.split(",")], args.steps, args.rounds,
                                 args.device)))
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
