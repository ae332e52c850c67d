"""The Pluto driver on a real ADALM-Pluto. Runs only with ``--pluto-uri`` (e.g. ip:192.168.2.1).

Nothing leaves the radio: the AD936x's digital loopback (debug attribute ``loopback`` = 1) routes
the TX samples to the RX path inside the chip, so these tests need no cable, and the TX
attenuation stays at its lowest-power settings. A second libiio context watches the RX path to
tell whether the radio under test is sending.

    python -m pytest tests/hardware/test_pluto_with_device.py --pluto-uri ip:192.168.2.1

The TX switch test needs nothing more (digital loopback). The start-up calibration test needs an
RF path and ``--pluto-ue-uri``: a second Pluto whose RX is cabled from the first's TX through an
attenuator (configs/bench_pluto.yaml's bench; its ue0 ``link_gain_db`` should match the cabling),
or the same URI with the one Pluto's TX cabled into its own RX:

    python -m pytest tests/hardware/test_pluto_with_device.py --pluto-uri ip:192.168.2.1 --pluto-ue-uri ip:192.168.3.1

``calibrate_plutos`` and ``tx_switch_in_digital_loopback`` are what these tests run;
tests/hardware/test_device_checks.py runs them on emulated Plutos.
"""
from __future__ import annotations

import dataclasses

import adi
import numpy as np
import pytest

from hardware.config import RadioEntry
from hardware.drivers.pluto import PlutoRadio
from hardware.measured import close_all
from hardware.radio import RadioSettings
from testbed.config import load_config
from tests.hardware.device_checks import (PERIOD, check_calibration, check_tx_switch, latency_wait_s,
                                          start_up_calibration)
from tests.hardware.radio_contract import RadioContract
from tests.hardware.test_pluto import burst, snr_db, tone

pytestmark = pytest.mark.pluto_device

WATCH_SAMPLES = 8192
SWITCH_LATENCY_SAMPLES = PERIOD   # a new cyclic buffer plays from its first DMA block (docs/pluto.md)
SWITCH_MARGIN_SAMPLES = 4096


@pytest.fixture(scope="module")
def uri(request) -> str:
    return request.config.getoption("pluto_uri")


@pytest.fixture(scope="module")
def watcher(uri):
    """A second context on the same Pluto with the digital loopback on; mutes the TX at the end."""
    sdr = adi.Pluto(uri)
    sdr.loopback = 1
    sdr.rx_buffer_size = WATCH_SAMPLES
    yield sdr
    sdr.rx_destroy_buffer()
    sdr.tx_destroy_buffer()
    sdr.tx_hardwaregain_chan0 = -89.75
    sdr.loopback = 0
    sdr.close()


def heard_power(watcher) -> float:
    """Mean |IQ|^2 (full scale 1) of a fresh capture of the looped-back TX samples."""
    watcher.rx_destroy_buffer()
    x = np.asarray(watcher.rx()) / 2048.0
    return float(np.mean(np.abs(x) ** 2))


def device_radio(uri: str, limits, dry_run: bool = False, timeout_s: float = 2.0) -> PlutoRadio:
    return PlutoRadio("pluto", limits, RadioEntry(name="pluto", driver="pluto", role="bs", nodes=[0], uri=uri),
                      dry_run=dry_run, timeout_s=timeout_s)


class TestPlutoDeviceContract(RadioContract):
    SETTINGS = RadioSettings(center_hz=2.44e9, sample_rate_hz=2e6, bandwidth_hz=2e6, tx_gain_db=-60.0, rx_gain_db=10.0)

    @pytest.fixture
    def radio(self, uri, watcher):
        r = device_radio(uri, self.LIMITS)
        r.watcher = watcher
        yield r
        if r._sdr is not None:                          # undo stall()
            r.timeout_s = 2.0
            r._sdr.ctx.set_timeout(2000)
        r.close()

    @pytest.fixture
    def dry_radio(self, uri, watcher):
        r = device_radio(uri, self.LIMITS, dry_run=True)
        r.watcher = watcher
        yield r
        r.close()

    def radiating(self, radio) -> bool:
        return heard_power(radio.watcher) > 1e-4     # digital loopback: the TX samples, before the DAC

    def stall(self, radio) -> None:
        """A real Pluto cannot be paused: a 1 ms timeout is shorter than any 4096-sample capture."""
        radio.timeout_s = 0.001
        radio._sdr.ctx.set_timeout(1)


def test_settings_round_trip(uri):
    with device_radio(uri, RadioContract.LIMITS) as r:
        s = RadioContract.SETTINGS
        r.configure(s)
        assert r._sdr.rx_lo == s.center_hz and r._sdr.tx_lo == s.center_hz
        assert r._sdr.gain_control_mode_chan0 == "manual"
        assert r._sdr.rx_hardwaregain_chan0 == s.rx_gain_db
        assert r._sdr.tx_hardwaregain_chan0 == -89.75          # muted until something is sent


def test_digital_loopback_tone(uri, watcher):
    with device_radio(uri, RadioContract.LIMITS) as r:
        r.configure(TestPlutoDeviceContract.SETTINGS)
        r.send(burst(tone(1024, 37, 0.5)))
        x = np.asarray(watcher.rx()) / 2048.0
        assert snr_db(x, 37 * WATCH_SAMPLES // 1024) > 30.0


def test_device_rejects_out_of_range(uri):
    with device_radio(uri, RadioContract.LIMITS) as r:
        with pytest.raises(ValueError, match="rx_gain_db=80.0"):
            r.configure(RadioSettings(2.44e9, 2e6, 2e6, -60.0, 80.0))


# --- calibration and TX switch latency (shared with tests/hardware/test_device_checks.py) -----------
def pluto_bench_config():
    """configs/bench_pluto.yaml, the bench these checks assume."""
    return load_config("bench_pluto")


def calibrate_plutos(bs_uri: str, ue_uri: str) -> dict:
    """The start-up calibration of bench_pluto's two radios on these Plutos (the same URI: one
    Pluto, TX cabled into its own RX), digital loopback off; checks every residual is within
    ``max_residual_cfo_hz`` and returns the calibration report."""
    config = pluto_bench_config()
    hw = config.hardware
    uris = {"bs0": bs_uri, "ue0": ue_uri}
    entries = [dataclasses.replace(e, uri=uris[e.name]) for e in hw.radios]
    config = dataclasses.replace(config, hardware=dataclasses.replace(hw, radios=tuple(entries)))
    radios: dict[str, PlutoRadio] = {}
    for e in entries:       # one Pluto for both: one radio under both names
        same = next((r for n, r in radios.items() if uris[n] == e.uri), None)
        radios[e.name] = same or PlutoRadio(e.name, hw.limits(), e, timeout_s=hw.timeout_s)
    pluto = {id(r): r for r in radios.values()}.values()
    looped = [r._sdr.loopback for r in pluto]
    for r in pluto:
        r._sdr.loopback = 0                      # RF: the crystals must meet
    try:
        return check_calibration(start_up_calibration(config, radios))
    finally:
        for r, was in zip(pluto, looped):
            r._sdr.loopback = was
        close_all(radios)


def tx_switch_in_digital_loopback(uri: str) -> dict:
    """Burst A, burst B, mute on one Pluto in digital loopback, each captured after the switch
    latency (SWITCH_LATENCY_SAMPLES + SWITCH_MARGIN_SAMPLES at the sample rate): only what is on air now."""
    settings = TestPlutoDeviceContract.SETTINGS
    with device_radio(uri, RadioContract.LIMITS) as r:
        r.configure(settings)
        was = r._sdr.loopback
        r._sdr.loopback = 1
        try:
            return check_tx_switch(r, r, latency_wait_s(SWITCH_LATENCY_SAMPLES, SWITCH_MARGIN_SAMPLES,
                                                        settings.sample_rate_hz))
        finally:
            r._sdr.loopback = was


def test_tx_switch_latency_in_digital_loopback(uri):
    figures = tx_switch_in_digital_loopback(uri)
    assert figures["B"]["wanted_db"] > 20.0 and figures["mute"]["unwanted_db"] < 10.0


@pytest.mark.pluto_pair
def test_start_up_calibration_leaves_a_residual_within_max_residual_cfo_hz(request, uri):
    report = calibrate_plutos(uri, request.config.getoption("pluto_ue_uri"))
    assert abs(report["bs0"]["residual_hz"]) <= pluto_bench_config().hardware.max_residual_cfo_hz
