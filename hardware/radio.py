"""The radio interface every driver implements, its errors and its hard transmit limits.

Drivers subclass :class:`Radio` and implement the underscored methods. The public methods
check limits and the safety token first, so a driver cannot be made to radiate a burst that
did not come from :class:`hardware.transmitter.Transmitter` (which only accepts powers that
passed the safety filter, ``sim.safety.SafePowers``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.safety import SafetyViolation

__all__ = ["Radio", "RadioError", "RadioTimeout", "SafetyViolation", "RadioSettings", "TxLimits", "TxBurst"]

_BURST_KEY = object()  # shared only with hardware.transmitter


class RadioError(RuntimeError):
    """A radio failed, disconnected or answered nonsense. Mute, save data, and stop."""


class RadioTimeout(RadioError):
    """A radio did not answer within its timeout."""


@dataclass(frozen=True)
class RadioSettings:
    """One radio's RF settings."""

    center_hz: float          # TX and RX LO in Hz
    sample_rate_hz: float     # baseband sample rate in Hz (samples/s)
    bandwidth_hz: float       # analog RF bandwidth in Hz
    tx_gain_db: float         # TX gain in dB (Pluto: -89.75..0, i.e. minus the attenuation)
    rx_gain_db: float         # RX gain in dB (manual gain control)


@dataclass(frozen=True)
class TxLimits:
    """Hard limits from the config; anything outside raises ``SafetyViolation``, never clips."""

    max_tx_gain_db: float
    allowed_center_hz: tuple[float, ...]
    sample_rate_range_hz: tuple[float, float]
    max_amplitude: float = 1.0   # peak |IQ| relative to full scale

    def check_settings(self, s: RadioSettings) -> None:
        if s.tx_gain_db > self.max_tx_gain_db:
            raise SafetyViolation(
                f"tx_gain_db={s.tx_gain_db} exceeds the hard limit max_tx_gain_db={self.max_tx_gain_db}")
        if not any(abs(s.center_hz - f) < 0.5 for f in self.allowed_center_hz):
            raise SafetyViolation(
                f"center_hz={s.center_hz:.0f} is not in allowed_center_hz {list(self.allowed_center_hz)}")
        lo, hi = self.sample_rate_range_hz
        if not lo <= s.sample_rate_hz <= hi:
            raise SafetyViolation(f"sample_rate_hz={s.sample_rate_hz:.0f} outside sample_rate_range_hz [{lo:.0f}, {hi:.0f}]")

    def check_iq(self, iq: np.ndarray) -> None:
        peak = float(np.max(np.abs(iq))) if iq.size else 0.0
        if peak > self.max_amplitude:
            raise SafetyViolation(f"burst peak amplitude {peak:.3f} exceeds max_amplitude={self.max_amplitude}")


@dataclass(frozen=True, eq=False)
class TxBurst:
    """IQ that the Transmitter built from safety-filtered powers. complex64 [num_samples]."""

    iq: np.ndarray
    cyclic: bool = False
    _key: object = None

    def __post_init__(self):
        if self._key is not _BURST_KEY:
            raise SafetyViolation("TxBurst can only be created by hardware.transmitter.Transmitter")


class Radio:
    """Base of every driver: limit checks, safety token, idempotent mute, context manager."""

    def __init__(self, name: str, limits: TxLimits, dry_run: bool = False):
        self.name = name
        self.limits = limits
        self.dry_run = dry_run
        self.settings: RadioSettings | None = None
        self._muted = True
        self._closed = False

    # --- public API -------------------------------------------------------------------
    def configure(self, settings: RadioSettings) -> None:
        """Check the hard limits, then apply the settings."""
        self._check_open()
        self.limits.check_settings(settings)
        self._configure(settings)
        self.settings = settings

    def send(self, burst: TxBurst) -> None:
        """Transmit a burst built by the Transmitter (one-shot, or repeated if cyclic)."""
        self._check_open()
        if not isinstance(burst, TxBurst):
            raise SafetyViolation(f"{self.name}: send() takes a TxBurst from the Transmitter, got {type(burst).__name__}")
        if self.settings is None:
            raise RadioError(f"{self.name}: configure() before send()")
        self.limits.check_settings(self.settings)
        self.limits.check_iq(burst.iq)
        if self.dry_run:
            return
        self._muted = False
        self._send(np.ascontiguousarray(burst.iq, dtype=np.complex64), burst.cyclic)

    def capture(self, num_samples: int) -> np.ndarray:
        """Receive num_samples complex64 samples at the configured rate."""
        self._check_open()
        if self.settings is None:
            raise RadioError(f"{self.name}: configure() before capture()")
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        return self._capture(int(num_samples))

    def mute(self) -> None:
        """Stop transmitting. Idempotent. Marks the radio muted first; a driver error still
        propagates, since a radio that cannot be reached may still be on air."""
        if self._closed:
            return
        self._muted = True
        self._mute()

    def close(self) -> None:
        """Mute, then release the device. Idempotent."""
        if self._closed:
            return
        try:
            self.mute()
        finally:
            self._closed = True
            self._close()

    def correct_lo(self, offset_hz: float) -> None:
        """Move this radio's LOs down by ``offset_hz``: how far above where it should be it was
        measured (negative: below). Drivers that can override this; the others raise."""
        raise RadioError(f"{self.name}: the {type(self).__name__} driver cannot correct its LO")

    @property
    def muted(self) -> bool:
        return self._muted

    @property
    def overflows(self) -> int:
        """RX overflows the device reported since open (samples it dropped); drivers that see them override."""
        return 0

    @property
    def underflows(self) -> int:
        """TX underflows the device reported since open (it ran out of samples); drivers that see them override."""
        return 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RadioError(f"{self.name}: radio is closed")

    # --- driver hooks -----------------------------------------------------------------
    def _configure(self, settings: RadioSettings) -> None:
        raise NotImplementedError

    def _send(self, iq: np.ndarray, cyclic: bool) -> None:
        raise NotImplementedError

    def _capture(self, num_samples: int) -> np.ndarray:
        raise NotImplementedError

    def _mute(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError
