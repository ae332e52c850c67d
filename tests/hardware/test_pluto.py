"""The Pluto driver and the real pyadi-iio/libiio client against the IIOD emulator: attribute
round trips, out-of-range values, loopback SNR, interferers, the radio contract, and faults."""
from __future__ import annotations

import dataclasses
import errno
import os
import signal
import socket
import subprocess
import sys
import time

import adi
import numpy as np
import pytest

from hardware.config import RadioEntry
from hardware.emulated.iiod import IIODEmulator, serve
from hardware.emulated.medium import RfMedium
from hardware.drivers.pluto import PlutoRadio
from hardware.radio import _BURST_KEY, RadioError, RadioSettings, RadioTimeout, TxBurst, TxLimits
from tests.hardware.radio_contract import RadioContract

FS_HZ = 2e6
CENTER_HZ = 2.44e9
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def entry(uri: str, name: str = "pluto0") -> RadioEntry:
    return RadioEntry(name=name, driver="pluto", role="bs", nodes=[0], uri=uri)


def burst(iq: np.ndarray, cyclic: bool = True) -> TxBurst:
    """A burst as the Transmitter would make it (tests of the driver below the Transmitter)."""
    return TxBurst(iq.astype(np.complex64), cyclic=cyclic, _key=_BURST_KEY)


def tone(num_samples: int, bin_index: int, amplitude: float) -> np.ndarray:
    return amplitude * np.exp(2j * np.pi * bin_index * np.arange(num_samples) / num_samples)


def open_radio(emu: IIODEmulator, limits: TxLimits, name: str = "pluto0", **kw) -> PlutoRadio:
    return PlutoRadio(name, limits, entry(emu.uri, name), timeout_s=kw.pop("timeout_s", 0.5), **kw)


WIDE_LIMITS = TxLimits(max_tx_gain_db=0.0, allowed_center_hz=(CENTER_HZ, 915e6, 100e6),
                       sample_rate_range_hz=(1e5, 61.44e6), max_amplitude=1.0)


@pytest.fixture
def medium():
    return RfMedium(FS_HZ, noise_fs=1e-6, seed=3)


@pytest.fixture
def emu(medium):
    with IIODEmulator(medium, name="pluto0") as server:
        yield server


@pytest.fixture
def radio(emu):
    r = open_radio(emu, WIDE_LIMITS)
    yield r
    emu.stall(False)
    r.close()


# --- the contract suite of every driver -------------------------------------------------
class TestPlutoContract(RadioContract):
    @pytest.fixture
    def emulator(self):
        with IIODEmulator(RfMedium(FS_HZ, noise_fs=1e-8, seed=0), name="pluto0") as server:
            yield server

    @pytest.fixture
    def radio(self, emulator):
        r = open_radio(emulator, self.LIMITS)
        r.emulator = emulator
        yield r
        emulator.stall(False)
        r.close()

    @pytest.fixture
    def dry_radio(self, emulator):
        r = open_radio(emulator, self.LIMITS, dry_run=True)
        r.emulator = emulator
        yield r
        r.close()

    def radiating(self, radio):
        return radio.emulator.rf_port.transmitting

    def stall(self, radio):
        radio.emulator.stall()


# --- the real pyadi-iio against the emulator ---------------------------------------------
@pytest.fixture
def sdr(emu):
    dev = adi.Pluto(emu.uri)
    yield dev
    dev.rx_destroy_buffer()
    dev.tx_destroy_buffer()
    dev.close()


def test_pyadi_attribute_round_trips(sdr):
    sdr.rx_lo, sdr.tx_lo = 915_000_000, 2_400_000_000
    assert (sdr.rx_lo, sdr.tx_lo) == (915_000_000, 2_400_000_000)
    for rate in (600_000, 1_000_000, 2_000_000, 2_500_000, 10_000_000, 30_720_000, 600_000):
        sdr.sample_rate = rate                  # <= 2.083 MS/s goes through the FIR decimation path
        assert sdr.sample_rate == rate
    sdr.rx_rf_bandwidth, sdr.tx_rf_bandwidth = 1_000_000, 20_000_000
    assert (sdr.rx_rf_bandwidth, sdr.tx_rf_bandwidth) == (1_000_000, 20_000_000)
    for gain in (-89.75, -10.25, 0.0):
        sdr.tx_hardwaregain_chan0 = gain
        assert sdr.tx_hardwaregain_chan0 == gain
    sdr.tx_hardwaregain_chan0 = -10.1           # the AD936x truncates attenuation to 0.25 dB
    assert sdr.tx_hardwaregain_chan0 == -10.0
    sdr.gain_control_mode_chan0 = "manual"
    assert sdr.gain_control_mode_chan0 == "manual"
    for gain in (-1, 40, 73):                   # LO 915 MHz: the -1..73 dB table
        sdr.rx_hardwaregain_chan0 = gain
        assert sdr.rx_hardwaregain_chan0 == gain
    sdr.loopback = 1
    assert sdr.loopback == 1
    assert sdr.filter == [128, 4, 128, 4]      # the FIR pyadi-iio loaded for 600 kS/s


def test_pyadi_silently_ignores_rx_gain_outside_manual_mode(sdr):
    """Why the driver sets gain_control_mode first and reads the gain back."""
    sdr.gain_control_mode_chan0 = "slow_attack"
    before = sdr.rx_hardwaregain_chan0
    sdr.rx_hardwaregain_chan0 = before - 20     # no error, no effect
    assert sdr.rx_hardwaregain_chan0 == before


@pytest.mark.parametrize("attr, value", [
    ("rx_lo", 100_000_000), ("rx_lo", 4_000_000_000), ("tx_lo", 6_000_000_000),
    ("tx_hardwaregain_chan0", 1.0), ("tx_hardwaregain_chan0", -90.0),
    ("rx_rf_bandwidth", 30_000_000), ("tx_rf_bandwidth", 100_000),
])
def test_pyadi_out_of_range_is_rejected(sdr, attr, value):
    before = getattr(sdr, attr)
    with pytest.raises(OSError) as err:
        setattr(sdr, attr, value)
    assert err.value.errno == errno.EINVAL
    assert getattr(sdr, attr) == before


def test_pyadi_out_of_range_rx_gain_and_rate(sdr):
    sdr.gain_control_mode_chan0 = "manual"
    with pytest.raises(OSError, match="Invalid argument"):
        sdr.rx_hardwaregain_chan0 = 72          # LO 2.4 GHz: -3..71 dB
    phy_rx = sdr.ctx.find_device("ad9361-phy").find_channel("voltage0", False)
    with pytest.raises(OSError, match="Invalid argument"):
        phy_rx.attrs["sampling_frequency"].value = "1000000"   # below 2.083 MS/s needs the FIR
    with pytest.raises(ValueError):
        sdr.sample_rate = 500_000               # pyadi-iio's own floor


# --- the driver ----------------------------------------------------------------------------
def settings(**kw) -> RadioSettings:
    base = dict(center_hz=CENTER_HZ, sample_rate_hz=FS_HZ, bandwidth_hz=FS_HZ, tx_gain_db=-30.0, rx_gain_db=20.0)
    return RadioSettings(**{**base, **kw})


def test_configure_applies_everything(radio, emu):
    radio.configure(settings(center_hz=915e6, rx_gain_db=73.0))
    m = emu.model
    assert (m.rx_lo_hz, m.tx_lo_hz, m.sample_rate_hz) == (915_000_000, 915_000_000, 2_000_000)
    assert m.rx_gain_db == 73.0
    assert m.values[("iio:device0", ("in", "voltage0"), "gain_control_mode")] == "manual"
    assert m.tx_gain_db == -89.75               # muted until something is sent


@pytest.mark.parametrize("field, value, match", [
    ("tx_gain_db", -10.1, r"tx_gain_db=-10.1 must be in \[-89.75, 0.0\] dB in 0.25 dB steps"),
    ("tx_gain_db", -95.0, r"tx_gain_db=-95.0 must be in"),
    ("rx_gain_db", 10.5, r"rx_gain_db=10.5 must be a whole number"),
    ("sample_rate_hz", 1e5, r"sample_rate_hz=100000 outside the Pluto's range"),
    ("bandwidth_hz", 1e8, r"bandwidth_hz=100000000 outside"),
    ("center_hz", 100e6, r"center_hz=100000000 outside the Pluto's range \[325000000, 3800000000\] Hz"),
    ("rx_gain_db", 72.0, r"rx_gain_db=72.0 must be a whole number of dB in \[-3, 71\] .*center_hz=2440000000"),
])
def test_driver_range_errors_name_the_field(radio, field, value, match):
    with pytest.raises(ValueError, match=match):
        radio.configure(settings(**{field: value}))
    assert radio.settings is None


def test_device_refusal_names_field_and_device_range(radio):
    # the device's own refusal, written past check_pluto_settings (which refuses both values first)
    with pytest.raises(ValueError, match=r"center_hz=100000000 refused by the Pluto at ip:127.0.0.1:\d+ "
                                         r"\(outside the device's range \[325000000 1 3800000000\]\)"):
        radio._write("center_hz", "rx_lo", 100_000_000)
    radio._write("rx gain control mode", "gain_control_mode_chan0", "manual")
    with pytest.raises(ValueError, match=r"rx_gain_db=72.0 refused .*\[-3 1 71\]"):
        radio._write("rx_gain_db", "rx_hardwaregain_chan0", 72.0)


def test_silently_ignored_setting_is_caught_by_the_read_back(radio, emu):
    emu.model._writers[("ad9361-phy", "in", "hardwaregain")] = lambda *args: None   # a device that ignores it
    with pytest.raises(RadioError, match=r"reads back rx_gain_db=71, asked for 20.0"):
        radio.configure(settings())


def snr_db(x: np.ndarray, bin_index: int) -> float:
    """SNR of a tone on one DFT bin of a capture."""
    spectrum = np.abs(np.fft.fft(x)) ** 2 / x.size ** 2
    signal = spectrum[bin_index]
    return 10 * np.log10(signal / (spectrum.sum() - signal))


@pytest.mark.parametrize("snr_cfg_db", [0.0, 12.0, 30.0])
def test_loopback_snr_matches_the_emulator(radio, medium, snr_cfg_db):
    """SNR = tone power x TX gain x link gain / medium noise (RX gain scales both)."""
    n, amplitude, tx_gain_db = 16384, 0.5, -30.0
    noise_w = amplitude ** 2 * 10 ** ((tx_gain_db - snr_cfg_db) / 10)
    medium.set_noise(noise_w)
    radio.configure(settings(tx_gain_db=tx_gain_db, rx_gain_db=20.0))
    radio.send(burst(tone(1024, 37, amplitude)))
    x = radio.capture(n)
    assert snr_db(x, 37 * n // 1024) == pytest.approx(snr_cfg_db, abs=0.5)


def test_base_station_pluto_heard_by_ue_pluto_with_interferer():
    """Two emulated Plutos on one medium: the UE hears the BS through the link and the
    external interferer in its band, each at the configured power (within 0.5 dB)."""
    bs_emu, ue_emu = serve(2, sample_rate_hz=FS_HZ, noise_fs=1e-9, link_gain_db=-20.0)
    medium = bs_emu.medium
    medium.set_interferer("itf", CENTER_HZ + 300e3, CENTER_HZ + 500e3, 1e-5, {"pluto1": 0.0})
    bs = open_radio(bs_emu, WIDE_LIMITS, "pluto0")
    ue = open_radio(ue_emu, WIDE_LIMITS, "pluto1")
    try:
        for r in (bs, ue):
            r.configure(settings(tx_gain_db=-10.0, rx_gain_db=10.0))
        n = 16384
        bs.send(burst(tone(1024, -100, 0.5)))
        x = ue.capture(n)
        power = np.abs(np.fft.fft(x)) ** 2 / n ** 2              # per bin, full scale
        freqs = np.fft.fftfreq(n, 1 / FS_HZ)
        tone_bin = -100 * n // 1024
        rx_gain = 10 ** (10.0 / 10)
        expected_tone = 0.25 * 10 ** (-10 / 10) * 10 ** (-20 / 10) * rx_gain
        assert 10 * np.log10(power[tone_bin]) == pytest.approx(10 * np.log10(expected_tone), abs=0.5)
        band = (freqs >= 300e3) & (freqs < 500e3)
        noise_in_band = 1e-9 * rx_gain * band.sum() / n
        measured_itf = power[band].sum() - noise_in_band
        assert 10 * np.log10(measured_itf) == pytest.approx(10 * np.log10(1e-5 * rx_gain), abs=0.5)
    finally:
        for r in (bs, ue):
            r.close()
        for e in (bs_emu, ue_emu):
            e.stop()


def test_one_shot_plays_once_and_cyclic_repeats(radio, medium):
    medium.set_noise(1e-10)
    radio.configure(settings(tx_gain_db=0.0, rx_gain_db=0.0))
    iq = tone(2048, 5, 0.5)
    radio.send(burst(iq, cyclic=False))
    x = radio.capture(4096)
    assert np.mean(np.abs(x[:2048]) ** 2) == pytest.approx(0.25, rel=0.02)
    assert np.mean(np.abs(x[2048:]) ** 2) < 1e-6
    radio.send(burst(iq, cyclic=False))                          # pushed into the open buffer
    assert np.mean(np.abs(radio.capture(2048)) ** 2) == pytest.approx(0.25, rel=0.02)
    radio.send(burst(iq, cyclic=True))
    x = radio.capture(8192)
    assert np.mean(np.abs(x[-2048:]) ** 2) == pytest.approx(0.25, rel=0.02)


def test_mute_destroys_buffer_sets_lowest_gain_and_send_restores_it(radio, emu):
    radio.configure(settings(tx_gain_db=-20.0))
    radio.send(burst(tone(1024, 3, 0.5)))
    assert emu.rf_port.transmitting and emu.model.tx_gain_db == -20.0
    radio.mute()
    assert not emu.rf_port.transmitting and emu.model.tx_gain_db == -89.75
    radio.send(burst(tone(1024, 3, 0.5)))
    assert emu.rf_port.transmitting and emu.model.tx_gain_db == -20.0


def test_close_releases_every_connection(radio, emu):
    radio.configure(settings())
    radio.send(burst(tone(1024, 3, 0.5)))
    radio.capture(1024)
    assert len(emu._conns) == 3                                   # control, TX buffer, RX buffer
    radio.close()
    deadline = time.monotonic() + 5
    while emu._conns and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not emu._conns and not emu.rf_port.transmitting


# --- faults --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection_names_the_uri():
    uri = f"ip:127.0.0.1:{free_port()}"
    with pytest.raises(RadioError, match=f"no Pluto answers at {uri}"):
        PlutoRadio("pluto0", WIDE_LIMITS, entry(uri))


def test_missing_uri_is_a_clear_error():
    with pytest.raises(RadioError, match="needs the radio entry's uri"):
        PlutoRadio("pluto0", WIDE_LIMITS, object())


def test_stalled_emulator_raises_radio_timeout_then_recovers(radio, emu):
    radio.configure(settings())
    radio.capture(1024)
    emu.stall()
    start = time.monotonic()
    with pytest.raises(RadioTimeout, match=f"capturing 1024 samples on the Pluto at {emu.uri} timed out"):
        radio.capture(1024)
    assert time.monotonic() - start >= 0.45
    deadline = time.monotonic() + 5                      # the emulator drops the abandoned RX connection
    while emu._rx_readers and time.monotonic() < deadline:
        time.sleep(0.01)
    emu.stall(False)
    assert radio.capture(1024).shape == (1024,)


def test_emulator_killed_mid_run_raises_radio_error():
    proc = subprocess.Popen([sys.executable, "-m", "hardware.emulated.iiod"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        uri = proc.stdout.readline().strip()
        radio = PlutoRadio("pluto0", WIDE_LIMITS, entry(uri), timeout_s=2.0)
        radio.configure(settings())
        radio.send(burst(tone(1024, 3, 0.5)))
        radio.capture(1024)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        start = time.monotonic()
        with pytest.raises(RadioError, match=f"on the Pluto at {uri} failed") as err:
            radio.capture(1024)
        assert not isinstance(err.value, RadioTimeout) and time.monotonic() - start < 1.0
        with pytest.raises(RadioError, match=f"could not confirm the mute of the Pluto at {uri}"):
            radio.mute()                                    # a dead link: muted locally, reported
        assert radio.muted
        with pytest.raises(RadioError, match="could not confirm the mute"):
            radio.close()                                   # reported again, and the context released
        with pytest.raises(RadioError, match="radio is closed"):
            radio.capture(1024)
    finally:
        proc.kill()
        proc.wait()


def test_dry_run_configures_but_never_transmits(emu):
    r = open_radio(emu, WIDE_LIMITS, dry_run=True)
    try:
        r.configure(settings(tx_gain_db=-20.0))
        r.send(burst(tone(1024, 3, 0.5)))
        assert not emu.rf_port.transmitting and emu.model.tx_gain_db == -89.75
        assert emu.model.rx_lo_hz == CENTER_HZ
    finally:
        r.close()


def test_settings_out_of_hard_limits_never_reach_the_device(radio, emu):
    strict = dataclasses.replace(WIDE_LIMITS, max_tx_gain_db=-40.0)
    r = open_radio(emu, strict, name="strict")
    try:
        from hardware.radio import SafetyViolation
        with pytest.raises(SafetyViolation, match="max_tx_gain_db"):
            r.configure(settings(tx_gain_db=-30.0))
        assert emu.model.rx_lo_hz == 2_400_000_000              # untouched
    finally:
        r.close()


def test_digital_loopback_returns_the_tx_samples(sdr):
    """The AD936x digital loopback (debug loopback=1): RX = TX samples, no gain, no medium."""
    sdr.loopback = 1
    n = 1024
    iq = np.round(tone(n, 9, 0.5) * 32767)
    sdr.tx_cyclic_buffer = True
    sdr.tx(iq)
    sdr.rx_buffer_size = 2 * n
    x = np.asarray(sdr.rx()) / 2048.0
    np.testing.assert_allclose(x, np.tile(iq / 32767, 2), atol=1.5 / 2048)


# --- a Pluto as unkind as a real one: boot DDS tone, kernel RX buffers, crystal ------------------
def test_open_and_mute_disable_the_boot_dds_tone(medium):
    with IIODEmulator(medium, name="pluto0") as emu:
        assert emu.rf_port.transmitting                               # the boot DDS tone
        r = open_radio(emu, WIDE_LIMITS)
        try:
            assert not emu.rf_port.transmitting and not emu.model.dds_enabled
            phy_dds = adi.Pluto(emu.uri)                              # someone enables the DDS again
            phy_dds.dds_enabled = [1, 1, 1, 1]
            del phy_dds
            assert emu.rf_port.transmitting
            r.mute()
            assert not emu.rf_port.transmitting and not emu.model.dds_enabled
        finally:
            r.close()


def test_capture_after_another_radios_send_holds_it(medium):
    """bs sends while ue's RX buffer would still hold older blocks: the driver's capture holds only the present."""
    medium.set_noise(1e-10)
    with IIODEmulator(medium, name="bs") as bs_emu, IIODEmulator(medium, name="ue") as ue_emu:
        bs, ue = open_radio(bs_emu, WIDE_LIMITS, "bs"), open_radio(ue_emu, WIDE_LIMITS, "ue")
        try:
            for r in (bs, ue):
                r.configure(settings(tx_gain_db=0.0, rx_gain_db=0.0))
            for _ in range(3):
                assert np.mean(np.abs(ue.capture(4096)) ** 2) < 1e-6  # silence, buffer-sized captures
            bs.send(burst(tone(1024, 5, 0.5)))
            assert np.mean(np.abs(ue.capture(4096)) ** 2) == pytest.approx(0.25, rel=0.02)
            bs.mute()
            assert np.mean(np.abs(ue.capture(4096)) ** 2) < 1e-6
            assert ue_emu.kernel_buffers["cf-ad9361-lpc"] == 1
        finally:
            bs.close()
            ue.close()


def test_correct_lo_cancels_a_measured_crystal_offset(medium):
    """ue's crystal runs 20 ppm fast: bs's tone arrives about 49 kHz low; correct_lo of the measured
    offset brings it back to its bin."""
    medium.set_noise(1e-10)
    n, k = 4096, 64
    bin_hz = FS_HZ / n
    with IIODEmulator(medium, name="bs") as bs_emu, IIODEmulator(medium, name="ue", crystal_ppm=20.0) as ue_emu:
        bs, ue = open_radio(bs_emu, WIDE_LIMITS, "bs"), open_radio(ue_emu, WIDE_LIMITS, "ue")
        try:
            for r in (bs, ue):
                r.configure(settings(tx_gain_db=0.0, rx_gain_db=0.0))
            bs.send(burst(tone(n, k, 0.5)))

            def tone_hz() -> float:
                return np.fft.fftfreq(n, 1 / FS_HZ)[np.argmax(np.abs(np.fft.fft(ue.capture(n))))]
            offset_hz = k * bin_hz - tone_hz()                        # how far ue's LO sits above bs's
            assert offset_hz == pytest.approx(CENTER_HZ * 20e-6, abs=bin_hz)
            xo_hz = ue.correct_lo(offset_hz)
            assert xo_hz == ue_emu.model.xo_correction_hz == pytest.approx(40e6 * (1 + 20e-6), abs=40e6 * bin_hz / CENTER_HZ)
            assert abs(tone_hz() - k * bin_hz) <= bin_hz
            with pytest.raises(ValueError, match="xo_correction"):
                ue.correct_lo(CENTER_HZ * 1e-3)                       # 1000 ppm: beyond the Pluto's range
        finally:
            bs.close()
            ue.close()


def test_a_late_one_shot_push_is_counted_as_a_tx_underflow():
    """Realtime emulator: a one-shot burst pushed after the previous one ran out latches the TX
    core's underflow bit; the driver counts it (and clears it) at its next send or mute."""
    with IIODEmulator(RfMedium(FS_HZ, noise_fs=1e-8, seed=0), name="pluto0", realtime=True) as emu:
        radio = open_radio(emu, WIDE_LIMITS)
        try:
            radio.configure(RadioSettings(CENTER_HZ, FS_HZ, FS_HZ, tx_gain_db=-10.0, rx_gain_db=0.0))
            assert radio.underflows == 0
            one_shot = burst(tone(2048, 8, 0.3), cyclic=False)
            radio.send(one_shot)
            time.sleep(0.05)                       # it (1 ms) ran out long ago
            radio.send(one_shot)
            radio.mute()
            assert radio.underflows >= 1 and radio.overflows == 0
        finally:
            radio.close()
