"""`testbed reproduce`: the paper's experiment in simulation, over several seeds.

Per seed: (meta-)train PPO, MAML, RNN and RNN + attention on the training task stream; then
evaluate each trained agent on the fixed evaluation sets (``evaluation:``) of the training and
the held-out distribution, with argmax and with sampled actions, beside the reference policies of
``run.policies`` on the same tasks and draws (once: they do not depend on the training seed);
adapt on the held-out test tasks (each lane keeps one task) for 20 episodes: the three
meta-learners, PPO fine-tuned from its multi-task policy and PPO from scratch, beside the
reference policies on the same tasks; and, when the oracle is among ``run.policies``, a
baseline-strength check, PPO on one fixed task with a throughput-only reward against the
per-band oracle. With ``network.task_family: hardware`` (not on the bench, which has no ground truth
of the hidden parameters) also the informed-PPO ceiling: PPO trained with ``network.informed: true``
and the shared link head (the hidden hardware parameters in its observation, an actor that uses
them; ``train-ppo_informed-seed<s>``), evaluated by the evaluation protocol on both distributions (``evaluate-informed-seed<s>``) and played, without
learning, on the held-out tasks of that seed's adaptation for as many episodes
(``informed-test-seed<s>``), so the adaptation is measured as fractions of it on the same tasks.
Jobs run in parallel processes, or as tasks on a Ray cluster (``cluster``:
``testbed.cluster``, where a job that fails is named in ``failed_jobs`` and the run goes on); a
rerun resumes unfinished trainings.

On the bench (``--bench CONFIG``, the paper's workflow on lab hardware): every training runs in the
simulator, on the bench's network (the bench config on ``backend: sim``, without its ``hardware:``
section) or on a twin (``--twin``, written by `testbed calibrate`); the evaluations, the reference
runs and the adaptations run on the bench's radios, one job at a time in a process of their own
(the radios are one shared resource; local even with ``cluster``), and the evaluation protocol runs
in the simulator too (``evaluate-sim-*``), so the report sets the same agents side by side on both.
The bench budget (``bench_budget``: episodes, network-steps, air time, wall time at the steps/s
measured by an earlier invocation) is printed and recorded in provenance.json before anything
transmits. A radio that fails in a bench job ends that job with its data saved (``BenchFailed``,
named in ``failed_jobs``); no bench job starts after it, the simulator's jobs finish. A bench
config without ``--bench`` is refused: it would train every agent on the radios.
Ctrl-C (SIGINT) or SIGTERM drops the queued jobs and stops the running trainings and
adaptations after their episode in progress, with a checkpoint; the results folder gets a
``provenance.json`` (with ``failed_jobs`` and outcome ``JobsFailed`` when jobs failed).

The run folders go under ``runs/`` in the results folder; ``collect`` aggregates them into
the summary ``testbed.report`` writes out: ``table.md`` (the evaluation: mean ± std over seeds,
and as fractions of the oracle), ``fig3.png`` and ``curves.csv`` (training curves, mean over
seeds with a ±1 std band), ``adaptation.csv/.md/.png``, ``summary.json`` and ``results.md``; with
the informed ceiling the value of information first, the adaptation as fractions of the informed
policy and of the oracle, and the samples each adapter needs to reach 90 % of the informed policy.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from testbed import provenance
from testbed.agent_factory import AGENTS, RunError, policy_of_checkpoint
from testbed.checkpoint import MetricsLog, load_checkpoint, read_metrics, truncate_metrics
from testbed.config import Config, load_config, save_config, to_dict
from testbed.demo import run_policy
from testbed.env import DISTRIBUTIONS
from testbed.metrics import METRIC_KEYS, lane_means
from testbed.report import write_failures, write_outputs
from testbed.runner import (ACTION_MODES, RADIO_ERRORS, BackendFailure, Interrupted, StopSignals, adapt,
                            evaluate_on, evaluation_config, evaluation_label, evaluation_tasks_record,
                            format_duration, opened_env, train)

INFORMED = "ppo_informed"     # PPO that observes the hidden hardware parameters: the ceiling
REACH = 0.9                   # samples to reach this fraction of the informed policy's normalised return
FRACTION_KEYS = ("return", "throughput_mbps")

ADAPT_POINTS = (0, 1, 2, 5, 10, 20)
ADAPTERS = ("maml", "rnn", "rnn_attention", "ppo_finetune", "ppo_scratch")
THROUGHPUT_ONLY = {"w_fairness": 0.0, "w_cost": 0.0, "w_penalty": 0.0}
QUICK = {"network": {"episode_steps": 20}, "env": {"num_envs": 4}, "evaluation": {"num_tasks": 4, "episodes": 2},
         "agent": {"episodes": 8, "checkpoint_every": 2, "recurrent": {"episodes_per_trial": 2}}}
BENCH_QUICK = {**QUICK, "network": {"episode_steps": 10}, "env": {"num_envs": 1},   # --quick --bench: radio time
               "evaluation": {"num_tasks": 2, "episodes": 1}}                       # is dear
BENCH_BACKENDS = ("mock", "pluto", "gnuradio")
BENCH_ERRORS = (BackendFailure, *RADIO_ERRORS)     # a bench job that raised them failed; the run goes on
NETWORK_SIZES = ("num_bs", "num_ue", "num_bands", "num_levels", "episode_steps")   # a twin must share them


class Plan:
    """Sizes of one reproduction."""

    def __init__(self, config: Config, quick: bool, num_seeds: int, bench: bool = False):
        self.quick, self.num_seeds = quick, num_seeds
        self.train_episodes = config.agent.episodes
        self.adapt_points = ((0, 1, 2) if bench else (0, 1, 2, 5)) if quick else ADAPT_POINTS
        self.adapt_episodes = self.adapt_points[-1] + 1
        self.fixed_episodes = 6 if quick else 150
        self.tail = max(1, self.train_episodes // 10)   # end-of-training window, in episodes


def experiment_configs(source, quick: bool, bench: bool, twin: str | None = None) -> tuple[Config, Config | None]:
    """The simulator's config (every training) and the bench's (evaluations, reference runs and
    adaptations; None without ``bench``). On the bench the simulator is the bench's network on
    ``backend: sim`` or the ``twin``, with the bench's evaluation protocol and reference policies,
    and the bench takes the simulator's agent section. ``RunError`` (one line) for a bench config
    without ``bench``, ``bench`` on a config that is no bench, and a twin that is not a sim config of
    the bench's network."""
    sizes = (BENCH_QUICK if bench else QUICK) if quick else None
    config = load_config(source, sizes)
    if not bench:
        if config.backend == "replay":
            raise RunError(f"reproduce --config {source}: backend replay replays a recording's actions only; "
                           "reproduce needs backend sim, or --bench with a bench config")
        if config.backend != "sim":
            raise RunError(f"reproduce --config {source}: backend {config.backend} is a bench, and --config would "
                           f"train every agent there for {config.agent.episodes} episodes; run `testbed reproduce "
                           f"--bench {source}` to meta-train in the simulator and adapt and evaluate on the bench")
        return config, None
    if config.backend not in BENCH_BACKENDS:
        raise RunError(f"reproduce --bench {source}: backend {config.backend} is no bench; give a bench config "
                       f"(backend {', '.join(BENCH_BACKENDS)})")
    if twin is None:
        sim = {**{k: v for k, v in to_dict(config).items() if k != "hardware"}, "backend": "sim"}
    else:
        sim = to_dict(load_config(twin, sizes))
        if sim["backend"] != "sim":
            raise RunError(f"reproduce --twin {twin}: backend {sim['backend']}; a twin is a sim config "
                           "(`testbed calibrate DIR --out TWIN.yaml` writes one)")
    sim = load_config(sim, {"evaluation": to_dict(config.evaluation), "run": to_dict(config.run)})
    differ = [f"network.{k} {getattr(sim.network, k)} vs {getattr(config.network, k)}"
              for k in NETWORK_SIZES if getattr(sim.network, k) != getattr(config.network, k)]
    if differ:
        raise RunError(f"reproduce --twin {twin}: not the bench's network ({', '.join(differ)} on the bench); "
                       "calibrate from a recording of this bench")
    return sim, load_config(config, {"agent": to_dict(sim.agent)})


def _seeded(config: dict, seed: int, **sections) -> Config:
    """``config`` for seed number ``seed`` (env.seed offset by it), with ``sections`` overridden."""
    base = load_config(config)
    env = {"seed": base.env.seed + seed, **sections.pop("env", {})}
    return load_config(base, {"env": env, **sections})


# jobs (run in worker processes) ---------------------------------------------------------------
def _job_train(config: dict, agent: str, seed: int, run_dir: str) -> str:
    start_job(run_dir)
    train(_seeded(config, seed), agent, Path(run_dir), progress=False)
    return run_dir


def _job_references(config: dict, seed: int, episodes: int, run_dir: str, distribution: str, per_task: int,
                    names) -> str:
    """The reference policies ``names``, every one on the same tasks and draws; metrics.jsonl rows per
    policy and episode."""
    start_job(run_dir)
    cfg = _seeded(config, seed, env={"task_distribution": distribution, "episodes_per_task": per_task})
    run_dir = Path(run_dir)
    if _complete(run_dir, len(names) * episodes):
        return str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    truncate_metrics(run_dir / "metrics.jsonl", 0)
    with opened_env(cfg, run_dir) as env, MetricsLog(run_dir / "metrics.jsonl") as log:
        for name in names:                  # each policy's lines as it ends: a radio failure keeps them
            lanes = run_policy(env, name, episodes, cfg.env.seed, tqdm(disable=True))
            for episode in range(episodes):
                ep = [r for r in lanes if r["episode"] == episode]
                log.write({"agent": name, "seed": seed, "episode": episode, **lane_means(ep)})
    return str(run_dir)


def _job_evaluate(config: dict, seed: int, train_dirs: dict | None, run_dir: str) -> str:
    """The evaluation protocol on both distributions, a folder each (metrics.jsonl, tasks.json): the
    trained agents of seed ``seed`` (``train_dirs``: agent -> run folder) with argmax and sampled
    actions; with ``train_dirs`` None, the reference policies of ``run.policies`` instead (they do
    not depend on the training seed). A finished distribution is not repeated."""
    start_job(run_dir)
    base = _seeded(config, seed)
    agents = {a: _trained_policy(Path(d)) for a, d in (train_dirs or {}).items()}
    references = () if train_dirs else base.run.policies
    for distribution in DISTRIBUTIONS:
        cfg = evaluation_config(base, distribution)
        folder = Path(run_dir) / distribution
        if _complete(folder, (len(ACTION_MODES) * len(agents) + len(references)) * cfg.evaluation.episodes):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        save_config(cfg, folder / "config.yaml")
        truncate_metrics(folder / "metrics.jsonl", 0)
        with opened_env(cfg, folder) as env, MetricsLog(folder / "metrics.jsonl") as log:
            evaluate_on(env, cfg, agents, references, log, tag={"seed": seed})
            (folder / "tasks.json").write_text(json.dumps(evaluation_tasks_record(env), indent=1))
    return run_dir


def _job_adapt(config: dict, seed: int, episodes: int, train_dirs: dict, out: str) -> str:
    """Adaptation on the held-out tasks for every adapter; same tasks for all (same seed)."""
    start_job(out)
    cfg = _seeded(config, seed, env={"task_distribution": "test"})
    for label in ADAPTERS:
        run_dir = Path(out) / f"adapt-{label}-seed{seed}"
        if _complete(run_dir, episodes):
            continue
        agent = "ppo" if label.startswith("ppo") else label
        policy = None if label == "ppo_scratch" else _trained_policy(Path(train_dirs[agent]))
        adapt(cfg, agent, policy, episodes, run_dir, progress=False, label=label)
    return out


def informed_config(config: dict) -> dict:
    """``config`` with ``network.informed: true`` (the hidden hardware parameters observed) and
    ``agent.shared_link_head: true``, the actor that uses them (docs/agents.md, "A shared link head")."""
    return to_dict(load_config(config, {"network": {"informed": True}, "agent": {"shared_link_head": True}}))


def held_out_config(config: dict, seed: int, episodes: int) -> Config:
    """Seed ``seed``'s held-out adaptation tasks (each lane keeps one for ``episodes`` episodes),
    set to play them ``episodes`` times per policy: the tasks of ``adapt-*-seed<s>``."""
    return _seeded(config, seed, env={"task_distribution": "test", "episodes_per_task": episodes},
                   evaluation={"episodes": episodes})


def _job_informed(config: dict, seed: int, episodes: int, train_dir: str, runs: str) -> str:
    """The informed PPO of seed ``seed`` (``config``: ``informed_config``), no learning: the evaluation
    protocol on both distributions (``evaluate-informed-seed<s>``), then argmax and sampled actions for
    ``episodes`` episodes on the held-out tasks of the seed's adaptation (``informed-test-seed<s>``, with
    tasks.json: those tasks as drawn at the start). A finished part is not repeated."""
    _job_evaluate(config, seed, {"ppo": train_dir}, str(Path(runs) / f"evaluate-informed-seed{seed}"))
    folder = Path(runs) / f"informed-test-seed{seed}"
    if _complete(folder, len(ACTION_MODES) * episodes):
        return runs
    cfg = held_out_config(config, seed, episodes)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(cfg, folder / "config.yaml")
    truncate_metrics(folder / "metrics.jsonl", 0)
    with opened_env(cfg, folder) as env, MetricsLog(folder / "metrics.jsonl") as log:
        env.reset(seed=cfg.env.seed)            # the tasks every policy starts from (evaluate_on resets alike)
        (folder / "tasks.json").write_text(json.dumps(evaluation_tasks_record(env), indent=1))
        evaluate_on(env, cfg, {"ppo": _trained_policy(Path(train_dir))}, (), log, tag={"seed": seed})
    return runs


def _job_fixed(config: dict, seed: int, episodes: int, run_dir: str) -> str:
    """Baseline strength: PPO on one fixed task, throughput-only reward, then the oracle on that task."""
    start_job(run_dir)
    cfg = _seeded(config, seed, network=THROUGHPUT_ONLY, env={"task_seed": 1000 + seed},
                  agent={"episodes": episodes})
    train(cfg, "ppo", Path(run_dir), progress=False)
    _job_references(to_dict(cfg), 0, 3, str(Path(run_dir) / "references"), "train", 1, ("oracle",))
    return run_dir


def start_job(run_dir: str) -> None:
    """One torch thread; a job that starts after its worker was asked to stop ends at once."""
    torch.set_num_threads(1)
    if StopSignals.noted is not None:
        raise Interrupted(run_dir, StopSignals.noted)


def _worker_init() -> None:
    """A worker in its own process group (a terminal's Ctrl-C reaches only the parent, which passes
    one SIGINT on) that keeps a stop request made outside its episode loops (``StopSignals.note``)."""
    os.setpgrp()
    signal.signal(signal.SIGINT, StopSignals.note)


class LocalPool:
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

    def __enter__(self) -> "LocalPool":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown()


def _executor(workers: int, cluster: str | None, out: Path):
    """The local pool, or a connection to the Ray cluster at ``cluster`` ('auto' or HOST:PORT)."""
    if cluster is None:
        return LocalPool(workers)
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
              workers: int | None = None, command: list[str] | None = None, cluster: str | None = None,
              bench: bool = False, twin: str | None = None) -> Path:
    """Run the whole experiment; returns the results folder. ``command``: the command line recorded
    in provenance.json (default: this process's); ``cluster``: run the jobs on the Ray cluster at
    that address instead of a local pool (bench jobs stay local); ``bench``: ``source`` is a bench
    config, trainings run in the simulator (on ``twin`` if given), the rest on the bench. The
    informed-PPO jobs run with ``task_family: hardware`` off the bench; a rerun into a results folder
    made without them runs only them and whatever else is missing. A stop signal raises
    ``runner.Interrupted``; failed jobs ``JobsFailed``, a failed bench job ``BenchFailed``."""
    config, bench_config = experiment_configs(source, quick, bench, twin)
    on = bench_config or config                  # where agents adapt and are evaluated
    for distribution in DISTRIBUTIONS:           # the evaluation's sizes are checked before anything runs
        evaluation_config(on, distribution)
    plan = Plan(config, quick, num_seeds, bench)
    name = "reproduce" + ("-bench" if bench else "") + ("-quick" if quick else "")
    out = Path(out_dir or Path(on.run.out_dir) / name)
    runs = out.resolve() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    cfg, on_cfg = to_dict(config), to_dict(on)
    budget = bench_budget(bench_config, plan, runs) if bench else None
    if budget:
        print(describe_budget(bench_config, budget), flush=True)
    clock = time.perf_counter()
    workers = workers or min(os.cpu_count() or 1, num_seeds * len(AGENTS))
    train_dirs = {s: {a: str(runs / f"train-{a}-seed{s}") for a in AGENTS} for s in range(num_seeds)}
    informed = has_informed(config, bench)
    informed_dirs = {s: str(runs / f"train-{INFORMED}-seed{s}") for s in range(num_seeds)} if informed else {}
    cost = {"rnn_attention": 4, "rnn": 3, "maml": 2, "ppo": 2}          # longest first
    names = on.run.policies
    fixed = "oracle" in names                # the baseline check needs the oracle
    others = 1 + num_seeds * (3 + fixed + informed) + (1 + num_seeds if bench else 0)
    total = num_seeds * (len(AGENTS) + informed) * plan.train_episodes + others
    fields = {"bench_budget": budget, "twin": _file_record(twin)} if bench else {}
    fields["informed_ceiling"] = informed
    with provenance.recorded(out, command, config.env.device, **fields) as record, \
            StopSignals("stopping: the running trainings finish their episode and save a checkpoint") as stop, \
            _executor(workers, cluster, out) as pool, \
            (_bench_pool() if bench else nullcontext()) as bench_pool, \
            tqdm(total=total, desc="reproduce", unit="ep") as bar:
        workers = pool.workers
        pending = {}                         # future -> (kind, seed, job name, on the bench)
        queue = []                           # bench jobs waiting for the radios, in order
        down = None                          # the bench job whose radios failed

        def submit(kind: str, s: int, name: str, job, *args, radios: bool = False) -> None:
            if radios and bench_pool is not None:
                queue.append((kind, s, name, job, args))
            else:
                pending[pool.submit(name, job, *args)] = (kind, s, name, False)

        for agent in sorted(AGENTS, key=lambda a: -cost[a]):
            for s in range(num_seeds):
                submit("train", s, f"train-{agent}-seed{s}", _job_train, cfg, agent, s, train_dirs[s][agent])
        for s, run_dir in informed_dirs.items():
            submit("train-informed", s, f"train-{INFORMED}-seed{s}", _job_train, informed_config(cfg), "ppo", s,
                   run_dir)
        submit("other", 0, "evaluate-references", _job_evaluate, on_cfg, 0, None, str(runs / "evaluate-references"),
               radios=True)
        if bench:
            submit("other", 0, "evaluate-sim-references", _job_evaluate, cfg, 0, None,
                   str(runs / "evaluate-sim-references"))
        for s in range(num_seeds):
            submit("other", s, f"reference-test-seed{s}", _job_references, on_cfg, s, plan.adapt_episodes,
                   str(runs / f"reference-test-seed{s}"), "test", plan.adapt_episodes, names, radios=True)
            if fixed:
                submit("other", s, f"fixed-ppo-seed{s}", _job_fixed, cfg, s, plan.fixed_episodes,
                       str(runs / f"fixed-ppo-seed{s}"))
        trained = {s: 0 for s in range(num_seeds)}
        informed_trained = set()
        done_others, failed = 0, {}
        try:
            while pending or queue:
                if stop.signal_name is not None:
                    raise Interrupted(out, stop.signal_name)
                if queue and down:
                    failed.update({job[2]: f"not run: the bench failed in {down}" for job in queue})
                    queue.clear()
                if queue and not any(radios for *_, radios in pending.values()):     # one bench job at a time
                    kind, s, name, job, args = queue.pop(0)
                    pending[bench_pool.submit(name, job, *args)] = (kind, s, name, True)
                if not pending:
                    continue
                done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    kind, s, name, radios = pending.pop(fut)
                    try:
                        fut.result()
                    except (BENCH_ERRORS if radios else pool.job_errors) as err:
                        failed[name] = f"{type(err).__name__}: {err}" if radios else pool.describe(err)
                        if radios:
                            down = name
                            tqdm.write(f"bench job {name} failed: {failed[name]}; its data is saved. No further "
                                       "bench job starts; the simulator's jobs go on.", file=sys.stderr)
                        continue
                    if kind == "train-informed":
                        informed_trained.add(s)
                        submit("other", s, f"evaluate-informed-seed{s}", _job_informed, informed_config(cfg), s,
                               plan.adapt_episodes, informed_dirs[s], str(runs))
                    elif kind == "train":
                        trained[s] += 1
                        if trained[s] == len(AGENTS):
                            submit("other", s, f"evaluate-seed{s}", _job_evaluate, on_cfg, s, train_dirs[s],
                                   str(runs / f"evaluate-seed{s}"), radios=True)
                            submit("other", s, f"adapt-seed{s}", _job_adapt, on_cfg, s, plan.adapt_episodes,
                                   train_dirs[s], str(runs), radios=True)
                            if bench:
                                submit("other", s, f"evaluate-sim-seed{s}", _job_evaluate, cfg, s, train_dirs[s],
                                       str(runs / f"evaluate-sim-seed{s}"))
                    else:
                        done_others += 1
                lines = sum(_count_lines(Path(d) / "metrics.jsonl")
                            for d in [*informed_dirs.values(), *(d for s in train_dirs for d in train_dirs[s].values())])
                bar.n = lines + done_others
                bar.set_postfix_str(f"jobs done {sum(trained.values()) + done_others}, "
                                    f"running {pool.running(pending)}, failed {len(failed)}", refresh=False)
                bar.refresh()
        except Interrupted as err:
            pool.stop([f for f, job in pending.items() if not job[3]])    # local: signals every worker, bench too
            if cluster is not None and bench_pool is not None:
                bench_pool.stop([f for f, job in pending.items() if job[3]])
            raise Interrupted(out, err.signal_name) from None
        if failed:
            seed_jobs = ("evaluate", "adapt") + (("evaluate-sim",) if bench else ())
            failed.update({f"{job}-seed{s}": "not run: a training of its seed failed"
                           for s, n in trained.items() if n < len(AGENTS) for job in seed_jobs})
            failed.update({f"evaluate-informed-seed{s}": "not run: its training failed"
                           for s in informed_dirs if s not in informed_trained})
            record["failed_jobs"] = failed
            folder = write_failures(out, plan.quick, plan.num_seeds, failed)
            raise BenchFailed(folder, failed, down) if down else JobsFailed(folder, failed)
    wall_s = time.perf_counter() - clock
    write_outputs(out, {**collect(out, plan, config, wall_s, workers, bench_config, twin, budget), "failed_jobs": {}})
    return out


class JobsFailed(RuntimeError):
    """Jobs of a cluster run failed (``failed``: job name -> why); the others finished in ``out``."""

    def __init__(self, out: Path, failed: dict[str, str]):
        super().__init__(f"{len(failed)} jobs failed: {', '.join(failed)}")
        self.out, self.failed = out, failed


class BenchFailed(JobsFailed):
    """A bench job's radios failed (``job``: its name); its data is saved, later bench jobs did not run."""

    def __init__(self, out: Path, failed: dict[str, str], job: str):
        super().__init__(out, failed)
        self.job = job


def has_informed(config: Config, bench: bool) -> bool:
    """Whether the informed-PPO ceiling runs: with hidden task parameters to observe (``task_family:
    hardware``) and their ground truth (the simulator, not the bench)."""
    return config.network.task_family == "hardware" and not bench


def _bench_pool() -> LocalPool:
    """The bench jobs' own process: one, local (the radios hang off this machine)."""
    return LocalPool(1)


def _file_record(path: str | None) -> dict | None:
    """A file the run depends on: its resolved path and sha256 (None: none given)."""
    return None if path is None else {"path": str(Path(path).resolve()), "sha256": provenance.sha256(Path(path))}


# the bench budget ---------------------------------------------------------------------------
def bench_folders(runs: Path, bench: Config, plan: Plan) -> dict[Path, int]:
    """The run folders of the bench jobs and the env lanes (networks) each episode of theirs plays."""
    lanes, num_tasks = bench.env.num_envs, bench.evaluation.num_tasks
    folders = {runs / "evaluate-references" / d: num_tasks for d in DISTRIBUTIONS}
    for s in range(plan.num_seeds):
        folders.update({runs / f"evaluate-seed{s}" / d: num_tasks for d in DISTRIBUTIONS})
        folders[runs / f"reference-test-seed{s}"] = lanes
        folders.update({runs / f"adapt-{label}-seed{s}": lanes for label in ADAPTERS})
    return folders


def _bench_played(runs: Path, bench: Config, plan: Plan) -> tuple[int, int, float]:
    """Network-steps the bench folders hold, and of those the ones timed (their metrics lines have
    ``wall_s``, counted from the start of each run of episodes) with the seconds they took."""
    steps, timed, seconds = 0, 0, 0.0
    for folder, lanes in bench_folders(runs, bench, plan).items():
        last = None
        for row in read_metrics(folder / "metrics.jsonl") if (folder / "metrics.jsonl").exists() else ():
            n = lanes * bench.network.episode_steps
            steps += n
            if "wall_s" not in row:
                continue
            same_run = last is not None and row["episode"] == last["episode"] + 1 and row["wall_s"] >= last["wall_s"]
            seconds += row["wall_s"] - last["wall_s"] if same_run else row["wall_s"]
            timed, last = timed + n, row
    return steps, timed, seconds


def bench_budget(bench: Config, plan: Plan, runs: Path) -> dict:
    """What the bench jobs take, before they run: episodes and network-steps (each episode plays its
    lanes one after the other on the radios), the air time they need at most (TX on: per network-step
    at most min(B, max_turns) turns, in each every UE radio captures once while the bursts are on;
    stale recaptures and the start-up calibration of each job come on top), and the wall time at the
    steps/s measured in this results folder by an earlier invocation (None before any)."""
    ev, hw, p, names = bench.evaluation, bench.hardware, bench.network, bench.run.policies
    agents_eval = len(DISTRIBUTIONS) * len(AGENTS) * len(ACTION_MODES) * ev.episodes
    jobs = {"evaluate-references": (len(DISTRIBUTIONS) * len(names) * ev.episodes, ev.num_tasks)}
    for s in range(plan.num_seeds):
        jobs.update({f"evaluate-seed{s}": (agents_eval, ev.num_tasks),
                     f"reference-test-seed{s}": (len(names) * plan.adapt_episodes, bench.env.num_envs),
                     f"adapt-seed{s}": (len(ADAPTERS) * plan.adapt_episodes, bench.env.num_envs)})
    steps = sum(episodes * lanes for episodes, lanes in jobs.values()) * p.episode_steps
    capture_s = hw.capture_samples / hw.sample_rate_hz + hw.settle_s
    captures = min(p.num_bs, hw.max_turns) * len(hw.radios_with_role("ue"))      # with TX on, per network-step
    done, timed, seconds = _bench_played(runs, bench, plan)
    rate = timed / seconds if seconds > 0 else None
    return {"jobs": {name: {"episodes": e, "networks": n} for name, (e, n) in jobs.items()},
            "episodes": sum(e for e, _ in jobs.values()), "steps": steps, "steps_done": done,
            "capture_s": capture_s, "captures_tx_on_per_step": captures, "air_time_s": steps * captures * capture_s,
            "steps_per_s": rate, "wall_s": (steps - done) / rate if rate else None}


def describe_budget(bench: Config, budget: dict) -> str:
    """The bench budget in words, printed before anything transmits."""
    hw = bench.hardware
    radios = ", ".join(f"{e.name} ({e.driver}, {e.role})" for e in hw.radios)
    left = budget["steps"] - budget["steps_done"]
    if left <= 0:
        wall = "none: every bench step is done"
    elif budget["wall_s"] is not None:
        wall = (f"about {format_duration(budget['wall_s'])} for the {left} steps left, at the "
                f"{budget['steps_per_s']:.1f} steps/s measured here before")
    else:
        wall = "not known yet (no bench steps measured in this results folder)"
    return "\n".join([
        f"bench budget: backend {bench.backend}, radios {radios}",
        f"  {budget['episodes']} episodes on the bench, {budget['steps']} network-steps "
        f"({budget['steps_done']} done before); trainings run in the simulator",
        f"  air time at most {format_duration(budget['air_time_s'])} (TX on: {budget['captures_tx_on_per_step']} "
        f"captures of {hw.capture_samples} samples at {hw.sample_rate_hz / 1e6:g} MHz per network-step)",
        f"  wall time on the bench: {wall}"])


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


def _over_seeds(rows_per_seed: list[list[dict]], agent: str) -> dict:
    """Per metric, mean ± std over seeds of each seed's mean over the episodes of ``agent``."""
    return {k: _mean_std([np.mean([r[k] for r in rows if r["agent"] == agent]) for rows in rows_per_seed])
            for k in METRIC_KEYS}


def _evaluation(runs: Path, seeds: range, names, prefix: str) -> dict:
    """Per distribution, every agent and action mode and every reference policy: mean ± std over seeds
    of the evaluation folders ``<prefix>-seed<s>`` and ``<prefix>-references``."""
    evaluation = {}
    for dist in DISTRIBUTIONS:
        per_seed = [read_metrics(runs / f"{prefix}-seed{s}" / dist / "metrics.jsonl") for s in seeds]
        refs = [read_metrics(runs / f"{prefix}-references" / dist / "metrics.jsonl")]
        labels = [evaluation_label({"agent": a, "actions": m}) for a in AGENTS for m in ACTION_MODES]
        evaluation[dist] = {**{label: _over_seeds(per_seed, label) for label in labels},
                            **{name: _over_seeds(refs, name) for name in names}}
    return evaluation


def normalised(value: float, ref: float, floor: float) -> float | None:
    """(value − floor) / (ref − floor): ``value`` as a fraction of the way from ``floor`` to ``ref``
    (1: as good as ``ref``, 0: no better than ``floor``); None where ``ref`` is not above ``floor``."""
    gap = ref - floor
    return (value - floor) / gap if gap > 0 else None


def _defined_mean_std(values: list) -> dict | None:
    """Mean ± std over seeds; None where a seed's value is undefined."""
    return None if any(v is None for v in values) else _mean_std(values)


def _episode_mean(rows: list[dict], agent: str, key: str) -> float:
    return float(np.mean([r[key] for r in rows if r["agent"] == agent]))


def _informed(runs: Path, seeds: range, evaluation: dict) -> dict:
    """The informed PPO: its evaluation on both fixed sets (argmax and sampled, mean ± std over seeds)
    and on the held-out adaptation tasks; per distribution the value of information, informed against
    uninformed PPO with argmax actions as ratios of the means over seeds (None where undefined): the
    return above random's on the same tasks, (R_informed − R_random) / (R_PPO − R_random), the return
    and the throughput."""
    out = {"evaluation": {}, "value": {}}
    for dist in DISTRIBUTIONS:
        per_seed = [read_metrics(runs / f"evaluate-informed-seed{s}" / dist / "metrics.jsonl") for s in seeds]
        rows = {f"{INFORMED}/{m}": _over_seeds(per_seed, f"ppo/{m}") for m in ACTION_MODES}
        informed = {k: rows[f"{INFORMED}/argmax"][k]["mean"] for k in FRACTION_KEYS}
        ppo = {k: evaluation[dist]["ppo/argmax"][k]["mean"] for k in FRACTION_KEYS}
        random = evaluation[dist].get("random")
        out["evaluation"][dist] = rows
        out["value"][dist] = {
            "return_above_random": None if random is None else
            normalised(informed["return"], ppo["return"], random["return"]["mean"]),
            **{k: normalised(informed[k], ppo[k], 0.0) for k in FRACTION_KEYS}}
    test = [read_metrics(runs / f"informed-test-seed{s}" / "metrics.jsonl") for s in seeds]
    out["test"] = {m: _over_seeds(test, f"ppo/{m}") for m in ACTION_MODES}
    return out


def _held_out_references(runs: Path, s: int, names, informed: bool) -> dict[str, dict]:
    """Seed ``s``'s no-learning policies on its held-out adaptation tasks (random and oracle where they
    ran, the informed PPO with argmax actions): metric -> mean over the episodes they played."""
    rows = read_metrics(runs / f"reference-test-seed{s}" / "metrics.jsonl")
    refs = {n: {k: _episode_mean(rows, n, k) for k in FRACTION_KEYS} for n in ("random", "oracle") if n in names}
    if informed:
        rows = read_metrics(runs / f"informed-test-seed{s}" / "metrics.jsonl")
        refs["informed"] = {k: _episode_mean(rows, "ppo/argmax", k) for k in FRACTION_KEYS}
    return refs


def adaptation_fractions(runs: Path, plan: Plan, names, informed: bool, episode_steps: int) -> tuple[dict, dict | None]:
    """Per reference ('informed': the informed PPO with argmax actions; 'oracle'), adapter and adaptation
    point: per seed the return of that episode normalised against random on the same tasks,
    (R − R_random) / (R_ref − R_random), and the throughput T / T_ref, the references' values being
    their means over the episodes they played on those tasks; then mean ± std over seeds (None where
    a seed's value is undefined: no random run, or the reference not above random).
    And, with the informed PPO, the samples to ``REACH``: per adapter the first adaptation episode n at
    which the mean over seeds of its normalised return reaches ``REACH``, and the steps every held-out
    task played before it, n × episode_steps (None: not within the episodes played)."""
    seeds = range(plan.num_seeds)
    refs = [_held_out_references(runs, s, names, informed) for s in seeds]
    references = [r for r in ("informed", "oracle") if r in refs[0]]

    def fractions(row: dict, ref: dict, random: dict | None) -> dict:
        return {"return": None if random is None else normalised(row["return"], ref["return"], random["return"]),
                "throughput_mbps": normalised(row["throughput_mbps"], ref["throughput_mbps"], 0.0)}

    curves = {(ref, label): [[fractions(row, refs[s][ref], refs[s].get("random"))       # [seed][episode]
                              for row in read_metrics(runs / f"adapt-{label}-seed{s}" / "metrics.jsonl")] for s in seeds]
              for ref in references for label in ADAPTERS}
    table = {ref: {label: {str(p): {k: _defined_mean_std([c[p][k] for c in curves[ref, label]]) for k in FRACTION_KEYS}
                           for p in plan.adapt_points} for label in ADAPTERS} for ref in references}
    if not informed:
        return table, None
    last = plan.adapt_episodes - 1
    samples = {"threshold": REACH, "episode_steps": episode_steps, "last_episode": last, "why_not": None, "adapters": {}}
    if "random" not in names:
        samples["why_not"] = "random is not among run.policies, so no return is normalised"
        return table, samples
    below = [s for s in seeds if refs[s]["informed"]["return"] <= refs[s]["random"]["return"]]
    if below:
        samples["why_not"] = ("the informed policy's return is not above random's on the held-out tasks of seed "
                              + ", ".join(map(str, below)))
        return table, samples
    for label in ADAPTERS:
        means = [np.mean([c[e]["return"] for c in curves["informed", label]]) for e in range(last + 1)]
        first = next((e for e, m in enumerate(means) if m >= REACH), None)
        samples["adapters"][label] = {"episode": first, "steps": None if first is None else first * episode_steps}
    return table, samples


def _bench_summary(runs: Path, plan: Plan, bench: Config, twin: str | None, budget: dict) -> dict:
    """Backend, radios, the twin, each bench folder's start-up calibration (backend.json), the
    budget with the network-steps and seconds measured, and the same evaluation in the simulator."""
    calibration = {}
    for folder in bench_folders(runs, bench, plan):
        record = json.loads((folder / "backend.json").read_text()) if (folder / "backend.json").exists() else {}
        if "calibration" in record:
            calibration[str(folder.relative_to(runs))] = record["calibration"]
    steps, timed, seconds = _bench_played(runs, bench, plan)
    return {"backend": bench.backend, "config": to_dict(bench),
            "radios": [{"name": e.name, "driver": e.driver, "role": e.role} for e in bench.hardware.radios],
            "twin": _file_record(twin), "calibration": calibration, "budget": budget,
            "measured": {"steps": steps, "timed_steps": timed, "seconds": seconds,
                         "steps_per_s": timed / seconds if seconds > 0 else None},
            "sim_evaluation": _evaluation(runs, range(plan.num_seeds), bench.run.policies, "evaluate-sim")}


def collect(out: Path, plan: Plan, config: Config, wall_s: float, workers: int, bench: Config | None = None,
            twin: str | None = None, budget: dict | None = None) -> dict:
    """Evaluation, training curves and end-of-training table, adaptation with its references and the
    baseline check, the informed PPO (None where it did not run), the adaptation as fractions of the
    informed PPO and of the oracle and the samples to reach ``REACH``, from the run folders; on a
    bench (``bench``, its ``twin`` and ``budget``) also what ``_bench_summary`` gathers."""
    runs = out / "runs"
    seeds = range(plan.num_seeds)
    names = config.run.policies
    curves, final = {}, {}
    for agent in AGENTS:
        per_seed = [read_metrics(runs / f"train-{agent}-seed{s}" / "metrics.jsonl") for s in seeds]
        length = min(len(rows) for rows in per_seed)
        arr = {k: np.array([[r[k] for r in rows[:length]] for rows in per_seed]) for k in METRIC_KEYS}  # [S, E]
        curves[agent] = {k: {"mean": v.mean(0).tolist(), "std": v.std(0).tolist()} for k, v in arr.items()}
        final[agent] = {k: _mean_std(v[:, -plan.tail:].mean(1)) for k, v in arr.items()}
    evaluation = _evaluation(runs, seeds, names, "evaluate")
    adaptation = {}
    for label in ADAPTERS:
        per_seed = [read_metrics(runs / f"adapt-{label}-seed{s}" / "metrics.jsonl") for s in seeds]
        adaptation[label] = {str(p): {k: _mean_std([rows[p][k] for rows in per_seed]) for k in METRIC_KEYS}
                             for p in plan.adapt_points}
    test_refs = {name: _over_seeds([read_metrics(runs / f"reference-test-seed{s}" / "metrics.jsonl") for s in seeds],
                                   name) for name in names}
    informed = has_informed(config, bench is not None)
    fractions, samples = adaptation_fractions(runs, plan, names, informed, (bench or config).network.episode_steps)
    fixed = []
    for s in seeds if "oracle" in names else ():
        rows = read_metrics(runs / f"fixed-ppo-seed{s}" / "metrics.jsonl")
        refs = read_metrics(runs / f"fixed-ppo-seed{s}" / "references" / "metrics.jsonl")
        oracle = np.mean([r["throughput_mbps"] for r in refs if r["agent"] == "oracle"])
        ppo = np.mean([r["throughput_mbps"] for r in rows[-max(1, len(rows) // 10):]])
        fixed.append({"seed": s, "ppo_mbps": float(ppo), "oracle_mbps": float(oracle), "fraction": float(ppo / oracle)})
    ev = config.evaluation
    return {"config": to_dict(config), "quick": plan.quick,
            "backends": {"train": config.backend, "evaluate": (bench or config).backend},
            "bench": None if bench is None else _bench_summary(runs, plan, bench, twin, budget), "seeds": plan.num_seeds, "workers": workers,
            "wall_s": wall_s, "train_episodes": plan.train_episodes, "tail_episodes": plan.tail,
            "num_envs": config.env.num_envs, "adapt_num_envs": (bench or config).env.num_envs,
            "references": list(names),
            "evaluation_set": {"num_tasks": ev.num_tasks, "episodes": ev.episodes, "seed": ev.seed},
            "evaluation": evaluation, "curves": curves, "final": final,
            "adaptation": adaptation, "test_references": test_refs, "adapt_points": list(plan.adapt_points),
            "informed": _informed(runs, seeds, evaluation) if informed else None,
            "adaptation_fractions": fractions, "samples_to_reach": samples, "fixed_task": fixed}
