"""`testbed demo` end to end, as a user runs it."""
import json
import subprocess
import sys

import yaml


def test_demo_writes_a_complete_run_folder(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump({"network": {"episode_steps": 20}, "env": {"num_envs": 4}}))
    out = subprocess.run([sys.executable, "-m", "testbed.cli", "demo", "--config", str(cfg), "--episodes", "2",
                          "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert {"config.yaml", "metrics.jsonl", "summary.json", "metrics.png", "table.md"} <= {p.name for p in run.iterdir()}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 5 * 2 * 4  # policies x episodes x envs
    assert all(r["executed_violations"] == 0 for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"random", "max_power", "greedy", "oracle", "switch_off"}
    assert summary["oracle"]["throughput_mbps"]["mean"] > summary["random"]["throughput_mbps"]["mean"]
    assert "| oracle |" in out.stdout and "throughput / oracle" in out.stdout
    assert yaml.safe_load((run / "config.yaml").read_text())["network"]["episode_steps"] == 20
    assert (run / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_config_fails_before_running_with_the_field_named(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("network:\n  num_levels: 1\n")
    out = subprocess.run([sys.executable, "-m", "testbed.cli", "demo", "--config", str(cfg), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "network.num_levels: 1 is out of range; allowed [2, 16]" in out.stderr
    assert list(tmp_path.iterdir()) == [cfg]
