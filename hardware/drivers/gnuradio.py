"""A radio behind the GNU Radio ZMQ bridge: one node of a bridge flowgraph (a USRP in ``uhd``
mode, an emulated radio in ``emulate`` mode). The sockets, clocking and protocol live in
``hardware.gnuradio_bridge.client.Bridge``, shared by the nodes of one flowgraph."""
from __future__ import annotations

import math

import numpy as np

from hardware.config import RadioEntry
from hardware.gnuradio_bridge.client import Bridge, endpoint_host
from hardware.gnuradio_bridge.curve import ClientKeys
from hardware.radio import Radio, RadioError, RadioSettings, TxLimits

__all__ = ["ZmqRadio"]


class ZmqRadio(Radio):
    """One node of a GNU Radio bridge flowgraph (a USRP in ``uhd`` mode, an emulated radio in
    ``emulate`` mode); the node has the radio's name. ``entry`` is the radio's
    ``hardware.config.RadioEntry``: ``control_address`` is the flowgraph's control endpoint (its
    host also serves the RX ports); ``tx_address`` / ``rx_address``, if not empty, must match
    the node's endpoints that the flowgraph reports (this side binds TX on the host of
    ``tx_address``, else 127.0.0.1); ``server_key`` / ``client_key``: CURVE key files, required
    beyond loopback (``hardware.gnuradio_bridge.curve``).

    ``timeout_s``: timeout of every bridge operation, s (``hardware.timeout_s`` of the config).
    """

    def __init__(self, name: str, limits: TxLimits, entry: RadioEntry, dry_run: bool = False, timeout_s: float = 2.0):
        super().__init__(name, limits, dry_run)
        control = entry.control_address
        if not control:
            raise RadioError(f"{name}: the gnuradio driver needs the radio entry's control_address "
                             "(the bridge's control endpoint, e.g. tcp://127.0.0.1:5600)")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"{name}: timeout_s must be > 0, got {timeout_s}")
        try:
            endpoint_host(control)
        except ValueError as err:
            raise RadioError(f"{name}: control_address: {err}") from None
        try:
            tx_host = endpoint_host(entry.tx_address) if entry.tx_address else None
        except ValueError as err:
            raise RadioError(f"{name}: tx_address: {err}") from None
        try:   # entries may be duck-typed (a SimpleNamespace of FlowgraphProcess.endpoints(), no keys)
            keys = ClientKeys.load(getattr(entry, "server_key", ""), getattr(entry, "client_key", ""))
        except RadioError as err:
            raise RadioError(f"{name}: {err}") from None
        self.bridge = Bridge.attach(control, timeout_s, tx_host, keys)
        self._events_at_open = {k: int(v.get(name, 0)) for k, v in self.bridge.device_events.items()}
        try:
            self.bridge.check_node(name, entry.tx_address, entry.rx_address)
        except BaseException:
            self.bridge.detach()
            raise

    def _device_events(self, kind: str) -> int:
        """Events of one kind the flowgraph reported for this node since it was opened."""
        return max(0, int(self.bridge.device_events[kind].get(self.name, 0)) - self._events_at_open[kind])

    @property
    def overflows(self) -> int:
        """RX overflows: those the device reported (uhd: rx_time tags; stand-in: injected) and the
        gaps in the stream inside a capture, since open."""
        stream = self.bridge.rx.get(self.name)
        return self._device_events("overflows") + (0 if stream is None else stream.overflows)

    @property
    def underflows(self) -> int:
        """TX underflows the device reported (uhd: async messages; stand-in: injected) since open."""
        return self._device_events("underflows")

    @property
    def transmitting(self) -> bool:
        """Whether this side is sending a burst to the flowgraph right now."""
        return not self._closed and self.bridge.transmitting(self.name)

    def correct_lo(self, offset_hz: float) -> float:
        """Move this node's LOs down by ``offset_hz`` (how far above where it should be it was
        measured) on top of the correction already held; returns the total correction the
        flowgraph reports applied, Hz. uhd: a digital correction (the RF LO stays, the DSP shifts
        RX and TX), which removes the carrier offset but not the sample clock's ppm error (same
        TCXO); emulate: the emulator undoes the node's crystal on its LOs. ValueError beyond the
        flowgraph's bound (``max_lo_correction_hz``: ``hardware.max_cfo_hz`` for a USRP)."""
        self._check_open()
        total = self.bridge.lo_correction_hz.get(self.name, 0.0) + float(offset_hz)   # as the flowgraph holds it
        bound = self.bridge.max_lo_correction_hz
        if not abs(total) <= bound:
            raise ValueError(f"{self.name}: LO correction {total:+.0f} Hz is beyond the bridge's bound ±{bound:g} Hz "
                             "(hardware.max_cfo_hz); check the reference clock and the cabling")
        return self.bridge.set_lo_correction(self.name, total)

    # --- driver hooks -----------------------------------------------------------------
    def _configure(self, settings: RadioSettings) -> None:
        self.bridge.configure(self.name, settings)

    def _send(self, iq: np.ndarray, cyclic: bool) -> None:
        self.bridge.send(self.name, iq, cyclic)

    def _capture(self, num_samples: int) -> np.ndarray:
        return self.bridge.capture(self.name, num_samples)

    def _mute(self) -> None:
        self.bridge.mute(self.name)

    def _close(self) -> None:
        self.bridge.detach()
