"""The measured backend over the GNU Radio bridge (``backend: gnuradio``, emulate mode): the
bench_gnuradio preset, measured SINR against the simulator, the safety property with real
interferers injected in GNU Radio, an agent's full episode, and the flowgraph killed
mid-episode."""
from __future__ import annotations

import dataclasses
import json
import signal

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.bridge import flowgraphs_for, start_flowgraphs
from testbed.backends import make_backend
from sim.network import SimNetwork
from sim.units import db_to_lin, dbm_to_w
from testbed.config import load_config


def start_bench(overrides: dict | None = None):
    """The bench_gnuradio preset on free ports: (started flowgraph, Config pointing at it)."""
    [fg], config = start_flowgraphs(load_config("bench_gnuradio", overrides))
    return fg, config


@pytest.fixture(scope="module")
def bench():
    fg, config = start_bench()
    try:
        yield fg, config
    finally:
        fg.stop()


def test_bench_gnuradio_preset_describes_one_emulator():
    config = load_config("bench_gnuradio")
    assert config.backend == "gnuradio"
    [fg] = flowgraphs_for(config)
    assert fg.mode == "emulate"
    assert fg.tx == fg.rx == ["bs0", "bs1", "bs2", "ue0", "ue1"]
    assert sorted(fg.options["link"]) == sorted(f"bs{b}={u}" for b in range(3) for u in ("ue0", "ue1"))
    bs_bs = [f"bs{b}=bs{c}" for b in range(3) for c in range(3) if b != c]      # with the map turns
    [with_map] = flowgraphs_for(load_config("bench_gnuradio", {"hardware": {"measure_map": True}}))
    assert sorted(with_map.options["link"]) == sorted([f"bs{b}={u}" for b in range(3) for u in ("ue0", "ue1")] + bs_bs)
    assert fg.options["rx_link_gain_db"]["ue1"] == -35.0 - config.hardware.tx_gain_db - config.hardware.rx_gain_db
    assert fg.fixed_ports["tx:bs0"] == 5601 and fg.fixed_ports["rx:ue1"] == 5615
    assert fg.fixed_ports["control"] == 5600
    # receiver noise is N0 per band, referred to the antenna (before the RX gain)
    hw, params = config.hardware, config.network
    per_sample = fg.options["noise_voltage"] ** 2 / db_to_lin(0.0)
    per_band = per_sample * 163 / hw.fft_size * db_to_lin(hw.rx_gain_db) * dbm_to_w(hw.full_scale_dbm)
    assert per_band == pytest.approx(params.noise_w, rel=1e-9)


def test_make_backend_starts_the_bridge_and_close_stops_it():
    """hardware.start_bridge (set in bench_gnuradio): the backend runs its own flowgraph on free
    ports, measures through it, and close() stops it."""
    config = load_config("bench_gnuradio", {"hardware": {"timeout_s": 1.0}})
    assert config.hardware.start_bridge
    net = make_backend(config, num_envs=1)
    try:
        [fg] = net.flowgraphs
        assert fg.running and fg.control_port != 5600                 # free ports, not the YAML's
        assert {r.bridge.control_address for r in net.radios.values()} == {fg.control_address}
        assert not net.hw.start_bridge
        net.reset(seed=0)
        res = net.step(torch.full((1, 3, 5), 3))
        assert res.measured.any() and torch.equal(res.measured, res.active)
    finally:
        net.close()
    assert not fg.running


def test_make_backend_stops_the_bridge_it_started_when_opening_fails(monkeypatch):
    """A flowgraph that hangs right after READY: opening the radios times out, the error
    propagates, and the flowgraph make_backend started is stopped."""
    import testbed.bridge as bridge
    from hardware.radio import RadioTimeout

    started = []

    def start_then_hang(config, plan=None):
        flowgraphs, config = start_flowgraphs(config, plan)
        started.extend(flowgraphs)
        for fg in flowgraphs:
            fg.signal(signal.SIGSTOP)
        return flowgraphs, config
    monkeypatch.setattr(bridge, "start_flowgraphs", start_then_hang)
    with pytest.raises(RadioTimeout, match="is the flowgraph running"):
        make_backend(load_config("bench_gnuradio", {"hardware": {"timeout_s": 0.5}}), num_envs=1)
    assert len(started) == 1 and not started[0].running
    assert started[0].proc.returncode == 0                              # SIGTERM, not SIGKILL


def test_start_bridge_with_no_usrp_attached_fails_with_the_clear_error():
    """bench_usrp with start_bridge: the uhd flowgraph's 'no USRP found', before any radio opens."""
    from hardware.gnuradio_bridge.process import BridgeStartError

    config = load_config("bench_usrp", {"hardware": {"start_bridge": True}})
    with pytest.raises(BridgeStartError, match="no USRP found"):
        make_backend(config, num_envs=1)


def test_gnuradio_radios_need_their_addresses_unless_the_bridge_is_started():
    from testbed.config import ConfigError

    radios = [dict(e, control_address="") if e["name"] == "ue1" else e
              for e in yaml.safe_load(open("configs/bench_gnuradio.yaml"))["hardware"]["radios"]]
    with pytest.raises(ConfigError, match="'ue1': the gnuradio driver needs control_address"):
        load_config("bench_gnuradio", {"hardware": {"radios": radios, "start_bridge": False}})
    assert load_config("bench_gnuradio", {"hardware": {"radios": radios}}).hardware.start_bridge


def test_measured_sinr_through_gnuradio_matches_the_simulator(bench):
    """>= 95 % of active links within 1 dB of Eq. 6 with GNU Radio doing the channel."""
    fg, config = bench
    net = make_backend(config, num_envs=1)
    errors, num_active = [], 0
    try:
        net.reset(seed=5)
        for t in range(20):
            level = torch.randint(0, 4, (1, 3, 5), generator=torch.Generator().manual_seed(t))
            res = net.step(level)
            analytic, _ = SimNetwork.link_sinr(net, res.safe, res.served_ue, res.gain_db, res.external_w)
            assert torch.equal(res.measured, res.active)
            num_active += int(res.active.sum())
            errors.append((10 * torch.log10(res.sinr_lin[res.active] / analytic[res.active])).abs())
    finally:
        net.close()
    errors = torch.cat(errors)
    assert num_active > 100
    assert (errors <= 1.0).float().mean() >= 0.95
    assert errors.median() < 0.3


@pytest.fixture(scope="module")
def safety_net(bench):
    """A gnuradio backend whose Transmitter records every set of bursts it sends."""
    fg, config = bench
    net = make_backend(config, num_envs=1)
    sent = []
    transmit = net.transmitter.transmit

    def recording(*args, **kwargs):
        bursts = transmit(*args, **kwargs)
        sent.append(bursts)
        return bursts
    net.transmitter.transmit = recording
    yield net, sent
    for name in ("bs0", "bs1", "bs2"):
        net.radios[name].bridge.set_interferer(name, 0.0, 0.0)
    net.close()


@settings(max_examples=15, deadline=None)
@given(band=st.lists(st.integers(-1, 4), min_size=3, max_size=3),
       interferer_dbm=st.floats(-100.0, -60.0),
       bs_part_dbm=st.lists(st.floats(-130.0, -70.0), min_size=15, max_size=15),
       levels=st.lists(st.integers(0, 3), min_size=15, max_size=15))
def test_no_pilot_where_sensed_interference_exceeds_i_max(safety_net, band, interferer_dbm, bs_part_dbm, levels):
    """Random interference maps plus a real tone in GNU Radio at each BS radio (band -1: none):
    no executed transmission and no pilot energy on air where the map exceeds I_max."""
    net, sent = safety_net
    p, hw = net.params, net.hw
    net.reset(seed=0)
    centre_hz = net.plan.band_edges_hz(hw.sample_rate_hz).mean(axis=1)           # [K] baseband
    amplitude = np.sqrt(dbm_to_w(interferer_dbm) / dbm_to_w(hw.full_scale_dbm) / db_to_lin(hw.rx_gain_db))
    on = torch.zeros(1, 3, 5, dtype=torch.bool)
    for b, k in enumerate(band):
        name = net.bs_radio[b]
        net.radios[name].bridge.set_interferer(name, float(centre_hz[k]) if k >= 0 else 0.0,
                                               float(amplitude) if k >= 0 else 0.0)
        if k >= 0:
            on[0, b, k] = True
    sensed = net.sense_external_w()
    bs_part = 10 ** (torch.tensor(bs_part_dbm).view(1, 3, 5) / 10) * 1e-3
    net.state = dataclasses.replace(net.state, external_w=sensed, map_w=bs_part + sensed)
    sent.clear()
    res = net.step(torch.tensor(levels).view(1, 3, 5))

    closed = res.map_w > p.i_max_w
    assert int(res.executed_violations.sum()) == 0
    assert torch.all(res.safe.power_w[closed] == 0)
    if interferer_dbm > p.i_max_dbm + 3:                                        # the real tone is seen
        assert torch.all(closed[on])
    for bursts in sent:                                                         # and nothing is on air there
        for b in range(3):
            name = net.bs_radio[b]
            if name not in bursts:
                continue
            spectrum = np.abs(np.fft.fft(bursts[name].iq)) / net.plan.fft_size
            for k in torch.nonzero(closed[0, b]).flatten().tolist():
                assert spectrum[net.plan.pilot_bins[b, k]].max() < 1e-7


def _ppo_episodes(config, episodes: int, run_dir, saved: list, on_env=None):
    """An adapting PPO agent (testbed.agent_factory.make_agent and play, as `testbed adapt` runs
    them) for ``episodes`` episodes; ``saved`` collects the checkpoint calls. Returns the env."""
    from testbed.agent_factory import make_agent
    from testbed.checkpoint import MetricsLog
    from testbed.env import SpectrumVectorEnv
    from testbed.runner import play

    env = SpectrumVectorEnv(config)
    try:
        if on_env is not None:
            on_env(env)
        agent = make_agent("ppo", env, config, "adapt", config.env.seed)
        agent.start(env, seed=config.env.seed)
        with MetricsLog(run_dir / "metrics.jsonl") as log:
            play(agent, env, 0, episodes, log, {"agent": "ppo"}, None,
                 lambda done, failed=False: saved.append((done, failed)))
    finally:
        env.close()
    return env


def test_an_agent_plays_a_full_episode_on_the_gnuradio_backend(bench, tmp_path):
    fg, config = bench
    saved = []
    env = _ppo_episodes(config, 1, tmp_path, saved)
    [row] = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row["episode"] == 0 and np.isfinite(row["return"]) and row["throughput_mbps"] > 0
    assert saved == [(1, False)]
    assert all(r.muted and not r.transmitting for r in env.net.radios.values())


def test_flowgraph_killed_mid_episode_ends_it_with_data_saved_and_radios_muted(tmp_path):
    from testbed.runner import BackendFailure

    fg, config = start_bench({"network": {"episode_steps": 10}, "hardware": {"timeout_s": 1.0}})
    steps, saved, envs = [], [], []

    def kill_in_second_episode(env):
        envs.append(env)
        link_sinr = env.net.link_sinr

        def counting(*args, **kwargs):
            steps.append(1)
            if len(steps) == 14:
                fg.signal(signal.SIGKILL)
            return link_sinr(*args, **kwargs)
        env.net.link_sinr = counting
    try:
        with pytest.raises(BackendFailure, match="during episode 1") as failure:
            _ppo_episodes(config, 3, tmp_path, saved, on_env=kill_in_second_episode)
    finally:
        fg.stop()
    assert "bridge" in str(failure.value.__cause__)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in rows] == [0]                          # the finished episode is saved
    assert saved == [(1, False), (1, True)]                              # and a checkpoint on failure
    assert len(steps) == 14
    assert all(r.muted and not r.transmitting for r in envs[0].net.radios.values())


def test_flowgraphs_for_refuses_a_mix_of_usrps_and_emulated_radios():
    config = load_config("bench_usrp")
    assert [fg.mode for fg in flowgraphs_for(config)] == ["uhd", "uhd"]
    mixed = tuple(dataclasses.replace(e, device_args="") if e.name == "ue0" else e for e in config.hardware.radios)
    config = dataclasses.replace(config, hardware=dataclasses.replace(config.hardware, radios=mixed))
    with pytest.raises(ValueError, match="either every gnuradio radio has device_args"):
        flowgraphs_for(config)


def test_process_cli_runs_a_config_until_sigterm(tmp_path):
    """python -m testbed.bridge CONFIG: the config's flowgraph runs (here on
    free ports) until SIGTERM, then stops it and exits 0."""
    import subprocess
    import sys

    import zmq

    data = yaml.safe_load(open("configs/bench_gnuradio.yaml"))
    for radio in data["hardware"]["radios"]:
        radio["control_address"] = radio["tx_address"] = radio["rx_address"] = "tcp://127.0.0.1:0"
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([sys.executable, "-m", "testbed.bridge", str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("emulate flowgraph running: ")
        ready = json.loads(line.split(": ", 1)[1])
        req = zmq.Context.instance().socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(ready["control"])
        req.send(b'{"cmd": "status"}')
        assert req.poll(5000) and json.loads(req.recv())["ok"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        req.send(b'{"cmd": "status"}')
        assert not req.poll(500)                                 # the flowgraph is gone too
        req.close(0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
