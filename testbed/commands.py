"""The handlers of the `testbed` subcommands (`demo`, `train`, `adapt`, `evaluate`, `reproduce`)
and their argument parsers; errors of a run become a message and an exit status."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from testbed.agent_factory import AGENTS, RunError, policy_of_checkpoint
from testbed.checkpoint import CheckpointError, load_checkpoint
from testbed.config import Config, load_config
from testbed.demo import run_demo
from testbed.reproduce import reproduce
from testbed.runner import EXIT_BACKEND, RADIO_ERRORS, BackendFailure, adapt, evaluate, train


def _checkpoint_config(args, ck: dict) -> Config:
    """The checkpoint's config, or ``--config`` (backend, radios, sizes) with the checkpoint's agent
    section; tasks from ``--tasks``."""
    tasks = {"env": {"task_distribution": args.tasks}}
    if args.config is None:
        return load_config(ck["config"], tasks)
    return load_config(args.config, {"agent": ck["config"]["agent"], **tasks})


def _run_dir(args, config: Config, default: str) -> Path:
    return Path(args.run_dir) if args.run_dir else Path(config.run.out_dir) / f"{default}-{time.strftime('%Y%m%d-%H%M%S')}"


def _cmd_demo(args) -> int:
    overrides = {"run": {"out_dir": args.out}} if args.out else {}
    run_demo(load_config(args.config, overrides), args.episodes)
    return 0


def _cmd_train(args) -> int:
    overrides = {"agent": {"episodes": args.episodes}} if args.episodes else {}
    if args.seed is not None:
        overrides["env"] = {"seed": args.seed}
    config = load_config(args.config, overrides)
    run_dir = train(config, args.agent, args.run_dir)
    print(f"run folder: {run_dir}")
    return 0


def _cmd_adapt(args) -> int:
    ck = load_checkpoint(args.checkpoint)
    config = _checkpoint_config(args, ck)
    run_dir = _run_dir(args, config, f"adapt-{ck['agent']}")
    policy = policy_of_checkpoint(ck)
    adapt(config, ck["agent"], policy, args.episodes, run_dir)
    print(f"run folder: {run_dir}")
    return 0


def _cmd_evaluate(args) -> int:
    ck = load_checkpoint(args.checkpoint)
    config = _checkpoint_config(args, ck)
    run_dir = _run_dir(args, config, f"evaluate-{ck['agent']}")
    summary = evaluate(config, ck["agent"], policy_of_checkpoint(ck), args.episodes, run_dir)
    print(f"\n{ck['agent']} on {args.tasks} tasks, {args.episodes} episodes x {config.env.num_envs} networks "
          f"(mean ± std over episodes)")
    for k, v in summary.items():
        print(f"  {k:>20}: {v['mean']:.4g} ± {v['std']:.2g}")
    print(f"run folder: {run_dir}")
    return 0


def _cmd_reproduce(args) -> int:
    out = reproduce(args.config, quick=args.quick, num_seeds=args.seeds, out_dir=args.out, workers=args.workers)
    print(f"results: {out}")
    return 0


def _guarded(func):
    """Run a command; turn our errors into a message and an exit status."""
    def run(args) -> int:
        try:
            return func(args)
        except BackendFailure as err:
            print(f"\nerror: {err}\nThe metrics of the finished episodes and the last checkpoint are saved in "
                  f"{err.run_dir}. Check the radios and rerun the same command with --run-dir {err.run_dir} "
                  f"to continue.", file=sys.stderr)
            return EXIT_BACKEND
        except (CheckpointError, RunError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except RADIO_ERRORS as err:
            print(f"\nerror: radio backend failed before the first episode: {err}\nCheck the radios and rerun.",
                  file=sys.stderr)
            return EXIT_BACKEND
    return run


def add_commands(subparsers) -> None:
    """Add `demo`, `train`, `adapt`, `evaluate` and `reproduce` to the `testbed` command."""
    p = subparsers.add_parser("demo", help="run the reference policies on a simulated network")
    p.add_argument("--config", default="paper", help="YAML path or preset name (default: paper)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per policy (default: run.episodes)")
    p.add_argument("--out", default=None, help="output folder (default: run.out_dir)")
    p.set_defaults(func=_cmd_demo)

    p = subparsers.add_parser("train", help="(meta-)train an agent on the task stream")
    p.add_argument("--agent", required=True, choices=AGENTS)
    p.add_argument("--config", default="paper", help="YAML path or preset name (default: paper)")
    p.add_argument("--episodes", type=int, default=None, help="training episodes (default: agent.episodes)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: env.seed)")
    p.add_argument("--run-dir", default=None, help="run folder (default: <run.out_dir>/train-<agent>-seed<seed>); "
                                                    "a folder with a checkpoint is resumed")
    p.set_defaults(func=_guarded(_cmd_train))

    for cmd, helptext, default_eps in (("adapt", "adapt a trained agent online to new tasks", 20),
                                       ("evaluate", "metrics of a trained agent on held-out tasks, no learning", 10)):
        p = subparsers.add_parser(cmd, help=helptext)
        p.add_argument("--checkpoint", required=True, help="checkpoint file of a training run")
        p.add_argument("--episodes", type=int, default=default_eps, help=f"episodes (default: {default_eps})")
        p.add_argument("--config", default=None, help="YAML path or preset for the env and backend "
                                                       "(default: the checkpoint's config)")
        p.add_argument("--tasks", choices=("train", "test"), default="test",
                       help="task distribution (default: the held-out test tasks)")
        p.add_argument("--run-dir", default=None, help="run folder (default: a new one under run.out_dir)")
        p.set_defaults(func=_guarded(_cmd_adapt if cmd == "adapt" else _cmd_evaluate))

    p = subparsers.add_parser("reproduce", help="the paper's experiment: Fig. 3, tables, adaptation curves")
    p.add_argument("--config", default="paper", help="YAML path or preset name (default: paper)")
    p.add_argument("--quick", action="store_true", help="a small version that finishes in minutes")
    p.add_argument("--seeds", type=int, default=3, help="seeds (default: 3)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: one per core)")
    p.add_argument("--out", default=None, help="output folder (default: <run.out_dir>/reproduce[-quick])")
    p.set_defaults(func=_guarded(_cmd_reproduce))
