"""provenance.json in every run folder, and TensorBoard scalars with `--track tensorboard`."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import datetime

import pytest

from testbed import provenance
from testbed.cli import main
from tests.agents.test_training import ONE_THREAD, TINY, write_config

FIELDS = {"command", "argv", "cwd", "start", "end", "outcome", "git", "versions", "python", "host", "device",
          "device_name", "previous"}


def _record(run) -> dict:
    record = json.loads((run / "provenance.json").read_text())
    assert FIELDS <= set(record)
    assert record["outcome"] == "finished"
    assert datetime.fromisoformat(record["start"]) <= datetime.fromisoformat(record["end"])
    assert datetime.fromisoformat(record["start"]).utcoffset() is not None
    assert set(record["versions"]) == {"spectrum-testbed", "torch", "numpy", "gymnasium"}
    assert record["python"] == ".".join(map(str, sys.version_info[:3])) and record["device"] == "cpu"
    return record


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny training, an adaptation and an evaluation from its checkpoint."""
    tmp = tmp_path_factory.mktemp("runs")
    config = write_config(tmp, TINY, episodes=2)
    train = ["train", "--agent", "ppo", "--config", str(config), "--run-dir", str(tmp / "train")]
    assert main(train) == 0
    ck = tmp / "train" / "checkpoints" / "latest.pt"
    adapt = ["adapt", "--checkpoint", str(ck), "--episodes", "2", "--run-dir", str(tmp / "adapt")]
    assert main(adapt) == 0
    evaluate = ["evaluate", "--checkpoint", str(ck), "--episodes", "1", "--run-dir", str(tmp / "evaluate")]
    assert main(evaluate) == 0
    return tmp, {"train": train, "adapt": adapt, "evaluate": evaluate}, ck


def test_train_adapt_and_evaluate_record_their_provenance(runs):
    tmp, argv, ck = runs
    for name in ("train", "adapt", "evaluate"):
        record = _record(tmp / name)
        assert record["argv"] == argv[name] and record["command"].startswith(f"testbed {name} ")
        assert record["previous"] == []
    assert "checkpoint" not in _record(tmp / "train")
    digest = hashlib.sha256(ck.read_bytes()).hexdigest()
    for name in ("adapt", "evaluate"):
        assert _record(tmp / name)["checkpoint"] == {"path": str(ck.resolve()), "sha256": digest}


def test_the_git_state_is_the_checkout_s_or_unknown(runs, tmp_path, monkeypatch):
    tmp, _, _ = runs
    git = _record(tmp / "train")["git"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=provenance.PROJECT_DIR, capture_output=True, text=True)
    if head.returncode == 0:
        assert len(git["revision"]) == 40 and isinstance(git["dirty"], bool)
        assert provenance.git_state()["revision"] == head.stdout.strip()
    else:
        assert git == {"revision": "unknown", "dirty": "unknown"}
    monkeypatch.setattr(provenance, "PROJECT_DIR", tmp_path)          # not a checkout
    assert provenance.git_state() == {"revision": "unknown", "dirty": "unknown"}


def test_a_resumed_run_keeps_the_earlier_records(runs):
    tmp, argv, _ = runs
    assert main([*argv["train"], "--episodes", "3"]) == 0
    record = _record(tmp / "train")
    assert record["argv"][-2:] == ["--episodes", "3"]
    assert [r["argv"] for r in record["previous"]] == [argv["train"]]


def test_demo_and_a_failed_run_record_their_outcome(tmp_path):
    config = write_config(tmp_path, TINY, episodes=2)
    assert main(["demo", "--config", str(config), "--episodes", "1", "--out", str(tmp_path / "out")]) == 0
    (demo,) = (tmp_path / "out").iterdir()
    assert _record(demo)["command"].startswith("testbed demo ")
    record = provenance.collect(["train"], "cpu")
    with pytest.raises(RuntimeError):
        with provenance.recorded(tmp_path / "failed", ["train"], "cpu"):
            raise RuntimeError("radio gone")
    failed = json.loads((tmp_path / "failed" / "provenance.json").read_text())
    assert failed["outcome"] == "RuntimeError: radio gone" and failed["end"] is not None
    assert record["end"] is None and record["outcome"] == "running"


def test_track_tensorboard_writes_readable_charts_and_losses(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = write_config(tmp_path, TINY, episodes=3)
    for cmd in (["train", "--agent", "ppo", "--config", str(config)],
                ["adapt", "--checkpoint", str(tmp_path / "train" / "checkpoints" / "latest.pt"), "--episodes", "2"]):
        name = cmd[0]
        assert main([*cmd, "--run-dir", str(tmp_path / name), "--track", "tensorboard"]) == 0
        events = EventAccumulator(str(tmp_path / name / "tensorboard"))
        events.Reload()
        tags = set(events.Tags()["scalars"])
        assert {"charts/episodic_return", "charts/throughput_mbps", "charts/sinr_violations",
                "charts/latency_violations", "charts/fairness", "charts/SPS"} <= tags
        assert {"losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
                "losses/clipfrac"} <= tags
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        returns = events.Scalars("charts/episodic_return")
        assert [e.step for e in returns] == [r["samples"] for r in rows]            # x axis: env samples
        assert [e.value for e in returns] == pytest.approx([r["return"] for r in rows])
        assert all(e.value > 0 for e in events.Scalars("charts/SPS"))


def test_without_track_nothing_imports_tensorboard(tmp_path):
    config = write_config(tmp_path, TINY, episodes=1)
    code = (f"import sys; from testbed.cli import main; "
            f"assert main(['train', '--agent', 'ppo', '--config', {str(config)!r}, '--run-dir', {str(tmp_path / 'r')!r}]) == 0; "
            f"print(sorted(m for m in sys.modules if 'tensorboard' in m))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"
    assert not (tmp_path / "r" / "tensorboard").exists()
