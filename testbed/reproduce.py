"""`testbed reproduce`: the paper's experiment in simulation, over several seeds.

Per seed: (meta-)train PPO, MAML, RNN and RNN + attention on the training task stream;
run the reference policies on the same distribution; then adapt on the held-out test tasks
(each lane keeps one task) for 20 episodes: the three meta-learners, PPO fine-tuned from its
multi-task policy and PPO from scratch, beside the reference policies on the same tasks; and a
baseline-strength check, PPO on one fixed task with a throughput-only reward against the
per-band oracle. Jobs run in parallel processes, or as tasks on a Ray cluster (``cluster``:
``testbed.cluster``, where a job that fails is named in ``failed_jobs`` and the run goes on); a
rerun resumes unfinished trainings.
Ctrl-C (SIGINT) or SIGTERM drops the queued jobs and stops the running trainings and
adaptations after their episode in progress, with a checkpoint; the results folder gets a
``provenance.json``.

The run folders go under ``runs/`` in the results folder; ``collect`` aggregates them into
the summary ``testbed.report`` writes out: ``fig3.png`` (four panels against episode, mean over
seeds with a ±1 std band), ``curves.csv``, ``table.md`` (end-of-training metrics, mean ± std over
seeds, and as fractions of the oracle), ``adaptation.csv/.md/.png``, ``summary.json`` and
``results.md``.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from testbed import policies, provenance
from testbed.agent_factory import AGENTS, policy_of_checkpoint
from testbed.checkpoint import MetricsLog, load_checkpoint, read_metrics, truncate_metrics
from testbed.config import Config, load_config, to_dict
from testbed.demo import run_policy
from testbed.metrics import METRIC_KEYS, lane_means
from testbed.report import write_outputs
from testbed.runner import Interrupted, StopSignals, adapt, opened_env, train

ADAPT_POINTS = (0, 1, 2, 5, 10, 20)
ADAPTERS = ("maml", "rnn", "rnn_attention", "ppo_finetune", "ppo_scratch")
THROUGHPUT_ONLY = {"w_fairness": 0.0, "w_cost": 0.0, "w_penalty": 0.0}
QUICK = {"network": {"episode_steps": 20}, "env": {"num_envs": 4},
         "agent": {"episodes": 8, "checkpoint_every": 2, "recurrent": {"episodes_per_trial": 2}}}


class Plan:
    """Sizes of one reproduction."""

    def __init__(self, config: Config, quick: bool, num_seeds: int):
        self.quick, self.num_seeds = quick, num_seeds
        self.train_episodes = config.agent.episodes
        self.adapt_points = (0, 1, 2, 5) if quick else ADAPT_POINTS
        self.adapt_episodes = self.adapt_points[-1] + 1
        self.reference_episodes = 2 if quick else 20
        self.fixed_episodes = 6 if quick else 150
        self.tail = max(1, self.train_episodes // 10)   # end-of-training window, in episodes


def _seeded(config: dict, seed: int, **sections) -> Config:
    """``config`` for seed number ``seed`` (env.seed offset by it), with ``sections`` overridden."""
    base = load_config(config)
    env = {"seed": base.env.seed + seed, **sections.pop("env", {})}
    return load_config(base, {"env": env, **sections})


# jobs (run in worker processes) ---------------------------------------------------------------
def _job_train(config: dict, agent: str, seed: int, run_dir: str) -> str:
    _start_job(run_dir)
    train(_seeded(config, seed), agent, Path(run_dir), progress=False)
    return run_dir


def _job_references(config: dict, seed: int, episodes: int, run_dir: str, distribution: str, per_task: int) -> str:
    """The reference policies, every one on the same tasks and draws; metrics.jsonl rows per policy and episode."""
    _start_job(run_dir)
    cfg = _seeded(config, seed, env={"task_distribution": distribution, "episodes_per_task": per_task})
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with opened_env(cfg) as env:
        for name in policies.NAMES:
            lanes = run_policy(env, name, episodes, cfg.env.seed, tqdm(disable=True))
            for episode in range(episodes):
                ep = [r for r in lanes if r["episode"] == episode]
                rows.append({"agent": name, "seed": seed, "episode": episode, **lane_means(ep)})
    truncate_metrics(run_dir / "metrics.jsonl", 0)
    with MetricsLog(run_dir / "metrics.jsonl") as log:
        for row in rows:
            log.write(row)
    return str(run_dir)


def _job_adapt(config: dict, seed: int, episodes: int, train_dirs: dict, out: str) -> str:
    """Adaptation on the held-out tasks for every adapter; same tasks for all (same seed)."""
    _start_job(out)
    cfg = _seeded(config, seed, env={"task_distribution": "test"})
    for label in ADAPTERS:
        run_dir = Path(out) / f"adapt-{label}-seed{seed}"
        if _complete(run_dir, episodes):
            continue
        agent = "ppo" if label.startswith("ppo") else label
        policy = None if label == "ppo_scratch" else _trained_policy(Path(train_dirs[agent]))
        adapt(cfg, agent, policy, episodes, run_dir, progress=False, label=label)
    return out


def _job_fixed(config: dict, seed: int, episodes: int, run_dir: str) -> str:
    """Baseline strength: PPO on one fixed task, throughput-only reward, then the oracle on that task."""
    _start_job(run_dir)
    cfg = _seeded(config, seed, network=THROUGHPUT_ONLY, env={"task_seed": 1000 + seed},
                  agent={"episodes": episodes})
    train(cfg, "ppo", Path(run_dir), progress=False)
    _job_references(to_dict(cfg), 0, 3, str(Path(run_dir) / "references"), "train", 1)
    return run_dir


def _start_job(run_dir: str) -> None:
    """One torch thread; a job that starts after its worker was asked to stop ends at once."""
    torch.set_num_threads(1)
    if StopSignals.noted is not None:
        raise Interrupted(run_dir, StopSignals.noted)


def _worker_init() -> None:
    """A worker in its own process group (a terminal's Ctrl-C reaches only the parent, which passes
    one SIGINT on) that keeps a stop request made outside its episode loops (``StopSignals.note``)."""
    os.setpgrp()
    signal.signal(signal.SIGINT, StopSignals.note)


class _Pool:
    """The local process pool behind ``submit``: a job's error ends the run."""

    job_errors = ()

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_worker_init)

    def submit(self, name: str, job, *args):
        return self.pool.submit(job, *args)

    def running(self, pending) -> int:
        return sum(fut.running() for fut in pending)

    def stop(self, pending) -> None:
        _stop_jobs(pending)

    def __enter__(self) -> "_Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown()


def _executor(workers: int, cluster: str | None, out: Path):
    """The local pool, or a connection to the Ray cluster at ``cluster`` ('auto' or HOST:PORT)."""
    if cluster is None:
        return _Pool(workers)
    from testbed.cluster import Cluster          # Ray is imported only here
    return Cluster(cluster, out)


def _stop_jobs(pending: dict) -> None:
    """Cancel the jobs not started yet and ask every worker to stop: running trainings and adaptations
    stop after their episode in progress, with a checkpoint; a job that starts later ends at once."""
    for fut in pending:
        fut.cancel()
    for proc in multiprocessing.active_children():
        os.kill(proc.pid, signal.SIGINT)


def _complete(run_dir: Path, episodes: int) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.exists() and len(read_metrics(path)) >= episodes


def _trained_policy(run_dir: Path) -> dict:
    return policy_of_checkpoint(load_checkpoint(run_dir / "checkpoints" / "latest.pt"))


# orchestration ------------------------------------------------------------------------------
def reproduce(source, quick: bool = False, num_seeds: int = 3, out_dir: str | None = None,
              workers: int | None = None, command: list[str] | None = None, cluster: str | None = None) -> Path:
    """Run the whole experiment; returns the results folder. ``command``: the command line recorded
    in provenance.json (default: this process's); ``cluster``: run the jobs on the Ray cluster at
    that address instead of a local pool. A stop signal raises ``runner.Interrupted``."""
    config = load_config(source, QUICK if quick else None)
    plan = Plan(config, quick, num_seeds)
    out = Path(out_dir or Path(config.run.out_dir) / ("reproduce-quick" if quick else "reproduce"))
    runs = out.resolve() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    cfg = to_dict(config)
    clock = time.perf_counter()
    workers = workers or min(os.cpu_count() or 1, num_seeds * len(AGENTS))
    train_dirs = {s: {a: str(runs / f"train-{a}-seed{s}") for a in AGENTS} for s in range(num_seeds)}
    cost = {"rnn_attention": 4, "rnn": 3, "maml": 2, "ppo": 2}          # longest first
    total = num_seeds * (len(AGENTS) * plan.train_episodes + 4)
    with provenance.recorded(out, command, config.env.device), \
            StopSignals("stopping: the running trainings finish their episode and save a checkpoint") as stop, \
            _executor(workers, cluster, out) as pool, \
            tqdm(total=total, desc="reproduce", unit="ep") as bar:
        workers = pool.workers
        pending = {}

        def submit(kind: str, s: int, name: str, job, *args) -> None:
            pending[pool.submit(name, job, *args)] = (kind, s, name)

        for agent in sorted(AGENTS, key=lambda a: -cost[a]):
            for s in range(num_seeds):
                submit("train", s, f"train-{agent}-seed{s}", _job_train, cfg, agent, s, train_dirs[s][agent])
        for s in range(num_seeds):
            submit("other", s, f"reference-seed{s}", _job_references, cfg, s, plan.reference_episodes,
                   str(runs / f"reference-seed{s}"), "train", config.env.episodes_per_task)
            submit("other", s, f"reference-test-seed{s}", _job_references, cfg, s, plan.adapt_episodes,
                   str(runs / f"reference-test-seed{s}"), "test", plan.adapt_episodes)
            submit("other", s, f"fixed-ppo-seed{s}", _job_fixed, cfg, s, plan.fixed_episodes,
                   str(runs / f"fixed-ppo-seed{s}"))
        trained = {s: 0 for s in range(num_seeds)}
        others, failed = 0, {}
        try:
            while pending:
                if stop.signal_name is not None:
                    raise Interrupted(out, stop.signal_name)
                done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    kind, s, name = pending.pop(fut)
                    try:
                        fut.result()
                    except pool.job_errors as err:
                        failed[name] = pool.describe(err)
                        continue
                    if kind == "train":
                        trained[s] += 1
                        if trained[s] == len(AGENTS):
                            submit("other", s, f"adapt-seed{s}", _job_adapt, cfg, s, plan.adapt_episodes,
                                   train_dirs[s], str(runs))
                    else:
                        others += 1
                lines = sum(_count_lines(Path(d) / "metrics.jsonl") for s in train_dirs for d in train_dirs[s].values())
                bar.n = lines + others
                bar.set_postfix_str(f"jobs done {sum(trained.values()) + others}, "
                                    f"running {pool.running(pending)}, failed {len(failed)}", refresh=False)
                bar.refresh()
        except Interrupted as err:
            pool.stop(pending)
            raise Interrupted(out, err.signal_name) from None
    wall_s = time.perf_counter() - clock
    if failed:
        failed.update({f"adapt-seed{s}": "not run: a training of its seed failed"
                       for s, n in trained.items() if n < len(AGENTS)})
        raise JobsFailed(_report_failures(out, plan, failed), failed)
    write_outputs(out, {**collect(out, plan, config, wall_s, workers), "failed_jobs": {}})
    return out


class JobsFailed(RuntimeError):
    """Jobs of a cluster run failed (``failed``: job name -> why); the others finished in ``out``."""

    def __init__(self, out: Path, failed: dict[str, str]):
        super().__init__(f"{len(failed)} jobs failed: {', '.join(failed)}")
        self.out, self.failed = out, failed


def _report_failures(out: Path, plan: Plan, failed: dict[str, str]) -> Path:
    """``summary.json`` and ``results.md`` of a run with failed jobs: their names and errors, no figures."""
    (out / "summary.json").write_text(json.dumps({"quick": plan.quick, "seeds": plan.num_seeds,
                                                  "failed_jobs": failed}, indent=1))
    lines = ["# Results: incomplete, jobs failed", "",
             "These jobs failed, so no figures or tables were made; the finished runs are kept in runs/. "
             "Rerun the same command to run the failed jobs again (finished trainings and adaptations are not repeated).", "",
             "| job | error |", "|---|---|", *[f"| {name} | {why.replace('|', '/')} |" for name, why in failed.items()], ""]
    (out / "results.md").write_text("\n".join(lines))
    return out


def _count_lines(path: Path) -> int:
    try:
        with open(path) as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


# aggregation --------------------------------------------------------------------------------
def _mean_std(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std())}


def collect(out: Path, plan: Plan, config: Config, wall_s: float, workers: int) -> dict:
    """Curves, end-of-training table, references, adaptation and baseline check, from the run folders."""
    runs = out / "runs"
    seeds = range(plan.num_seeds)
    curves, final = {}, {}
    for agent in AGENTS:
        per_seed = [read_metrics(runs / f"train-{agent}-seed{s}" / "metrics.jsonl") for s in seeds]
        length = min(len(rows) for rows in per_seed)
        arr = {k: np.array([[r[k] for r in rows[:length]] for rows in per_seed]) for k in METRIC_KEYS}  # [S, E]
        curves[agent] = {k: {"mean": v.mean(0).tolist(), "std": v.std(0).tolist()} for k, v in arr.items()}
        final[agent] = {k: _mean_std(v[:, -plan.tail:].mean(1)) for k, v in arr.items()}
    references = {}
    for name in policies.NAMES:
        per_seed = {k: [np.mean([r[k] for r in read_metrics(runs / f"reference-seed{s}" / "metrics.jsonl")
                                 if r["agent"] == name]) for s in seeds] for k in METRIC_KEYS}
        references[name] = {k: _mean_std(v) for k, v in per_seed.items()}
    adaptation = {}
    for label in ADAPTERS:
        per_seed = [read_metrics(runs / f"adapt-{label}-seed{s}" / "metrics.jsonl") for s in seeds]
        adaptation[label] = {str(p): {k: _mean_std([rows[p][k] for rows in per_seed]) for k in METRIC_KEYS}
                             for p in plan.adapt_points}
    test_refs = {}
    for name in policies.NAMES:
        per_seed = {k: [np.mean([r[k] for r in read_metrics(runs / f"reference-test-seed{s}" / "metrics.jsonl")
                                 if r["agent"] == name]) for s in seeds] for k in METRIC_KEYS}
        test_refs[name] = {k: _mean_std(v) for k, v in per_seed.items()}
    fixed = []
    for s in seeds:
        rows = read_metrics(runs / f"fixed-ppo-seed{s}" / "metrics.jsonl")
        refs = read_metrics(runs / f"fixed-ppo-seed{s}" / "references" / "metrics.jsonl")
        oracle = np.mean([r["throughput_mbps"] for r in refs if r["agent"] == "oracle"])
        ppo = np.mean([r["throughput_mbps"] for r in rows[-max(1, len(rows) // 10):]])
        fixed.append({"seed": s, "ppo_mbps": float(ppo), "oracle_mbps": float(oracle), "fraction": float(ppo / oracle)})
    return {"config": to_dict(config), "quick": plan.quick, "seeds": plan.num_seeds, "workers": workers,
            "wall_s": wall_s, "train_episodes": plan.train_episodes, "tail_episodes": plan.tail,
            "num_envs": config.env.num_envs, "curves": curves, "final": final, "references": references,
            "adaptation": adaptation, "test_references": test_refs, "adapt_points": list(plan.adapt_points),
            "fixed_task": fixed}
