"""Pilot plan and the per-band least-squares estimator, through the simulated RF medium."""
from __future__ import annotations

import numpy as np
import pytest

from hardware.dsp import PilotPlan, band_power, estimate, estimate_offset, external_power, link_sinr
from hardware.emulated.medium import RfMedium

FS_HZ = 2e6
CAPTURE = 16384          # the default capture length (HardwareConfig.capture_samples)
NOISE_BAND = 1e-6        # noise power per band, full-scale units


@pytest.fixture(scope="module")
def plan():
    return PilotPlan(num_bs=3, num_bands=5, fft_size=1024, tones_per_bs=4)


def bench(plan, seed=0, cfo_hz=0.0):
    """Three BS ports and one UE port; noise set to NOISE_BAND per band; random delays."""
    medium = RfMedium(FS_HZ, noise_fs=NOISE_BAND * plan.fft_size / plan.bins_per_band, seed=seed)
    rng = np.random.default_rng(seed)
    bs = [medium.attach(f"bs{b}") for b in range(plan.num_bs)]
    ue = medium.attach("ue")
    for b in range(plan.num_bs):
        medium.set_link(f"bs{b}", "ue", cfo_hz=cfo_hz, delay_samples=int(rng.integers(0, 200)))
    return medium, bs, ue


def send(plan, ports, power):
    """power [B, K]: each BS's pilot power at the receiver (0 dB links)."""
    for b, port in enumerate(ports):
        own = np.zeros_like(power)
        own[b] = power[b]
        port.transmit(plan.waveform(own), cyclic=True)


def test_plan_layout(plan):
    pilots = plan.pilot_bins.reshape(-1)
    assert np.unique(pilots).size == pilots.size
    assert 0 not in pilots and 0 not in plan.measure_bins
    for k in range(plan.num_bands):
        band = list(plan.band_bins[k])
        inner = set(band[plan.edge_guard:-plan.edge_guard])
        assert set(plan.pilot_bins[:, k].ravel()) <= set(plan.measure_bins[k]) <= inner
    edges = plan.band_edges_hz(FS_HZ)
    assert np.all(np.diff(edges[:, 0]) > 0)
    assert edges[-1, 1] - edges[0, 0] <= 0.8 * FS_HZ


def test_waveform_power_and_periodicity(plan):
    power = np.arange(15, dtype=float).reshape(3, 5) * 1e-3
    x = plan.waveform(power)
    assert x.dtype == np.complex64 and x.shape == (1024,)
    assert np.mean(np.abs(x) ** 2) == pytest.approx(power.sum(), rel=1e-5)
    assert np.max(np.abs(x)) < 3.0 * np.sqrt(power.sum())        # low crest factor


def test_plan_refuses_too_few_bins():
    with pytest.raises(ValueError, match="fft_size"):
        PilotPlan(num_bs=8, num_bands=10, fft_size=64, tones_per_bs=4)


def test_codes_are_orthogonal(plan):
    """One BS on the air: every other BS reads (almost) nothing, whatever the timing."""
    medium, bs, ue = bench(plan)
    power = np.zeros((3, 5))
    power[1] = 1e-2
    send(plan, bs, power)
    est = estimate(plan, ue.receive(CAPTURE), FS_HZ)
    np.testing.assert_allclose(est.power[1], 1e-2, rtol=0.02)
    assert est.power[[0, 2]].max() < 1e-3 * NOISE_BAND * 10
    np.testing.assert_allclose(est.residual, NOISE_BAND, rtol=0.1)


def test_sinr_accuracy_meets_spec(plan):
    """Median |error| <= 0.5 dB for true SINR uniform in [-5, 30] dB; interference from the other
    BSs and noise in random proportions; random delays and a common 500 Hz CFO."""
    rng = np.random.default_rng(7)
    errors = []
    medium, bs, ue = bench(plan, seed=3, cfo_hz=500.0)
    for _ in range(60):
        sinr_db = rng.uniform(-5.0, 30.0, size=5)                       # per band
        share = rng.uniform(0.0, 1.0, size=5)                           # interference share of I+N
        i_plus_n = NOISE_BAND / (1.0 - share * 0.99)
        power = np.zeros((3, 5))
        power[0] = 10 ** (sinr_db / 10) * i_plus_n
        split = rng.uniform(0, 1, size=5)
        power[1] = (i_plus_n - NOISE_BAND) * split
        power[2] = (i_plus_n - NOISE_BAND) * (1 - split)
        send(plan, bs, power)
        est = estimate(plan, ue.receive(CAPTURE), FS_HZ)
        measured_db = 10 * np.log10(link_sinr(est.power, est.residual)[0])
        errors.extend(measured_db - sinr_db)
    errors = np.abs(np.array(errors))
    assert np.median(errors) <= 0.5
    assert np.percentile(errors, 95) <= 1.5


def test_cfo_is_estimated_and_removed(plan):
    medium, bs, ue = bench(plan, cfo_hz=-850.0)
    power = np.full((3, 5), 1e-3)
    send(plan, bs, power)
    est = estimate(plan, ue.receive(CAPTURE), FS_HZ)
    assert est.cfo_hz == pytest.approx(-850.0, abs=5.0)
    np.testing.assert_allclose(est.power, 1e-3, rtol=0.05)
    uncorrected = estimate(plan, ue.receive(CAPTURE), FS_HZ, correct_cfo=False)
    assert uncorrected.residual.min() > 10 * NOISE_BAND     # leakage the correction removes


def test_external_interferer_lands_in_the_residual(plan):
    medium, bs, ue = bench(plan)
    lo, hi = plan.band_edges_hz(FS_HZ)[2]
    medium.set_interferer("incumbent", lo, hi, power_fs=50 * NOISE_BAND, gain_db={"ue": 0.0})
    send(plan, bs, np.full((3, 5), 1e-3))
    est = estimate(plan, ue.receive(CAPTURE), FS_HZ)
    assert est.residual[2] == pytest.approx(51 * NOISE_BAND, rel=0.1)
    np.testing.assert_allclose(np.delete(est.residual, 2), NOISE_BAND, rtol=0.15)
    np.testing.assert_allclose(est.power, 1e-3, rtol=0.05)


def test_occupancy_from_tx_off_capture(plan):
    medium, bs, ue = bench(plan)
    floor = band_power(plan, ue.receive(CAPTURE))
    np.testing.assert_allclose(floor, NOISE_BAND, rtol=0.1)
    lo, hi = plan.band_edges_hz(FS_HZ)[4]
    medium.set_interferer("incumbent", lo, hi, power_fs=100 * NOISE_BAND, gain_db={"ue": 0.0})
    excess = external_power(plan, ue.receive(CAPTURE), floor)
    assert excess[4] == pytest.approx(100 * NOISE_BAND, rel=0.1)
    assert excess[:4].max() < 0.5 * NOISE_BAND


def test_batched_captures_match_single(plan):
    medium, bs, ue = bench(plan)
    send(plan, bs, np.full((3, 5), 1e-3))
    iq = np.stack([ue.receive(4096) for _ in range(3)])
    batched = estimate(plan, iq, FS_HZ)
    for i in range(3):
        single = estimate(plan, iq[i], FS_HZ)
        np.testing.assert_allclose(batched.power[i], single.power, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(batched.residual[i], single.residual, rtol=1e-5)


def test_short_capture_is_refused(plan):
    with pytest.raises(ValueError, match="2 periods"):
        estimate(plan, np.zeros(1500, np.complex64), FS_HZ)


def test_signature_sets_are_disjoint_and_carry_the_same_power(plan):
    a, b = plan.pilots(0)[0].ravel(), plan.pilots(1)[0].ravel()
    assert not set(a) & set(b) and np.unique(b).size == b.size and 0 not in b
    for k in range(plan.num_bands):
        assert set(plan.alt_pilot_bins[:, k].ravel()) <= set(plan.measure_bins[k])
    power = np.full((3, 5), 1e-3)
    x1 = plan.waveform(power, signature=1)
    assert np.mean(np.abs(x1) ** 2) == pytest.approx(power.sum(), rel=1e-5)
    assert np.max(np.abs(x1)) < 3.0 * np.sqrt(power.sum())
    with pytest.raises(ValueError, match="signature"):
        plan.waveform(power, signature=2)


@pytest.mark.parametrize("signature", [0, 1])
def test_a_capture_of_the_other_signature_is_foreign(plan, signature):
    """The burst on air was sent with the other signature (a stale capture): its power shows up
    as foreign, not as the BSs' power; a capture of the right burst has a foreign share near 0."""
    medium, bs, ue = bench(plan, seed=4)
    power = np.full((3, 5), 1e-4)
    for b, port in enumerate(bs):
        own = np.zeros_like(power)
        own[b] = power[b]
        port.transmit(plan.waveform(own, signature=signature), cyclic=True)
    iq = ue.receive(CAPTURE)
    right = estimate(plan, iq, FS_HZ, signature=signature)
    wrong = estimate(plan, iq, FS_HZ, signature=1 - signature)
    assert right.foreign_share < 0.01 and wrong.foreign_share > 0.99
    np.testing.assert_allclose(right.power, 1e-4, rtol=0.05)
    np.testing.assert_allclose(wrong.foreign, 1e-4, rtol=0.05)


def test_noise_only_capture_has_no_foreign_share_and_no_clear_offset(plan):
    medium, bs, ue = bench(plan, seed=5)
    iq = ue.receive(CAPTURE)
    est = estimate(plan, iq, FS_HZ)
    assert est.foreign_share < 0.5 and not est.cfo_ok and est.cfo_hz == 0.0
    assert not estimate_offset(plan, iq, FS_HZ, max_cfo_hz=65e3).clear


def test_calibration_tones_are_irregular(plan):
    """Every whole-bin shift other than 0 keeps at most a few calibration tones on the set,
    which is what makes the coarse search unambiguous."""
    bins = set(plan.calibration_bins.tolist())
    overlaps = [len(bins & {(b + m) % plan.fft_size for b in bins}) for m in range(1, 64)]
    assert max(overlaps) <= 4 and len(bins) == 4 * plan.num_bands
    x = plan.calibration_waveform(1e-3)
    assert np.mean(np.abs(x) ** 2) == pytest.approx(1e-3 * plan.num_bands, rel=1e-5)
    two = plan.calibration_waveform(1e-3, bands=np.array([0, 1, 0, 0, 1], bool))
    assert np.mean(np.abs(two) ** 2) == pytest.approx(2e-3, rel=1e-5)
    assert set(np.flatnonzero(np.abs(np.fft.fft(two)) > 1e-3)) == set(plan.calibration_tones(np.array([0, 1, 0, 0, 1], bool)))


@pytest.mark.parametrize("cfo_hz", [-61e3, -12.3e3, 2.5e3, 47.1e3, 118e3])
def test_coarse_search_finds_offsets_of_tens_of_khz(plan, cfo_hz):
    """±25 ppm crystals at 2.44 GHz put two radios up to ~120 kHz apart: far beyond the fine
    estimator's ±fs/(2P) (977 Hz here). The calibration burst's coarse search recovers the
    offset within ±max_cfo_hz; the fine estimate alone gives a wrapped value it flags."""
    medium, bs, ue = bench(plan, seed=6, cfo_hz=cfo_hz)
    bs[1].transmit(plan.calibration_waveform(1e-4), cyclic=True)
    iq = ue.receive(CAPTURE)
    off = estimate_offset(plan, iq, FS_HZ, max_cfo_hz=125e3)
    assert off.clear and off.cfo_hz == pytest.approx(cfo_hz, abs=5.0)
    fine = estimate(plan, iq, FS_HZ)
    assert abs(fine.cfo_hz - cfo_hz) > 1e3                        # wrapped: only the search gets it
    if abs(cfo_hz) > 10e3:                                        # the range rounds up to whole bins
        narrow = estimate_offset(plan, iq, FS_HZ, max_cfo_hz=abs(cfo_hz) / 2)
        assert abs(narrow.cfo_hz - cfo_hz) > 1e3                  # outside the tolerance: not found


def test_fine_offset_near_the_edge_of_its_range_is_flagged(plan):
    medium, bs, ue = bench(plan, seed=8, cfo_hz=950.0)              # fs/(2P) = 977 Hz
    send(plan, bs, np.full((3, 5), 1e-4))
    assert not estimate(plan, ue.receive(CAPTURE), FS_HZ).cfo_ok
    medium, bs, ue = bench(plan, seed=8, cfo_hz=300.0)
    send(plan, bs, np.full((3, 5), 1e-4))
    assert estimate(plan, ue.receive(CAPTURE), FS_HZ).cfo_ok


def test_a_burst_lights_every_tone_a_cw_interferer_one(plan):
    """min_tone tells a stale burst in a TX-off capture from a CW interferer sitting on a pilot bin."""
    medium, bs, ue = bench(plan, seed=9)
    tone_bin = int(plan.pilot_bins[1, 2, 0])
    n = np.arange(plan.fft_size)
    bs[0].transmit((0.01 * np.exp(2j * np.pi * tone_bin * n / plan.fft_size)).astype(np.complex64), cyclic=True)
    cw = estimate(plan, ue.receive(CAPTURE), FS_HZ)
    assert cw.power[1, 2] > 10 * cw.residual[2]                 # the tone sits on BS 1's pilot
    assert cw.min_tone.max() < 1e-3 * cw.power[1, 2]            # but lights one tone of four
    send(plan, bs, np.full((3, 5), 1e-4))
    burst = estimate(plan, ue.receive(CAPTURE), FS_HZ)
    np.testing.assert_allclose(burst.min_tone, 1e-4 / plan.tones_per_bs, rtol=0.2)
