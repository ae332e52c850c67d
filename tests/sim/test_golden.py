"""Golden cases computed by hand: 2 BSs, 2 UEs, 1 band, no fading, no incumbents."""
import math
from dataclasses import replace

import pytest
import torch

from sim.network import SimNetwork, StepNoise
from sim.params import NetworkParams, TaskRanges
from sim.reward import jain_index
from sim.tasks import Tasks

P = NetworkParams(num_bs=2, num_ue=2, num_bands=1, num_levels=2, max_power_dbm=20.0)  # level 1 = 0.1 W
G_DB = [[-80.0, -95.0], [-100.0, -85.0]]   # g(b, u)
H_DB = -112.0                               # h(0,1) = h(1,0)
NOISE_W = 10 ** ((-174 + 70 + 7) / 10) * 1e-3  # -97 dBm


def hand_tasks(incumbent_power_dbm=-80.0) -> Tasks:
    t = lambda x: torch.tensor([x], dtype=torch.float32)  # noqa: E731
    return Tasks(
        bs_pos_m=torch.zeros(1, 2, 2), ue_pos_m=torch.zeros(1, 2, 2),
        path_loss_exponent=t(3.0), path_loss_ref_db=t(40.0), shadowing_std_db=t(0.0),
        coherence=t(0.9), fading_std_db=t(0.0), traffic_bps=torch.tensor([[1e6, 2e6]]),
        incumbent_occupancy=t(0.0), incumbent_on_steps=t(10.0),
        incumbent_power_w=t(10 ** (incumbent_power_dbm / 10) * 1e-3),
        gain_mean_db=torch.tensor([G_DB]), bs_gain_mean_db=torch.tensor([[[-math.inf, H_DB], [H_DB, -math.inf]]]),
        assoc=torch.tensor([[0, 1]]), ue_by_rank=torch.tensor([[[0, 1], [1, 0]]]), num_assoc=torch.tensor([[1, 1]]),
    )


def hand_network(**kw) -> SimNetwork:
    net = SimNetwork(replace(P, **kw), TaskRanges(), num_envs=1)
    net.tasks = hand_tasks()
    net.initial_state(net.tasks)
    return net


def noise(arrivals=(30_000.0, 10_000.0)) -> StepNoise:
    return StepNoise(torch.zeros(1, 2 * 2 + 2 * 2), torch.ones(1, 2, 1), torch.tensor([arrivals]))


def test_sinr_rates_queue_reward_by_hand():
    net = hand_network()
    res = net.step_with_noise(torch.tensor([[[1], [1]]]), noise())
    p = 0.1
    g = [[10 ** (x / 10) for x in row] for row in G_DB]
    sinr0 = p * g[0][0] / (p * g[1][0] + NOISE_W)
    sinr1 = p * g[1][1] / (p * g[0][1] + NOISE_W)
    assert res.sinr_lin[0, :, 0].tolist() == pytest.approx([sinr0, sinr1], rel=1e-5)

    r0, r1 = 10e6 * math.log2(1 + sinr0), 10e6 * math.log2(1 + sinr1)
    assert res.rate_bps[0].tolist() == pytest.approx([r0, r1], rel=1e-5)
    assert res.throughput_bps.item() == pytest.approx(r0 + r1, rel=1e-5)
    jain = (r0 + r1) ** 2 / (2 * (r0**2 + r1**2))
    assert res.fairness.item() == pytest.approx(jain, rel=1e-5)

    # queues: max(0, 0 + A - R dt); delay by Little's law Q / λ
    q = [max(0.0, 30_000 - r0 * 0.01), max(0.0, 10_000 - r1 * 0.01)]
    assert net.state.queue_bits[0].tolist() == pytest.approx(q, abs=1e-2)
    assert res.delay_s[0].tolist() == pytest.approx([q[0] / 1e6, q[1] / 2e6], abs=1e-8)

    cost = (P.cost_power * 2 * p + P.cost_switch * 2 * p) / p   # p̂ = P_max on both, prev 0
    assert res.cost.item() == pytest.approx(cost, rel=1e-5)
    sinr_viol = sum(10 * math.log10(s) < P.min_sinr_db for s in (sinr0, sinr1))
    lat_viol = sum(qq / lam > P.max_delay_s for qq, lam in zip(q, (1e6, 2e6)))
    pen = P.penalty_sinr * sinr_viol + P.penalty_delay * lat_viol
    assert res.penalty.item() == pytest.approx(pen, abs=1e-6)
    reward = (P.w_throughput * (r0 + r1) / P.throughput_ref_bps + P.w_fairness * jain
              - P.w_cost * cost - P.w_penalty * pen)
    assert res.reward.item() == pytest.approx(reward, rel=1e-5)


def test_interference_map_by_hand():
    net = hand_network()
    net.step_with_noise(torch.tensor([[[1], [0]]]), noise())
    h = 10 ** (H_DB / 10)
    # BS 1 hears BS 0's 0.1 W through h; BS 0 hears nobody
    assert net.state.map_w[0, :, 0].tolist() == pytest.approx([0.0, 0.1 * h], rel=1e-5)


def test_sinr_violation_and_mask_by_hand():
    """An incumbent above I_max at BS 0 closes its band at the next step and counts a blocked request."""
    net = hand_network()
    s = net.state
    on = torch.tensor([[[True], [False]]])
    net.state = replace(s, incumbent_on=on)
    net.state = replace(net.state, external_w=net.sense_external_w(), map_w=net.sense_external_w())
    res = net.step_with_noise(torch.tensor([[[1], [1]]]), noise())
    assert res.safe.mask[0, :, 0].tolist() == [False, True]
    assert res.safe.power_w[0, 0, 0].item() == 0.0
    assert res.blocked_unsafe.item() == 1
    assert res.executed_violations.item() == 0
    g11, x = 10 ** (-85 / 10), 10 ** (-80 / 10) * 1e-3
    assert res.sinr_lin[0, 1, 0].item() == pytest.approx(0.1 * g11 / NOISE_W, rel=1e-5)  # UE 1 hears no incumbent
    assert x > P.i_max_w


def test_jain_edge_cases():
    x = torch.tensor([[3.0, 3.0, 3.0, 0.0]])
    assert jain_index(x, x > 0).item() == pytest.approx(1.0)
    y = torch.tensor([[5.0, 0.0, 0.0, 0.0]])
    assert jain_index(y, torch.ones_like(y, dtype=torch.bool)).item() == pytest.approx(0.25)
    assert jain_index(y).item() == pytest.approx(0.25)                # every entry when no mask is given
    assert jain_index(y, torch.zeros_like(y, dtype=torch.bool)).item() == 0.0


def test_fairness_over_ues_by_hand():
    """One BS on: Jain over active links is 1 (one link), over the UEs' rates [r0, 0] it is 1/2;
    both on, the two agree (one link per UE)."""
    links, ues = hand_network(), hand_network(fairness_over="ues")
    one = torch.tensor([[[1], [0]]])
    a, b = links.step_with_noise(one, noise()), ues.step_with_noise(one, noise())
    assert a.fairness.item() == pytest.approx(1.0) and b.fairness.item() == pytest.approx(0.5, rel=1e-5)
    assert b.reward.item() == pytest.approx(a.reward.item() - 0.5 * P.w_fairness, rel=1e-5)
    both = torch.tensor([[[1], [1]]])
    assert ues.step_with_noise(both, noise()).fairness.item() == pytest.approx(
        links.step_with_noise(both, noise()).fairness.item(), rel=1e-5)

