"""Train, adapt and evaluate agents, and the `train`, `adapt`, `evaluate` and `reproduce` commands.

Every run writes a run folder: the resolved ``config.yaml``, ``metrics.jsonl`` (one line per
episode, means over the env lanes), ``checkpoints/latest.pt`` and ``plots/curves.png``.
Training resumes from the folder's checkpoint when rerun. A radio failure (``RadioError``)
mid-episode keeps the metrics written so far, saves a checkpoint of the agent as it was after
its last finished episode (data of the unfinished one, and of a half-collected rollout or
MAML task batch, is dropped), prints what happened and exits with status 3; rerunning
continues from there on fresh tasks.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from testbed.checkpoint import (CheckpointError, MetricsLog, load_checkpoint, read_metrics, save_checkpoint,
                                truncate_metrics)
from testbed.config import Config, load_config, save_config, to_dict
from sim.safety import SafetyViolation
from testbed.env import SpectrumVectorEnv
from testbed.metrics import PAPER_METRICS, EpisodeRecorder

AGENTS = ("ppo", "maml", "rnn", "rnn_attention")
EXIT_BACKEND = 3
METRIC_KEYS = PAPER_METRICS + ("blocked_unsafe", "executed_violations", "return")


class RunError(RuntimeError):
    """A run folder or checkpoint cannot be used as asked."""


class BackendFailure(RuntimeError):
    """The radio backend failed mid-run; the run's data is saved in ``run_dir`` and a rerun continues."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


# building -----------------------------------------------------------------------------------
def agent_config(name: str, config: Config, mode: str, episodes: int | None = None) -> Config:
    """The config the agent's env runs with: the task schedule each agent and mode needs.

    train: MAML plays 1 + query episodes per task, the recurrent agents whole trials, PPO the
    config's schedule. adapt: each lane keeps one task for all ``episodes``. eval: trials for
    the recurrent agents (their memory is how they adapt), the config's schedule otherwise.
    """
    a = config.agent
    trial = {"rnn": a.recurrent.episodes_per_trial, "rnn_attention": a.recurrent.episodes_per_trial}
    if mode == "train":
        per_task = {"maml": 1 + a.maml.query_episodes, **trial}.get(name, config.env.episodes_per_task)
    elif mode == "adapt":
        per_task = episodes
    else:
        per_task = trial.get(name, config.env.episodes_per_task)
    return load_config(config, {"env": {"episodes_per_task": per_task}})


def make_agent(name: str, env: SpectrumVectorEnv, config: Config, mode: str, seed: int):
    """An agent for ``env``'s spaces. In mode 'adapt' PPO gets one learner per lane (per task)."""
    from agents.maml import MAML
    from agents.policies import MLPPolicy, RecurrentPolicy
    from agents.ppo import PPO
    from agents.rl2 import RL2

    if name not in AGENTS:
        raise RunError(f"unknown agent {name!r}; choose from {list(AGENTS)}")
    a = config.agent
    torch.manual_seed(seed)
    obs_dim = env.single_observation_space.shape[0]
    nvec = env.single_action_space.nvec
    mask = env.obs_layout["mask"] if a.mask_mode == "logits" else None
    num_heads, num_levels = len(nvec), int(nvec.max())
    n, steps = env.num_envs, config.network.episode_steps
    if name in ("ppo", "maml"):
        policy = MLPPolicy(obs_dim, num_heads, num_levels, a.hidden_size, a.num_layers, mask)
        if name == "maml":
            return MAML(policy, a, n, steps, mode, seed)
        return PPO(policy, a, n, steps, mode, num_learners=n if mode == "adapt" else 1, seed=seed)
    r = a.recurrent
    policy = RecurrentPolicy(obs_dim, num_heads, num_levels, r.hidden_size, name == "rnn_attention",
                             r.num_heads, r.attention_window, mask)
    return RL2(policy, a, n, steps, mode, seed)


def _reset_seed(seed: int, start: int) -> int:
    """The env seed of a run (re)started at episode ``start``: fresh draws after a resume."""
    return seed if start == 0 else int(np.random.SeedSequence([seed, start]).generate_state(1)[0])


def _radio_error() -> tuple[type[Exception], ...]:
    """Errors of a backend that end the run cleanly: a failed radio, or a transmission the hard
    limits refused (both raised after every radio was muted)."""
    from hardware.radio import RadioError
    return RadioError, SafetyViolation


@contextmanager
def opened_env(config: Config):
    """The env of a run, closed at the end; a failure while closing after an error is reported
    but never replaces that error."""
    env = SpectrumVectorEnv(config)
    try:
        yield env
    except BaseException:
        try:
            env.close()
        except Exception as err:  # the first error is the one the user must see
            print(f"warning: closing the backend failed too: {err}", file=sys.stderr)
        raise
    env.close()


# the episode loop ---------------------------------------------------------------------------
def play(agent, env: SpectrumVectorEnv, first: int, last: int, log: MetricsLog, tag: dict,
         bar: tqdm | None, on_episode=None) -> None:
    """Episodes ``first..last-1`` of ``agent`` on ``env``; one metrics line each.

    ``on_episode(episode_done_count)`` runs after each line (checkpoints).
    A ``RadioError`` becomes ``BackendFailure`` after ``on_episode(first_unfinished, failed=True)``.
    """
    recorder = EpisodeRecorder(env.num_envs)
    samples = env.num_envs * agent.num_steps
    clock = time.perf_counter()
    for episode in range(first, last):
        try:
            stats = agent.run_episode(env, recorder.add)
        except _radio_error() as err:
            if on_episode is not None:
                on_episode(episode, failed=True)
            raise BackendFailure(f"radio backend failed during episode {episode}: {err}",
                                 log.path.parent) from err
        rows = recorder.finish()
        row = {"episode": episode, **tag}
        row.update({k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS})
        row["return_std"] = float(np.std([r["return"] for r in rows]))
        row["samples"] = (episode + 1) * samples
        row["wall_s"] = round(time.perf_counter() - clock, 3)
        row.update(stats)
        log.write(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(ret=f"{row['return']:.2f}", tput=f"{row['throughput_mbps']:.1f}")
        if on_episode is not None:
            on_episode(episode + 1)


def _plot_run(run_dir: Path, label: str) -> None:
    from testbed.plots import plot_curves

    rows = read_metrics(run_dir / "metrics.jsonl")
    if not rows:
        return
    x = np.array([r["episode"] for r in rows])
    series = {label: {k: (x, np.array([r[k] for r in rows]), None) for k in PAPER_METRICS}}
    (run_dir / "plots").mkdir(exist_ok=True)
    plot_curves(series, run_dir / "plots" / "curves.png", window=max(1, len(rows) // 50))


# train / adapt / evaluate ---------------------------------------------------------------------
def train(config: Config, name: str, run_dir: Path | None = None, progress: bool = True) -> Path:
    """(Meta-)train agent ``name`` for ``config.agent.episodes`` episodes; resumes from ``run_dir``'s checkpoint."""
    config = agent_config(name, config, "train")
    seed = config.env.seed
    run_dir = Path(run_dir or Path(config.run.out_dir) / f"train-{name}-seed{seed}")
    ck_path = run_dir / "checkpoints" / "latest.pt"
    comparable = to_dict(config)
    comparable["agent"].pop("episodes")
    with opened_env(config) as env:
        agent = make_agent(name, env, config, "train", seed)
        start = 0
        if ck_path.exists():
            ck = load_checkpoint(ck_path)
            saved = dict(ck["config"], agent={k: v for k, v in ck["config"]["agent"].items() if k != "episodes"})
            if ck["agent"] != name or saved != comparable:
                raise RunError(f"{run_dir} holds a {ck['agent']!r} run with another config; "
                               f"give another --run-dir, or delete the folder to start over")
            agent.load_state_dict(ck["state"])
            start = ck["episode"]
            if progress:
                print(f"resuming {run_dir} at episode {start}", file=sys.stderr)
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(run_dir / "metrics.jsonl", start)
        save_config(config, run_dir / "config.yaml")
        total = config.agent.episodes
        if start >= total:
            return run_dir
        agent.start(env, seed=_reset_seed(seed, start))

        def checkpoint(done: int, failed: bool = False) -> None:
            if failed or done % config.agent.checkpoint_every == 0 or done == total:
                save_checkpoint(ck_path, name, to_dict(config), done, agent.state_dict())

        with MetricsLog(run_dir / "metrics.jsonl") as log, \
                tqdm(total=total, initial=start, desc=f"train {name}", unit="ep", disable=not progress) as bar:
            play(agent, env, start, total, log, {"agent": name, "seed": seed}, bar, checkpoint)
    _plot_run(run_dir, name)
    return run_dir


def adapt(config: Config, name: str, policy_state: dict | None, episodes: int, run_dir: Path,
          progress: bool = True, label: str | None = None) -> Path:
    """Online adaptation: every lane keeps one task for ``episodes`` episodes while the agent adapts
    (PPO fine-tunes one copy per lane; MAML takes inner steps; the recurrent agents use memory).
    ``policy_state`` None starts from a fresh initialisation (PPO from scratch)."""
    config = agent_config(name, config, "adapt", episodes)
    run_dir = Path(run_dir)
    ck_path = run_dir / "checkpoints" / "latest.pt"
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    with opened_env(config) as env:
        agent = make_agent(name, env, config, "adapt", config.env.seed)
        start = 0
        if ck_path.exists():  # a rerun after a failure continues where it stopped
            ck = load_checkpoint(ck_path)
            if ck["agent"] != name:
                raise RunError(f"{run_dir} holds an adaptation of {ck['agent']!r}, not {name!r}")
            agent.load_state_dict(ck["state"])
            start = ck["episode"]
            if progress:
                print(f"resuming {run_dir} at episode {start}", file=sys.stderr)
        elif policy_state is not None:
            agent.load_policy(policy_state)
        truncate_metrics(run_dir / "metrics.jsonl", start)
        if start < episodes:
            agent.start(env, seed=_reset_seed(config.env.seed, start))
            label = label or name

            def checkpoint(done: int, failed: bool = False) -> None:
                if failed or done == episodes:
                    save_checkpoint(ck_path, name, to_dict(config), done, agent.state_dict())

            with MetricsLog(run_dir / "metrics.jsonl") as log, \
                    tqdm(total=episodes, initial=start, desc=f"adapt {label}", unit="ep", disable=not progress) as bar:
                play(agent, env, start, episodes, log, {"agent": label, "seed": config.env.seed}, bar, checkpoint)
    _plot_run(run_dir, name)
    return run_dir


def evaluate(config: Config, name: str, policy_state: dict, episodes: int, run_dir: Path,
             progress: bool = True) -> dict:
    """Metrics of a trained agent without learning; returns mean and std over episodes of each metric."""
    config = agent_config(name, config, "eval")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    truncate_metrics(run_dir / "metrics.jsonl", 0)
    with opened_env(config) as env:
        agent = make_agent(name, env, config, "eval", config.env.seed)
        agent.load_policy(policy_state)
        agent.start(env, seed=config.env.seed)
        with MetricsLog(run_dir / "metrics.jsonl") as log, \
                tqdm(total=episodes, desc=f"evaluate {name}", unit="ep", disable=not progress) as bar:
            play(agent, env, 0, episodes, log, {"agent": name, "seed": config.env.seed}, bar)
    rows = read_metrics(run_dir / "metrics.jsonl")
    summary = {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
               for k in METRIC_KEYS}
    import json
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot_run(run_dir, name)
    return summary


# command line ---------------------------------------------------------------------------------
def _checkpoint_config(args, ck: dict) -> Config:
    """The checkpoint's config, or ``--config`` (backend, radios, sizes) with the checkpoint's agent
    section; tasks from ``--tasks``."""
    tasks = {"env": {"task_distribution": args.tasks}}
    if args.config is None:
        return load_config(ck["config"], tasks)
    return load_config(args.config, {"agent": ck["config"]["agent"], **tasks})


def _run_dir(args, config: Config, default: str) -> Path:
    return Path(args.run_dir) if args.run_dir else Path(config.run.out_dir) / f"{default}-{time.strftime('%Y%m%d-%H%M%S')}"


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


def policy_of_checkpoint(ck: dict) -> dict:
    """The policy parameters in a checkpoint (learner 0 where parameters are stacked per learner)."""
    params = ck["state"]["params"]
    stacked = ck["agent"] == "ppo"
    return {k: v[0] for k, v in params.items()} if stacked else params


def _cmd_reproduce(args) -> int:
    from testbed.reproduce import reproduce

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
        except Exception as err:
            if not isinstance(err, _radio_error()):
                raise
            print(f"\nerror: radio backend failed before the first episode: {err}\nCheck the radios and rerun.",
                  file=sys.stderr)
            return EXIT_BACKEND
    return run


def add_commands(subparsers) -> None:
    """Add `train`, `adapt`, `evaluate` and `reproduce` to the `testbed` command."""
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
