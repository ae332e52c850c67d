#!/usr/bin/python3
"""The GNU Radio flowgraph behind the ZMQ bridge. Runs as its own process under /usr/bin/python3.

Debian's GNU Radio bindings import only in the system interpreter, so this file imports nothing
from the project. Two modes:

- ``emulate``: a radio medium in GNU Radio. For every link from a TX node to an RX node:
  ZMQ in ► TX gate (mute, TX gain) ► ``fir_filter_ccc`` (taps × link gain) ► multiply by a
  ``sig_source_c`` (carrier offset, plus the difference of the nodes' centre frequencies);
  every RX node adds its links, a ``fastnoise_source_c`` and an interferer tone, applies its
  RX gain and its receive chain (phase noise, IQ imbalance, DC offset, ADC saturation) and sends
  the stream out over ZMQ. The radios' impairments are the project's one model,
  ``hardware/emulated/impairments.py``, loaded from its file (this process imports no package of
  the project): each node's crystal (``--crystal-ppm NAME=PPM``) puts its LO off by the crystal
  over the correction the node believes (``set_lo_correction``), as a USRP's digital correction
  would undo. One medium, one sample clock: the TX input clocks it sample for sample, so the
  crystals move LOs only, not the sample clock. The medium is clocked by its linked TX inputs
  (``tx_clocking``): output appears only as the client pushes input there, sample for sample.
- ``uhd``: burst source ► TX gate ► UHD sink, UHD source ► ZMQ out, for one USRP (device arguments).
  ``--clock-source`` / ``--time-source`` (UHD's names: internal, external, gpsdo, mimo) pick the
  10 MHz and PPS references before anything is tuned; a reference the device does not offer, a
  10 MHz that does not lock (mboard sensor ``ref_locked``, where the device has it) or a PPS that
  never comes refuses to start with one line naming the node. ``set_lo_correction`` is a digital
  correction: the RF LO stays at the asked centre and the DSP (UHD's tune_request, RF policy
  manual, DSP policy auto) shifts RX and TX by the correction, bounded by
  ``--max-lo-correction-hz``; status ``lo_correction_hz`` is what the device reports applied and
  ``tune`` the RF and DSP frequencies it tuned to. It removes the carrier offset only: the B2xx
  sample clock comes from the same TCXO and keeps its ppm error (a shared 10 MHz removes both).

With the device's clock (``uhd``, and ``emulate --realtime``: the USRP stand-in, a throttle at the
sample rate after every TX gate) a TX node is a ``BurstSource``: its relay hands it one burst per
message ``[b"c" | b"o", samples]`` (queue one deep), it repeats the burst and swaps a new one (or
silence, on mute) in under a lock at its next work call, with ``burst_start``/``burst_end`` tags,
and logs every swap (status ``tx_log``, ``tx_on_air``); RX nodes are ``pub_sink`` blocks that drop
what nobody reads, as a device overflows. Status also reports ``rx_items`` (samples each RX sink
took), ``rx_overflows`` and ``tx_underflows`` per node (uhd: ``rx_time`` tags and ``async_msgs``;
stand-in: injected with ``--overflow-every`` / ``--underflow-every``).

Streams are raw little-endian complex64. Every TX input is a validating relay (a Python
thread) that connects to ``tcp://CLIENT_ADDRESS:PORT`` (the client binds), drops and counts
malformed messages (not whole, finite complex64 samples; more than one frame) and forwards the
rest to a ``zeromq.pull_source``, so no message can kill a GNU Radio block. GNU Radio's own ZMQ
blocks meet the relays over IPC sockets in a private directory (mode 0700): no TCP port, no
other user, no other host reaches them. RX
outputs are ``push_sink`` blocks with ``pass_tags=True`` that bind ``tcp://ADDRESS:PORT``, so
each message starts with GNU Radio's header ``<HBQQ>`` (magic 0x5FF0, version 1, offset of the
first sample, tag count 0) that frames the stream by absolute sample offset.

CURVE (``--curve-server-secret`` with ``--curve-clients``): the control socket and every
public stream socket authenticate and encrypt with ZMQ CURVE, and a ZAP authenticator refuses
client keys not in the clients directory. GNU Radio's ZMQ blocks have no security option, so
the RX ``push_sink`` then binds a private IPC socket and a relay carries its stream to
``ADDRESS:PORT``.
Without keys every address must be loopback.

Health: the main loop watches the control thread, every relay thread and every GNU Radio
block's thread (``/proc/self/task``, named ``<block name><unique id>`` by GNU Radio); a dead
data path mutes all TX and turns every reply into an error naming the nodes (``dead``).

Control: a REP socket on ``tcp://ADDRESS:CONTROL_PORT`` takes one JSON object per request,
``{"cmd": ..., ...}``, and answers ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
Commands: ``status``/``heartbeat``, ``configure`` (node, center_hz, sample_rate_hz,
bandwidth_hz, tx_gain_db, rx_gain_db), ``mute`` (node or all), ``unmute`` (node or nodes),
``gates`` (enabled: {node: bool}), ``set_lo_correction`` (node, lo_correction_hz: how far below
the asked centre frequency the node's LOs are tuned to undo its crystal; uhd: the DSP shifts, the RF LO stays),
``set_noise`` (node, noise_voltage), ``set_link`` (tx, rx,
gain_db, taps, cfo_hz) and ``set_interferer`` (node, freq_hz, amplitude); the last three in
``emulate`` only. Every valid request is a heartbeat; with none for ``--heartbeat-timeout-s``
the flowgraph mutes all TX. TX starts muted. GNU Radio's VOLK blocks hold back a remainder of
fewer than ``align_samples`` samples until more input comes, so the client pushes multiples of
it. Noise, tones and carrier offsets come from free-running sources, so a change of them
reaches the output up to ``source_lag_samples`` samples late (the data path is exact).
Malformed control requests get an error reply; they and dropped TX messages are counted in
``status`` (``rejected``). Prints one ``READY {json}`` line on stdout once running; stops on
SIGTERM.
"""
from __future__ import annotations

import argparse
import collections
import functools
import ipaddress
import json
import math
import os
import secrets
import signal
import sys
import tempfile
import threading
import time

import importlib.util
import numpy as np
import pmt
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from gnuradio import analog, blocks, gr, zeromq
from gnuradio import filter as gr_filter

IMPAIRMENTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "emulated", "impairments.py")


def _load_impairments():
    """The project's impairment model, from its file (numpy only, no package of the project)."""
    spec = importlib.util.spec_from_file_location("bridge_impairments", IMPAIRMENTS_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


impairments = _load_impairments()

MAX_CONTROL_BYTES = 64 * 1024        # larger requests get an error reply
ZMQ_MAX_MESSAGE_BYTES = 1024 * 1024  # larger ones are dropped by ZMQ before parsing
MAX_TAPS = 256                       # --num-taps upper bound
RX_HWM_MESSAGES = 8                  # push_sink queue: backpressure instead of a deep stale queue
SOURCE_BUFFER_ITEMS = 65536          # pull_source stalls about half the bursts with less
SOURCE_LAG_ITEMS = 8192              # max output buffer of free-running sources (noise, tones, LOs);
                                     # smaller buffers cost more work calls per advance (2048: +50 % CPU)
NOISE_POOL_SAMPLES = 1 << 18         # fastnoise_source_c draws i.i.d. from a pool this large (~10x
                                     # cheaper per sample than noise_source_c; power within ~0.01 dB)
ITEM_BYTES = 8                       # complex64
MAX_TX_MESSAGE_BYTES = 8 << 20       # larger TX messages make ZMQ drop the connection
THREAD_NAME_CHARS = 15               # Linux keeps this much of a thread's name
BURST_BUFFER_ITEMS = 4096            # device-clocked TX: the burst source's and its gate's output buffers,
                                     # which bound how late a new burst or a mute reaches the air
TX_LOG_ENTRIES = 64                  # swaps each burst source remembers (status "tx_log")
REFERENCES = ("internal", "external", "gpsdo", "mimo")   # UHD's names of the 10 MHz and PPS sources
REF_LOCK_WAIT_S = 1.0                # how long a new 10 MHz reference may take to lock (UHD's examples: 1 s)
LO_CORRECTION_TOLERANCE_HZ = 1.0     # applied digital correction vs the asked one (the DSP NCO: < 0.01 Hz)
BURST_KINDS = {b"c": True, b"o": False}   # device-clocked TX message: [kind, samples], c = cyclic, o = one-shot
LIMITS = {                           # accepted range of every numeric control field
    "center_hz": (1.0, 7.25e9),
    "sample_rate_hz": (1e3, 1e9),
    "bandwidth_hz": (1e3, 1e9),
    "tx_gain_db": (-150.0, 100.0),
    "rx_gain_db": (-150.0, 100.0),
    "noise_voltage": (0.0, 10.0),
    "gain_db": (-200.0, 40.0),
    "cfo_hz": (-5e8, 5e8),
    "freq_hz": (-5e8, 5e8),
    "amplitude": (0.0, 10.0),
    "delay": (0, MAX_TAPS - 1),
    "lo_correction_hz": (-1e7, 1e7),
    "crystal_ppm": (-999.0, 999.0),
}


class ControlError(ValueError):
    """A control request is malformed, names an unknown node or has a value out of range."""


class NoUsrpError(RuntimeError):
    """``uhd`` mode found no USRP for the device arguments, or cannot use it as asked (a reference
    that does not lock, a PPS that never comes)."""


def is_loopback(host: str) -> bool:
    """Whether host (an IP address or 'localhost') is loopback; names and interfaces are not.
    (The project's is ``hardware.addresses.is_loopback``; this file imports nothing of it.)"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def db_to_amplitude(gain_db: float) -> float:
    return 10.0 ** (gain_db / 20.0)


# --- request validation -----------------------------------------------------------------
def _number(req: dict, key: str, required: bool = False) -> float | None:
    if key not in req:
        if required:
            raise ControlError(f"missing field {key!r}")
        return None
    value = req[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ControlError(f"{key} must be a finite number, got {value!r}")
    lo, hi = LIMITS[key]
    if not lo <= value <= hi:
        raise ControlError(f"{key}={value!r} is out of range; allowed [{lo}, {hi}]")
    return float(value)


def _node(req: dict, key: str, known: dict) -> str:
    name = req.get(key)
    if not isinstance(name, str) or name not in known:
        raise ControlError(f"{key} must name one of {sorted(known)}, got {name!r}")
    return name


def _taps(value, num_taps: int) -> list[complex]:
    """Taps padded with zeros to the link's fixed length (changing the length shifts the stream)."""
    if not isinstance(value, list) or not 1 <= len(value) <= num_taps:
        raise ControlError(f"taps must be a list of 1..{num_taps} numbers or [re, im] pairs (--num-taps)")
    taps = []
    for tap in value:
        if isinstance(tap, list) and len(tap) == 2:
            re, im = tap
        else:
            re, im = tap, 0.0
        for part in (re, im):
            if isinstance(part, bool) or not isinstance(part, (int, float)) or not math.isfinite(part):
                raise ControlError(f"taps: {tap!r} is not a finite number or [re, im] pair")
        taps.append(complex(re, im))
    return taps + [0j] * (num_taps - len(taps))


def _impulse(delay: int, num_taps: int) -> list[complex]:
    """Taps of a pure delay of ``delay`` samples."""
    return [1.0 + 0j if i == delay else 0j for i in range(num_taps)]


# --- relays and health ------------------------------------------------------------------
def tx_message_error(frames: list) -> str | None:
    """Why a TX message is malformed, or None for whole, finite complex64 samples in one frame."""
    if len(frames) != 1:
        return f"{len(frames)} frames (one expected)"
    size = len(frames[0])
    if size == 0 or size % ITEM_BYTES:
        return f"{size} bytes are not whole complex64 samples ({ITEM_BYTES} bytes each)"
    if not np.isfinite(np.frombuffer(frames[0].buffer, dtype=np.float32)).all():
        return "samples are not finite"
    return None


def burst_message_error(frames: list) -> str | None:
    """Why a device-clocked TX message is malformed, or None for [b"c" | b"o", samples]."""
    if len(frames) != 2 or frames[0].bytes not in BURST_KINDS:
        return "not a burst: [b'c' (cyclic) or b'o' (one-shot), complex64 samples] expected"
    return tx_message_error(frames[1:])


class Relay:
    """Forwards one stream from ``src`` to ``dst`` on its own thread; ``check`` (frames ->
    reason or None) drops and counts malformed messages. The thread owns both sockets."""

    def __init__(self, label: str, src: zmq.Socket, dst: zmq.Socket, check=None):
        self.label = label
        self.src, self.dst, self.check = src, dst, check
        self.dropped = 0
        self.failure = ""
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"relay {label}", daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop_event.is_set():
                if not self.src.poll(100):
                    continue
                frames = self.src.recv_multipart(copy=False)
                reason = self.check(frames) if self.check else None
                if reason:
                    self.dropped += 1
                    if self.dropped == 1:
                        print(f"bridge: {self.label}: dropped a malformed message ({reason}); status counts "
                              "further drops", file=sys.stderr, flush=True)
                    continue
                if callable(self.dst):
                    self.dst(frames)
                    continue
                while not self.stop_event.is_set():
                    if self.dst.poll(100, zmq.POLLOUT):
                        self.dst.send_multipart(frames, copy=False)
                        break
        except Exception as err:  # the health check reports the dead relay
            self.failure = f"{type(err).__name__}: {err}"
        finally:
            self.src.close(0)
            if not callable(self.dst):
                self.dst.close(0)


def block_thread_name(block) -> str:
    """The name of a block's thread as Linux keeps it: GNU Radio names it <name><unique id>,
    cutting the name so that the id fits in 16 characters, and Linux keeps 15 of them."""
    uid = str(block.unique_id())
    return (block.name()[:16 - len(uid)] + uid)[:THREAD_NAME_CHARS]


def thread_names() -> collections.Counter:
    """How many threads of this process carry each name."""
    names = collections.Counter()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as fh:
                names[fh.read().strip()] += 1
        except FileNotFoundError:   # the thread just ended
            pass
    return names


class Health:
    """Which nodes' data paths are dead: a relay thread that ended, or a GNU Radio block whose
    thread exited (an exception in a block ends its thread silently; the graph runs on)."""

    def __init__(self, graph: "BridgeGraph"):
        self.graph = graph
        self.threads = {b.unique_id(): block_thread_name(b) for b in graph.blocks}
        self.expected = collections.Counter(self.threads.values())

    def started(self, timeout_s: float) -> bool:
        """Wait until every block's thread runs (GNU Radio names each as it starts)."""
        deadline = time.monotonic() + timeout_s
        while self.expected - thread_names():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def dead(self) -> dict[str, str]:
        """node -> why its data path is dead (empty when healthy)."""
        g = self.graph
        dead = {}
        for kind, relays in (("TX", g.tx_relays), ("RX", g.rx_relays)):
            for node, relay in relays.items():
                if not relay.thread.is_alive():
                    dead.setdefault(node, f"its {kind} relay ended ({relay.failure or 'stopped'})")
        missing = self.expected - thread_names()
        for uid, name in self.threads.items():
            if name in missing:
                for node in sorted(g.owners.get(uid) or g.settings):
                    dead.setdefault(node, f"GNU Radio block thread {name!r} exited")
        return dead


def public_socket(kind: int, curve: tuple[bytes, bytes] | None) -> zmq.Socket:
    """A socket that other hosts may reach: a CURVE server when curve = (public, secret) is set."""
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey = curve
        sock.curve_server = True
    return sock


def private_socket(kind: int) -> zmq.Socket:
    """A socket towards one of GNU Radio's ZMQ blocks (over IPC in the flowgraph's private directory)."""
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


class ReceiveChain(gr.basic_block):
    """One RX node's receive chain after its gain: ``impairments.Receiver`` on every work call.
    On the USRP stand-in it can overflow like the device: every ``overflow_every`` samples
    (0 = never) it drops ``fault_samples`` of them and counts the event (``overflows``)."""

    def __init__(self, receiver, overflow_every: int = 0, fault_samples: int = 0):
        gr.basic_block.__init__(self, name="rx_chain", in_sig=[np.complex64], out_sig=[np.complex64])
        self.receiver = receiver
        self.overflow_every, self.fault_samples = overflow_every, fault_samples
        self.overflows = 0
        self.next_fault = overflow_every
        self.to_drop = 0
        self.taken = 0                       # input samples consumed

    def general_work(self, input_items, output_items):
        x, out = input_items[0], output_items[0]
        if self.to_drop:                                          # an overflow in progress: samples lost
            dropped = min(self.to_drop, len(x))
            self.consume(0, dropped)
            self.to_drop -= dropped
            self.taken += dropped
            return 0
        n = min(len(x), len(out))
        if self.overflow_every and self.taken + n >= self.next_fault:
            n = self.next_fault - self.taken                      # up to the fault, then drop
            self.to_drop = self.fault_samples
            self.overflows += 1
            self.next_fault += self.overflow_every + self.fault_samples
        out[:n] = self.receiver.apply(x[:n])
        self.consume(0, n)
        self.taken += n
        return n


class EventCounter(gr.sync_block):
    """uhd: counts the USRP's overflows from its ``rx_time`` tags (it tags the first sample and
    the first after every overflow) on the RX stream, passing the samples through."""

    def __init__(self):
        gr.sync_block.__init__(self, name="rx_events", in_sig=[np.complex64], out_sig=[np.complex64])
        self.overflows = 0
        self.seen = 0

    def work(self, input_items, output_items):
        n = len(output_items[0])
        output_items[0][:] = input_items[0][:n]
        start = self.nitems_read(0)
        tags = self.get_tags_in_range(0, start, start + n, pmt.intern("rx_time"))
        self.overflows += max(0, len(tags) - (0 if self.seen else 1))
        self.seen += len(tags)
        return n


class UnderflowCounter(gr.basic_block):
    """uhd: counts the USRP sink's underflow reports on its ``async_msgs`` port."""

    def __init__(self):
        gr.basic_block.__init__(self, name="tx_events", in_sig=None, out_sig=None)
        self.underflows = 0
        self.message_port_register_in(pmt.intern("async_msgs"))
        self.set_msg_handler(pmt.intern("async_msgs"), self._handle)

    def _handle(self, msg) -> None:
        code = pmt.dict_ref(pmt.cdr(msg) if pmt.is_pair(msg) else msg, pmt.intern("event_code"), pmt.PMT_NIL)
        if pmt.is_integer(code) and pmt.to_long(code) & 0x6:     # UHD: underflow (0x2), in packet (0x4)
            self.underflows += 1


class BurstSource(gr.sync_block):
    """A device-clocked TX node's DAC feed: the repetition of its burst (cyclic) or the burst once,
    zeros when muted or done. A new burst (``load``, from the TX relay) or silence (``silence``, a
    mute) is swapped in under a lock at the start of the next work call, with a ``burst_end`` tag on
    the first sample after the old burst and a ``burst_start`` tag (value: the burst's serial) on the
    first sample of the new one; every swap is logged as (sample offset of the swap, serial or 0 for
    silence, sample offset when it arrived)."""

    def __init__(self, underflow_every: int = 0, fault_samples: int = 0):
        gr.sync_block.__init__(self, name="burst_source", in_sig=None, out_sig=[np.complex64])
        self.underflow_every, self.fault_samples = underflow_every, fault_samples
        self.underflows = 0                 # stand-in: injected runs of zeros (the DAC ran dry)
        self.burst_samples = 0              # samples sent while a burst played (the injection's clock)
        self.lock = threading.Lock()
        self.pending = None                 # (serial, iq or None, cyclic, arrival offset)
        self.iq, self.cyclic, self.position = None, True, 0
        self.received = 0                   # bursts loaded since start (the serial of the last)
        self.on_air = 0                     # serial of the burst playing, 0 = silence
        self.log = collections.deque(maxlen=TX_LOG_ENTRIES)

    def load(self, iq: np.ndarray, cyclic: bool) -> None:
        with self.lock:
            self.received += 1
            self.pending = (self.received, iq, cyclic, self.nitems_written(0))

    def silence(self) -> None:
        with self.lock:
            self.pending = (0, None, True, self.nitems_written(0))

    def work(self, input_items, output_items):
        out = output_items[0]
        start = self.nitems_written(0)
        with self.lock:
            pending, self.pending = self.pending, None
            if pending is not None:
                serial, iq, cyclic, arrived = pending
                if self.iq is not None:
                    self.add_item_tag(0, start, pmt.intern("burst_end"), pmt.from_long(self.on_air))
                if iq is not None:
                    self.add_item_tag(0, start, pmt.intern("burst_start"), pmt.from_long(serial))
                self.iq, self.cyclic, self.position, self.on_air = iq, cyclic, 0, serial
                self.log.append((start, serial, arrived))
        n = len(out)
        if self.iq is None:
            out[:] = 0
        elif self.cyclic:
            out[:] = np.take(self.iq, np.arange(self.position, self.position + n), mode="wrap")
            self.position = (self.position + n) % self.iq.size
        else:
            part = self.iq[self.position: self.position + n]
            out[: part.size] = part
            out[part.size:] = 0
            self.position += n
        if self.underflow_every and self.iq is not None:      # stand-in: the DAC runs dry every so many
            first = self.burst_samples                         # burst samples (so a test can count on it)
            for at in range(-(-first // self.underflow_every) * self.underflow_every, first + n, self.underflow_every):
                out[at - first: at - first + self.fault_samples] = 0
                self.underflows += 1
            self.burst_samples += n
        return n


# --- the two flowgraphs ------------------------------------------------------------------
class BridgeGraph(gr.top_block):
    """State shared by both modes: nodes, TX gates (mute and TX gain), node settings."""

    mode = ""
    ref_locked = None                   # uhd: the 10 MHz reference's lock as read at start (None: no sensor)

    def __init__(self, args):
        super().__init__(f"zmq_bridge_{self.mode}")
        self.args = args
        self.lock = threading.Lock()
        self.tx_ports = dict(args.tx)
        self.rx_ports = dict(args.rx)
        names = list(dict.fromkeys([*self.tx_ports, *self.rx_ports]))
        self.settings = {n: {"center_hz": args.center_hz, "sample_rate_hz": args.sample_rate_hz,
                             "bandwidth_hz": args.sample_rate_hz, "tx_gain_db": args.tx_gain_db,
                             "rx_gain_db": args.rx_gain_db, "lo_correction_hz": 0.0} for n in names}
        self.tx_enabled = {n: False for n in self.tx_ports}
        self.device_clock = self.mode == "uhd" or args.realtime   # TX bursts repeat here, the sample clock paces
        self.clocking = set() if self.mode == "emulate" and not self.device_clock else set(self.tx_ports)
        self.blocks = []
        self.owners: dict[int, set[str]] = {}  # block unique_id -> the nodes whose data path it carries
        self.dead: dict[str, str] = {}         # node -> why its data path is dead
        self.tx_relays: dict[str, Relay] = {}
        self.rx_relays: dict[str, Relay] = {}
        self.gates = {}
        self.sources = {}
        for name, port in self.tx_ports.items():
            public = public_socket(zmq.PULL, args.curve)
            public.setsockopt(zmq.MAXMSGSIZE, MAX_TX_MESSAGE_BYTES)
            if self.device_clock:
                public.set_hwm(1)                   # a shallow queue: one burst waits at most
            public.connect(f"tcp://{args.client_address}:{port}")
            self.gates[name] = blocks.multiply_const_cc(0.0)
            if self.device_clock:
                src = BurstSource(args.underflow_every if args.realtime else 0, args.fault_samples)
                src.set_max_output_buffer(BURST_BUFFER_ITEMS)
                self.gates[name].set_max_output_buffer(BURST_BUFFER_ITEMS)
                deliver = functools.partial(self._deliver, src)
                self.tx_relays[name] = Relay(f"TX node {name!r}", public, deliver, burst_message_error)
            else:
                private = self._ipc(f"tx-{len(self.tx_relays)}")
                inner = private_socket(zmq.PUSH)
                inner.bind(private)
                self.tx_relays[name] = Relay(f"TX node {name!r}", public, inner, tx_message_error)
                src = zeromq.pull_source(ITEM_BYTES, 1, private, 100, False, -1)
                src.set_min_output_buffer(SOURCE_BUFFER_ITEMS)
            self.sources[name] = src
            self.own([name], src, self.gates[name])
            self.connect(src, self.gates[name])
        self.sinks = {name: self._rx_sink(name, f"tcp://{args.address}:{port}") for name, port in self.rx_ports.items()}

    @staticmethod
    def _deliver(src: BurstSource, frames: list) -> None:
        """A burst message from the TX relay: the burst to swap in."""
        src.load(np.frombuffer(frames[1].buffer, dtype=np.complex64).copy(), BURST_KINDS[frames[0].bytes])

    def _ipc(self, name: str) -> str:
        return f"ipc://{self.args.ipc_dir}/{name}"

    def _rx_sink(self, name: str, endpoint: str):
        """The node's RX sink on endpoint; with CURVE on a private IPC socket, relayed to endpoint.
        TX-clocked: a push_sink (backpressure: every sample arrives). Device-clocked: a pub_sink
        that drops messages nobody reads, as a device overflows (the client sees the offset gap)."""
        device = self.device_clock

        def sink(address: str):
            if device:
                return zeromq.pub_sink(ITEM_BYTES, 1, address, 100, True, RX_HWM_MESSAGES, "", True)
            return zeromq.push_sink(ITEM_BYTES, 1, address, 100, True, RX_HWM_MESSAGES)
        if self.args.curve is None:
            return self.own([name], sink(endpoint))
        private = self._ipc(f"rx-{len(self.rx_relays)}")
        block = self.own([name], sink(private))
        inner = private_socket(zmq.SUB if device else zmq.PULL)
        inner.set_hwm(RX_HWM_MESSAGES)
        if device:
            inner.setsockopt(zmq.SUBSCRIBE, b"")
        inner.connect(private)
        public = public_socket(zmq.PUB if device else zmq.PUSH, self.args.curve)
        public.set_hwm(RX_HWM_MESSAGES)
        public.bind(endpoint)
        self.rx_relays[name] = Relay(f"RX node {name!r}", inner, public)
        return block

    def own(self, nodes, *blocks_):
        """Mark blocks as part of these nodes' data paths (for the health check); the last block."""
        for block in blocks_:
            self.owners.setdefault(block.unique_id(), set()).update(nodes)
        return blocks_[-1]

    def connect(self, *points) -> None:
        """top_block.connect, remembering every block (for align_samples)."""
        self.blocks += [p[0] if isinstance(p, tuple) else p for p in points]
        super().connect(*points)

    @functools.cached_property
    def align_samples(self) -> int:
        """VOLK blocks release output in multiples of their alignment and hold a remainder back
        until more input arrives; input pushed in multiples of this comes out whole."""
        return math.lcm(*(b.alignment() for b in self.blocks if hasattr(b, "alignment")))

    def _apply_gate(self, name: str) -> None:
        on = self.tx_enabled[name]
        self.gates[name].set_k(db_to_amplitude(self.settings[name]["tx_gain_db"]) if on else 0.0)

    def set_tx_enabled(self, name: str, on: bool) -> None:
        self.tx_enabled[name] = on
        self._apply_gate(name)
        if not on and isinstance(self.sources.get(name), BurstSource):
            self.sources[name].silence()     # a mute drops the burst: nothing old comes back on unmute

    def configure(self, name: str, values: dict) -> None:
        if "tx_gain_db" in values and self.args.max_tx_gain_db is not None \
                and values["tx_gain_db"] > self.args.max_tx_gain_db:
            raise ControlError(f"tx_gain_db={values['tx_gain_db']} exceeds the bridge's hard limit "
                               f"--max-tx-gain-db={self.args.max_tx_gain_db}")
        self.settings[name].update(values)
        if name in self.gates:
            self._apply_gate(name)

    def overflows(self) -> dict:
        """RX overflows per node the device reported (stand-in: injected)."""
        return {n: c.overflows for n, c in getattr(self, "chains", {}).items()}

    def underflows(self) -> dict:
        """TX underflows per node the device reported (stand-in: injected)."""
        return {n: src.underflows for n, src in self.sources.items() if isinstance(src, BurstSource)}

    def set_lo_correction(self, name: str, hz: float) -> None:
        bound = self.args.max_lo_correction_hz
        if abs(hz) > bound:
            raise ControlError(f"lo_correction_hz={hz:+.0f} for node {name!r} is beyond the bridge's bound "
                               f"±{bound:g} Hz (--max-lo-correction-hz)")
        self.configure(name, {"lo_correction_hz": hz})

    def lo_corrections(self) -> dict:
        """The LO correction each node applies, Hz (emulate: the one asked; uhd: read back from the USRP)."""
        return {n: s["lo_correction_hz"] for n, s in self.settings.items()}

    def tune_report(self) -> dict:
        """uhd: the RF and DSP frequencies each node's USRP tuned to; emulate: none."""
        return {}

    def emulate_only(self, cmd: str) -> None:
        raise ControlError(f"{cmd} exists only in emulate mode (this flowgraph runs in {self.mode} mode)")

    set_noise = set_link = set_interferer = emulate_only


class EmulateGraph(BridgeGraph):
    """Every TX node reaches every RX node through its own FIR ► carrier-offset link."""

    mode = "emulate"

    def __init__(self, args):
        super().__init__(args)
        rate = args.sample_rate_hz
        self.links = {}
        self.adders, self.rx_gains, self.noises, self.interferers, self.chains = {}, {}, {}, {}, {}
        delays = dict(args.rx_link_delay)
        pairs = set(args.link) or {(tx, rx) for tx in self.tx_ports for rx in self.rx_ports}
        self.paced = dict(self.gates)         # what each TX node puts on the medium
        used = set()                          # TX nodes whose output feeds some link
        if self.device_clock:                 # the USRP stand-in: the sample clock paces every TX node
            for tx, gate in self.gates.items():
                throttle = blocks.throttle(ITEM_BYTES, rate, True)
                throttle.set_max_output_buffer(BURST_BUFFER_ITEMS)
                self.connect(gate, self.own([tx], throttle))
                self.paced[tx] = throttle
        for j, rx in enumerate(self.rx_ports):
            add = blocks.add_cc()
            port = 0
            senders = [tx for tx in self.tx_ports if (tx, rx) in pairs]
            if not senders:  # no link in: a zeroed copy of a TX input still clocks this RX node
                first = next(iter(self.tx_ports))
                self.connect(self.paced[first], self.own([first, rx], blocks.multiply_const_cc(0.0)), (add, 0))
                used.add(first)
                self.clocking.add(first)
                port = 1
            self.clocking.update(senders)
            for tx in senders:
                fir = gr_filter.fir_filter_ccc(1, _impulse(delays.get(rx, 0), args.num_taps))
                if self.device_clock:
                    fir.set_max_output_buffer(BURST_BUFFER_ITEMS)
                lo = self._free_running(analog.sig_source_c(rate, analog.GR_COS_WAVE, 0.0, 1.0, 0))
                mix = blocks.multiply_cc()
                self.own([tx, rx], fir, lo, mix)
                self.connect(self.paced[tx], fir, (mix, 0))
                used.add(tx)
                self.connect(lo, (mix, 1))
                self.connect(mix, (add, port))
                port += 1
                self.links[(tx, rx)] = {"fir": fir, "lo": lo, "taps": _impulse(delays.get(rx, 0), args.num_taps),
                                        "gain_db": dict(args.rx_link_gain_db).get(rx, args.link_gain_db),
                                        "cfo_hz": dict(args.rx_link_cfo_hz).get(rx, 0.0)}
                self._apply_link(tx, rx)
            self.noises[rx] = self._free_running(analog.fastnoise_source_c(
                analog.GR_GAUSSIAN, args.noise_voltage, args.seed + j, NOISE_POOL_SAMPLES))
            self.interferers[rx] = self._free_running(analog.sig_source_c(rate, analog.GR_COS_WAVE, 0.0, 0.0, 0))
            self.rx_gains[rx] = blocks.multiply_const_cc(db_to_amplitude(args.rx_gain_db))
            chain = ReceiveChain(impairments.Receiver(self._impairments(rx), rate, args.seed + 1000 + j),
                                 args.overflow_every if self.device_clock else 0, args.fault_samples)
            self.chains[rx] = chain
            self.own([rx], add, self.noises[rx], self.interferers[rx], self.rx_gains[rx], chain)
            self.connect(self.noises[rx], (add, port))
            self.connect(self.interferers[rx], (add, port + 1))
            untag = blocks.tag_gate(ITEM_BYTES, False)            # burst tags stay on the TX side
            self.own([rx], untag)
            self.connect(add, self.rx_gains[rx], chain, untag, self.sinks[rx])
            self.adders[rx] = add
        for tx in set(self.tx_ports) - used:     # nobody hears it: its input goes nowhere
            self.connect(self.paced[tx], self.own([tx], blocks.null_sink(ITEM_BYTES)))

    def _impairments(self, node: str):
        """A node's figures (``--crystal-ppm`` per node, the rest for every node)."""
        a = self.args
        if a.ideal:
            return impairments.Impairments()
        return impairments.Impairments(
            crystal_ppm=dict(a.crystal_ppm).get(node, 0.0), phase_noise_deg=a.phase_noise_deg,
            phase_noise_corner_hz=a.phase_noise_corner_hz, iq_gain_db=a.iq_gain_db, iq_phase_deg=a.iq_phase_deg,
            dc_offset_dbfs=a.dc_offset_dbfs)

    def lo_hz(self, node: str) -> float:
        """Where a node's LOs sit: the asked centre less its correction, times its crystal's error."""
        s = self.settings[node]
        ppm = 0.0 if self.args.ideal else dict(self.args.crystal_ppm).get(node, 0.0)
        return (s["center_hz"] - s["lo_correction_hz"]) * impairments.clock_ratio(ppm)

    @staticmethod
    def _free_running(block):
        """Sources that run ahead of the TX clock fill their output buffer with samples made
        before a change of their settings; a small buffer bounds that lag (SOURCE_LAG_ITEMS)."""
        block.set_max_output_buffer(SOURCE_LAG_ITEMS)
        return block

    def _apply_link(self, tx: str, rx: str) -> None:
        link = self.links[(tx, rx)]
        amplitude = db_to_amplitude(link["gain_db"])
        link["fir"].set_taps([amplitude * t for t in link["taps"]])
        offset_hz = link["cfo_hz"] + self.lo_hz(tx) - self.lo_hz(rx)
        link["lo"].set_frequency(offset_hz)

    def configure(self, name: str, values: dict) -> None:
        super().configure(name, values)
        if "sample_rate_hz" in values:  # one medium, one rate: every node follows
            for s in self.settings.values():
                s["sample_rate_hz"] = values["sample_rate_hz"]
            for block in [*(l["lo"] for l in self.links.values()), *self.interferers.values()]:
                block.set_sampling_freq(values["sample_rate_hz"])
        if name in self.rx_gains:
            self.rx_gains[name].set_k(db_to_amplitude(self.settings[name]["rx_gain_db"]))
        for tx, rx in self.links:
            if name in (tx, rx):
                self._apply_link(tx, rx)

    def set_noise(self, name: str, noise_voltage: float) -> None:
        self.noises[name].set_amplitude(noise_voltage)

    def set_link(self, tx: str, rx: str, gain_db=None, taps=None, cfo_hz=None) -> None:
        if (tx, rx) not in self.links:
            raise ControlError(f"this flowgraph has no link {tx}={rx} (see --link)")
        link = self.links[(tx, rx)]
        for key, value in (("gain_db", gain_db), ("taps", taps), ("cfo_hz", cfo_hz)):
            if value is not None:
                link[key] = value
        self._apply_link(tx, rx)

    def set_interferer(self, name: str, freq_hz: float, amplitude: float) -> None:
        self.interferers[name].set_frequency(freq_hz)
        self.interferers[name].set_amplitude(amplitude)


class UhdGraph(BridgeGraph):
    """One USRP: ZMQ in ► gate ► UHD sink, UHD source ► tag gate ► ZMQ out."""

    mode = "uhd"

    def __init__(self, args):
        if len(args.tx) > 1 or len(args.rx) > 1:
            raise SystemExit("uhd mode drives one USRP: give at most one --tx and one --rx")
        from gnuradio import uhd
        self.uhd = uhd
        self.chains, self.tx_events = {}, None
        super().__init__(args)
        stream_args = uhd.stream_args(cpu_format="fc32", channels=[0])
        try:
            self.usrp_sink = uhd.usrp_sink(args.device_args, stream_args) if self.tx_ports else None
            self.usrp_source = uhd.usrp_source(args.device_args, stream_args) if self.rx_ports else None
        except (RuntimeError, LookupError) as err:     # UHD: "LookupError: KeyError: No devices found"
            raise NoUsrpError(f"no USRP found for device args {args.device_args!r} ({err}); "
                              "check the cable/network and `uhd_find_devices`") from err
        for name in self.tx_ports:
            self.connect(self.gates[name], self.own([name], self.usrp_sink))
            self.tx_events = UnderflowCounter()
            self.msg_connect(self.usrp_sink, "async_msgs", self.tx_events, "async_msgs")
        for name in self.rx_ports:  # overflows counted from rx_time tags, then tags dropped: the header stays 19 bytes
            self.chains[name] = EventCounter()
            self.connect(self.own([name], self.usrp_source), self.own([name], self.chains[name]),
                         self.own([name], blocks.tag_gate(ITEM_BYTES, False)), self.sinks[name])
        self.node = next(iter(self.settings))
        self.tuned: dict[str, dict] = {}      # "rx" / "tx" -> what the last tune request got
        self.ref_locked = self.set_references()
        for name in self.settings:
            self.configure(name, dict(self.settings[name]))

    def device(self):
        """The USRP's motherboard (the sink and the source are two handles on one device)."""
        return self.usrp_source if self.usrp_source is not None else self.usrp_sink

    def set_references(self) -> bool | None:
        """Select the 10 MHz and PPS sources (before any rate or frequency is set: a new reference
        relocks the device's clocks). Returns ``ref_locked`` as read (None where the device has no
        such sensor); NoUsrpError, naming the node, for a source the device does not offer, a 10 MHz
        that does not lock within REF_LOCK_WAIT_S, or no PPS edge."""
        dev, a, node = self.device(), self.args, self.node
        for what, asked, offered in (("clock_source", a.clock_source, dev.get_clock_sources(0)),
                                     ("time_source", a.time_source, dev.get_time_sources(0))):
            if asked not in offered:
                raise NoUsrpError(f"{node}: {what}={asked!r} is not one this USRP offers ({list(offered)})")
        dev.set_clock_source(a.clock_source, 0)
        dev.set_time_source(a.time_source, 0)
        locked = None
        if "ref_locked" in dev.get_mboard_sensor_names(0):
            deadline = time.monotonic() + REF_LOCK_WAIT_S
            while not (locked := dev.get_mboard_sensor("ref_locked", 0).to_bool()) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not locked and a.clock_source != "internal":
                raise NoUsrpError(f"{node}: clock_source={a.clock_source!r} did not lock within {REF_LOCK_WAIT_S:g} s "
                                  "(sensor ref_locked is false); check the 10 MHz cable and its level")
        if a.time_source != "internal":
            try:   # the next PPS edge sets the device time to 0 on every USRP sharing the PPS
                dev.set_time_unknown_pps(self.uhd.time_spec(0.0))
            except RuntimeError as err:
                raise NoUsrpError(f"{node}: time_source={a.time_source!r} gave no PPS edge ({str(err).strip()}); "
                                  "check the PPS cable") from None
        return locked

    def _ranges(self, key: str) -> list:
        """The USRP's own ranges (UHD meta ranges) for a setting, one per device it applies to."""
        devices = [d for d in (self.usrp_sink, self.usrp_source) if d is not None]
        if key in ("tx_gain_db", "rx_gain_db"):
            dev = self.usrp_sink if key == "tx_gain_db" else self.usrp_source
            return [] if dev is None else [dev.get_gain_range(0)]
        if key == "center_hz":
            return [d.get_freq_range(0) for d in devices]
        if key == "sample_rate_hz":
            return [d.get_samp_rates() for d in devices]
        if key == "bandwidth_hz":
            return [d.get_bandwidth_range(0) for d in devices]
        return []

    def configure(self, name: str, values: dict) -> None:
        for key, value in values.items():
            for dev_range in self._ranges(key):
                if not dev_range.start() <= value <= dev_range.stop():
                    raise ControlError(f"{key}={value:g} is outside the USRP's range "
                                       f"[{dev_range.start():g}, {dev_range.stop():g}] (as the device reports it)")
        super().configure(name, values)
        for dev in (self.usrp_sink, self.usrp_source):
            if dev is None:
                continue
            s = self.settings[name]
            if "center_hz" in values or "lo_correction_hz" in values:
                self._tune(dev, s["center_hz"], s["lo_correction_hz"])
            if "sample_rate_hz" in values:
                dev.set_samp_rate(s["sample_rate_hz"])
                self._check_coerced("sample_rate_hz", s["sample_rate_hz"], dev.get_samp_rate())
            if "bandwidth_hz" in values:
                dev.set_bandwidth(s["bandwidth_hz"], 0)
        if self.usrp_sink is not None and "tx_gain_db" in values:
            self.usrp_sink.set_gain(self.settings[name]["tx_gain_db"], 0)
        if self.usrp_source is not None and "rx_gain_db" in values:
            self.usrp_source.set_gain(self.settings[name]["rx_gain_db"], 0)

    def _tune(self, dev, center_hz: float, correction_hz: float) -> None:
        """RF LO at center_hz, the DSP shifting by the correction: the device then works at
        center_hz - correction_hz. Checked: the LO (1 ppm), its lock, the correction (1 Hz)."""
        request = self.uhd.tune_request(center_hz - correction_hz)
        request.rf_freq, request.rf_freq_policy = center_hz, self.uhd.tune_request.POLICY_MANUAL
        result = dev.set_center_freq(request, 0)
        self._check_coerced("center_hz", center_hz, result.actual_rf_freq)
        self._check_lo_locked(dev)
        applied_hz = center_hz - dev.get_center_freq(0)
        if abs(applied_hz - correction_hz) > LO_CORRECTION_TOLERANCE_HZ:
            raise ControlError(f"lo_correction_hz={correction_hz:+.3f}: the USRP applied {applied_hz:+.3f} Hz "
                               f"(DSP at {result.actual_dsp_freq:+.3f} Hz); beyond its DSP range?")
        self.tuned["rx" if dev is self.usrp_source else "tx"] = {
            "rf_hz": result.actual_rf_freq, "dsp_hz": result.actual_dsp_freq, "lo_correction_hz": applied_hz}

    def lo_corrections(self) -> dict:
        first = self.tuned.get("rx") or self.tuned.get("tx") or {}
        return {self.node: first.get("lo_correction_hz", 0.0)}

    def tune_report(self) -> dict:
        return {self.node: dict(self.tuned)}

    @staticmethod
    def _check_coerced(key: str, want: float, got: float) -> None:
        """UHD coerces rates and frequencies to what the device can do: refuse beyond 1 ppm."""
        if abs(got - want) > 1e-6 * abs(want):
            raise ControlError(f"{key}={want:.0f} was coerced by the USRP to {got:.3f}; pick a value the device "
                               "can set exactly")

    @staticmethod
    def _check_lo_locked(dev) -> None:
        if "lo_locked" in dev.get_sensor_names(0) and not dev.get_sensor("lo_locked", 0).to_bool():
            raise ControlError("the USRP's LO did not lock after tuning (sensor lo_locked is false)")

    def underflows(self) -> dict:
        return {n: self.tx_events.underflows if self.tx_events else 0 for n in self.tx_ports}

    def _apply_gate(self, name: str) -> None:  # the USRP applies the TX gain itself
        self.gates[name].set_k(1.0 if self.tx_enabled[name] else 0.0)


# --- control server ----------------------------------------------------------------------
def dead_message(dead: dict[str, str]) -> str:
    nodes = "; ".join(f"node {node!r}: {why}" for node, why in sorted(dead.items()))
    return f"data path dead: {nodes}; all TX muted, restart the flowgraph"


class ControlServer:
    """JSON requests over ZMQ REP; a watchdog mutes all TX when heartbeats stop."""

    def __init__(self, graph: BridgeGraph, endpoint: str, heartbeat_timeout_s: float):
        self.graph = graph
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.session = secrets.token_hex(8)
        self.watchdog_trips = 0
        self.last_beat = time.monotonic()
        self.rejected = 0
        self.socket = public_socket(zmq.REP, graph.args.curve)
        self.socket.setsockopt(zmq.MAXMSGSIZE, ZMQ_MAX_MESSAGE_BYTES)
        self.socket.bind(endpoint)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self.stop_event.is_set():
            if poller.poll(50):
                frames = self.socket.recv_multipart()
                try:
                    if len(frames) != 1:
                        raise ControlError(f"request of {len(frames)} frames; send one JSON object in one frame")
                    reply = self.handle(frames[0])
                except ControlError as err:
                    reply = self._refuse(str(err))
                except Exception as err:  # a request must never kill the flowgraph
                    reply = self._refuse(f"{type(err).__name__}: {err}")
                self.socket.send(json.dumps(reply).encode())
            self._watchdog()
        self.socket.close(0)

    def _refuse(self, error: str) -> dict:
        """An error reply (counted); while a data path is dead it names the dead nodes."""
        self.rejected += 1
        reply = {"ok": False, "error": error}
        if self.graph.dead:
            reply["dead"] = dict(self.graph.dead)
        return reply

    def fail(self, dead: dict[str, str]) -> None:
        """A data path died: mute all TX; from now on every request is refused, naming the nodes."""
        g = self.graph
        with g.lock:
            if g.dead:
                return
            for name in g.tx_enabled:
                g.set_tx_enabled(name, False)
            g.dead = dead
        print(f"bridge: error: {dead_message(dead)}", file=sys.stderr, flush=True)

    def _watchdog(self) -> None:
        with self.graph.lock:
            idle_s = time.monotonic() - self.last_beat
            if idle_s > self.heartbeat_timeout_s and any(self.graph.tx_enabled.values()):
                for name in self.graph.tx_enabled:
                    self.graph.set_tx_enabled(name, False)
                self.watchdog_trips += 1
                print(f"bridge: no heartbeat for {idle_s:.2f} s: all TX muted", file=sys.stderr, flush=True)

    def status(self) -> dict:
        g = self.graph
        return {"ok": True, "session": self.session, "mode": g.mode, "tx_enabled": dict(g.tx_enabled),
                "watchdog_trips": self.watchdog_trips, "settings": g.settings,
                "heartbeat_timeout_s": self.heartbeat_timeout_s,
                "tx_endpoints": {n: f"tcp://{g.args.client_address}:{p}" for n, p in g.tx_ports.items()},
                "rx_ports": g.rx_ports, "source_lag_samples": SOURCE_LAG_ITEMS, "align_samples": g.align_samples,
                "tx_clocking": sorted(g.clocking),
                "tx_items": {n: src.nitems_written(0) for n, src in g.sources.items()
                             if n in g.clocking and not g.device_clock},
                "clock": "device" if g.device_clock else "tx", "burst_buffer_items": BURST_BUFFER_ITEMS,
                "rx_items": {n: sink.nitems_read(0) for n, sink in g.sinks.items()},
                "rx_overflows": g.overflows(), "tx_underflows": g.underflows(),
                "tx_on_air": {n: src.on_air for n, src in g.sources.items() if isinstance(src, BurstSource)},
                "tx_received": {n: src.received for n, src in g.sources.items() if isinstance(src, BurstSource)},
                "tx_log": {n: list(src.log) for n, src in g.sources.items() if isinstance(src, BurstSource)},
                "lo_correction_hz": g.lo_corrections(), "max_lo_correction_hz": g.args.max_lo_correction_hz,
                "tune": g.tune_report(),
                "references": {"clock_source": g.args.clock_source, "time_source": g.args.time_source,
                               "ref_locked": g.ref_locked},
                "curve": g.args.curve is not None,
                "rejected": {"control": self.rejected, "tx": {n: r.dropped for n, r in g.tx_relays.items()}}}

    def handle(self, raw: bytes) -> dict:
        if len(raw) > MAX_CONTROL_BYTES:
            raise ControlError(f"request of {len(raw)} bytes exceeds {MAX_CONTROL_BYTES} bytes")
        try:
            req = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ControlError(f"request is not UTF-8 JSON: {err}") from None
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            raise ControlError('request must be a JSON object with a string "cmd"')
        g = self.graph
        cmd = req["cmd"]
        with g.lock:
            if g.dead:
                raise ControlError(dead_message(g.dead))
            if cmd in ("status", "heartbeat"):
                pass
            elif cmd == "configure":
                name = _node(req, "node", g.settings)
                values = {k: _number(req, k) for k in
                          ("center_hz", "sample_rate_hz", "bandwidth_hz", "tx_gain_db", "rx_gain_db") if k in req}
                g.configure(name, values)
            elif cmd == "mute":
                names = [_node(req, "node", g.tx_enabled)] if "node" in req else list(g.tx_enabled)
                for name in names:
                    g.set_tx_enabled(name, False)
            elif cmd == "gates":
                enabled = req.get("enabled")
                if not isinstance(enabled, dict) or not all(isinstance(v, bool) for v in enabled.values()):
                    raise ControlError('gates needs "enabled": {node: true|false, ...}')
                for name in enabled:
                    _node({"node": name}, "node", g.tx_enabled)
                for name, on in enabled.items():
                    g.set_tx_enabled(name, on)
            elif cmd == "unmute":
                if isinstance(req.get("nodes"), list):
                    names = [_node({"node": n}, "node", g.tx_enabled) for n in req["nodes"]]
                else:
                    names = [_node(req, "node", g.tx_enabled)]
                for name in names:
                    g.set_tx_enabled(name, True)
            elif cmd == "set_lo_correction":
                g.set_lo_correction(_node(req, "node", g.settings), _number(req, "lo_correction_hz", required=True))
            elif cmd == "set_noise":
                if g.mode != "emulate":
                    g.emulate_only(cmd)
                g.set_noise(_node(req, "node", g.rx_ports), _number(req, "noise_voltage", required=True))
            elif cmd == "set_link":
                if g.mode != "emulate":
                    g.emulate_only(cmd)
                tx, rx = _node(req, "tx", g.tx_ports), _node(req, "rx", g.rx_ports)
                taps = _taps(req["taps"], self.graph.args.num_taps) if "taps" in req else None
                g.set_link(tx, rx, gain_db=_number(req, "gain_db"), taps=taps, cfo_hz=_number(req, "cfo_hz"))
            elif cmd == "set_interferer":
                if g.mode != "emulate":
                    g.emulate_only(cmd)
                g.set_interferer(_node(req, "node", g.rx_ports), _number(req, "freq_hz", required=True),
                                 _number(req, "amplitude", required=True))
            else:
                raise ControlError(f"unknown cmd {cmd!r}; known: status, heartbeat, configure, mute, unmute, gates, "
                                   "set_lo_correction, set_noise, set_link, set_interferer")
            self.last_beat = time.monotonic()
            return self.status()


# --- command line ------------------------------------------------------------------------
def _node_value(key: str):
    """argparse type for NAME=VALUE with VALUE in LIMITS[key]."""
    lo, hi = LIMITS[key]

    def parse(text: str) -> tuple[str, float]:
        name, sep, raw = text.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not sep or not name or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE with VALUE in [{lo}, {hi}], got {text!r}")
        return name, value
    return parse


def _link(text: str) -> tuple[str, str]:
    tx, sep, rx = text.partition("=")
    if not sep or not tx or not rx:
        raise argparse.ArgumentTypeError(f"expected TX=RX node names, got {text!r}")
    return tx, rx


def _node_port(text: str) -> tuple[str, int]:
    name, sep, port = text.partition("=")
    if not sep or not name or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected NAME=PORT with PORT in 1..65535, got {text!r}")
    return name, int(port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("emulate", "uhd"))
    p.add_argument("--tx", type=_node_port, action="append", default=[],
                   help="TX node NAME=PORT: pulls IQ from tcp://CLIENT_ADDRESS:PORT (repeatable)")
    p.add_argument("--rx", type=_node_port, action="append", default=[],
                   help="RX node NAME=PORT: pushes IQ on tcp://ADDRESS:PORT (repeatable)")
    p.add_argument("--control-port", type=int, required=True, help="REP port of the JSON control channel")
    p.add_argument("--address", default="127.0.0.1", help="address the RX and control sockets bind")
    p.add_argument("--client-address", default="127.0.0.1", help="address where the client binds the TX ports")
    p.add_argument("--sample-rate-hz", type=float, default=2e6)
    p.add_argument("--center-hz", type=float, default=2.4e9)
    p.add_argument("--tx-gain-db", type=float, default=None, help="default: 0 dB or the cap, whichever is lower")
    p.add_argument("--rx-gain-db", type=float, default=0.0)
    p.add_argument("--max-tx-gain-db", type=float, default=None, help="hard cap; larger TX gains are refused")
    p.add_argument("--heartbeat-timeout-s", type=float, default=2.0,
                   help="mute all TX after this long without a request")
    p.add_argument("--noise-voltage", type=float, default=0.0,
                   help="emulate: complex noise RMS per RX node (power = v²)")
    p.add_argument("--link-gain-db", type=float, default=0.0, help="emulate: initial gain of every link in dB")
    p.add_argument("--link", type=_link, action="append", default=[],
                   help="emulate: TX=RX, a link from TX node to RX node (repeatable; default: every pair)")
    p.add_argument("--rx-link-gain-db", type=_node_value("gain_db"), action="append", default=[],
                   help="emulate: NAME=DB, initial gain of every link into RX node NAME (repeatable)")
    p.add_argument("--rx-link-cfo-hz", type=_node_value("cfo_hz"), action="append", default=[],
                   help="emulate: NAME=HZ, initial carrier offset of every link into RX node NAME (repeatable)")
    p.add_argument("--rx-link-delay", type=_node_value("delay"), action="append", default=[],
                   help="emulate: NAME=SAMPLES, initial delay of every link into RX node NAME (< --num-taps)")
    p.add_argument("--crystal-ppm", type=_node_value("crystal_ppm"), action="append", default=[],
                   help="emulate: NAME=PPM, the crystal error of node NAME (LOs), ppm (repeatable)")
    p.add_argument("--phase-noise-deg", type=float, default=0.0, help="emulate: RMS phase noise at every RX node, deg")
    p.add_argument("--phase-noise-corner-hz", type=float, default=10e3, help="emulate: its corner frequency, Hz")
    p.add_argument("--iq-gain-db", type=float, default=0.0, help="emulate: IQ imbalance, Q gain against I, dB")
    p.add_argument("--iq-phase-deg", type=float, default=0.0, help="emulate: IQ imbalance, Q phase error, deg")
    p.add_argument("--dc-offset-dbfs", type=float, default=-math.inf, help="emulate: DC offset at the ADC, dBFS")
    p.add_argument("--ideal", action="store_true", help="emulate: no impairments (the ADC still saturates)")
    p.add_argument("--overflow-every", type=int, default=0,
                   help="emulate --realtime: drop --fault-samples RX samples every this many, as a USRP overflows "
                        "(0 = never)")
    p.add_argument("--underflow-every", type=int, default=0,
                   help="emulate --realtime: zero --fault-samples TX samples every this many sent while a burst "
                        "plays, as a USRP underflows (0 = never)")
    p.add_argument("--fault-samples", type=int, default=1024, help="samples lost per injected overflow/underflow")
    p.add_argument("--realtime", action="store_true",
                   help="emulate: a USRP stand-in: bursts repeat in the flowgraph and the sample clock paces "
                        "TX and RX (a throttle at the sample rate), as in uhd mode")
    p.add_argument("--num-taps", type=int, default=8, help=f"emulate: FIR length of every link, 1..{MAX_TAPS}")
    p.add_argument("--seed", type=int, default=1, help="emulate: noise seed of the first RX node (others follow)")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the process that started this one exits (the process manager sets it)")
    p.add_argument("--device-args", default="",
                   help='uhd: UHD device arguments, e.g. "type=b200" or "addr=192.168.10.2"')
    p.add_argument("--clock-source", choices=REFERENCES, default="internal",
                   help="uhd: the 10 MHz reference (external: the REF input, a shared 10 MHz)")
    p.add_argument("--time-source", choices=REFERENCES, default="internal",
                   help="uhd: the PPS (external: the PPS input; the device time is set to 0 at its next edge)")
    p.add_argument("--max-lo-correction-hz", type=float, default=LIMITS["lo_correction_hz"][1],
                   help="largest LO correction set_lo_correction accepts, Hz")
    p.add_argument("--curve-server-secret", default="",
                   help="this bridge's CURVE secret key file (server.key_secret of `testbed keys generate`): "
                        "control and IQ are authenticated and encrypted; required beyond loopback")
    p.add_argument("--curve-clients", default="",
                   help="directory of the public key files (*.key) of the clients let in (with --curve-server-secret)")
    args = p.parse_args(argv)
    args.curve = _curve_keys(p, args)
    if not args.tx and not args.rx:
        p.error("give at least one --tx or --rx node")
    for flag, nodes in (("--tx", args.tx), ("--rx", args.rx)):
        names = [n for n, _ in nodes]
        if len(set(names)) != len(names):
            p.error(f"{flag}: node names must be unique, got {names}")
    if args.mode == "emulate" and not (args.tx and args.rx):
        p.error("emulate mode needs at least one --tx and one --rx node (TX input clocks the medium)")
    tx_names, rx_names = {n for n, _ in args.tx}, {n for n, _ in args.rx}
    bad = [f"{t}={r}" for t, r in args.link if t not in tx_names or r not in rx_names]
    if bad:
        p.error(f"--link {bad}: both ends must be nodes given with --tx and --rx")
    late = [f"{n}={d:g}" for n, d in args.rx_link_delay if d >= args.num_taps or d != int(d)]
    if late:
        p.error(f"--rx-link-delay {late}: delays must be whole samples below --num-taps {args.num_taps}")
    args.rx_link_delay = [(n, int(d)) for n, d in args.rx_link_delay]
    for flag, pairs, names in (("--rx-link-gain-db", args.rx_link_gain_db, rx_names),
                               ("--rx-link-cfo-hz", args.rx_link_cfo_hz, rx_names),
                               ("--rx-link-delay", args.rx_link_delay, rx_names),
                               ("--crystal-ppm", args.crystal_ppm, tx_names | rx_names)):
        unknown = sorted({n for n, _ in pairs} - names)
        if unknown:
            p.error(f"{flag} names unknown RX nodes {unknown}")
    if not 1 <= args.num_taps <= MAX_TAPS:
        p.error(f"--num-taps must be in 1..{MAX_TAPS}")
    if args.heartbeat_timeout_s <= 0:
        p.error("--heartbeat-timeout-s must be > 0")
    if not 0 <= args.max_lo_correction_hz <= LIMITS["lo_correction_hz"][1]:
        p.error(f"--max-lo-correction-hz must be in [0, {LIMITS['lo_correction_hz'][1]:g}]")
    if args.mode != "uhd" and (args.clock_source, args.time_source) != ("internal", "internal"):
        p.error("--clock-source and --time-source apply to uhd mode (a USRP)")
    if args.tx_gain_db is None:
        args.tx_gain_db = min(0.0, args.max_tx_gain_db if args.max_tx_gain_db is not None else 0.0)
    if args.max_tx_gain_db is not None and args.tx_gain_db > args.max_tx_gain_db:
        p.error(f"--tx-gain-db {args.tx_gain_db} exceeds --max-tx-gain-db {args.max_tx_gain_db}")
    return args


def _curve_keys(p: argparse.ArgumentParser, args) -> tuple[bytes, bytes] | None:
    """(public, secret) of this bridge's CURVE keys, or None; without keys, addresses must be loopback."""
    if bool(args.curve_server_secret) != bool(args.curve_clients):
        p.error("--curve-server-secret and --curve-clients go together")
    if not args.curve_server_secret:
        for flag, host in (("--address", args.address), ("--client-address", args.client_address)):
            if not is_loopback(host):
                p.error(f"{flag} {host} is beyond loopback: give --curve-server-secret and --curve-clients "
                        "(testbed keys generate DIR), or control and IQ would cross the network unauthenticated")
        return None
    if not zmq.has("curve"):
        p.error("this libzmq has no CURVE support")
    try:
        public, secret = zmq.auth.load_certificate(args.curve_server_secret)
        clients = zmq.auth.load_certificates(args.curve_clients)
    except (OSError, ValueError) as err:
        p.error(f"CURVE keys: {err}")
    if secret is None:
        p.error(f"--curve-server-secret {args.curve_server_secret} holds no secret key (give server.key_secret)")
    if not clients:
        p.error(f"--curve-clients {args.curve_clients} holds no public key file (*.key)")
    return public, secret


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    auth = None
    if args.curve is not None:   # ZAP: refuse client keys not in --curve-clients (before any socket exists)
        auth = ThreadAuthenticator(zmq.Context.instance())
        auth.start()
        auth.configure_curve(domain="*", location=args.curve_clients)
    try:   # GNU Radio's ZMQ blocks meet the relays over IPC in a directory only this user can enter
        with tempfile.TemporaryDirectory(prefix="zmq-bridge-") as args.ipc_dir:
            return _run(args, stop)
    finally:
        if auth is not None:
            auth.stop()


def _run(args, stop: threading.Event) -> int:
    try:
        graph = UhdGraph(args) if args.mode == "uhd" else EmulateGraph(args)
    except NoUsrpError as err:
        print(f"bridge: error: {err}", file=sys.stderr, flush=True)
        return 3
    server = ControlServer(graph, f"tcp://{args.address}:{args.control_port}", args.heartbeat_timeout_s)
    health = Health(graph)
    relays = [*graph.tx_relays.values(), *graph.rx_relays.values()]
    graph.start()
    for relay in relays:
        relay.thread.start()
    code = 0
    if health.started(5.0):
        server.thread.start()
        ready = {"mode": args.mode, "session": server.session, "curve": args.curve is not None,
                 "control": f"tcp://{args.address}:{args.control_port}",
                 "tx": {n: f"tcp://{args.client_address}:{p}" for n, p in args.tx},
                 "rx": {n: f"tcp://{args.address}:{p}" for n, p in args.rx}}
        print("READY " + json.dumps(ready), flush=True)
        code = _watch(args, stop, server, health)
    else:
        print(f"bridge: error: GNU Radio block threads {sorted(health.expected - thread_names())} did not start",
              file=sys.stderr, flush=True)
        code = 1
    with graph.lock:
        for name in graph.tx_enabled:
            graph.set_tx_enabled(name, False)
    server.stop_event.set()
    graph.stop()
    graph.wait()
    for relay in relays:
        relay.stop_event.set()
    for thread in [server.thread, *(r.thread for r in relays)]:
        if thread.is_alive():
            thread.join(1.0)
    return code


def _watch(args, stop: threading.Event, server: ControlServer, health: Health) -> int:
    """Until SIGTERM: watch the control thread, the parent process and every data path."""
    parent = os.getppid()
    while not stop.wait(0.1):
        if not server.thread.is_alive():
            print("bridge: error: control thread died", file=sys.stderr, flush=True)
            return 1
        if args.exit_with_parent and os.getppid() != parent:
            print("bridge: the process that started the flowgraph is gone: stopping", file=sys.stderr, flush=True)
            return 1
        dead = health.dead()
        if dead:
            server.fail(dead)
    return 0


if __name__ == "__main__":
    sys.exit(main())
