"""One model of a radio's imperfections, applied to blocks of IQ by every emulator.

The mock radio, the emulated Pluto (IIOD) and the GNU Radio emulate flowgraph all use this
module. It imports numpy only and nothing of the project, so the flowgraph, which runs under
the system Python as its own process, loads it as a file by path (``hardware/emulated/
impairments.py``, beside the package it runs from).

What a radio does to its signals:

- **Crystal** (``crystal_ppm``): the reference that both LOs and the sample clock are derived
  from runs ``crystal_ppm`` off nominal; the radio believes it runs at its correction
  (``correction_ppm``: Pluto's ``xo_correction``, the mock's ``correct_lo``). Everything derived
  from it is off by ``clock_ratio`` = actual / believed: an LO asked for f sits at f·ratio, and a
  burst played by one radio and captured by another is stretched by the ratio of their clocks
  (``play_periodic``).
- **Phase noise** (``phase_noise_deg`` RMS, ``phase_noise_corner_hz``): the LO pair's phase
  error, a first-order low-pass Gaussian process (flat to the corner, then −20 dB/decade, as an
  LO locked by a PLL of that bandwidth), applied at the receiver.
- **IQ imbalance** (``iq_gain_db``, ``iq_phase_deg``): the Q rail's gain and phase error against I,
  after the receiver's own quadrature tracking; makes an image of every signal at the mirror
  frequency.
- **DC offset** (``dc_offset_dbfs``): a constant at the ADC, in dB below full scale.
- **ADC saturation**: I and Q each limited to the 12-bit converter's range [−1, 2047/2048]
  (full scale 1). Always applied: it is the converter, not an imperfection.

Units: IQ in full-scale units (full scale 1), frequencies Hz, phases degrees, ppm = 1e-6.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Impairments", "Receiver", "clock_ratio", "play_periodic", "saturate", "ADC_MAX"]

ADC_MAX = 2047 / 2048           # the 12-bit ADC's largest positive code, full scale 1
MAX_TONES = 512                 # play_periodic evaluates at most this many DFT bins exactly


@dataclass(frozen=True)
class Impairments:
    """One radio's figures; the defaults are an ideal radio."""

    crystal_ppm: float = 0.0            # reference crystal error, ppm
    phase_noise_deg: float = 0.0        # RMS phase noise at the receiver, degrees
    phase_noise_corner_hz: float = 10e3  # corner of the phase noise spectrum, Hz
    iq_gain_db: float = 0.0             # Q rail gain against I, dB
    iq_phase_deg: float = 0.0           # Q rail phase error against I, degrees
    dc_offset_dbfs: float = -math.inf   # DC offset at the ADC, dBFS (-inf = none)

    def __post_init__(self):
        if not abs(self.crystal_ppm) < 1000:
            raise ValueError(f"crystal_ppm must be within ±1000 ppm, got {self.crystal_ppm}")
        if self.phase_noise_deg < 0 or self.phase_noise_corner_hz <= 0:
            raise ValueError("phase_noise_deg must be >= 0 and phase_noise_corner_hz > 0")


def clock_ratio(crystal_ppm: float, correction_ppm: float = 0.0) -> float:
    """Actual over believed reference frequency: what every LO and the sample clock are off by."""
    return (1 + crystal_ppm * 1e-6) / (1 + correction_ppm * 1e-6)


def play_periodic(iq: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """A periodic burst (one period, complex [L]) at fractional sample positions (float [n]):
    band-limited interpolation of what a DAC whose clock differs from the receiver's plays.
    Exact for bursts of at most MAX_TONES DFT bins (pilots, calibration tones, the DDS);
    denser ones are interpolated linearly. complex128 [n]"""
    length = iq.size
    spectrum = np.fft.fft(iq) / length
    bins = np.flatnonzero(np.abs(spectrum) > 1e-9 * np.abs(spectrum).max(initial=0.0))
    if bins.size > MAX_TONES:
        k = np.arange(length + 1)
        ext = np.append(iq, iq[0])
        pos = np.mod(positions, length)
        return np.interp(pos, k, ext.real) + 1j * np.interp(pos, k, ext.imag)
    freqs = np.where(bins > length // 2, bins - length, bins) / length        # cycles per sample
    phase = np.mod(np.outer(freqs, positions), 1.0)
    return spectrum[bins] @ np.exp(2j * np.pi * phase)


def saturate(iq: np.ndarray) -> np.ndarray:
    """I and Q each limited to the 12-bit ADC's range, full scale 1. complex64"""
    return (np.clip(iq.real, -1.0, ADC_MAX) + 1j * np.clip(iq.imag, -1.0, ADC_MAX)).astype(np.complex64)


class Receiver:
    """A radio's receive chain after its LO and before its samples: phase noise (its state runs
    on from block to block), IQ imbalance, DC offset, ADC saturation."""

    def __init__(self, impairments: Impairments, sample_rate_hz: float, seed: int = 0):
        self.impairments = impairments
        self.sample_rate_hz = float(sample_rate_hz)
        self._rng = np.random.default_rng(seed)
        self._phase = 0.0                       # rad, the phase noise process's last value
        imp = impairments
        gain, phi = 10 ** (imp.iq_gain_db / 20), math.radians(imp.iq_phase_deg)
        self._direct = (1 + gain * np.exp(-1j * phi)) / 2      # y = direct·x + image·conj(x)
        self._image = (1 - gain * np.exp(1j * phi)) / 2
        self._dc = 10 ** (imp.dc_offset_dbfs / 20) * np.exp(1j * math.pi / 4) if imp.dc_offset_dbfs > -math.inf else 0

    def apply(self, iq: np.ndarray) -> np.ndarray:
        """The samples the ADC delivers for ``iq`` at the antenna side of the ADC (after the RX
        gain, full scale 1). complex64 [n]"""
        x = np.asarray(iq, dtype=np.complex128)
        if self.impairments.phase_noise_deg > 0 and x.size:
            x = x * np.exp(1j * self._phase_noise(x.size))
        if self._image:
            x = self._direct * x + self._image * np.conj(x)
        return saturate(x + self._dc)

    def _phase_noise(self, n: int) -> np.ndarray:
        """n samples of the low-pass Gaussian phase process (rad), RMS phase_noise_deg."""
        imp = self.impairments
        a = math.exp(-2 * math.pi * imp.phase_noise_corner_hz / self.sample_rate_hz)
        sigma = math.radians(imp.phase_noise_deg)
        drive = self._rng.standard_normal(n) * sigma * math.sqrt(1 - a * a)
        # phase[i] = a·phase[i-1] + drive[i], in closed form over chunks short enough that a**m stays normal
        m = max(1, min(n, int(20 / max(-math.log(a), 1e-12)))) if a > 0 else n
        powers = a ** np.arange(1, m + 1)
        out = np.empty(n)
        phase = self._phase
        for start in range(0, n, m):
            d = drive[start:start + m]
            p = powers[:d.size]
            out[start:start + d.size] = p * (phase + np.cumsum(d / p)) if a > 0 else d
            phase = out[start + d.size - 1]
        self._phase = float(out[-1])
        return out
