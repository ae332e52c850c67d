"""The step's precomputed constants give exactly what computing them in place gives: cached 0-d
scalars (``sim.units.scalar_like``) against Python floats, the PA lookup against ``pa_response``."""
import operator

import pytest
import torch

from sim.network import SimNetwork
from sim.units import db_to_lin, dbm_to_w, lin_to_db, scalar_like, w_to_dbm
from testbed.config import load_config

VALUES = [0.0, 1.0, 0.01, 1e-3, 1e3, 2**0.5, 5e8, 1e-30, 12_000.0 / 7.0, 10.0 ** 0.5]
OPS = [operator.mul, operator.truediv, operator.add, operator.sub, operator.lt, operator.le, operator.gt]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.bool])
def test_a_cached_scalar_equals_the_python_float_bit_for_bit(dtype):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 37, generator=gen, dtype=torch.float64) * 1e3).to(dtype)
    for value in VALUES:
        for op in OPS:
            for a, b in ((x, value), (value, x)):
                if op is operator.truediv and a is value:   # float / tensor is reciprocal-then-multiply
                    continue
                try:
                    want = op(a, b)
                except RuntimeError:     # e.g. subtraction with a bool tensor: not defined either way
                    continue
                got = op(*(scalar_like(v, x) if v is value else v for v in (a, b)))
                assert got.dtype == want.dtype and torch.equal(got.view(-1).view(torch.uint8),
                                                                want.view(-1).view(torch.uint8)), (op, value)
        where = torch.where(x > 0, x, value)
        assert torch.equal(torch.where(x > 0, x, scalar_like(value, x)), where)


def test_unit_conversions_keep_float64_precision():
    x = torch.linspace(-120.0, 40.0, 301, dtype=torch.float64)
    assert torch.equal(dbm_to_w(x), torch.pow(10.0, x / 10.0) * 1e-3)
    assert torch.equal(w_to_dbm(dbm_to_w(x)), 10.0 * torch.log10(dbm_to_w(x) * 1e3))
    assert torch.equal(lin_to_db(db_to_lin(x)), 10.0 * torch.log10(torch.pow(10.0, x / 10.0)))


def test_scalar_like_passes_tensors_and_half_precision_through():
    t = torch.tensor([1.0, 2.0])
    assert scalar_like(t, t) is t
    assert scalar_like(0.5, t.half()) == 0.5 and isinstance(scalar_like(0.5, t.half()), float)


@pytest.mark.parametrize("num_envs", [1, 37])
def test_the_pa_lookup_equals_pa_response_bit_for_bit(num_envs):
    cfg = load_config("paper", {"network": {"task_family": "hardware"}})
    net = SimNetwork(cfg.network, cfg.task_ranges, num_envs, seed=2)
    gen = torch.Generator().manual_seed(1)
    for episode in range(2):
        net.reset()
        for _ in range(5):
            res = net.step(torch.randint(0, cfg.network.num_levels, (num_envs, 15), generator=gen))
            power_w, sdr_lin = net.radiated_w(res.safe)
            want_power, want_sdr = net.pa_response(res.safe.level)
            assert torch.equal(power_w, want_power) and torch.equal(sdr_lin, want_sdr)
            assert torch.equal(res.radiated_w, want_power)
