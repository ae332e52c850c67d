"""The Transmitter: safety token, masks, hard limits checked before anything is sent, no clipping,
dry run, BSs sharing a radio."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.dsp import PilotPlan, estimate
from hardware.emulated.medium import RfMedium
from hardware.emulated.mock import MockRadio
from hardware.radio import RadioSettings, SafetyViolation, TxLimits
from hardware.transmitter import Transmitter
from sim.safety import apply_safety_filter

SETTINGS = RadioSettings(2.44e9, 2e6, 2e6, tx_gain_db=0.0, rx_gain_db=0.0)
LIMITS = TxLimits(max_tx_gain_db=0.0, allowed_center_hz=(2.44e9,), sample_rate_range_hz=(1e6, 4e6), max_amplitude=0.7)
LEVEL_POWER_FS = torch.tensor([0.0, 1e-3, 1e-2, 1e-1])
PLAN = PilotPlan(num_bs=3, num_bands=4, fft_size=512, tones_per_bs=2)


def make_radios(names, dry_run=False, limits=LIMITS):
    medium = RfMedium(2e6, noise_fs=0.0)
    radios = {n: MockRadio(n, limits, dry_run=dry_run, medium=medium) for n in names}
    ue = medium.attach("ue")
    for r in radios.values():
        r.configure(SETTINGS)
    return radios, ue


def filtered(level, interference):
    return apply_safety_filter(torch.as_tensor(level).view(1, 3, 4), torch.as_tensor(interference).view(1, 3, 4),
                               LEVEL_POWER_FS, i_max_w=1e-9)


def test_pilots_carry_executed_power_times_link_gain():
    radios, ue = make_radios(["r0", "r1", "r2"])
    tx = Transmitter(radios, ["r0", "r1", "r2"], PLAN)
    level = torch.tensor([[3, 2, 1, 0], [1, 1, 1, 1], [0, 3, 0, 3]])
    gain = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 1.0, 0.1]])
    safe = filtered(level, torch.zeros(3, 4))
    tx.transmit(safe, 0, gain)
    est = estimate(PLAN, ue.receive(8192), 2e6)
    expected = safe.power_w[0].numpy() * gain
    np.testing.assert_allclose(est.power, expected, rtol=1e-3, atol=1e-9)


def test_bs_sharing_a_radio_are_summed():
    radios, ue = make_radios(["one"])
    tx = Transmitter(radios, ["one", "one", "one"], PLAN)
    safe = filtered(torch.full((3, 4), 1), torch.zeros(3, 4))
    bursts = tx.transmit(safe, 0, np.ones((3, 4)))
    assert list(bursts) == ["one"]
    est = estimate(PLAN, ue.receive(8192), 2e6)
    np.testing.assert_allclose(est.power, 1e-3, rtol=1e-3)


def test_refuses_anything_but_safe_powers():
    radios, _ = make_radios(["r0", "r1", "r2"])
    tx = Transmitter(radios, ["r0", "r1", "r2"], PLAN)
    with pytest.raises(SafetyViolation, match="safety filter"):
        tx.transmit(torch.full((1, 3, 4), 0.1), 0, np.ones((3, 4)))
    assert not any(r.port.transmitting for r in radios.values())


def test_limit_breach_sends_nothing_at_all():
    """r2's burst is too strong: r0 and r1 must not start either (all bursts are checked first)."""
    radios, _ = make_radios(["r0", "r1", "r2"])
    tx = Transmitter(radios, ["r0", "r1", "r2"], PLAN)
    safe = filtered(torch.full((3, 4), 3), torch.zeros(3, 4))
    gain = np.ones((3, 4))
    gain[2] = 100.0
    with pytest.raises(SafetyViolation, match="max_amplitude"):
        tx.transmit(safe, 0, gain)
    assert not any(r.port.transmitting for r in radios.values())
    assert tx.peak(safe, 0, gain) > LIMITS.max_amplitude


def test_settings_breach_is_refused_before_sending():
    radios, _ = make_radios(["r0", "r1", "r2"])
    tx = Transmitter(radios, ["r0", "r1", "r2"], PLAN)
    strict = TxLimits(max_tx_gain_db=-20.0, allowed_center_hz=(2.44e9,), sample_rate_range_hz=(1e6, 4e6))
    object.__setattr__(radios["r1"], "limits", strict)       # limits tightened after configure
    with pytest.raises(SafetyViolation, match="tx_gain_db"):
        tx.transmit(filtered(torch.full((3, 4), 1), torch.zeros(3, 4)), 0, np.ones((3, 4)))
    assert not any(r.port.transmitting for r in radios.values())


def test_dry_run_builds_and_checks_but_never_sends():
    radios, ue = make_radios(["r0", "r1", "r2"])
    tx = Transmitter(radios, ["r0", "r1", "r2"], PLAN, dry_run=True)
    bursts = tx.transmit(filtered(torch.full((3, 4), 2), torch.zeros(3, 4)), 0, np.ones((3, 4)))
    assert set(bursts) == {"r0", "r1", "r2"}
    assert not any(r.port.transmitting for r in radios.values())
    assert np.all(ue.receive(1024) == 0)
    gain = np.full((3, 4), 1e4)
    with pytest.raises(SafetyViolation):
        tx.transmit(filtered(torch.full((3, 4), 3), torch.zeros(3, 4)), 0, gain)


def test_idle_radio_is_muted():
    radios, _ = make_radios(["r0", "r1", "r2"])
    tx = Transmitter(radios, ["r0", "r1", "r2"], PLAN)
    tx.transmit(filtered(torch.full((3, 4), 2), torch.zeros(3, 4)), 0, np.ones((3, 4)))
    level = torch.full((3, 4), 2)
    level[1] = 0
    bursts = tx.transmit(filtered(level, torch.zeros(3, 4)), 0, np.ones((3, 4)))
    assert "r1" not in bursts and not radios["r1"].port.transmitting
    assert radios["r0"].port.transmitting and radios["r2"].port.transmitting


def test_bad_link_gain_is_refused():
    radios, _ = make_radios(["r0", "r1", "r2"])
    tx = Transmitter(radios, ["r0", "r1", "r2"], PLAN)
    safe = filtered(torch.full((3, 4), 1), torch.zeros(3, 4))
    for gain in (np.ones((3, 3)), np.full((3, 4), -1.0), np.full((3, 4), np.nan)):
        with pytest.raises(ValueError, match="link_gain"):
            tx.transmit(safe, 0, gain)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=12, max_size=12),
       st.lists(st.floats(-120.0, -60.0), min_size=12, max_size=12))
def test_masked_bands_never_carry_a_pilot(levels, interference_dbm):
    """Whatever the request and the interference map, no pilot energy on a band the filter closes."""
    radios, _ = make_radios(["r0", "r1", "r2"])
    tx = Transmitter(radios, ["r0", "r1", "r2"], PLAN)
    interference_w = 10 ** (torch.tensor(interference_dbm) / 10) * 1e-3
    safe = filtered(torch.tensor(levels), interference_w)
    bursts = tx.transmit(safe, 0, np.full((3, 4), 0.3))
    closed = ~safe.mask[0].numpy()
    for b, name in enumerate(["r0", "r1", "r2"]):
        if name not in bursts:
            continue
        spectrum = np.abs(np.fft.fft(bursts[name].iq)) / PLAN.fft_size
        for k in np.flatnonzero(closed[b]):
            assert spectrum[PLAN.pilot_bins[b, k]].max() < 1e-7


def test_peak_covers_both_pilot_sets():
    """A back-off scaled to ``peak`` must hold on the set the burst is then sent on: the two sets have
    different phases, hence different peaks, and ``peak`` is the larger of the two."""
    radios, _ = make_radios(["r0", "r1", "r2"])
    tx = Transmitter(radios, ["r0", "r1", "r2"], PilotPlan(num_bs=3, num_bands=4, fft_size=256, tones_per_bs=3))
    safe = filtered(torch.full((3, 4), 3), torch.zeros(3, 4))
    gain = np.random.default_rng(0).uniform(0.5, 2.0, (3, 4))
    per_set = [max(float(np.abs(iq).max()) for iq in tx.build(safe, 0, gain, s).values()) for s in (0, 1)]
    assert per_set[0] != per_set[1]
    assert tx.peak(safe, 0, gain) == max(per_set)
    scale = 0.999 * LIMITS.max_amplitude / tx.peak(safe, 0, gain)
    for signature in (0, 1):                         # scaled to the peak: both sets within the limit
        tx.transmit(safe, 0, gain * scale ** 2, signature)
