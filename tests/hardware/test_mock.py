"""The mock radio (contract suite, faults) and the shared RF medium (gain, CFO, delay, noise,
interferers, one-shot bursts)."""
from __future__ import annotations

import numpy as np
import pytest

from hardware.emulated.medium import RfMedium
from hardware.emulated.mock import MockRadio
from hardware.radio import RadioError, RadioTimeout
from tests.hardware.radio_contract import RadioContract, safe_powers

FS_HZ = 2e6


class TestMockContract(RadioContract):
    @pytest.fixture
    def medium(self):
        return RfMedium(FS_HZ, noise_fs=1e-8, seed=0)

    @pytest.fixture
    def radio(self, medium):
        radio = MockRadio("mock0", self.LIMITS, medium=medium)
        yield radio
        radio.close()

    @pytest.fixture
    def dry_radio(self, medium):
        radio = MockRadio("mock_dry", self.LIMITS, dry_run=True, medium=medium)
        yield radio
        radio.close()

    def radiating(self, radio):
        return radio.port.transmitting

    def stall(self, radio):
        radio.inject_fault("timeout")


def tone(freq_cycles: float, n: int, amp: float = 1.0) -> np.ndarray:
    return (amp * np.exp(2j * np.pi * freq_cycles * np.arange(n))).astype(np.complex64)


@pytest.fixture
def pair():
    medium = RfMedium(FS_HZ, noise_fs=0.0, seed=1)
    return medium, medium.attach("tx"), medium.attach("rx")


def test_link_gain_scales_power(pair):
    medium, tx, rx = pair
    medium.set_link("tx", "rx", gain_db=-20.0)
    tx.transmit(tone(1 / 64, 64), cyclic=True)
    y = rx.receive(4096)
    assert np.mean(np.abs(y) ** 2) == pytest.approx(1e-2, rel=1e-4)


def test_cfo_shifts_frequency_and_delay_shifts_samples(pair):
    medium, tx, rx = pair
    x = (np.random.default_rng(0).standard_normal(512) + 0j).astype(np.complex64)
    medium.set_link("tx", "rx", delay_samples=7)
    tx.transmit(x, cyclic=True)
    y = rx.receive(512)                         # clock starts at 0 = the instant of transmit
    np.testing.assert_allclose(y, np.roll(x, 7), atol=1e-6)
    medium.set_link("tx", "rx", cfo_hz=FS_HZ / 128, delay_samples=0)
    tx.transmit(np.ones(64, np.complex64), cyclic=True)
    y = rx.receive(1024)
    peak = np.argmax(np.abs(np.fft.fft(y)))
    assert peak == 1024 // 128


def test_lo_difference_shifts_like_cfo(pair):
    medium, tx, rx = pair
    tx.transmit(np.ones(64, np.complex64), cyclic=True, state={"tx_lo_hz": 2.44e9 + FS_HZ / 64})
    y = rx.receive(1024, state={"rx_lo_hz": 2.44e9})
    assert np.argmax(np.abs(np.fft.fft(y))) == 1024 // 64


def test_one_shot_burst_plays_once(pair):
    medium, tx, rx = pair
    tx.transmit(np.ones(100, np.complex64), cyclic=False)
    y = rx.receive(300)
    assert np.all(np.abs(y[:100]) == 1) and np.all(y[100:] == 0)
    assert np.all(rx.receive(300) == 0)


def test_noise_power_and_interferer_band():
    medium = RfMedium(FS_HZ, noise_fs=1e-4, seed=2)
    rx = medium.attach("rx")
    other = medium.attach("other")
    medium.set_interferer("inc", 100e3, 300e3, power_fs=1e-2, gain_db={"rx": -3.0})
    y = rx.receive(1 << 16)
    spec = np.abs(np.fft.fftshift(np.fft.fft(y))) ** 2 / y.size ** 2
    freqs = np.fft.fftshift(np.fft.fftfreq(y.size, 1 / FS_HZ))
    inside = (freqs >= 100e3) & (freqs < 300e3)
    assert spec[inside].sum() == pytest.approx(0.5e-2 + 1e-4 * 0.1, rel=0.05)
    assert spec[~inside].sum() == pytest.approx(1e-4 * 0.9, rel=0.05)
    quiet = other.receive(1 << 16)                 # not in the interferer's gain map
    assert np.mean(np.abs(quiet) ** 2) == pytest.approx(1e-4, rel=0.05)
    medium.remove_interferer("inc")
    assert np.mean(np.abs(rx.receive(1 << 16)) ** 2) == pytest.approx(1e-4, rel=0.05)


def test_several_radios_share_the_medium():
    medium = RfMedium(FS_HZ, noise_fs=0.0)
    limits = TestMockContract.LIMITS
    a, b, c = (MockRadio(n, limits, medium=medium) for n in ("a", "b", "c"))
    for r in (a, b, c):
        r.configure(TestMockContract.SETTINGS)
    TestMockContract().transmitter(a).transmit(safe_powers(), 0, np.full((1, 2), 0.5))
    heard_b, heard_c = b.capture(1024), c.capture(1024)
    # TX gain -30 dB, RX gain +30 dB: what b and c hear is what a sent
    sent = np.mean(np.abs(a.port._iq) ** 2) * 1e3
    assert np.mean(np.abs(heard_b) ** 2) == pytest.approx(sent, rel=1e-3)
    assert np.mean(np.abs(heard_c) ** 2) == pytest.approx(sent, rel=1e-3)
    a.close()
    assert np.all(b.capture(1024) == 0)


def test_timeout_fault_is_transient():
    radio = MockRadio("r", TestMockContract.LIMITS, medium=RfMedium(FS_HZ))
    radio.configure(TestMockContract.SETTINGS)
    radio.inject_fault("timeout", after_calls=1)
    radio.capture(256)
    with pytest.raises(RadioTimeout):
        radio.capture(256)
    assert radio.capture(256).shape == (256,)


def test_disconnect_stops_radiating_and_every_call_fails():
    medium = RfMedium(FS_HZ)
    radio = MockRadio("r", TestMockContract.LIMITS, medium=medium)
    radio.configure(TestMockContract.SETTINGS)
    TestMockContract().transmitter(radio).transmit(safe_powers(), 0, np.full((1, 2), 0.5))
    radio.inject_fault("disconnect")
    with pytest.raises(RadioError, match="disconnected"):
        radio.capture(256)
    assert not radio.port.transmitting
    with pytest.raises(RadioError):
        radio.configure(TestMockContract.SETTINGS)
    with pytest.raises(RadioError):
        radio.mute()
    assert radio.muted
    with pytest.raises(RadioError):
        radio.close()
    radio.close()                                  # already closed: no error


def test_unknown_fault_is_refused():
    radio = MockRadio("r", TestMockContract.LIMITS, medium=RfMedium(FS_HZ))
    with pytest.raises(ValueError, match="timeout"):
        radio.inject_fault("meltdown")
