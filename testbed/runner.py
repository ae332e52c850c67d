"""Train, adapt and evaluate agents: the episode loop and the run folders it writes.

Every run writes a run folder: the resolved ``config.yaml``, ``metrics.jsonl`` (one line per
episode, means over the env lanes), ``checkpoints/latest.pt`` and ``plots/curves.png``.
Training resumes from the folder's checkpoint when rerun. A radio failure (``RadioError``)
mid-episode keeps the metrics written so far, saves a checkpoint of the agent as it was after
its last finished episode (data of the unfinished one, and of a half-collected rollout or
MAML task batch, is dropped) and raises ``BackendFailure``, which the commands report with
exit status 3 (``EXIT_BACKEND``); rerunning continues from there on fresh tasks.
"""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hardware.radio import RadioError
from sim.safety import SafetyViolation
from testbed.agent_factory import RunError, agent_config, make_agent
from testbed.checkpoint import MetricsLog, load_checkpoint, read_metrics, save_checkpoint, truncate_metrics
from testbed.config import Config, save_config, to_dict
from testbed.env import SpectrumVectorEnv
from testbed.metrics import PAPER_METRICS, EpisodeRecorder, lane_means, summarise
from testbed.plots import plot_curves

EXIT_BACKEND = 3
# Errors of a backend that end the run cleanly: a failed radio, or a transmission the hard limits
# refused (both raised after every radio was muted).
RADIO_ERRORS = (RadioError, SafetyViolation)


class BackendFailure(RuntimeError):
    """The radio backend failed mid-run; the run's data is saved in ``run_dir`` and a rerun continues."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


def _reset_seed(seed: int, start: int) -> int:
    """The env seed of a run (re)started at episode ``start``: fresh draws after a resume."""
    return seed if start == 0 else int(np.random.SeedSequence([seed, start]).generate_state(1)[0])


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
        except RADIO_ERRORS as err:
            if on_episode is not None:
                on_episode(episode, failed=True)
            raise BackendFailure(f"radio backend failed during episode {episode}: {err}",
                                 log.path.parent) from err
        rows = recorder.finish()
        row = {"episode": episode, **tag}
        row.update(lane_means(rows))
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
    """``plots/curves.png`` of the run folder's metrics."""
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
    summary = summarise(read_metrics(run_dir / "metrics.jsonl"))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot_run(run_dir, name)
    return summary
