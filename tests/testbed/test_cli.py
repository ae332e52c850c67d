"""The `testbed` command line: every numeric option checked with a one-line error and exit 2,
help text on every option, --version, Ctrl-C in the demo, malformed run files refused."""
from __future__ import annotations

import argparse
import importlib.metadata
import signal
import subprocess
import sys
import time

import pytest
import yaml

from testbed.cli import build_parser, main

REJECTED = [
    (["demo", "--episodes", "0"], "testbed demo: --episodes: 0 is out of range; allowed [1, 100000]"),
    (["demo", "--episodes", "-3"], "testbed demo: --episodes: -3 is out of range; allowed [1, 100000]"),
    (["train", "--agent", "ppo", "--episodes", "0"], "testbed train: --episodes: 0 is out of range; allowed [1, 10000000]"),
    (["train", "--agent", "ppo", "--episodes", "1.5"], "testbed train: --episodes: expected an integer, got '1.5'"),
    (["train", "--agent", "ppo", "--seed", "-1"], "testbed train: --seed: -1 is out of range; allowed [0, "),
    (["adapt", "--checkpoint", "x.pt", "--episodes", "0"], "testbed adapt: --episodes: 0 is out of range; allowed [1, 10000]"),
    (["adapt", "--checkpoint", "x.pt", "--episodes", "10001"], "testbed adapt: --episodes: 10001 is out of range"),
    (["evaluate", "--checkpoint", "x.pt", "--episodes", "-2"], "testbed evaluate: --episodes: -2 is out of range"),
    (["reproduce", "--seeds", "0"], "testbed reproduce: --seeds: 0 is out of range; allowed [1, 1000]"),
    (["reproduce", "--workers", "0"], "testbed reproduce: --workers: 0 is out of range; allowed [1, 1024]"),
    (["reproduce", "--workers", "many"], "testbed reproduce: --workers: expected an integer, got 'many'"),
    (["train", "--agent", "ppo", "--track", "wandb"], "testbed train: --track: invalid choice: 'wandb'"),
    (["train", "--agent", "ppo", "--run", "x"], "testbed: unrecognized arguments: --run x"),   # no abbreviations
]


@pytest.mark.parametrize("argv, message", REJECTED, ids=[" ".join(a) for a, _ in REJECTED])
def test_a_bad_option_is_one_line_and_exit_2(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []                      # nothing ran


def test_a_bad_option_in_a_real_process_has_no_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "testbed.cli", "demo", "--episodes", "-3", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == "testbed demo: --episodes: -3 is out of range; allowed [1, 100000] " \
                                 "(see testbed demo --help)"
    assert list(tmp_path.iterdir()) == []


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"testbed {importlib.metadata.version('spectrum-testbed')}"


def _parsers(parser: argparse.ArgumentParser, name: str = "testbed"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_has_help():
    seen = 0
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.option_strings:
                seen += 1
                assert action.help and action.help != argparse.SUPPRESS, (name, action.option_strings)
    assert seen >= 25


def test_ctrl_c_in_the_demo_exits_130_without_a_traceback(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump({"network": {"episode_steps": 20}, "env": {"num_envs": 2}}))
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "demo", "--config", str(cfg), "--episodes", "50000",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not out.exists() or not any(out.iterdir()):       # the demo made its folder: episodes are playing
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "demo stopped by SIGINT" in err and "Rerun: testbed demo --config" in err


def test_a_malformed_metrics_line_is_refused_with_file_and_line(tmp_path, capsys):
    from tests.agents.test_training import TINY, write_config

    config = write_config(tmp_path, TINY, episodes=2)
    run = tmp_path / "run"
    assert main(["train", "--agent", "ppo", "--config", str(config), "--run-dir", str(run)]) == 0
    metrics = run / "metrics.jsonl"
    first, second = metrics.read_text().splitlines()
    metrics.write_text(f"{first}\n[1, 2]\n{second}\n")
    capsys.readouterr()
    assert main(["train", "--agent", "ppo", "--config", str(config), "--run-dir", str(run), "--episodes", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {metrics}:2: not a JSON object") and len(err.splitlines()) == 1
    assert metrics.read_text() == f"{first}\n[1, 2]\n{second}\n"     # left as it was


def test_a_checkpoint_without_its_fields_is_refused(tmp_path, capsys):
    import torch

    torch.save({"format": 1, "agent": "ppo", "config": {}}, tmp_path / "partial.pt")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "partial.pt"), "--run-dir", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "partial.pt: not a complete testbed checkpoint: 'episode' is missing" in err
    assert not (tmp_path / "e").exists()


def test_keys_generate_is_a_testbed_command(tmp_path):
    from testbed.cli import main

    assert main(["keys", "generate", str(tmp_path / "keys")]) == 0
    assert {p.name for p in (tmp_path / "keys").iterdir()} >= {"server.key", "server.key_secret", "client.key",
                                                                "client.key_secret", "clients"}
