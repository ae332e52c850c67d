"""Per-band pilots and the least-squares estimate of each BS's received power per band.

The captured bandwidth (sample rate fs) is cut into K equal sub-bands covering
``band_fraction`` of it. Every waveform is periodic with period P = ``fft_size`` samples, so
each sub-band is a set of DFT bins of width fs/P. Each BS owns ``tones_per_bs`` bins in every
band, interleaved with the other BSs' bins: its code is a comb of DFT basis vectors, orthogonal
to every other BS's code and to the band's null bins. The DC bin carries no pilot.

Estimation from a capture of N = Nb·P samples (any timing offset, any delay):
1. a common carrier frequency offset is estimated from the period-P correlation and removed
   (unambiguous for |CFO| < fs/(2P));
2. the capture is cut into Nb blocks of P samples and transformed, Y [Nb, P] (scaled so a tone
   of amplitude A reads A);
3. least squares for the model "a periodic tone of unknown complex amplitude on every pilot
   bin, plus residual": the amplitude is the block mean Ȳ on each pilot bin; the residual is
   Y − Ȳ on pilot bins (Nb − 1 degrees of freedom each) and Y on null bins (Nb each);
4. residual power per bin σ² is pooled per band; the band's residual (noise + external
   interference) is σ² times the band's number of bins; each BS's received power in a band is
   Σ_tones |Ȳ|² − tones·σ²/Nb (noise bias removed), floored at 0.

Powers are mean |IQ|² in full-scale units, "in the band" = summed over its bins.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
    band_bins: np.ndarray = field(init=False, repr=False)    # [K, Mb] DFT bin indices of each band
    pilot_bins: np.ndarray = field(init=False, repr=False)   # [B, K, T] DFT bin of each pilot tone
    pilot_phase: np.ndarray = field(init=False, repr=False)  # [B, K, T] unit-modulus phase of each tone
    null_bins: np.ndarray = field(init=False, repr=False)    # [K, M0] bins of each band with no pilot

    def __post_init__(self):
        p, k_num, b_num, t_num = self.fft_size, self.num_bands, self.num_bs, self.tones_per_bs
        width = int(self.band_fraction * p) // k_num                  # bins per band
        first = -(width * k_num) // 2                                  # centred bin index of band 0
        centred = first + np.arange(k_num)[:, None] * width + np.arange(width)[None, :]   # [K, Mb]
        pilots, nulls = [], []
        for k in range(k_num):
            usable = centred[k][centred[k] != 0]                       # no pilot on DC
            num_pilots = b_num * t_num
            if 2 * num_pilots > usable.size:
                raise ValueError(
                    f"fft_size={p} leaves {usable.size} bins per band, too few for num_bs={b_num} x "
                    f"tones_per_bs={t_num} pilots plus as many null bins: raise fft_size or lower tones_per_bs")
            pos = ((np.arange(num_pilots) + 0.5) * usable.size / num_pilots).astype(int)
            pilots.append(usable[pos].reshape(t_num, b_num).T)         # tone j goes to BS j mod B
            nulls.append(np.setdiff1d(usable, usable[pos]))
        num_null = min(n.size for n in nulls)
        j = np.arange(k_num * t_num).reshape(k_num, t_num)
        phase = np.exp(1j * np.pi * j * j / j.size)                    # Newman phases: low crest factor
        object.__setattr__(self, "band_bins", centred % p)
        object.__setattr__(self, "pilot_bins", np.stack(pilots, axis=1) % p)
        object.__setattr__(self, "pilot_phase", np.broadcast_to(phase, (b_num, k_num, t_num)).copy())
        object.__setattr__(self, "null_bins", np.stack([n[:num_null] for n in nulls]) % p)

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
    energy = np.einsum("...n,...n->...", np.abs(iq[..., p:]), np.abs(iq[..., :-p]))  # [...]
    eps = np.angle(corr) / (2 * np.pi * p)                                             # cycles/sample
    eps = np.where(np.abs(corr) > _CFO_MIN_COHERENCE * energy, eps, 0.0)
    n = np.arange(iq.shape[-1])
    derotated = iq * np.exp(-2j * np.pi * eps[..., None] * n).astype(np.complex64)
    return derotated, eps * sample_rate_hz


def estimate(plan: PilotPlan, iq: np.ndarray, sample_rate_hz: float, correct_cfo: bool = True) -> BandEstimate:
    """Least-squares estimate of every BS's received power per band and the residual per band.

    iq [..., N] complex, N >= 2·P (samples past the last whole period are ignored).
    """
    iq = np.asarray(iq, dtype=np.complex64)
    cfo_hz = np.zeros(iq.shape[:-1])
    if correct_cfo:
        iq, cfo_hz = _remove_cfo(plan, iq, sample_rate_hz)
    blocks = _blocks(plan, iq)                                          # [..., Nb, P]
    num_blocks = blocks.shape[-2]
    spec = np.fft.fft(blocks, axis=-1) / plan.fft_size                  # [..., Nb, P]
    pilot = spec[..., plan.pilot_bins]                                  # [..., Nb, B, K, T]
    mean = pilot.mean(axis=-4)                                          # [..., B, K, T]
    pilot_res = (np.abs(pilot - mean[..., None, :, :, :]) ** 2).sum(axis=(-4, -3, -1))   # [..., K]
    null_res = (np.abs(spec[..., plan.null_bins]) ** 2).sum(axis=(-3, -1))               # [..., K]
    num_pilots = plan.num_bs * plan.tones_per_bs
    dof = num_pilots * (num_blocks - 1) + plan.null_bins.shape[1] * num_blocks
    sigma2 = (pilot_res + null_res) / dof                               # [..., K] residual per bin
    raw = (np.abs(mean) ** 2).sum(axis=-1)                              # [..., B, K]
    power = np.maximum(raw - plan.tones_per_bs * sigma2[..., None, :] / num_blocks, 0.0)
    return BandEstimate(power=power, residual=sigma2 * plan.bins_per_band, cfo_hz=cfo_hz)


def band_power(plan: PilotPlan, iq: np.ndarray) -> np.ndarray:
    """Total power in each band of a capture, full-scale units. iq [..., N] -> [..., K]."""
    spec = np.fft.fft(_blocks(plan, np.asarray(iq, dtype=np.complex64)), axis=-1) / plan.fft_size
    per_bin = (np.abs(spec) ** 2).mean(axis=-2)                         # [..., P]
    return per_bin[..., plan.band_bins].sum(axis=-1)


def external_power(plan: PilotPlan, iq: np.ndarray, noise_floor: np.ndarray) -> np.ndarray:
    """Occupancy of each band from a TX-off capture: band power above the noise floor (>= 0).

    noise_floor [..., K] band power of the receiver alone, full-scale units. -> [..., K].
    """
    return np.maximum(band_power(plan, iq) - noise_floor, 0.0)


def link_sinr(power: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """SINR of each BS's link at the receiver: S_b / (Σ_{b'≠b} S_b' + residual). [..., B, K]."""
    total = power.sum(axis=-2, keepdims=True)
    return power / np.maximum(total - power + residual[..., None, :], np.finfo(np.float64).tiny)
