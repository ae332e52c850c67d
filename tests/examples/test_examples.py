"""The scripts in examples/ run end to end (tiny sizes) and print what they promise."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.env import EPISODE_INFO_KEYS
from testbed.metrics import METRIC_KEYS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(script: str, *args: str) -> list[dict]:
    """The JSON lines the example prints; it must exit 0."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_sb3_ppo_logs_the_episode_metrics_through_monitor(tmp_path):
    (out,) = run("sb3_ppo.py", "--timesteps", "500", "--log-dir", str(tmp_path))
    assert out["timesteps"] == 500 and out["episodes"] == 5  # 100-step episodes
    assert set(EPISODE_INFO_KEYS) <= set(out)
    assert out["episode_return"] == pytest.approx(out["r"], abs=1e-5)
    assert 0 < out["episode_fairness"] <= 1 and out["episode_throughput_mbps"] > 0
    header = (tmp_path / "monitor.csv").read_text().splitlines()[1]
    assert header.split(",") == ["r", "l", "t", *EPISODE_INFO_KEYS]


def test_maskable_ppo_requests_no_masked_level():
    (out,) = run("maskable_ppo.py", "--timesteps", "500")
    assert out["timesteps"] == 500
    assert set(METRIC_KEYS) <= set(out)
    assert out["masked_requests"] == 0 and out["blocked_unsafe"] == 0


def test_cleanrl_ppo_trains_and_reports_finished_episodes():
    lines = run("cleanrl_ppo.py", "--num-envs", "8", "--num-steps", "50", "--timesteps", "800")
    *episodes, total = lines
    assert len(episodes) == 1 and set(METRIC_KEYS) <= set(episodes[0])
    assert episodes[0]["global_step"] == 800
    assert total["global_step"] == 800 and total["episodes"] == 8
