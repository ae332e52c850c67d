"""`testbed sweep` (or ``python -m testbed.sweep``): a grid of config values, one short training and
evaluation per grid point and seed, gathered into one table and ``sweep.csv``.

Each (point, seed) trains the agent into ``<out>/<point>/seed<k>/train`` (as ``testbed train``), then
evaluates the final checkpoint into ``.../eval`` (as ``testbed evaluate --checkpoint``, on the fixed
evaluation set of the training tasks unless ``--eval-tasks test``). The table holds the final
training return (mean over the last 10 % of episodes), the evaluation return with argmax and with
sampled actions, and a status: ``ok``, or why the point failed. Every point's config is checked
before anything runs. Locally ``--workers`` points run at once in processes; with ``--cluster
auto|ADDRESS`` every (point, seed) is a Ray Tune trial (extra 'cluster'; docs/cluster.md). A rerun
in the same ``--out`` resumes the unfinished trainings::

    testbed sweep --agent ppo --episodes 100 --set network.episode_steps=50 \\
        --grid agent.gamma=0.8,0.9,0.99 --grid agent.anneal_lr=false,true --seeds 0 1 2 --out runs/sweep
"""
from __future__ import annotations

import argparse
import csv
import itertools
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from agents.config import AgentConfig
from testbed.agent_factory import AGENTS, RunError, policy_of_checkpoint
from testbed.checkpoint import load_checkpoint, read_metrics
from testbed.commands import AGENT_HELP, MAX_WORKERS, bounded, cluster_address, config_range
from testbed.config import ConfigError, EnvConfig, EvaluationConfig, load_config, read_value, to_dict
from testbed.reproduce import LocalPool, start_job      # the local pool of reproduce's jobs, reused
from testbed.runner import Interrupted, StopSignals, evaluate, evaluation_label, format_duration, train

__all__ = ["add_command", "main", "plan", "run_job", "sweep"]

OK = "ok"
METRICS = ("train_return", "eval_return", "eval_return_sample")   # the table's metric columns
EVAL_TASKS = ("train", "test")


# the grid ---------------------------------------------------------------------------------------
def _split_values(text: str) -> list[str]:
    """'v1,[a, b],v3' -> ['v1', '[a, b]', 'v3']: split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def _assignment(text: str) -> tuple[str, list]:
    """An argparse type: 'a.b=v1,v2' -> ('a.b', [v1, v2]), each value read as YAML (numbers, booleans,
    strings, lists such as [-20, 0]: commas inside brackets do not separate values)."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: expected dotted.field=value[,value...]")
    try:
        return key, [read_value(v) for v in _split_values(values)]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None


def _nested(dotted: str, value) -> dict:
    head, _, rest = dotted.partition(".")
    return {head: _nested(rest, value) if rest else value}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def plan(source, agent: str, grid: list[tuple[str, list]], fixed: list[tuple[str, object]], seeds: list[int],
         episodes: int, num_envs: int, eval_episodes: int | None, eval_tasks: str, out: Path) -> list[dict]:
    """The jobs of a sweep, one per (grid point, seed), each with its resolved config (a dict);
    raises ``ConfigError`` on the first point whose config is invalid."""
    keys = [key for key, _ in grid]
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(values for _, values in grid))]
    jobs = []
    for point in points:
        label = "-".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()) or "default"
        for seed in seeds:
            overrides = {"env": {"num_envs": num_envs, "seed": seed}, "agent": {"episodes": episodes}}
            for key, value in [*fixed, *point.items()]:
                overrides = _merge(overrides, _nested(key, value))
            try:
                config = load_config(source, overrides)
            except ConfigError as err:
                raise ConfigError(f"grid point {label}: {err}") from None
            jobs.append({"name": f"{label}-seed{seed}", "point": point, "seed": seed, "agent": agent,
                         "config": to_dict(config), "run_dir": str(out.resolve() / label / f"seed{seed}"),
                         "eval_episodes": eval_episodes, "eval_tasks": eval_tasks})
    return jobs


# one job ----------------------------------------------------------------------------------------
def run_job(job: dict) -> dict:
    """Train and evaluate one (point, seed) in this process with one torch thread (a stop requested
    before it starts ends it at once); its metrics: ``train_return`` and, unless ``eval_episodes`` is
    0, ``eval_return`` (argmax actions) and ``eval_return_sample`` (sampled actions)."""
    start_job(job["run_dir"])
    run_dir = Path(job["run_dir"])
    train(load_config(job["config"]), job["agent"], run_dir / "train", progress=False)
    returns = [row["return"] for row in read_metrics(run_dir / "train" / "metrics.jsonl")]
    metrics = {"train_return": float(np.mean(returns[-max(1, len(returns) // 10):]))}
    if job["eval_episodes"] != 0:
        ck = load_checkpoint(run_dir / "train" / "checkpoints" / "latest.pt")
        overrides = {"env": {"task_distribution": job["eval_tasks"]}}
        if job["eval_episodes"] is not None:
            overrides["evaluation"] = {"episodes": job["eval_episodes"]}
        summary = evaluate(load_config(ck["config"], overrides), ck["agent"], policy_of_checkpoint(ck),
                           run_dir / "eval", progress=False)
        for mode, key in (("argmax", "eval_return"), ("sample", "eval_return_sample")):
            metrics[key] = summary[evaluation_label({"agent": ck["agent"], "actions": mode})]["return"]["mean"]
    return metrics


def _guarded(run, job: dict) -> dict:
    """``run(job)`` with an error it raises turned into the status of the job's metrics (a stop is passed on)."""
    try:
        return {**run(job), "status": OK}
    except Interrupted:
        raise
    except Exception as err:          # noqa: BLE001 -- any error of one point is that point's status
        lines = str(err).strip().splitlines()
        return {"status": f"{type(err).__name__}: {lines[0] if lines else ''}"}


def _row(job: dict, metrics: dict) -> dict:
    return {**job["point"], "seed": job["seed"], **{key: metrics.get(key) for key in METRICS},
            "status": metrics["status"]}


# where the jobs run -----------------------------------------------------------------------------
def _run_local(jobs: list[dict], workers: int, out: Path, run) -> list[dict]:
    """The jobs in ``workers`` processes; Ctrl-C stops the running trainings after their episode
    (with a checkpoint) and raises ``Interrupted``."""
    metrics, progress = {}, _Progress(len(jobs))
    with StopSignals("stopping: the running trainings finish their episode and save a checkpoint") as stop, \
            LocalPool(workers) as pool:
        pending = {pool.submit(job["name"], _guarded, run, job): job for job in jobs}
        try:
            while pending:
                if stop.signal_name is not None:
                    raise Interrupted(out, stop.signal_name)
                done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = pending.pop(fut)
                    try:
                        metrics[job["name"]] = fut.result()
                    except BrokenProcessPool:
                        metrics[job["name"]] = {"status": "BrokenProcessPool: its worker process died"}
                    progress.finished(job["name"], metrics[job["name"]]["status"], pool.running(pending))
        except Interrupted as err:
            pool.stop(pending)
            raise Interrupted(out, err.signal_name) from None
    return [_row(job, metrics[job["name"]]) for job in jobs]


def _run_on_cluster(jobs: list[dict], address: str, out: Path, run) -> list[dict]:
    """Every job a Ray Tune trial on one CPU of the cluster at ``address``; a trial whose worker dies is
    retried up to ``cluster.MAX_RETRIES`` times, then reported failed. Ctrl-C stops the trials
    (Ray Tune's handler) and raises ``Interrupted``."""
    from ray import tune                      # Ray is imported only here

    from testbed import cluster
    cluster.connect(address)
    try:
        by_name = {job["name"]: job for job in jobs}
        logs = out.resolve() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        trainable = tune.with_resources(tune.with_parameters(_trial, jobs=by_name, run=run, logs=str(logs)),
                                        {"cpu": 1})
        tuner = tune.Tuner(
            trainable, param_space={"name": tune.grid_search(list(by_name))},
            tune_config=tune.TuneConfig(trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
                                        reuse_actors=True),
            run_config=tune.RunConfig(name="tune", storage_path=str(out.resolve()), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=cluster.MAX_RETRIES),
                                      callbacks=[_tune_progress(_Progress(len(jobs)))]))
        metrics = {}
        for result in tuner.fit():
            name = result.config["name"]
            if result.error is not None:
                metrics[name] = {"status": cluster.describe(result.error)}
            elif result.metrics and "status" in result.metrics:
                metrics[name] = result.metrics
            else:
                raise Interrupted(out, "SIGINT")          # a trial neither finished nor failed: the run was stopped
    finally:
        import ray
        ray.shutdown()
    return [_row(job, metrics[job["name"]]) for job in jobs]


def _trial(config: dict, jobs: dict, run, logs: str) -> None:
    """A Ray Tune function trainable: one job, its output in ``<logs>/<job>.log``, its metrics reported once."""
    from ray import tune

    from testbed.cluster import logged
    name = config["name"]
    tune.report(logged(name, str(Path(logs) / f"{name}.log"), _guarded, run, jobs[name]))


def _trial_name(trial) -> str:
    return trial.config["name"]


def _tune_progress(progress: _Progress):
    """A Ray Tune callback that tells ``progress`` of every trial that ended, and of every retry."""
    from ray import tune

    def running(trials) -> int:
        return sum(t.status == "RUNNING" for t in trials)

    class Progress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress.finished(_trial_name(trial), result["status"], running(trials) - 1)

        def on_trial_recover(self, iteration, trials, trial, **info):
            print(f"sweep: {_trial_name(trial)}: its worker died; retrying", file=sys.stderr, flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.finished(_trial_name(trial), f"failed after {trial.num_failures} attempts", running(trials))
    return Progress()


class _Progress:
    """One line on stderr per finished job: jobs done, running and failed, the time left at the pace so far."""

    def __init__(self, total: int):
        self.total, self.done, self.failed, self.clock = total, 0, 0, time.perf_counter()

    def finished(self, name: str, status: str, running: int) -> None:
        self.done += 1
        self.failed += status != OK
        left_s = (time.perf_counter() - self.clock) / self.done * (self.total - self.done)
        print(f"sweep: {self.done}/{self.total} done, {running} running, {self.failed} failed, "
              f"about {format_duration(left_s)} left; {name}: {status}", file=sys.stderr, flush=True)


# the sweep --------------------------------------------------------------------------------------
def sweep(jobs: list[dict], out: Path, workers: int = 1, cluster: str | None = None, run=run_job) -> list[dict]:
    """Run the ``jobs`` of ``plan`` in ``workers`` local processes or on the Ray cluster at ``cluster``
    (``run``: the function of one job, ``run_job`` unless a test replaces it) and write
    ``<out>/sweep.csv``; returns the table's rows, one per job, in the order of ``jobs``."""
    rows = _run_local(jobs, workers, out, run) if cluster is None else _run_on_cluster(jobs, cluster, out, run)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sweep.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _table(rows: list[dict]) -> str:
    def cell(v) -> str:
        return f"{v:.2f}" if isinstance(v, float) else "" if v is None else str(v)
    return "\n".join([" | ".join(rows[0]), *(" | ".join(cell(v) for v in row.values()) for row in rows)])


def _cmd_sweep(args) -> int:
    if any(len(values) != 1 for _, values in args.fixed):
        print("sweep: --set takes one value per field", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        jobs = plan(args.config, args.agent, args.grid, [(k, v[0]) for k, v in args.fixed], args.seeds,
                    args.episodes, args.num_envs, args.eval_episodes, args.eval_tasks, out)
        rows = sweep(jobs, out, args.workers, args.cluster)
    except ConfigError as err:
        print(f"sweep: config error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"sweep: stopped by {err.signal_name}; the finished runs and the trainings' last checkpoints are "
              f"in {out}; rerun the same command to resume", file=sys.stderr)
        return err.exit_status
    print(_table(rows))
    print(f"wrote {out / 'sweep.csv'}")
    failed = [job["name"] for job, row in zip(jobs, rows) if row["status"] != OK]
    if failed:
        print(f"sweep: {len(failed)} of {len(rows)} points failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", default="ppo", choices=AGENTS, help=AGENT_HELP + " (default: ppo)")
    p.add_argument("--config", default="paper", help="YAML path or preset name (default: paper)")
    p.add_argument("--episodes", type=bounded(*config_range(AgentConfig, "episodes")), default=100,
                   help="training episodes per point (default: 100)")
    p.add_argument("--num-envs", type=bounded(*config_range(EnvConfig, "num_envs")), default=16,
                   help="env lanes (default: 16)")
    p.add_argument("--seeds", type=bounded(*config_range(EnvConfig, "seed")), nargs="+", default=[0],
                   help="env.seed of every point, one run each (default: 0)")
    p.add_argument("--eval-episodes", type=bounded(0, config_range(EvaluationConfig, "episodes")[1]), default=None,
                   help="episodes on each task of the fixed evaluation set, 0 for no evaluation "
                        "(default: evaluation.episodes)")
    p.add_argument("--eval-tasks", default="train", choices=EVAL_TASKS,
                   help="task distribution of the evaluation set (default: train, the one trained on)")
    p.add_argument("--grid", type=_assignment, action="append", default=[], metavar="FIELD=V1,V2",
                   help="a swept config field and its values (repeat for a grid)")
    p.add_argument("--set", dest="fixed", type=_assignment, action="append", default=[], metavar="FIELD=V",
                   help="a config field fixed for every point (repeatable)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=bounded(1, MAX_WORKERS), default=1,
                       help="points run at once in processes on this machine (default: 1)")
    where.add_argument("--cluster", type=cluster_address, default=None, metavar="auto|ADDRESS",
                       help="every point and seed a Ray Tune trial on the cluster at ADDRESS (HOST:PORT of its "
                            "head) or the one started on this machine (auto); extra 'cluster', see docs/cluster.md")
    p.add_argument("--out", default="runs/sweep", help="folder of the runs and sweep.csv (default: runs/sweep)")
    p.set_defaults(func=_cmd_sweep)


def add_command(subparsers) -> None:
    """Add ``sweep`` to the ``testbed`` command's subparsers."""
    _add_arguments(subparsers.add_parser("sweep", help="a grid of config values: train and evaluate each point"))


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.sweep ...``."""
    parser = argparse.ArgumentParser(prog="python -m testbed.sweep", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
