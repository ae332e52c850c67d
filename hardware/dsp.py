"""Per-band pilots and the least-squares estimate of each BS's received power per band.

The captured bandwidth (sample rate fs) is cut into K equal sub-bands covering
``band_fraction`` of it. Every waveform is periodic with period P = ``fft_size`` samples, so
each sub-band is a set of DFT bins of width fs/P. Each BS owns ``tones_per_bs`` bins in every
band, interleaved with the other BSs' bins: its code is a comb of DFT basis vectors, orthogonal
to every other BS's code. The DC bin and a few bins at each band edge carry no pilot. Tone phases
follow a Newman sequence over all pilots in frequency order, so the sum stays low in crest factor.

Step signature: each BS has a second, disjoint set of pilot bins (midway between its first
set's). Bursts alternate between the two sets (``signature`` 0/1), so a capture that still holds
the previous burst shows pilot energy on the other set; the estimator reports that share
(``foreign_share``) and the measured loop rejects the capture.

Estimation from a capture of N = Nb·P samples (any timing offset, any delay), less its mean
(the receiver's DC offset):
1. a common carrier frequency offset is estimated from the period-P correlation and removed
   (unambiguous for |CFO| < fs/(2P)); ``cfo_ok`` flags captures whose estimate is coherent and
   not near the edge of that range;
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

Offsets beyond ±fs/(2P) (crystals of two radios tens of kHz apart) are found before a run by
:func:`estimate_offset` on a calibration burst (``PilotPlan.calibration_waveform``): tones on an
irregular set of bins, so that exactly one whole-bin shift puts them back (the regular pilot comb
would also fit one comb spacing away).

Powers are mean |IQ|² in full-scale units, "in the band" = summed over its bins.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft

from sim.channel import sinr_of_received

__all__ = ["PilotPlan", "BandEstimate", "OffsetEstimate", "estimate", "estimate_offset", "band_power",
           "external_power", "link_sinr"]

_CFO_MIN_COHERENCE = 0.05   # correct the CFO only if this share of the capture power is periodic
_CFO_EDGE = 0.8             # cfo_ok needs |CFO| below this share of fs/(2P): a wrapped estimate sits at the edge
_CALIBRATION_TONES_PER_BAND = 4


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
    alt_pilot_bins: np.ndarray = field(init=False, repr=False)   # [B, K, T] the second signature's bins
    alt_pilot_phase: np.ndarray = field(init=False, repr=False)  # [B, K, T]
    calibration_bins: np.ndarray = field(init=False, repr=False)  # [C] irregular tones of the calibration burst
    measure_bins: np.ndarray = field(init=False, repr=False)  # [K, Mm] bins the residual is averaged over

    def __post_init__(self):
        p, k_num, b_num, t_num = self.fft_size, self.num_bands, self.num_bs, self.tones_per_bs
        width = int(self.band_fraction * p) // k_num                  # bins per band
        first = -(width * k_num) // 2                                  # centred bin index of band 0
        centred = first + np.arange(k_num)[:, None] * width + np.arange(width)[None, :]   # [K, Mb]
        guard = self.edge_guard
        pilots, alt, measured = [], [], []
        for k in range(k_num):
            inner = centred[k, guard: width - guard]
            usable = inner[inner != 0]                                 # no pilot on DC
            num_pilots = b_num * t_num
            if 2 * num_pilots > usable.size:
                raise ValueError(
                    f"fft_size={p} leaves {usable.size} usable bins per band, too few for num_bs={b_num} x "
                    f"tones_per_bs={t_num} pilots plus as many free bins: raise fft_size or lower tones_per_bs")
            pos = ((np.arange(num_pilots) + 0.5) * usable.size / num_pilots).astype(int)
            alt_pos = (np.arange(num_pilots) * usable.size / num_pilots).astype(int)   # midway, disjoint
            pilots.append(usable[pos].reshape(t_num, b_num).T)         # tone j goes to BS j mod B
            alt.append(usable[alt_pos].reshape(t_num, b_num).T)
            measured.append(usable)
        num_measured = min(m.size for m in measured)
        pilot_bins, alt_bins = np.stack(pilots, axis=1), np.stack(alt, axis=1)   # [B, K, T] centred
        object.__setattr__(self, "band_bins", centred % p)
        object.__setattr__(self, "pilot_bins", pilot_bins % p)
        object.__setattr__(self, "pilot_phase", _newman_phases(pilot_bins))
        object.__setattr__(self, "alt_pilot_bins", alt_bins % p)
        object.__setattr__(self, "alt_pilot_phase", _newman_phases(alt_bins))
        rng = np.random.default_rng(0)                                 # fixed: both ends know the set
        calibration = np.concatenate([np.sort(rng.choice(m, _CALIBRATION_TONES_PER_BAND, replace=False))
                                      for m in measured])
        object.__setattr__(self, "calibration_bins", calibration % p)
        object.__setattr__(self, "measure_bins", np.stack([m[:num_measured] for m in measured]) % p)

    @property
    def bins_per_band(self) -> int:
        return self.band_bins.shape[1]

    def band_edges_hz(self, sample_rate_hz: float) -> np.ndarray:
        """[K, 2] lower and upper edge of each band in baseband Hz."""
        centred = np.where(self.band_bins > self.fft_size // 2, self.band_bins - self.fft_size, self.band_bins)
        lo = centred[:, 0] * sample_rate_hz / self.fft_size
        return np.stack([lo, lo + self.bins_per_band * sample_rate_hz / self.fft_size], axis=1)

    def pilots(self, signature: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(bins, phases) [B, K, T] of the pilot set of ``signature`` (0 or 1)."""
        if signature not in (0, 1):
            raise ValueError(f"signature must be 0 or 1, got {signature!r}")
        return (self.pilot_bins, self.pilot_phase) if signature == 0 else (self.alt_pilot_bins, self.alt_pilot_phase)

    def calibration_tones(self, bands: np.ndarray | None = None) -> np.ndarray:
        """The calibration bins of the bands where ``bands`` [K] is True (default: all). [C]"""
        per_band = self.calibration_bins.reshape(self.num_bands, -1)
        return per_band.ravel() if bands is None else per_band[np.asarray(bands, dtype=bool)].ravel()

    def calibration_waveform(self, power_per_band: float, bands: np.ndarray | None = None) -> np.ndarray:
        """One period (complex64 [P]) of the calibration burst: ``power_per_band`` (mean |IQ|²,
        full-scale units) in each band where ``bands`` [K] is True (default: all), on the
        irregular calibration tones."""
        if not (np.isfinite(power_per_band) and power_per_band >= 0):
            raise ValueError(f"power_per_band must be finite and >= 0, got {power_per_band}")
        tones = self.calibration_tones(bands)
        spectrum = np.zeros(self.fft_size, dtype=np.complex128)
        spectrum[tones] = np.sqrt(power_per_band / _CALIBRATION_TONES_PER_BAND) * _newman_phases(tones)
        return (np.fft.ifft(spectrum) * self.fft_size).astype(np.complex64)

    def waveform(self, tx_power: np.ndarray, signature: int = 0) -> np.ndarray:
        """One period (complex64 [P]) carrying the pilots of every BS with tx_power[b, k] > 0.

        tx_power [B, K]: power of BS b's pilot in band k (mean |IQ|², full-scale units);
        signature: which of the two pilot sets carries them.
        """
        tx_power = np.asarray(tx_power, dtype=np.float64)
        if tx_power.shape != (self.num_bs, self.num_bands):
            raise ValueError(f"tx_power must have shape {(self.num_bs, self.num_bands)}, got {tx_power.shape}")
        if np.any(tx_power < 0) or not np.all(np.isfinite(tx_power)):
            raise ValueError("tx_power must be finite and >= 0")
        bins, phase = self.pilots(signature)
        amp = np.sqrt(tx_power / self.tones_per_bs)[..., None] * phase   # [B, K, T]
        spectrum = np.zeros(self.fft_size, dtype=np.complex128)
        np.add.at(spectrum, bins.ravel(), amp.ravel())
        return (np.fft.ifft(spectrum) * self.fft_size).astype(np.complex64)


def _newman_phases(bins: np.ndarray) -> np.ndarray:
    """Unit-modulus Newman phases over all pilots in frequency order (low crest factor)."""
    rank = np.argsort(np.argsort(bins, axis=None)).reshape(bins.shape)
    return np.exp(1j * np.pi * rank * rank / rank.size)


@dataclass(frozen=True)
class BandEstimate:
    """What one capture says about each band."""

    power: np.ndarray          # [..., B, K] received pilot power of each BS in each band, full-scale units
    residual: np.ndarray       # [..., K] noise + external interference in each band, full-scale units
    cfo_hz: np.ndarray         # [...] common carrier frequency offset removed, Hz
    foreign: np.ndarray        # [..., B, K] pilot power on the other signature's bins, full-scale units
    cfo_ok: np.ndarray         # [...] bool: coherent, and not near the edge of the unambiguous range
    min_tone: np.ndarray       # [..., B, K] weakest tone of each BS's pilots, on the set whose weakest is
                               # strongest: a burst lights every tone of a BS, a CW interferer one

    @property
    def foreign_share(self) -> np.ndarray:
        """Share of the capture's pilot power on the other signature's bins [...]: near 0 for a
        capture of the burst it was meant to measure, large for one that holds an earlier burst."""
        own, other = self.power.sum(axis=(-2, -1)), self.foreign.sum(axis=(-2, -1))
        total = own + other
        return np.where(total > 0, other / np.where(total > 0, total, 1.0), 0.0)


def _blocks(plan: PilotPlan, iq: np.ndarray) -> np.ndarray:
    """iq [..., N] -> [..., Nb, P] (whole periods only), less their mean: the receiver's DC
    offset (no pilot sits on DC) must not pull the CFO estimate or leak into the bands."""
    iq = np.asarray(iq)
    num_blocks = iq.shape[-1] // plan.fft_size
    if num_blocks < 2:
        raise ValueError(f"a capture needs at least 2 periods of fft_size={plan.fft_size} samples, got {iq.shape[-1]}")
    whole = iq[..., : num_blocks * plan.fft_size]
    whole = whole - whole.mean(axis=-1, keepdims=True).astype(whole.dtype)
    return whole.reshape(*iq.shape[:-1], num_blocks, plan.fft_size)


def _remove_cfo(plan: PilotPlan, iq: np.ndarray, sample_rate_hz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate the common CFO within ±fs/(2P) from y[n+P]·conj(y[n]) and derotate.
    iq [..., N] -> blocks [..., Nb, P], cfo_hz [...], coherent [...] bool."""
    p = plan.fft_size
    iq = iq - iq.mean(axis=-1, keepdims=True).astype(iq.dtype)                        # DC offset out
    corr = np.einsum("...n,...n->...", iq[..., p:], np.conj(iq[..., :-p]))            # [...]
    energy = np.einsum("...n,...n->...", iq, np.conj(iq)).real                         # [...]
    eps = np.angle(corr) / (2 * np.pi * p)                                             # cycles/sample
    coherent = np.abs(corr) > _CFO_MIN_COHERENCE * energy
    eps = np.where(coherent, eps, 0.0)
    blocks = _blocks(plan, iq)                                                         # [..., Nb, P]
    num_blocks = blocks.shape[-2]
    # e^{-j2πε(mP + i)} = e^{-j2πεmP} · e^{-j2πεi}: Nb + P exponentials instead of N
    outer = np.exp(-2j * np.pi * eps[..., None] * p * np.arange(num_blocks))[..., :, None]
    inner = np.exp(-2j * np.pi * eps[..., None] * np.arange(p))[..., None, :]
    return blocks * (outer * inner).astype(np.complex64), eps * sample_rate_hz, coherent


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


def estimate(plan: PilotPlan, iq: np.ndarray, sample_rate_hz: float, correct_cfo: bool = True,
             signature: int = 0) -> BandEstimate:
    """Least-squares estimate of every BS's received power per band and the residual per band.

    iq [..., N] complex, N >= 2·P (samples past the last whole period are ignored).
    signature: the pilot set the burst was sent on (the other set's power is ``foreign``).
    """
    iq = np.asarray(iq, dtype=np.complex64)
    if correct_cfo:
        blocks, cfo_hz, cfo_ok = _remove_cfo(plan, iq, sample_rate_hz)         # [..., Nb, P]
    else:
        blocks, cfo_hz, cfo_ok = _blocks(plan, iq), np.zeros(iq.shape[:-1]), np.ones(iq.shape[:-1], bool)
    num_blocks = blocks.shape[-2]
    spec = _spectra(blocks, plan)                                       # [..., Nb, P]
    periodic = spec.mean(axis=-2, keepdims=True)                        # [..., 1, P] LS periodic part
    bins, _ = plan.pilots(signature)
    other, _ = plan.pilots(1 - signature)
    cfo_ok = cfo_ok & (np.abs(cfo_hz) < _CFO_EDGE * sample_rate_hz / (2 * plan.fft_size))
    per_bin = _hann_power(plan, spec - periodic).sum(axis=-3) / (num_blocks - 1)   # [..., K, Mm]
    sigma2 = per_bin.mean(axis=-1)                                      # [..., K] residual per bin
    bias = plan.tones_per_bs * sigma2[..., None, :] / num_blocks        # [..., 1, K] noise in T tones

    def tone_power(at: np.ndarray) -> np.ndarray:
        amp = periodic[..., 0, at]                                      # [..., B, K, T]
        return amp.real ** 2 + amp.imag ** 2

    own, alien = tone_power(bins), tone_power(other)
    per_tone_bias = sigma2[..., None, :, None] / num_blocks
    min_tone = np.maximum(np.maximum(own.min(axis=-1), alien.min(axis=-1)) - per_tone_bias[..., 0], 0.0)
    return BandEstimate(power=np.maximum(own.sum(axis=-1) - bias, 0.0), residual=sigma2 * plan.bins_per_band,
                        cfo_hz=cfo_hz, foreign=np.maximum(alien.sum(axis=-1) - bias, 0.0),
                        cfo_ok=np.asarray(cfo_ok), min_tone=min_tone)


@dataclass(frozen=True)
class OffsetEstimate:
    """The carrier frequency offset of a calibration capture."""

    cfo_hz: np.ndarray    # [...] offset of the capture against the receiver, Hz
    clear: np.ndarray     # [...] bool: coherent, and exactly one whole-bin shift fits


def estimate_offset(plan: PilotPlan, iq: np.ndarray, sample_rate_hz: float, max_cfo_hz: float,
                    bands: np.ndarray | None = None) -> OffsetEstimate:
    """CFO of a capture of the calibration burst, searched within ±max_cfo_hz: the fine offset
    from the period correlation, then the whole-bin shift in range whose calibration bins hold
    the most periodic energy; clear when that shift holds over 4x the runner-up's energy.
    ``bands`` [K]: the bands the burst was sent in (default: all).
    Cost: one FFT per block and one gather per candidate shift. iq [..., N]."""
    if not (np.isfinite(max_cfo_hz) and max_cfo_hz >= 0):
        raise ValueError(f"max_cfo_hz must be finite and >= 0, got {max_cfo_hz}")
    blocks, fine_hz, coherent = _remove_cfo(plan, np.asarray(iq, dtype=np.complex64), sample_rate_hz)
    periodic = _spectra(blocks, plan).mean(axis=-2)                     # [..., P]
    bin_hz = sample_rate_hz / plan.fft_size
    max_shift = int(np.ceil(max(max_cfo_hz - bin_hz / 2, 0.0) / bin_hz))
    shifts = np.arange(-max_shift, max_shift + 1)
    idx = (plan.calibration_tones(bands)[None, :] + shifts[:, None]) % plan.fft_size   # [S, C]
    energy = (np.abs(periodic[..., idx]) ** 2).sum(axis=-1)            # [..., S]
    ranked = np.sort(energy, axis=-1)
    runner_up = ranked[..., -2] if shifts.size > 1 else np.zeros(ranked.shape[:-1])
    best = shifts[energy.argmax(axis=-1)]
    return OffsetEstimate(cfo_hz=fine_hz + best * bin_hz, clear=coherent & (ranked[..., -1] > 4.0 * runner_up))


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
