"""`testbed sweep` on this machine: one row per grid point, a failing point named, bad grids refused
before anything runs, Ctrl-C stops cleanly. The sweep on a Ray cluster: tests/testbed/test_cluster.py."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed import cli, sweep
from testbed.cli import Parser

ROOT = Path(__file__).resolve().parents[2]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY = ["--agent", "ppo", "--episodes", "2", "--num-envs", "2", "--set", "network.episode_steps=10",
        "--set", "evaluation.num_tasks=2", "--eval-episodes", "1"]
GRID = ["--grid", "agent.gamma=0.8,0.9"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _sweep(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m testbed.sweep ARGV`` in a process that reports whether it imported Ray."""
    code = ("import sys; from testbed.sweep import main; rc = main(sys.argv[1:]); "
            "print('RAY IMPORTED' if 'ray' in sys.modules else 'no ray'); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=ONE_THREAD,
                          cwd=ROOT, timeout=timeout)


@pytest.mark.slow
def test_a_local_sweep_gives_one_row_per_point_and_imports_no_ray(tmp_path):
    res = _sweep(*TINY, *GRID, "--workers", "2", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("no ray")
    rows = _rows(tmp_path / "sweep.csv")
    assert [(r["agent.gamma"], r["seed"], r["status"]) for r in rows] == [("0.8", "0", "ok"), ("0.9", "0", "ok")]
    for row in rows:
        for key in sweep.METRICS:
            float(row[key])                                   # every metric measured
    assert rows[0]["eval_return"] != rows[1]["eval_return"]   # the swept field reached the runs
    table = res.stdout.splitlines()
    assert table[0] == "agent.gamma | seed | train_return | eval_return | eval_return_sample | status"
    assert table[1].startswith("0.80 | 0 | ") and table[2].startswith("0.90 | 0 | ")
    for point in ("gamma=0.8", "gamma=0.9"):
        assert len((tmp_path / point / "seed0" / "train" / "metrics.jsonl").read_text().splitlines()) == 2
        assert (tmp_path / point / "seed0" / "eval" / "summary.json").exists()


@pytest.mark.slow
def test_a_failing_point_is_named_in_the_table_and_the_sweep_exits_1(tmp_path):
    broken = tmp_path / "gamma=0.9" / "seed0" / "train" / "checkpoints" / "latest.pt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    res = _sweep(*TINY, *GRID, "--out", str(tmp_path))
    assert res.returncode == 1, res.stderr[-3000:]
    rows = _rows(tmp_path / "sweep.csv")
    assert rows[0]["status"] == "ok" and rows[0]["train_return"]
    assert rows[1]["status"].startswith("CheckpointError: ") and rows[1]["train_return"] == ""
    assert "sweep: 1 of 2 points failed: gamma=0.9-seed0" in res.stderr
    assert "| CheckpointError: " in res.stdout


@pytest.mark.parametrize("argv, message", [
    (["--grid", "agent.gamma"], r"'agent.gamma': expected dotted.field=value[,value...]"),
    (["--grid", "agent.gama=0.8"], "config error: grid point gama=0.8: agent: unknown key(s) ['gama']"),
    (["--grid", "agent.gamma=0.8,3"], ("config error: grid point gamma=3: agent.gamma: 3 is out of range; "
                                       "allowed [0.0, 1.0]")),
    (["--set", "network.num_bs=2,3"], "--set takes one value per field"),
    (["--cluster", "nowhere"], "'nowhere' is not a Ray address; allowed: auto or HOST:PORT (port 1-65535)"),
    (["--workers", "2", "--cluster", "auto"], "not allowed with argument"),
    (["--cluster", "127.0.0.1:9"], "sweep: error: --cluster 127.0.0.1:9: no Ray head answers there"),
])
def test_a_bad_grid_fails_in_one_line_with_status_2_before_anything_runs(tmp_path, capsys, argv, message):
    parser = Parser(prog="testbed")
    sweep.add_command(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    try:
        args = parser.parse_args(["sweep", *argv, "--out", str(out)])
        status = args.func(args)
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()                                   # nothing ran


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_with_a_checkpoint_and_status_130(tmp_path):
    argv = [*TINY, "--episodes", "200", "--set", "agent.checkpoint_every=1", *GRID, "--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "testbed.sweep", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ONE_THREAD, cwd=ROOT)
    first = tmp_path / "gamma=0.8" / "seed0" / "train"
    deadline = time.monotonic() + 120
    while not (first / "checkpoints" / "latest.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)                           # a terminal's Ctrl-C reaches the sweep's process
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "sweep: stopped by SIGINT" in err and "rerun the same command to resume" in err
    assert (first / "checkpoints" / "latest.pt").exists()
    assert len((first / "metrics.jsonl").read_text().splitlines()) < 200
    assert not (tmp_path / "gamma=0.9").exists()              # the queued point never started
    assert not (tmp_path / "sweep.csv").exists()


def test_grid_values_are_read_as_a_config_file_reads_them():
    """``3e-4`` is a float in a config file, so it is one on the command line too (YAML 1.1 said str)."""
    assert sweep._assignment("agent.ppo.learning_rate=3e-4,1e-3,0.01") == ("agent.ppo.learning_rate", [3e-4, 1e-3, 0.01])
    assert sweep._assignment("network.informed=false,true") == ("network.informed", [False, True])
    assert sweep._assignment("network.task_family=standard") == ("network.task_family", ["standard"])


def test_list_values_keep_their_commas_and_bad_yaml_is_one_line(capsys):
    """A task range is a list: its commas do not split the grid; text that is not YAML exits 2 with
    one line naming it."""
    assert sweep._assignment("tasks.access_gain_offset_db=[-20.0, 0.0],[-30, 0]") == (
        "tasks.access_gain_offset_db", [[-20.0, 0.0], [-30, 0]])
    assert sweep._assignment("tasks.traffic_bps=[1e6,2e7]") == ("tasks.traffic_bps", [[1e6, 2e7]])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sweep", "--set", "tasks.traffic_bps=[1e6,", "--episodes", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a YAML value: '[1e6,'" in err[0]
