"""Recording a measured run (hardware.recording): SigMF files the sigmf package reads back with
their metadata, the step table, estimates only, the size cap, and a write error mid-run."""
from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import sigmf
import torch

from hardware import recording
from hardware.measured import CALIBRATION_CAPTURES
from hardware.radio import RadioError
from hardware.recording import RUN_FILE, STEP_FILE, RecordingError
from hardware.replay import Recording
from testbed.backends import make_backend
from testbed.config import load_config
from tests.data.make_recording import OVERRIDES, record

STEPS = 3


def small_config(directory, **record_fields):
    hw = {**OVERRIDES["hardware"], "record": {"dir": str(directory), **record_fields}}
    return load_config("bench_mock", {**OVERRIDES, "hardware": hw})


def run_steps(config, steps: int = STEPS) -> None:
    """``steps`` steps of random levels on a fresh backend, closed at the end."""
    net = make_backend(config, num_envs=1)
    gen = torch.Generator().manual_seed(0)
    p = config.network
    try:
        net.reset(seed=0)
        for _ in range(steps):
            net.step(torch.randint(1, p.num_levels, (1, p.num_bs, p.num_bands), generator=gen))
    finally:
        net.close()


def test_sigmf_files_read_back_with_their_metadata(tmp_path):
    out = record(tmp_path / "rec")
    config = small_config(out)
    for entry in config.hardware.radios:
        meta = sigmf.fromfile(out / entry.name)              # checks the data's sha512 too
        info = meta.get_global_info()
        assert info["core:sample_rate"] == config.hardware.sample_rate_hz
        assert meta.get_captures()[0]["core:frequency"] == config.hardware.center_hz
        assert entry.name in info["core:hw"] and info["testbed:driver"] == "mock"
        assert info["testbed:rx_gain_db"] == config.hardware.rx_gain_db
        assert info["testbed:tx_gain_db"] == config.hardware.tx_gain_db
        assert set(info["testbed:calibration"]) == {"offset_hz", "corrected_hz", "residual_hz"}
        notes = meta.get_annotations()
        assert sum(a["core:sample_count"] for a in notes) == meta.sample_count
        assert all(a["core:sample_count"] == config.hardware.capture_samples for a in notes)
        for a in notes:
            assert a["testbed:kind"] in ("noise", "calibrate", "sense", "measure", "map")
            assert isinstance(a["testbed:step"], int)
        sensed = [a for a in notes if a["testbed:kind"] == "sense"]
        measured = [a for a in notes if a["testbed:kind"] == "measure"]
        maps = [a for a in notes if a["testbed:kind"] == "map"]
        if entry.role == "bs":
            assert info["testbed:noise_floor_fs"] and len(sensed) >= 8 and not measured
            assert all(a["testbed:bands"] == [0, 1, 2] and a["testbed:stale"] is False for a in sensed)
            assert maps and all(a["testbed:rx_bs"] == entry.nodes[0] and a["testbed:signature"] in (0, 1)
                                and len(a["testbed:levels"]) == 2 for a in maps)        # hardware.measure_map
        else:
            assert not maps
            assert measured and all(a["testbed:signature"] in (0, 1) and len(a["testbed:levels"]) == 2
                                    for a in measured)
            assert sum(a["testbed:stale"] for a in measured) == 1          # the injected stale capture
            assert {a["testbed:tx"] for a in notes if a["testbed:kind"] == "calibrate"} == {"bs0", "bs1"}
    iq = Recording(out).samples("ue0", 0)
    assert iq.dtype == np.complex64 and iq.size == config.hardware.capture_samples and np.abs(iq).max() > 0


def test_step_table_holds_levels_estimates_sinr_and_info(tmp_path):
    out = record(tmp_path / "rec")
    rows = [json.loads(line) for line in (out / STEP_FILE).read_text().splitlines()]
    resets, steps = [r for r in rows if "reset" in r], [r for r in rows if "reset" not in r]
    assert [r["reset"] for r in resets] == [0, None] and [r["step"] for r in steps] == list(range(8))
    for row in steps:
        assert np.array(row["requested"]).shape == np.array(row["executed"]).shape == (1, 2, 3)
        assert np.all(np.array(row["executed"]) <= np.array(row["requested"]))
        assert np.array(row["external_w"]).shape == np.array(row["sinr"]).shape == (1, 2, 3)
        for key in ("mask", "measured", "reward", "throughput_bps", "turns", "backoff_db", "stale_captures"):
            assert key in row
        rx, model, hit = (np.array(row[k]) for k in ("map_rx_w", "map_model_w", "map_measured"))
        assert rx.shape == model.shape == hit.shape == (1, 2, 2, 3) and np.array(row["map_clipped"]).shape == (1, 2)
        assert not hit[0, [0, 1], [0, 1]].any() and (rx[~hit] == 0).all()      # a radio never measures itself
        assert np.array_equal(hit[0, 0, 1], (np.array(row["executed"])[0, 0] > 0))   # what BS 0 sent, BS 1 measured
    assert any(np.any(row["measured"]) for row in steps) and any(np.any(row["map_measured"]) for row in steps)
    assert steps[-1]["stale_captures"] == 1
    run = json.loads((out / RUN_FILE).read_text())
    assert run["iq"] and run["steps"] == 8 and run["error"] is None and run["context"]["config"]["backend"] == "mock"


def test_a_recording_is_never_overwritten(tmp_path):
    run_steps(small_config(tmp_path), steps=1)
    with pytest.raises(RecordingError, match="already holds a recording; set another hardware.record.dir"):
        make_backend(small_config(tmp_path), num_envs=1)


def test_estimates_only_writes_no_iq_and_cannot_be_replayed(tmp_path):
    run_steps(small_config(tmp_path, iq=False))
    assert not list(tmp_path.glob("*.sigmf-data"))
    meta = sigmf.fromfile(tmp_path / "ue0")
    assert meta.get_global_field("core:metadata_only") is True and meta.get_annotations() == []
    assert len((tmp_path / STEP_FILE).read_text().splitlines()) == 1 + STEPS
    with pytest.raises(ValueError, match=r"iq: false \(estimates only\); replay needs the captured IQ"):
        Recording(tmp_path)


def test_size_cap_stops_iq_and_the_steps_go_on(tmp_path, capsys):
    capture_bytes = 512 * 8
    cap = 10 * capture_bytes + 100
    run_steps(small_config(tmp_path, max_bytes=cap), steps=6)
    data = sum(f.stat().st_size for f in tmp_path.glob("*.sigmf-data"))
    assert data == 10 * capture_bytes <= cap
    err = capsys.readouterr().err
    assert err.count("IQ stopped") == 1 and "max_bytes" in err
    run = json.loads((tmp_path / RUN_FILE).read_text())
    assert run["iq_stopped"]["step"] is not None and run["iq_bytes"] == data
    assert sigmf.fromfile(tmp_path / "bs0").get_global_field("testbed:iq_stopped") == run["iq_stopped"]
    assert len([r for r in map(json.loads, (tmp_path / STEP_FILE).read_text().splitlines()) if "step" in r
                and "reset" not in r]) == 6


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``budget`` bytes have gone through it."""

    def __init__(self, f, budget: list[int]):
        self.f, self.budget = f, budget

    def write(self, data):
        if self.budget[0] < len(data):
            self.f.write(data[: self.budget[0]])               # a partial write, then the disk is full
            self.budget[0] = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget[0] -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_a_full_disk_ends_the_run_cleanly_with_a_readable_recording(tmp_path, monkeypatch):
    calibration = 2 * 2 * CALIBRATION_CAPTURES              # captures at ue0: two rounds of the 2 BS radios
    budget = [(calibration + 11) * 512 * 8 + 1000]           # all data files together: full after calibration
    real_open = open

    def opener(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return _FullDisk(f, budget) if str(path).endswith(".sigmf-data") else f
    monkeypatch.setattr(recording, "open", opener, raising=False)
    config = small_config(tmp_path)
    net = make_backend(config, num_envs=1)
    try:
        net.reset(seed=0)
        with pytest.raises(RecordingError, match=r"failed at step \d+: .*No space left on device"):
            for _ in range(20):
                net.step(torch.full((1, 2, 3), 3))
        assert all(radio.muted for radio in net.radios.values())
        assert not any(r.port.transmitting for r in net.radios.values())
    finally:
        net.close()
    assert issubclass(RecordingError, RadioError)          # the runner ends the episode: exit status 3
    run = json.loads((tmp_path / RUN_FILE).read_text())
    assert "No space left" in run["error"] and run["summary"]["calibration"]
    total = 0
    for entry in config.hardware.radios:
        meta = sigmf.fromfile(tmp_path / entry.name)        # the checksum matches what is on disk
        notes = meta.get_annotations()
        end = notes[-1]["core:sample_start"] + notes[-1]["core:sample_count"] if notes else 0
        assert end == meta.sample_count and meta.sample_count % 512 == 0
        total += meta.sample_count * 8
    assert total <= (calibration + 11) * 512 * 8 + 1000
    rows = [json.loads(line) for line in (tmp_path / STEP_FILE).read_text().splitlines()]
    assert rows and rows[0]["reset"] == 0


def test_cli_radio_check_records_and_a_full_disk_exits_3(tmp_path, monkeypatch, capsys):
    from tests.hardware.test_radio_check import run

    assert run(["radio", "check", "--config", "bench_mock", "--record", str(tmp_path / "ok")]) == 0
    assert "recorded into" in capsys.readouterr().out
    assert len(Recording(tmp_path / "ok").steps) == 1
    budget = [(2 * 2 * CALIBRATION_CAPTURES + 1) * 16384 * 8]   # full after calibration
    real_open = open

    def opener(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return _FullDisk(f, budget) if str(path).endswith(".sigmf-data") else f
    monkeypatch.setattr(recording, "open", opener, raising=False)
    assert run(["radio", "check", "--config", "bench_mock", "--record", str(tmp_path / "full")]) == 3
    assert "No space left on device" in capsys.readouterr().err
    assert sigmf.fromfile(tmp_path / "full" / "bs0").get_global_field("testbed:error")
