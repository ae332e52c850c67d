"""The handlers of the `testbed` subcommands (`demo`, `train`, `adapt`, `evaluate`, `reproduce`)
and their argument parsers; errors of a run become a message and an exit status.

Exit status: 0 done (also a training whose run folder has all its episodes done), 1 jobs of a
`reproduce --cluster` run failed (named in its results.md), 2 bad input
(an option out of range, a config error, a run folder that cannot continue as asked, such as
``--episodes`` fewer than the episodes done, a bench config given to `reproduce --config`), 3 the
radio backend failed (``EXIT_BACKEND``; for `reproduce --bench`: in the bench job named),
130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM. A stopped train, adapt or reproduce
prints the command that resumes it.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from agents.config import AgentConfig
from testbed import provenance
from testbed.agent_factory import AGENTS, RunError, policy_of_checkpoint
from testbed.checkpoint import CheckpointError, load_checkpoint, read_metrics
from testbed.config import Config, ConfigError, EnvConfig, RunConfig, load_config
from testbed.demo import run_demo
from testbed.metrics import HEADERS, TABLE_KEYS
from testbed.reproduce import BenchFailed, JobsFailed, reproduce
from testbed.runner import (EXIT_BACKEND, RADIO_ERRORS, BackendFailure, Interrupted, StopSignals, adapt,
                            evaluate, signal_exit_status, train)
from testbed.tracking import TRACKERS, TrackingError

AGENT_HELP = "agent: ppo (MLP policy, PPO), maml (MAML meta-learner), rnn (RL² GRU), rnn_attention (GRU + attention)"
MAX_SEEDS = 1000
MAX_WORKERS = 1024


# numeric options --------------------------------------------------------------------------
def bounded(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi], else the config's one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range; allowed [{lo}, {hi}]")
        return value
    return parse


def config_range(cls, name: str) -> tuple[int, int]:
    """The allowed range of config field ``name`` of dataclass ``cls``."""
    return next(f.metadata["range"] for f in dataclasses.fields(cls) if f.name == name)


# helpers ----------------------------------------------------------------------------------
def _checkpoint_config(args, ck: dict) -> Config:
    """The checkpoint's config, or ``--config`` (backend, radios, sizes) with the checkpoint's agent
    section; tasks from ``--tasks``."""
    tasks = {"env": {"task_distribution": args.tasks}}
    config = (load_config(ck["config"], tasks) if args.config is None
              else load_config(args.config, {"agent": ck["config"]["agent"], **tasks}))
    if args.record is None:
        return config
    if config.backend in ("sim", "replay"):
        raise ConfigError(f"--record: backend {config.backend} has no radios to record; use a bench config "
                          "(backend mock, pluto or gnuradio)")
    return load_config(config, {"hardware": {"record": {"dir": args.record}}})


def config_name(source: str) -> str:
    """The name a run folder gives a config: the preset name or the YAML file's stem."""
    return Path(source).stem


def _new_run_dir(args, config: Config, name: str) -> Path:
    """``--run-dir``, or a new folder ``<run.out_dir>/<name>-<time>``."""
    if args.run_dir:
        return Path(args.run_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, i = Path(config.run.out_dir) / f"{name}-{stamp}", 1
    while path.exists():
        path, i = Path(config.run.out_dir) / f"{name}-{stamp}-{i}", i + 1
    return path


def resume_command(args, option: str, value: Path) -> str:
    """The command line of this invocation with ``option`` set to ``value`` (replacing any given)."""
    argv, out, skip = list(args.argv), [], False
    for token in argv:
        if skip:
            skip = False
        elif token == option:
            skip = True
        elif not token.startswith(option + "="):
            out.append(token)
    return shlex.join(["testbed", *out, option, str(value)])


def _metric_lines(values: dict[str, str]) -> list[str]:
    """One line per metric, named by its key in metrics.jsonl."""
    width = max(len(k) for k in values)
    return [f"  {k:>{width}}: {v}" for k, v in values.items()]


def _tail_means(rows: list[dict]) -> tuple[int, dict[str, float]]:
    """The last tenth (at least one) of the episodes, and the mean of each table metric over them."""
    tail = max(1, len(rows) // 10)
    return tail, {k: float(np.mean([r[k] for r in rows[-tail:]])) for k in TABLE_KEYS}


# handlers ---------------------------------------------------------------------------------
def _cmd_demo(args) -> int:
    overrides = {"run": {"out_dir": args.out}} if args.out else {}
    config = load_config(args.config, overrides)
    record = provenance.collect(args.argv, config.env.device)
    with StopSignals() as stop:        # a demo keeps nothing until it ends: a signal stops it at once
        try:
            run_dir = run_demo(config, args.episodes)
        except KeyboardInterrupt:
            name = stop.signal_name or "SIGINT"
            print(f"\ndemo stopped by {name}; a demo saves its metrics only when it ends. Rerun: "
                  f"{shlex.join(['testbed', *args.argv])}", file=sys.stderr)
            return signal_exit_status(name)
    provenance.start(run_dir, record)
    provenance.finish(run_dir, record, "finished")
    return 0


def _cmd_train(args) -> int:
    overrides = {"agent": {"episodes": args.episodes}} if args.episodes else {}
    if args.seed is not None:
        overrides["env"] = {"seed": args.seed}
    config = load_config(args.config, overrides)
    if args.run_dir is None:
        args.run_dir = str(Path(config.run.out_dir) / f"train-{args.agent}-{config_name(args.config)}-seed{config.env.seed}")
    run_dir = train(config, args.agent, Path(args.run_dir), command=args.argv, track=args.track)
    rows = read_metrics(run_dir / "metrics.jsonl")
    tail, means = _tail_means(rows)
    ck = run_dir / "checkpoints" / "latest.pt"
    lines = [f"\ntrain {args.agent}: {len(rows)} episodes x {config.env.num_envs} networks in {run_dir}",
             "final metrics (means over the networks, " + (f"averaged over the last {tail} episodes):" if tail > 1
                                                           else "last episode):"),
             *_metric_lines({k: f"{v:.4g}" for k, v in means.items()}),
             f"checkpoint: {ck}",
             "next: adapt it online to held-out tasks, or evaluate it without learning:",
             f"  {shlex.join(['testbed', 'adapt', '--checkpoint', str(ck), '--episodes', '20'])}",
             f"  {shlex.join(['testbed', 'evaluate', '--checkpoint', str(ck)])}"]
    print("\n".join(lines))
    return 0


def _from_checkpoint(args, command: str) -> tuple[dict, Config]:
    """The checkpoint of an adapt/evaluate command and its config; sets ``args.run_dir`` (default:
    a new folder named by command, agent and ``--config``)."""
    ck = load_checkpoint(args.checkpoint)
    config = _checkpoint_config(args, ck)
    suffix = f"-{config_name(args.config)}" if args.config else ""
    args.run_dir = str(_new_run_dir(args, config, f"{command}-{ck['agent']}{suffix}"))
    return ck, config


def _cmd_adapt(args) -> int:
    ck, config = _from_checkpoint(args, "adapt")
    run_dir = adapt(config, ck["agent"], policy_of_checkpoint(ck), args.episodes, Path(args.run_dir),
                    command=args.argv, track=args.track, source=Path(args.checkpoint))
    rows = read_metrics(run_dir / "metrics.jsonl")
    first, last = rows[0], rows[-1]
    lines = [f"\nadapt {ck['agent']}: {len(rows)} episodes on {args.tasks} tasks x {config.env.num_envs} networks "
             f"(one task per network) in {run_dir}",
             "first → last episode (means over the networks):",
             *_metric_lines({k: f"{first[k]:.4g} → {last[k]:.4g}" for k in TABLE_KEYS}),
             f"checkpoint (adapted agent): {run_dir / 'checkpoints' / 'latest.pt'}",
             "next: the same agent without adaptation, for comparison:",
             f"  {shlex.join(['testbed', 'evaluate', '--checkpoint', args.checkpoint, '--tasks', args.tasks])}"]
    print("\n".join(lines))
    return 0


def _cmd_evaluate(args) -> int:
    ck, config = _from_checkpoint(args, "evaluate")
    if args.episodes is not None:
        config = load_config(config, {"evaluation": {"episodes": args.episodes}})
    summary = evaluate(config, ck["agent"], policy_of_checkpoint(ck), Path(args.run_dir),
                       command=args.argv, source=Path(args.checkpoint))
    ev = config.evaluation
    lines = [f"\nevaluate {ck['agent']} on the fixed evaluation set of the {args.tasks} tasks ({ev.num_tasks} tasks "
             f"of evaluation seed {ev.seed}, one per network, {ev.episodes} episodes each), no learning; every "
             "policy on the same tasks and draws. Mean ± std over episodes of the means over the networks:", "",
             evaluation_table(summary), "",
             f"checkpoint: {args.checkpoint}",
             f"run folder: {args.run_dir} (tasks.json: the evaluation tasks)",
             "next: adapt it online to the same distribution:",
             f"  {shlex.join(['testbed', 'adapt', '--checkpoint', args.checkpoint, '--tasks', args.tasks])}"]
    print("\n".join(lines))
    return 0


def evaluation_table(summary: dict[str, dict]) -> str:
    """A markdown table of an evaluation's summary: one row per policy, the table metrics as mean ± std."""
    head = "| policy | " + " | ".join(HEADERS[k] for k in TABLE_KEYS) + " |"
    rows = [f"| {label} | " + " | ".join(f"{stats[k]['mean']:.4g} ± {stats[k]['std']:.2g}" for k in TABLE_KEYS) + " |"
            for label, stats in summary.items()]
    return "\n".join([head, "|---" * (len(TABLE_KEYS) + 1) + "|", *rows])


def cluster_address(text: str) -> str:
    """An argparse type: 'auto' or HOST:PORT (port 1-65535), else a one-line error."""
    host, _, port = text.rpartition(":")
    if text == "auto" or (host and port.isdigit() and 1 <= int(port) <= 65535):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a Ray address; allowed: auto or HOST:PORT (port 1-65535)")


def _cmd_reproduce(args) -> int:
    if args.twin and not args.bench:
        print("testbed reproduce: --twin: a twin is trained on for a bench; give --bench CONFIG too", file=sys.stderr)
        return 2
    try:
        out = reproduce(args.bench or args.config, quick=args.quick, num_seeds=args.seeds, out_dir=args.out,
                        workers=args.workers, command=args.argv, cluster=args.cluster, bench=args.bench is not None,
                        twin=args.twin)
    except BenchFailed as err:
        print(f"\nerror: the radios failed in bench job {err.job}: {err.failed[err.job]}\nIts data and the other "
              f"finished runs are saved in {err.out} (failed jobs in {err.out / 'results.md'}). Check the radios and "
              f"rerun to continue: {shlex.join(['testbed', *args.argv])}", file=sys.stderr)
        return EXIT_BACKEND
    except JobsFailed as err:
        print(f"error: {err}; their errors are in {err.out / 'results.md'} and {err.out / 'logs'}; "
              f"rerun to retry them: {shlex.join(['testbed', *args.argv])}", file=sys.stderr)
        return 1
    print(f"results: {out}")
    return 0


def _stopped(args, err: Interrupted) -> str:
    """What a stop signal left behind and the command that continues."""
    if args.command == "reproduce":
        return (f"\nreproduce stopped by {err.signal_name}; the finished runs and the checkpoints of the unfinished "
                f"ones are saved in {err.run_dir}.\nresume with: {resume_command(args, '--out', err.run_dir)}")
    if args.command == "evaluate":
        return (f"\nevaluate stopped by {err.signal_name} after {err.episodes} episodes; their metrics are in "
                f"{err.run_dir}. An evaluation is not resumed; rerun it to start over:\n"
                f"  {resume_command(args, '--run-dir', err.run_dir)}")
    return (f"\n{args.command} stopped by {err.signal_name} after {err.episodes} finished episodes; their metrics "
            f"and checkpoint are saved in {err.run_dir}.\nresume with: {resume_command(args, '--run-dir', err.run_dir)}")


def _guarded(func):
    """Run a command; turn our errors into a message and an exit status."""
    def run(args) -> int:
        try:
            return func(args)
        except Interrupted as err:
            print(_stopped(args, err), file=sys.stderr)
            return err.exit_status
        except KeyboardInterrupt:
            again = f"rerun: {resume_command(args, '--run-dir', args.run_dir)}" if getattr(args, "run_dir", None) \
                else "rerun the command"
            print(f"\n{args.command} stopped by SIGINT outside the episode loop; nothing it had saved was lost; {again}",
                  file=sys.stderr)
            return 130
        except BackendFailure as err:
            print(f"\nerror: {err}\nThe metrics of the finished episodes and the last checkpoint are saved in "
                  f"{err.run_dir}. Check the radios and rerun to continue:\n"
                  f"  {resume_command(args, '--run-dir', err.run_dir)}", file=sys.stderr)
            return EXIT_BACKEND
        except (CheckpointError, RunError, TrackingError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except RADIO_ERRORS as err:
            print(f"\nerror: radio backend failed before the first episode: {err}\nCheck the radios and rerun.",
                  file=sys.stderr)
            return EXIT_BACKEND
    return run


def add_commands(subparsers) -> None:
    """Add `demo`, `train`, `adapt`, `evaluate` and `reproduce` to the `testbed` command."""
    config_help = "YAML path or preset name (default: paper)"
    p = subparsers.add_parser("demo", help="run the reference policies on a simulated network")
    p.add_argument("--config", default="paper", help=config_help)
    p.add_argument("--episodes", type=bounded(*config_range(RunConfig, "episodes")), default=None,
                   help="episodes per policy (default: run.episodes)")
    p.add_argument("--out", default=None, help="output folder (default: run.out_dir)")
    p.set_defaults(func=_guarded(_cmd_demo))

    p = subparsers.add_parser("train", help="(meta-)train an agent on the task stream")
    p.add_argument("--agent", required=True, choices=AGENTS, help=AGENT_HELP)
    p.add_argument("--config", default="paper", help=config_help)
    p.add_argument("--episodes", type=bounded(*config_range(AgentConfig, "episodes")), default=None,
                   help="training episodes in all (default: agent.episodes); a resumed run may grow, "
                        "fewer than it has done is an error")
    p.add_argument("--seed", type=bounded(*config_range(EnvConfig, "seed")), default=None,
                   help="seed (default: env.seed)")
    p.add_argument("--run-dir", default=None,
                   help="run folder (default: <run.out_dir>/train-<agent>-<config name>-seed<seed>); "
                        "a folder with a checkpoint is resumed")
    p.add_argument("--track", choices=TRACKERS, default=None,
                   help="also log scalars for TensorBoard into <run folder>/tensorboard (extra 'track')")
    p.set_defaults(func=_guarded(_cmd_train))

    for cmd, helptext, default_eps in (
            ("adapt", "adapt a trained agent online to new tasks", 20),
            ("evaluate", "a trained agent (argmax and sampled actions) and the reference policies on the fixed "
                         "evaluation tasks, no learning", None)):
        p = subparsers.add_parser(cmd, help=helptext)
        p.add_argument("--checkpoint", required=True, help="checkpoint file of a training run")
        p.add_argument("--episodes", type=bounded(*config_range(EnvConfig, "episodes_per_task")), default=default_eps,
                       help="episodes (default: 20)" if cmd == "adapt" else
                            "episodes on each evaluation task (default: evaluation.episodes)")
        p.add_argument("--config", default=None, help="YAML path or preset for the env and backend "
                                                       "(default: the checkpoint's config)")
        p.add_argument("--tasks", choices=("train", "test"), default="test",
                       help="task distribution (default: the held-out test tasks)")
        p.add_argument("--run-dir", default=None,
                       help="run folder (default: a new one under run.out_dir)"
                            + ("; a folder with a checkpoint is resumed" if cmd == "adapt" else "; a rerun starts over"))
        p.add_argument("--record", metavar="DIR", default=None,
                       help="record the captures (SigMF) and steps into DIR (hardware.record.dir; bench configs)")
        if cmd == "adapt":
            p.add_argument("--track", choices=TRACKERS, default=None,
                           help="also log scalars for TensorBoard into <run folder>/tensorboard (extra 'track')")
        p.set_defaults(func=_guarded(_cmd_adapt if cmd == "adapt" else _cmd_evaluate))

    p = subparsers.add_parser("reproduce", help="the paper's experiment: Fig. 3, tables, adaptation curves")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", default="paper", help=config_help + "; a simulator config (backend: sim)")
    source.add_argument("--bench", metavar="CONFIG", default=None,
                        help="a bench config: meta-train in the simulator on the bench's network, then adapt and "
                             "evaluate every agent and reference on the bench's radios (docs/results.md)")
    p.add_argument("--twin", metavar="TWIN.yaml", default=None,
                   help="with --bench: train on this twin of the bench (`testbed calibrate`) instead")
    p.add_argument("--quick", action="store_true", help="a small version that finishes in minutes")
    p.add_argument("--seeds", type=bounded(1, MAX_SEEDS), default=3, help="seeds (default: 3)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=bounded(1, MAX_WORKERS), default=None,
                       help="parallel processes (default: one per core)")
    where.add_argument("--cluster", type=cluster_address, default=None, metavar="auto|ADDRESS",
                       help="run every job as a task on the Ray cluster at ADDRESS (HOST:PORT of its head) or the "
                            "one started on this machine (auto); extra 'cluster', see docs/cluster.md")
    p.add_argument("--out", default=None, help="results folder (default: <run.out_dir>/reproduce[-bench][-quick]); "
                                               "a rerun resumes the unfinished runs in it")
    p.set_defaults(func=_guarded(_cmd_reproduce))
