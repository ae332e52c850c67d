"""A shared simulated RF medium: every port hears every transmitting port through its link.

    medium = RfMedium(sample_rate_hz=2e6, noise_fs=1e-10, seed=0)
    a, b = medium.attach("bs0"), medium.attach("ue0")
    medium.set_link("bs0", "ue0", gain_db=-3.0, cfo_hz=100.0, delay_samples=5)
    a.transmit(iq, cyclic=True)          # complex64 [L], repeats until muted
    y = b.receive(4096)                  # complex64 [4096] = link(iq) + noise + interferers
    a.mute()

Time is one sample clock shared by all ports; each ``receive(n)`` covers the next n samples.
A cyclic burst repeats from the instant it was sent; a one-shot burst plays once. A link applies
a power gain, a carrier frequency offset (continuous phase) and an integer delay; it defaults to
0 dB, 0 Hz, 0 samples, including a port hearing itself (a loopback cable). Powers are mean
|IQ|² in full-scale units (names end in ``_fs``; full scale = 1). Frequencies are RF in Hz: a port's LO comes from the optional ``state``
dict (``tx_lo_hz``, ``rx_lo_hz``) its driver passes; the TX-RX LO difference shifts the signal,
and a port without LO state sits at 0 Hz (baseband). A port's ``clock_ratio`` (state; its sample
clock over nominal, ``hardware.emulated.impairments``) plays a cyclic burst stretched by the ratio of
the transmitter's clock to the receiver's (one-shot bursts play on the medium's clock). External interferers are band-limited
Gaussian noise heard by chosen ports. Thread-safe (emulators serve clients from threads).

``on_air`` logs what the ports radiate, with timestamps on the medium's sample clock: one entry
(clock, port name, iq at the antenna, or None for a mute) per change, the last ``AIR_LOG_ENTRIES``.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from hardware.emulated.impairments import play_periodic
from sim.units import db_to_amplitude, db_to_lin

__all__ = ["RfMedium", "MediumPort", "Link", "Interferer", "AIR_LOG_ENTRIES"]

AIR_LOG_ENTRIES = 4096    # changes of what the ports radiate that ``RfMedium.on_air`` keeps


@dataclass(frozen=True)
class Link:
    """The channel from one port to another."""

    gain_db: float = 0.0        # power gain in dB
    cfo_hz: float = 0.0         # carrier frequency offset in Hz (on top of any LO difference)
    delay_samples: int = 0      # delay in samples


@dataclass(frozen=True)
class Interferer:
    """Band-limited Gaussian noise on [f_lo_hz, f_hi_hz] (RF), power_fs at 0 dB gain."""

    f_lo_hz: float
    f_hi_hz: float
    power_fs: float
    gain_db: dict               # receiving port name -> power gain in dB; ports not listed hear nothing


class MediumPort:
    """One radio's antenna on the medium."""

    def __init__(self, medium: "RfMedium", name: str):
        self.medium = medium
        self.name = name
        self._iq: np.ndarray | None = None
        self._cyclic = True
        self._start = 0
        self._tx_lo_hz = 0.0
        self._clock_ratio = 1.0

    def transmit(self, iq: np.ndarray, cyclic: bool = True, state: dict | None = None) -> None:
        """Start sending ``iq`` (complex [L]) now, repeated if cyclic; replaces what was sent before."""
        iq = np.ascontiguousarray(iq, dtype=np.complex64).ravel()
        with self.medium._lock:
            self._iq = iq if iq.size else None
            self._cyclic = bool(cyclic)
            self._start = self.medium._clock
            self._tx_lo_hz = float((state or {}).get("tx_lo_hz", 0.0))
            self._clock_ratio = float((state or {}).get("clock_ratio", 1.0))
            self.medium.on_air.append((self.medium._clock, self.name, self._iq))

    def receive(self, num_samples: int, state: dict | None = None) -> np.ndarray:
        """The next num_samples of what this port hears, complex64 [num_samples]."""
        rx_lo_hz = float((state or {}).get("rx_lo_hz", 0.0))
        return self.medium._receive(self, int(num_samples), rx_lo_hz, float((state or {}).get("clock_ratio", 1.0)))

    def mute(self) -> None:
        """Stop sending. Idempotent."""
        with self.medium._lock:
            if self._iq is not None:
                self.medium.on_air.append((self.medium._clock, self.name, None))
            self._iq = None

    @property
    def transmitting(self) -> bool:
        return self._iq is not None


class RfMedium:
    """Ports, the links between them, receiver noise and external interferers."""

    def __init__(self, sample_rate_hz: float, noise_fs: float = 1e-10, seed: int = 0):
        if sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
        self.sample_rate_hz = float(sample_rate_hz)
        self.ports: dict[str, MediumPort] = {}
        self._links: dict[tuple[str, str], Link] = {}
        self._noise_fs: dict[str | None, float] = {None: float(noise_fs)}
        self._interferers: dict[str, Interferer] = {}
        self._rng = np.random.default_rng(seed)
        self._clock = 0
        self._lock = threading.RLock()
        self.on_air: deque = deque(maxlen=AIR_LOG_ENTRIES)   # (clock, port, iq or None), oldest first

    @property
    def clock(self) -> int:
        """Samples the medium has run so far (the timestamps of ``on_air``)."""
        return self._clock

    def attach(self, name: str) -> MediumPort:
        """A new port called ``name`` (unique)."""
        with self._lock:
            if name in self.ports:
                raise ValueError(f"a port named {name!r} is already attached")
            port = self.ports[name] = MediumPort(self, name)
            return port

    def detach(self, name: str) -> None:
        """Remove a port (it stops sending). Idempotent."""
        with self._lock:
            self.ports.pop(name, None)

    def set_link(self, tx: str, rx: str, gain_db: float | None = None, cfo_hz: float | None = None,
                 delay_samples: int | None = None) -> None:
        """Set the channel from port ``tx`` to port ``rx``; arguments left None keep their value."""
        if delay_samples is not None and delay_samples < 0:
            raise ValueError(f"delay_samples must be >= 0, got {delay_samples}")
        with self._lock:
            old = self._links.get((tx, rx), Link())
            self._links[(tx, rx)] = Link(
                gain_db=old.gain_db if gain_db is None else float(gain_db),
                cfo_hz=old.cfo_hz if cfo_hz is None else float(cfo_hz),
                delay_samples=old.delay_samples if delay_samples is None else int(delay_samples))

    def link(self, tx: str, rx: str) -> Link:
        return self._links.get((tx, rx), Link())

    def set_noise(self, noise_fs: float, rx: str | None = None) -> None:
        """Receiver noise power per sample (over the whole sample rate) at ``rx``, or the default."""
        if noise_fs < 0:
            raise ValueError(f"noise_fs must be >= 0, got {noise_fs}")
        with self._lock:
            self._noise_fs[rx] = float(noise_fs)

    def set_interferer(self, name: str, f_lo_hz: float, f_hi_hz: float, power_fs: float,
                       gain_db: dict[str, float]) -> None:
        """Add or replace an external interferer heard by the ports in ``gain_db``."""
        if not f_lo_hz < f_hi_hz or power_fs < 0:
            raise ValueError(f"interferer {name!r}: need f_lo_hz < f_hi_hz and power_fs >= 0")
        with self._lock:
            self._interferers[name] = Interferer(float(f_lo_hz), float(f_hi_hz), float(power_fs), dict(gain_db))

    def remove_interferer(self, name: str) -> None:
        with self._lock:
            self._interferers.pop(name, None)

    def clear_interferers(self) -> None:
        with self._lock:
            self._interferers.clear()

    # --- the channel ----------------------------------------------------------------
    def _receive(self, port: MediumPort, n: int, rx_lo_hz: float, rx_clock: float = 1.0) -> np.ndarray:
        if n <= 0:
            raise ValueError(f"num_samples must be > 0, got {n}")
        with self._lock:
            t0 = self._clock
            self._clock += n
            noise_fs = self._noise_fs.get(port.name, self._noise_fs[None])
            out = np.sqrt(noise_fs / 2) * (self._rng.standard_normal(n) + 1j * self._rng.standard_normal(n))
            t = np.arange(t0, t0 + n)
            for src in self.ports.values():
                if src._iq is not None:
                    out += self._heard(src, port.name, t, rx_lo_hz, rx_clock)
            out += self._interference(port.name, n, rx_lo_hz)
        return out.astype(np.complex64)

    def _heard(self, src: MediumPort, rx: str, t: np.ndarray, rx_lo_hz: float, rx_clock: float) -> np.ndarray:
        """What ``rx`` hears of ``src`` at absolute sample times t."""
        link = self.link(src.name, rx)
        k = t - link.delay_samples - src._start
        length = src._iq.size
        stretch = src._clock_ratio / rx_clock
        if src._cyclic and abs(stretch - 1) * t.size > 1e-4:     # clocks apart by more than 1e-4 samples a capture
            x = play_periodic(src._iq, k * stretch)
        elif src._cyclic:
            x = src._iq[k % length]
        else:
            inside = (k >= 0) & (k < length)
            x = np.where(inside, src._iq[np.clip(k, 0, length - 1)], 0)
        x = x * db_to_amplitude(link.gain_db)
        shift_hz = link.cfo_hz + src._tx_lo_hz - rx_lo_hz
        if shift_hz:
            x = x * np.exp(2j * np.pi * shift_hz / self.sample_rate_hz * t)
        return x

    def _interference(self, rx: str, n: int, rx_lo_hz: float) -> np.ndarray | float:
        """Sum of the interferers ``rx`` hears, generated in the frequency domain."""
        spectrum = None
        freqs = np.fft.fftfreq(n, d=1.0 / self.sample_rate_hz) + rx_lo_hz
        for itf in self._interferers.values():
            if rx not in itf.gain_db or itf.power_fs == 0:
                continue
            bins = (freqs >= itf.f_lo_hz) & (freqs < itf.f_hi_hz)
            num_bins = int(bins.sum())
            if num_bins == 0:
                continue
            power = itf.power_fs * db_to_lin(itf.gain_db[rx])
            scale = np.sqrt(power * n / num_bins / 2)
            if spectrum is None:
                spectrum = np.zeros(n, dtype=np.complex128)
            spectrum[bins] += scale * (self._rng.standard_normal(num_bins) + 1j * self._rng.standard_normal(num_bins))
        return 0.0 if spectrum is None else np.fft.ifft(spectrum, norm="ortho")
