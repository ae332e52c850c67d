"""Train, adapt and evaluate agents: the episode loop and the run folders it writes.

Every run writes a run folder: the resolved ``config.yaml``, ``metrics.jsonl`` (one line per
episode, means over the env lanes), ``provenance.json``, ``checkpoints/latest.pt`` (train and
adapt: every ``agent.checkpoint_every`` episodes, at the end, and when the run stops early),
``plots/curves.png`` (train and adapt), ``backend.json`` (``backend_record``: the backend, and on
radios their names, drivers and start-up calibration), and with ``track="tensorboard"`` a
``tensorboard/`` folder.
An evaluation plays the fixed evaluation set (``evaluation:``, ``evaluation_config``): the agent
with argmax and with sampled actions and every reference policy, on the same tasks and draws.
Training and adaptation resume from the folder's checkpoint when rerun; a checkpoint of another
agent or config is refused with the differing keys named.

A radio failure (``RadioError``) mid-episode keeps the metrics written so far, saves a
checkpoint of the agent as it was after its last finished episode (data of the unfinished one,
and of a half-collected rollout or MAML task batch, is dropped) and raises ``BackendFailure``,
which the commands report with exit status 3 (``EXIT_BACKEND``); rerunning continues from there
on fresh tasks. SIGINT or SIGTERM while episodes play stops the run after the episode in
progress (the same signal again: at once, dropping that episode, as a radio failure does),
saves the checkpoint and raises ``Interrupted``.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hardware.measured import MeasuredNetwork
from hardware.radio import RadioError
from sim.safety import SafetyViolation
from testbed import policies, provenance, tracking
from testbed.agent_factory import RunError, agent_config, make_agent
from testbed.checkpoint import MetricsLog, load_checkpoint, read_metrics, save_checkpoint, truncate_metrics
from testbed.config import Config, ConfigError, load_config, save_config, to_dict
from testbed.env import SpectrumVectorEnv, capture_faults
from testbed.metrics import episode_rows, lane_means, summarise
from testbed.plots import plot_training_run

EXIT_BACKEND = 3
# Errors of a backend that end the run cleanly: a failed radio, or a transmission the hard limits
# refused (both raised after every radio was muted).
RADIO_ERRORS = (RadioError, SafetyViolation)
CALIBRATION_EPISODES = 2      # episodes timed for the estimate of a long run
LONG_RUN_S = 60.0             # runs estimated longer than this get a time estimate


class BackendFailure(RuntimeError):
    """The radio backend failed mid-run; the run's data is saved in ``run_dir`` and a rerun continues."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message, str(run_dir))      # picklable across processes
        self.run_dir = Path(run_dir)

    def __str__(self) -> str:
        return self.args[0]


class Interrupted(Exception):
    """A run stopped on a signal (``"SIGINT"`` or ``"SIGTERM"``) with its finished episodes saved in
    ``run_dir`` (``episodes`` of them; None where not counted)."""

    def __init__(self, run_dir: Path, signal_name: str, episodes: int | None = None):
        super().__init__(str(run_dir), signal_name, episodes)      # picklable across processes
        self.run_dir, self.signal_name, self.episodes = Path(run_dir), signal_name, episodes

    def __str__(self) -> str:
        done = "" if self.episodes is None else f" after {self.episodes} finished episodes"
        return f"stopped by {self.signal_name}{done}; saved in {self.run_dir}"

    @property
    def exit_status(self) -> int:
        return signal_exit_status(self.signal_name)


def signal_exit_status(signal_name: str) -> int:
    """128 + the signal's number, the status a shell reports for a process the signal ended (SIGINT: 130)."""
    return 128 + signal.Signals[signal_name].value


class StopSignals:
    """SIGINT and SIGTERM handled while a run is in this block (main thread only; elsewhere
    nothing changes): the first records ``signal_name`` and prints ``message`` (None: raises
    ``KeyboardInterrupt`` at once); the same signal again raises ``KeyboardInterrupt`` while
    ``interruptible`` is set, and is ignored otherwise.

    A process whose handler outside these blocks is ``StopSignals.note`` (reproduce's workers)
    keeps the first stop request in ``StopSignals.noted``, and every later block starts stopped.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    noted: str | None = None

    def __init__(self, message: str | None = None):
        self.message = message
        self.signal_name: str | None = None
        self.interruptible = False
        self._previous = {}

    @staticmethod
    def note(signum, frame) -> None:
        """A signal handler that keeps the stop request for the blocks to come."""
        StopSignals.noted = StopSignals.noted or signal.Signals(signum).name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        self.signal_name = StopSignals.noted
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        worker = self._previous.get(signum) is StopSignals.note       # its parent tells the user
        if worker:
            StopSignals.note(signum, frame)
        if self.signal_name is None:
            self.signal_name = name
            if self.message is None:
                raise KeyboardInterrupt
            if not worker:
                tqdm.write(f"\n{name}: {self.message}", file=sys.stderr)
        elif name == self.signal_name and self.interruptible:
            raise KeyboardInterrupt


def _reset_seed(seed: int, start: int) -> int:
    """The env seed of a run (re)started at episode ``start``: fresh draws after a resume."""
    return seed if start == 0 else int(np.random.SeedSequence([seed, start]).generate_state(1)[0])


def backend_record(config: Config, env: SpectrumVectorEnv) -> dict:
    """What ``backend.json`` holds: the backend; on radios also each radio's name, driver and role and
    the start-up calibration per radio (Hz: offset measured, correction applied, residual)."""
    record = {"backend": config.backend}
    if isinstance(env.net, MeasuredNetwork):
        record["radios"] = [{"name": e.name, "driver": e.driver, "role": e.role} for e in config.hardware.radios]
        record["calibration"] = env.net.calibration
    return record


@contextmanager
def opened_env(config: Config, run_dir: Path | None = None):
    """The env of a run, closed at the end; a failure while closing after an error is reported
    but never replaces that error. ``run_dir``: where ``backend.json`` goes once the backend is open."""
    env = SpectrumVectorEnv(config, tensors=True)
    try:
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / "backend.json").write_text(json.dumps(backend_record(config, env), indent=1))
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
         bar: tqdm | None, on_episode=None, *, tracker=None, estimate: bool = False) -> None:
    """Episodes ``first..last-1`` of ``agent`` on ``env``; one metrics line each (also to ``tracker``).

    ``on_episode(episode_done_count)`` runs after each line (checkpoints). A ``RadioError``
    becomes ``BackendFailure`` after ``on_episode(first_unfinished, failed=True)``; a stop signal
    (see ``StopSignals``) becomes ``Interrupted`` after ``on_episode(finished, failed=True)``.
    ``estimate``: print the expected duration after the first episodes if the run is long.
    """
    latest = {}   # the info of the latest step; an episode's last carries its metrics

    def keep_info(reward, info) -> None:
        latest["info"] = info

    samples = env.num_envs * agent.num_steps
    clock = time.perf_counter()
    run_dir = log.path.parent
    with StopSignals("stopping after the episode in progress (the same signal again stops at once)") as stop:
        for episode in range(first, last):
            if stop.signal_name is not None:
                _stop(on_episode, episode, run_dir, stop.signal_name)
            try:
                stop.interruptible = True
                stats = agent.run_episode(env, keep_info)
            except KeyboardInterrupt:
                _stop(on_episode, episode, run_dir, stop.signal_name or "SIGINT")
            except RADIO_ERRORS as err:
                if on_episode is not None:
                    on_episode(episode, failed=True)
                raise BackendFailure(f"radio backend failed during episode {episode}: {err}", run_dir) from err
            finally:
                stop.interruptible = False
            rows = episode_rows(latest.pop("info"))
            row = {"episode": episode, **tag}
            row.update(lane_means(rows))
            row["return_std"] = float(np.std([r["return"] for r in rows]))
            row["samples"] = (episode + 1) * samples
            row["wall_s"] = round(time.perf_counter() - clock, 3)
            row.update(capture_faults(env.net))
            row.update(stats)
            log.write(row)
            if tracker is not None:
                tracker.log(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ret=f"{row['return']:.2f}", tput=f"{row['throughput_mbps']:.1f}")
            if on_episode is not None:
                on_episode(episode + 1)
            if estimate and episode + 1 - first == CALIBRATION_EPISODES:
                _print_estimate(time.perf_counter() - clock, first, episode + 1, last)


def _stop(on_episode, episodes_done: int, run_dir: Path, signal_name: str):
    if on_episode is not None:
        on_episode(episodes_done, failed=True)
    raise Interrupted(run_dir, signal_name, episodes_done) from None


def format_duration(seconds: float) -> str:
    """``seconds`` as '45 s', '9 min' or '2.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _print_estimate(elapsed_s: float, first: int, done: int, last: int) -> None:
    """One stderr line with the expected duration of a long run, from its first episodes' time."""
    per_episode = elapsed_s / (done - first)
    if per_episode * (last - first) > LONG_RUN_S:
        tqdm.write(f"estimate: about {format_duration(per_episode * (last - done))} for the remaining "
                   f"{last - done} of {last} episodes at {per_episode:.2f} s/episode (timed over episodes "
                   f"{first}-{done - 1})", file=sys.stderr)


def _plot_run(run_dir: Path, label: str) -> None:
    """``plots/curves.png`` of the run folder's metrics (the paper's metrics, return, update stats)."""
    rows = read_metrics(run_dir / "metrics.jsonl")
    if not rows:
        return
    (run_dir / "plots").mkdir(exist_ok=True)
    plot_training_run(rows, run_dir / "plots" / "curves.png", label)


# run folders --------------------------------------------------------------------------------
def differences(old, new, path: str = "") -> list[str]:
    """'dotted.key: old → new' for every leaf where two plain-data trees differ (list items as key[i])."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(old) + [k for k in new if k not in old]
        return [d for k in keys for d in differences(old.get(k, _ABSENT), new.get(k, _ABSENT),
                                                     f"{path}.{k}" if path else str(k))]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {_short(old)} → {_short(new)}"]


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def _short(value, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _without(config: dict, dotted: str) -> dict:
    """``config`` without the key at the dotted path ``dotted``."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return {k: v for k, v in config.items() if k != head}
    return {**config, head: _without(config[head], rest)} if head in config else config


def _checkpoint_to_resume(run_dir: Path, name: str, config: Config, free: str) -> dict | None:
    """The run folder's checkpoint if it continues the same run (agent ``name``, ``config`` except
    the key ``free``, which may change between invocations); None if there is none."""
    ck_path = run_dir / "checkpoints" / "latest.pt"
    if not ck_path.exists():
        return None
    ck = load_checkpoint(ck_path)
    if ck["agent"] != name:
        raise RunError(f"{run_dir} holds a {ck['agent']!r} run, not {name!r}; give another --run-dir, "
                       f"or delete the folder to start over")
    try:        # the checkpoint's config as this version reads it: keys added since take their defaults
        saved = to_dict(load_config(ck["config"]))
    except ConfigError as err:
        raise RunError(f"{ck_path}: its config no longer loads ({err}); give another --run-dir") from err
    diff = differences(_without(saved, free), _without(to_dict(config), free))
    if diff:
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise RunError(f"{run_dir} holds a {name!r} run with another config ({'; '.join(diff[:3])}{more}); "
                       f"give another --run-dir, or delete the folder to start over")
    return ck


def _start_episode(run_dir: Path, ck: dict | None, total: int, checkpoint_every: int, progress: bool) -> int:
    """The episode a run starts at, after saying what happens to what the folder holds; raises
    ``RunError`` if the checkpoint has more than ``total`` episodes done."""
    start = ck["episode"] if ck else 0
    if start > total:
        raise RunError(f"{run_dir} has {start} episodes done; {total} episodes (--episodes or the config) is fewer: "
                       f"nothing to do. Ask for more than {start} to continue it, or give another --run-dir")
    metrics = run_dir / "metrics.jsonl"
    beyond = sorted({r["episode"] for r in read_metrics(metrics) if r.get("episode", -1) >= start}) \
        if metrics.exists() else []
    if progress and start == total:
        print(f"{run_dir} has all {total} episodes done: nothing to do", file=sys.stderr)
    elif progress and ck:
        print(f"resuming {run_dir} at episode {start} (its checkpoint)", file=sys.stderr)
    elif progress and run_dir.exists():
        print(f"{run_dir} has no checkpoint (the first is saved after episode {min(checkpoint_every, total)}): "
              f"starting at episode 0", file=sys.stderr)
    if progress and beyond and start < total:
        print(f"dropping the metrics lines of episodes {beyond[0]}-{beyond[-1]} from {metrics}: "
              f"{'the checkpoint does not cover them' if ck else 'no checkpoint covers them'}; they are replayed",
              file=sys.stderr)
    return start


# train / adapt / evaluate ---------------------------------------------------------------------
def _prepare_run(run_dir: Path, name: str, config: Config, free: str, total: int,
                 progress: bool) -> tuple[dict | None, int]:
    """The checkpoint a run resumes from (None: a new run) and its first episode; unless every episode
    is done, the folder is made ready: metrics beyond the checkpoint cut, config.yaml written."""
    ck = _checkpoint_to_resume(run_dir, name, config, free)
    start = _start_episode(run_dir, ck, total, config.agent.checkpoint_every, progress)
    if start < total:
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(run_dir / "metrics.jsonl", start)
        save_config(config, run_dir / "config.yaml")
    return ck, start


def _checkpointer(run_dir: Path, name: str, config: Config, total: int, agent):
    """``play``'s checkpoint hook: saves every ``agent.checkpoint_every`` episodes, at the end and on failure."""
    every, path = config.agent.checkpoint_every, run_dir / "checkpoints" / "latest.pt"

    def checkpoint(done: int, failed: bool = False) -> None:
        if failed or done % every == 0 or done == total:
            save_checkpoint(path, name, to_dict(config), done, agent.state_dict())
    return checkpoint


def train(config: Config, name: str, run_dir: Path, progress: bool = True, *,
          command: list[str] | None = None, track: str | None = None) -> Path:
    """(Meta-)train agent ``name`` for ``config.agent.episodes`` episodes in ``run_dir``, resuming
    from its checkpoint. A run with all its episodes done returns at once; one with more done
    raises ``RunError``. ``command``: the command line recorded in provenance.json (default:
    this process's); ``track``: one of ``testbed.tracking.TRACKERS``, or None for no tracking."""
    config = agent_config(name, config, "train")
    seed, total = config.env.seed, config.agent.episodes
    run_dir = Path(run_dir)
    ck, start = _prepare_run(run_dir, name, config, "agent.episodes", total, progress)
    if start == total:
        return run_dir
    with provenance.recorded(run_dir, command, config.env.device), opened_env(config, run_dir) as env, \
            _tracker(track, run_dir, start, config) as tracker:
        agent = make_agent(name, env, config, "train", seed)
        if ck:
            agent.load_state_dict(ck["state"])
        agent.start(env, seed=_reset_seed(seed, start))
        checkpoint = _checkpointer(run_dir, name, config, total, agent)
        with MetricsLog(run_dir / "metrics.jsonl") as log, \
                tqdm(total=total, initial=start, desc=f"train {name}", unit="ep", disable=not progress) as bar:
            play(agent, env, start, total, log, {"agent": name, "seed": seed}, bar, checkpoint,
                 tracker=tracker, estimate=progress)
    _plot_run(run_dir, name)
    return run_dir


@contextmanager
def _tracker(kind: str | None, run_dir: Path, start: int, config: Config):
    """The run's tracker (None without tracking), closed at the end; a resumed run's later events are purged."""
    samples = start * config.env.num_envs * config.network.episode_steps
    tracker = tracking.open_tracker(kind, run_dir, samples or None)
    try:
        yield tracker
    finally:
        if tracker is not None:
            tracker.close()


def adapt(config: Config, name: str, policy_state: dict | None, episodes: int, run_dir: Path,
          progress: bool = True, label: str | None = None, *, command: list[str] | None = None,
          track: str | None = None, source: Path | None = None) -> Path:
    """Online adaptation: every lane keeps one task for ``episodes`` episodes while the agent adapts
    (PPO fine-tunes one copy per lane; MAML takes inner steps; the recurrent agents use memory).
    ``policy_state`` None starts from a fresh initialisation (PPO from scratch); ``source`` is the
    checkpoint file it came from (recorded in provenance.json). A rerun resumes from the folder's
    checkpoint."""
    config = agent_config(name, config, "adapt", episodes)
    run_dir = Path(run_dir)
    ck, start = _prepare_run(run_dir, name, config, "env.episodes_per_task", episodes, progress)
    if start == episodes:
        return run_dir
    label = label or name
    with provenance.recorded(run_dir, command, config.env.device, source), opened_env(config, run_dir) as env, \
            _tracker(track, run_dir, start, config) as tracker:
        agent = make_agent(name, env, config, "adapt", config.env.seed)
        if ck:
            agent.load_state_dict(ck["state"])
        elif policy_state is not None:
            agent.load_policy(policy_state)
        agent.start(env, seed=_reset_seed(config.env.seed, start))
        checkpoint = _checkpointer(run_dir, name, config, episodes, agent)
        with MetricsLog(run_dir / "metrics.jsonl") as log, \
                tqdm(total=episodes, initial=start, desc=f"adapt {label}", unit="ep", disable=not progress) as bar:
            play(agent, env, start, episodes, log, {"agent": label, "seed": config.env.seed}, bar, checkpoint,
                 tracker=tracker, estimate=progress)
    _plot_run(run_dir, name)
    return run_dir


ACTION_MODES = ("argmax", "sample")      # how agents act in an evaluation: both, always


def evaluation_config(config: Config, distribution: str) -> Config:
    """``config`` set to play the fixed evaluation set of ``distribution`` ('train' or 'test'):
    ``evaluation.num_tasks`` lanes, one task each, its draws seeded by ``evaluation.seed``."""
    ev = config.evaluation
    return load_config(config, {"env": {"task_set": "evaluation", "task_distribution": distribution, "task_seed": None,
                                        "num_envs": ev.num_tasks, "seed": ev.seed, "episodes_per_task": ev.episodes}})


def evaluation_label(policy: dict) -> str:
    """The name of a policy in an evaluation (its metrics lines' ``agent``, its summary key): agent and
    action mode for an agent ('ppo/argmax', 'ppo/sample'), the name of a reference policy ('greedy')."""
    return policy["agent"] if policy["actions"] == "reference" else f"{policy['agent']}/{policy['actions']}"


def evaluate_on(env: SpectrumVectorEnv, config: Config, agents: dict[str, dict], references, log: MetricsLog,
                bar: tqdm | None = None, tag: dict | None = None) -> None:
    """On ``env``, which plays ``config``'s evaluation set: each agent (name -> policy parameters) with
    argmax and with sampled actions, then each reference policy named in ``references``, no learning.
    Every one starts from a reset seeded by ``env.seed``, so all see the same tasks and the same draws.
    One metrics line per policy and episode, tagged with ``tag``, ``agent`` (``evaluation_label``),
    ``actions`` ('argmax', 'sample' or 'reference') and ``tasks``."""
    seed, episodes = config.env.seed, config.evaluation.episodes
    tag = {"seed": seed, **(tag or {}), "tasks": config.env.task_distribution}
    players = []
    for name, state in agents.items():
        for mode in ACTION_MODES:
            agent = make_agent(name, env, load_config(config, {"agent": {"eval_actions": mode}}), "eval", seed)
            agent.load_policy(state)
            players.append((agent, {"agent": evaluation_label({"agent": name, "actions": mode}), "actions": mode}))
    players += [(policies.Episodes(name, env, seed), {"agent": name, "actions": "reference"}) for name in references]
    for player, who in players:
        player.start(env, seed=seed)
        play(player, env, 0, episodes, log, {**who, **tag}, bar)


def evaluation_tasks_record(env: SpectrumVectorEnv) -> dict[str, list]:
    """``tasks.json`` of an evaluation: the scalar parameters of each evaluation task (one per lane)."""
    return {key: value.tolist() for key, value in env.net.tasks.describe().items()}


def evaluate(config: Config, name: str, policy_state: dict, run_dir: Path, progress: bool = True, *,
             command: list[str] | None = None, source: Path | None = None) -> dict:
    """Agent ``name`` with ``policy_state`` on the fixed evaluation set of ``config.env.task_distribution``
    (``evaluation:``), with argmax and with sampled actions, beside every reference policy of
    ``run.policies`` on the same tasks and draws; no learning. Writes ``metrics.jsonl``, ``tasks.json``
    and ``summary.json`` ({policy: {metric: mean and std over episodes}}, policies named by
    ``evaluation_label``) and returns that summary. A rerun in the same folder starts over.
    ``source``: the checkpoint file (recorded in provenance.json)."""
    config = evaluation_config(config, config.env.task_distribution)
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists() and read_metrics(metrics):
        print(f"{run_dir} holds an earlier evaluation: starting over, its metrics lines are dropped", file=sys.stderr)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    truncate_metrics(metrics, 0)
    total = (len(ACTION_MODES) + len(config.run.policies)) * config.evaluation.episodes
    with provenance.recorded(run_dir, command, config.env.device, source), opened_env(config, run_dir) as env:
        with MetricsLog(metrics) as log, tqdm(total=total, desc=f"evaluate {name}", unit="ep",
                                              disable=not progress) as bar:
            evaluate_on(env, config, {name: policy_state}, config.run.policies, log, bar)
        (run_dir / "tasks.json").write_text(json.dumps(evaluation_tasks_record(env), indent=1))
    rows = read_metrics(metrics)
    summary = {policy: summarise([r for r in rows if r["agent"] == policy]) for policy in dict.fromkeys(
        r["agent"] for r in rows)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
