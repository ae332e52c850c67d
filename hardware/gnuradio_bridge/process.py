"""Start the bridge flowgraph as its own process (system Python with GNU Radio) and stop it.

    with FlowgraphProcess("emulate", tx=["bs0"], rx=["bs0", "ue0"], noise_voltage=1e-3) as fg:
        entry = RadioEntry(name="ue0", driver="gnuradio", role="ue", **fg.endpoints("ue0"))
        radio = ZmqRadio("ue0", limits, entry)

``uhd_flowgraph(hw, entry)`` builds the flowgraph of one USRP entry; the emulator's is
``hardware.emulated.bridge.emulator_flowgraph``; ``testbed.bridge`` picks and starts those a
config needs. Ports are picked free on 127.0.0.1 unless given; an address beyond loopback needs the
CURVE options (``curve_server_secret``, ``curve_clients``). ``start()`` waits for the flowgraph's READY line
and raises ``BridgeStartError`` with its last output lines if it exits first (no GNU Radio, "no
USRP found", a port taken). ``stop()`` sends SIGTERM, then SIGKILL after a grace period.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from hardware.addresses import is_loopback
from hardware.config import HardwareConfig, RadioEntry
from hardware.radio import RadioError

__all__ = ["FlowgraphProcess", "BridgeStartError", "GNURADIO_PYTHON", "FLOWGRAPH", "free_port", "free_ports", "entry_ports",
           "host_of", "uhd_flowgraph"]

GNURADIO_PYTHON = os.environ.get("TESTBED_GNURADIO_PYTHON", "/usr/bin/python3")  # Debian's GNU Radio bindings
FLOWGRAPH = Path(__file__).with_name("flowgraph.py")
_OPTIONS = ("sample_rate_hz", "center_hz", "tx_gain_db", "rx_gain_db", "max_tx_gain_db", "heartbeat_timeout_s",
            "noise_voltage", "link_gain_db", "rx_link_gain_db", "rx_link_cfo_hz", "rx_link_delay", "link", "num_taps",
            "seed", "device_args", "curve_server_secret", "curve_clients", "crystal_ppm", "phase_noise_deg",
            "phase_noise_corner_hz", "iq_gain_db", "iq_phase_deg", "dc_offset_dbfs", "ideal", "realtime", "overflow_every",
            "underflow_every", "fault_samples", "clock_source", "time_source", "max_lo_correction_hz")


class BridgeStartError(RadioError):
    """The flowgraph process did not reach READY."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on host right now (the OS may hand it out again later)."""
    return free_ports([host])[0]


def free_ports(hosts: list[str]) -> list[int]:
    """One TCP port free right now on each of ``hosts``, all different: every socket is held until
    all are chosen (ports picked one by one, each released at once, can repeat)."""
    socks = [socket.socket() for _ in hosts]
    try:
        for sock, host in zip(socks, hosts):
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class FlowgraphProcess:
    """One flowgraph process. ``options``: the flowgraph's flags with underscores
    (sample_rate_hz, noise_voltage, heartbeat_timeout_s, max_tx_gain_db, device_args,
    curve_server_secret and curve_clients (CURVE keys, required beyond loopback), ...)."""

    def __init__(self, mode: str, tx: list[str], rx: list[str], *, address: str = "127.0.0.1",
                 client_address: str = "127.0.0.1", ports: dict[str, int] | None = None,
                 python: str = GNURADIO_PYTHON, ready_timeout_s: float = 30.0, **options):
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"unknown flowgraph option(s) {unknown}; allowed: {list(_OPTIONS)}")
        keyed = options.get("curve_server_secret") and options.get("curve_clients")
        for key, host in (("address", address), ("client_address", client_address)):
            if not keyed and not is_loopback(host):
                raise ValueError(f"flowgraph {key} {host} is beyond loopback: give curve_server_secret and "
                                 "curve_clients (testbed keys generate DIR)")
        self.mode, self.tx, self.rx = mode, list(tx), list(rx)
        self.address, self.client_address = address, client_address
        self.fixed_ports = dict(ports or {})
        self.python = python
        self.ready_timeout_s = ready_timeout_s
        self.options = options
        self.proc: subprocess.Popen | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=200)
        self.ready: dict | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> "FlowgraphProcess":
        """Spawn and wait for READY (a second try on new ports if a picked port was taken)."""
        for attempt in range(2):
            self._ports()
            try:
                return self._spawn()
            except BridgeStartError as err:
                if attempt or self.fixed_ports or "Address already in use" not in str(err):
                    raise

    def _ports(self) -> None:
        hosts = {"control": self.address, **{f"tx:{n}": self.client_address for n in self.tx},
                 **{f"rx:{n}": self.address for n in self.rx}}
        free = [key for key in hosts if not self.fixed_ports.get(key)]
        ports = {**{k: self.fixed_ports[k] for k in hosts if k not in free},
                 **dict(zip(free, free_ports([hosts[k] for k in free])))}
        self.control_port = ports["control"]
        self.tx_ports = {n: ports[f"tx:{n}"] for n in self.tx}
        self.rx_ports = {n: ports[f"rx:{n}"] for n in self.rx}

    def _command(self) -> list[str]:
        cmd = [self.python, str(FLOWGRAPH), self.mode, "--control-port", str(self.control_port),
               "--address", self.address, "--client-address", self.client_address, "--exit-with-parent"]
        cmd += [a for n, p in self.tx_ports.items() for a in ("--tx", f"{n}={p}")]
        cmd += [a for n, p in self.rx_ports.items() for a in ("--rx", f"{n}={p}")]
        for key, value in self.options.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, dict):
                cmd += [a for n, v in value.items() for a in (flag, f"{n}={v}")]
            elif isinstance(value, list):
                cmd += [a for v in value for a in (flag, v)]
            elif isinstance(value, bool):
                cmd += [flag] if value else []
            elif value is not None:
                cmd += [flag, str(value)]
        return cmd

    def _spawn(self) -> "FlowgraphProcess":
        self.output.clear()
        try:
            self.proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, bufsize=1)
        except OSError as err:
            raise BridgeStartError(f"cannot run {self.python} (GNU Radio's Python): {err}") from err
        ready = threading.Event()
        threading.Thread(target=self._read_output, args=(self.proc, ready), daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout_s
        while not ready.wait(0.02):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                code = self.proc.poll()
                self.stop()
                ready.wait(0.5)       # let the reader take the last lines
                why = f"exited with code {code}" if code is not None else f"not READY after {self.ready_timeout_s:g} s"
                raise BridgeStartError(f"the {self.mode} flowgraph {why}: " + " | ".join(list(self.output)[-6:]))
        return self

    def _read_output(self, proc: subprocess.Popen, ready: threading.Event) -> None:
        for line in proc.stdout:
            line = line.rstrip()
            if line.startswith("READY ") and not ready.is_set():
                self.ready = json.loads(line[len("READY "):])
                ready.set()
            else:
                self.output.append(line)

    def stop(self, grace_s: float = 3.0) -> int | None:
        """SIGTERM (and SIGCONT, should it be stopped), then SIGKILL after grace_s; returns the
        exit code. Idempotent."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def signal(self, sig: int) -> None:
        """Send a signal to the running flowgraph (tests: SIGKILL, SIGSTOP, SIGCONT)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def exit_report(self) -> str:
        """How the flowgraph ended, with its last output lines (for error messages)."""
        code = None if self.proc is None else self.proc.poll()
        if code is None:
            return f"the {self.mode} flowgraph is running"
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        last = " | ".join(list(self.output)[-3:])
        return f"the {self.mode} flowgraph {how}" + (f" ({last})" if last else "")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "FlowgraphProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- addresses --------------------------------------------------------------------------
    @property
    def control_address(self) -> str:
        return f"tcp://{self.address}:{self.control_port}"

    def endpoints(self, node: str) -> dict[str, str]:
        """The radio-entry fields of one node: control_address, tx_address, rx_address."""
        if node not in self.tx_ports and node not in self.rx_ports:
            raise KeyError(f"the flowgraph has no node {node!r}; nodes: {sorted({*self.tx, *self.rx})}")
        tx_port = self.tx_ports.get(node)
        return {"control_address": self.control_address,
                "tx_address": f"tcp://{self.client_address}:{tx_port}" if tx_port else "",
                "rx_address": f"tcp://{self.address}:{self.rx_ports[node]}" if node in self.rx_ports else ""}


def _port(address: str) -> int:
    """The port of a ZMQ endpoint, 0 if it has none."""
    return (urlsplit(address).port or 0) if address else 0


def host_of(address: str) -> str:
    """The host of a ZMQ endpoint, 127.0.0.1 if it is empty."""
    return (urlsplit(address).hostname or "127.0.0.1") if address else "127.0.0.1"


def entry_ports(entries: Sequence[RadioEntry]) -> tuple[str, dict[str, int]]:
    """The flowgraph's host and the ports the entries name (every radio is a TX+RX node)."""
    controls = {e.control_address for e in entries}
    if len(controls) > 1:
        raise ValueError(f"radios {[e.name for e in entries]} share one flowgraph but name different "
                         f"control_address values {sorted(controls)}")
    control = controls.pop()
    ports = {"control": _port(control)}
    ports.update({f"tx:{e.name}": _port(e.tx_address) for e in entries})
    ports.update({f"rx:{e.name}": _port(e.rx_address) for e in entries})
    return host_of(control), {k: v for k, v in ports.items() if v}


def uhd_flowgraph(hw: HardwareConfig, entry: RadioEntry, **overrides) -> FlowgraphProcess:
    """The uhd-mode flowgraph (not started) of one USRP radio entry (``device_args`` set): its
    references (``clock_source``, ``time_source``), and LO corrections bounded by ``max_cfo_hz``
    (no calibration asks for more than it can measure)."""
    address, ports = entry_ports([entry])
    options = dict(device_args=entry.device_args, sample_rate_hz=hw.sample_rate_hz, center_hz=hw.center_hz,
                   tx_gain_db=min(hw.tx_gain_db, hw.max_tx_gain_db), rx_gain_db=hw.rx_gain_db,
                   max_tx_gain_db=hw.max_tx_gain_db, heartbeat_timeout_s=max(2.0, 2 * hw.timeout_s),
                   clock_source=entry.clock_source, time_source=entry.time_source, max_lo_correction_hz=hw.max_cfo_hz)
    options.update(overrides)
    return FlowgraphProcess("uhd", tx=[entry.name], rx=[entry.name], address=address,
                            client_address=host_of(entry.tx_address), ports=ports, **options)
