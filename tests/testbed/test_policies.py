"""Reference policies: each respects the mask where it should; the oracle beats the others per step."""
import numpy as np
import torch

from testbed.env import SpectrumVectorEnv
from testbed.policies import _level_throughput, _view, make_policy


def one_step_throughput(env, actions) -> torch.Tensor:
    gain, ext, mask, has_ue = _view(env.net)
    level = torch.as_tensor(actions).view(env.num_envs, env.params.num_bs, env.params.num_bands) * mask
    return _level_throughput(env.net, level, gain, ext, has_ue, informed=False).sum(-1)


def test_oracle_is_best_per_step_and_greedy_is_close():
    env = SpectrumVectorEnv({"tasks": {"incumbent_occupancy": [0.1, 0.3]}}, num_envs=64)
    obs, info = env.reset(seed=0)
    policies = {name: make_policy(name, env, seed=0) for name in ("random", "max_power", "greedy", "oracle")}
    for _ in range(10):
        scores = {name: one_step_throughput(env, pol(obs, info)) for name, pol in policies.items()}
        for name in ("random", "max_power", "greedy"):
            assert (scores["oracle"] >= scores[name] * (1 - 1e-5)).all(), name
        assert scores["greedy"].mean() >= 0.9 * scores["oracle"].mean()
        assert scores["oracle"].mean() > 1.05 * scores["random"].mean()
        obs, _, _, _, info = env.step(policies["random"](obs, info))


def test_max_power_uses_exactly_the_unmasked_bands():
    env = SpectrumVectorEnv({"tasks": {"incumbent_occupancy": [0.3, 0.5]}}, num_envs=16)
    obs, info = env.reset(seed=2)
    policy = make_policy("max_power", env)
    for _ in range(20):
        actions = policy(obs, info)
        mask = env._mask().reshape(16, -1)
        assert np.array_equal(actions == 3, mask) and np.array_equal(actions == 0, ~mask)
        obs, _, _, _, info = env.step(actions)
        assert info["blocked_unsafe"].sum() == 0


def test_oracle_matches_brute_force_on_a_tiny_network():
    """The full search over L^(B*K) on a 2-BS, 2-band network agrees with the per-band oracle."""
    import itertools
    env = SpectrumVectorEnv({"network": {"num_bs": 2, "num_ue": 3, "num_bands": 2, "num_levels": 3}}, num_envs=8)
    obs, info = env.reset(seed=4)
    best = make_policy("oracle", env)(obs, info)
    oracle_score = one_step_throughput(env, best)
    brute = torch.stack([one_step_throughput(env, np.tile(np.array(c), (8, 1)))
                         for c in itertools.product(range(3), repeat=4)]).amax(0)
    torch.testing.assert_close(oracle_score, brute)


def test_switch_off_never_runs_a_link_under_gamma_min_and_beats_the_oracle_on_return():
    """Its predictions are exact for the coming step (true gains, fading, incumbents and hardware),
    and dropping a link only lowers the interference of the others: so no SINR violation, ever;
    and it earns more return per episode than the throughput-only oracle, in both task families."""
    for family in ("standard", "hardware"):
        config = {"network": {"task_family": family}, "tasks": {"access_gain_offset_db": [-20.0, 0.0]}}
        returns = {}
        for name in ("oracle", "switch_off"):
            env = SpectrumVectorEnv(config, num_envs=32)
            obs, info = env.reset(seed=1)
            policy, total = make_policy(name, env), 0.0
            for _ in range(env.params.episode_steps):
                obs, reward, _, _, info = env.step(policy(obs, info))
                total += reward.mean()
                if name == "switch_off":
                    assert info["sinr_violations"].sum() == 0, family
            returns[name] = total
        assert returns["switch_off"] > returns["oracle"] + 5.0, (family, returns)
