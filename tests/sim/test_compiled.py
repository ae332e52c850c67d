"""The compiled step (``SimNetwork(..., compiled=True)``) against the eager one, fed the same draws."""
from dataclasses import fields, is_dataclass

import pytest
import torch
import torch._dynamo.utils

from sim.network import SimNetwork
from testbed.config import load_config


def _pairs(result_a, result_b):
    for f in fields(result_a):
        a, b = getattr(result_a, f.name), getattr(result_b, f.name)
        if is_dataclass(a):
            yield from _pairs(a, b)
        else:
            yield f.name, a, b


def _assert_equal(name: str, a, b) -> None:
    if not isinstance(a, torch.Tensor):    # the filter's token: the very same object
        assert a is b, name
    elif a.dtype.is_floating_point:        # fused kernels round differently: float32 ULPs of the tensor's scale
        torch.testing.assert_close(b, a, rtol=2e-5, atol=2e-5 * a.abs().max().item(), msg=name)
    else:
        assert torch.equal(a, b), name


@pytest.mark.slow
@pytest.mark.parametrize("family, num_envs", [("standard", 13), ("hardware", 1)])
def test_compiled_step_and_observation_equal_the_eager_ones_across_episodes(family, num_envs):
    cfg = load_config("paper", {"network": {"task_family": family}})
    eager = SimNetwork(cfg.network, cfg.task_ranges, num_envs, seed=3)
    compiled = SimNetwork(cfg.network, cfg.task_ranges, num_envs, seed=3, compiled=True)
    gen = torch.Generator().manual_seed(0)
    shape = (num_envs, cfg.network.num_bs * cfg.network.num_bands)
    frames = None
    for episode in range(3):
        eager.reset()
        compiled.reset()
        for t in range(40):
            level = torch.randint(0, cfg.network.num_levels, shape, generator=gen)
            for name, a, b in _pairs(eager.step(level), compiled.step(level)):
                _assert_equal(f"episode {episode} step {t}: {name}", a, b)
            _assert_equal(f"episode {episode} step {t}: observation", eager.observation(), compiled.observation())
        if episode == 1:                   # compiled by now (the step index becomes dynamic on step 2)
            frames = dict(torch._dynamo.utils.counters["frames"])
    assert dict(torch._dynamo.utils.counters["frames"]) == frames, "a new episode recompiled the step"


def test_only_the_simulator_compiles():
    class Measured(SimNetwork):
        pass

    cfg = load_config("paper")
    with pytest.raises(ValueError, match="compiled: only the simulator's step compiles, not Measured's"):
        Measured(cfg.network, cfg.task_ranges, 1, compiled=True)


def test_env_compile_is_refused_on_radios_before_anything_opens():
    from testbed.config import ConfigError

    with pytest.raises(ConfigError, match="env.compile: only the simulator's step compiles; backend is 'mock'"):
        load_config("bench_mock", {"env": {"compile": True}})


@pytest.mark.slow
def test_the_gymnasium_env_compiled_plays_as_the_eager_one():
    import numpy as np

    from testbed.env import SpectrumVectorEnv

    envs = [SpectrumVectorEnv(load_config("paper", {"env": {"num_envs": 4, "compile": c}})) for c in (False, True)]
    obs = [env.reset(seed=5)[0] for env in envs]
    np.testing.assert_array_equal(obs[0], obs[1])
    rng = np.random.default_rng(0)
    for _ in range(30):
        action = rng.integers(0, 4, (4, 15))
        (o0, r0, *_), (o1, r1, *_) = (env.step(action) for env in envs)
        np.testing.assert_allclose(o1, o0, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(r1, r0, rtol=2e-5, atol=2e-5 * np.abs(r0).max())
