"""The bridge flowgraph on its own, driven with raw ZMQ sockets (no ZmqRadio): sample-exact
GNU Radio arithmetic in emulate mode, the tag-header framing, the control channel's answers to
malformed requests, the heartbeat watchdog, SIGTERM, and uhd mode without a USRP."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from hardware.gnuradio_bridge.process import FLOWGRAPH, GNURADIO_PYTHON, BridgeStartError, FlowgraphProcess

FS_HZ = 2e6
HEADER = struct.Struct("<HBQQ")


class RawClient:
    """The client side of a flowgraph with plain pyzmq: TX PUSH (bound), RX PULL, control REQ."""

    def __init__(self, fg: FlowgraphProcess):
        self.fg = fg
        self.ctx = zmq.Context.instance()
        self.tx, self.rx = {}, {}
        for name, port in fg.tx_ports.items():
            self.tx[name] = self._sock(zmq.PUSH)
            self.tx[name].bind(f"tcp://127.0.0.1:{port}")
        for name, port in fg.rx_ports.items():
            self.rx[name] = self._sock(zmq.PULL)
            self.rx[name].connect(f"tcp://127.0.0.1:{port}")
        self.offsets = {name: 0 for name in fg.rx_ports}
        self.req = self._sock(zmq.REQ)
        self.req.connect(fg.control_address)

    def _sock(self, kind):
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        return sock

    def control_raw(self, payload: bytes, timeout_ms: int = 3000) -> dict | None:
        self.req.send(payload)
        if not self.req.poll(timeout_ms):
            self.req.close(0)
            self.req = self._sock(zmq.REQ)
            self.req.connect(self.fg.control_address)
            return None
        return json.loads(self.req.recv())

    def control(self, cmd: str, **fields) -> dict:
        reply = self.control_raw(json.dumps({"cmd": cmd, **fields}).encode())
        assert reply is not None and reply["ok"], reply
        return reply

    def push(self, name: str, iq: np.ndarray) -> None:
        self.tx[name].send(np.ascontiguousarray(iq, dtype=np.complex64).tobytes())

    def receive(self, name: str) -> np.ndarray:
        """One RX message, checking GNU Radio's header and that offsets run on without a gap."""
        msg = self.rx[name].recv()
        magic, version, offset, num_tags = HEADER.unpack_from(msg)
        assert (magic, version, num_tags) == (0x5FF0, 1, 0)
        assert offset == self.offsets[name]
        samples = np.frombuffer(msg[HEADER.size:], dtype=np.complex64)
        self.offsets[name] += samples.size
        return samples

    def advance(self, tx_iq: dict[str, np.ndarray], rx: list[str]) -> dict[str, np.ndarray]:
        """Push every TX input (messages of at most 16384 samples) while reading every RX node:
        a branch nobody reads holds up the TX input that all branches share."""
        n = {iq.size for iq in tx_iq.values()}.pop()
        assert set(rx) == set(self.rx), "every RX node must be read"
        chunks = {name: [np.asarray(iq[i: i + 16384]) for i in range(0, n, 16384)] for name, iq in tx_iq.items()}
        parts = {name: [] for name in rx}
        have = dict.fromkeys(rx, 0)
        deadline = time.monotonic() + 10.0
        while any(chunks.values()) or any(h < n for h in have.values()):
            assert time.monotonic() < deadline, f"stalled: have {have} of {n}"
            for name, todo in chunks.items():
                if todo:
                    self.push(name, todo.pop(0))
            for name in rx:
                while have[name] < n and self.rx[name].poll(1):
                    parts[name].append(self.receive(name))
                    have[name] += parts[name][-1].size
        assert all(h == n for h in have.values()), "the medium gives exactly as many samples as were pushed"
        return {name: np.concatenate(p) for name, p in parts.items()}

    def settle(self) -> None:
        """Run zeros through until a change of noise, tones or LOs has reached the output."""
        status = self.control("status")
        n = 2 * status["source_lag_samples"]
        self.advance({name: np.zeros(n + -n % status["align_samples"]) for name in self.tx}, list(self.rx))

    def close(self) -> None:
        for sock in [*self.tx.values(), *self.rx.values(), self.req]:
            sock.close(0)


@pytest.fixture(scope="module")
def medium():
    """Two TX nodes, three RX nodes; 'quiet' has no noise, 'noisy' has noise_voltage 0.1."""
    fg = FlowgraphProcess("emulate", tx=["a", "b"], rx=["quiet", "noisy", "a"], sample_rate_hz=FS_HZ,
                          center_hz=2.44e9, num_taps=4, max_tx_gain_db=10.0, heartbeat_timeout_s=30.0)
    with fg:
        client = RawClient(fg)
        client.control("set_noise", node="noisy", noise_voltage=0.1)
        try:
            yield client
        finally:
            client.close()


def ramp(n: int, start: int = 0) -> np.ndarray:
    """A test signal whose sums stay below the ADC's full scale (the RX chain saturates there)."""
    k = np.arange(start, start + n)
    return (0.0005 * (k % 977) + 0.00025j * (k % 313)).astype(np.complex64)


def test_ready_line_describes_the_sockets(medium):
    ready = medium.fg.ready
    assert ready["mode"] == "emulate"
    assert set(ready["tx"]) == {"a", "b"} and set(ready["rx"]) == {"quiet", "noisy", "a"}
    assert ready["control"] == medium.fg.control_address
    status = medium.control("status")
    assert status["session"] == ready["session"]
    assert status["tx_enabled"] == {"a": False, "b": False}        # TX starts muted


def test_gnuradio_arithmetic_is_sample_exact(medium):
    """quiet = g_a·(taps_a * x_a)·e^{j2πf n/fs} + g_b·x_b, framed by offsets, no shift, no loss."""
    medium.control("unmute", node="a")
    medium.control("unmute", node="b")
    taps = [1.0, 0.0, 0.5j, 0.0]
    medium.control("set_link", tx="a", rx="quiet", gain_db=-6.0, taps=[[1, 0], 0, [0, 0.5]], cfo_hz=1000.0)
    medium.control("set_link", tx="b", rx="quiet", gain_db=3.0)
    medium.settle()
    try:
        start = medium.offsets["quiet"]
        n_total, got, xa_all, xb_all = 0, [], [], []
        for n in (4992, 12352, 784, 40000):             # multiples of 16, unrelated to message boundaries
            xa, xb = ramp(n, n_total), ramp(n, 7 * n_total + 5)[::-1].copy()
            got.append(medium.advance({"a": xa, "b": xb}, ["quiet", "noisy", "a"])["quiet"])
            xa_all.append(xa)
            xb_all.append(xb)
            n_total += n
        y = np.concatenate(got)
        xa, xb = np.concatenate(xa_all), np.concatenate(xb_all)
        k = np.arange(start, start + n_total)
        filtered = np.convolve(np.concatenate([np.zeros(3, np.complex64), xa]), taps)[3: 3 + n_total]
        # the filter's first 3 outputs still see the settle's zeros, so compare from the 4th on;
        # tolerance: GNU Radio's fixed-point LO is good to about 3e-5
        link_a = 10 ** (-6 / 20) * filtered * np.exp(2j * np.pi * 1000.0 / FS_HZ * k)
        link_b = 10 ** (3 / 20) * xb
        phase0 = np.angle(np.vdot(link_a[3:], y[3:] - link_b[3:]))   # the LO's phase is free-running
        np.testing.assert_allclose(y[3:], (link_a * np.exp(1j * phase0) + link_b)[3:], rtol=1e-4, atol=5e-5)
    finally:
        medium.control("set_link", tx="a", rx="quiet", gain_db=0.0, taps=[1], cfo_hz=0.0)
        medium.control("set_link", tx="b", rx="quiet", gain_db=0.0)
        medium.control("mute")


def test_output_comes_in_multiples_of_align_samples(medium):
    """GNU Radio fact the client relies on: VOLK blocks hold a remainder of fewer than
    align_samples back until more input arrives; pushing whole multiples releases everything."""
    align = medium.control("status")["align_samples"]
    assert align >= 4
    start = dict(medium.offsets)
    for name in medium.tx:
        medium.push(name, np.zeros(align + 3))
    time.sleep(0.3)
    for name in medium.rx:
        while medium.rx[name].poll(50):
            medium.receive(name)
    released = {name: medium.offsets[name] - start[name] for name in medium.rx}
    assert all(n < align + 3 for n in released.values()), released      # a remainder is held back
    for name in medium.tx:                             # complete the multiple: the rest comes out
        medium.push(name, np.zeros(align - 3))
    deadline = time.monotonic() + 5
    while any(medium.offsets[n] - start[n] < 2 * align for n in medium.rx) and time.monotonic() < deadline:
        for name in medium.rx:
            while medium.rx[name].poll(10):
                medium.receive(name)
    assert all(medium.offsets[n] - start[n] == 2 * align for n in medium.rx)


def test_noise_power_is_noise_voltage_squared(medium):
    medium.settle()
    out = medium.advance({"a": np.zeros(65536), "b": np.zeros(65536)}, ["quiet", "noisy", "a"])
    assert np.all(out["quiet"] == 0)
    assert np.mean(np.abs(out["noisy"]) ** 2) == pytest.approx(0.01, rel=0.03)


def test_muted_tx_contributes_nothing(medium):
    medium.control("mute")
    out = medium.advance({"a": np.full(4096, 0.5), "b": np.full(4096, 0.5)}, ["quiet", "noisy", "a"])
    assert np.all(out["quiet"] == 0)
    medium.control("unmute", node="a")
    try:
        out = medium.advance({"a": np.full(4096, 0.5), "b": np.full(4096, 0.5)}, ["quiet", "noisy", "a"])
    finally:
        medium.control("mute")
    np.testing.assert_allclose(np.abs(out["quiet"]), 0.5, atol=1e-5)   # through a unit link (any LO phase)


@pytest.mark.parametrize("payload,error", [
    (b"\xff\xfe not utf-8", "not UTF-8 JSON"),
    (b"{not json", "not UTF-8 JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"cmd": 5}', "JSON object"),
    (b'{"cmd": "reboot"}', "unknown cmd"),
    (b'{"cmd": "unmute", "node": "nobody"}', "node must name one of"),
    (b'{"cmd": "configure", "node": "a", "center_hz": "fast"}', "center_hz must be a finite number"),
    (b'{"cmd": "configure", "node": "a", "sample_rate_hz": NaN}', "sample_rate_hz must be a finite number"),
    (b'{"cmd": "configure", "node": "a", "tx_gain_db": 20}', "hard limit"),
    (b'{"cmd": "set_noise", "node": "quiet", "noise_voltage": 1e999}', "finite"),
    (b'{"cmd": "set_noise", "node": "quiet", "noise_voltage": -1}', "out of range"),
    (b'{"cmd": "set_link", "tx": "a", "rx": "quiet", "taps": [1, 2, 3, 4, 5]}', "taps must be a list"),
    (b'{"cmd": "set_link", "tx": "a", "rx": "quiet", "taps": [[1, "x"]]}', "taps"),
    (b'{"cmd": "set_link", "tx": "a", "rx": "quiet", "gain_db": true}', "finite number"),
    (b'{"cmd": "set_interferer", "node": "quiet", "freq_hz": 1000}', "missing field"),
    (b'{"cmd": "status", "pad": "' + b"x" * 70_000 + b'"}', "exceeds"),
])
def test_malformed_control_message_gets_an_error_and_the_flowgraph_runs_on(medium, payload, error):
    before = medium.control("status")
    reply = medium.control_raw(payload)
    assert reply is not None and reply["ok"] is False and error in reply["error"]
    after = medium.control("status")
    assert after["session"] == before["session"] and after["settings"] == before["settings"]
    assert medium.fg.running
    out = medium.advance({"a": np.zeros(1024), "b": np.zeros(1024)}, ["quiet", "noisy", "a"])
    assert out["noisy"].size == 1024


def test_oversized_message_is_dropped_by_zmq_and_the_flowgraph_runs_on(medium):
    assert medium.control_raw(b"x" * (2 << 20), timeout_ms=500) is None    # over ZMQ's MAXMSGSIZE: no reply
    assert medium.fg.running
    assert medium.control("status")["ok"]


def _rejected(client: RawClient, baseline: dict, deadline_s: float = 5.0) -> dict:
    """status["rejected"] once it differs from baseline (the relay counts on its own thread)."""
    deadline = time.monotonic() + deadline_s
    while True:
        rejected = client.control("status")["rejected"]
        if rejected != baseline or time.monotonic() > deadline:
            return rejected
        time.sleep(0.02)


@pytest.mark.parametrize("frames", [
    [b"1234567"],                                                      # killed pull_source before the relay
    [b""],
    [np.zeros(100, np.complex64).tobytes() + b"\x00\x01\x02"],        # not whole samples
    [np.array([0.1, np.nan, 0.2], np.complex64).tobytes()],            # not finite
    [np.zeros(64, np.complex64).tobytes()] * 2,                        # two frames
])
def test_malformed_tx_message_is_dropped_and_counted_and_bursts_still_round_trip(medium, frames):
    before = medium.control("status")["rejected"]
    medium.tx["a"].send_multipart(frames)
    after = _rejected(medium, before)
    assert after["tx"] == {**before["tx"], "a": before["tx"]["a"] + 1}
    assert after["control"] == before["control"]
    medium.control("unmute", node="a")
    try:
        x = ramp(4096)
        out = medium.advance({"a": x, "b": np.zeros(4096)}, ["quiet", "noisy", "a"])
    finally:
        medium.control("mute")
    np.testing.assert_allclose(np.abs(out["quiet"]), np.abs(x), atol=5e-5)   # a unit link, any LO phase
    assert medium.fg.running


def test_malformed_control_requests_are_counted(medium):
    before = medium.control("status")["rejected"]["control"]
    for payload in (b"{not json", b"[1]", b'{"cmd": "reboot"}', b'{"cmd": "mute", "node": 5}'):
        assert medium.control_raw(payload)["ok"] is False
    assert medium.control("status")["rejected"]["control"] == before + 4


def test_multipart_control_request_is_refused_and_the_flowgraph_runs_on(medium):
    """On main a second frame killed the control thread (REP cannot reply mid-message)."""
    medium.req.send_multipart([b'{"cmd": "status"}', b'{"cmd": "status"}'])
    assert medium.req.poll(3000)
    reply = json.loads(medium.req.recv())
    assert reply["ok"] is False and "2 frames" in reply["error"]
    assert medium.fg.running and medium.control("status")["ok"]


def test_heartbeat_loss_mutes_all_tx():
    with FlowgraphProcess("emulate", tx=["a"], rx=["a"], heartbeat_timeout_s=1.0) as fg:
        client = RawClient(fg)
        try:
            client.advance({"a": np.zeros(2048)}, ["a"])           # the streams are connected
            client.control("unmute", node="a")
            out = client.advance({"a": np.full(2048, 0.25)}, ["a"])
            np.testing.assert_allclose(out["a"], 0.25, atol=1e-6)
            for _ in range(15):                    # malformed requests are answered but are no heartbeat
                assert client.control_raw(b'{"cmd": "nonsense"}')["ok"] is False
                time.sleep(0.1)
            out = client.advance({"a": np.full(2048, 0.25)}, ["a"])    # pushed after the watchdog tripped
            assert np.all(out["a"] == 0)
            status = client.control("status")
            assert status["tx_enabled"] == {"a": False} and status["watchdog_trips"] == 1
        finally:
            client.close()
    assert any("no heartbeat" in line for line in fg.output)


def test_sigterm_stops_cleanly():
    fg = FlowgraphProcess("emulate", tx=["a"], rx=["a"]).start()
    assert fg.running
    assert fg.stop() == 0


def test_uhd_mode_without_a_usrp_fails_fast_with_a_clear_error():
    start = time.monotonic()
    with pytest.raises(BridgeStartError, match="no USRP found"):
        FlowgraphProcess("uhd", tx=["usrp"], rx=["usrp"], device_args="type=b200", ready_timeout_s=60).start()
    assert time.monotonic() - start < 20.0      # UHD gives up in about a second; 60 s would be a hang


@pytest.mark.parametrize("args,error", [
    (["emulate", "--control-port", "5999", "--rx", "a=6000"], "needs at least one --tx"),
    (["emulate", "--control-port", "5999", "--tx", "a=70000", "--rx", "a=6000"], "NAME=PORT"),
    (["emulate", "--control-port", "5999", "--tx", "a=6001", "--rx", "b=6000", "--link", "a=c"], "--link"),
    (["emulate", "--control-port", "5999", "--tx", "a=6001", "--rx", "a=6000", "--tx-gain-db", "5",
      "--max-tx-gain-db", "0"], "exceeds --max-tx-gain-db"),
])
def test_bad_command_line_is_refused_before_anything_runs(args, error):
    done = subprocess.run([GNURADIO_PYTHON, str(FLOWGRAPH), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and error in done.stderr
    assert "READY" not in done.stdout


def test_flowgraph_stops_when_the_process_that_started_it_dies():
    """A test run killed with -9 leaves no flowgraph behind (the process manager passes
    --exit-with-parent)."""
    code = ("import sys, time; from hardware.gnuradio_bridge.process import FlowgraphProcess; "
            "fg = FlowgraphProcess('emulate', tx=['a'], rx=['a']).start(); print(fg.proc.pid, flush=True); "
            "time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


UHD_CHECKS = r'''
import sys, types
sys.path.insert(0, sys.argv[1])
import flowgraph as fg

class Range:
    def __init__(self, lo, hi): self.lo, self.hi = lo, hi
    def start(self): return self.lo
    def stop(self): return self.hi

class Sensor:
    def __init__(self, value): self.value = value
    def to_bool(self): return self.value

class FakeUsrp:                      # what gr-uhd's usrp_source/usrp_sink report, for a B200-like device
    locked = True
    def get_gain_range(self, chan): return Range(0.0, 76.0)
    def get_freq_range(self, chan): return Range(70e6, 6e9)
    def get_samp_rates(self): return Range(200e3, 56e6)
    def get_bandwidth_range(self, chan): return Range(200e3, 56e6)
    def get_sensor_names(self, chan): return ["lo_locked"]
    def get_sensor(self, name, chan): return Sensor(self.locked)

graph = types.SimpleNamespace(usrp_sink=FakeUsrp(), usrp_source=FakeUsrp())
def refused(call):
    try:
        call()
    except fg.ControlError as err:
        return str(err)
    return ""
print([(r.start(), r.stop()) for key in ("center_hz", "sample_rate_hz", "rx_gain_db")
       for r in fg.UhdGraph._ranges(graph, key)])
print(refused(lambda: fg.UhdGraph._check_coerced("sample_rate_hz", 2e6, 2e6 * (1 + 5e-6))))
print(refused(lambda: fg.UhdGraph._check_coerced("sample_rate_hz", 2e6, 2e6 * (1 + 5e-7))))
unlocked = FakeUsrp(); unlocked.locked = False
print(refused(lambda: fg.UhdGraph._check_lo_locked(unlocked)))
print(refused(lambda: fg.UhdGraph._check_lo_locked(FakeUsrp())))
'''


def test_uhd_mode_refuses_what_the_usrp_reports_it_cannot_do(tmp_path):
    """The uhd flowgraph's checks, on a fake of gr-uhd's device objects (no USRP here): ranges as
    the device reports them, a coerced rate beyond 1 ppm refused, an LO that did not lock refused."""
    script = tmp_path / "uhd_checks.py"
    script.write_text(UHD_CHECKS)
    done = subprocess.run([GNURADIO_PYTHON, str(script), str(FLOWGRAPH.parent)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    outside, coerced, exact, unlocked, locked = done.stdout.splitlines()
    assert outside == str([(70e6, 6e9), (70e6, 6e9), (200e3, 56e6), (200e3, 56e6), (0.0, 76.0)])
    assert "coerced by the USRP" in coerced and exact == ""
    assert "did not lock" in unlocked and locked == ""
