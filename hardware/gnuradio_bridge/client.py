"""The client side of the GNU Radio ZMQ bridge (``hardware/gnuradio_bridge/flowgraph.py``).

The flowgraph runs as its own process; this side speaks to it with pyzmq only. One
:class:`Bridge` per flowgraph (keyed by its control endpoint) holds the sockets of all its
nodes and is shared by the ``hardware.drivers.gnuradio.ZmqRadio`` objects that stand for those nodes:

- control: JSON over REQ/REP, every request with a timeout; after a timeout the REQ socket is
  rebuilt (a REQ socket that missed a reply is stuck), so the bridge reconnects when the
  flowgraph comes back. Every request is a heartbeat. A new session id in a reply means the
  flowgraph restarted: the settings are replayed and TX that was lost raises ``RadioError``.
- TX: raw complex64 over PUSH; this side binds (GNU Radio's ``pull_source`` connects).
- RX: PULL connected to the flowgraph's ``push_sink``; every message starts with GNU Radio's tag
  header ``<HBQQ>`` whose item offset frames the stream, so samples are reassembled by count
  and a lost or repeated sample raises ``RadioError``, whatever the message boundaries.

Trust. Every reply is checked against ``REPLY_SCHEMA`` (a bad one is ``RadioError`` naming the
command and the field). This side binds only on the host it was given (the radio entry's
``tx_address`` host, else 127.0.0.1) and connects only to the control channel's host: endpoints
in a reply must match. With ``ClientKeys`` every socket is a CURVE client of the bridge;
without them every address must be loopback. A reply naming ``dead`` nodes (a data path of
the flowgraph died) is ``RadioError`` naming them.

Clocking. In ``emulate`` mode the medium advances only as TX samples arrive, so the bridge
clocks it: a capture of n samples pushes the next n samples of every TX node some RX node
hears (its cyclic or one-shot burst from the instant it was sent, zeros when muted) and reads
n samples from every RX node. Captures on other nodes before the next TX change return the
same window, as radios capturing in parallel would. TX gates follow the radios' send/mute in
one request per capture. The radios of one bridge share the first one's ``timeout_s``.
With the device's clock (``uhd`` mode, or the emulator's USRP stand-in, ``--realtime``; status
``clock: device``) the device clocks both streams: a burst goes to the flowgraph once as one
message [b"c" (cyclic) | b"o" (one-shot), samples] on a queue one deep, the flowgraph repeats it
and swaps it in under a lock; ``send`` opens the gate only once the flowgraph reports the burst on
air, and a mute closes the gate and drops the burst there, so within the flowgraph's buffers
(``BURST_BUFFER_ITEMS`` per block) only what the current step sent radiates. A capture drops what
the flowgraph's RX sink had taken when asked, then a further ``RT_FLUSH_SAMPLES``, before it keeps
n samples.
"""
from __future__ import annotations

import json
import math
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
import zmq

from hardware.addresses import is_loopback
from hardware.gnuradio_bridge.curve import ClientKeys
from hardware.radio import RadioError, RadioSettings, RadioTimeout

__all__ = ["Bridge", "REPLY_SCHEMA", "TAG_HEADER", "endpoint_host", "parse_rx_message"]

TAG_HEADER = struct.Struct("<HBQQ")   # magic, version, offset of the first item, number of tags
TAG_MAGIC, TAG_VERSION = 0x5FF0, 1
ITEM = np.dtype("<c8")                # complex64, little-endian
MAX_RX_MESSAGE_BYTES = 8 << 20        # ZMQ drops larger RX messages (push_sink sends one buffer at most)
TX_CHUNK_SAMPLES = 65536              # largest TX message: the flowgraph's source buffer
RT_FLUSH_SAMPLES = 32768              # device clock: samples a capture skips past what the RX sink had taken when
                                      # asked, covering the buffers between the air and the sink
PROBE_TIMEOUT_S = 0.25                # request timeout while the bridge is known to be down
SOCKET_HWM = 16


def _count(v, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _object_of(ok):
    """A JSON object with string keys whose values pass ok."""
    return lambda v: isinstance(v, dict) and all(isinstance(k, str) and ok(x) for k, x in v.items())


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _tcp_endpoint(v) -> bool:
    try:
        return isinstance(v, str) and bool(endpoint_host(v)) and 1 <= (urlsplit(v).port or 0) <= 65535
    except ValueError:
        return False


# The protocol's replies, field -> (what it must be, test). Every answered request returns the
# flowgraph's status (ok true); a refusal returns ok false with the error (and, when a data path
# died, "dead": {node: why}). Fields this side does not use are not checked.
REPLY_SCHEMA = {
    True: {
        "session": ("a non-empty string", lambda v: isinstance(v, str) and v != ""),
        "mode": ("'emulate' or 'uhd'", lambda v: v in ("emulate", "uhd")),
        "tx_enabled": ("an object of booleans", _object_of(lambda x: isinstance(x, bool))),
        "watchdog_trips": ("an integer >= 0", _count),
        "heartbeat_timeout_s": ("a number > 0", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                                and math.isfinite(v) and v > 0),
        "tx_endpoints": ("an object of tcp://HOST:PORT endpoints", _object_of(_tcp_endpoint)),
        "rx_ports": ("an object of ports 1..65535", _object_of(lambda x: _count(x, 1) and x <= 65535)),
        "source_lag_samples": ("an integer >= 0", _count),
        "align_samples": ("an integer >= 1", lambda v: _count(v, 1)),
        "tx_clocking": ("a list of node names", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
        "tx_items": ("an object of integers >= 0", _object_of(_count)),
    },
    False: {
        "error": ("a string", lambda v: isinstance(v, str)),
    },
}
DEAD_FIELD = ("an object of strings", _object_of(lambda x: isinstance(x, str)))   # optional in refusals


def _chunk_sizes(num_samples: int) -> list[int]:
    """num_samples cut into TX messages of at most TX_CHUNK_SAMPLES."""
    return [min(TX_CHUNK_SAMPLES, num_samples - start) for start in range(0, num_samples, TX_CHUNK_SAMPLES)]


def endpoint_host(endpoint: str) -> str:
    host = urlsplit(endpoint).hostname
    if not endpoint.startswith("tcp://") or not host:
        raise ValueError(f"expected a ZMQ endpoint like tcp://127.0.0.1:5555, got {endpoint!r}")
    return host


def parse_rx_message(msg: bytes) -> tuple[int, np.ndarray]:
    """(offset of the first sample, complex64 samples) of one push_sink message with tag header."""
    if len(msg) < TAG_HEADER.size:
        raise RadioError(f"RX message of {len(msg)} bytes is shorter than GNU Radio's tag header")
    magic, version, offset, num_tags = TAG_HEADER.unpack_from(msg)
    if magic != TAG_MAGIC or version != TAG_VERSION:
        raise RadioError(f"RX message has no GNU Radio tag header (magic {magic:#x}, version {version}); "
                         "the flowgraph's push_sink needs pass_tags=True")
    if num_tags:
        raise RadioError(f"RX message carries {num_tags} stream tags; the bridge strips tags before ZMQ out")
    payload = memoryview(msg)[TAG_HEADER.size:]
    if len(payload) % ITEM.itemsize:
        raise RadioError(f"RX payload of {len(payload)} bytes is not whole complex64 samples")
    return offset, np.frombuffer(payload, dtype=ITEM)


class _RxStream:
    """One RX node's samples in stream order, checked against the header offsets."""

    def __init__(self, socket: zmq.Socket, name: str, device_clock: bool = False):
        self.socket = socket
        self.name = name
        self.device_clock = device_clock        # gaps are dropped samples, counted, not errors
        self.overflows = 0                      # device clock: gaps inside a capture (samples lost while read)
        self.lost_samples = 0
        self.reading_from: int | None = None    # offset the capture in progress starts at
        self.next_offset: int | None = None     # offset of the next sample to hand out
        self.parts: list[np.ndarray] = []       # received, not yet handed out
        self.num_buffered = 0

    def reset(self) -> None:
        """Forget the stream (the flowgraph restarted) and drop what the old one left queued."""
        while self.socket.poll(0, zmq.POLLIN):
            self.socket.recv()
        self.next_offset = None
        self.parts, self.num_buffered = [], 0

    def receive(self) -> None:
        """Take one message off the socket (which must be readable)."""
        offset, samples = parse_rx_message(self.socket.recv())
        expected = None if self.next_offset is None else self.next_offset + self.num_buffered
        if self.device_clock and expected is not None and offset > expected:   # samples dropped: start afresh
            if self.reading_from is not None and expected > self.reading_from:  # inside a capture: counted
                self.overflows += 1
                self.lost_samples += offset - expected
            self.next_offset, self.parts, self.num_buffered = None, [], 0
            expected = None
        if expected is not None and offset != expected:
            raise RadioError(f"bridge RX node {self.name!r}: stream jumped from sample {expected} to {offset} "
                             "(samples lost or the flowgraph restarted)")
        if self.next_offset is None:
            self.next_offset = offset
        self.parts.append(samples)
        self.num_buffered += samples.size

    def take(self, num_samples: int) -> np.ndarray:
        """The next num_samples buffered samples (complex64 [num_samples])."""
        buffered = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
        out, rest = buffered[:num_samples].copy(), buffered[num_samples:]
        self.parts = [rest] if rest.size else []
        self.num_buffered -= num_samples
        self.next_offset += num_samples
        return out

    def read(self, num_samples: int, deadline: float) -> np.ndarray:
        """The next num_samples samples, waiting until the deadline (monotonic s)."""
        while self.num_buffered < num_samples:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not self.socket.poll(remaining_ms, zmq.POLLIN):
                raise RadioTimeout(f"bridge RX node {self.name!r}: no samples within the timeout")
            self.receive()
        return self.take(num_samples)

    def read_from(self, offset: int, num_samples: int, deadline: float) -> np.ndarray:
        """The num_samples samples from stream offset ``offset`` on (earlier ones are dropped),
        contiguous, waiting until the deadline (monotonic s)."""
        self.reading_from = offset
        try:
            return self._read_from(offset, num_samples, deadline)
        finally:
            self.reading_from = None

    def _read_from(self, offset: int, num_samples: int, deadline: float) -> np.ndarray:
        while True:
            while self.socket.poll(0, zmq.POLLIN):
                self.receive()
            if self.next_offset is not None and self.next_offset < offset:
                self.take(min(offset - self.next_offset, self.num_buffered))
            if self.next_offset is not None and self.next_offset >= offset and self.num_buffered >= num_samples:
                return self.take(num_samples)
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not self.socket.poll(remaining_ms, zmq.POLLIN):
                raise RadioTimeout(f"bridge RX node {self.name!r}: no samples within the timeout")
            self.receive()

    def drain(self) -> None:
        """Drop everything queued now (uhd captures start after it)."""
        while self.socket.poll(0, zmq.POLLIN):
            self.receive()
        if self.num_buffered:
            self.take(self.num_buffered)


class _TxNode:
    """One TX node's burst and, in lockstep, the position reached in it."""

    def __init__(self, socket: zmq.Socket, name: str):
        self.socket = socket
        self.name = name
        self.iq: np.ndarray | None = None     # complex64 [L] being sent; None = muted
        self.cyclic = True
        self.position = 0                     # samples of iq already pushed
        self.sent = 0                         # device clock: bursts handed to this flowgraph session

    def next_samples(self, num_samples: int) -> np.ndarray:
        """The next num_samples samples of the burst (zeros when muted or after a one-shot)."""
        out = np.zeros(num_samples, dtype=ITEM)
        if self.iq is not None:
            if self.cyclic:
                out[:] = np.take(self.iq, np.arange(self.position, self.position + num_samples), mode="wrap")
            elif self.position < self.iq.size:
                part = self.iq[self.position: self.position + num_samples]
                out[: part.size] = part
        self.position += num_samples
        return out

    def send_burst(self, iq: np.ndarray, cyclic: bool, deadline: float) -> None:
        """Device clock: hand the flowgraph one burst, [b"c" | b"o", samples] (it repeats it there)."""
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0 or not self.socket.poll(remaining_ms, zmq.POLLOUT):
            raise RadioTimeout(f"bridge TX node {self.name!r}: the flowgraph does not take the burst")
        self.socket.send_multipart([b"c" if cyclic else b"o", np.ascontiguousarray(iq, dtype=ITEM).tobytes()])
        self.sent += 1


@dataclass
class _PumpJob:
    """One lockstep advance: TX chunks still to send, RX samples still to read, what was read."""

    send: dict[str, list[np.ndarray]]
    want: dict[str, int]
    got: dict[str, np.ndarray] = field(default_factory=dict)


class Bridge:
    """The sockets of one flowgraph, shared by the radios that are its nodes."""

    _open: dict[str, "Bridge"] = {}
    _open_lock = threading.Lock()

    @classmethod
    def attach(cls, control_address: str, timeout_s: float, tx_host: str | None = None,
               keys: ClientKeys | None = None) -> "Bridge":
        """The bridge at control_address (opened on first use); detach() when done. ``tx_host``:
        where this side binds the TX endpoints (None: 127.0.0.1, or as the bridge was opened)."""
        with cls._open_lock:
            bridge = cls._open.get(control_address)
            if bridge is None:
                bridge = cls(control_address, timeout_s, tx_host or "127.0.0.1", keys)
                cls._open[control_address] = bridge
            elif keys != bridge.keys or tx_host not in (None, bridge.tx_host):
                raise RadioError(f"bridge {control_address} is open with TX host {bridge.tx_host} and "
                                 f"{'CURVE keys' if bridge.keys else 'no keys'}; the radios of one flowgraph "
                                 "must name the same tx_address host, server_key and client_key")
            bridge.users += 1
            return bridge

    def detach(self) -> None:
        """One radio less; the last one closes every gate (best effort) and the sockets."""
        with self._open_lock:
            self.users -= 1
            if self.users > 0:
                return
            self._open.pop(self.control_address, None)
        try:
            if self.down_since is None and any(self.gate_open.values()):
                self.request("mute")
        except RadioError:
            pass
        finally:
            self._close()

    def __init__(self, control_address: str, timeout_s: float, tx_host: str = "127.0.0.1",
                 keys: ClientKeys | None = None):
        self.control_address = control_address
        self.timeout_s = timeout_s
        self.tx_host = tx_host
        self.keys = keys
        peer_host = endpoint_host(control_address)
        for what, host in (("control_address", peer_host), ("tx_address", tx_host)):
            if keys is None and not is_loopback(host):
                raise RadioError(f"bridge {control_address}: {what} host {host} is beyond loopback; set the radio "
                                 "entry's server_key and client_key (testbed keys generate DIR)")
        self.users = 0
        self.lock = threading.RLock()
        self.context = zmq.Context.instance()
        self.control: zmq.Socket | None = None
        self.down_since: float | None = None
        self.session: str | None = None
        self.broken: str | None = None          # why the streams are out of step, until a restart
        self.pending: _PumpJob | None = None    # an advance a timeout interrupted
        self.gate_open: dict[str, bool] = {}    # the flowgraph's TX gates as of the last reply
        self.watchdog_trips = 0
        self.device_events: dict[str, dict] = {"overflows": {}, "underflows": {}}   # as the last reply reported
        self.last_ok = 0.0                      # monotonic time of the last answered request
        self.node_settings: dict[str, dict] = {}
        self.knobs: dict[tuple, dict] = {}      # emulate requests to replay after a restart
        self.tx: dict[str, _TxNode] = {}
        self.rx: dict[str, _RxStream] = {}
        self.tx_ports: dict[str, int] = {}
        self.rx_ports: dict[str, int] = {}
        try:
            self._open_streams(peer_host)
        except BaseException:
            self._close()
            raise
        self.unsettled = True                                # a change of noise/tones/LOs is still in flight
        self.epoch = 0                                       # TX changes so far
        self.window: dict[str, tuple[int, np.ndarray]] = {}  # rx node -> (epoch, last lockstep capture)

    def _open_streams(self, peer_host: str) -> None:
        """Bind every TX endpoint, connect every RX port (on the control channel's host)."""
        status = self.request("status")
        self.mode = status["mode"]
        self.lockstep = status.get("clock", "tx" if self.mode == "emulate" else "device") == "tx"
        self.switches: list[dict] = []          # device clock: how long each new burst took to reach the air
        for name, endpoint in status["tx_endpoints"].items():
            if endpoint_host(endpoint) != self.tx_host:
                raise RadioError(f"bridge {self.control_address}: bad reply to 'status': field 'tx_endpoints' "
                                 f"names {endpoint} for node {name!r}, but this side binds only on {self.tx_host} "
                                 "(the radio entry's tx_address host, else 127.0.0.1)")
        self.tx_ports = {n: urlsplit(e).port for n, e in status["tx_endpoints"].items()}
        self.rx_ports = dict(status["rx_ports"])
        try:
            for name, port in self.tx_ports.items():
                sock = self._socket(zmq.PUSH)
                sock.setsockopt(zmq.IMMEDIATE, 1)
                sock.bind(f"tcp://{self.tx_host}:{port}")
                self.tx[name] = _TxNode(sock, name)
            for name, port in self.rx_ports.items():
                sock = self._socket(zmq.PULL if self.lockstep else zmq.SUB)
                sock.setsockopt(zmq.MAXMSGSIZE, MAX_RX_MESSAGE_BYTES)
                if not self.lockstep:
                    sock.setsockopt(zmq.SUBSCRIBE, b"")
                sock.connect(f"tcp://{peer_host}:{port}")
                self.rx[name] = _RxStream(sock, name, device_clock=not self.lockstep)
        except zmq.ZMQError as err:
            raise RadioError(f"bridge {self.control_address}: cannot open its streams ({err}); is another "
                             "client using this flowgraph?") from err
        self.lo_correction_hz = {n: float(v.get("lo_correction_hz", 0.0)) for n, v in status.get("settings", {}).items()
                                 if isinstance(v, dict) and isinstance(v.get("lo_correction_hz", 0.0), (int, float))}
        bound = status.get("max_lo_correction_hz", math.inf)    # older flowgraphs: no bound of their own
        self.max_lo_correction_hz = float(bound) if _finite_number(bound) else math.inf
        self.clocking = list(status["tx_clocking"])     # TX nodes the RX streams wait for
        self.tx_count = self._common_tx_count(status)
        self.watchdog_trips = status["watchdog_trips"]
        self.heartbeat_s = float(status["heartbeat_timeout_s"])
        self.settle_samples = int(status["source_lag_samples"])
        self.align_samples = int(status["align_samples"])

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
        sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        if self.keys is not None:
            self.keys.apply(sock)
        return sock

    def check_node(self, name: str, tx_address: str, rx_address: str) -> None:
        """A radio entry's node exists here, and the addresses it names are this bridge's."""
        if name not in self.rx and name not in self.tx:
            raise RadioError(f"{name}: the bridge at {self.control_address} has no node {name!r}; "
                             f"its nodes are {sorted({*self.rx, *self.tx})}")
        hosts = {"tx_address": self.tx_host, "rx_address": endpoint_host(self.control_address)}
        ports = {"tx_address": self.tx_ports.get(name), "rx_address": self.rx_ports.get(name)}
        for key, address in (("tx_address", tx_address), ("rx_address", rx_address)):
            if address and (urlsplit(address).port != ports[key] or urlsplit(address).hostname != hosts[key]):
                raise RadioError(f"{name}: {key} {address} does not match the bridge at {self.control_address}, "
                                 f"whose node {name!r} uses port {ports[key]} on {hosts[key]}")

    def _close(self) -> None:
        for node in self.tx.values():
            node.socket.close(0)
        for stream in self.rx.values():
            stream.socket.close(0)
        if self.control is not None:
            self.control.close(0)
            self.control = None

    # --- control ------------------------------------------------------------------------
    def request(self, cmd: str, **fields) -> dict:
        """One control request; RadioTimeout without a reply, RadioError on an error reply."""
        with self.lock:
            if self.control is None:
                self.control = self._socket(zmq.REQ)
                self.control.connect(self.control_address)
            timeout_s = min(self.timeout_s, PROBE_TIMEOUT_S) if self.down_since else self.timeout_s
            self.control.send(json.dumps({"cmd": cmd, **fields}).encode())
            if not self.control.poll(int(timeout_s * 1000), zmq.POLLIN):
                self.control.close(0)
                self.control = None
                self.down_since = self.down_since or time.monotonic()
                keys = " (or does it refuse this side's CURVE keys?)" if self.keys else ""
                raise RadioTimeout(f"bridge {self.control_address}: no answer to {cmd!r} within {timeout_s:g} s; "
                                   f"is the flowgraph running?{keys}")
            self.down_since = None
            try:
                reply = json.loads(self.control.recv())
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise RadioError(f"bridge {self.control_address}: unreadable reply to {cmd!r} ({err})") from err
            self._check_reply(cmd, reply)
            if reply.get("dead"):
                raise RadioError(f"bridge {self.control_address}: {reply['error']}")
            if not reply["ok"]:
                raise RadioError(f"bridge {self.control_address} refused {cmd!r}: {reply['error']}")
            self.last_ok = time.monotonic()
            self.gate_open = dict(reply["tx_enabled"])
            self.device_events = {"overflows": reply.get("rx_overflows", {}), "underflows": reply.get("tx_underflows", {})}
            if self.session is None:
                self.session = reply["session"]
            elif reply["session"] != self.session:
                self._restarted(reply)
            return reply

    def _check_reply(self, cmd: str, reply) -> None:
        """RadioError naming the command and the field unless reply follows REPLY_SCHEMA."""
        def bad(what: str) -> RadioError:
            return RadioError(f"bridge {self.control_address}: bad reply to {cmd!r}: {what}")
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise bad(f"field 'ok' must be true or false, in a JSON object; got {str(reply)[:80]}")
        fields = dict(REPLY_SCHEMA[reply["ok"]])
        if not reply["ok"] and "dead" in reply:
            fields["dead"] = DEAD_FIELD
        for key, (what, ok) in fields.items():
            if key not in reply:
                raise bad(f"field {key!r} is missing")
            if not ok(reply[key]):
                raise bad(f"field {key!r} must be {what}, got {str(reply[key])[:80]}")

    def _restarted(self, reply: dict) -> None:
        """The flowgraph restarted: fresh streams, replayed settings; lost TX raises."""
        self.session = reply["session"]
        self.broken = None
        self.pending = None
        lost = sorted(n for n, node in self.tx.items() if node.iq is not None)
        for node in self.tx.values():
            node.iq, node.sent = None, 0
        for stream in self.rx.values():
            stream.reset()
        self.tx_count = self._common_tx_count(reply)
        self.watchdog_trips = reply["watchdog_trips"]
        self.unsettled = True
        self.epoch += 1
        for name, values in self.node_settings.items():
            self.request("configure", node=name, **values)
        for (cmd, *_), fields in self.knobs.items():
            self.request(cmd, **fields)
        if lost:
            raise RadioError(f"bridge {self.control_address} restarted: TX of {lost} was lost (muted); "
                             "settings were restored, send again")

    def _common_tx_count(self, status: dict) -> int:
        counts = set(status["tx_items"].values()) or {0}
        if len(counts) > 1:
            self.broken = (f"the flowgraph's TX inputs are at different sample offsets {status['tx_items']}; "
                           "restart the flowgraph")
        return max(counts)

    # --- node operations -------------------------------------------------------------------
    def configure(self, node: str, settings: RadioSettings) -> None:
        values = {"center_hz": settings.center_hz, "sample_rate_hz": settings.sample_rate_hz,
                  "bandwidth_hz": settings.bandwidth_hz, "tx_gain_db": settings.tx_gain_db,
                  "rx_gain_db": settings.rx_gain_db}
        with self.lock:
            self.request("configure", node=node, **values)
            self.node_settings[node] = values
            self.unsettled = True
            self.epoch += 1

    def send(self, node: str, iq: np.ndarray, cyclic: bool) -> None:
        """Start the node's burst. In lockstep its gate opens with the next advance (nothing
        flows before it), so all gate changes between two advances cost one request. With the
        device's clock the burst goes to the flowgraph once, which repeats it; the gate opens once
        the flowgraph reports it swapped in (``switches`` keeps how long that took)."""
        with self.lock:
            tx = self._tx_node(node)
            tx.iq, tx.cyclic, tx.position = iq, cyclic, 0
            self.epoch += 1
            if self.lockstep:
                return
            began = time.monotonic()
            deadline = began + self.timeout_s
            tx.send_burst(iq, cyclic, deadline)
            status = self.request("heartbeat")
            while status["tx_on_air"].get(node) != tx.sent:
                if time.monotonic() > deadline:
                    raise RadioTimeout(f"bridge TX node {node!r}: burst {tx.sent} not on air within {self.timeout_s:g} s")
                time.sleep(0.001)
                status = self.request("heartbeat")
            swap = next((e for e in reversed(status["tx_log"].get(node, [])) if e[1] == tx.sent), None)
            self.switches.append({"node": node, "wait_s": time.monotonic() - began,
                                  "samples": None if swap is None else swap[0] - swap[2]})
            self.request("unmute", node=node)

    def mute(self, node: str) -> None:
        """Stop sending the node's TX stream, then close its gate in the flowgraph.

        Without input the flowgraph transmits nothing (emulate: the medium carries zeros for
        it; uhd: the USRP underflows), and its watchdog closes the gate on its own, so a dead
        or silent bridge does not make the mute fail; it is not asked while known to be down.
        In lockstep the gate closes with the next advance (or when the bridge is closed).
        """
        with self.lock:
            tx = self.tx.get(node)
            if tx is None:
                return
            tx.iq = None
            self.epoch += 1
            if not self.lockstep and self.down_since is None and self.gate_open.get(node, True):
                try:
                    self.request("mute", node=node)
                except RadioTimeout:
                    pass

    def capture(self, node: str, num_samples: int) -> np.ndarray:
        with self.lock:
            if node not in self.rx:
                raise RadioError(f"bridge node {node!r} has no RX stream; the flowgraph's RX nodes are "
                                 f"{sorted(self.rx)}")
            try:
                return self._capture(node, num_samples)
            except RadioTimeout:   # a stalled stream: a dead data path, if the flowgraph says so
                try:
                    self.request("status")
                except RadioTimeout:
                    pass
                raise

    def _capture(self, node: str, num_samples: int) -> np.ndarray:
        if self.lockstep:
            epoch, window = self.window.get(node, (-1, None))
            if epoch != self.epoch or window.size < num_samples:
                self._advance(num_samples)
                epoch, window = self.window[node]
            self.window[node] = (-1, window)       # a second capture on this node advances
            return window[:num_samples]
        status = self.request("heartbeat")
        self._check_tx(status)
        stream = self.rx[node]
        deadline = time.monotonic() + self.timeout_s
        if "rx_items" in status:        # samples the sink took before this request are the past
            return stream.read_from(status["rx_items"][node] + RT_FLUSH_SAMPLES, num_samples, deadline)
        stream.drain()
        stream.read(RT_FLUSH_SAMPLES, deadline)
        return stream.read(num_samples, deadline)

    def _advance(self, num_samples: int) -> None:
        """Push num_samples on every TX node that some RX node hears (the others' input would
        go nowhere), read as many from every RX node (emulate).

        A heartbeat goes first unless a request was answered within a quarter of the watchdog
        time (then the watchdog cannot have fired) and nothing timed out since; gates of new
        bursts open in one request.
        """
        if self.down_since or self.pending or time.monotonic() - self.last_ok > self.heartbeat_s / 4:
            self._check_tx(self.request("heartbeat"))
        changed = {n: tx.iq is not None for n, tx in self.tx.items() if self.gate_open.get(n) != (tx.iq is not None)}
        if changed:
            self._check_tx(self.request("gates", enabled=changed))
        if self.broken:
            raise RadioError(f"bridge {self.control_address}: {self.broken}")
        deadline = time.monotonic() + self.timeout_s
        if self.pending is not None:           # finish an advance a timeout interrupted; drop its output
            self._pump(self.pending, deadline)
            self.pending = None
        settle = self.settle_samples if self.unsettled else 0
        total = settle + num_samples
        total += -total % self.align_samples       # the flowgraph releases whole multiples only
        job = _PumpJob({name: [np.zeros(n, ITEM) for n in _chunk_sizes(settle)]
                        + [self.tx[name].next_samples(n) for n in _chunk_sizes(total - settle)]
                        for name in self.clocking},
                       {name: total for name in self.rx})
        self.tx_count += total
        self.pending = job
        got = self._pump(job, deadline)
        self.pending = None
        self.epoch += 1
        self.window = {name: (self.epoch, iq[settle: settle + num_samples]) for name, iq in got.items()}
        self.unsettled = False

    def _pump(self, job: "_PumpJob", deadline: float) -> dict[str, np.ndarray]:
        """Send the job's TX chunks while reading its RX samples, until done or the deadline.

        Pushing and reading interleave: a branch of the medium whose output is not read holds
        up the TX input it shares with the others, so reading one node at a time could stall.
        On a timeout the job keeps what is left (RadioTimeout); a later call finishes it, so a
        stalled flowgraph that resumes leaves the streams in step. A gap in an RX stream is
        RadioError and marks the bridge broken until the flowgraph restarts.
        """
        poller = zmq.Poller()
        for name in job.send:
            poller.register(self.tx[name].socket, zmq.POLLOUT)
        for name in job.want:
            poller.register(self.rx[name].socket, zmq.POLLIN)
        while job.send or job.want:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            events = dict(poller.poll(remaining_ms)) if remaining_ms > 0 else {}
            if not events:
                self.down_since = self.down_since or time.monotonic()
                raise RadioTimeout(f"bridge {self.control_address}: nodes {sorted({*job.send, *job.want})} "
                                   "stalled; is the flowgraph alive?")
            for name in list(job.send):
                sock = self.tx[name].socket
                if events.get(sock, 0) & zmq.POLLOUT:
                    sock.send(job.send[name].pop(0), copy=False)
                    if not job.send[name]:
                        del job.send[name]
                        poller.unregister(sock)
            for name in list(job.want):
                stream = self.rx[name]
                if events.get(stream.socket, 0) & zmq.POLLIN:
                    try:
                        stream.receive()
                    except RadioError as err:
                        self.broken = f"streams out of step ({err}); restart the flowgraph"
                        raise
                    if stream.num_buffered >= job.want[name]:
                        job.got[name] = stream.take(job.want.pop(name))
                        poller.unregister(stream.socket)
        return job.got


    def _check_tx(self, status: dict) -> None:
        """The watchdog has not muted TX this side sends, and the streams are in step."""
        tripped = status["watchdog_trips"] > self.watchdog_trips
        self.watchdog_trips = status["watchdog_trips"]
        lost = sorted(n for n, tx in self.tx.items() if tx.iq is not None)
        if tripped and lost:
            for n in lost:
                self.tx[n].iq = None
            self.epoch += 1
            raise RadioError(f"bridge {self.control_address} muted TX of {lost} (heartbeat lost: no request "
                             f"for {status['heartbeat_timeout_s']:g} s); send again")
        in_flight = self.pending is not None
        behind = any(c != self.tx_count for c in status["tx_items"].values())
        if self.lockstep and not (self.broken or in_flight) and behind:
            self.broken = (f"the flowgraph took {status['tx_items']} TX samples, this side sent {self.tx_count}; "
                           "restart the flowgraph")

    def _tx_node(self, node: str) -> _TxNode:
        if node not in self.tx:
            raise RadioError(f"bridge node {node!r} has no TX stream; the flowgraph's TX nodes are {sorted(self.tx)}")
        return self.tx[node]

    # --- emulate-only knobs (the medium) --------------------------------------------------
    def set_link(self, tx: str, rx: str, gain_db: float | None = None, taps: list | None = None,
                 cfo_hz: float | None = None) -> None:
        """Emulate: gain (dB), FIR taps (complex; [re, im] pairs on the wire) and CFO (Hz) of a link."""
        fields = {"tx": tx, "rx": rx}
        if gain_db is not None:
            fields["gain_db"] = gain_db
        if taps is not None:
            fields["taps"] = [[float(np.real(t)), float(np.imag(t))] for t in taps]
        if cfo_hz is not None:
            fields["cfo_hz"] = cfo_hz
        self._knob(("set_link", tx, rx), "set_link", fields)

    def set_lo_correction(self, node: str, lo_correction_hz: float) -> float:
        """Tune the node's LOs ``lo_correction_hz`` below the centre asked for (replayed after a
        restart); returns the correction the flowgraph reports applied, Hz (uhd: read back from the
        USRP's tune result)."""
        reply = self._knob(("set_lo_correction", node), "set_lo_correction",
                           {"node": node, "lo_correction_hz": lo_correction_hz})
        self.lo_correction_hz[node] = lo_correction_hz
        applied = reply.get("lo_correction_hz", {}).get(node, lo_correction_hz)
        if not _finite_number(applied):
            raise RadioError(f"bridge {self.control_address}: bad reply to 'set_lo_correction': field "
                             f"'lo_correction_hz' of node {node!r} must be a finite number, got {str(applied)[:80]}")
        return float(applied)

    def set_noise(self, node: str, noise_voltage: float) -> None:
        """Emulate: complex Gaussian noise at an RX node, RMS (power = noise_voltage², full scale)."""
        self._knob(("set_noise", node), "set_noise", {"node": node, "noise_voltage": noise_voltage})

    def set_interferer(self, node: str, freq_hz: float, amplitude: float) -> None:
        """Emulate: a tone at freq_hz (baseband) with this amplitude at an RX node (0 = off)."""
        self._knob(("set_interferer", node), "set_interferer", {"node": node, "freq_hz": freq_hz,
                                                                "amplitude": amplitude})

    def _knob(self, key: tuple, cmd: str, fields: dict) -> dict:
        with self.lock:
            reply = self.request(cmd, **fields)
            self.knobs[key] = {**self.knobs.get(key, {}), **fields}
            self.unsettled = True
            self.epoch += 1
            return reply

    def transmitting(self, node: str) -> bool:
        tx = self.tx.get(node)
        return tx is not None and tx.iq is not None
