"""A small grid sweep of agent hyper-parameters: one short training per grid point and seed.

Each point trains with ``testbed train`` and evaluates the final checkpoint with ``testbed
evaluate`` (argmax actions by default; the training tasks unless ``--eval-tasks test``), both as
subprocesses, then prints
a table of the final training return (mean over the last 10 % of episodes) and the evaluation
return, and writes it as CSV. Sizes are arguments, so the same script runs a quick check or a
larger sweep::

    python benchmarks/sweep_agents.py --agent ppo --episodes 100 --set network.episode_steps=50 \\
        --grid agent.gamma=0.8,0.9,0.99 --grid agent.anneal_lr=false,true --out runs/sweep-ppo
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from testbed.checkpoint import read_metrics
from testbed.config import ConfigError, load_config, save_config


def _assignment(text: str) -> tuple[str, list]:
    """'a.b=v1,v2' -> ('a.b', [v1, v2]), each value read as YAML (numbers, booleans, strings)."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: expected dotted.field=value[,value...]")
    return key, [yaml.safe_load(v) for v in values.split(",")]


def _nested(dotted: str, value) -> dict:
    head, _, rest = dotted.partition(".")
    return {head: _nested(rest, value) if rest else value}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")


def run_point(args, point: dict, seed: int, run_dir: Path) -> dict:
    """Train and evaluate one grid point with one seed; returns its row of the table."""
    overrides = {"env": {"num_envs": args.num_envs}, "agent": {"episodes": args.episodes}}
    for key, value in [*args.fixed, *point.items()]:
        overrides = _merge(overrides, _nested(key, value))
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "sweep-config.yaml"
    save_config(load_config(args.config, overrides), config_path)
    cli = [sys.executable, "-m", "testbed.cli"]
    _run([*cli, "train", "--agent", args.agent, "--config", str(config_path), "--seed", str(seed),
          "--run-dir", str(run_dir / "train")])
    returns = [row["return"] for row in read_metrics(run_dir / "train" / "metrics.jsonl")]
    last = returns[-max(1, len(returns) // 10):]
    row = {**point, "seed": seed, "train_return": float(np.mean(last))}
    if args.eval_episodes:
        _run([*cli, "evaluate", "--checkpoint", str(run_dir / "train" / "checkpoints" / "latest.pt"),
              "--episodes", str(args.eval_episodes), "--tasks", args.eval_tasks, "--run-dir", str(run_dir / "eval")])
        summary = json.loads((run_dir / "eval" / "summary.json").read_text())
        row["eval_return"] = summary["return"]["mean"]
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="ppo", choices=("ppo", "maml", "rnn", "rnn_attention"))
    parser.add_argument("--config", default="paper", help="YAML path or preset name (default: paper)")
    parser.add_argument("--episodes", type=int, default=100, help="training episodes per point (default: 100)")
    parser.add_argument("--num-envs", type=int, default=16, help="env lanes (default: 16)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of every point (default: 0)")
    parser.add_argument("--eval-episodes", type=int, default=4, help="evaluation episodes, 0 for none (default: 4)")
    parser.add_argument("--eval-tasks", default="train", choices=("train", "test"),
                        help="task distribution of the evaluation (default: train, the one trained on)")
    parser.add_argument("--grid", type=_assignment, action="append", default=[], metavar="FIELD=V1,V2",
                        help="a swept field and its values (repeat for a grid)")
    parser.add_argument("--set", dest="fixed", type=_assignment, action="append", default=[], metavar="FIELD=V",
                        help="a fixed field of every point (repeatable)")
    parser.add_argument("--workers", type=int, default=1, help="points trained at once (default: 1)")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"), help="folder of runs and sweep.csv")
    args = parser.parse_args(argv)
    if any(len(values) != 1 for _, values in args.fixed):
        parser.error("--set takes one value per field")
    args.fixed = [(key, values[0]) for key, values in args.fixed]
    keys = [key for key, _ in args.grid]
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(values for _, values in args.grid))]
    jobs = [(point, seed, args.out / ("-".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()) or "default")
             / f"seed{seed}") for point in points for seed in args.seeds]
    try:
        load_config(args.config, _nested("env.num_envs", args.num_envs))
        with ThreadPoolExecutor(args.workers) as pool:
            rows = list(pool.map(lambda job: run_point(args, *job), jobs))
    except (ConfigError, RuntimeError) as exc:
        sys.exit(f"sweep_agents: {exc}")
    columns = list(rows[0])
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()))
    print(f"wrote {args.out / 'sweep.csv'}")
    return rows


if __name__ == "__main__":
    main()
