"""References that know the PA: in the hardware family the oracle is the per-band optimum of the
real (distorted) step, so no other action beats it on the same state, and max power is not best
when the PAs compress low."""
from types import SimpleNamespace

import numpy as np
import torch

from testbed.env import SpectrumVectorEnv
from testbed.policies import make_policy

# strong compression: the top level (23 dBm) drives every PA 13-19 dB over its saturation point
COMPRESSED = {"network": {"task_family": "hardware", "episode_steps": 20},
              "tasks": {"incumbent_occupancy": [0.0, 0.1], "pa_gain_offset_db": [-6.0, 0.0],
                        "pa_compression_dbm": [4.0, 10.0]}}


def step_throughput(env, actions) -> torch.Tensor:
    """Throughput [N] in bit/s of ``actions`` taken from the current state with fixed draws; the
    state is put back afterwards, so every action is scored on the same state."""
    net = env.net
    state, gen = net.state, net.gen.get_state()
    noise = net.draw_noise()
    level = torch.as_tensor(actions).view(env.num_envs, env.params.num_bs, env.params.num_bands)
    result = net.step_with_noise(level, noise)
    net.state = state
    net.gen.set_state(gen)
    return result.throughput_bps


class NominalPA:
    """``net`` as a reference policy blind to the PA sees it: every level radiates its nominal power."""

    def __init__(self, net):
        self.net = net

    def __getattr__(self, name):
        return getattr(self.net, name)

    def level_response(self, level):
        return self.net.level_power_w[level], None


def test_the_oracle_is_the_optimum_of_the_distorted_step():
    env = SpectrumVectorEnv(COMPRESSED, num_envs=32)
    obs, info = env.reset(seed=0)
    ideal_pa = SimpleNamespace(net=NominalPA(env.net), num_envs=env.num_envs, params=env.params)
    oracle, greedy = make_policy("oracle", env), make_policy("greedy", env)
    nominal_oracle, max_power = make_policy("oracle", ideal_pa), make_policy("max_power", env)
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(8):
        best = step_throughput(env, oracle(obs, info))
        assert (best >= step_throughput(env, greedy(obs, info)) * (1 - 1e-5)).all()
        for _ in range(16):
            random = rng.integers(0, env.params.num_levels, (env.num_envs, env.single_action_space.shape[0]))
            assert (best >= step_throughput(env, random) * (1 - 1e-5)).all()
        nominal = step_throughput(env, nominal_oracle(obs, info))
        assert (best >= nominal * (1 - 1e-5)).all()
        gains.append(float(best.mean() / nominal.mean()))
        assert best.mean() > 1.2 * step_throughput(env, max_power(obs, info)).mean()
        obs, _, _, _, info = env.step(oracle(obs, info))
    assert np.mean(gains) > 1.2, gains          # ignoring the PA would cost more than a fifth of it
