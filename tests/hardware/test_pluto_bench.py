"""`backend: pluto` end to end on two emulated Plutos sharing one RF medium: `testbed radio check`,
the safety property with real interferers on the medium, a full `testbed adapt` run with an
interferer injected mid-run, and the emulator killed mid-run."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.dsp import PilotPlan
from hardware.emulated.iiod import serve_bench
from testbed.backends import make_backend
from testbed.config import load_config, save_config

REPO = Path(__file__).resolve().parents[2]
EPISODE_STEPS = 10


def bench_config(**hardware) -> dict:
    """configs/bench_pluto.yaml with short episodes and no settling wait (the emulator has no DAC latency)."""
    data = yaml.safe_load((REPO / "configs" / "bench_pluto.yaml").read_text())
    data["hardware"].update({"settle_s": 0.0, **hardware})
    data["network"]["episode_steps"] = EPISODE_STEPS
    return data


def to_antenna_w(config, network_w: float) -> float:
    """Medium power (full scale 1, before the RX gain) that the bench maps to ``network_w`` W."""
    return network_w / (10 ** (config.hardware.full_scale_dbm / 10) * 1e-3) / 10 ** (config.hardware.rx_gain_db / 10)


class Bench:
    """bench_pluto.yaml's two Plutos emulated on one medium (bs0 = BS radio, ue0 = UE radio).
    Records what the BS Pluto puts on air and can switch an interferer on at its n-th capture."""

    def __init__(self):
        config = load_config(bench_config())
        self.emulators, hw = serve_bench(config.hardware, config.network)
        self.config = dataclasses.replace(config, hardware=hw)
        self.bs, self.ue = self.emulators
        self.medium = self.bs.medium
        self.sent: list[tuple[int, np.ndarray]] = []      # (BS captures so far, TX IQ)
        self.bs_captures = 0
        self.on_capture: dict[int, callable] = {}
        transmit, receive = self.bs.rf_port.transmit, self.bs.rf_port.receive

        def recording_transmit(iq, cyclic=True, state=None):
            self.sent.append((self.bs_captures, np.array(iq)))
            transmit(iq, cyclic, state)

        def counting_receive(num_samples, state=None):
            self.bs_captures += 1
            if self.bs_captures in self.on_capture:
                self.on_capture[self.bs_captures]()
            return receive(num_samples, state)
        self.bs.rf_port.transmit = recording_transmit
        self.bs.rf_port.receive = counting_receive

    def write_config(self, path: Path) -> Path:
        save_config(self.config, path)
        return path

    def interferer(self, band: int, network_w: float) -> None:
        """Band-limited noise filling band ``band``, heard by both Plutos as ``network_w`` W."""
        hw, p = self.config.hardware, self.config.network
        plan = PilotPlan(p.num_bs, p.num_bands, hw.fft_size, hw.tones_per_bs, hw.band_fraction)
        lo, hi = plan.band_edges_hz(hw.sample_rate_hz)[band] + hw.center_hz
        self.medium.set_interferer(f"band{band}", lo, hi, to_antenna_w(self.config, network_w),
                                   {"bs0": 0.0, "ue0": 0.0})

    @property
    def silent(self) -> bool:
        return not any(e.rf_port.transmitting for e in self.emulators)

    def stop(self) -> None:
        for e in self.emulators:
            e.stop()


@pytest.fixture
def bench():
    b = Bench()
    yield b
    b.stop()


def eventually(condition, timeout_s: float = 5.0) -> bool:
    """Poll ``condition`` (the emulator notices a closed connection from its own thread)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def band_energy(plan: PilotPlan, iq: np.ndarray) -> np.ndarray:
    """Energy of one waveform period in each band, full scale. [K]"""
    spectrum = np.abs(np.fft.fft(iq, plan.fft_size) / plan.fft_size) ** 2
    return spectrum[plan.band_bins].sum(axis=1)


def dac_floor(plan: PilotPlan, tx_gain_db: float) -> float:
    """Energy in one band of the 16-bit DAC's rounding noise (±0.5 LSB on I and Q) after the TX
    gain: what an empty band carries on air. Anything sent there stands far above it."""
    per_sample = (1 / 6) * (1 / 32767) ** 2 * 10 ** (tx_gain_db / 10)
    return per_sample * plan.bins_per_band / plan.fft_size


def run_testbed(argv: list[str]) -> int:
    """The `testbed` command, in this process (so the emulators' medium can be watched)."""
    from testbed.cli import main
    return main(argv)


# --- testbed radio check -----------------------------------------------------------------------
def test_radio_check_on_emulated_plutos(bench, tmp_path, capsys):
    path = bench.write_config(tmp_path / "bench.yaml")
    assert run_testbed(["radio", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 radios open (bs0, ue0)" in out and "all radios muted and closed" in out
    sinr_rows = [line.split()[2:] for line in out.split("SINR at full power")[1].splitlines() if line.startswith("BS ")]
    assert any(cell.endswith("m") for row in sinr_rows for cell in row)       # measured through the Plutos
    assert bench.silent                                                       # muted
    assert eventually(lambda: not bench.bs._conns and not bench.ue._conns)   # closed: the Plutos are released


# --- the safety property on the Pluto driver ------------------------------------------------------
@pytest.fixture(scope="module")
def pluto_net():
    b = Bench()
    net = make_backend(b.config, num_envs=1)
    yield b, net
    net.close()
    b.stop()


@settings(max_examples=8, deadline=None)
@given(bands=st.lists(st.booleans(), min_size=5, max_size=5),
       interferer_dbm=st.floats(-110.0, -60.0),
       bs_part_dbm=st.lists(st.floats(-130.0, -70.0), min_size=15, max_size=15),
       levels=st.lists(st.integers(0, 3), min_size=15, max_size=15))
def test_no_pilot_on_air_where_sensed_interference_exceeds_i_max(pluto_net, bands, interferer_dbm, bs_part_dbm, levels):
    """Random interference maps plus real interferers on the emulated Plutos' medium: no executed
    transmission, and no pilot energy leaving the BS Pluto, on a band whose map exceeds I_max."""
    bench, net = pluto_net
    p = net.params
    net.reset(seed=0)
    bench.medium.clear_interferers()
    for k in np.flatnonzero(bands):
        bench.interferer(int(k), 10 ** (interferer_dbm / 10) * 1e-3)
    sensed = net.sense_external_w()
    bs_part = 10 ** (torch.tensor(bs_part_dbm).view(1, 3, 5) / 10) * 1e-3
    net.state = dataclasses.replace(net.state, external_w=sensed, map_w=bs_part + sensed)
    bench.sent.clear()
    res = net.step(torch.tensor(levels).view(1, 3, 5))

    closed = res.map_w > p.i_max_w                                           # [1, B, K]
    assert int(res.executed_violations.sum()) == 0
    assert torch.all(res.safe.power_w[closed] == 0)
    if interferer_dbm > p.i_max_dbm + 3:                                     # the real interferer is sensed
        assert torch.all(closed[0][:, torch.tensor(bands)])
    closed_everywhere = closed[0].all(dim=0).numpy()                         # [K]: every BS of pluto0 closed
    floor = dac_floor(net.plan, net.hw.tx_gain_db)
    for _, iq in bench.sent:
        assert np.all(band_energy(net.plan, iq)[closed_everywhere] < 10 * floor)
    assert bench.silent


# --- a full run through `testbed adapt` ----------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A PPO checkpoint trained for one episode on the simulator, same network as the bench."""
    run = tmp_path_factory.mktemp("train")
    data = bench_config()
    data["backend"] = "sim"
    data.pop("hardware")
    data["agent"] = {"episodes": 1}
    path = run / "sim.yaml"
    path.write_text(yaml.safe_dump(data))
    assert run_testbed(["train", "--agent", "ppo", "--config", str(path), "--run-dir", str(run / "ppo")]) == 0
    return run / "ppo" / "checkpoints" / "latest.pt"


def test_adapt_runs_full_episodes_on_emulated_plutos_and_avoids_an_injected_interferer(bench, checkpoint, tmp_path):
    path = bench.write_config(tmp_path / "bench.yaml")
    config = bench.config
    band = 2
    # capture 1 calibrates the noise floor, capture 2 senses step 0: switch the interferer on at
    # capture 3 (step 1 of episode 0) at -60 dBm network-referred: 30 dB above I_max, 20 dB below
    # the ADC's full scale (-40 dBm), so it stays in its band
    bench.on_capture[3] = lambda: bench.interferer(band, 1e-9)
    run_dir = tmp_path / "adapt"
    rc = run_testbed(["adapt", "--checkpoint", str(checkpoint), "--config", str(path), "--episodes", "2",
                       "--run-dir", str(run_dir)])
    assert rc == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert all(r["executed_violations"] == 0 for r in rows)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["backend"] == "pluto"
    plan = PilotPlan(3, 5, config.hardware.fft_size, config.hardware.tones_per_bs, config.hardware.band_fraction)
    floor = dac_floor(plan, config.hardware.tx_gain_db)
    before = [band_energy(plan, iq) for n, iq in bench.sent if n < 3]
    after = [band_energy(plan, iq) for n, iq in bench.sent if n >= 3]
    assert before and any(e[band] > 1000 * floor for e in before)        # band 2 was used before
    assert len(after) >= 2 * EPISODE_STEPS - 2
    assert all(e[band] < 10 * floor for e in after)                       # and never after
    assert bench.silent


def test_emulator_killed_mid_adapt_ends_with_saved_data_and_exit_3(checkpoint, tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    source = tmp_path / "source.yaml"
    source.write_text(yaml.safe_dump(bench_config()))
    proc = subprocess.Popen([sys.executable, "-m", "testbed.emulate", str(source),
                             "--write-config", str(path)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        uris = [proc.stdout.readline().strip() for _ in range(2)]
        run_dir = tmp_path / "adapt"
        metrics = run_dir / "metrics.jsonl"

        def kill_after_first_episode():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().strip()):
                time.sleep(0.005)
            proc.kill()
        killer = threading.Thread(target=kill_after_first_episode)
        killer.start()
        rc = run_testbed(["adapt", "--checkpoint", str(checkpoint), "--config", str(path), "--episodes", "50",
                           "--run-dir", str(run_dir)])
        killer.join()
    finally:
        proc.kill()
        proc.wait()
    assert rc == 3
    err = capsys.readouterr().err
    assert "radio backend failed during episode" in err and any(u in err for u in uris)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert 1 <= len(rows) < 50 and rows[0]["episode"] == 0


def test_plutos_with_25_ppm_crystals_are_calibrated_onto_one_frequency(pluto_net):
    """The emulated Plutos boot with crystals drawn from ±25 ppm, uncorrected (tens of kHz apart
    at 2.44 GHz): the backend's start-up calibration finds the offset and writes the BS Pluto's
    xo_correction, leaving a residual the per-step estimator does not notice."""
    b, net = pluto_net
    bs, ue = b.emulators
    apart_hz = (bs.crystal_ppm - ue.crystal_ppm) * 1e-6 * net.hw.center_hz
    assert abs(apart_hz) > 2e3                                      # beyond the estimator's ±977 Hz
    cal = net.calibration["bs0"]
    assert cal["offset_hz"] == pytest.approx(apart_hz, abs=50.0)
    assert cal["corrected_hz"] == cal["offset_hz"] and abs(cal["residual_hz"]) < 20.0
