"""A radio in pure Python on a shared :class:`hardware.emulated.medium.RfMedium`, with injectable faults.

TX IQ goes on the medium scaled by the TX gain; captures are what the medium delivers, scaled
by the RX gain and passed through the radio's receive chain (``hardware.emulated.impairments``:
phase noise, IQ imbalance, DC offset, the 12-bit ADC's saturation). The radio's crystal
(``impairments.crystal_ppm``) puts both LOs and its sample clock off by the same ratio;
``correct_lo`` corrects the crystal the radio believes it has, as a Pluto's ``xo_correction`` does. ``inject_fault("timeout")`` makes one later operation raise ``RadioTimeout``;
``inject_fault("stale")`` makes one later capture return the samples of the previous capture
(what a radio whose kernel still holds old RX blocks delivers);
``inject_fault("disconnect")`` makes the radio vanish like an unplugged USB device: it stops
radiating and every later operation, mute included, raises ``RadioError``.
"""
from __future__ import annotations

import numpy as np

from hardware.config import RadioEntry
from hardware.emulated.impairments import Impairments, Receiver, clock_ratio
from hardware.emulated.medium import RfMedium
from hardware.radio import Radio, RadioError, RadioSettings, RadioTimeout, TxLimits
from sim.units import db_to_amplitude

__all__ = ["MockRadio", "FAULTS"]

FAULTS = ("timeout", "disconnect", "stale")


class MockRadio(Radio):
    """A radio whose antenna is a port called ``name`` on ``medium``."""

    def __init__(self, name: str, limits: TxLimits, entry: RadioEntry | None = None, dry_run: bool = False,
                 *, medium: RfMedium, impairments: Impairments | None = None, seed: int = 0):
        super().__init__(name, limits, dry_run)
        self.entry = entry
        self.medium = medium
        self.port = medium.attach(name)
        self._fault: str | None = None
        self._fault_countdown = 0
        self._disconnected = False
        self._previous_capture: np.ndarray | None = None
        self.impairments = impairments or Impairments()
        self.receiver = Receiver(self.impairments, medium.sample_rate_hz, seed)
        self.correction_ppm = 0.0       # the crystal error the radio believes it has (correct_lo), ppm

    def inject_fault(self, kind: str, after_calls: int = 0) -> None:
        """Make the operation ``after_calls`` operations from now (configure/send/capture) fail."""
        if kind not in FAULTS:
            raise ValueError(f"fault kind {kind!r} unknown; choose from {list(FAULTS)}")
        if after_calls < 0:
            raise ValueError(f"after_calls must be >= 0, got {after_calls}")
        self._fault, self._fault_countdown = kind, after_calls

    def _operation(self, what: str) -> str | None:
        """Count one operation and raise the injected fault when it is due; returns "stale" when
        a stale capture is due."""
        if self._disconnected:
            raise RadioError(f"{self.name}: radio disconnected ({what} failed)")
        if self._fault is None:
            return None
        if self._fault_countdown > 0:
            self._fault_countdown -= 1
            return None
        if self._fault == "stale" and what != "capture":
            return None
        kind, self._fault = self._fault, None
        if kind == "stale":
            return kind
        if kind == "timeout":
            raise RadioTimeout(f"{self.name}: {what} timed out (injected fault)")
        self._disconnected = True
        self.port.mute()
        raise RadioError(f"{self.name}: radio disconnected during {what} (injected fault)")

    @property
    def clock_ratio(self) -> float:
        """Actual over believed reference: what the LOs and the sample clock are off by."""
        return clock_ratio(self.impairments.crystal_ppm, self.correction_ppm)

    def _state(self) -> dict:
        s = self.settings
        lo_hz = s.center_hz * self.clock_ratio
        return {"tx_lo_hz": lo_hz, "rx_lo_hz": lo_hz, "sample_rate_hz": s.sample_rate_hz,
                "clock_ratio": self.clock_ratio}

    def correct_lo(self, offset_hz: float) -> None:
        """Move both LOs down by ``offset_hz`` by correcting the crystal the radio believes it
        has (the sample clock follows, as with a Pluto's xo_correction)."""
        self._check_open()
        if self.settings is None:
            raise RadioError(f"{self.name}: configure() before correct_lo()")
        ratio = self.clock_ratio - float(offset_hz) / self.settings.center_hz
        self.correction_ppm = ((1 + self.impairments.crystal_ppm * 1e-6) / ratio - 1) * 1e6

    # --- driver hooks -----------------------------------------------------------------
    def _configure(self, settings: RadioSettings) -> None:
        self._operation("configure")

    def _send(self, iq: np.ndarray, cyclic: bool) -> None:
        self._operation("send")
        gain = np.float32(db_to_amplitude(self.settings.tx_gain_db))
        self.port.transmit(iq * gain, cyclic, self._state())

    def _capture(self, num_samples: int) -> np.ndarray:
        stale = self._operation("capture") == "stale"
        previous = self._previous_capture
        if stale and previous is not None and previous.size == num_samples:
            return previous
        gain = np.float32(db_to_amplitude(self.settings.rx_gain_db))
        self._previous_capture = self.receiver.apply(self.port.receive(num_samples, self._state()) * gain)
        return self._previous_capture

    def _mute(self) -> None:
        self.port.mute()
        if self._disconnected:
            raise RadioError(f"{self.name}: radio disconnected; cannot confirm mute")

    def _close(self) -> None:
        self.medium.detach(self.name)
