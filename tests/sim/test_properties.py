"""Invariants, checked with hypothesis: the safety filter, Jain's bounds, queues, fading."""
import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from sim.channel import ar1_fading
from sim.network import SimNetwork
from sim.params import NetworkParams, TaskRanges
from sim.reward import jain_index, update_queues
from sim.safety import SafePowers, SafetyViolation, apply_safety_filter

import pytest

LEVEL_W = torch.tensor(NetworkParams().level_power_w, dtype=torch.float32)
I_MAX_W = NetworkParams().i_max_w


@st.composite
def maps_and_levels(draw):
    n, b, k = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    map_dbm = -120 + 60 * torch.rand(n, b, k, generator=gen)
    level = torch.randint(0, 4, (n, b, k), generator=gen)
    gain = 10 ** ((-130 + 60 * torch.rand(n, b, b, generator=gen)) / 10)
    return 10 ** (map_dbm / 10) * 1e-3, level, gain


@settings(max_examples=200, deadline=None)
@given(maps_and_levels(), st.sampled_from(["zero", "lower"]))
def test_no_power_on_a_masked_band(case, mode):
    map_w, level, gain = case
    safe = apply_safety_filter(level, map_w, LEVEL_W, I_MAX_W, mode, bs_gain_lin=gain)
    assert not ((safe.power_w > 0) & (map_w > I_MAX_W)).any()
    assert (safe.level <= level).all()
    assert torch.equal(safe.blocked, (level > 0) & (safe.level == 0))
    if mode == "zero":
        assert torch.equal(safe.level, torch.where(map_w <= I_MAX_W, level, 0))


@settings(max_examples=100, deadline=None)
@given(maps_and_levels())
def test_lower_mode_keeps_predicted_interference_under_i_max(case):
    map_w, level, gain = case
    b = level.shape[1]
    gain = gain.clone()
    gain.diagonal(dim1=1, dim2=2).zero_()
    safe = apply_safety_filter(level, map_w, LEVEL_W, I_MAX_W, "lower", bs_gain_lin=gain)
    predicted = torch.bmm(gain.transpose(1, 2), safe.power_w)  # at every BS, from the others
    open_ = map_w <= I_MAX_W
    if b > 1:
        assert (predicted[open_] <= I_MAX_W * (1 + 1e-5)).all()


def test_safe_powers_cannot_be_forged():
    with pytest.raises(SafetyViolation):
        SafePowers(level=torch.zeros(1), power_w=torch.zeros(1), mask=torch.ones(1, dtype=torch.bool),
                   blocked=torch.zeros(1, dtype=torch.bool), lowered=torch.zeros(1, dtype=torch.bool))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1e9), min_size=1, max_size=30), st.data())
def test_jain_between_one_over_n_and_one(values, data):
    x = torch.tensor([values], dtype=torch.float64)
    active = torch.tensor([data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))])
    j = jain_index(x, active).item()
    live = x[active]
    if (live > 0).any():
        n = int(active.sum())
        assert 1.0 / n - 1e-9 <= j <= 1.0 + 1e-9
    else:
        assert j == 0.0


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_queues_never_negative_and_conserve_bits(seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.zeros(8, 10, dtype=torch.float64)
    for _ in range(50):
        arrivals = torch.poisson(torch.full((8, 10), 5.0), generator=gen).double() * 12_000
        rate = 1e7 * torch.rand(8, 10, generator=gen, dtype=torch.float64)
        new = update_queues(q, arrivals, rate, 0.01)
        assert (new >= 0).all()
        served = q + arrivals - new                    # bits that left the queue this step
        assert (served <= rate * 0.01 + 1e-6).all()    # never more than the link carried
        q = new


def test_fading_stationary_over_long_runs():
    """AR(1) with ρ <= 1 keeps its stationary std σ_f; ρ = 1 freezes the fading."""
    gen = torch.Generator().manual_seed(0)
    rho = torch.tensor([0.8, 0.9, 0.99]).view(3, 1)
    std = torch.tensor([1.0, 2.0, 4.0]).view(3, 1)
    f = torch.randn(3, 2000, generator=gen) * std
    for _ in range(3000):
        f = ar1_fading(f, rho, std, torch.randn(3, 2000, generator=gen))
    assert np.allclose(f.std(1).numpy(), std.view(-1).numpy(), rtol=0.08)
    frozen = ar1_fading(f, torch.tensor(1.0), std, torch.randn(3, 2000, generator=gen))
    assert torch.equal(frozen, f)


def test_sampled_coherence_never_exceeds_one():
    net = SimNetwork(NetworkParams(), TaskRanges(coherence=[0.95, 1.0]), num_envs=512)
    net.reset(seed=1)
    assert (net.tasks.coherence <= 1.0).all()


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["zero", "lower"]))
def test_random_policy_never_executes_a_violation(seed, mode):
    from dataclasses import replace
    net = SimNetwork(replace(NetworkParams(), safety_mode=mode), TaskRanges(incumbent_occupancy=[0.3, 0.6]),
                     num_envs=64, seed=seed)
    net.reset()
    gen = torch.Generator().manual_seed(seed)
    blocked = 0
    for _ in range(30):
        res = net.step(torch.randint(0, 4, (64, 3, 5), generator=gen))
        assert res.executed_violations.sum().item() == 0
        assert not ((res.safe.power_w > 0) & (res.map_w > net.params.i_max_w)).any()
        blocked += res.blocked_unsafe.sum().item()
    assert blocked > 0  # the filter had something to do
