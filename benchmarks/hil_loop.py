"""Hardware-in-the-loop figures. Prints one JSON line: a dict of sections, each with its own
baseline measured in the same run.

- ``mock``: env steps/s of the measured loop (sense ► filter ► transmit ► capture ► estimate ►
  reward) on ``configs/bench_mock.yaml``, against the simulator on the same network (N = 1);
  plus how closely the measured SINR follows the simulator's (Eq. 6) on the same steps.
- ``dsp``: the per-band estimator at the default capture length: real-time factor (capture
  duration at the sample rate / processing time) and SINR errors for true SINR uniform in
  [-5, 30] dB through the mock medium (random delays, common 500 Hz CFO).
- ``pluto``: the same loop on ``configs/bench_pluto.yaml`` over two emulated Plutos (real
  pyadi-iio/libiio client), against the same radio map on mock radios; median time of one
  4096-sample capture.
- ``gnuradio``: the same loop on ``configs/bench_gnuradio.yaml`` through the GNU Radio ZMQ
  bridge in emulate mode, against the same radio map on mock radios; median burst round trip.
- ``record`` (``--record``): the mock loop with its run recorded (``hardware.record``) into a
  temporary directory, IQ and estimates, and estimates only, against the same loop unrecorded,
  all in the same run: steps/s and the slowdown of each.
- ``impairments``: bench_mock, bench_pluto (emulated) and bench_gnuradio with every impairment
  on, after calibration: steps/s against the air-time limit of their captures (as a fraction),
  SINR error median/p95 against Eq. 6; and the TX switch latency (samples from a burst's arrival
  to its swap onto the air, and send() until confirmed) on the USRP stand-in.
Driver issues add their own sections to ``SECTIONS``.

Usage: python benchmarks/hil_loop.py [--steps 300] [--trials 200] [--only mock dsp] [--record]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def _levels(seed: int, shape) -> torch.Tensor:
    return torch.randint(0, 4, shape, generator=torch.Generator().manual_seed(seed))


def _measured_loop(net, steps: int) -> dict:
    """``steps`` steps of a measured backend (new episodes as they end) with random levels:
    steps/s of the step alone, |measured − analytic| SINR in dB of the measured links, and how
    many active links were measured."""
    from sim.network import SimNetwork

    p = net.params
    shape = (1, p.num_bs, p.num_bands)
    errors, measured, active, elapsed = [], 0, 0, 0.0
    net.reset(seed=0)
    for t in range(steps):
        if t and t % p.episode_steps == 0:
            net.reset()
        start = time.perf_counter()
        res = net.step(_levels(t, shape))
        elapsed += time.perf_counter() - start
        analytic, _ = SimNetwork.link_sinr(net, res.safe, res.served_ue, res.gain_db, res.external_w)
        mask = res.measured & res.active
        errors.append((10 * torch.log10(res.sinr_lin[mask] / analytic[mask])).abs())
        measured += int(mask.sum())
        active += int(res.active.sum())
    return {"steps_per_s": steps / elapsed, "errors_db": torch.cat(errors).numpy(),
            "measured": measured, "active": active}


def mock_section(args) -> dict:
    """Measured loop on the mock bench vs the simulator, same config, same actions."""
    from testbed.backends import make_backend
    from sim.network import SimNetwork
    from testbed.config import load_config

    config = load_config("bench_mock")
    p = config.network
    shape = (1, p.num_bs, p.num_bands)
    sim = SimNetwork(p, config.task_ranges, 1, seed=0)
    sim.reset(seed=0)
    start = time.perf_counter()
    for t in range(args.steps):
        sim.step(_levels(t, shape))
    sim_rate = args.steps / (time.perf_counter() - start)

    net = make_backend(config, num_envs=1)
    try:
        loop = _measured_loop(net, args.steps)
    finally:
        net.close()
    errors, measured, active, rate = loop["errors_db"], loop["measured"], loop["active"], loop["steps_per_s"]
    return {
        "config": "bench_mock", "steps": args.steps,
        "steps_per_s": round(rate, 1), "sim_steps_per_s": round(sim_rate, 1),
        "slowdown_vs_sim": round(sim_rate / rate, 1),
        "measured_share_of_active_links": round(measured / max(active, 1), 3),
        "sinr_vs_sim_within_1db": round(float(np.mean(errors <= 1.0)), 4),
        "sinr_vs_sim_median_abs_error_db": round(float(np.median(errors)), 3),
        "sinr_vs_sim_p95_abs_error_db": round(float(np.percentile(errors, 95)), 3),
    }


def dsp_section(args) -> dict:
    """Estimator speed and accuracy at the default HardwareConfig."""
    from hardware.config import HardwareConfig
    from hardware.dsp import estimate, link_sinr
    from hardware.emulated.medium import RfMedium

    hw = HardwareConfig()
    fs, n = hw.sample_rate_hz, hw.capture_samples
    plan = hw.pilot_plan(3, 5)
    noise_band = 1e-6
    medium = RfMedium(fs, noise_fs=noise_band * plan.fft_size / plan.bins_per_band, seed=1)
    ports = [medium.attach(f"bs{b}") for b in range(3)]
    ue = medium.attach("ue")
    rng = np.random.default_rng(2)
    for b in range(3):
        medium.set_link(f"bs{b}", "ue", cfo_hz=500.0, delay_samples=int(rng.integers(0, 200)))
    errors, captures = [], []
    for _ in range(args.trials):
        sinr_db = rng.uniform(-5.0, 30.0, size=5)
        i_plus_n = noise_band / (1.0 - 0.99 * rng.uniform(0.0, 1.0, size=5))
        split = rng.uniform(0.0, 1.0, size=5)
        power = np.stack([10 ** (sinr_db / 10) * i_plus_n, (i_plus_n - noise_band) * split,
                          (i_plus_n - noise_band) * (1 - split)])
        for b, port in enumerate(ports):
            own = np.zeros_like(power)
            own[b] = power[b]
            port.transmit(plan.waveform(own), cyclic=True)
        iq = ue.receive(n)
        captures.append(iq)
        est = estimate(plan, iq, fs)
        errors.extend(10 * np.log10(link_sinr(est.power, est.residual)[0]) - sinr_db)
    errors = np.abs(np.array(errors))
    start = time.perf_counter()
    for iq in captures:
        estimate(plan, iq, fs)
    per_capture_s = (time.perf_counter() - start) / len(captures)
    offset_s, offset_errors = _offset_search(plan, fs, n, noise_band, rng, args.trials // 4)
    return {
        "capture_samples": n, "sample_rate_hz": fs, "fft_size": hw.fft_size, "num_bs": 3, "num_bands": 5,
        "estimate_ms": round(per_capture_s * 1e3, 3), "capture_ms": round(n / fs * 1e3, 3),
        "realtime_factor": round(n / fs / per_capture_s, 1),
        "offset_search_ms_at_125khz": round(offset_s * 1e3, 3),
        "offset_search_cost_vs_estimate": round(offset_s / per_capture_s, 2),
        "offset_search_max_abs_error_hz": round(float(np.max(offset_errors)), 2),
        "sinr_range_db": [-5.0, 30.0], "num_links": int(errors.size),
        "median_abs_error_db": round(float(np.median(errors)), 3),
        "p95_abs_error_db": round(float(np.percentile(errors, 95)), 3),
    }


def _offset_search(plan, fs: float, n: int, noise_band: float, rng, trials: int) -> tuple[float, np.ndarray]:
    """Median time of one coarse offset search over ±125 kHz (two ±25 ppm crystals at 2.44 GHz)
    on calibration captures with random offsets, and its absolute errors in Hz."""
    from hardware.dsp import estimate_offset
    from hardware.emulated.medium import RfMedium

    times, errors = [], []
    for _ in range(max(trials, 1)):
        cfo_hz = float(rng.uniform(-120e3, 120e3))
        medium = RfMedium(fs, noise_fs=noise_band * plan.fft_size / plan.bins_per_band, seed=int(rng.integers(1 << 30)))
        tx, rx = medium.attach("bs"), medium.attach("ue")
        medium.set_link("bs", "ue", cfo_hz=cfo_hz, delay_samples=int(rng.integers(0, 200)))
        tx.transmit(plan.calibration_waveform(100 * noise_band * plan.num_bands), cyclic=True)
        iq = rx.receive(n)
        start = time.perf_counter()
        found = estimate_offset(plan, iq, fs, max_cfo_hz=125e3)
        times.append(time.perf_counter() - start)
        errors.append(abs(float(found.cfo_hz) - cfo_hz))
    return float(np.median(times)), np.array(errors)


# --- pluto (issue 5): the measured loop over emulated Plutos -----------------------------------
def pluto_section(args) -> dict:
    """configs/bench_pluto.yaml on two Plutos emulated over libiio's network protocol (real pyadi-iio
    and libiio client, hardware.emulated.iiod on 127.0.0.1), against the same radio map on mock
    radios in the same run: steps/s of the measured loop, and the median time of one 4096-sample
    capture (the Pluto driver's rx() against the mock radio's)."""
    import dataclasses

    from hardware.emulated.iiod import serve_bench
    from testbed.backends import make_backend
    from testbed.config import load_config

    config = load_config("bench_pluto", {"hardware": {"settle_s": 0.0}})
    mock_radios = tuple(dataclasses.replace(e, driver="mock", uri="") for e in config.hardware.radios)
    mock_config = dataclasses.replace(config, backend="mock",
                                      hardware=dataclasses.replace(config.hardware, radios=mock_radios))
    emulators, hw = serve_bench(config.hardware, config.network)
    config = dataclasses.replace(config, hardware=hw)
    rates, rx_ms = {}, {}
    try:
        for name, cfg in (("pluto", config), ("mock", mock_config)):
            net = make_backend(cfg, num_envs=1)
            try:
                rates[name] = _measured_loop(net, args.steps)["steps_per_s"]
                radio = net.radios["ue0"]
                times = []
                for _ in range(args.rx_repeats):
                    start = time.perf_counter()
                    radio.capture(4096)
                    times.append(time.perf_counter() - start)
                rx_ms[name] = 1e3 * float(np.median(times))
            finally:
                net.close()
    finally:
        for emu in emulators:
            emu.stop()
    return {
        "config": "bench_pluto on 2 emulated Plutos (libiio 0.24 network backend, loopback TCP)", "steps": args.steps,
        "steps_per_s": round(rates["pluto"], 1), "mock_steps_per_s": round(rates["mock"], 1),
        "slowdown_vs_mock": round(rates["mock"] / rates["pluto"], 2),
        "rx_4096_median_ms": round(rx_ms["pluto"], 3), "mock_rx_4096_median_ms": round(rx_ms["mock"], 3),
        "rx_4096_realtime_factor": round(4096 / config.hardware.sample_rate_hz * 1e3 / rx_ms["pluto"], 1),
    }


# --- gnuradio (issue 6): the measured loop over the GNU Radio ZMQ bridge ----------------------
def _open_bridge_radios(fg, names, hw) -> dict:
    """ZmqRadios on the named nodes of a running flowgraph, with the hardware section's limits."""
    from types import SimpleNamespace

    from hardware.drivers.gnuradio import ZmqRadio

    return {n: ZmqRadio(n, hw.limits(), SimpleNamespace(**fg.endpoints(n)), timeout_s=hw.timeout_s) for n in names}


def _burst_roundtrip_ms(tx, rx, repeats: int, power_fs: float = 1e-3) -> float:
    """Median time for 4096 samples of a cyclic pilot burst from ``tx`` to go through the
    flowgraph and come back at ``rx``. The burst goes through the Transmitter, the only way to
    radiate: one BS on ``tx`` at ``power_fs`` (full-scale units) in every band."""
    from hardware.config import HardwareConfig
    from hardware.transmitter import Transmitter
    from sim.safety import apply_safety_filter

    plan = HardwareConfig().pilot_plan(num_bs=1, num_bands=4)
    shape = (1, plan.num_bs, plan.num_bands)
    safe = apply_safety_filter(torch.ones(shape, dtype=torch.long), torch.zeros(shape), torch.tensor([0.0, 1.0]),
                               i_max_w=1.0)
    Transmitter({tx.name: tx}, [tx.name], plan).transmit(safe, 0, np.full(shape[1:], power_fs))
    rx.capture(4096)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        rx.capture(4096)              # each capture on the same node pushes and reads 4096 new samples
        times.append(time.perf_counter() - start)
    tx.mute()
    return 1e3 * float(np.median(times))


def gnuradio_section(args) -> dict:
    """configs/bench_gnuradio.yaml through the bridge flowgraph in emulate mode (real GNU Radio
    FIR/carrier-offset/noise blocks, real ZMQ sockets, its own process), against the same radio
    map on mock radios in the same run: steps/s of the measured loop, how closely its SINR follows
    the simulator, and the median burst round trip (4096 samples pushed to the flowgraph and read
    back) on the bench's medium and on a one-link flowgraph."""
    import dataclasses

    from hardware.emulated.bridge import emulator_flowgraph
    from hardware.gnuradio_bridge.process import FlowgraphProcess
    from hardware.measured import MeasuredNetwork
    from hardware.radio import RadioSettings
    from testbed.backends import make_backend
    from testbed.config import load_config

    config = load_config("bench_gnuradio")
    hw, p = config.hardware, config.network
    free = tuple(dataclasses.replace(e, control_address="", tx_address="", rx_address="")  # free ports
                 for e in hw.radios)
    config = dataclasses.replace(config, hardware=dataclasses.replace(hw, radios=free))
    mock_radios = tuple(dataclasses.replace(e, driver="mock") for e in hw.radios)
    mock_config = dataclasses.replace(config, backend="mock", hardware=dataclasses.replace(hw, radios=mock_radios))
    rates, errors, roundtrip_ms = {}, [], {}
    plan = hw.pilot_plan(p.num_bs, p.num_bands)
    with emulator_flowgraph(hw, p, plan, seed=config.env.seed + 1) as fg:
        for name in ("gnuradio", "mock"):
            if name == "gnuradio":
                radios = _open_bridge_radios(fg, [e.name for e in hw.radios], hw)
                net = MeasuredNetwork(p, config.task_ranges, 1, hw, radios, seed=0, plan=plan)
            else:
                net = make_backend(mock_config, num_envs=1)
            try:
                loop = _measured_loop(net, args.steps)
                rates[name] = loop["steps_per_s"]
                if name == "gnuradio":
                    errors = loop["errors_db"]
                    roundtrip_ms["bench"] = _burst_roundtrip_ms(net.radios["bs0"], net.radios["ue0"], args.rx_repeats)
            finally:
                net.close()
    unity = RadioSettings(hw.center_hz, hw.sample_rate_hz, hw.bandwidth_hz, tx_gain_db=min(0.0, hw.max_tx_gain_db),
                          rx_gain_db=0.0)
    with FlowgraphProcess("emulate", tx=["a"], rx=["a"], sample_rate_hz=hw.sample_rate_hz) as fg:
        [radio] = _open_bridge_radios(fg, ["a"], hw).values()
        try:
            radio.configure(unity)
            roundtrip_ms["one_link"] = _burst_roundtrip_ms(radio, radio, args.rx_repeats)
        finally:
            radio.close()
    return {
        "config": "bench_gnuradio: 5 radios on one emulate flowgraph (6 links), 16384-sample captures",
        "steps": args.steps, "steps_per_s": round(rates["gnuradio"], 1), "target_steps_per_s": 50,
        "mock_steps_per_s": round(rates["mock"], 1), "slowdown_vs_mock": round(rates["mock"] / rates["gnuradio"], 2),
        "sinr_vs_sim_within_1db": round(float(np.mean(errors <= 1.0)), 4),
        "sinr_vs_sim_median_abs_error_db": round(float(np.median(errors)), 3),
        "burst_roundtrip_4096_median_ms": round(roundtrip_ms["bench"], 3),
        "one_link_burst_roundtrip_4096_median_ms": round(roundtrip_ms["one_link"], 3),
    }


# --- record (issue 14): the cost of recording a run --------------------------------------------
def record_section(args) -> dict:
    """The mock loop (configs/bench_mock.yaml) unrecorded, recorded with IQ and recorded as
    estimates only, in this order, each on a fresh backend with the same levels."""
    import tempfile
    from pathlib import Path

    from testbed.backends import make_backend
    from testbed.config import load_config

    rates, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, record in (("off", {}), ("iq", {"dir": f"{tmp}/iq"}), ("estimates", {"dir": f"{tmp}/est", "iq": False})):
            net = make_backend(load_config("bench_mock", {"hardware": {"record": record}}), num_envs=1)
            try:
                rates[name] = _measured_loop(net, args.steps)["steps_per_s"]
            finally:
                net.close()
            if record:
                sizes[name] = sum(f.stat().st_size for f in Path(record["dir"]).iterdir())
    return {
        "config": "bench_mock", "steps": args.steps, "steps_per_s": round(rates["off"], 1),
        "iq_recorded_steps_per_s": round(rates["iq"], 1), "estimates_recorded_steps_per_s": round(rates["estimates"], 1),
        "slowdown_iq_vs_off": round(rates["off"] / rates["iq"], 3),
        "slowdown_estimates_vs_off": round(rates["off"] / rates["estimates"], 3),
        "iq_recording_mb": round(sizes["iq"] / 1e6, 2), "iq_recording_mb_per_step": round(sizes["iq"] / 1e6 / args.steps, 3),
        "estimates_recording_mb": round(sizes["estimates"] / 1e6, 3),
    }


# --- impairments (issue 10): every backend with its radios' impairments on --------------------
def _counting_captures(net) -> list:
    """Wrap every radio's capture to count the samples captured; returns the one-item counter."""
    counter = [0]
    for radio in net.radios.values():
        capture = radio.capture

        def counted(n, capture=capture):
            counter[0] += n
            return capture(n)
        radio.capture = counted
    return counter


def _impaired_loop(net, steps: int, sample_rate_hz: float) -> dict:
    counter = _counting_captures(net)
    loop = _measured_loop(net, steps)
    errors = loop["errors_db"]
    air_s_per_step = counter[0] / steps / sample_rate_hz
    return {"steps_per_s": round(loop["steps_per_s"], 1),
            "capture_air_time_per_step_ms": round(1e3 * air_s_per_step, 2),
            "air_time_limit_steps_per_s": round(1 / air_s_per_step, 1),
            "fraction_of_air_time_limit": round(loop["steps_per_s"] * air_s_per_step, 3),
            "sinr_error_median_db": round(float(np.median(errors)), 3),
            "sinr_error_p95_db": round(float(np.percentile(errors, 95)), 3),
            "calibrated_offsets_hz": {n: round(c["offset_hz"]) for n, c in net.calibration.items()}}


def _switch_latency(switches: int, hw) -> dict:
    """The USRP stand-in (emulate --realtime, the device's clock as in uhd mode): alternate two
    bursts and a mute on one node; per switch, the samples from the burst's arrival in the
    flowgraph to its swap onto the air, and the wall time of send() until the flowgraph confirms."""
    from hardware.gnuradio_bridge.process import FlowgraphProcess
    from hardware.radio import _BURST_KEY, RadioSettings, TxBurst

    unity = RadioSettings(hw.center_hz, hw.sample_rate_hz, hw.bandwidth_hz, tx_gain_db=min(0.0, hw.max_tx_gain_db),
                          rx_gain_db=0.0)
    with FlowgraphProcess("emulate", tx=["bs0"], rx=["ue0"], sample_rate_hz=hw.sample_rate_hz, noise_voltage=1e-4,
                          realtime=True, heartbeat_timeout_s=10.0) as fg:
        radios = _open_bridge_radios(fg, ["bs0", "ue0"], hw)
        try:
            for r in radios.values():
                r.configure(unity)
            for i in range(switches):
                iq = (0.3 * np.exp(2j * np.pi * (50 + 80 * (i % 2)) * np.arange(1024) / 1024)).astype(np.complex64)
                radios["bs0"].send(TxBurst(iq, cyclic=True, _key=_BURST_KEY))
                radios["ue0"].capture(4096)
                if i % 3 == 2:
                    radios["bs0"].mute()
            log = radios["bs0"].bridge.switches
            buffer_items = radios["bs0"].bridge.request("status")["burst_buffer_items"]
        finally:
            for r in radios.values():
                r.close()
    samples = np.array([s["samples"] for s in log], dtype=float)
    wait_ms = 1e3 * np.array([s["wait_s"] for s in log])
    fs = hw.sample_rate_hz
    return {"switches": len(log), "swap_samples_median": float(np.median(samples)), "swap_samples_max": float(samples.max()),
            "buffered_after_swap_bound_samples": 3 * buffer_items,
            "on_air_latency_bound_ms": round(1e3 * (samples.max() + 3 * buffer_items) / fs, 2),
            "send_confirmed_median_ms": round(float(np.median(wait_ms)), 2),
            "send_confirmed_max_ms": round(float(wait_ms.max()), 2)}


def impairments_section(args) -> dict:
    """configs/bench_mock, bench_pluto (two emulated Plutos) and bench_gnuradio (emulate flowgraph)
    with their impairments on (crystals ±25 ppm, ±2 ppm for the GNU Radio bench, phase noise, IQ
    imbalance, DC, ADC), after the start-up calibration: steps/s against the air-time limit of
    their captures (the capture samples per step at the sample rate), SINR error against Eq. 6;
    and the TX switch latency on the USRP stand-in."""
    import dataclasses

    from hardware.emulated.iiod import serve_bench
    from testbed.backends import make_backend
    from testbed.config import load_config

    out = {}
    for name in ("bench_mock", "bench_pluto", "bench_gnuradio"):
        config = load_config(name, {"hardware": {"settle_s": 0.0}})
        emulators = []
        if name == "bench_pluto":
            emulators, hw = serve_bench(config.hardware, config.network)
            config = dataclasses.replace(config, hardware=hw)
        try:
            net = make_backend(config, num_envs=1)
            try:
                out[name] = _impaired_loop(net, args.steps, config.hardware.sample_rate_hz)
            finally:
                net.close()
        finally:
            for emu in emulators:
                emu.stop()
    out["tx_switch_usrp_standin"] = _switch_latency(args.switches, load_config("bench_gnuradio").hardware)
    return out


SECTIONS = {"mock": mock_section, "dsp": dsp_section, "pluto": pluto_section, "gnuradio": gnuradio_section,
            "impairments": impairments_section}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="measured-loop steps on the mock backend")
    ap.add_argument("--trials", type=int, default=200, help="DSP trials (5 links each)")
    ap.add_argument("--rx-repeats", type=int, default=200,
                    help="4096-sample captures timed per radio (pluto), burst round trips (gnuradio)")
    ap.add_argument("--switches", type=int, default=60, help="TX switches timed on the USRP stand-in (impairments)")
    ap.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="sections to run (default: all)")
    ap.add_argument("--record", action="store_true", help="add the recording overhead (steps/s with and without "
                    "IQ recording on the mock loop)")
    args = ap.parse_args(argv)
    out = {name: SECTIONS[name](args) for name in (args.only or SECTIONS)}
    if args.record:
        out["record"] = record_section(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
