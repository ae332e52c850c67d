"""The device tests' calibration and TX switch checks (``tests/hardware/device_checks.py``, run by
test_pluto_with_device.py and test_usrp_with_device.py on real radios) on emulated ones with their
impairments on: two emulated Plutos with ±25 ppm crystals, one emulated Pluto in digital loopback,
the USRP stand-in; and the switch check catching a radio whose old burst lingers."""
from __future__ import annotations


import numpy as np
import pytest

from hardware.drivers.gnuradio import ZmqRadio
from hardware.emulated.bridge import emulator_flowgraph
from hardware.emulated.iiod import serve_bench
from hardware.measured import close_all
from testbed.config import load_config
from tests.hardware.device_checks import PERIOD, TONE_A, check_tx_switch
from tests.hardware.test_gnuradio_bridge import entry as node_entry
from tests.hardware.test_pluto_with_device import calibrate_plutos, pluto_bench_config, tx_switch_in_digital_loopback
from tests.hardware.test_usrp_with_device import calibrate_usrps, tx_switch_on_the_bridge


def test_pluto_calibration_check_on_two_emulated_plutos_with_25_ppm_crystals():
    config = pluto_bench_config()
    emulators, hw = serve_bench(config.hardware, config.network)
    try:
        bs, ue = emulators
        uris = {e.name: e.uri for e in hw.radios}
        report = calibrate_plutos(uris["bs0"], uris["ue0"])
    finally:
        for emu in emulators:
            emu.stop()
    apart_hz = (bs.crystal_ppm - ue.crystal_ppm) * 1e-6 * hw.center_hz
    assert abs(apart_hz) > 2e3                                   # beyond what the per-step estimator removes
    assert report["bs0"]["offset_hz"] == pytest.approx(apart_hz, abs=50.0)


def test_pluto_switch_check_on_an_emulated_pluto_in_digital_loopback(pluto_emulator):
    figures = tx_switch_in_digital_loopback(pluto_emulator.uri)
    assert figures["A"]["wanted_db"] > 20.0 and figures["B"]["unwanted_db"] < 10.0


def test_usrp_checks_on_the_standin_with_2_ppm_crystals():
    config = load_config("bench_gnuradio", {"hardware": {"timeout_s": 5.0, "impairments": {"usrp_standin": True}}})
    hw, p = config.hardware, config.network
    with emulator_flowgraph(hw, p, hw.pilot_plan(p.num_bs, p.num_bands)) as fg:
        radios = {e.name: ZmqRadio(e.name, hw.limits(), node_entry(fg, e.name), timeout_s=5.0) for e in hw.radios}
        try:
            report = calibrate_usrps(config, radios)
            assert max(abs(report[n]["offset_hz"]) for n in report) > 500.0    # the crystals were apart
            figures = tx_switch_on_the_bridge(radios["bs0"], radios["ue0"], transport_samples=0)
        finally:
            close_all(radios)
    assert figures["B"]["wanted_db"] > 20.0 and figures["mute"]["unwanted_db"] < 10.0


class LingeringRadio:
    """A radio whose air still carries the first burst it sent, under every later one."""

    def __init__(self):
        self.first = None
        self.now = None

    def send(self, burst):
        self.first = burst.iq if self.first is None else self.first
        self.now = burst.iq

    def mute(self):
        self.now = None

    def capture(self, n: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        out = 1e-4 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
        for iq in (self.first, self.now):
            if iq is not None:
                out += np.resize(iq, n)
        return out


def test_the_switch_check_catches_an_old_burst_left_on_air():
    radio = LingeringRadio()
    with pytest.raises(AssertionError, match="after B and 0.0 ms: a tone no longer sent is still"):
        check_tx_switch(radio, radio, wait_s=0.0)
    assert radio.first.size == PERIOD and np.argmax(np.abs(np.fft.fft(radio.first))) == TONE_A
