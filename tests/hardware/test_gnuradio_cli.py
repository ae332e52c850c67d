"""`testbed adapt` on ``backend: gnuradio`` through the real command line, as a user runs it:
an agent trained on the simulator adapts on the GNU Radio bench, whose flowgraph the run
starts and stops itself (``hardware.start_bridge``); and the flowgraph killed mid-run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from testbed.checkpoint import load_checkpoint

RUN_TIMEOUT_S = 120.0
TAG = "TESTBED_TEST_RUN"   # environment variable that marks the processes of one test run


def write_config(path: Path, backend: str, episode_steps: int) -> Path:
    """bench_gnuradio with short episodes and 1 s radio timeouts (``backend`` sim: same sizes)."""
    data = yaml.safe_load(open("configs/bench_gnuradio.yaml"))
    data["backend"] = backend
    data["network"]["episode_steps"] = episode_steps
    data["hardware"]["timeout_s"] = 1.0
    data["run"]["out_dir"] = str(path.parent / "runs")
    path.write_text(yaml.safe_dump(data))
    return path


def flowgraphs_of(tag: str) -> set[int]:
    """PIDs of live bridge flowgraphs whose environment carries this test run's tag."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"{TAG}={tag}".encode() in environ and b"flowgraph.py" in cmdline:
            pids.add(int(proc.name))
    return pids


def run_cli(args: list[str], tmp_path: Path, during=None) -> tuple[int, str, set[int]]:
    """``python -m testbed.cli ARGS`` to completion; ``during(tag)`` is polled while it runs.
    Returns (exit status, stderr, PIDs of the flowgraphs seen while it ran)."""
    tag = uuid.uuid4().hex
    err_path = tmp_path / f"stderr-{tag}.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", *args], stdout=subprocess.DEVNULL,
                                stderr=err, env={**os.environ, TAG: tag})
    seen: set[int] = set()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= flowgraphs_of(tag)
            if during is not None:
                during(tag)
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert not flowgraphs_of(tag), "a flowgraph outlived the run"
    return proc.returncode, err_path.read_text(), seen


@pytest.fixture(scope="module")
def sim_checkpoint(tmp_path_factory) -> Path:
    """A PPO checkpoint trained for one episode on the simulator with bench_gnuradio's sizes."""
    tmp = tmp_path_factory.mktemp("train")
    config = write_config(tmp / "sim.yaml", "sim", episode_steps=8)
    code, err, seen = run_cli(["train", "--agent", "ppo", "--config", str(config), "--episodes", "1",
                               "--run-dir", str(tmp / "train")], tmp)
    assert code == 0, err
    assert not seen                                     # the simulator needs no bridge
    return tmp / "train" / "checkpoints" / "latest.pt"


def test_adapt_runs_a_full_episode_on_the_gnuradio_backend(sim_checkpoint, tmp_path):
    config = write_config(tmp_path / "gnuradio.yaml", "gnuradio", episode_steps=8)
    run_dir = tmp_path / "adapt"
    code, err, seen = run_cli(["adapt", "--checkpoint", str(sim_checkpoint), "--episodes", "1",
                               "--config", str(config), "--run-dir", str(run_dir)], tmp_path)
    assert code == 0, err
    assert len(seen) == 1                               # the run started its own flowgraph (and stopped it)
    [row] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert row["episode"] == 0 and row["agent"] == "ppo" and row["samples"] == 8
    assert row["executed_violations"] == 0 and row["throughput_mbps"] > 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["backend"] == "gnuradio"
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["episode"] == 1


def test_flowgraph_killed_mid_adapt_exits_3_with_the_finished_episodes_saved(sim_checkpoint, tmp_path):
    """SIGKILL to the flowgraph as soon as episode 0 is logged: episode 1 fails, the command
    says so and exits 3, episode 0's metrics and a checkpoint are kept."""
    config = write_config(tmp_path / "gnuradio.yaml", "gnuradio", episode_steps=40)
    run_dir = tmp_path / "adapt"
    metrics = run_dir / "metrics.jsonl"
    killed = []

    def kill_after_first_episode(tag: str) -> None:
        if not killed and metrics.exists() and metrics.read_text().count("\n") >= 1:
            for pid in flowgraphs_of(tag):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    code, err, seen = run_cli(["adapt", "--checkpoint", str(sim_checkpoint), "--episodes", "3",
                               "--config", str(config), "--run-dir", str(run_dir)], tmp_path,
                              during=kill_after_first_episode)
    assert killed and set(killed) == seen
    assert code == 3, err
    assert "radio backend failed during episode 1" in err and "bridge" in err
    assert "the emulate flowgraph was killed by signal 9" in err
    assert "metrics of the finished episodes and the last checkpoint are saved" in err
    assert "Traceback" not in err
    assert [json.loads(line)["episode"] for line in metrics.read_text().splitlines()] == [0]
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["episode"] == 1
