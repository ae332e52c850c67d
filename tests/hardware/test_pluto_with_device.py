"""The Pluto driver on a real ADALM-Pluto. Runs only with ``--pluto-uri`` (e.g. ip:192.168.2.1).

Nothing leaves the radio: the AD936x's digital loopback (debug attribute ``loopback`` = 1) routes
the TX samples to the RX path inside the chip, so these tests need no cable, and the TX
attenuation stays at its lowest-power settings. A second libiio context watches the RX path to
tell whether the radio under test is sending.

    python -m pytest tests/hardware/test_pluto_with_device.py --pluto-uri ip:192.168.2.1
"""
from __future__ import annotations

import adi
import numpy as np
import pytest

from hardware.config import RadioEntry
from hardware.drivers.pluto import PlutoRadio
from hardware.radio import RadioSettings
from tests.hardware.radio_contract import RadioContract
from tests.hardware.test_pluto import burst, snr_db, tone

pytestmark = pytest.mark.pluto_device

WATCH_SAMPLES = 8192


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
