"""Replay (backend replay, hardware.replay, `testbed replay`): the shipped recording replays to its
recorded estimates bit for bit (the regression test of DSP changes; its map turns included), an env run replays to the
same rewards and metrics, and an action, config or DSP the recording does not hold is refused."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import hardware.measured
from hardware.measured import BackendError
from hardware.replay import Recording, ReplayError, drive
from testbed import replay as replay_cli
from testbed.backends import make_backend, replay_config
from testbed.config import load_config
from testbed.env import SpectrumVectorEnv
from tests.data.make_recording import DEFAULT_DIR, OVERRIDES

SHIPPED = DEFAULT_DIR


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="testbed")
    replay_cli.add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_shipped_recording_is_small_and_holds_every_kind_of_capture():
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) < 1_000_000
    rec = Recording(SHIPPED)
    kinds = {a["testbed:kind"] for name in rec.meta for a in rec.annotations(name)}
    assert kinds == {"noise", "calibrate", "sense", "measure", "map"}
    assert any(a.get("testbed:stale") for a in rec.annotations("ue0"))
    maps = [a for a in rec.annotations("bs1") if a["testbed:kind"] == "map"]
    assert maps and all(a["testbed:rx_bs"] == 1 for a in maps)       # bs1 captures what bs0 sends at BS 1
    assert rec.run["format"] == 3 and any(np.any(row["map_measured"]) for row in rec.steps)


def test_dsp_on_the_shipped_recording_gives_the_recorded_estimates():
    """The regression test of DSP changes: every estimate, SINR, reward and count as recorded."""
    rec = Recording(SHIPPED)
    net = make_backend(replay_config(SHIPPED), num_envs=1)
    try:
        replayed = drive(net, rec)
    finally:
        net.close()
    assert len(replayed) == len(rec.steps) == 8
    for got, want in zip(replayed, rec.steps):
        for key in ("executed", "mask", "external_w", "sinr", "measured", "reward", "turns", "stale_captures",
                    "map_rx_w", "map_model_w", "map_measured", "map_clipped"):
            assert got[key] == want[key], (got["step"], key)
    assert net.recorder.summary["noise_floor"] == rec.run["summary"]["noise_floor"]
    assert net.recorder.summary["calibration"] == rec.run["summary"]["calibration"]


def test_a_dsp_change_is_caught(monkeypatch, capsys):
    real = hardware.measured.link_sinr
    monkeypatch.setattr(hardware.measured, "link_sinr", lambda power, residual: real(power, residual) * 1.001)
    assert cli(["replay", str(SHIPPED)]) == 1
    out = capsys.readouterr().out
    assert "differences in sinr" in out and "largest SINR difference" in out


def record_env_run(directory: Path, episodes: int = 2) -> tuple[dict, list]:
    """Episodes of seeded random actions through the vector env on the small mock bench, recorded;
    returns the config used and per step (reward, sinr_db info, episode metrics or None)."""
    hw = {**OVERRIDES["hardware"], "record": {"dir": str(directory)}}
    config = load_config("bench_mock", {**OVERRIDES, "hardware": hw})
    return config, play(config, episodes)


def play(config, episodes: int) -> list:
    env = SpectrumVectorEnv(config)
    rng = np.random.default_rng(7)
    out = []
    try:
        env.reset(seed=11)
        for _ in range(episodes * config.network.episode_steps):
            action = rng.integers(0, config.network.num_levels, size=env.action_space.shape)
            _, reward, _, truncated, info = env.step(action)
            metrics = info["final_info"]["episode_metrics"] if truncated.any() else None
            out.append((reward.tolist(), info["sinr_db"].tolist(), info["measured"].tolist(), metrics))
    finally:
        env.close()
    return out


def as_text(rows: list) -> str:
    return json.dumps(rows, default=lambda a: np.asarray(a).tolist())


def test_an_env_run_replays_to_the_same_rewards_sinr_and_metrics(tmp_path):
    _, recorded = record_env_run(tmp_path / "rec")
    replayed = play(replay_config(tmp_path / "rec"), episodes=2)
    assert as_text(replayed) == as_text(recorded)                  # NaNs included, bit for bit
    assert any(np.any(measured) for _, _, measured, _ in replayed)
    assert sum(m is not None for *_, m in replayed) == 2


def test_an_action_the_recording_does_not_hold_is_refused():
    rec = Recording(SHIPPED)
    net = make_backend(replay_config(SHIPPED), num_envs=1)
    try:
        net.reset(seed=0)
        first = torch.tensor(rec.steps[0]["requested"])
        other = torch.where(first > 0, 0, 3)                      # every band the other way
        with pytest.raises(ReplayError, match=r"^replay: step 0, ue0 capture \d+: .*(BS \d \(bs\d\) transmits "
                                              r"levels|a transmission the recording does not hold)"):
            net.step(other)
    finally:
        net.close()


def test_a_config_other_than_the_recorded_one_is_refused():
    config = load_config(replay_config(SHIPPED), {"hardware": {"rx_gain_db": 20.0}})
    with pytest.raises(BackendError, match=r"hardware.rx_gain_db=20.0, the recording .* was made with 30.0"):
        make_backend(config, num_envs=1)
    with pytest.raises(BackendError, match="hardware.replay: the directory of a recording"):
        make_backend(load_config("bench_mock", {"backend": "replay"}), num_envs=1)


def test_a_capped_recording_replays_up_to_the_cap(tmp_path):
    directory = tmp_path / "capped"
    shutil.copytree(SHIPPED, directory)
    run = json.loads((directory / "recording.json").read_text())
    ue0 = json.loads((directory / "ue0.sigmf-meta").read_text())
    kept = [a for a in ue0["annotations"] if a["testbed:step"] < 3]   # as if the cap had stopped the IQ at step 3
    ue0["annotations"] = kept
    (directory / "ue0.sigmf-meta").write_text(json.dumps(ue0))
    run["iq_stopped"] = {"step": 3, "reason": "hardware.record.max_bytes=1 reached"}
    (directory / "recording.json").write_text(json.dumps(run))
    net = make_backend(replay_config(directory), num_envs=1)
    with pytest.raises(ReplayError, match=rf"ue0 has no recorded capture left after its {len(kept)} \(IQ recording stopped "
                                          r"at step 3"):
        drive(net, Recording(directory))
    net.close()
    assert 0 < len([r for r in net.recorder.rows if "reset" not in r]) < 8


def test_cli_replay_prints_a_summary_and_writes_the_pictures(tmp_path, capsys):
    assert cli(["replay", str(SHIPPED), "--plot", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "replayed 8 of 8 steps: estimates, SINR, reward and metrics identical" in out
    assert "ue0" in out and "1 stale" in out
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["bs0_spectrogram.png", "bs1_spectrogram.png", "sinr.png", "ue0_spectrogram.png"]
    assert all((tmp_path / n).stat().st_size > 10_000 for n in names)


def test_cli_replay_of_a_missing_recording_is_one_clear_line(tmp_path, capsys):
    assert cli(["replay", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a readable recording" in err
