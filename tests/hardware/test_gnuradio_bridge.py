"""ZmqRadio against the real GNU Radio flowgraph in emulate mode: the radio contract, sample-exact
framing, per-band SINR measured through GNU Radio against the configured channel, several
radios on one flowgraph, and faults (flowgraph killed and restarted, heartbeat loss, refused
requests, misconfigured entries)."""
from __future__ import annotations

import contextlib

import json
import signal
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zmq

from hardware.config import RadioEntry
from hardware.dsp import PilotPlan, estimate, link_sinr
from hardware.gnuradio_bridge.process import GNURADIO_PYTHON, FlowgraphProcess, free_port, free_ports
from hardware.radio import _BURST_KEY, RadioError, RadioSettings, RadioTimeout, TxBurst, TxLimits
from hardware.transmitter import Transmitter
from hardware.drivers.gnuradio import ZmqRadio
from sim.safety import apply_safety_filter
from tests.hardware.radio_contract import RadioContract, safe_powers

FS_HZ = 2e6
CENTER_HZ = 2.44e9
UNITY = RadioSettings(CENTER_HZ, FS_HZ, FS_HZ, tx_gain_db=0.0, rx_gain_db=0.0)
WIDE_LIMITS = TxLimits(max_tx_gain_db=0.0, allowed_center_hz=(CENTER_HZ,), sample_rate_range_hz=(1e6, 4e6),
                       max_amplitude=1.0)
TIMEOUT_S = 1.0             # radio operations; generous for a loaded CI machine, short for the stall tests
HEARD_POWER = 1e-4          # full scale; the contract's burst arrives at about 0.1, the noise at 1e-7


def entry(fg: FlowgraphProcess, name: str) -> RadioEntry:
    """A radio entry with the flowgraph's endpoints for node ``name``."""
    return gnuradio_entry(name, **fg.endpoints(name))


def gnuradio_entry(name: str, **addresses) -> RadioEntry:
    """A gnuradio radio entry with these control/tx/rx addresses (the others empty)."""
    return RadioEntry(name=name, driver="gnuradio", role="ue", **addresses)


def burst(iq: np.ndarray, cyclic: bool = True) -> TxBurst:
    """A burst as the Transmitter would make it (tests of the driver below the Transmitter)."""
    return TxBurst(np.asarray(iq, dtype=np.complex64), cyclic=cyclic, _key=_BURST_KEY)


class StatusClient:
    """An independent look at the flowgraph's state over its control channel."""

    def __init__(self, fg: FlowgraphProcess):
        self.sock = zmq.Context.instance().socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(fg.control_address)

    def request(self, payload: bytes) -> dict:
        self.sock.send(payload)
        assert self.sock.poll(5000), "the flowgraph does not answer"
        return json.loads(self.sock.recv())

    def status(self) -> dict:
        return self.request(b'{"cmd": "status"}')

    def close(self) -> None:
        self.sock.close(0)


@pytest.fixture(scope="module")
def bench():
    """One flowgraph for the module: four TX nodes, four RX nodes, every pair linked at 0 dB."""
    fg = FlowgraphProcess("emulate", tx=["radio", "dry", "bs0", "bs1"], rx=["radio", "dry", "probe", "ue0"],
                          sample_rate_hz=FS_HZ, center_hz=CENTER_HZ, noise_voltage=1e-5, heartbeat_timeout_s=10.0)
    with fg:
        status = StatusClient(fg)
        probe = ZmqRadio("probe", WIDE_LIMITS, entry(fg, "probe"), timeout_s=TIMEOUT_S)   # keeps the bridge open
        probe.configure(RadioContract.SETTINGS)
        try:
            yield SimpleNamespace(fg=fg, status=status, probe=probe)
        finally:
            fg.signal(signal.SIGCONT)
            probe.close()
            status.close()


# --- the contract suite ---------------------------------------------------------------------
class TestZmqRadioContract(RadioContract):
    @pytest.fixture
    def radio(self, bench):
        r = ZmqRadio("radio", self.LIMITS, entry(bench.fg, "radio"), timeout_s=TIMEOUT_S)
        yield r
        bench.fg.signal(signal.SIGCONT)
        r.close()

    @pytest.fixture
    def dry_radio(self, bench):
        r = ZmqRadio("dry", self.LIMITS, entry(bench.fg, "dry"), dry_run=True, timeout_s=TIMEOUT_S)
        yield r
        r.close()

    @pytest.fixture(autouse=True)
    def _bench(self, bench):
        self.bench = bench

    def radiating(self, radio):
        """A probe hears the radio through GNU Radio (emulate mode: the gate follows at the
        next advance, see test_gates_follow_the_radios)."""
        return float(np.mean(np.abs(self.bench.probe.capture(4096)) ** 2)) > HEARD_POWER

    def stall(self, radio):
        self.bench.fg.signal(signal.SIGSTOP)


def test_gates_follow_the_radios(bench):
    """The flowgraph's TX gate opens with the first advance after send and closes with the
    first advance after mute, or when the last radio of the bridge closes."""
    bs0 = ZmqRadio("bs0", WIDE_LIMITS, entry(bench.fg, "bs0"), timeout_s=TIMEOUT_S)
    gates = lambda: bench.status.status()["tx_enabled"]      # noqa: E731
    try:
        bs0.configure(UNITY)
        bs0.send(burst(np.full(256, 0.1)))
        bench.probe.capture(1024)
        assert gates()["bs0"] is True
        bs0.mute()
        bench.probe.capture(1024)
        assert gates()["bs0"] is False
        bs0.send(burst(np.full(256, 0.1)))
        bench.probe.capture(1024)
        assert gates()["bs0"] is True
    finally:
        bs0.close()
    bench.probe.capture(1024)
    assert not any(gates().values())
    with FlowgraphProcess("emulate", tx=["a"], rx=["a"]) as fg:
        a = ZmqRadio("a", WIDE_LIMITS, entry(fg, "a"), timeout_s=TIMEOUT_S)
        a.configure(UNITY)
        a.send(burst(np.full(256, 0.1)))
        a.capture(1024)
        status = StatusClient(fg)
        try:
            assert status.status()["tx_enabled"] == {"a": True}
            a.close()                                   # the last radio: the gate closes at once
            assert status.status()["tx_enabled"] == {"a": False}
        finally:
            status.close()


def test_contract_burst_is_heard_through_gnuradio(bench):
    """What radiating() relies on: the probe hears the contract's burst, and not its absence."""
    radio = ZmqRadio("radio", RadioContract.LIMITS, entry(bench.fg, "radio"), timeout_s=TIMEOUT_S)
    try:
        radio.configure(RadioContract.SETTINGS)
        quiet = float(np.mean(np.abs(bench.probe.capture(4096)) ** 2))
        RadioContract().transmitter(radio).transmit(safe_powers(), 0, np.full((1, 2), 0.5))
        loud = float(np.mean(np.abs(bench.probe.capture(4096)) ** 2))
    finally:
        radio.close()
    assert quiet < 1e-6 < HEARD_POWER < loud


# --- framing ----------------------------------------------------------------------------------
def test_captures_are_exact_segments_of_the_burst_whatever_their_size(bench):
    """Reassembly by sample offset: each capture is a gap-free cyclic segment of the burst."""
    bs0 = ZmqRadio("bs0", WIDE_LIMITS, entry(bench.fg, "bs0"), timeout_s=TIMEOUT_S)
    probe = bench.probe
    try:
        bs0.configure(UNITY)
        probe.configure(UNITY)
        k = np.arange(997)                                 # a prime length: no alignment by luck
        iq = 0.5 * np.exp(2j * np.pi * (k * k % 997) / 997)
        bs0.send(burst(iq))
        for n in (1000, 3333, 16384, 12345, 70001):
            y = probe.capture(n)
            assert y.shape == (n,) and y.dtype == np.complex64
            start = int(np.argmax(np.abs([np.vdot(np.roll(iq, -s)[:64], y[:64]) for s in range(997)])))
            expected = np.take(iq, np.arange(start, start + n), mode="wrap")
            phase = np.vdot(expected, y) / np.vdot(expected, expected)     # the link's LO phase
            assert abs(abs(phase) - 1) < 1e-3
            np.testing.assert_allclose(y, phase * expected, atol=2e-4)   # noise 1e-5 rms, float32
    finally:
        bs0.close()
        probe.configure(RadioContract.SETTINGS)


def test_parallel_captures_share_a_window_and_a_repeat_capture_moves_on(bench):
    bs0 = ZmqRadio("bs0", WIDE_LIMITS, entry(bench.fg, "bs0"), timeout_s=TIMEOUT_S)
    ue0 = ZmqRadio("ue0", WIDE_LIMITS, entry(bench.fg, "ue0"), timeout_s=TIMEOUT_S)
    try:
        for r in (bs0, ue0, bench.probe):
            r.configure(UNITY)
        bs0.send(burst(np.full(256, 0.3)))
        a, b = bench.probe.capture(4096), ue0.capture(4096)
        np.testing.assert_allclose(np.abs(a), 0.3, atol=1e-4)
        np.testing.assert_allclose(np.abs(b), 0.3, atol=1e-4)
        assert not np.array_equal(a, b)                    # independent receiver noise...
        again = bench.probe.capture(4096)                  # ...and a second capture is a new window
        assert not np.array_equal(again, a)
    finally:
        bs0.close()
        ue0.close()
        bench.probe.configure(RadioContract.SETTINGS)


def test_one_shot_burst_plays_once(bench):
    bs0 = ZmqRadio("bs0", WIDE_LIMITS, entry(bench.fg, "bs0"), timeout_s=TIMEOUT_S)
    try:
        bs0.configure(UNITY)
        bench.probe.configure(UNITY)
        bs0.send(burst(np.full(3000, 0.4), cyclic=False))
        first, second = bench.probe.capture(4096), bench.probe.capture(4096)
    finally:
        bs0.close()
        bench.probe.configure(RadioContract.SETTINGS)
    heard = np.abs(first) > 0.2
    assert heard[:1000].all() and 1000 < heard.sum() <= 3000
    assert np.abs(second).max() < 1e-3


# --- per-band SINR through GNU Radio -----------------------------------------------------------
def test_per_band_sinr_measured_through_gnuradio_matches_the_configured_channel(bench):
    """Two BS radios into one UE radio through GNU Radio's FIR (multipath), carrier offset and
    noise blocks: per-band SINR from the pilots within 0.5 dB of what the channel implies."""
    plan = PilotPlan(num_bs=2, num_bands=4, fft_size=1024, tones_per_bs=4)
    taps = {"bs0": np.array([1.0, 0.0, 0.35j, 0.1]), "bs1": np.array([0.8, -0.3, 0.0, 0.2j])}
    link_db = {"bs0": -3.0, "bs1": -12.0}
    cfo_hz, noise_v = 250.0, 2e-3
    radios = {n: ZmqRadio(n, WIDE_LIMITS, entry(bench.fg, n), timeout_s=2.0) for n in ("bs0", "bs1", "ue0")}
    bridge = radios["ue0"].bridge
    try:
        for r in radios.values():
            r.configure(UNITY)
        for bs in ("bs0", "bs1"):
            bridge.set_link(bs, "ue0", gain_db=link_db[bs], taps=list(taps[bs]), cfo_hz=cfo_hz)
        bridge.set_noise("ue0", noise_v)
        level = torch.tensor([[[3, 2, 1, 3], [1, 3, 3, 0]]])
        safe = apply_safety_filter(level, torch.zeros(1, 2, 4), torch.tensor([0.0, 1e-3, 1e-2, 1e-1]), i_max_w=1e-9)
        digital = np.array([[0.5, 2.0, 1.0, 0.02], [3.0, 0.5, 0.01, 1.0]])       # spreads SINR over ~-5..30 dB
        Transmitter({n: radios[n] for n in ("bs0", "bs1")}, ["bs0", "bs1"], plan).transmit(safe, 0, digital)
        captures = [radios["ue0"].capture(32768) for _ in range(2)]
    finally:
        for name in ("bs0", "bs1"):
            bridge.set_link(name, "ue0", gain_db=0.0, taps=[1.0], cfo_hz=0.0)
        bridge.set_noise("ue0", 1e-5)
        for r in radios.values():
            r.close()

    tx_power = safe.power_w[0].numpy() * digital                                       # [B, K] full scale
    freqs = np.fft.fftfreq(plan.fft_size)[plan.pilot_bins]                            # [B, K, T] cycles/sample
    response = np.stack([np.abs(np.polyval(taps[b][::-1], np.exp(-2j * np.pi * freqs[i]))) ** 2
                         for i, b in enumerate(("bs0", "bs1"))])                     # [B, K, T]
    gain = 10 ** (np.array([link_db["bs0"], link_db["bs1"]]) / 10)[:, None]
    rx_power = gain * tx_power * response.mean(axis=-1)                               # [B, K]
    noise_band = noise_v ** 2 * plan.bins_per_band / plan.fft_size                    # [K]
    on = tx_power > 0
    expected_db = 10 * np.log10(link_sinr(rx_power, np.full(4, noise_band))[on])
    assert expected_db.min() < 0 and expected_db.max() > 25                 # the range the DSP promises
    for iq in captures:
        est = estimate(plan, iq, FS_HZ)
        assert abs(float(est.cfo_hz) - cfo_hz) < 5.0
        measured_db = 10 * np.log10(link_sinr(est.power, est.residual)[on])
        assert np.abs(measured_db - expected_db).max() < 0.5, (measured_db, expected_db)


# --- faults -----------------------------------------------------------------------------------
@pytest.fixture
def own_bench():
    """A flowgraph of its own (tests that kill, restart or starve it): bs0 -> ue0."""
    ports = dict(zip(("control", "tx:bs0", "rx:bs0", "rx:ue0"), free_ports(["127.0.0.1"] * 4)))
    made = []

    def start(**options):
        fg = FlowgraphProcess("emulate", tx=["bs0"], rx=["bs0", "ue0"], ports=ports, noise_voltage=1e-5,
                              **{"heartbeat_timeout_s": 10.0, **options}).start()
        made.append(fg)
        return fg
    yield start
    for fg in made:
        fg.stop()


@contextlib.contextmanager
def tone_pair(fg):
    """bs0 and ue0 of ``fg`` configured, bs0 sending a constant tone of amplitude 0.3; both closed at the end."""
    bs0 = ZmqRadio("bs0", WIDE_LIMITS, entry(fg, "bs0"), timeout_s=TIMEOUT_S)
    ue0 = ZmqRadio("ue0", WIDE_LIMITS, entry(fg, "ue0"), timeout_s=TIMEOUT_S)
    try:
        for r in (bs0, ue0):
            r.configure(UNITY)
        bs0.send(burst(np.full(512, 0.3)))
        yield bs0, ue0
    finally:
        bs0.close()
        ue0.close()


def test_flowgraph_killed_mid_run_raises_mutes_and_reconnects_after_restart(own_bench):
    fg = own_bench()
    with tone_pair(fg) as (bs0, ue0):
        np.testing.assert_allclose(np.abs(ue0.capture(4096)), 0.3, atol=1e-3)
        fg.signal(signal.SIGKILL)
        fg.proc.wait(5)
        with pytest.raises(RadioError):
            ue0.capture(4096)
        bs0.mute()                                     # this side stops; a dead bridge sends nothing
        assert bs0.muted and not bs0.transmitting

        own_bench()                                    # the same ports, a new session
        quiet = ue0.capture(4096)                      # reconnects; settings replayed; nothing on air
        assert np.abs(quiet).max() < 1e-3
        bs0.send(burst(np.full(512, 0.2)))
        np.testing.assert_allclose(np.abs(ue0.capture(4096)), 0.2, atol=1e-3)


def test_restart_while_transmitting_reports_the_lost_tx_once(own_bench):
    fg = own_bench()
    with tone_pair(fg) as (bs0, ue0):
        fg.stop()
        own_bench()
        with pytest.raises(RadioError, match=r"restarted: TX of \['bs0'\] was lost"):
            ue0.capture(4096)
        assert not bs0.transmitting
        assert np.abs(ue0.capture(4096)).max() < 1e-3


def test_heartbeat_loss_mutes_tx_and_the_client_says_so(own_bench):
    fg = own_bench(heartbeat_timeout_s=TIMEOUT_S)
    status = StatusClient(fg)
    with tone_pair(fg) as (bs0, ue0):
        try:
            np.testing.assert_allclose(np.abs(ue0.capture(4096)), 0.3, atol=1e-3)
            time.sleep(2.0)                                             # the client goes quiet
            after = status.status()
            assert after["tx_enabled"] == {"bs0": False} and after["watchdog_trips"] == 1
            with pytest.raises(RadioError, match="heartbeat lost"):
                ue0.capture(4096)
            assert not bs0.transmitting
            bs0.send(burst(np.full(512, 0.3)))                         # an explicit send turns TX back on
            np.testing.assert_allclose(np.abs(ue0.capture(4096)), 0.3, atol=1e-3)
        finally:
            status.close()


def test_refused_request_is_a_radio_error_and_the_radio_works_on(bench):
    ue0 = ZmqRadio("ue0", WIDE_LIMITS, entry(bench.fg, "ue0"), timeout_s=TIMEOUT_S)
    try:
        ue0.configure(UNITY)
        with pytest.raises(RadioError, match="refused 'set_link': tx must name one of"):
            ue0.bridge.set_link("ue0", "nobody", gain_db=-3.0)
        with pytest.raises(RadioError, match="noise_voltage=50.*out of range"):
            ue0.bridge.set_noise("ue0", 50.0)
        reply = bench.status.request(b"\x00garbage")
        assert reply["ok"] is False and "JSON" in reply["error"]
        assert ue0.capture(2048).shape == (2048,)
    finally:
        ue0.close()


def test_bridge_enforces_its_own_tx_gain_cap(own_bench):
    fg = own_bench(max_tx_gain_db=-20.0)
    loose = TxLimits(max_tx_gain_db=0.0, allowed_center_hz=(CENTER_HZ,), sample_rate_range_hz=(1e6, 4e6))
    bs0 = ZmqRadio("bs0", loose, entry(fg, "bs0"), timeout_s=TIMEOUT_S)
    try:
        with pytest.raises(RadioError, match="hard limit --max-tx-gain-db=-20"):
            bs0.configure(RadioSettings(CENTER_HZ, FS_HZ, FS_HZ, tx_gain_db=-10.0, rx_gain_db=0.0))
        assert bs0.settings is None
    finally:
        bs0.close()


def test_entry_errors_name_the_field(bench):
    with pytest.raises(RadioError, match="control_address"):
        ZmqRadio("ue0", WIDE_LIMITS, gnuradio_entry("ue0", rx_address="tcp://127.0.0.1:1"))
    with pytest.raises(RadioError, match="no node 'nobody'"):
        ZmqRadio("nobody", WIDE_LIMITS, gnuradio_entry("nobody", control_address=bench.fg.control_address))
    wrong = {**bench.fg.endpoints("ue0"), "rx_address": "tcp://127.0.0.1:1"}
    with pytest.raises(RadioError, match="rx_address .* does not match"):
        ZmqRadio("ue0", WIDE_LIMITS, gnuradio_entry("ue0", **wrong))
    port = free_port()
    with pytest.raises(RadioTimeout, match="is the flowgraph running"):
        ZmqRadio("ue0", WIDE_LIMITS, gnuradio_entry("ue0", control_address=f"tcp://127.0.0.1:{port}"), timeout_s=0.3)
    assert bench.probe.capture(1024).shape == (1024,)              # the shared bridge is unharmed


def test_stalled_flowgraph_times_out_then_resumes_in_step(own_bench):
    """SIGSTOP mid-run: RadioTimeout; after SIGCONT the interrupted advance is finished first,
    so the streams stay in step and the next capture is the burst again."""
    fg = own_bench()
    with tone_pair(fg) as (bs0, ue0):
        try:
            ue0.capture(4096)
            fg.signal(signal.SIGSTOP)
            with pytest.raises(RadioTimeout):
                ue0.capture(100_000)
            fg.signal(signal.SIGCONT)
            for _ in range(3):
                np.testing.assert_allclose(np.abs(ue0.capture(4096)), 0.3, atol=1e-3)
            assert bs0.bridge.broken is None and bs0.transmitting
        finally:
            fg.signal(signal.SIGCONT)


# A flowgraph whose TX relay lets everything through, so that a malformed message reaches GNU
# Radio's pull_source and kills its thread ("Incompatible vector sizes"), as on main before the
# relay: the way to kill one block of a real flowgraph on purpose.
UNCHECKED_FLOWGRAPH = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("flowgraph", sys.argv[1])
flowgraph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(flowgraph)
flowgraph.tx_message_error = lambda frames: None
sys.exit(flowgraph.main(sys.argv[2:]))
"""


def test_a_dead_data_path_is_an_error_in_status_and_a_radio_error_naming_the_node(tmp_path):
    script = tmp_path / "unchecked_flowgraph.py"
    script.write_text(UNCHECKED_FLOWGRAPH)
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {GNURADIO_PYTHON} {script} "$@"\n')
    python.chmod(0o755)
    with FlowgraphProcess("emulate", tx=["bs0"], rx=["bs0", "ue0"], python=str(python), noise_voltage=1e-5,
                          heartbeat_timeout_s=10.0) as fg:
        status = StatusClient(fg)
        with tone_pair(fg) as (bs0, ue0):
            try:
                np.testing.assert_allclose(np.abs(ue0.capture(4096)), 0.3, atol=1e-3)
                assert status.status()["ok"] is True
                bs0.bridge.tx["bs0"].socket.send(b"1234567")       # the client's own TX socket, 7 bytes
                deadline = time.monotonic() + 5.0
                while (reply := status.status())["ok"] and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert reply["ok"] is False and set(reply["dead"]) == {"bs0"}
                assert "pull_source" in reply["dead"]["bs0"] and "node 'bs0'" in reply["error"]
                with pytest.raises(RadioError, match=r"data path dead: node 'bs0': GNU Radio block thread 'pull_source"):
                    ue0.capture(4096)
                with pytest.raises(RadioError, match="data path dead: node 'bs0'"):
                    bs0.configure(UNITY)
                assert fg.running
            finally:
                status.close()
    assert any("Incompatible vector sizes" in line for line in fg.output)
    assert any("bridge: error: data path dead" in line for line in fg.output)
