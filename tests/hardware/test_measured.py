"""The measured backend on the mock bench: radio map, sim-vs-measured SINR, sensing, the safety
property with real injected interferers, faults mid-episode, dry run, and reference policies
running full episodes through the env and the CLI."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import yaml

from hardware.config import HardwareConfig, RadioEntry
from hardware.measured import BackendError, _bs_radio_map, ue_radio_map
from testbed.backends import make_backend
from hardware.emulated.medium import MediumPort
from hardware.radio import RadioError, RadioTimeout
from sim.network import SimNetwork
from testbed.config import ConfigError, load_config


REPO = Path(__file__).resolve().parents[2]


def mock_net(**hardware):
    config = load_config("bench_mock", {"hardware": hardware} if hardware else None)
    return make_backend(config, num_envs=1)


def ports_silent(net) -> bool:
    return not any(r.port.transmitting for r in net.radios.values())


def random_levels(seed: int) -> torch.Tensor:
    return torch.randint(0, 4, (1, 3, 5), generator=torch.Generator().manual_seed(seed))


# --- radio map and config ------------------------------------------------------------------
def hw_with(*entries) -> HardwareConfig:
    return HardwareConfig(radios=tuple(entries))


def test_bs_map_needs_every_bs_once():
    ue = RadioEntry(name="ue", role="ue")
    assert _bs_radio_map(hw_with(RadioEntry(name="a", nodes=[0, 2]), RadioEntry(name="b", nodes=[1]), ue), 3) == ["a", "b", "a"]
    with pytest.raises(BackendError, match=r"BS \[2\] have no radio"):
        _bs_radio_map(hw_with(RadioEntry(name="a", nodes=[0, 1]), ue), 3)
    with pytest.raises(BackendError, match="both a and b"):
        _bs_radio_map(hw_with(RadioEntry(name="a", nodes=[0]), RadioEntry(name="b", nodes=[0, 1, 2]), ue), 3)
    with pytest.raises(BackendError, match="carries BS 5"):
        _bs_radio_map(hw_with(RadioEntry(name="a", nodes=[5]), ue), 3)


def test_ue_map_explicit_then_round_robin():
    bs = RadioEntry(name="bs", nodes=[0])
    hw = hw_with(bs, RadioEntry(name="near", role="ue", nodes=[3]), RadioEntry(name="x", role="ue"),
                 RadioEntry(name="y", role="ue"))
    assert ue_radio_map(hw, 5) == ["x", "y", "x", "near", "y"]
    only_listed = hw_with(bs, RadioEntry(name="near", role="ue", nodes=[1]))
    assert ue_radio_map(only_listed, 3) == [None, "near", None]


def test_config_breaking_a_hard_limit_fails_to_load():
    with pytest.raises(ConfigError, match="max_tx_gain_db"):
        load_config("bench_mock", {"hardware": {"tx_gain_db": 0.0}})
    with pytest.raises(ConfigError, match="allowed_center_hz"):
        load_config("bench_mock", {"hardware": {"center_hz": 2.45e9}})
    with pytest.raises(ConfigError, match="sample_rate_range_hz"):
        load_config("bench_mock", {"hardware": {"sample_rate_hz": 8e6}})


def test_backend_refuses_mock_radios_for_real_backends():
    config = load_config("bench_mock", {"backend": "pluto"})
    with pytest.raises(BackendError, match="mock"):
        make_backend(config, num_envs=1)


def test_bench_mock_preset_loads_with_two_ue_radios():
    config = load_config("bench_mock")
    assert config.backend == "mock"
    assert [r.name for r in config.hardware.radios_with_role("ue")] == ["ue0", "ue1"]


# --- measurement -----------------------------------------------------------------------------
def test_measured_sinr_matches_the_simulator():
    """Mock medium set from the task: >= 95 % of active links within 1 dB of Eq. 6."""
    net = mock_net()
    errors, num_active = [], 0
    try:
        for episode in range(3):
            net.reset(seed=episode)
            for t in range(25):
                res = net.step(random_levels(100 * episode + t))
                analytic, _ = SimNetwork.link_sinr(net, res.safe, res.served_ue, res.gain_db, res.external_w)
                assert torch.equal(res.measured, res.active)          # every active link was measured
                act = res.active
                num_active += int(act.sum())
                errors.append((10 * torch.log10(res.sinr_lin[act] / analytic[act])).abs())
    finally:
        net.close()
    errors = torch.cat(errors)
    assert num_active > 300
    assert (errors <= 1.0).float().mean() >= 0.95
    assert errors.median() < 0.3


def test_sensed_interference_is_the_real_incumbent():
    net = mock_net()
    try:
        net.reset(seed=3)
        on = torch.zeros(1, 3, 5, dtype=torch.bool)
        on[0, 0, 1] = on[0, 2, 4] = on[0, 1, 0] = True
        net.state = dataclasses.replace(net.state, incumbent_on=on)
        net.tasks = dataclasses.replace(net.tasks, incumbent_power_w=torch.tensor([10 ** (-80.0 / 10) * 1e-3]))
        sensed = net.sense_external_w()
    finally:
        net.close()
    true_w = float(net.tasks.incumbent_power_w[0])
    ratio_db = 10 * torch.log10(sensed[on] / true_w)
    assert ratio_db.abs().max() < 1.0
    assert sensed[~on].max() < net.params.i_max_w / 10


@settings(max_examples=25, deadline=None)
@given(on=st.lists(st.booleans(), min_size=15, max_size=15),
       incumbent_dbm=st.floats(-100.0, -60.0),
       bs_part_dbm=st.lists(st.floats(-130.0, -70.0), min_size=15, max_size=15),
       levels=st.lists(st.integers(0, 3), min_size=15, max_size=15))
def test_no_pilot_on_a_band_whose_sensed_interference_exceeds_i_max(safety_net, on, incumbent_dbm, bs_part_dbm, levels):
    """Random interference maps plus a real interferer injected in the mock medium: no executed
    transmission (and no pilot energy on air) where the sensed interference exceeds I_max."""
    net, sent = safety_net
    p = net.params
    net.reset(seed=0)
    on = torch.tensor(on).view(1, 3, 5)
    incumbent_w = 10 ** (incumbent_dbm / 10) * 1e-3
    net.state = dataclasses.replace(net.state, incumbent_on=on)
    net.tasks = dataclasses.replace(net.tasks, incumbent_power_w=torch.tensor([incumbent_w]))
    sensed = net.sense_external_w()
    bs_part = 10 ** (torch.tensor(bs_part_dbm).view(1, 3, 5) / 10) * 1e-3
    net.state = dataclasses.replace(net.state, external_w=sensed, map_w=bs_part + sensed)
    sent.clear()
    res = net.step(torch.tensor(levels).view(1, 3, 5))

    closed = res.map_w > p.i_max_w                                             # [1, B, K]
    assert int(res.executed_violations.sum()) == 0
    assert torch.all(res.safe.power_w[closed] == 0)
    if incumbent_dbm > p.i_max_dbm + 3:                                        # the real interferer is seen
        assert torch.all(closed[on])
    for bursts in sent:                                                         # and nothing is on air there
        for b in range(3):
            name = net.bs_radio[b]
            if name not in bursts:
                continue
            spectrum = np.abs(np.fft.fft(bursts[name].iq)) / net.plan.fft_size
            for k in torch.nonzero(closed[0, b]).flatten().tolist():
                assert spectrum[net.plan.pilot_bins[b, k]].max() < 1e-7


@pytest.fixture(scope="module")
def safety_net():
    """A mock backend whose Transmitter records every set of bursts it sends."""
    net = mock_net()
    sent = []
    transmit = net.transmitter.transmit

    def recording(*args, **kwargs):
        bursts = transmit(*args, **kwargs)
        sent.append(bursts)
        return bursts
    net.transmitter.transmit = recording
    yield net, sent
    net.close()


def test_ues_without_a_radio_keep_the_simulated_sinr():
    radios = [{"name": f"bs{b}", "role": "bs", "nodes": [b]} for b in range(3)]
    radios.append({"name": "ue0", "role": "ue", "nodes": [0, 1, 2, 3]})
    net = mock_net(radios=radios)
    try:
        net.reset(seed=1)
        res = net.step(torch.full((1, 3, 5), 3))
        analytic, _ = SimNetwork.link_sinr(net, res.safe, res.served_ue, res.gain_db, res.external_w)
    finally:
        net.close()
    with_radio = res.active & (res.served_ue >= 0) & (res.served_ue <= 3)
    assert torch.equal(res.measured, with_radio)
    others = res.active & ~res.measured
    assert torch.allclose(res.sinr_lin[others], analytic[others])


def test_max_turns_limits_the_measured_links():
    net = mock_net(max_turns=1)
    try:
        net.reset(seed=2)
        res = net.step(torch.full((1, 3, 5), 3))
    finally:
        net.close()
    assert net.last_turns == 1
    assert torch.all(res.measured.sum(1) <= 1)                      # one link per band
    assert torch.equal(res.measured.any(1), res.active.any(1))


def test_dry_run_never_transmits(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run transmitted")
    monkeypatch.setattr(MediumPort, "transmit", refuse)
    net = mock_net(dry_run=True)
    try:
        net.reset(seed=0)
        for t in range(3):
            res = net.step(torch.full((1, 3, 5), 3))
            assert not res.measured.any() and res.active.any()
            assert len(net.transmitter.last_bursts) > 0                  # bursts were built and checked
    finally:
        net.close()


# --- faults ---------------------------------------------------------------------------------
@pytest.mark.parametrize("radio,fault,error", [("ue1", "disconnect", RadioError), ("bs1", "timeout", RadioTimeout),
                                               ("bs0", "disconnect", RadioError)])
def test_radio_fault_mid_episode_mutes_everything_and_raises(radio, fault, error):
    net = mock_net()
    try:
        net.reset(seed=0)
        for t in range(3):
            net.step(torch.full((1, 3, 5), 3))
        net.radios[radio].inject_fault(fault, after_calls=1)
        with pytest.raises(error, match=radio):
            for t in range(5):
                net.step(torch.full((1, 3, 5), 3))
        assert ports_silent(net)
        assert all(r.muted for r in net.radios.values())
    finally:
        with pytest.raises(RadioError) if fault == "disconnect" else _no_error():
            net.close()
    assert ports_silent(net)


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- full episodes through the env and the CLI -------------------------------------------------
def test_reference_policy_runs_full_episodes_on_the_mock_backend():
    from testbed.env import SpectrumVectorEnv
    from testbed.policies import make_policy

    env = SpectrumVectorEnv("bench_mock")
    try:
        obs, info = env.reset(seed=0)
        policy = make_policy("greedy", env)
        measured, truncations = [], 0
        for _ in range(2 * env.params.episode_steps):
            obs, reward, terminated, truncated, info = env.step(policy(obs, info))
            assert np.isfinite(reward).all() and env.observation_space.contains(obs)
            assert info["executed_violations"].sum() == 0
            measured.append(info["measured"].sum())
            truncations += int(truncated[0])
        assert truncations == 2
        assert np.mean(measured) > 1
    finally:
        env.close()
    assert ports_silent(env.net)


def test_cli_demo_runs_on_the_mock_backend(tmp_path, capsys):
    from testbed.cli import main

    assert main(["demo", "--config", "bench_mock", "--episodes", "1", "--out", str(tmp_path)]) == 0
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert set(summary) == {"random", "max_power", "greedy"}


def test_several_envs_are_measured_one_after_the_other():
    config = load_config("bench_mock")
    net = make_backend(config, num_envs=2)
    try:
        net.reset(seed=11)
        for t in range(5):
            res = net.step(random_levels(t).expand(2, -1, -1))
            analytic, _ = SimNetwork.link_sinr(net, res.safe, res.served_ue, res.gain_db, res.external_w)
            assert torch.equal(res.measured, res.active)
            err = (10 * torch.log10(res.sinr_lin[res.active] / analytic[res.active])).abs()
            assert (err <= 1.0).float().mean() >= 0.9
    finally:
        net.close()


# --- stale captures ---------------------------------------------------------------------------
@pytest.mark.parametrize("radio", ["ue0", "ue1"])
def test_a_stale_capture_is_detected_counted_and_taken_again(radio):
    """A capture that returns the previous capture's samples (old kernel RX blocks) holds the
    burst this radio measured last time: the step signature tells it apart, it is discarded,
    counted, and the measurement still matches the simulator."""
    net = mock_net()
    try:
        net.reset(seed=1)
        for t in range(2):
            net.step(torch.full((1, 3, 5), 3))
        assert net.stale_captures == 0
        caught = 0
        for t in range(6):
            net.radios[radio].inject_fault("stale")
            before = net.stale_captures
            res = net.step(random_levels(t))
            analytic, _ = SimNetwork.link_sinr(net, res.safe, res.served_ue, res.gain_db, res.external_w)
            act = res.measured & res.active
            err = (10 * torch.log10(res.sinr_lin[act] / analytic[act])).abs()
            assert err.max() < 3.0 and err.median() < 0.5
            caught += net.stale_captures - before
        assert caught == 6
    finally:
        net.close()


def test_a_sensing_capture_that_holds_a_burst_is_stale():
    """With TX off, a capture holding pilots (blocks recorded while the last turn was on air) is
    discarded: the occupancy map is read from a fresh capture."""
    net = mock_net()
    try:
        net.reset(seed=3)
        net.step(torch.full((1, 3, 5), 3))
        with_burst = net.radios["ue0"]._previous_capture                # the last turn's capture
        real = net.radios["bs1"]._capture
        calls = []
        net.radios["bs1"]._capture = lambda num_samples: with_burst if not calls.append(1) and len(calls) == 1 \
            else real(num_samples)
        before = net.stale_captures
        net.step(torch.full((1, 3, 5), 3))
        assert net.stale_captures == before + 1
    finally:
        net.close()


def test_a_radio_that_only_delivers_the_past_ends_the_episode():
    net = mock_net()
    try:
        net.reset(seed=2)
        net.step(torch.full((1, 3, 5), 3))
        old = net.radios["ue0"].capture(net.hw.capture_samples)
        net.radios["ue0"]._capture = lambda num_samples: old          # a buffer that never refreshes
        with pytest.raises(RadioError, match="stale"):
            for t in range(4):
                net.step(torch.full((1, 3, 5), 3))
        assert ports_silent(net)
    finally:
        net.close()


# --- clipping ---------------------------------------------------------------------------------
def _saturate(radio, dc_fs: float = 10.0) -> None:
    """Put a strong signal (DC, away from every pilot bin) in front of a mock radio's ADC."""
    receive = radio.port.receive
    radio.port.receive = lambda num_samples, state=None: receive(num_samples, state) + np.complex64(dc_fs)


def test_a_clipped_sensing_capture_closes_every_band_of_its_bs():
    net = mock_net()
    try:
        net.reset(seed=4)
        net.step(torch.zeros(1, 3, 5, dtype=torch.long))
        _saturate(net.radios["bs1"])
        before = net.clipped_captures
        net.step(torch.zeros(1, 3, 5, dtype=torch.long))              # senses at its end
        assert net.clipped_captures > before
        assert torch.all(~net.mask()[0, 1]) and net.mask()[0, [0, 2]].any()
        res = net.step(torch.full((1, 3, 5), 3))
        assert torch.all(res.safe.power_w[0, 1] == 0) and int(res.blocked_unsafe) >= 5
    finally:
        net.close()


def test_a_clipped_measurement_is_counted_and_not_measured():
    net = mock_net()
    try:
        net.reset(seed=5)
        _saturate(net.radios["ue0"])
        before = net.clipped_captures
        res = net.step(torch.full((1, 3, 5), 3))
        ue0_links = torch.zeros_like(res.active)
        for b in range(3):
            for k in range(5):
                u = int(res.served_ue[0, b, k])
                ue0_links[0, b, k] = u >= 0 and net.ue_radio[u] == "ue0"
        assert net.clipped_captures > before
        assert not (res.measured & ue0_links).any() and (res.measured & ~ue0_links).any()
    finally:
        net.close()


# --- the measured map (hardware.measure_map) -------------------------------------------------
def _coupled_bench(measure_map: bool, coupling_db: float, margin_db: float = 15.0):
    """The mock bench without incumbents, I_max set ``margin_db`` above what BS 0 at full power puts
    on BS 1 in the model, and BS 0's radio coupled into BS 1's ``coupling_db`` beyond the model."""
    quiet = {"tasks": {"incumbent_occupancy": [0.0, 0.0]}, "env": {"task_seed": 3}}
    probe = SimNetwork(load_config("bench_mock", quiet).network, load_config("bench_mock", quiet).tasks, 1, task_seed=3)
    probe.reset(seed=0)
    h_db = float(probe.tasks.bs_gain_mean_db[0, 0, 1])
    config = load_config("bench_mock", {**quiet, "hardware": {"measure_map": measure_map},
                                        "network": {"i_max_dbm": probe.params.max_power_dbm + h_db + margin_db}})
    net = make_backend(config, num_envs=1)
    net.scene.couple("bs0", "bs1", coupling_db)
    return net


def test_the_measured_map_closes_a_band_the_model_leaves_open():
    """A hidden coupling 30 dB stronger than the model's BS 0 -> BS 1 gain: the model's map leaves
    BS 1's bands open, the measured one closes them, and the next step's filter blocks BS 1 there."""
    only_bs0 = torch.zeros(1, 3, 5, dtype=torch.long)
    only_bs0[0, 0] = 3
    masks = {}
    for measure_map in (False, True):
        net = _coupled_bench(measure_map, coupling_db=30.0)
        try:
            net.reset(seed=0)
            net.step(only_bs0)
            masks[measure_map] = net.mask().clone()
            res = net.step(torch.full((1, 3, 5), 3))
            if measure_map:
                assert torch.all(res.safe.power_w[0, 1] == 0) and int(res.blocked_unsafe) >= 5
                measured = np.array(net.last_map["map_rx_w"])[0, 0, 1] / np.array(net.last_map["map_model_w"])[0, 0, 1]
                assert np.all(np.abs(10 * np.log10(measured[measured > 0]) - 30.0) < 1.0)
        finally:
            net.close()
    assert masks[False][0, 1].all()                       # the model: BS 0 is 15 dB under I_max at BS 1
    assert not masks[True][0, 1].any()                    # measured: 15 dB over it
    assert torch.equal(masks[False][0, [0, 2]], masks[True][0, [0, 2]])   # BS 0 sends to BS 2 as modelled


def test_without_coupling_the_measured_map_is_the_models():
    net = _coupled_bench(True, coupling_db=0.0)
    try:
        net.reset(seed=1)
        for t in range(3):
            res = net.step(random_levels(t))
            model = SimNetwork.interference_map_w(net, res.safe, res.radiated_w, net.state.external_w)
            hit = np.array(net.last_map["map_measured"])
            assert hit.sum() >= 4 and not hit[0, [0, 1, 2], [0, 1, 2]].any()
            on = model > 0
            assert (10 * torch.log10(net.state.map_w[on] / model[on])).abs().max() < 1.0
    finally:
        net.close()


def test_measure_map_off_takes_no_map_capture():
    net = _coupled_bench(False, coupling_db=0.0)
    kinds = []
    net.recorder.capture = lambda radio, iq, **fields: kinds.append(fields["kind"])
    try:
        net.reset(seed=1)
        net.step(torch.full((1, 3, 5), 3))
    finally:
        net.close()
    assert "map" not in kinds and "measure" in kinds and net.last_map is None


# --- calibration ------------------------------------------------------------------------------
CRYSTALS_HZ = {"bs0": 40e3, "bs1": -55e3, "bs2": 12e3, "ue0": -20e3, "ue1": 61e3}   # ±25 ppm at 2.44 GHz


def _bench_with_crystals(errors: dict[str, float], **hardware):
    """The mock bench with these LO errors (Hz above centre: each radio's crystal error, the
    entry's cfo_hz override), then the measured backend (which calibrates)."""
    data = yaml.safe_load((REPO / "configs" / "bench_mock.yaml").read_text())
    for entry in data["hardware"]["radios"]:
        entry["cfo_hz"] = -errors.get(entry["name"], 0.0)
    data["hardware"].update(hardware)
    return make_backend(load_config(data), num_envs=1)


def _sinr_errors_db(net, steps: int = 6) -> torch.Tensor:
    net.reset(seed=7)
    errors = []
    for t in range(steps):
        res = net.step(random_levels(t))
        analytic, _ = SimNetwork.link_sinr(net, res.safe, res.served_ue, res.gain_db, res.external_w)
        act = res.measured & res.active
        errors.append((10 * torch.log10(res.sinr_lin[act] / analytic[act])).abs())
    return torch.cat(errors)


def test_calibration_puts_radios_tens_of_khz_apart_onto_one_frequency():
    net = _bench_with_crystals(CRYSTALS_HZ)
    try:
        cal = net.calibration
        ue0 = CRYSTALS_HZ["ue0"]                       # the reference
        for name in ("bs0", "bs1", "bs2"):
            assert cal[name]["offset_hz"] == pytest.approx(CRYSTALS_HZ[name] - ue0, abs=2.0)
            assert abs(cal[name]["residual_hz"]) < 2.0
        assert abs(cal["ue1"]["residual_hz"]) < 2.0
        errors = _sinr_errors_db(net)
        assert errors.numel() > 20 and errors.median() < 0.3
    finally:
        net.close()
    uncalibrated = _bench_with_crystals(CRYSTALS_HZ, calibrate=False)
    try:                                               # what the calibration is for: pilots off their bins
        with pytest.raises(RadioError, match="no burst or an earlier one"):
            _sinr_errors_db(uncalibrated)
    finally:
        uncalibrated.close()


def test_a_bench_whose_offsets_cannot_be_corrected_is_refused(monkeypatch):
    from hardware.emulated.mock import MockRadio

    def cannot(self, offset_hz):
        raise RadioError(f"{self.name}: cannot correct its LO")
    monkeypatch.setattr(MockRadio, "correct_lo", cannot)
    with pytest.raises(RadioError, match=r"bs1: offset [+-]\d+ Hz from the other BS radios"):
        _bench_with_crystals({"bs1": 400.0})
    with pytest.raises(RadioError, match="beyond the"):
        _bench_with_crystals({"ue0": 5e3})
    assert _bench_with_crystals({"bs1": 20.0}).calibration["bs1"]["corrected_hz"] == 0.0   # within tolerance


def test_capture_faults_reach_info_and_the_run_metrics(tmp_path):
    """stale and clipped capture counts in every step's info and in each metrics line."""
    from testbed.agent_factory import make_agent
    from testbed.checkpoint import MetricsLog, read_metrics
    from testbed.env import SpectrumVectorEnv
    from testbed.runner import opened_env, play

    config = load_config("bench_mock", {"network": {"episode_steps": 4}})
    with opened_env(config) as env:
        env.reset(seed=0)
        env.net.radios["ue0"].inject_fault("stale")
        _, _, _, _, info = env.step(np.full((1, 15), 3))
        assert info["stale_captures"].tolist() == [env.net.stale_captures] and env.net.stale_captures >= 1
        assert info["clipped_captures"].tolist() == [0]
        agent = make_agent("ppo", env, config, "eval", 0)
        agent.start(env, seed=0)
        with MetricsLog(tmp_path / "metrics.jsonl") as log:
            play(agent, env, 0, 1, log, {"agent": "ppo"}, None)
    [row] = read_metrics(tmp_path / "metrics.jsonl")
    assert row["stale_captures"] >= 1 and row["clipped_captures"] == 0
    sim = SpectrumVectorEnv("paper", num_envs=1)
    sim.reset(seed=0)
    assert "stale_captures" not in sim.step(np.zeros((1, 15), dtype=np.int64))[4]
