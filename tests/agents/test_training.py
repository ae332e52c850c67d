"""Tiny trainings through the command line, as subprocesses: every agent learns on an easy fixed
task, PPO nearly matches the per-band oracle on one task, a killed run resumes with one metrics
line per episode, a radio failure saves the data and exits 3, adapt and evaluate run from a
checkpoint, and `reproduce --quick` writes every output."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from tqdm import tqdm

from testbed.checkpoint import load_checkpoint, read_metrics
from testbed.config import load_config
from testbed.demo import run_policy
from testbed.env import SpectrumVectorEnv

# One fixed task (every lane, every episode), short episodes.
EASY = {"network": {"episode_steps": 50}, "env": {"num_envs": 16, "task_seed": 3}, "agent": {"checkpoint_every": 5}}


def write_config(tmp_path: Path, data: dict, **agent) -> Path:
    data = json.loads(json.dumps(data))
    data.setdefault("agent", {}).update(agent)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}   # deterministic and quick on a shared machine


def cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=ONE_THREAD)


def reference(config: Path, name: str, episodes: int = 3) -> dict:
    """Mean metrics of a reference policy on the config's tasks."""
    env = SpectrumVectorEnv(load_config(config))
    rows = run_policy(env, name, episodes, 0, tqdm(disable=True))
    env.close()
    return {k: float(np.mean([r[k] for r in rows])) for k in ("return", "throughput_mbps")}


@pytest.mark.slow
@pytest.mark.parametrize("agent, episodes", [("ppo", 40), ("maml", 100), ("rnn", 30), ("rnn_attention", 30)])
def test_tiny_training_learns_clearly_above_random(tmp_path, agent, episodes):
    config = write_config(tmp_path, EASY, episodes=episodes)
    run = tmp_path / "run"
    res = cli("train", "--agent", agent, "--config", config, "--run-dir", run)
    assert res.returncode == 0, res.stderr
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["episode"] for r in rows] == list(range(episodes))
    random = reference(config, "random")["return"]
    first = np.mean([r["return"] for r in rows[:3]])
    late = np.mean([r["return"] for r in rows[-5:]])
    assert late > random + 0.3 * abs(random), (agent, random, first, late)
    assert late > first
    assert all(r["executed_violations"] == 0 for r in rows)
    assert (run / "config.yaml").exists() and (run / "plots" / "curves.png").stat().st_size > 0
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["episode"] == episodes


@pytest.mark.slow
def test_ppo_on_one_fixed_task_reaches_90_percent_of_the_oracle_throughput(tmp_path):
    """The baseline is strong: with the oracle's objective (throughput only), PPO nearly matches it."""
    data = {"network": {"w_fairness": 0.0, "w_cost": 0.0, "w_penalty": 0.0},
            "env": {"num_envs": 16, "task_seed": 1}, "agent": {"ppo": {"learning_rate": 3e-4}}}
    config = write_config(tmp_path, data, episodes=70)
    res = cli("train", "--agent", "ppo", "--config", config, "--run-dir", tmp_path / "run")
    assert res.returncode == 0, res.stderr
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    ppo = np.mean([r["throughput_mbps"] for r in rows[-5:]])
    oracle = reference(config, "oracle")["throughput_mbps"]
    assert ppo >= 0.9 * oracle, (ppo, oracle)


@pytest.mark.slow
def test_a_killed_training_resumes_with_exactly_one_line_per_episode(tmp_path):
    episodes = 60
    config = write_config(tmp_path, {"network": {"episode_steps": 20}, "env": {"num_envs": 4}},
                          episodes=episodes, checkpoint_every=3)
    run = tmp_path / "run"
    args = [sys.executable, "-m", "testbed.cli", "train", "--agent", "ppo", "--config", str(config),
            "--run-dir", str(run)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD)
    deadline = time.monotonic() + 120
    log = run / "metrics.jsonl"
    while not log.exists() or len(read_metrics(log)) < 5:
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    killed_at = len(read_metrics(run / "metrics.jsonl"))
    assert killed_at < episodes
    res = cli("train", "--agent", "ppo", "--config", config, "--run-dir", run)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stderr
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode"] for line in lines] == list(range(episodes))
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["episode"] == episodes


def test_a_radio_failure_saves_the_data_exits_3_and_a_rerun_continues(tmp_path, monkeypatch, capsys):
    from hardware.radio import RadioError
    from testbed import runner
    from testbed.cli import main

    steps, episodes = 10, 6
    config = write_config(tmp_path, {"network": {"episode_steps": steps}, "env": {"num_envs": 2}},
                          episodes=episodes, checkpoint_every=100)
    run = tmp_path / "run"
    step, calls = SpectrumVectorEnv.step, {"n": 0}

    def failing(self, actions):
        calls["n"] += 1
        if calls["n"] == 4 * steps + 3:
            raise RadioError("Pluto at ip:192.168.2.1 stopped answering")
        return step(self, actions)

    monkeypatch.setattr(SpectrumVectorEnv, "step", failing)
    args = ["train", "--agent", "rnn", "--config", str(config), "--run-dir", str(run)]
    assert main(args) == runner.EXIT_BACKEND
    err = capsys.readouterr().err
    assert "radio backend failed during episode 4" in err and "stopped answering" in err and "rerun" in err
    assert [r["episode"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1, 2, 3]
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["episode"] == 4
    monkeypatch.setattr(SpectrumVectorEnv, "step", step)
    assert main(args) == 0
    assert [r["episode"] for r in read_metrics(run / "metrics.jsonl")] == list(range(episodes))


def test_adapt_and_evaluate_run_from_a_checkpoint(tmp_path, capsys):
    from testbed.cli import main

    config = write_config(tmp_path, {"network": {"episode_steps": 10}, "env": {"num_envs": 4}}, episodes=2)
    for agent in ("ppo", "maml", "rnn_attention"):
        run = tmp_path / f"train-{agent}"
        assert main(["train", "--agent", agent, "--config", str(config), "--run-dir", str(run)]) == 0
        ck = str(run / "checkpoints" / "latest.pt")
        assert main(["adapt", "--checkpoint", ck, "--episodes", "3", "--run-dir", str(tmp_path / f"adapt-{agent}")]) == 0
        rows = read_metrics(tmp_path / f"adapt-{agent}" / "metrics.jsonl")
        assert [r["episode"] for r in rows] == [0, 1, 2]
        adapted = load_config(tmp_path / f"adapt-{agent}" / "config.yaml")
        assert adapted.env.task_distribution == "test" and adapted.env.episodes_per_task == 3
        capsys.readouterr()
        assert main(["evaluate", "--checkpoint", ck, "--episodes", "2", "--run-dir", str(tmp_path / f"eval-{agent}")]) == 0
        summary = json.loads((tmp_path / f"eval-{agent}" / "summary.json").read_text())
        out = capsys.readouterr().out
        assert f"| {agent}/argmax |" in out and f"| {agent}/sample |" in out and "| oracle |" in out
        assert set(summary) == {f"{agent}/argmax", f"{agent}/sample", "random", "max_power", "greedy", "oracle", "switch_off"}
        assert all(stats["executed_violations"]["mean"] == 0 for stats in summary.values())
        assert len(read_metrics(tmp_path / f"eval-{agent}" / "metrics.jsonl")) == 7 * 2


def test_adapt_on_a_bench_records_its_captures_and_a_simulated_run_refuses_to(tmp_path):
    from sigmf import sigmffile

    from testbed.cli import main
    from testbed.config import save_config

    config = write_config(tmp_path, {"network": {"episode_steps": 4}, "env": {"num_envs": 2}}, episodes=1)
    assert main(["train", "--agent", "ppo", "--config", str(config), "--run-dir", str(tmp_path / "train")]) == 0
    ck = str(tmp_path / "train" / "checkpoints" / "latest.pt")
    bench = tmp_path / "bench.yaml"
    save_config(load_config("bench_mock", {"network": {"episode_steps": 4}}), bench)
    record = tmp_path / "recording"
    assert main(["adapt", "--checkpoint", ck, "--config", str(bench), "--episodes", "1", "--record", str(record),
                 "--run-dir", str(tmp_path / "adapt")]) == 0
    assert len((record / "steps.jsonl").read_text().splitlines()) >= 4
    meta = sigmffile.fromfile(str(record / "ue0.sigmf-meta"))
    assert meta.get_global_field("core:sample_rate") == 2e6 and meta.get_annotations()
    res = cli("evaluate", "--checkpoint", ck, "--record", tmp_path / "nothing")
    assert res.returncode == 2 and "--record: backend sim has no radios to record" in res.stderr
    assert not (tmp_path / "nothing").exists()


def test_a_bad_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    res = cli("evaluate", "--checkpoint", tmp_path / "bad.pt")
    assert res.returncode == 2 and "cannot read checkpoint" in res.stderr


@pytest.mark.slow
def test_reproduce_quick_writes_every_output(tmp_path):
    out = tmp_path / "repro"
    res = cli("reproduce", "--quick", "--seeds", 2, "--workers", 2, "--out", out, timeout=600)
    assert res.returncode == 0, res.stderr
    for name in ("fig3.png", "adaptation.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = (out / "curves.csv").read_text().splitlines()
    assert curves[0].startswith("agent,episode,sinr_violations_mean,sinr_violations_std")
    assert len(curves) == 1 + 4 * 8
    table = (out / "table.md").read_text()
    for row in ("PPO", "MAML", "RNN (RL²)", "RNN + attention", "random", "per-band oracle", "Fraction of the per-band oracle"):
        assert row in table
    adaptation = (out / "adaptation.csv").read_text().splitlines()
    assert len(adaptation) == 1 + 5 * 4
    assert {line.split(",")[0] for line in adaptation[1:]} == {"maml", "rnn", "rnn_attention", "ppo_finetune", "ppo_scratch"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == 2 and len(summary["fixed_task"]) == 2
    assert all(summary["final"][a]["executed_violations"]["mean"] == 0 for a in summary["final"])
    assert "QUICK" in (out / "results.md").read_text()


def test_a_radio_that_fails_at_the_start_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from hardware.radio import RadioError
    from testbed import runner
    from testbed.cli import main

    def dead(self, **kwargs):
        raise RadioError("no answer from ip:192.168.2.1")

    monkeypatch.setattr(SpectrumVectorEnv, "reset", dead)
    config = write_config(tmp_path, {"network": {"episode_steps": 5}, "env": {"num_envs": 2}}, episodes=2)
    assert main(["train", "--agent", "ppo", "--config", str(config), "--run-dir", str(tmp_path / "run")]) \
        == runner.EXIT_BACKEND
    assert "no answer from ip:192.168.2.1" in capsys.readouterr().err


def test_a_failing_close_after_a_radio_error_does_not_hide_it(tmp_path, monkeypatch, capsys):
    """A dead radio that cannot confirm its mute while closing: still exit 3, the first error shown."""
    from hardware.radio import RadioError
    from sim.safety import SafetyViolation
    from testbed import runner
    from testbed.cli import main

    steps = 5
    config = write_config(tmp_path, {"network": {"episode_steps": steps}, "env": {"num_envs": 2}}, episodes=3)
    step, calls = SpectrumVectorEnv.step, {"n": 0}

    def failing(self, actions):
        calls["n"] += 1
        if calls["n"] == steps + 2:
            raise SafetyViolation("tx_gain_db=5 exceeds the hard limit max_tx_gain_db=0")
        return step(self, actions)

    def close_fails(self, **kwargs):
        raise RadioError("bs0: mute not confirmed, link is down")

    monkeypatch.setattr(SpectrumVectorEnv, "step", failing)
    monkeypatch.setattr(SpectrumVectorEnv, "close_extras", close_fails)
    run = tmp_path / "run"
    assert main(["train", "--agent", "ppo", "--config", str(config), "--run-dir", str(run)]) == runner.EXIT_BACKEND
    err = capsys.readouterr().err
    assert "during episode 1" in err and "exceeds the hard limit" in err
    assert "closing the backend failed too" in err and "mute not confirmed" in err
    assert [r["episode"] for r in read_metrics(run / "metrics.jsonl")] == [0]


@pytest.mark.parametrize("agent", ["ppo", "rnn"])
def test_adapt_after_a_radio_failure_resumes_with_the_same_run_dir(tmp_path, monkeypatch, capsys, agent):
    from hardware.radio import RadioError
    from testbed import runner
    from testbed.cli import main

    steps = 5
    config = write_config(tmp_path, {"network": {"episode_steps": steps}, "env": {"num_envs": 2}}, episodes=1)
    train_dir, adapt_dir = tmp_path / "train", tmp_path / "adapt"
    assert main(["train", "--agent", agent, "--config", str(config), "--run-dir", str(train_dir)]) == 0
    ck = str(train_dir / "checkpoints" / "latest.pt")
    step, calls = SpectrumVectorEnv.step, {"n": 0}

    def failing(self, actions):
        calls["n"] += 1
        if calls["n"] == 2 * steps + 1:
            raise RadioError("ue0 stopped answering")
        return step(self, actions)

    monkeypatch.setattr(SpectrumVectorEnv, "step", failing)
    args = ["adapt", "--checkpoint", ck, "--episodes", "4", "--run-dir", str(adapt_dir)]
    capsys.readouterr()
    assert main(args) == runner.EXIT_BACKEND
    err = capsys.readouterr().err
    assert f"--run-dir {adapt_dir}" in err and "during episode 2" in err
    assert load_checkpoint(adapt_dir / "checkpoints" / "latest.pt")["episode"] == 2
    monkeypatch.setattr(SpectrumVectorEnv, "step", step)
    assert main(args) == 0
    assert "resuming" in capsys.readouterr().err
    assert [r["episode"] for r in read_metrics(adapt_dir / "metrics.jsonl")] == [0, 1, 2, 3]


# stopping, resuming and refusing ------------------------------------------------------------
TINY = {"network": {"episode_steps": 5}, "env": {"num_envs": 2}}


def _wait_for_lines(proc: subprocess.Popen, log: Path, lines: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not log.exists() or len(read_metrics(log)) < lines:
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be stopped"
        time.sleep(0.02)


def _resume_command(stderr: str) -> list[str]:
    (line,) = [line for line in stderr.splitlines() if line.startswith("resume with: ")]
    argv = shlex.split(line.removeprefix("resume with: "))
    assert argv[0] == "testbed"
    return argv[1:]


def _train_process(agent: str, config: Path, run: Path, output=subprocess.PIPE) -> subprocess.Popen:
    """`testbed train` as a child process (one torch thread), to be signalled."""
    return subprocess.Popen([sys.executable, "-m", "testbed.cli", "train", "--agent", agent, "--config", str(config),
                             "--run-dir", str(run)], stdout=output, stderr=output, text=True, env=ONE_THREAD)


def test_sigint_saves_a_checkpoint_prints_the_resume_command_and_exits_130(tmp_path):
    """checkpoint_every (50) larger than the run: the stop itself saves the finished episodes."""
    config = write_config(tmp_path, TINY, episodes=2000, checkpoint_every=50)
    run = tmp_path / "run"
    proc = _train_process("ppo", config, run)
    _wait_for_lines(proc, run / "metrics.jsonl", 3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    done = load_checkpoint(run / "checkpoints" / "latest.pt")["episode"]
    assert done >= 3 and [r["episode"] for r in read_metrics(run / "metrics.jsonl")] == list(range(done))
    assert f"after {done} finished episodes" in err
    argv = _resume_command(err)
    assert argv[argv.index("--run-dir") + 1] == str(run)
    res = cli(*argv, "--episodes", done + 2)               # the printed command, made short
    assert res.returncode == 0, res.stderr
    assert f"resuming {run} at episode {done}" in res.stderr
    assert [r["episode"] for r in read_metrics(run / "metrics.jsonl")] == list(range(done + 2))
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["episode"] == done + 2
    record = json.loads((run / "provenance.json").read_text())
    assert record["outcome"] == "finished" and record["previous"][0]["outcome"].startswith("Interrupted: ")


def test_sigterm_also_stops_cleanly_with_status_143(tmp_path):
    config = write_config(tmp_path, TINY, episodes=2000, checkpoint_every=50)
    run = tmp_path / "run"
    proc = _train_process("rnn", config, run)
    _wait_for_lines(proc, run / "metrics.jsonl", 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["episode"] == len(read_metrics(run / "metrics.jsonl"))


def test_a_kill_before_the_first_checkpoint_is_reported_and_the_rerun_starts_over(tmp_path):
    """SIGKILL with checkpoint_every larger than the run: less than one block is lost, and the rerun says so."""
    config = write_config(tmp_path, TINY, episodes=2000, checkpoint_every=50)
    run = tmp_path / "run"
    proc = _train_process("ppo", config, run, output=subprocess.DEVNULL)
    _wait_for_lines(proc, run / "metrics.jsonl", 2)
    proc.kill()
    proc.wait()
    killed_at = len(read_metrics(run / "metrics.jsonl"))
    assert 2 <= killed_at < 50 and not (run / "checkpoints" / "latest.pt").exists()
    res = cli("train", "--agent", "ppo", "--config", config, "--run-dir", run, "--episodes", 4)
    assert res.returncode == 0, res.stderr
    assert f"{run} has no checkpoint" in res.stderr and "starting at episode 0" in res.stderr
    assert f"dropping the metrics lines of episodes 0-{killed_at - 1}" in res.stderr
    assert [r["episode"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1, 2, 3]


def test_resuming_with_another_config_names_the_differing_keys(tmp_path, capsys):
    from testbed.cli import main

    config = write_config(tmp_path, TINY, episodes=2)
    run = tmp_path / "run"
    assert main(["train", "--agent", "ppo", "--config", str(config), "--run-dir", str(run)]) == 0
    other = tmp_path / "other"
    other.mkdir()
    changed = {"network": {"episode_steps": 6}, "env": {"num_envs": 4}}
    other_config = write_config(other, changed, episodes=2)
    capsys.readouterr()
    assert main(["train", "--agent", "ppo", "--config", str(other_config), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "network.episode_steps: 5 → 6" in err and "env.num_envs: 2 → 4" in err
    many = write_config(other, {**changed, "agent": {"gamma": 0.123, "gae_lambda": 0.456, "hidden_size": 7}}, episodes=2)
    assert main(["train", "--agent", "ppo", "--config", str(many), "--run-dir", str(run)]) == 2
    assert "and 2 more" in capsys.readouterr().err
    assert main(["train", "--agent", "ppo", "--config", str(config), "--seed", "4", "--run-dir", str(run)]) == 2
    assert "env.seed: 0 → 4" in capsys.readouterr().err
    assert main(["train", "--agent", "rnn", "--config", str(config), "--run-dir", str(run)]) == 2
    assert "holds a 'ppo' run, not 'rnn'" in capsys.readouterr().err
    assert [r["episode"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1]     # untouched


def test_episodes_below_or_at_what_is_done_are_said_plainly(tmp_path, capsys):
    from testbed.cli import main

    config = write_config(tmp_path, TINY, episodes=3)
    run = tmp_path / "run"
    assert main(["train", "--agent", "ppo", "--config", str(config), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--agent", "ppo", "--config", str(config), "--run-dir", str(run), "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{run} has 3 episodes done; 2 episodes" in err and "nothing to do" in err
    assert main(["train", "--agent", "ppo", "--config", str(config), "--run-dir", str(run)]) == 0
    out = capsys.readouterr()
    assert f"{run} has all 3 episodes done: nothing to do" in out.err and "final metrics" in out.out
    assert len(read_metrics(run / "metrics.jsonl")) == 3


def test_train_ends_with_a_summary_and_the_next_commands(tmp_path, capsys):
    from testbed.cli import main

    config = write_config(tmp_path, TINY, episodes=2)
    out_dir = tmp_path / "runs"
    config.write_text(config.read_text() + f"run:\n  out_dir: {out_dir}\n")
    assert main(["train", "--agent", "ppo", "--config", str(config)]) == 0
    run = out_dir / "train-ppo-config-seed0"             # agent, config name (file stem), seed
    ck = run / "checkpoints" / "latest.pt"
    out = capsys.readouterr().out
    assert "final metrics (means over the networks, last episode)" in out and "throughput_mbps: " in out
    assert f"checkpoint: {ck}" in out
    assert f"testbed adapt --checkpoint {ck}" in out and f"testbed evaluate --checkpoint {ck}" in out
    assert main(["adapt", "--checkpoint", str(ck), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "first → last episode" in out and f"testbed evaluate --checkpoint {ck}" in out


def test_a_long_run_prints_a_time_estimate_after_its_first_episodes(capsys):
    from testbed.runner import _print_estimate

    _print_estimate(0.9, 0, 2, 1200)
    assert "about 9 min for the remaining 1198 of 1200 episodes at 0.45 s/episode" in capsys.readouterr().err
    _print_estimate(0.9, 0, 2, 100)                    # 45 s in all: no estimate
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_sigint_to_reproduce_stops_every_job_with_its_checkpoint_and_prints_the_resume_command(tmp_path):
    out = tmp_path / "repro"
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "reproduce", "--quick", "--seeds", "1",
                             "--workers", "2", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ONE_THREAD)
    deadline = time.monotonic() + 300
    while sum(len(read_metrics(p)) for p in (out / "runs").glob("train-*/metrics.jsonl")) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert _resume_command(err) == ["reproduce", "--quick", "--seeds", "1", "--workers", "2", "--out", str(out)]
    for run in (out / "runs").glob("train-*"):
        rows = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else []
        ck = run / "checkpoints" / "latest.pt"
        if not ck.exists():                  # a job that began as the signal came: nothing done, nothing saved
            assert rows == []
            continue
        assert load_checkpoint(ck)["episode"] == len(rows) <= 8   # 8: a job that ended before the signal
    assert json.loads((out / "provenance.json").read_text())["outcome"].startswith("Interrupted")
