"""The loop closed, measured (issue 14, item 6): on the emulated bench with impairments on and
hidden offsets (tests/data/twin_bench.py: per-band TX responses, a cable error, a noisier UE
radio, incumbents), record the greedy reference, calibrate a twin from it, meta-train one agent on
the twin and the same agent with the same budget on the default distribution (the bench config on
backend sim, as `testbed reproduce --bench` builds it), adapt both on the bench on the same seeded
tasks, and report the return at adaptation episodes 0, 1 and the last as a fraction of the
bench's per-band oracle on the same tasks (the baseline, measured in the same run), beside each
agent's return in its training simulator at episode 0 (the issue's aim: bench >= 95 % of sim).

Prints a small table and one JSON line. The default sizes took 75 s on an idle 2-core machine and
5 min on a loaded one (docs/twin.md, "The loop closed, measured").

    python benchmarks/twin_loop.py [--agent maml] [--train-episodes 180] [--train-lanes 16]
                                   [--bench-lanes 8] [--adapt-episodes 6] [--record-steps 300]
                                   [--seed 0] [--out runs/twin-loop]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests.data.twin_bench

from testbed import backends, reproduce
from testbed.agent_factory import policy_of_checkpoint
from testbed.calibrate import calibrate, describe, twin_config, write_twin
from testbed.checkpoint import load_checkpoint, read_metrics
from testbed.config import Config, load_config, save_config
from testbed.demo import run_policy
from testbed.metrics import lane_means
from testbed.runner import adapt, opened_env, train
from tests.data.twin_bench import Truth, hide
from tests.data.twin_bench import config as bench_config

AGENTS = ("maml", "ppo")     # the agents whose adaptation starts from a trained policy without memory


@contextmanager
def hidden(truth: Truth):
    """Every measured backend built in this block is the mock bench with ``truth`` hidden in it."""
    build = backends.make_backend

    def with_truth(config: Config, *args, **kwargs):
        net = build(config, *args, **kwargs)
        hide(net, truth)
        return net
    backends.make_backend = with_truth
    try:
        yield
    finally:
        backends.make_backend = build


def record_greedy(directory: Path, steps: int, seed: int) -> None:
    """``steps`` steps (whole episodes) of the greedy reference on the bench, recorded into ``directory``."""
    config = load_config(bench_config(directory), {"env": {"seed": seed}})
    with opened_env(config) as env:
        run_policy(env, "greedy", max(1, steps // config.network.episode_steps), seed, tqdm(disable=True))


def oracle_episodes(config: Config, episodes: int, run_dir: Path) -> list[dict]:
    """The per-band oracle on ``config``'s backend, seeded as an adaptation: each episode's metrics (means
    over lanes)."""
    with opened_env(config, run_dir) as env:
        rows = run_policy(env, "oracle", episodes, config.env.seed, tqdm(disable=True))
    return [lane_means([r for r in rows if r["episode"] == e]) for e in range(episodes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", choices=AGENTS, default="maml")
    parser.add_argument("--train-episodes", type=int, default=180, help="training episodes of each agent (sim)")
    parser.add_argument("--train-lanes", type=int, default=16, help="env lanes in training (MAML: tasks per batch)")
    parser.add_argument("--bench-lanes", type=int, default=8, help="env lanes adapting on the bench (and in sim)")
    parser.add_argument("--adapt-episodes", type=int, default=6, help="adaptation episodes (points 0, 1, last)")
    parser.add_argument("--record-steps", type=int, default=300, help="greedy steps recorded for the calibration")
    parser.add_argument("--seed", type=int, default=0, help="env seed of recording, training and adaptation")
    parser.add_argument("--out", default="runs/twin-loop", help="a fresh folder for the recording and run folders")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        parser.error(f"--out {out} is not empty; give a fresh folder (its runs would resume, not be timed)")
    if args.adapt_episodes < 2:
        parser.error(f"--adapt-episodes={args.adapt_episodes} must be at least 2 (points 0, 1 and the last)")
    points = sorted({0, 1, args.adapt_episodes - 1})
    wall, clock = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        wall[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()
        print(f"{name}: {wall[name]} s", file=sys.stderr, flush=True)

    with hidden(Truth()):
        record_greedy(out / "recording", args.record_steps, args.seed)
        lap("record")
        fit, recording = calibrate(out / "recording")
        twin_path = write_twin(out / "twin.yaml", twin_config(fit, recording.config), describe(fit, recording))
        save_config(bench_config(), out / "bench.yaml")
        lap("calibrate")
        sizes = {"env": {"num_envs": args.train_lanes, "seed": args.seed},
                 "agent": {"episodes": args.train_episodes, "checkpoint_every": args.train_episodes}}
        lanes = {"env": {"num_envs": args.bench_lanes, "seed": args.seed}}
        figures = {}
        for name, twin in (("twin", str(twin_path)), ("default", None)):
            sim, bench = reproduce.experiment_configs(str(out / "bench.yaml"), False, True, twin)
            train_dir = train(load_config(sim, sizes), args.agent, out / f"train-{name}", progress=False)
            lap(f"train on the {name}")
            policy = policy_of_checkpoint(load_checkpoint(train_dir / "checkpoints" / "latest.pt"))
            in_sim = adapt(load_config(sim, lanes), args.agent, policy, args.adapt_episodes, out / f"adapt-sim-{name}",
                           progress=False)
            on_bench = adapt(load_config(bench, lanes), args.agent, policy, args.adapt_episodes,
                             out / f"adapt-bench-{name}", progress=False)
            lap(f"adapt the {name}'s agent (sim and bench)")
            figures[name] = {"sim": read_metrics(in_sim / "metrics.jsonl"),
                             "bench": read_metrics(on_bench / "metrics.jsonl"),
                             "sim_oracle": oracle_episodes(load_config(sim, lanes), 1, out / f"oracle-sim-{name}")}
        oracle = oracle_episodes(load_config(bench, lanes), args.adapt_episodes, out / "oracle-bench")
        lap("oracle on the bench")

    result = {"agent": args.agent, "sizes": {k: v for k, v in vars(args).items() if k not in ("agent", "out")},
              "out": str(out), "wall_s": {**wall, "total": round(sum(wall.values()), 1)},
              "calibration": {"twin_sinr_error_db": fit.quality["twin"], "default_sinr_error_db": fit.quality["default"]},
              "oracle_return": {str(p): oracle[p]["return"] for p in points},
              "oracle_throughput_mbps": {str(p): oracle[p]["throughput_mbps"] for p in points}}
    for name, f in figures.items():
        bench, sim = f["bench"], f["sim"]
        result[name] = {"bench_return": {str(p): bench[p]["return"] for p in points},
                        "fraction_of_oracle": {str(p): bench[p]["return"] / oracle[p]["return"] for p in points},
                        "throughput_fraction_of_oracle": {str(p): bench[p]["throughput_mbps"]
                                                          / oracle[p]["throughput_mbps"] for p in points},
                        "sim_return_0": sim[0]["return"], "bench_over_sim_0": bench[0]["return"] / sim[0]["return"],
                        "sim_fraction_of_oracle_0": sim[0]["return"] / f["sim_oracle"][0]["return"]}
    print(f"{args.agent}, {args.train_episodes} training episodes x {args.train_lanes} lanes in sim; "
          f"adapted {args.adapt_episodes} episodes x {args.bench_lanes} lanes on the bench; seed {args.seed}")
    print("| trained on | " + " | ".join(f"bench ep {p} / oracle" for p in points)
          + f" | throughput / oracle, ep {points[-1]} | sim ep 0 / sim oracle | sim return ep 0 | bench return ep 0"
          + " | bench / sim |")
    print("|---" * (len(points) + 6) + "|")
    for name in figures:
        r = result[name]
        print(f"| {name} | " + " | ".join(f"{r['fraction_of_oracle'][str(p)]:.3f}" for p in points)
              + f" | {r['throughput_fraction_of_oracle'][str(points[-1])]:.3f} | {r['sim_fraction_of_oracle_0']:.3f}"
              + f" | {r['sim_return_0']:.2f}"
              + f" | {r['bench_return']['0']:.2f} | {r['bench_over_sim_0']:.3f} |")
    print("| (oracle return) | " + " | ".join(f"{oracle[p]['return']:.2f}" for p in points) + " | | | | | |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
