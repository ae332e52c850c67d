"""The hardware task family: hidden PA gain offsets and compression points, access gain offsets
(docs/model.md)."""
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings, strategies as st

from sim import channel
from sim.network import SimNetwork
from sim.params import NetworkParams, TaskRanges
from sim.units import db_to_lin, lin_to_db
from testbed.policies import switch_off_levels

SMALL = NetworkParams(num_bs=2, num_ue=4, num_bands=3, episode_steps=20, task_family="hardware")
QUIET = TaskRanges(incumbent_occupancy=[0.0, 0.0])   # no incumbents: every band open unless a BS masks it
ACCESS = TaskRanges(access_gain_offset_db=[-20.0, 0.0])   # access offsets drawn too


def r_squared(x_fit, y_fit, x_eval, y_eval) -> float:
    """Out-of-sample R² of the least-squares fit y ≈ [x, 1]·w."""
    ones = lambda x: torch.cat([x, torch.ones(x.shape[0], 1)], 1).double()  # noqa: E731
    w = torch.linalg.lstsq(ones(x_fit), y_fit.double().unsqueeze(1)).solution
    residual = y_eval.double() - (ones(x_eval) @ w).squeeze(1)
    return float(1.0 - residual.var() / y_eval.double().var())


def test_informed_needs_the_hardware_family():
    with pytest.raises(ValueError, match="informed: true needs task_family: hardware"):
        NetworkParams(informed=True)


def test_hardware_tasks_add_pa_parameters_to_the_standard_draw():
    std = SimNetwork(replace(SMALL, task_family="standard"), TaskRanges(), 8, seed=3)
    hw = SimNetwork(SMALL, TaskRanges(), 8, seed=3)
    std.reset(), hw.reset()
    assert std.tasks.pa_gain_offset_db is None and std.tasks.pa_compression_dbm is None
    assert torch.equal(std.tasks.gain_mean_db, hw.tasks.gain_mean_db)
    assert torch.equal(std.tasks.traffic_bps, hw.tasks.traffic_bps)
    offset, compression = hw.tasks.pa_gain_offset_db, hw.tasks.pa_compression_dbm
    assert offset.shape == (8, 2, 3) and compression.shape == (8, 2)
    assert ((offset >= -20.0) & (offset <= 0.0)).all() and ((compression >= 10.0) & (compression <= 26.0)).all()
    assert torch.equal(hw.tasks.select(torch.tensor([2])).pa_compression_dbm, compression[2:3])


def test_an_ideal_pa_reproduces_the_standard_physics():
    ideal = TaskRanges(pa_gain_offset_db=[0.0, 0.0], pa_compression_dbm=[60.0, 60.0])
    std = SimNetwork(replace(SMALL, task_family="standard", pa_sdr_max_db=80.0), ideal, 16, seed=1)
    hw = SimNetwork(replace(SMALL, pa_sdr_max_db=80.0), ideal, 16, seed=1)
    std.reset(), hw.reset()
    hw.tasks = replace(std.tasks, pa_gain_offset_db=hw.tasks.pa_gain_offset_db,
                       pa_compression_dbm=hw.tasks.pa_compression_dbm,
                       access_gain_offset_db=hw.tasks.access_gain_offset_db)
    for net in (std, hw):
        net.gen.manual_seed(5)
        net.initial_state(net.tasks)
    level = torch.randint(0, 4, (16, 2, 3), generator=torch.Generator().manual_seed(0))
    a, b = std.step(level), hw.step(level)
    assert torch.allclose(a.radiated_w, b.radiated_w, rtol=1e-5)
    assert torch.allclose(a.sinr_lin, b.sinr_lin, rtol=1e-4)       # SDR 80 dB: a 1e-8 correction at most


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_pa_never_radiates_more_than_the_nominal_power_nor_above_compression(seed):
    gen = torch.Generator().manual_seed(seed)
    p = NetworkParams()
    level_dbm = torch.tensor(p.level_power_dbm)[torch.randint(0, 4, (6, 2, 3), generator=gen)]
    offset = -60.0 * torch.rand(6, 2, 3, generator=gen)
    compression = -30.0 + 90.0 * torch.rand(6, 2, 1, generator=gen)
    out_dbm, over_db = channel.pa_output_dbm(level_dbm, offset, compression)
    assert (out_dbm <= level_dbm).all() and (out_dbm <= compression).all()
    assert torch.equal(out_dbm == -torch.inf, level_dbm == -torch.inf)   # off stays off, on stays on
    assert (over_db >= 0).all()
    linear = level_dbm + offset <= compression
    assert torch.equal(out_dbm[linear], (level_dbm + offset)[linear]) and (over_db[linear] == 0).all()
    sdr = channel.pa_sdr_db(over_db, p.pa_sdr_max_db, p.pa_sdr_slope_db)
    assert (sdr <= p.pa_sdr_max_db).all() and (sdr[linear] == p.pa_sdr_max_db).all()
    sinr = db_to_lin(-10.0 + 50.0 * torch.rand(6, 2, 3, generator=gen))
    limited = channel.distortion_limited(sinr, db_to_lin(sdr))
    assert (limited <= torch.minimum(sinr, db_to_lin(sdr)) * (1 + 1e-6)).all()


@pytest.mark.parametrize("mode", ["zero", "lower"])
def test_radiated_power_only_on_open_bands_and_at_most_nominal(mode):
    ranges = TaskRanges(incumbent_occupancy=[0.3, 0.5], pa_compression_dbm=[4.0, 26.0])
    net = SimNetwork(replace(SMALL, num_bs=3, safety_mode=mode), ranges, 32, seed=2)
    net.reset()
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        res = net.step(torch.randint(0, 4, (32, 3, 3), generator=gen))
        assert not ((res.radiated_w > 0) & ~res.safe.mask).any()
        assert torch.equal(res.radiated_w > 0, res.safe.power_w > 0)
        assert (res.radiated_w <= res.safe.power_w).all()
        assert (res.executed_violations == 0).all()


def test_informed_observation_appends_the_normalised_hidden_parameters():
    net = SimNetwork(replace(SMALL, informed=True), TaskRanges(), 4, seed=0)
    net.reset()
    obs, layout = net.observation(), net.obs_layout()
    plain = SimNetwork(SMALL, TaskRanges(), 4, seed=0)
    plain.reset()
    assert obs.shape[1] == max(s.stop for s in layout.values()) == plain.observation().shape[1] + 2 * 3 + 2 + 2 * 3
    assert torch.equal(obs[:, : plain.observation().shape[1]], plain.observation())
    assert torch.allclose(obs[:, layout["pa_gain_offset"]], net.tasks.pa_gain_offset_db.view(4, -1) / 10.0)
    assert torch.allclose(obs[:, layout["pa_compression"]], (net.tasks.pa_compression_dbm - 23.0) / 10.0)
    assert torch.equal(obs[:, layout["access_gain_offset"]], torch.zeros(4, 6))     # default [0, 0]
    drawn = SimNetwork(replace(SMALL, informed=True), ACCESS, 4, seed=0)
    drawn.reset()
    assert torch.allclose(drawn.observation()[:, layout["access_gain_offset"]],
                          drawn.tasks.access_gain_offset_db.view(4, -1) / 10.0)


def test_access_offsets_weaken_what_the_ues_receive_and_not_the_map():
    """Same tasks, same draws, one network with a(b,k) = -10 dB everywhere (ideal PAs): the radiated
    powers and the interference map (BS-to-BS paths) are identical, a link alone on its band has
    a tenth of the SINR, no link gains; a default [0, 0] draws nothing (tasks unchanged)."""
    params, ideal = replace(SMALL, pa_sdr_max_db=80.0), replace(QUIET, pa_compression_dbm=[60.0, 60.0])
    base = SimNetwork(params, ideal, 16, seed=1)
    weak = SimNetwork(params, replace(ideal, access_gain_offset_db=[-10.0, -10.0]), 16, seed=1)
    drawn = SimNetwork(params, replace(ideal, access_gain_offset_db=[-20.0, 0.0]), 16, seed=1)
    for net in (base, weak, drawn):
        net.reset()
    assert torch.equal(base.tasks.gain_mean_db, drawn.tasks.gain_mean_db)
    assert torch.equal(base.tasks.pa_gain_offset_db, drawn.tasks.pa_gain_offset_db)
    assert (base.tasks.access_gain_offset_db == 0).all() and drawn.tasks.access_gain_offset_db.std() > 3
    gen, alone_seen = torch.Generator().manual_seed(0), 0
    for _ in range(10):
        level = torch.randint(0, 4, (16, 2, 3), generator=gen)
        noise = base.draw_noise()
        a, b = base.step_with_noise(level, noise), weak.step_with_noise(level, noise)
        assert torch.equal(a.radiated_w, b.radiated_w) and torch.equal(base.state.map_w, weak.state.map_w)
        alone = a.active & (a.radiated_w.gt(0).sum(1, keepdim=True) == 1)     # the only BS on its band
        assert torch.allclose(b.sinr_lin[alone], 0.1 * a.sinr_lin[alone], rtol=1e-4)
        assert (b.sinr_lin <= a.sinr_lin * (1 + 1e-5)).all()
        alone_seen += int(alone.sum())
    assert alone_seen > 20


def hidden_targets(net: SimNetwork) -> dict[str, torch.Tensor]:
    return {"gain offset o(0,0)": net.tasks.pa_gain_offset_db[:, 0, 0],
            "compression P_c(0)": net.tasks.pa_compression_dbm[:, 0],
            "access offset a(0,0)": net.tasks.access_gain_offset_db[:, 0, 0]}


def test_a_linear_probe_cannot_read_the_hidden_parameters_from_one_observation():
    """Many single observations (at reset and after 5 random steps) of many tasks: least squares
    from the observation to each hidden parameter explains under 20 % of its variance."""
    n = 4000
    net = SimNetwork(SMALL, ACCESS, n, seed=0)
    net.reset()
    views = {"reset": net.observation()}
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        net.step(torch.randint(0, 4, (n, 2, 3), generator=gen))
    views["step 5"] = net.observation()
    for when, obs in views.items():
        for name, y in hidden_targets(net).items():
            r2 = r_squared(obs[: n // 2], y[: n // 2], obs[n // 2:], y[n // 2:])
            assert r2 < 0.2, (when, name, r2)


def probe_trial(net: SimNetwork) -> list:
    """Each BS alone, at every level on every band, an idle step between BSs (so no band is masked
    by a neighbour's last burst): (BS, level, StepResult) per step. 2·3 + 1 = 7 steps."""
    p, n = net.params, net.num_envs
    out = []
    for b in range(p.num_bs):
        for level in range(1, p.num_levels):
            a = torch.zeros(n, p.num_bs, p.num_bands, dtype=torch.long)
            a[:, b] = level
            out.append((b, level, net.step(a)))
        if b < p.num_bs - 1:
            net.step(torch.zeros(n, p.num_bs, p.num_bands, dtype=torch.long))
    return out


def estimate_pa(net: SimNetwork, trial: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct estimator of o(b,k) and P_c(b) from a probe trial's measured SINRs, the known gains and
    the sensed external interference (all a bench measures). Level 1 is below compression in the
    training ranges, so its SINR gives o(b,k); P_c(b) is the grid value whose predicted SINRs at the
    higher levels fit best (least squares in dB). Returns o [N,B,K], P_c [N,B], valid links [N,B,K]."""
    p, n = net.params, net.num_envs
    level_dbm = torch.tensor(p.level_power_dbm)
    nominal, measured = {}, {}
    for b, level, res in trial:
        served = res.served_ue[:, b]                                       # [N, K]
        g = db_to_lin(res.gain_db[:, b].gather(1, served.clamp_min(0)))    # [N, K]
        noise = res.external_w[:, b] + p.noise_w
        nominal[b, level] = db_to_lin(level_dbm[level]) * 1e-3 * g / noise
        measured[b, level] = torch.where(res.active[:, b], res.sinr_lin[:, b], torch.nan)
    sdr_max = db_to_lin(torch.tensor(p.pa_sdr_max_db))
    offset = torch.stack([lin_to_db(1.0 / (1.0 / measured[b, 1] - 1.0 / sdr_max) / nominal[b, 1])
                          for b in range(p.num_bs)], 1)                      # [N, B, K]
    grid = torch.arange(-30.0, 60.0, 0.25)
    errors = torch.zeros(len(grid), n, p.num_bs)
    for b, level, _ in trial:
        out_dbm, over_db = channel.pa_output_dbm(level_dbm[level], offset[:, b].unsqueeze(0), grid.view(-1, 1, 1))
        radiated = db_to_lin(out_dbm - level_dbm[level]) * nominal[b, level]
        sdr = db_to_lin(channel.pa_sdr_db(over_db, p.pa_sdr_max_db, p.pa_sdr_slope_db))
        err = (lin_to_db(channel.distortion_limited(radiated, sdr)) - lin_to_db(measured[b, level])) ** 2
        errors[:, :, b] += torch.nan_to_num(err, nan=0.0).sum(-1)
    # ties (no compression seen) resolve to the lowest P_c that explains the data
    compression = grid[errors.argmin(0)]
    return offset, compression, ~torch.isnan(offset)


def test_a_probe_trial_of_seven_steps_recovers_the_hidden_parameters():
    n = 400
    net = SimNetwork(SMALL, QUIET, n, seed=4)
    net.reset()
    offset, compression, valid = estimate_pa(net, probe_trial(net))
    truth = net.tasks
    assert valid.float().mean() > 0.5                                      # links with a UE to serve
    y, y_hat = truth.pa_gain_offset_db[valid], offset[valid]
    assert 1 - (y - y_hat).var() / y.var() > 0.99
    # P_c is identifiable up to where the top level of the strongest band saturates: above it,
    # every P_c gives the same physics
    top = SMALL.max_power_dbm + truth.pa_gain_offset_db.amax(-1)                 # [N, B]
    seen = valid.all(-1)
    y, y_hat = torch.minimum(truth.pa_compression_dbm, top)[seen], torch.minimum(compression, top)[seen]
    assert 1 - (y - y_hat).var() / y.var() > 0.8


def test_knowing_the_hidden_parameters_pays():
    """The same heuristic with the true PA parameters earns clearly more than with an ideal PA
    model, on the training PAs and on the held-out ones that compress lower."""
    params = replace(SMALL, num_bs=3, num_ue=10, num_bands=5)      # the paper's sizes
    for ranges in (TaskRanges(), TaskRanges(pa_compression_dbm=[4.0, 14.0])):
        returns = {}
        for informed in (False, True):
            net = SimNetwork(params, ranges, 64, seed=7)
            net.reset()
            returns[informed] = sum(net.step(switch_off_levels(net, informed)).reward for _ in range(20)).mean().item()
        assert returns[True] > returns[False] + max(0.2 * abs(returns[False]), 1.0), returns


def test_a_probe_trial_recovers_what_the_ues_links_see_of_the_access_offsets():
    """With access offsets drawn, the same seven-step probe reads o(b,k) + a(b,k) from the SINRs
    (the UEs' paths see both), while the map, which a(b,k) does not reach, keeps o(b,k) alone."""
    n = 400
    net = SimNetwork(SMALL, replace(QUIET, access_gain_offset_db=[-20.0, 0.0]), n, seed=4)
    net.reset()
    offset, _, valid = estimate_pa(net, probe_trial(net))
    truth = net.tasks.pa_gain_offset_db + net.tasks.access_gain_offset_db
    assert valid.float().mean() > 0.5
    y, y_hat = truth[valid], offset[valid]
    assert 1 - (y - y_hat).var() / y.var() > 0.99
