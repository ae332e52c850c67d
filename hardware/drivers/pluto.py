"""ADALM-Pluto driver on pyadi-iio (``adi.Pluto(uri)``, uri ``ip:...`` or ``usb:...``).

Every setting is checked against the Pluto's range before it is written and read back after,
so nothing the device ignores or quantises goes unnoticed (pyadi-iio silently skips the RX gain
unless the gain control mode is ``manual``; the AD936x truncates TX attenuation to 0.25 dB).
libiio and pyadi-iio errors (refused connection, broken pipe, timeouts, "No device found") become
:class:`RadioError` / :class:`RadioTimeout` naming the URI.
"""
from __future__ import annotations

import errno
import math
import time
import traceback
from contextlib import contextmanager

import numpy as np

from hardware.radio import Radio, RadioError, RadioSettings, RadioTimeout, TxLimits

__all__ = ["PlutoRadio", "check_pluto_settings", "TX_FULL_SCALE", "RX_FULL_SCALE", "TX_GAIN_RANGE_DB",
           "TX_GAIN_STEP_DB", "RX_GAIN_RANGES_DB", "SAMPLE_RATE_RANGE_HZ", "BANDWIDTH_RANGE_HZ", "CENTER_RANGE_HZ"]

TX_FULL_SCALE = 32767.0                 # int16 DAC sample value of amplitude 1.0 (le:S16/16)
RX_FULL_SCALE = 2048.0                  # 12-bit ADC sample value of amplitude 1.0 (le:S12/16)
TX_GAIN_RANGE_DB = (-89.75, 0.0)        # TX gain = minus the attenuation, dB
TX_GAIN_STEP_DB = 0.25
SAMPLE_RATE_RANGE_HZ = (521e3, 61.44e6)  # pyadi-iio refuses below 521 kS/s
BANDWIDTH_RANGE_HZ = (200e3, 20e6)       # stock AD9363 (an AD9364-mode Pluto reaches 56 MHz)
CENTER_RANGE_HZ = (325e6, 3.8e9)         # stock AD9363 (an AD9364-mode Pluto tunes 70 MHz-6 GHz)
RX_GAIN_RANGES_DB = ((1.3e9, (-1, 73)), (math.inf, (-3, 71)))   # (LO below, whole-dB RX gain range): AD936x gain tables
STATUS_REG = 0x80000088                 # AXI DAC core status (ADI_REG_STATUS), write 1 to clear
TX_UNDERFLOW = 1 << 0                   # cf-ad9361-dds-core-lpc: the DAC ran out of samples
_TIMEOUT_ERRNOS = (errno.ETIMEDOUT, errno.EAGAIN)


def check_pluto_settings(s: RadioSettings) -> None:
    """Raise ValueError naming the field and the Pluto's range for anything it cannot do.

    The driver calls it before writing; ``hardware.config`` calls it while a config loads.
    """
    lo, hi = TX_GAIN_RANGE_DB
    steps = s.tx_gain_db / TX_GAIN_STEP_DB
    if not lo <= s.tx_gain_db <= hi or not math.isclose(steps, round(steps)):
        raise ValueError(f"tx_gain_db={s.tx_gain_db} must be in [{lo}, {hi}] dB in {TX_GAIN_STEP_DB} dB steps")
    for field, value, (lo, hi) in (("sample_rate_hz", s.sample_rate_hz, SAMPLE_RATE_RANGE_HZ),
                                   ("bandwidth_hz", s.bandwidth_hz, BANDWIDTH_RANGE_HZ),
                                   ("center_hz", s.center_hz, CENTER_RANGE_HZ)):
        if not lo <= value <= hi:
            raise ValueError(f"{field}={value:.0f} outside the Pluto's range [{lo:.0f}, {hi:.0f}] Hz")
    lo, hi = next(gains for below_hz, gains in RX_GAIN_RANGES_DB if s.center_hz < below_hz)
    if not lo <= s.rx_gain_db <= hi or s.rx_gain_db != int(s.rx_gain_db):
        raise ValueError(f"rx_gain_db={s.rx_gain_db} must be a whole number of dB in [{lo}, {hi}] "
                         f"(the Pluto's RX gain table at center_hz={s.center_hz:.0f} Hz)")


class PlutoRadio(Radio):
    """One ADALM-Pluto. ``entry`` is the radio's ``hardware.config.RadioEntry`` (uses ``uri``).

    ``timeout_s``: libiio timeout of every operation, s (``hardware.timeout_s`` of the config).
    """

    def __init__(self, name: str, limits: TxLimits, entry, dry_run: bool = False, timeout_s: float = 2.0):
        super().__init__(name, limits, dry_run)
        self.timeout_s = timeout_s
        self.uri = getattr(entry, "uri", "")
        if not self.uri:
            raise RadioError(f"{name}: the pluto driver needs the radio entry's uri (e.g. ip:192.168.2.1 or usb:1.2.5)")
        import adi  # imported here: pyadi-iio is an optional dependency (extra "radio")

        try:
            self._sdr = adi.Pluto(self.uri)
        except Exception as e:    # pyadi-iio raises a bare Exception("No device found")
            raise RadioError(f"{name}: no Pluto answers at {self.uri} ({e}); check the cable or IP address "
                             "and that no other program holds the device") from e
        with self._io("set the timeout"):
            self._sdr.ctx.set_timeout(max(1, round(timeout_s * 1000)))
        with self._io("disabling the DDS"):
            self._sdr.disable_dds()                     # a Pluto boots radiating its DDS tones
        with self._io("setting one kernel RX buffer"):
            self._sdr._rxadc.set_kernel_buffers_count(1)   # each capture's new buffer records one block
        self._tx_gain_on_device_db: float | None = None   # None: unknown
        self._tx_buffer: tuple[int, bool] | None = None     # (num_samples, cyclic) of the open TX buffer
        self._underflows = 0
        self._poll_underflow()                              # clear what was latched before us

    @property
    def underflows(self) -> int:
        """TX underflows the DAC core latched since open (one-shot bursts pushed too late; a cyclic
        buffer never runs dry), read from its status register at every send and mute. RX overflows
        stay 0: every capture is one fresh single-block buffer, one contiguous DMA transfer, so the
        overflow bit the core latches once that block is full loses nothing of it."""
        return self._underflows

    def _poll_underflow(self) -> None:
        """Count and clear the TX core's underflow bit."""
        with self._io("reading the TX status register"):
            if self._sdr._txdac.reg_read(STATUS_REG) & TX_UNDERFLOW:
                self._underflows += 1
                self._sdr._txdac.reg_write(STATUS_REG, TX_UNDERFLOW)

    # --- error wrapping ---------------------------------------------------------------
    @contextmanager
    def _io(self, what: str):
        """Turn libiio/pyadi-iio failures into RadioError/RadioTimeout naming the URI.

        libiio 0.24's network backend reports a timeout as EPIPE, like a dead link: an EPIPE
        that took at least the timeout counts as a timeout.
        """
        start_s = time.monotonic()
        try:
            yield
        except (RadioError, ValueError):
            raise
        except Exception as e:
            # the frames of the failed call hold libiio buffers: free them now, so their dead
            # connections close while the error (and its traceback) is still being handled
            traceback.clear_frames(e.__traceback__)
            self._raise(what, e, time.monotonic() - start_s)

    def _raise(self, what: str, e: Exception, elapsed_s: float):
        if isinstance(e, OSError):
            timed_out = e.errno == errno.EPIPE and elapsed_s >= 0.9 * self.timeout_s
            if e.errno in _TIMEOUT_ERRNOS or timed_out:
                raise RadioTimeout(f"{self.name}: {what} on the Pluto at {self.uri} timed out ({e})") from e
            raise RadioError(f"{self.name}: {what} on the Pluto at {self.uri} failed ({e}); "
                             "the radio may have been unplugged or rebooted") from e
        raise RadioError(f"{self.name}: {what} on the Pluto at {self.uri} failed ({e!r})") from e

    def _write(self, field: str, attr: str, value) -> None:
        """Set one pyadi-iio property; a device refusal (EINVAL) becomes ValueError naming the field."""
        try:
            with self._io(f"setting {field}"):
                setattr(self._sdr, attr, value)
        except RadioError as e:
            cause = e.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EINVAL:
                raise ValueError(f"{self.name}: {field}={value} refused by the Pluto at {self.uri} "
                                 f"(outside the device's range{self._available(attr)})") from cause
            raise

    def _available(self, attr: str) -> str:
        """The device's own ``*_available`` range for a property, for error messages."""
        chan, output, name = {
            "rx_lo": ("altvoltage0", True, "frequency_available"),
            "tx_lo": ("altvoltage1", True, "frequency_available"),
            "rx_hardwaregain_chan0": ("voltage0", False, "hardwaregain_available"),
            "rx_rf_bandwidth": ("voltage0", False, "rf_bandwidth_available"),
            "tx_rf_bandwidth": ("voltage0", True, "rf_bandwidth_available"),
        }.get(attr, (None, None, None))
        if chan is None:
            return ""
        try:
            phy = self._sdr.ctx.find_device("ad9361-phy")
            return " " + phy.find_channel(chan, output).attrs[name].value
        except Exception:
            return ""

    # --- settings ---------------------------------------------------------------------
    def _configure(self, s: RadioSettings) -> None:
        check_pluto_settings(s)
        sdr = self._sdr
        old = self.settings
        self._set_tx_gain(s.tx_gain_db if not self._muted else TX_GAIN_RANGE_DB[0])
        self._write("center_hz", "rx_lo", int(round(s.center_hz)))
        self._write("center_hz", "tx_lo", int(round(s.center_hz)))
        if old is None or old.sample_rate_hz != s.sample_rate_hz:
            self._write("sample_rate_hz", "sample_rate", int(round(s.sample_rate_hz)))
        self._write("bandwidth_hz", "rx_rf_bandwidth", int(round(s.bandwidth_hz)))
        self._write("bandwidth_hz", "tx_rf_bandwidth", int(round(s.bandwidth_hz)))
        self._write("rx gain control mode", "gain_control_mode_chan0", "manual")
        self._write("rx_gain_db", "rx_hardwaregain_chan0", float(s.rx_gain_db))
        with self._io("reading the settings back"):
            got = {"center_hz (RX LO)": (sdr.rx_lo, s.center_hz, 1e3),
                   "center_hz (TX LO)": (sdr.tx_lo, s.center_hz, 1e3),
                   "sample_rate_hz": (sdr.sample_rate, s.sample_rate_hz, 1e-3 * s.sample_rate_hz),
                   "bandwidth_hz": (sdr.rx_rf_bandwidth, s.bandwidth_hz, 1e-2 * s.bandwidth_hz),
                   "rx gain control mode": (sdr.gain_control_mode_chan0, "manual", None),
                   "rx_gain_db": (sdr.rx_hardwaregain_chan0, s.rx_gain_db, 1e-6)}
        for field, (value, want, tol) in got.items():
            if (value != want) if tol is None else abs(float(value) - want) > tol:
                raise RadioError(f"{self.name}: the Pluto at {self.uri} reads back {field}={value}, "
                                 f"asked for {want}")

    def _set_tx_gain(self, gain_db: float) -> None:
        """Write the TX gain (= minus the attenuation) and check the read-back."""
        self._write("tx_gain_db", "tx_hardwaregain_chan0", float(gain_db))
        with self._io("reading tx_gain_db back"):
            got = float(self._sdr.tx_hardwaregain_chan0)
        if abs(got - gain_db) > 1e-6:
            raise RadioError(f"{self.name}: the Pluto at {self.uri} reads back tx_gain_db={got}, asked for {gain_db}")
        self._tx_gain_on_device_db = gain_db

    # --- TX / RX ----------------------------------------------------------------------
    def _send(self, iq: np.ndarray, cyclic: bool) -> None:
        sdr = self._sdr
        if self._tx_gain_on_device_db != self.settings.tx_gain_db:
            self._set_tx_gain(self.settings.tx_gain_db)
        samples = np.round(iq.astype(np.complex128) * TX_FULL_SCALE)
        self._poll_underflow()
        with self._io("transmitting"):
            if cyclic or self._tx_buffer != (len(samples), False):    # else push into the open buffer
                self._tx_buffer = None
                sdr.tx_destroy_buffer()
                sdr.tx_cyclic_buffer = cyclic
            sdr.tx(samples)
        self._tx_buffer = (len(samples), cyclic)

    def _capture(self, num_samples: int) -> np.ndarray:
        """A buffer recorded after this call began: the RX buffer is recreated every time, since
        an open one holds blocks that may predate a TX change of any radio on the bench (this
        driver cannot know the others'). One kernel block (set at open) keeps that cheap."""
        sdr = self._sdr
        with self._io(f"capturing {num_samples} samples"):
            sdr.rx_destroy_buffer()
            sdr.rx_buffer_size = num_samples
            x = sdr.rx()
        return (np.asarray(x) / RX_FULL_SCALE).astype(np.complex64)

    def _mute(self) -> None:
        """Destroy the TX buffer, disable the DDS (the kernel re-selects it when a TX buffer
        closes), then set the lowest TX gain.

        On a dead link this raises ``RadioError`` (the ``Radio.mute`` contract): a cyclic buffer
        plays on until the Pluto's iiod notices the lost connection, so the user must know.
        """
        self._tx_buffer = None
        self._tx_gain_on_device_db = None
        try:
            self._poll_underflow()
            with self._io("muting"):
                self._sdr.tx_destroy_buffer()
                self._sdr.disable_dds()
            self._set_tx_gain(TX_GAIN_RANGE_DB[0])
        except RadioError as e:
            raise RadioError(f"{self.name}: could not confirm the mute of the Pluto at {self.uri}; it may still "
                             f"transmit until its iiod drops the connection: {e}") from e

    # --- crystal ----------------------------------------------------------------------
    def correct_lo(self, offset_hz: float) -> int:
        """Move the LOs (and the sample clock, same crystal) down by ``offset_hz`` at the current
        center: ``offset_hz`` is how far this radio's LO was measured above where it should be
        (negative: below). Writes ad9361-phy ``xo_correction`` = xo × (1 + offset/center), the
        reference the AD9361 then believes it has, and retunes both LOs. Returns the new value, Hz;
        ValueError outside the Pluto's ``xo_correction_available`` (±200 ppm)."""
        if self.settings is None:
            raise RadioError(f"{self.name}: configure the Pluto at {self.uri} before correcting its LO")
        center_hz = self.settings.center_hz
        with self._io("reading xo_correction"):
            xo = self._sdr.ctx.find_device("ad9361-phy").attrs["xo_correction"]
            xo_hz = round(float(xo.value) * (1 + offset_hz / center_hz))
        try:
            with self._io("writing xo_correction"):
                xo.value = str(xo_hz)
        except RadioError as e:
            cause = e.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EINVAL:
                raise ValueError(f"{self.name}: LO offset {offset_hz:.0f} Hz needs xo_correction={xo_hz} Hz, outside "
                                 "the Pluto's range (xo_correction_available, about ±200 ppm)") from cause
            raise
        self._write("center_hz", "rx_lo", int(round(center_hz)))   # retune on the new reference
        self._write("center_hz", "tx_lo", int(round(center_hz)))
        return xo_hz

    def _close(self) -> None:
        """Destroy the buffers, then the context (in that order: libiio needs the context alive)."""
        sdr, self._sdr = self._sdr, None
        try:
            sdr.rx_destroy_buffer()
            sdr.tx_destroy_buffer()
        finally:
            sdr.close()
