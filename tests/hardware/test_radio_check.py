"""`testbed radio check` on the mock bench: tables, exit codes, mute on failure."""
from __future__ import annotations

import argparse

import pytest

from hardware.emulated.medium import MediumPort
from hardware.emulated.mock import MockRadio
from hardware.radio import RadioTimeout
from testbed.radio_check import add_command


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="testbed")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_check_prints_floor_occupancy_and_sinr(capsys):
    assert run(["radio", "check", "--config", "bench_mock"]) == 0
    out = capsys.readouterr().out
    assert "noise floor" in out and "occupancy" in out and "SINR" in out
    floor_rows = [line.split() for line in out.splitlines() if line.startswith("bs")]
    floors = [float(v) for row in floor_rows[:3] for v in row[1:]]
    assert all(-98.5 < v < -95.5 for v in floors)           # N0 = -97 dBm per band
    assert "m" in out.split("SINR")[1] and "all radios muted and closed" in out


def test_check_refuses_a_sim_config(capsys):
    assert run(["radio", "check", "--config", "paper"]) == 1
    assert "backend: sim" in capsys.readouterr().err


def test_check_fails_cleanly_when_a_radio_times_out(monkeypatch, capsys):
    opened = []
    real_init = MockRadio.__init__

    def spy_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        opened.append(self)
    calls = {"n": 0}
    real_capture = MockRadio._capture

    def flaky_capture(self, num_samples):
        calls["n"] += 1
        if calls["n"] > 6:                          # the first capture while the BSs transmit
            raise RadioTimeout(f"{self.name}: capture timed out")
        return real_capture(self, num_samples)
    monkeypatch.setattr(MockRadio, "__init__", spy_init)
    monkeypatch.setattr(MockRadio, "_capture", flaky_capture)
    assert run(["radio", "check", "--config", "bench_mock"]) == 1
    assert "RadioTimeout" in capsys.readouterr().err
    assert opened and all(r.muted for r in opened)
    assert not any(isinstance(p, MediumPort) and p.transmitting for r in opened for p in [r.port])


def test_missing_config_argument_is_a_usage_error():
    with pytest.raises(SystemExit):
        run(["radio", "check"])


def test_check_prints_the_frequency_calibration_of_every_radio(capsys):
    """bench_mock's radios have crystals drawn from ±25 ppm, ue0's disciplined: every other radio
    is moved onto ue0 by its crystal's error at the centre frequency, and what is left is printed
    per radio."""
    from testbed.config import load_config

    assert run(["radio", "check", "--config", "bench_mock"]) == 0
    out = capsys.readouterr().out
    assert "device faults: 0 RX overflows, 0 TX underflows" in out
    table = out.split("frequency calibration")[1].split("\n\n")[0]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in table.splitlines()[2:]}
    assert set(rows) == {"bs0", "bs1", "bs2", "ue0", "ue1"}
    hw = load_config("bench_mock").hardware
    for e in hw.radios:
        if e.name != "ue0":
            error_hz = hw.impairments.for_radio(e, hw.center_hz)["crystal_ppm"] * 1e-6 * hw.center_hz
            assert rows[e.name][:2] == pytest.approx([error_hz, error_hz], abs=3.0)
    assert max(abs(r[0]) for r in rows.values()) > 20e3
    assert all(abs(r[2]) < 2.0 for r in rows.values())


def test_a_recorded_check_replays_bit_for_bit(tmp_path, capsys):
    from tests.hardware.test_replay import cli

    assert run(["radio", "check", "--config", "bench_mock", "--record", str(tmp_path)]) == 0
    capsys.readouterr()
    assert cli(["replay", str(tmp_path)]) == 0
    assert "replayed 1 of 1 steps: estimates, SINR, reward and metrics identical" in capsys.readouterr().out
