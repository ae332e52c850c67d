"""Rollout storage and GAE: the vectorised estimator equals a plain double loop."""
import numpy as np
import torch

from agents.rollout import RolloutStorage, compute_gae


def plain_gae(rewards, values, bootstrap, ends, last_value, gamma, lam):
    """GAE written out per lane and per step in Python floats."""
    num_steps, num_envs = rewards.shape
    adv = np.zeros((num_steps, num_envs))
    for n in range(num_envs):
        running = 0.0
        for t in reversed(range(num_steps)):
            if ends[t, n]:
                next_value, running = bootstrap[t, n], 0.0
            else:
                next_value = values[t + 1, n] if t + 1 < num_steps else last_value[n]
            delta = rewards[t, n] + gamma * next_value - values[t, n]
            running = delta + gamma * lam * running
            adv[t, n] = running
    return adv, adv + values


def test_vectorised_gae_equals_plain_loop():
    rng = np.random.default_rng(0)
    num_steps, num_envs = 37, 5
    rewards, values = rng.normal(size=(num_steps, num_envs)), rng.normal(size=(num_steps, num_envs))
    bootstrap = rng.normal(size=(num_steps, num_envs))
    ends = rng.random((num_steps, num_envs)) < 0.15
    last_value = rng.normal(size=num_envs)
    t = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    adv, ret = compute_gae(t(rewards), t(values), t(bootstrap), torch.as_tensor(ends), t(last_value), 0.97, 0.9)
    ref_adv, ref_ret = plain_gae(rewards, values, bootstrap, ends, last_value, 0.97, 0.9)
    np.testing.assert_allclose(adv.numpy(), ref_adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret.numpy(), ref_ret, rtol=1e-12, atol=1e-12)


def test_an_end_stops_the_advantage_and_uses_the_bootstrap_value():
    # two steps, an end after the first: its advantage is r0 + γ·bootstrap - v0, nothing from step 1
    adv, _ = compute_gae(torch.tensor([[1.0], [100.0]]), torch.tensor([[0.5], [0.0]]), torch.tensor([[2.0], [0.0]]),
                         torch.tensor([[True], [False]]), torch.tensor([0.0]), 0.9, 0.95)
    assert adv[0, 0].item() == torch.tensor(1.0 + 0.9 * 2.0 - 0.5).item()


def test_storage_marks_ends_per_lane_and_clears():
    s = RolloutStorage(3, 2, obs_dim=4, num_heads=2)
    for _ in range(3):
        s.add(torch.ones(2, 4), torch.zeros(2, 2, dtype=torch.long), torch.zeros(2), torch.zeros(2), torch.ones(2))
    s.mark_end(torch.tensor([5.0, 7.0]), lanes=torch.tensor([False, True]))
    assert s.full
    assert s.ends[2].tolist() == [False, True] and s.bootstrap[2].tolist() == [0.0, 7.0]
    s.clear()
    assert not s.full and s.step == 0
