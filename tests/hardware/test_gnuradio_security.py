"""Who the GNU Radio bridge talks to: the client checks every reply against the protocol and
binds only where it was told (a fake flowgraph over real ZMQ); remote radios with CURVE keys
(two hosts emulated on 127.0.0.1 with a real flowgraph): the right keys are served, a wrong,
unknown or missing key is refused; plain ZMQ beyond loopback is refused everywhere; and
``testbed keys generate`` writes the keys."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import zmq
import zmq.auth

from hardware.config import RadioEntry
from hardware.drivers.gnuradio import ZmqRadio
from hardware.gnuradio_bridge.process import FLOWGRAPH, GNURADIO_PYTHON, FlowgraphProcess, free_port
from hardware.radio import _BURST_KEY, RadioError, RadioSettings, RadioTimeout, TxBurst, TxLimits
from testbed.config import ConfigError, load_config
from testbed.keys import add_command, generate

CENTER_HZ, FS_HZ = 2.44e9, 2e6
UNITY = RadioSettings(CENTER_HZ, FS_HZ, FS_HZ, tx_gain_db=0.0, rx_gain_db=0.0)
LIMITS = TxLimits(max_tx_gain_db=0.0, allowed_center_hz=(CENTER_HZ,), sample_rate_range_hz=(1e6, 4e6),
                  max_amplitude=1.0)


def burst(level: float) -> TxBurst:
    return TxBurst(np.full(256, level, dtype=np.complex64), cyclic=True, _key=_BURST_KEY)


# --- the client against a fake flowgraph: replies are checked against the protocol -------------
class FakeFlowgraph:
    """A REP socket on 127.0.0.1 that answers each request with the next scripted reply (bytes,
    or a JSON value); it records the commands it got."""

    def __init__(self, replies: list):
        self.ctx = zmq.Context.instance()
        self.rep = self.ctx.socket(zmq.REP)
        self.rep.setsockopt(zmq.LINGER, 0)
        self.port = self.rep.bind_to_random_port("tcp://127.0.0.1")
        self.replies = list(replies)
        self.commands: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            if self.rep.poll(20) and self.replies:
                self.commands.append(json.loads(self.rep.recv())["cmd"])
                reply = self.replies.pop(0)
                self.rep.send(reply if isinstance(reply, bytes) else json.dumps(reply).encode())
        self.rep.close(0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def fake_status(tx_port: int, rx_port: int, **changes) -> dict:
    """A complete status reply of a one-node emulate flowgraph (node 'a')."""
    status = {"ok": True, "session": "fake", "mode": "emulate", "tx_enabled": {"a": False}, "watchdog_trips": 0,
              "settings": {}, "heartbeat_timeout_s": 2.0, "tx_endpoints": {"a": f"tcp://127.0.0.1:{tx_port}"},
              "rx_ports": {"a": rx_port}, "source_lag_samples": 8192, "align_samples": 16, "tx_clocking": ["a"],
              "tx_items": {"a": 0}}
    status.update(changes)
    return status


@pytest.fixture
def ports():
    return SimpleNamespace(tx=free_port(), rx=free_port())


def open_radio(fake: FakeFlowgraph) -> ZmqRadio:
    return ZmqRadio("a", LIMITS, RadioEntry(name="a", driver="gnuradio", role="ue", control_address=fake.address),
                    timeout_s=0.5)


def test_a_complete_reply_is_accepted(ports):
    """What the rejections below differ from: the fake's full status opens the radio."""
    fake = FakeFlowgraph([fake_status(ports.tx, ports.rx), fake_status(ports.tx, ports.rx)])
    try:
        radio = open_radio(fake)
        radio.configure(UNITY)
        radio.close()
    finally:
        fake.close()
    assert fake.commands == ["status", "configure"]


@pytest.mark.parametrize("reply,error", [
    ({"ok": True}, r"bad reply to 'status': field 'session' is missing"),
    (b"\x00garbage", r"unreadable reply to 'status'"),
    ([1, 2], r"bad reply to 'status': field 'ok' must be true or false"),
    ({"ok": "yes"}, r"bad reply to 'status': field 'ok'"),
    ({"ok": False}, r"bad reply to 'status': field 'error' is missing"),
    ({"ok": False, "error": "x", "dead": 5}, r"bad reply to 'status': field 'dead' must be an object"),
    ("partial", r"bad reply to 'status': field 'tx_items' is missing"),
    ("align_samples", r"bad reply to 'status': field 'align_samples' must be an integer >= 1, got 16"),
    ("rx_ports", r"bad reply to 'status': field 'rx_ports' must be an object of ports"),
    ("tx_endpoints", r"bad reply to 'status': field 'tx_endpoints' must be an object of tcp://HOST:PORT"),
    ("tx_enabled", r"bad reply to 'status': field 'tx_enabled' must be an object of booleans"),
])
def test_a_bad_first_reply_is_a_radio_error_naming_the_command_and_the_field(ports, reply, error):
    variants = {
        "partial": {k: v for k, v in fake_status(ports.tx, ports.rx).items() if k != "tx_items"},
        "align_samples": fake_status(ports.tx, ports.rx, align_samples="16"),
        "rx_ports": fake_status(ports.tx, ports.rx, rx_ports={"a": 70000}),
        "tx_endpoints": fake_status(ports.tx, ports.rx, tx_endpoints={"a": "udp://127.0.0.1:5"}),
        "tx_enabled": fake_status(ports.tx, ports.rx, tx_enabled={"a": 1}),
    }
    fake = FakeFlowgraph([variants.get(reply, reply) if isinstance(reply, str) else reply])
    try:
        with pytest.raises(RadioError, match=error):
            open_radio(fake)
    finally:
        fake.close()


def test_a_bad_later_reply_is_a_radio_error_naming_its_command(ports):
    partial = {k: v for k, v in fake_status(ports.tx, ports.rx).items() if k != "tx_enabled"}
    fake = FakeFlowgraph([fake_status(ports.tx, ports.rx), partial])
    try:
        radio = open_radio(fake)
        try:
            with pytest.raises(RadioError, match=r"bad reply to 'configure': field 'tx_enabled' is missing"):
                radio.configure(UNITY)
        finally:
            radio.close()
    finally:
        fake.close()


def test_the_client_binds_only_on_its_own_host(ports):
    """A reply asking this side to bind elsewhere (all interfaces here) is refused before
    anything is bound."""
    fake = FakeFlowgraph([fake_status(ports.tx, ports.rx, tx_endpoints={"a": f"tcp://0.0.0.0:{ports.tx}"})])
    try:
        with pytest.raises(RadioError, match=r"'tx_endpoints' names tcp://0\.0\.0\.0:\d+ .* binds only on 127\.0\.0\.1"):
            open_radio(fake)
    finally:
        fake.close()
    with zmq.Context.instance().socket(zmq.PULL) as probe:      # the port was never taken
        probe.bind(f"tcp://0.0.0.0:{ports.tx}")


def test_a_dead_data_path_reply_is_a_radio_error_naming_the_nodes(ports):
    dead = {"ok": False, "error": "data path dead: node 'a': GNU Radio block thread 'pull_source1' exited",
            "dead": {"a": "GNU Radio block thread 'pull_source1' exited"}}
    fake = FakeFlowgraph([fake_status(ports.tx, ports.rx), dead])
    try:
        radio = open_radio(fake)
        try:
            with pytest.raises(RadioError, match=r"data path dead: node 'a'"):
                radio.configure(UNITY)
        finally:
            radio.close()
    finally:
        fake.close()


# --- CURVE: two hosts emulated on 127.0.0.1 ---------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The bridge's keys, and a second set whose keys the bridge has never seen."""
    return (SimpleNamespace(**generate(tmp_path_factory.mktemp("keys"))),
            SimpleNamespace(**generate(tmp_path_factory.mktemp("stranger"))))


@pytest.fixture(scope="module")
def remote(keys):
    """A flowgraph with CURVE (bs0 -> ue0), as it would run on the radio host."""
    mine, _ = keys
    with FlowgraphProcess("emulate", tx=["bs0"], rx=["bs0", "ue0"], noise_voltage=1e-5, heartbeat_timeout_s=10.0,
                          curve_server_secret=str(mine.server_secret), curve_clients=str(mine.clients)) as fg:
        yield fg


def keyed_entry(fg: FlowgraphProcess, name: str, server_key="", client_key="") -> RadioEntry:
    return RadioEntry(name=name, driver="gnuradio", role="ue", **fg.endpoints(name), server_key=str(server_key),
                      client_key=str(client_key))


def test_the_right_keys_are_served_and_iq_round_trips(remote, keys):
    mine, _ = keys
    bs0, ue0 = (ZmqRadio(n, LIMITS, keyed_entry(remote, n, mine.server_public, mine.client_secret), timeout_s=2.0)
                for n in ("bs0", "ue0"))
    try:
        assert remote.ready["curve"] is True
        for r in (bs0, ue0):
            r.configure(UNITY)
        bs0.send(burst(0.3))
        np.testing.assert_allclose(np.abs(ue0.capture(4096)), 0.3, atol=1e-3)
    finally:
        bs0.close()
        ue0.close()


@pytest.mark.parametrize("which", ["unknown client key", "wrong server key", "no key"])
def test_a_wrong_or_missing_key_is_refused(remote, keys, which):
    mine, stranger = keys
    server_key, client_key = {"unknown client key": (mine.server_public, stranger.client_secret),
                              "wrong server key": (stranger.server_public, mine.client_secret),
                              "no key": ("", "")}[which]
    with pytest.raises(RadioTimeout, match="no answer to 'status'"):
        ZmqRadio("ue0", LIMITS, keyed_entry(remote, "ue0", server_key, client_key), timeout_s=0.5)


def test_an_unknown_peer_gets_no_iq(remote, keys):
    """A stranger's CURVE socket and a plain one on ue0's RX endpoint get nothing while the
    keyed radio captures exact samples (PUSH would deal messages to any peer it let in)."""
    mine, stranger = keys
    ctx = zmq.Context.instance()
    intruders = []
    for secret in (stranger.client_secret, None):
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        if secret is not None:
            sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(secret)
            sock.curve_serverkey, _ = zmq.auth.load_certificate(stranger.server_public)
        sock.connect(remote.endpoints("ue0")["rx_address"])
        intruders.append(sock)
    bs0, ue0 = (ZmqRadio(n, LIMITS, keyed_entry(remote, n, mine.server_public, mine.client_secret), timeout_s=2.0)
                for n in ("bs0", "ue0"))
    try:
        for r in (bs0, ue0):
            r.configure(UNITY)
        bs0.send(burst(0.2))
        for _ in range(5):
            np.testing.assert_allclose(np.abs(ue0.capture(8192)), 0.2, atol=1e-3)
        assert not any(sock.poll(200) for sock in intruders)
    finally:
        bs0.close()
        ue0.close()
        for sock in intruders:
            sock.close(0)


# --- plain ZMQ beyond loopback is refused -----------------------------------------------------
@pytest.mark.parametrize("flag,host", [("--address", "0.0.0.0"), ("--client-address", "192.0.2.7")])
def test_the_flowgraph_refuses_to_leave_loopback_without_keys(flag, host):
    done = subprocess.run([GNURADIO_PYTHON, str(FLOWGRAPH), "emulate", "--control-port", "5999", "--tx", "a=6001",
                           "--rx", "a=6000", flag, host], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "READY" not in done.stdout
    assert f"{flag} {host} is beyond loopback: give --curve-server-secret and --curve-clients" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_flowgraph_refuses_a_public_key_as_its_secret(keys):
    mine, _ = keys
    done = subprocess.run([GNURADIO_PYTHON, str(FLOWGRAPH), "emulate", "--control-port", "5999", "--tx", "a=6001",
                           "--rx", "a=6000", "--curve-server-secret", str(mine.server_public),
                           "--curve-clients", str(mine.clients)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "holds no secret key" in done.stderr


def test_flowgraph_process_refuses_to_leave_loopback_without_keys():
    with pytest.raises(ValueError, match="address 0.0.0.0 is beyond loopback: give curve_server_secret"):
        FlowgraphProcess("emulate", tx=["a"], rx=["a"], address="0.0.0.0")
    with pytest.raises(ValueError, match="client_address 192.0.2.7 is beyond loopback"):
        FlowgraphProcess("emulate", tx=["a"], rx=["a"], client_address="192.0.2.7")


def test_a_radio_entry_beyond_loopback_needs_keys():
    with pytest.raises(ValueError, match=r"'ue0': control_address tcp://192\.0\.2\.7:5600 is beyond loopback"):
        RadioEntry(name="ue0", driver="gnuradio", role="ue", control_address="tcp://192.0.2.7:5600")
    with pytest.raises(ValueError, match="server_key and client_key go together"):
        RadioEntry(name="ue0", driver="gnuradio", role="ue", control_address="tcp://192.0.2.7:5600",
                   server_key="server.key")
    keyed = RadioEntry(name="ue0", driver="gnuradio", role="ue", control_address="tcp://192.0.2.7:5600",
                       server_key="server.key", client_key="client.key_secret")
    assert keyed.server_key == "server.key"
    radios = [{"name": "bs0", "driver": "gnuradio", "role": "bs", "nodes": [0], "control_address": "tcp://10.1.2.3:5600",
               "tx_address": "tcp://127.0.0.1:5601", "rx_address": "tcp://10.1.2.3:5611"},
              {"name": "ue0", "driver": "mock", "role": "ue"}]
    with pytest.raises(ConfigError, match="beyond loopback"):
        load_config("bench_gnuradio", {"hardware": {"radios": radios, "start_bridge": False}})


def test_the_client_refuses_to_leave_loopback_without_keys():
    """Below the config (a duck-typed entry): the driver itself refuses plain ZMQ to another host."""
    entry = SimpleNamespace(control_address="tcp://192.0.2.7:5600", tx_address="", rx_address="")
    with pytest.raises(RadioError, match="control_address host 192.0.2.7 is beyond loopback"):
        ZmqRadio("ue0", LIMITS, entry, timeout_s=0.3)
    entry = SimpleNamespace(control_address=f"tcp://127.0.0.1:{free_port()}", tx_address="tcp://0.0.0.0:5601",
                            rx_address="")
    with pytest.raises(RadioError, match="tx_address host 0.0.0.0 is beyond loopback"):
        ZmqRadio("ue0", LIMITS, entry, timeout_s=0.3)


def test_a_missing_key_file_is_a_radio_error_naming_the_field(tmp_path):
    entry = RadioEntry(name="ue0", driver="gnuradio", role="ue", control_address=f"tcp://127.0.0.1:{free_port()}",
                       server_key=str(tmp_path / "nope.key"), client_key=str(tmp_path / "nope.key_secret"))
    with pytest.raises(RadioError, match="server_key: cannot read the CURVE key file"):
        ZmqRadio("ue0", LIMITS, entry, timeout_s=0.3)


# --- testbed keys generate --------------------------------------------------------------------
def test_keys_generate_writes_keys_once(tmp_path):
    target = tmp_path / "bench-keys"
    done = subprocess.run([sys.executable, "-m", "testbed.keys", "generate", str(target)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"--curve-server-secret {target / 'server.key_secret'}" in done.stdout
    server_public, server_secret = zmq.auth.load_certificate(target / "server.key_secret")
    assert zmq.auth.load_certificate(target / "server.key") == (server_public, None)
    client_public, client_secret = zmq.auth.load_certificate(target / "client.key_secret")
    assert server_secret and client_secret and server_public != client_public
    assert zmq.auth.load_certificates(target / "clients") == {client_public: True}     # only the client is let in
    for secret in ("server.key_secret", "client.key_secret"):
        assert stat.S_IMODE(os.stat(target / secret).st_mode) == 0o600
    again = subprocess.run([sys.executable, "-m", "testbed.keys", "generate", str(target)], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 2 and "already holds" in again.stderr and "Traceback" not in again.stderr
    assert zmq.auth.load_certificate(target / "server.key_secret") == (server_public, server_secret)   # kept


def test_keys_command_plugs_into_an_argparse_cli(tmp_path):
    import argparse

    parser = argparse.ArgumentParser(prog="testbed")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keys", "generate", str(tmp_path / "k")])
    assert args.func(args) == 0
    assert (tmp_path / "k" / "clients" / "client.key").is_file()
