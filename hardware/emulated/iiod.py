"""An emulated ADALM-Pluto served over libiio's IIOD network text protocol (libiio 0.24).

The real libiio client (``iio_info -u ip:127.0.0.1:PORT``, ``adi.Pluto("ip:127.0.0.1:PORT")``)
talks to it as to a Pluto on the network. Commands: PRINT, ZPRINT (refused, so a zstd client falls
back), VERSION, TIMEOUT, READ, WRITE, OPEN, READBUF, WRITEBUF, CLOSE, GETTRIG, EXIT. libiio opens
one TCP connection per buffer, so each connection is served by its own thread with its own OPEN
state; every reply goes out in one write (a READBUF larger than ``CHUNK_SAMPLES`` in several). Like
iiod, several connections may read the RX device at once; the TX device takes one buffer at a time
(-EBUSY).

Limits, checked before anything is allocated, so that no client can exhaust memory or stall the
others: a command line of at most ``MAX_LINE_BYTES``, an attribute value of at most
``MAX_ATTR_BYTES``, a buffer of at most ``MAX_BUFFER_BYTES``, ``MAX_CONNECTIONS`` clients at once
(more are closed on accept), and ``command_timeout_s``, the longest a command, once begun, may pause
mid-line or mid-data (then the connection is closed). Refusals, as iiod 0.24 answers them where it
answers with an errno:

    command line too long              -EIO, connection closed (iiod's read_line fails the same way)
    WRITE length > MAX_ATTR_BYTES      -ENOMEM, connection closed (the value that follows cannot be
                                       told from commands)
    WRITE length < 0                   -ENOMEM (iiod: atol wraps to a size malloc refuses)
    WRITE length 0                     -EIO (libiio's local backend: nothing written)
    OPEN samples <= 0, bad mask        -EINVAL
    OPEN above MAX_BUFFER_BYTES        -ENOMEM (the kernel's DMA blocks are no larger)
    READBUF/WRITEBUF length <= 0       -EINVAL (iiod answers 0, which a client takes for success)
    WRITEBUF not whole samples, or     -EINVAL, before any data (libiio then sends none)
      more than the open buffer holds

A server bound beyond loopback says so on stderr and with a RuntimeWarning.

As unkind as a real Pluto (``ideal=True`` turns all of this off, for DSP tests that need RX "now"):

- Kernel RX buffering. ``OPEN`` hands the kernel ``kernel_buffers`` blocks of the buffer's size
  (default 4, libiio's; ``SET <dev> BUFFERS_COUNT <n>`` changes it for the next OPEN, -EBUSY
  while one is open), and recording starts then. ``READBUF`` gives back the block the client read
  last time (libiio's mmap refill does the same) and returns the oldest recorded one. Realtime:
  a recorder fills free blocks at the sample clock; with none free, samples are dropped and the
  RX core's overflow bit is latched. Non-realtime (no wall clock): the kernel records a block the
  instant it gets one, i.e. at OPEN and at each READBUF, so it always holds blocks recorded at the
  previous reads, the worst case of a client slower than the air. Either way a buffer kept open
  across a TX change returns pre-change samples for the next ``kernel_buffers - 1`` reads (none
  with 1 kernel buffer), as a real Pluto does; a new buffer (or BUFFERS_COUNT 1) holds only the
  present.
- The boot DDS tone. The DAC plays the DDS (altvoltage0–3: two tones per rail at 9.28 MHz,
  scale 0.25 each, −6 dBFS together) from boot until a TX buffer is opened or ``raw`` is written
  0 (writing ``raw`` 1 selects it again); the frequency aliases into ±fs/2 like a phase
  accumulator and is rounded to a bin of a 2^16-sample period. After a TX buffer closes the DAC
  outputs zeros. (The cf-axi-dds kernel driver re-selects the DDS when a TX buffer closes, so a
  real Pluto whose DDS is still enabled radiates the tone again: disable it.)
- The radio's impairments (``impairments``, the one model of ``hardware.emulated.impairments``):
  the crystal ``crystal_ppm`` off its nominal 40 MHz, from which the AD9361 derives both LOs and
  the sample clock, believing it to run at ``xo_correction`` Hz: the LOs on the medium are the
  requested ones times crystal / xo_correction, cyclic bursts play stretched by the ratio of the
  radios' clocks, and in realtime mode the sample clock paces at that ratio too. RX samples pass
  the model's receive chain (phase noise, IQ imbalance, DC offset, ADC saturation) before the
  12-bit quantisation.
- TX underflow (realtime, one-shot buffers pushed later than the previous one ran out) latches
  the TX core's underflow bit; a one-shot WRITEBUF in realtime waits while ``kernel_buffers``
  buffers are queued ahead of it.

RF: TX buffers (int16 I/Q, full scale 2^15 - 1) are scaled by the TX gain and put on an RF medium port;
RX buffers are what the port receives, scaled by the RX gain and quantised to the 12-bit ADC
(full scale 2^11). Several emulators attached to one medium hear each other. With the debug
attribute ``loopback`` at 1 (the AD936x digital loopback) RX buffers are the TX samples.

    python -m hardware.emulated.iiod --port 30431      # serves until Ctrl-C
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import select
import signal
import socket
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hardware.addresses import is_loopback
from hardware.config import HardwareConfig
from hardware.drivers.pluto import RX_FULL_SCALE, TX_FULL_SCALE
from hardware.emulated.impairments import Impairments, Receiver, clock_ratio
from hardware.emulated.medium import RfMedium
from hardware.emulated.pluto_model import (
    LIBIIO_VERSION,
    RX_OVERFLOW,
    TX_UNDERFLOW,
    XO_NOMINAL_HZ,
    AttrError,
    PlutoModel,
)
from hardware.emulated.scene import TaskScene
from sim.params import NetworkParams
from sim.units import db_to_amplitude

__all__ = ["IIODEmulator", "serve", "serve_bench", "serve_until_signal"]

DEFAULT_SAMPLE_RATE_HZ = 2e6     # sample rate of a private medium (the bench default)

MAX_LINE_BYTES = 8192            # a command line with its "\r\n": flex's input buffer, the most iiod 0.24 reads for one
MAX_ATTR_BYTES = 0x10000         # an attribute value: the 64 KiB buffer iiod 0.24 reads attributes into (ops.c)
MAX_BUFFER_BYTES = 16 << 20      # a buffer: the ADI kernel's largest DMA block, 16 MiB (iio_dma_buffer_max_block_size,
                                 # drivers/iio/buffer/industrialio-buffer-dma.c); 4 Mi samples of I/Q
CHUNK_SAMPLES = 1 << 16          # a larger READBUF is computed and sent this many samples at a time
MAX_CONNECTIONS = 16             # clients served at once (iiod 0.24 listens with a backlog of 16)
COMMAND_TIMEOUT_S = 10.0         # the longest a command, once begun, may pause mid-line or mid-data, in s
KERNEL_BUFFERS = 4               # kernel blocks per buffer (libiio's default)
MAX_KERNEL_BUFFERS = 64          # BUFFERS_COUNT above this is refused
MAX_KERNEL_BYTES = 4 * MAX_BUFFER_BYTES   # all kernel blocks of one RX buffer (as int16 I/Q words)
DDS_PERIOD = 1 << 16             # samples of the DDS tone's period on the medium

_TX_AIR_ATTRS = {("ad9361-phy", ("out", "voltage0"), "hardwaregain"), ("ad9361-phy", ("out", "altvoltage1"), "frequency"),
                 ("ad9361-phy", "dev", "xo_correction")}
_BUFFER_DEVICES = {"cf-ad9361-lpc": False, "cf-ad9361-dds-core-lpc": True}   # name -> is TX


@dataclass
class _OpenBuffer:
    """A buffer opened on one connection (OPEN ... up to CLOSE)."""

    dev_name: str
    num_samples: int
    mask: int
    cyclic: bool
    conn: socket.socket
    opened_s: float = field(default_factory=time.monotonic)
    samples_done: int = 0
    blocks: deque = field(default_factory=deque)   # RX: recorded blocks (int16 I/Q words [n, 2]), oldest first
    held: bool = False                 # RX: the client holds the block it read last
    free: int = 0                      # RX realtime: blocks the kernel may still record into
    closed: bool = False
    ready: threading.Condition = field(default_factory=threading.Condition)
    recorder: threading.Thread | None = None

    @property
    def channels(self) -> list[int]:
        return [i for i in range(2) if self.mask >> i & 1]


class _Hangup(Exception):
    """Refuse a command with ``-code`` and close the connection: the stream is out of sync."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def _length(text: str) -> int:
    """A length argument as an integer (ValueError if it is none)."""
    return int(text, 10)


def _peer_closed(conn: socket.socket) -> bool:
    """Whether the client has hung up (even with commands of its own still unread)."""
    poller = select.poll()
    poller.register(conn, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(0))


class IIODEmulator:
    """One emulated Pluto on ``host:port`` (port 0 = a free port), its RF side on ``medium``.

    ``realtime``: pace RX buffers to the configured sample rate (off = as fast as possible).
    ``ideal``: no kernel buffering (RX is always "now"), no DDS tone. ``impairments``: the
    radio's figures (default ideal); ``crystal_ppm``, if given, replaces their crystal error, ppm;
    ``xo_correction_hz``: the reference it boots believing (a Pluto reads it from its
    environment); ``seed``: of its phase noise. Use as a context manager, or ``start()`` / ``stop()``. A host other
    than loopback gets a warning (stderr and RuntimeWarning): anyone who reaches the port can
    drive the radio.
    """

    command_timeout_s: float = COMMAND_TIMEOUT_S

    def __init__(self, medium: RfMedium | None = None, name: str = "pluto", host: str = "127.0.0.1",
                 port: int = 0, realtime: bool = False, ideal: bool = False, crystal_ppm: float | None = None,
                 xo_correction_hz: int = XO_NOMINAL_HZ, impairments: Impairments | None = None, seed: int = 0):
        impairments = impairments or Impairments()
        if crystal_ppm is not None:
            impairments = dataclasses.replace(impairments, crystal_ppm=float(crystal_ppm))
        self.impairments = impairments
        self.name = name
        self.model = PlutoModel()
        self.model.write(self.model.device("ad9361-phy"), "dev", "xo_correction", str(xo_correction_hz))
        self.medium = medium if medium is not None else RfMedium(sample_rate_hz=DEFAULT_SAMPLE_RATE_HZ)
        self.rf_port = self.medium.attach(name)
        self.realtime = realtime
        self.ideal = ideal
        self.receiver = Receiver(impairments, self.medium.sample_rate_hz, seed)
        self.kernel_buffers = {dev: KERNEL_BUFFERS for dev in _BUFFER_DEVICES}   # device name -> BUFFERS_COUNT
        self._dds_selected = not ideal                   # the DAC plays the DDS (from boot until a TX buffer opens)
        self._tx_until_s: float | None = None            # realtime: when the queued one-shot TX buffers run out
        self.host = host
        self._listener = socket.create_server((host, port))
        self.port = self._listener.getsockname()[1]
        if not is_loopback(host):
            message = (f"IIOD emulator {name!r} listens on {host}:{self.port}, beyond loopback: "
                       "anyone who can reach that port can drive the emulated radio")
            print(f"WARNING: {message}", file=sys.stderr, flush=True)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        self._lock = threading.Lock()                   # guards model, buffers and RF port
        self._tx_owner: socket.socket | None = None      # connection holding the TX device's buffer
        self._rx_readers: set[socket.socket] = set()     # connections with an RX buffer open
        self._tx: tuple[np.ndarray, bool] | None = None  # TX buffer on air: (iq at full scale 1, cyclic)
        self._loop_pos = 0                               # samples of the TX buffer the digital loopback played
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._accept_thread: threading.Thread | None = None
        self._answering = threading.Event()
        self._answering.set()
        self._stopping = False
        with self._lock:
            self._air()

    @property
    def crystal_ppm(self) -> float:
        return self.impairments.crystal_ppm

    @property
    def uri(self) -> str:
        return f"ip:{self.host}:{self.port}"

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> "IIODEmulator":
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"iiod-{self.name}", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection (clients see a dead server), join all threads."""
        self._stopping = True
        self._answering.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join()
        with self._lock:
            conns = list(self._conns.items())
        for conn, _ in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in conns:
            thread.join()
        self.rf_port.mute()

    def stall(self, stalled: bool = True) -> None:
        """Fault injection: stop answering commands (clients time out) until called with False."""
        if stalled:
            self._answering.clear()
        else:
            self._answering.set()

    def __enter__(self) -> "IIODEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- connections ------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(conn,), name=f"iiod-{self.name}-conn", daemon=True)
            with self._lock:
                if self._stopping:
                    conn.close()
                    return
                if len(self._conns) >= MAX_CONNECTIONS:
                    conn.close()                   # the client sees the connection closed
                    continue
                self._conns[conn] = thread
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        buffers: dict[str, _OpenBuffer] = {}
        try:
            while True:
                conn.settimeout(None)              # the next command may come whenever the client likes,
                if not rfile.peek(1):
                    return
                conn.settimeout(self.command_timeout_s)   # but once begun it may not pause for longer
                line = rfile.readline(MAX_LINE_BYTES)
                words = line.decode("ascii", "replace").split()
                try:
                    if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
                        raise _Hangup(errno.EIO)   # refused without reading the rest of the line
                    if not words:
                        continue                   # empty lines get no reply
                    if not self._wait_answering(conn):
                        return
                    if words[0].upper() == "EXIT":
                        return
                    reply = self._dispatch(words, rfile, buffers, conn)
                except _Hangup as e:
                    conn.sendall(b"%d\n" % -e.code)
                    return
                if reply:
                    conn.sendall(reply)
        except (OSError, ValueError):
            return                                 # client went away or too slow, or stop() shut the socket
        finally:
            with self._lock:
                for buf in buffers.values():
                    self._release(buf)
                self._conns.pop(conn, None)
            for buf in buffers.values():
                if buf.recorder is not None:
                    buf.recorder.join()
            rfile.close()
            conn.close()

    def _wait_answering(self, conn: socket.socket) -> bool:
        """Hold while stalled; False if the server stops or the client hangs up meanwhile."""
        while not self._answering.wait(0.01):
            if _peer_closed(conn):
                return False
        return not self._stopping and not _peer_closed(conn)

    def _dispatch(self, words: list[str], rfile, buffers: dict[str, _OpenBuffer], conn) -> bytes:
        cmd, args = words[0].upper(), words[1:]
        try:
            if cmd == "PRINT":
                xml = self.model.xml(f"Emulated ADALM-Pluto {self.name!r} (project IIOD emulator)").encode()
                return b"%d\n%s\n" % (len(xml), xml)
            if cmd == "VERSION":
                major, minor, git = LIBIIO_VERSION
                return f"{major}.{minor}.{git[:7]:<7}\n".encode()
            if cmd == "TIMEOUT":
                int(args[0])
                return b"0\n"
            if cmd == "READ":
                return self._read(args)
            if cmd == "WRITE":
                return self._write(args, rfile)
            if cmd == "OPEN":
                return self._open(args, buffers, conn)
            if cmd == "CLOSE":
                return self._close(args, buffers)
            if cmd == "READBUF":
                return self._readbuf(args, buffers, conn)
            if cmd == "WRITEBUF":
                return self._writebuf(args, rfile, buffers, conn)
            if cmd == "GETTRIG":
                self.model.device(args[0])
                return b"%d\n" % -errno.ENOENT
            if cmd == "SET" and len(args) == 3 and args[1].upper() == "BUFFERS_COUNT":
                return self._set_buffers_count(args)
            return b"%d\n" % -errno.EINVAL             # ZPRINT, SETTRIG, BINARY, unknown
        except AttrError as e:
            return b"%d\n" % -e.code
        except (IndexError, ValueError, OverflowError):
            return b"%d\n" % -errno.EINVAL

    # --- attributes -------------------------------------------------------------------
    def _section(self, args: list[str]):
        """Parse 'dev [DEBUG|BUFFER|INPUT ch|OUTPUT ch] rest...' into (device, section, rest)."""
        dev = self.model.device(args[0])
        kind = args[1].upper() if len(args) > 1 else ""
        if kind in ("INPUT", "OUTPUT"):
            ch = self.model.channel(dev, args[2], kind == "OUTPUT")
            return dev, ("out" if kind == "OUTPUT" else "in", ch.id), args[3:]
        if kind in ("DEBUG", "BUFFER"):
            return dev, kind.lower(), args[2:]
        return dev, "dev", args[1:]

    def _read(self, args: list[str]) -> bytes:
        with self._lock:
            dev, section, rest = self._section(args)
            if rest:
                value = self.model.read(dev, section, rest[0]).encode()
                return b"%d\n%s\n" % (len(value), value)
            values = [self.model.read(dev, section, n).encode() + b"\0" for n in self.model.names(dev, section)]
        body = b"".join(len(v).to_bytes(4, "big") + v + b"\0" * (-len(v) % 4) for v in values)
        return b"%d\n%s\n" % (len(body), body)

    def _write(self, args: list[str], rfile) -> bytes:
        num_bytes = _length(args[-1])
        if num_bytes > MAX_ATTR_BYTES:
            raise _Hangup(errno.ENOMEM)
        if num_bytes <= 0:
            return b"%d\n" % -(errno.ENOMEM if num_bytes < 0 else errno.EIO)
        data = rfile.read(num_bytes)
        if len(data) != num_bytes:
            raise OSError("client closed during WRITE")
        with self._lock:
            dev, section, rest = self._section(args[:-1])
            if not rest:
                return b"%d\n" % -errno.ENOSYS           # write-all is not emulated
            self.model.write(dev, section, rest[0], data.split(b"\0", 1)[0].decode("ascii", "replace"))
            dds = dev.name == "cf-ad9361-dds-core-lpc" and section != "debug"
            if dds and rest[0] == "raw":
                self._dds_selected = self.model.dds_enabled and not self.ideal
            if (dds or (dev.name, section, rest[0]) in _TX_AIR_ATTRS) and (self._tx is None or self._tx[1]):
                self._air()
        return b"%d\n" % num_bytes

    # --- buffers ----------------------------------------------------------------------
    def _open(self, args: list[str], buffers: dict[str, _OpenBuffer], conn) -> bytes:
        dev = self.model.device(args[0])
        num_samples, mask = _length(args[1]), int(args[2], 16)
        cyclic = len(args) > 3 and args[3].upper() == "CYCLIC"
        if dev.name not in _BUFFER_DEVICES or num_samples <= 0 or len(args[2]) != 8 or not 0 < mask < 4:
            return b"%d\n" % -errno.EINVAL
        if cyclic and not _BUFFER_DEVICES[dev.name]:
            return b"%d\n" % -errno.EINVAL
        if num_samples * 2 * mask.bit_count() > MAX_BUFFER_BYTES:
            return b"%d\n" % -errno.ENOMEM
        is_tx = _BUFFER_DEVICES[dev.name]
        buf = _OpenBuffer(dev.name, num_samples, mask, cyclic, conn)
        kernel = not is_tx and not self.ideal
        if kernel and num_samples * 4 * self.kernel_buffers[dev.name] > MAX_KERNEL_BYTES:
            return b"%d\n" % -errno.ENOMEM
        with self._lock:
            if is_tx:
                if self._tx_owner is not None:
                    return b"%d\n" % -errno.EBUSY
                self._tx_owner = conn
                self._tx_until_s = None
                self._dds_selected = False          # the DAC now plays the DMA buffer (zeros until data)
                self._air()
            else:
                self._rx_readers.add(conn)
        replaced = buffers.get(dev.name)
        buffers[dev.name] = buf
        if replaced is not None:
            self._end_recording(replaced)
        if kernel and self.realtime:                # the kernel records from now, at the sample clock
            buf.free = self.kernel_buffers[dev.name]
            buf.recorder = threading.Thread(target=self._record_loop, args=(buf,), daemon=True,
                                            name=f"iiod-{self.name}-rx")
            buf.recorder.start()
        elif kernel:                                # every block recorded the moment the kernel has it
            for _ in range(self.kernel_buffers[dev.name]):
                buf.blocks.append(self._record(buf))
        return b"0\n"

    def _set_buffers_count(self, args: list[str]) -> bytes:
        """SET <dev> BUFFERS_COUNT <n>: kernel blocks of the device's next buffer."""
        dev = self.model.device(args[0])
        count = _length(args[2])
        if dev.name not in _BUFFER_DEVICES or not 1 <= count <= MAX_KERNEL_BUFFERS:
            return b"%d\n" % -errno.EINVAL
        with self._lock:
            busy = self._tx_owner is not None if _BUFFER_DEVICES[dev.name] else bool(self._rx_readers)
            if busy:
                return b"%d\n" % -errno.EBUSY
            self.kernel_buffers[dev.name] = count
        return b"0\n"

    def _close(self, args: list[str], buffers: dict[str, _OpenBuffer]) -> bytes:
        dev = self.model.device(args[0])
        buf = buffers.pop(dev.name, None)
        if buf is None:
            return b"%d\n" % -errno.EBADF
        with self._lock:
            self._release(buf)
        if buf.recorder is not None:
            buf.recorder.join()
        return b"0\n"

    def _release(self, buf: _OpenBuffer) -> None:
        """Forget a buffer (caller holds the lock); a TX buffer going away stops transmission."""
        if _BUFFER_DEVICES[buf.dev_name]:
            self._tx_owner = None
            self._tx = None
            self._air()
        else:
            self._rx_readers.discard(buf.conn)
            self._end_recording(buf, join=False)

    @staticmethod
    def _end_recording(buf: _OpenBuffer, join: bool = True) -> None:
        """Stop an RX buffer's recorder (join it unless the caller holds the emulator's lock)."""
        with buf.ready:
            buf.closed = True
            buf.ready.notify_all()
        if join and buf.recorder is not None:
            buf.recorder.join()

    def _readbuf(self, args: list[str], buffers: dict[str, _OpenBuffer], conn) -> bytes:
        """Send up to one buffer of samples, CHUNK_SAMPLES at a time (after one header)."""
        dev = self.model.device(args[0])
        buf = buffers.get(dev.name)
        if buf is None or _BUFFER_DEVICES[dev.name]:
            return b"%d\n" % -errno.EBADF
        bytes_per_sample = 2 * len(buf.channels)
        num_samples = min(_length(args[1]) // bytes_per_sample, buf.num_samples)
        if num_samples <= 0:
            return b"%d\n" % -errno.EINVAL
        head = b"%d\n%08x\n" % (num_samples * bytes_per_sample, buf.mask)
        if self.ideal:
            for start in range(0, num_samples, CHUNK_SAMPLES):
                conn.sendall(head + self._rx_samples(buf, min(CHUNK_SAMPLES, num_samples - start)))
                head = b""
            return b""
        block = self._next_block(buf)
        if block is None:
            return b"%d\n" % -errno.EBADF            # the buffer closed meanwhile (server stopping)
        for start in range(0, num_samples, CHUNK_SAMPLES):
            conn.sendall(head + block[start:min(start + CHUNK_SAMPLES, num_samples)][:, buf.channels].tobytes())
            head = b""
        return b""

    def _next_block(self, buf: _OpenBuffer) -> np.ndarray | None:
        """Give back the block the client held (the kernel records into it again) and take the oldest
        recorded one, waiting for it in realtime."""
        if not self.realtime:
            if buf.held:
                buf.blocks.append(self._record(buf))
            buf.held = True
            return buf.blocks.popleft()
        with buf.ready:
            if buf.held:
                buf.free += 1
                buf.held = False
            while not buf.blocks:
                if buf.closed or self._stopping:
                    return None
                buf.ready.wait(0.1)
            buf.held = True
            return buf.blocks.popleft()

    def _record_loop(self, buf: _OpenBuffer) -> None:
        """Realtime kernel: at each block period record into a free block (claimed at the period's
        start, complete at its end), or drop the period and latch the overflow bit."""
        due_s, pending = buf.opened_s, None
        while True:
            with buf.ready:
                if pending is not None:
                    buf.blocks.append(pending)
                    buf.ready.notify_all()
                if buf.closed or self._stopping:
                    return
                claimed = buf.free > 0
                buf.free -= claimed
            if claimed:
                pending = self._record(buf)
            else:
                pending = None
                with self._lock:
                    self.model.flag_status("cf-ad9361-lpc", RX_OVERFLOW)
            due_s += buf.num_samples / self._sample_clock_hz()
            with buf.ready:
                buf.ready.wait_for(lambda: buf.closed or self._stopping, max(0.0, due_s - time.monotonic()))

    def _record(self, buf: _OpenBuffer) -> np.ndarray:
        """One block of what the ADC hears now: int16 I/Q words [num_samples, 2]."""
        out = np.empty((buf.num_samples, 2), "<i2")
        for start in range(0, buf.num_samples, CHUNK_SAMPLES):
            n = min(CHUNK_SAMPLES, buf.num_samples - start)
            out[start:start + n] = self._adc(n)
        return out

    def _rx_samples(self, buf: _OpenBuffer, num_samples: int) -> bytes:
        """Ideal RX: the next num_samples of an RX buffer as the ADC's int16 words, paced if realtime."""
        if self.realtime:
            due = buf.opened_s + (buf.samples_done + num_samples) / self._sample_clock_hz()
            time.sleep(max(0.0, due - time.monotonic()))
        buf.samples_done += num_samples
        return self._adc(num_samples)[:, buf.channels].tobytes()

    def _adc(self, num_samples: int) -> np.ndarray:
        """The next num_samples the ADC converts: int16 I/Q words [num_samples, 2]."""
        with self._lock:
            if self.model.digital_loopback:
                rx, scale = self._looped_back(num_samples), RX_FULL_SCALE
            else:
                rx = self.receiver.apply(self.rf_port.receive(num_samples, self._rf_state())
                                         * db_to_amplitude(self.model.rx_gain_db))      # [num_samples], full scale 1
                scale = RX_FULL_SCALE
        iq = np.empty((num_samples, 2), np.float64)
        iq[:, 0], iq[:, 1] = rx.real, rx.imag
        return np.clip(np.rint(iq * scale), -RX_FULL_SCALE, RX_FULL_SCALE - 1).astype("<i2")

    def _looped_back(self, num_samples: int) -> np.ndarray:
        """The AD936x digital loopback: the TX samples themselves, before DAC, gain and medium."""
        k = self._loop_pos + np.arange(num_samples)
        self._loop_pos += num_samples
        if self._tx is None:
            return np.zeros(num_samples, np.complex64)
        iq, cyclic = self._tx
        if cyclic:
            return iq[k % iq.size]
        return np.where(k < iq.size, iq[np.minimum(k, iq.size - 1)], 0)

    def _writebuf(self, args: list[str], rfile, buffers: dict[str, _OpenBuffer], conn) -> bytes:
        dev = self.model.device(args[0])
        num_bytes = _length(args[1])
        buf = buffers.get(dev.name)
        if buf is None or not _BUFFER_DEVICES[dev.name]:
            return b"%d\n" % -errno.EBADF               # before any data: libiio then sends none
        bytes_per_sample = 2 * len(buf.channels)
        if not 0 < num_bytes <= buf.num_samples * bytes_per_sample or num_bytes % bytes_per_sample:
            return b"%d\n" % -errno.EINVAL
        conn.sendall(b"0\n")                            # the data may already be on its way
        data = rfile.read(num_bytes)
        if len(data) != num_bytes:
            raise OSError("client closed during WRITEBUF")
        samples = np.frombuffer(data, "<i2").astype(np.float32) / TX_FULL_SCALE
        samples = samples.reshape(-1, len(buf.channels))                     # [num_samples, channels]
        iq = np.zeros(len(samples), np.complex64)
        for col, ch in enumerate(buf.channels):
            iq += samples[:, col] * (1 if ch == 0 else 1j)
        with self._lock:
            self._tx = (iq, buf.cyclic)
            self._loop_pos = 0
            self._air()
            wait_s = 0.0 if buf.cyclic or not self.realtime or self.ideal else self._queue_one_shot(len(iq))
        time.sleep(wait_s)
        return b"%d\n" % num_bytes

    def _queue_one_shot(self, num_samples: int) -> float:
        """Realtime one-shot TX: latch underflow if the queue ran dry; returns how long the push
        blocks (while kernel_buffers buffers are queued ahead). Caller holds the lock."""
        now_s = time.monotonic()
        duration_s = num_samples / self._sample_clock_hz()
        if self._tx_until_s is not None and now_s > self._tx_until_s:
            self.model.flag_status("cf-ad9361-dds-core-lpc", TX_UNDERFLOW)
        self._tx_until_s = max(now_s, self._tx_until_s or now_s) + duration_s
        return max(0.0, self._tx_until_s - self.kernel_buffers["cf-ad9361-dds-core-lpc"] * duration_s - now_s)

    def _air(self) -> None:
        """Put on the medium what the DAC plays (caller holds the lock): the TX buffer, else the DDS
        tone while it is selected and enabled, else nothing; at the current TX gain and LO.

        Called again when the TX gain, LO or DDS changes under a cyclic buffer (its phase restarts).
        """
        gain = db_to_amplitude(self.model.tx_gain_db)
        if self._tx is not None:
            iq, cyclic = self._tx
            self.rf_port.transmit((iq * gain).astype(np.complex64), cyclic, self._rf_state())
        elif self._dds_selected and self._tx_owner is None and self.model.dds_enabled:
            self.rf_port.transmit((self._dds_tone() * gain).astype(np.complex64), True, self._rf_state())
        else:
            self.rf_port.mute()

    def _dds_tone(self) -> np.ndarray:
        """One DDS_PERIOD of the DDS output at full scale 1 (each tone aliased into ±fs/2 and rounded
        to a bin of the period). complex [DDS_PERIOD]"""
        fs = self.model.sample_rate_hz
        n = np.arange(DDS_PERIOD)
        rails = {"I": np.zeros(DDS_PERIOD), "Q": np.zeros(DDS_PERIOD)}
        for rail, f_hz, scale, phase_deg in self.model.dds_tones():
            k = round(((f_hz + fs / 2) % fs - fs / 2) * DDS_PERIOD / fs)
            rails[rail] += scale * np.sin(2 * np.pi * k * n / DDS_PERIOD + np.deg2rad(phase_deg))
        return rails["I"] + 1j * rails["Q"]

    def _clock_ratio(self) -> float:
        """Actual over believed reference frequency: what every clock derived from the crystal is off by."""
        return clock_ratio(self.crystal_ppm, (self.model.xo_correction_hz / XO_NOMINAL_HZ - 1) * 1e6)

    def _sample_clock_hz(self) -> float:
        return self.model.sample_rate_hz * self._clock_ratio()

    def _rf_state(self) -> dict:
        """The LOs as they are on air (the crystal's error and xo_correction applied)."""
        ratio = self._clock_ratio()
        return {"tx_lo_hz": self.model.tx_lo_hz * ratio, "rx_lo_hz": self.model.rx_lo_hz * ratio, "clock_ratio": ratio}


def serve(num_radios: int = 1, port: int = 0, host: str = "127.0.0.1", realtime: bool = False,
          sample_rate_hz: float = DEFAULT_SAMPLE_RATE_HZ, noise_fs: float = 1e-10, link_gain_db: float = 0.0,
          interferers: tuple[tuple[float, float, float], ...] = (), seed: int = 0,
          ideal: bool = False) -> list[IIODEmulator]:
    """Start num_radios emulated Plutos (pluto0, pluto1, ...) sharing one new medium.

    Every link between them (a radio hearing itself included) has ``link_gain_db``; each
    interferer (f_lo_hz, f_hi_hz, power_fs) is heard by every radio at 0 dB. Crystals are exact.
    """
    medium = RfMedium(sample_rate_hz=sample_rate_hz, noise_fs=noise_fs, seed=seed)
    names = [f"pluto{i}" for i in range(num_radios)]
    emulators = [IIODEmulator(medium, name=n, host=host, port=port + i if port else 0, realtime=realtime, ideal=ideal)
                 for i, n in enumerate(names)]
    for tx in names:
        for rx in names:
            medium.set_link(tx, rx, gain_db=link_gain_db)
    for i, (f_lo_hz, f_hi_hz, power_fs) in enumerate(interferers):
        medium.set_interferer(f"interferer{i}", f_lo_hz, f_hi_hz, power_fs, {n: 0.0 for n in names})
    return [emu.start() for emu in emulators]


def serve_bench(hw: HardwareConfig, params: NetworkParams, host: str = "127.0.0.1", realtime: bool = False,
                seed: int = 0, ideal: bool = False,
                calibration_ppm: float | None = None) -> tuple[list[IIODEmulator], HardwareConfig]:
    """Emulate the radios of a bench config: one Pluto per radio entry, all on one medium set as
    the mock bench's (``hardware.emulated.scene.TaskScene``): N0 in every band at the radios' samples under
    ``full_scale_dbm``, and each UE radio hearing the BS radios with its ``link_gain_db``.

    Each Pluto has the bench's impairments for its entry (``hardware.impairments.for_radio``: a
    crystal drawn from ±crystal_ppm unless the entry's cfo_hz overrides it); ``ideal`` turns them,
    the kernel buffering and the DDS tone off. By default (``calibration_ppm`` None) every Pluto
    boots at the nominal 40 MHz reference, so two sit up to 2·crystal_ppm apart (~120 kHz at
    2.4 GHz, far beyond the pilots' ±fs/(2P)) and the measured backend's start-up calibration must
    find and correct them. With ``calibration_ppm`` each boots with xo_correction = its crystal's
    frequency within ±calibration_ppm, as a bench whose owner stored each Pluto's measured
    reference.

    Returns the started emulators and ``hw`` with every radio's uri pointing at its emulator.
    """
    medium = RfMedium(hw.sample_rate_hz, seed=seed)
    rng = np.random.default_rng([seed, 0x9A3])
    emulators = {}
    for e in hw.radios:
        imp = Impairments() if ideal else Impairments(**hw.impairments.for_radio(e, hw.center_hz))
        ppm = imp.crystal_ppm
        stored_ppm = 0.0 if calibration_ppm is None or not ppm else ppm + float(rng.uniform(-calibration_ppm,
                                                                                            calibration_ppm))
        emulators[e.name] = IIODEmulator(medium, name=e.name, host=host, realtime=realtime, ideal=ideal,
                                         impairments=imp, seed=hw.impairments.radio_seed(e),
                                         xo_correction_hz=round(XO_NOMINAL_HZ * (1 + stored_ppm * 1e-6)))
    TaskScene(medium, hw, hw.pilot_plan(params.num_bs, params.num_bands), params)
    radios = tuple(dataclasses.replace(e, uri=emulators[e.name].uri) for e in hw.radios)
    return [emu.start() for emu in emulators.values()], dataclasses.replace(hw, radios=radios)


def _interferer(text: str) -> tuple[float, float, float]:
    f_lo_hz, f_hi_hz, power_fs = (float(v) for v in text.split(","))
    return f_lo_hz, f_hi_hz, power_fs


def main(argv: list[str] | None = None) -> None:
    """Serve emulated Plutos sharing one RF medium until SIGINT/SIGTERM; prints one URI a line."""
    ap = argparse.ArgumentParser(prog="python -m hardware.emulated.iiod", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1; any other is warned about)")
    ap.add_argument("--port", type=int, default=0, help="TCP port of the first radio, the next ones follow (0 = free ports)")
    ap.add_argument("--num-radios", type=int, default=1, help="emulated Plutos sharing one medium")
    ap.add_argument("--realtime", action="store_true", help="pace RX buffers to the sample rate")
    ap.add_argument("--sample-rate-hz", type=float, default=DEFAULT_SAMPLE_RATE_HZ,
                    help="sample rate of the medium (set the radios to the same rate)")
    ap.add_argument("--noise-fs", type=float, default=1e-10, help="receiver noise power per sample, full scale = 1")
    ap.add_argument("--link-gain-db", type=float, default=0.0, help="power gain of every link in dB")
    ap.add_argument("--interferer", type=_interferer, action="append", default=[], metavar="F_LO_HZ,F_HI_HZ,POWER_FS",
                    help="external band-limited noise (RF Hz, full scale = 1) heard by every radio; repeatable")
    ap.add_argument("--seed", type=int, default=0, help="seed of the noise")
    ap.add_argument("--ideal", action="store_true", help="no kernel RX buffering and no boot DDS tone")
    args = ap.parse_args(argv)
    serve_until_signal(serve(args.num_radios, args.port, args.host, args.realtime, args.sample_rate_hz,
                             args.noise_fs, args.link_gain_db, tuple(args.interferer), args.seed, args.ideal))


def serve_until_signal(emulators: list[IIODEmulator]) -> None:
    """Print every emulator's URI, one a line, serve until SIGINT/SIGTERM, then stop them."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    for emu in emulators:
        print(emu.uri, flush=True)
    done.wait()
    for emu in emulators:
        emu.stop()


if __name__ == "__main__":
    main()
