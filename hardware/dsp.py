"""Per-band pilots and the least-squares estimate of each BS's received power per band.

The captured bandwidth (sample rate fs) is cut into K equal sub-bands covering
``band_fraction`` of it. Every waveform is periodic with period P = ``fft_size`` samples, so
each sub-band is a set of DFT bins of width fs/P. Each BS owns ``tones_per_bs`` bins in every
band, interleaved with the other BSs' bins: its code is a comb of DFT basis vectors, orthogonal
to every other BS's code. The DC bin and a few bins at each band edge carry no pilot. Tone phases
follow a Newman sequence over all pilots in frequency order, so the sum stays low in crest factor.

Estimation from a capture of N = Nb·P samples (any timing offset, any delay):
1. a common carrier frequency offset is estimated from the period-P correlation and removed
   (unambiguous for |CFO| < fs/(2P));
2. the capture is cut into Nb blocks of P samples. Least squares for the model "a P-periodic
   signal plus residual" gives the periodic part as the mean block; its DFT (scaled so a tone of
   amplitude A reads A) gives each pilot tone's complex amplitude;
3. the residual (each block minus the mean block: noise and external interference, Nb − 1
   degrees of freedom per bin) is Hann-windowed, so a strong interferer does not leak into the
   next band, and its power per bin σ² is averaged over the band's measurement bins (the band
   minus ``edge_guard`` bins at each edge and the DC bin). The band's residual is σ² times its
   number of bins;
4. each BS's received power in a band is Σ_tones |amplitude|² − tones·σ²/Nb (noise bias
   removed), floored at 0.

Powers are mean |IQ|² in full-scale units, "in the band" = summed over its bins.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft

from sim.channel import sinr_of_received

__all__ = ["PilotPlan", "BandEstimate", "estimate", "band_power", "external_power", "link_sinr"]

_CFO_MIN_COHERENCE = 0.05   # correct the CFO only if this share of the capture power is periodic


@dataclass(frozen=True)
class PilotPlan:
    """Where every BS's pilot tones sit: bins, phases, and the band layout."""

    num_bs: int
    num_bands: int
    fft_size: int = 1024
    tones_per_bs: int = 4
    band_fraction: float = 0.8
    edge_guard: int = 2
    band_bins: np.ndarray = field(init=False, repr=False)    # [K, Mb] DFT bin indices of each band
    pilot_bins: np.ndarray = field(init=False, repr=False)   # [B, K, T] DFT bin of each pilot tone
    pilot_phase: np.ndarray = field(init=False, repr=False)  # [B, K, T] unit-modulus phase of each tone
    measure_bins: np.ndarray = field(init=False, repr=False)  # [K, Mm] bins the residual is averaged over

    def __post_init__(self):
        p, k_num, b_num, t_num = self.fft_size, self.num_bands, self.num_bs, self.tones_per_bs
        width = int(self.band_fraction * p) // k_num                  # bins per band
        first = -(width * k_num) // 2                                  # centred bin index of band 0
        centred = first + np.arange(k_num)[:, None] * width + np.arange(width)[None, :]   # [K, Mb]
        guard = self.edge_guard
        pilots, measured = [], []
        for k in range(k_num):
            inner = centred[k, guard: width - guard]
            usable = inner[inner != 0]                                 # no pilot on DC
            num_pilots = b_num * t_num
            if 2 * num_pilots > usable.size:
                raise ValueError(
                    f"fft_size={p} leaves {usable.size} usable bins per band, too few for num_bs={b_num} x "
                    f"tones_per_bs={t_num} pilots plus as many free bins: raise fft_size or lower tones_per_bs")
            pos = ((np.arange(num_pilots) + 0.5) * usable.size / num_pilots).astype(int)
            pilots.append(usable[pos].reshape(t_num, b_num).T)         # tone j goes to BS j mod B
            measured.append(usable)
        num_measured = min(m.size for m in measured)
        pilot_bins = np.stack(pilots, axis=1)                          # [B, K, T] centred
        rank = np.argsort(np.argsort(pilot_bins, axis=None)).reshape(pilot_bins.shape)
        phase = np.exp(1j * np.pi * rank * rank / rank.size)           # Newman phases in frequency order
        object.__setattr__(self, "band_bins", centred % p)
        object.__setattr__(self, "pilot_bins", pilot_bins % p)
        object.__setattr__(self, "pilot_phase", phase)
        object.__setattr__(self, "measure_bins", np.stack([m[:num_measured] for m in measured]) % p)

    @property
    def bins_per_band(self) -> int:
        return self.band_bins.shape[1]

    def band_edges_hz(self, sample_rate_hz: float) -> np.ndarray:
        """[K, 2] lower and upper edge of each band in baseband Hz."""
        centred = np.where(self.band_bins > self.fft_size // 2, self.band_bins - self.fft_size, self.band_bins)
        lo = centred[:, 0] * sample_rate_hz / self.fft_size
        return np.stack([lo, lo + self.bins_per_band * sample_rate_hz / self.fft_size], axis=1)

    def waveform(self, tx_power: np.ndarray) -> np.ndarray:
        """One period (complex64 [P]) carrying the pilots of every BS with tx_power[b, k] > 0.

        tx_power [B, K]: power of BS b's pilot in band k (mean |IQ|², full-scale units).
        """
        tx_power = np.asarray(tx_power, dtype=np.float64)
        if tx_power.shape != (self.num_bs, self.num_bands):
            raise ValueError(f"tx_power must have shape {(self.num_bs, self.num_bands)}, got {tx_power.shape}")
        if np.any(tx_power < 0) or not np.all(np.isfinite(tx_power)):
            raise ValueError("tx_power must be finite and >= 0")
        amp = np.sqrt(tx_power / self.tones_per_bs)[..., None] * self.pilot_phase   # [B, K, T]
        spectrum = np.zeros(self.fft_size, dtype=np.complex128)
        np.add.at(spectrum, self.pilot_bins.ravel(), amp.ravel())
        return (np.fft.ifft(spectrum) * self.fft_size).astype(np.complex64)


@dataclass(frozen=True)
class BandEstimate:
    """What one capture says about each band."""

    power: np.ndarray     # [..., B, K] received pilot power of each BS in each band, full-scale units
    residual: np.ndarray  # [..., K] noise + external interference in each band, full-scale units
    cfo_hz: np.ndarray    # [...] common carrier frequency offset removed, Hz


def _blocks(plan: PilotPlan, iq: np.ndarray) -> np.ndarray:
    """iq [..., N] -> [..., Nb, P] (whole periods only)."""
    iq = np.asarray(iq)
    num_blocks = iq.shape[-1] // plan.fft_size
    if num_blocks < 2:
        raise ValueError(f"a capture needs at least 2 periods of fft_size={plan.fft_size} samples, got {iq.shape[-1]}")
    return iq[..., : num_blocks * plan.fft_size].reshape(*iq.shape[:-1], num_blocks, plan.fft_size)


def _remove_cfo(plan: PilotPlan, iq: np.ndarray, sample_rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Estimate the common CFO from y[n+P]·conj(y[n]) and derotate. iq [..., N]."""
    p = plan.fft_size
    corr = np.einsum("...n,...n->...", iq[..., p:], np.conj(iq[..., :-p]))            # [...]
    energy = np.einsum("...n,...n->...", iq, np.conj(iq)).real                         # [...]
    eps = np.angle(corr) / (2 * np.pi * p)                                             # cycles/sample
    eps = np.where(np.abs(corr) > _CFO_MIN_COHERENCE * energy, eps, 0.0)
    blocks = _blocks(plan, iq)                                                         # [..., Nb, P]
    num_blocks = blocks.shape[-2]
    # e^{-j2πε(mP + i)} = e^{-j2πεmP} · e^{-j2πεi}: Nb + P exponentials instead of N
    outer = np.exp(-2j * np.pi * eps[..., None] * p * np.arange(num_blocks))[..., :, None]
    inner = np.exp(-2j * np.pi * eps[..., None] * np.arange(p))[..., None, :]
    return blocks * (outer * inner).astype(np.complex64), eps * sample_rate_hz


def _spectra(blocks: np.ndarray, plan: PilotPlan) -> np.ndarray:
    """DFT of every block, scaled so a tone of amplitude A reads A. [..., Nb, P]."""
    return scipy.fft.fft(blocks, axis=-1) / np.float32(plan.fft_size)


def _hann_power(plan: PilotPlan, spec: np.ndarray) -> np.ndarray:
    """Power per block on the measurement bins after a periodic Hann window, applied in the
    frequency domain (taps -1/4, 1/2, -1/4) and scaled by 8/3 so per-bin powers stay unbiased.

    spec [..., Nb, P] -> [..., Nb, K, Mm].
    """
    idx = plan.measure_bins
    p = plan.fft_size
    windowed = 0.5 * spec[..., idx] - 0.25 * (spec[..., (idx - 1) % p] + spec[..., (idx + 1) % p])
    return (windowed.real ** 2 + windowed.imag ** 2) * (8.0 / 3.0)


def estimate(plan: PilotPlan, iq: np.ndarray, sample_rate_hz: float, correct_cfo: bool = True) -> BandEstimate:
    """Least-squares estimate of every BS's received power per band and the residual per band.

    iq [..., N] complex, N >= 2·P (samples past the last whole period are ignored).
    """
    iq = np.asarray(iq, dtype=np.complex64)
    if correct_cfo:
        blocks, cfo_hz = _remove_cfo(plan, iq, sample_rate_hz)         # [..., Nb, P]
    else:
        blocks, cfo_hz = _blocks(plan, iq), np.zeros(iq.shape[:-1])
    num_blocks = blocks.shape[-2]
    spec = _spectra(blocks, plan)                                       # [..., Nb, P]
    periodic = spec.mean(axis=-2, keepdims=True)                        # [..., 1, P] LS periodic part
    amp = periodic[..., 0, plan.pilot_bins]                             # [..., B, K, T]
    per_bin = _hann_power(plan, spec - periodic).sum(axis=-3) / (num_blocks - 1)   # [..., K, Mm]
    sigma2 = per_bin.mean(axis=-1)                                      # [..., K] residual per bin
    raw = (amp.real ** 2 + amp.imag ** 2).sum(axis=-1)                  # [..., B, K]
    power = np.maximum(raw - plan.tones_per_bs * sigma2[..., None, :] / num_blocks, 0.0)
    return BandEstimate(power=power, residual=sigma2 * plan.bins_per_band, cfo_hz=cfo_hz)


def band_power(plan: PilotPlan, iq: np.ndarray) -> np.ndarray:
    """Total power in each band of a capture (Hann-windowed Welch), full-scale units.

    iq [..., N] -> [..., K].
    """
    spec = _spectra(_blocks(plan, np.asarray(iq, dtype=np.complex64)), plan)
    return _hann_power(plan, spec).mean(axis=(-3, -1)) * plan.bins_per_band


def external_power(plan: PilotPlan, iq: np.ndarray, noise_floor: np.ndarray) -> np.ndarray:
    """Occupancy of each band from a TX-off capture: band power above the noise floor (>= 0).

    noise_floor [..., K] band power of the receiver alone, full-scale units. -> [..., K].
    """
    return np.maximum(band_power(plan, iq) - noise_floor, 0.0)


def link_sinr(power: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """SINR of each BS's link at the receiver, S_b / (Σ_{b'≠b} S_b' + residual), through the
    simulator's Eq. 6 (``sim.channel.sinr_of_received``); never divides by 0. [..., B, K].

    power [..., B, K] received power of every BS; residual [..., K] noise + external interference.
    """
    power = np.asarray(power, dtype=np.float64)
    num_bs = power.shape[-2]
    rx = np.broadcast_to(power[..., :, None, :], (*power.shape[:-2], num_bs, num_bs, power.shape[-1]))
    return sinr_of_received(rx, residual[..., None, :], np.finfo(np.float64).tiny)
