"""The one impairment model (``hardware.emulated.impairments``) and the benches that use it: each
figure does what it says on a block of IQ, and the mock, emulated-Pluto and GNU Radio benches
with their radios' crystals drawn from ±25 ppm (±2 ppm for the USRP stand-in) measure per-band
SINR within 0.5 dB median of the model after the start-up calibration, every impairment on."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from hardware.emulated.impairments import ADC_MAX, Impairments, Receiver, clock_ratio, play_periodic
from sim.network import SimNetwork
from testbed.backends import make_backend
from testbed.config import ConfigError, load_config

FS_HZ = 2e6


def tone(freq_cycles: float, n: int, amplitude: float = 0.1) -> np.ndarray:
    return amplitude * np.exp(2j * np.pi * freq_cycles * np.arange(n))


def peak_bin(x: np.ndarray) -> int:
    return int(np.argmax(np.abs(np.fft.fft(x))))


# --- the model, figure by figure ---------------------------------------------------------------
def test_a_crystal_off_by_ppm_puts_lo_and_sample_clock_off_together_and_its_correction_undoes_it():
    assert clock_ratio(20.0) == pytest.approx(1 + 20e-6)
    assert clock_ratio(20.0, 20.0) == 1.0
    burst = tone(400 / 1024, 1024)                                 # one period of a tone on bin 400
    n = 1 << 16
    same = play_periodic(burst, np.arange(n, dtype=float))
    np.testing.assert_allclose(same, np.tile(burst, n // 1024), atol=1e-12)
    stretched = play_periodic(burst, np.arange(n) * (1 + 500e-6))  # the DAC's clock 500 ppm fast
    assert peak_bin(stretched) == round(400 / 1024 * (1 + 500e-6) * n)   # the tone moved by f·500 ppm
    assert peak_bin(stretched) != peak_bin(same)


def test_iq_imbalance_makes_the_image_the_formula_gives():
    imp = Impairments(iq_gain_db=0.5, iq_phase_deg=3.0)
    y = Receiver(imp, FS_HZ).apply(tone(0.125, 8192))
    spec = np.abs(np.fft.fft(y)) ** 2
    image_db = 10 * np.log10(spec[-1024] / spec[1024])
    g, phi = 10 ** (0.5 / 20), math.radians(3.0)
    expected_db = 10 * np.log10(abs(1 - g * np.exp(1j * phi)) ** 2 / abs(1 + g * np.exp(-1j * phi)) ** 2)
    assert image_db == pytest.approx(expected_db, abs=0.1) and -35 < image_db < -20


def test_dc_offset_phase_noise_and_saturation():
    rx = Receiver(Impairments(dc_offset_dbfs=-40.0), FS_HZ)
    assert 20 * np.log10(abs(rx.apply(np.zeros(4096)).mean())) == pytest.approx(-40.0, abs=0.01)
    noisy = Receiver(Impairments(phase_noise_deg=2.0, phase_noise_corner_hz=1e3), FS_HZ, seed=3)
    x = tone(0.01, 1 << 18)
    phase = np.concatenate([np.angle(noisy.apply(part) / part) for part in np.split(x, 8)])
    assert np.degrees(phase.std()) == pytest.approx(2.0, rel=0.25)
    assert abs(np.corrcoef(phase[:-100], phase[100:])[0, 1]) > 0.5   # continuous across blocks, low-pass
    loud = Receiver(Impairments(), FS_HZ).apply(np.array([3 + 3j, -3 - 0.5j, 0.2j]))
    assert loud.tolist() == pytest.approx([ADC_MAX + 1j * ADC_MAX, -1 - 0.5j, 0.2j], abs=1e-6)


def test_impairment_figures_are_config_fields_with_their_ranges():
    hw = load_config("bench_mock").hardware
    assert not hw.impairments.ideal and hw.impairments.crystal_ppm == 25.0
    drawn = [hw.impairments.for_radio(e, hw.center_hz)["crystal_ppm"] for e in hw.radios if e.cfo_hz is None]
    assert all(abs(p) <= 25.0 for p in drawn) and len(set(drawn)) == len(drawn)
    ue0 = next(e for e in hw.radios if e.name == "ue0")
    assert hw.impairments.for_radio(ue0, hw.center_hz)["crystal_ppm"] == 0.0           # the cfo_hz override
    assert load_config("bench_mock", {"hardware": {"impairments": {"ideal": True}}}).hardware.impairments.for_radio(
        ue0, hw.center_hz) == {}
    with pytest.raises(ConfigError, match=r"hardware.impairments.crystal_ppm: 500 is out of range; allowed"):
        load_config("bench_mock", {"hardware": {"impairments": {"crystal_ppm": 500}}})
    for preset in ("bench_mock", "bench_pluto", "bench_gnuradio"):
        assert not load_config(preset).hardware.impairments.ideal                      # on in every bench


# --- benches: SINR against the model after calibration --------------------------------------
def sinr_errors_db(net, steps: int = 8) -> torch.Tensor:
    """|measured - Eq. 6| in dB over the measured active links of a few random steps."""
    net.reset(seed=11)
    errors = []
    gen = torch.Generator().manual_seed(5)
    for _ in range(steps):
        res = net.step(torch.randint(0, 4, (1, 3, 5), generator=gen))
        analytic, _ = SimNetwork.link_sinr(net, res.safe, res.served_ue, res.gain_db, res.external_w)
        act = res.measured & res.active
        errors.append((10 * torch.log10(res.sinr_lin[act] / analytic[act])).abs())
    return torch.cat(errors)


def assert_calibrated_and_within_half_a_db(net, min_apart_hz: float) -> None:
    offsets = [abs(c["offset_hz"]) for c in net.calibration.values()]
    assert max(offsets) > min_apart_hz                       # the crystals were far apart before
    assert all(abs(c["residual_hz"]) < 20.0 for c in net.calibration.values())
    errors = sinr_errors_db(net)
    assert errors.numel() > 20 and errors.median() < 0.5


def test_mock_bench_with_25_ppm_crystals_measures_the_model():
    net = make_backend(load_config("bench_mock"), num_envs=1)
    try:
        crystals = {n: r.impairments.crystal_ppm for n, r in net.radios.items()}
        assert max(abs(p) for p in crystals.values()) > 10.0
        assert_calibrated_and_within_half_a_db(net, min_apart_hz=20e3)
    finally:
        net.close()


def test_emulated_pluto_bench_with_25_ppm_crystals_measures_the_model():
    from hardware.emulated.iiod import serve_bench

    config = load_config("bench_pluto", {"hardware": {"settle_s": 0.0}})
    emulators, hw = serve_bench(config.hardware, config.network)
    try:
        assert all(not e.impairments == Impairments() for e in emulators)
        net = make_backend(dataclasses.replace(config, hardware=hw), num_envs=1)
        try:
            assert_calibrated_and_within_half_a_db(net, min_apart_hz=2e3)
        finally:
            net.close()
    finally:
        for emu in emulators:
            emu.stop()


def test_gnuradio_emulate_bench_with_2_ppm_crystals_measures_the_model():
    net = make_backend(load_config("bench_gnuradio"), num_envs=1)
    try:
        assert_calibrated_and_within_half_a_db(net, min_apart_hz=500.0)
    finally:
        net.close()
