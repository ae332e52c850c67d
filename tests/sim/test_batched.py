"""Batched equals single, and seeded runs repeat bit for bit."""
import torch

from sim.network import SimNetwork
from sim.params import NetworkParams, TaskRanges


def test_batched_step_equals_single_steps_with_the_same_draws():
    n = 6
    batched = SimNetwork(NetworkParams(), TaskRanges(), n, seed=3)
    batched.reset()
    singles = []
    for i in range(n):
        s = SimNetwork(NetworkParams(), TaskRanges(), 1)
        s.tasks, s.state = batched.tasks.select(i), batched.state.select(i)
        singles.append(s)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        level = torch.randint(0, 4, (n, 3, 5), generator=gen)
        noise = batched.draw_noise()
        res = batched.step_with_noise(level, noise)
        for i, s in enumerate(singles):
            one = s.step_with_noise(level[i:i + 1], noise.select(i))
            for name in ("sinr_lin", "rate_bps", "delay_s", "reward", "throughput_bps", "fairness", "map_w"):
                torch.testing.assert_close(getattr(one, name), getattr(res, name)[i:i + 1], rtol=1e-6, atol=0)
            torch.testing.assert_close(s.state.map_w, batched.state.map_w[i:i + 1], rtol=1e-6, atol=0)
            assert torch.equal(one.safe.level, res.safe.level[i:i + 1])


def trajectory(seed: int) -> list[torch.Tensor]:
    net = SimNetwork(NetworkParams(), TaskRanges(), 32, seed=seed)
    net.reset()
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(30):
        res = net.step(torch.randint(0, 4, (32, 3, 5), generator=gen))
        out += [res.reward, res.sinr_lin, net.state.queue_bits]
    return out


def test_same_seed_same_trajectory_bit_for_bit():
    a, b, c = trajectory(7), trajectory(7), trajectory(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
