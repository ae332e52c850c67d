"""The IIOD emulator against the real libiio tools, and its protocol edge cases over a raw socket."""
from __future__ import annotations

import errno
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import warnings

import numpy as np
import pytest

from hardware.emulated.iiod import MAX_ATTR_BYTES, MAX_BUFFER_BYTES, MAX_LINE_BYTES, IIODEmulator, serve
from hardware.drivers.pluto import RX_FULL_SCALE, TX_FULL_SCALE


class Raw:
    """A bare IIOD text-protocol client."""

    def __init__(self, emu: IIODEmulator):
        self.sock = socket.create_connection((emu.host, emu.port), timeout=5)
        self.rfile = self.sock.makefile("rb")

    def send(self, line: str, data: bytes = b"") -> None:
        self.sock.sendall(line.encode() + b"\r\n" + data)

    def integer(self) -> int:
        return int(self.rfile.readline())

    def cmd(self, line: str, data: bytes = b"") -> int:
        self.send(line, data)
        return self.integer()

    def read_attr(self, line: str) -> str:
        n = self.cmd(line)
        assert n >= 0, f"{line} -> {n}"
        value = self.rfile.read(n + 1)
        assert value.endswith(b"\n")
        return value[:-1].decode()

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


@pytest.fixture
def raw(pluto_emulator):
    client = Raw(pluto_emulator)
    yield client
    client.close()


def iio(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


# --- the real libiio tools --------------------------------------------------------------
def test_iio_info_lists_the_emulated_pluto(pluto_emulator):
    r = iio("iio_info", "-u", pluto_emulator.uri)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""                     # no DTD validation complaints
    out = r.stdout
    assert "IIO context has 4 devices" in out
    for line in ("iio:device0: ad9361-phy", "iio:device1: xadc",
                 "iio:device2: cf-ad9361-dds-core-lpc (buffer capable)",
                 "iio:device3: cf-ad9361-lpc (buffer capable)",
                 "altvoltage0: RX_LO (output)", "altvoltage1: TX_LO (output)",
                 "voltage0:  (input, index: 0, format: le:S12/16>>0)",
                 "voltage1:  (output, index: 1, format: le:S16/16>>0)",
                 "hardwaregain_available value: [-89.750000 0.250000 0.000000]",
                 "gain_control_mode value: slow_attack", "hw_model: Analog Devices PlutoSDR",
                 "Backend version: 0.24"):
        assert line in out, line


def test_iio_attr_round_trip_and_out_of_range(pluto_emulator):
    uri = pluto_emulator.uri
    r = iio("iio_attr", "-u", uri, "-c", "-o", "ad9361-phy", "altvoltage0", "frequency", "915000000")
    assert r.returncode == 0 and r.stdout.strip() == "915000000"
    assert pluto_emulator.model.rx_lo_hz == 915_000_000
    r = iio("iio_attr", "-u", uri, "-c", "-o", "ad9361-phy", "altvoltage0", "frequency", "6000000000")
    assert r.returncode != 0 and "Invalid argument (22)" in r.stdout + r.stderr
    assert pluto_emulator.model.rx_lo_hz == 915_000_000
    r = iio("iio_attr", "-u", uri, "-D", "ad9361-phy", "loopback")
    assert r.returncode == 0 and r.stdout.strip() == "0"
    r = iio("iio_attr", "-u", uri, "-d", "ad9361-phy")   # device attributes, read in one go
    assert r.returncode == 0 and "attr 'ensm_mode', value :'fdd'" in r.stdout


# --- protocol edge cases ----------------------------------------------------------------
def test_print_version_timeout_and_empty_lines(raw, pluto_emulator):
    raw.send("")                                        # no reply to an empty line
    raw.send("   ")
    n = raw.cmd("PRINT")
    xml = raw.rfile.read(n + 1)
    assert xml.startswith(b"<?xml") and xml.endswith(b"</context>\n")
    assert raw.cmd("ZPRINT") == -errno.EINVAL             # a zstd client falls back to PRINT
    raw.send("VERSION")
    assert raw.rfile.readline() == b"0.24.c4498c2\n"
    assert raw.cmd("TIMEOUT 2500") == 0
    assert raw.cmd("TIMEOUT soon") == -errno.EINVAL
    assert raw.cmd("FROBNICATE x") == -errno.EINVAL
    assert raw.cmd("GETTRIG iio:device3") == -errno.ENOENT
    assert raw.cmd("GETTRIG iio:device9") == -errno.ENODEV


def test_read_errors_and_lookup_by_name(raw):
    assert raw.cmd("READ iio:device9 calib_mode") == -errno.ENODEV
    assert raw.cmd("READ ad9361-phy nonsense") == -errno.ENOENT
    assert raw.cmd("READ ad9361-phy INPUT voltage7 hardwaregain") == -errno.ENOENT
    assert raw.read_attr("READ ad9361-phy OUTPUT RX_LO frequency") == "2400000000"   # channel by name
    assert raw.read_attr("READ iio:device0 INPUT voltage0 hardwaregain") == "71.000000 dB"
    assert raw.read_attr("READ iio:device0 DEBUG loopback") == "0"
    assert raw.read_attr("READ iio:device3 BUFFER data_available") == "0"


def test_read_all_attributes_layout(raw):
    """Without an attribute name: per attribute a big-endian length and the NUL-terminated value, padded to 4."""
    n = raw.cmd("READ iio:device0 OUTPUT altvoltage1")
    body = raw.rfile.read(n + 1)[:-1]
    values, pos = [], 0
    while pos < len(body):
        length = int.from_bytes(body[pos:pos + 4], "big")
        values.append(body[pos + 4:pos + 4 + length].rstrip(b"\0").decode())
        pos += 4 + length + (-length % 4)
    assert pos == len(body)
    singles = [raw.read_attr(f"READ iio:device0 OUTPUT altvoltage1 {a}")
               for a in ("external", "fastlock_load", "fastlock_recall", "fastlock_save", "fastlock_store",
                         "frequency", "frequency_available", "powerdown")]
    assert values == singles


def test_write_validates_and_consumes_its_data(raw, pluto_emulator):
    value = b"915000000\0"
    assert raw.cmd(f"WRITE iio:device0 OUTPUT altvoltage1 frequency {len(value)}", value) == len(value)
    assert pluto_emulator.model.tx_lo_hz == 915_000_000
    bad = b"100000000\0"                                        # below a stock Pluto's 325 MHz
    assert raw.cmd(f"WRITE iio:device0 OUTPUT altvoltage1 frequency {len(bad)}", bad) == -errno.EINVAL
    assert pluto_emulator.model.tx_lo_hz == 915_000_000
    ro = b"1\0"
    assert raw.cmd(f"WRITE iio:device0 INPUT voltage0 rssi {len(ro)}", ro) == -errno.EACCES
    gain = b"30\0"                                              # AGC on: the device refuses
    assert raw.cmd(f"WRITE iio:device0 INPUT voltage0 hardwaregain {len(gain)}", gain) == -errno.EPERM
    atten = b"-10.1\0"                                          # truncated to 0.25 dB steps
    assert raw.cmd(f"WRITE iio:device0 OUTPUT voltage0 hardwaregain {len(atten)}", atten) == len(atten)
    assert raw.read_attr("READ iio:device0 OUTPUT voltage0 hardwaregain") == "-10.000000 dB"
    fir = b"RX 3 GAIN -6 DEC 3\n" + b"1,1\n" * 16 + b"\0"                # decimation 3 does not exist
    assert raw.cmd(f"WRITE iio:device0 filter_fir_config {len(fir)}", fir) == -errno.EINVAL
    # the data of every refused WRITE was consumed: the stream is still in sync
    assert raw.read_attr("READ iio:device0 OUTPUT altvoltage1 frequency") == "915000000"


def test_buffers_are_per_connection_and_tx_is_exclusive(pluto_emulator):
    a, b = Raw(pluto_emulator), Raw(pluto_emulator)
    try:
        assert a.cmd("READBUF iio:device3 4096") == -errno.EBADF        # not opened on this connection
        assert a.cmd("OPEN iio:device3 1024 00000003") == 0
        assert b.cmd("OPEN iio:device3 1024 00000003") == 0             # RX: several readers, like iiod
        assert b.cmd("OPEN iio:device3 1024 00000003 CYCLIC") == -errno.EINVAL   # RX cannot be cyclic
        assert b.cmd("OPEN iio:device0 1024 00000003") == -errno.EINVAL          # not buffer capable
        assert a.cmd("OPEN iio:device2 1024 00000003 CYCLIC") == 0
        assert b.cmd("OPEN iio:device2 1024 00000003") == -errno.EBUSY          # TX: one buffer at a time
        assert b.read_attr("READ ad9361-phy ensm_mode") == "fdd"                 # b still serves attributes
        for client in (a, b):
            assert client.cmd("READBUF iio:device3 4096") == 4096
            assert client.rfile.readline() == b"00000003\n"
            assert len(client.rfile.read(4096)) == 4096
        assert a.cmd("CLOSE iio:device2") == 0
        assert a.cmd("CLOSE iio:device2") == -errno.EBADF
        assert b.cmd("OPEN iio:device2 1024 00000003") == 0
    finally:
        a.close()
        b.close()


def test_writebuf_acknowledges_before_and_after_the_data(raw, pluto_emulator):
    pluto_emulator.medium.set_noise(0.0)
    n = 1024
    iq = 0.5 * np.exp(2j * np.pi * 8 * np.arange(n) / n)
    data = np.empty((n, 2), "<i2")
    data[:, 0], data[:, 1] = np.round(iq.real * TX_FULL_SCALE), np.round(iq.imag * TX_FULL_SCALE)
    assert raw.cmd(f"OPEN iio:device2 {n} 00000003 CYCLIC") == 0
    raw.send(f"WRITEBUF iio:device2 {data.nbytes}", data.tobytes())
    assert raw.integer() == 0
    assert raw.integer() == data.nbytes
    assert pluto_emulator.rf_port.transmitting
    # the radio hears itself (loopback link, 0 dB) at TX gain -10 dB (the default); RX gain 0 dB
    rx = Raw(pluto_emulator)
    try:
        for line, value in (("gain_control_mode", b"manual\0"), ("hardwaregain", b"0\0")):
            assert rx.cmd(f"WRITE iio:device0 INPUT voltage0 {line} {len(value)}", value) == len(value)
        assert rx.cmd(f"OPEN iio:device3 {n} 00000001") == 0           # I only: 2 bytes per sample
        assert rx.cmd(f"READBUF iio:device3 {2 * n}") == 2 * n
        assert rx.rfile.readline() == b"00000001\n"
        i_only = np.frombuffer(rx.rfile.read(2 * n), "<i2") / RX_FULL_SCALE
        assert np.sqrt(np.mean(i_only ** 2)) == pytest.approx(0.5 * 10 ** (-10 / 20) / np.sqrt(2), rel=0.01)
    finally:
        rx.close()
    assert raw.cmd("CLOSE iio:device2") == 0
    assert not pluto_emulator.rf_port.transmitting


def test_writebuf_without_open_is_refused_before_the_data(raw):
    assert raw.cmd("WRITEBUF iio:device2 4096") == -errno.EBADF
    assert raw.cmd("WRITEBUF iio:device3 4096") == -errno.EBADF     # the RX device takes no data
    assert raw.read_attr("READ ad9361-phy ensm_mode") == "fdd"       # still in sync


def test_dropped_tx_connection_stops_transmission(pluto_emulator):
    client = Raw(pluto_emulator)
    data = np.full(2 * 256, 1000, "<i2").tobytes()
    assert client.cmd("OPEN iio:device2 256 00000003 CYCLIC") == 0
    client.send(f"WRITEBUF iio:device2 {len(data)}", data)
    assert client.integer() == 0 and client.integer() == len(data)
    assert pluto_emulator.rf_port.transmitting
    client.close()                                      # no CLOSE, no EXIT: the client died
    deadline = time.monotonic() + 5
    while pluto_emulator.rf_port.transmitting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pluto_emulator.rf_port.transmitting


def test_stall_then_resume(raw, pluto_emulator):
    pluto_emulator.stall()
    raw.send("READ ad9361-phy ensm_mode")
    readable, _, _ = select.select([raw.sock], [], [], 0.2)
    assert readable == []                                   # no answer while stalled
    pluto_emulator.stall(False)
    assert raw.rfile.readline() == b"3\n"


def test_realtime_pacing(pluto_emulator):
    pluto_emulator.realtime = True
    rate = pluto_emulator.model.sample_rate_hz
    n, num_buffers = 30_720, 5                               # 1 ms each at 30.72 MS/s
    client = Raw(pluto_emulator)
    try:
        assert client.cmd(f"OPEN iio:device3 {n} 00000003") == 0
        start = time.monotonic()
        for _ in range(num_buffers):
            assert client.cmd(f"READBUF iio:device3 {4 * n}") == 4 * n
            client.rfile.readline()
            client.rfile.read(4 * n)
        assert time.monotonic() - start >= num_buffers * n / rate * 0.99
    finally:
        client.close()


def test_stop_closes_everything(pluto_emulator):
    before = threading.active_count()
    clients = [Raw(pluto_emulator) for _ in range(3)]
    assert clients[0].cmd("OPEN iio:device3 64 00000003") == 0
    pluto_emulator.stop()
    for c in clients:                                     # the server closed (or reset) every connection
        try:
            assert c.rfile.read(1) == b""
        except ConnectionResetError:
            pass
        c.close()
    assert threading.active_count() <= before - 1         # accept loop and connection threads joined
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((pluto_emulator.host, pluto_emulator.port), timeout=2)


# --- two radios on one medium, standalone server ---------------------------------------
def test_base_station_is_heard_by_the_ue_with_the_link_gain():
    bs, ue = serve(2, noise_fs=0.0, link_gain_db=-20.0)
    try:
        medium = bs.medium
        assert ue.medium is medium and medium.link("pluto0", "pluto1").gain_db == -20.0
        tx, rx = Raw(bs), Raw(ue)
        for c in (tx, rx):
            for line, value in (("OUTPUT voltage0 hardwaregain", b"0\0"), ("INPUT voltage0 gain_control_mode", b"manual\0"),
                                ("INPUT voltage0 hardwaregain", b"10\0")):
                assert c.cmd(f"WRITE iio:device0 {line} {len(value)}", value) == len(value)
        n = 512
        data = np.zeros((n, 2), "<i2")
        data[:, 0] = round(0.5 * TX_FULL_SCALE)                 # DC, amplitude 0.5
        assert tx.cmd(f"OPEN iio:device2 {n} 00000003 CYCLIC") == 0
        tx.send(f"WRITEBUF iio:device2 {data.nbytes}", data.tobytes())
        assert tx.integer() == 0 and tx.integer() == data.nbytes
        assert rx.cmd(f"OPEN iio:device3 {n} 00000003") == 0
        assert rx.cmd(f"READBUF iio:device3 {4 * n}") == 4 * n
        rx.rfile.readline()
        got = np.frombuffer(rx.rfile.read(4 * n), "<i2").reshape(n, 2) / RX_FULL_SCALE
        # 0.5 full scale, -20 dB link, +10 dB RX gain: amplitude 0.5 * 10^(-10/20)
        assert np.mean(got[:, 0]) == pytest.approx(0.5 * 10 ** (-10 / 20), abs=1 / RX_FULL_SCALE)
        tx.close()
        rx.close()
    finally:
        for emu in (bs, ue):
            emu.stop()


def test_standalone_server_serves_two_radios_and_stops_on_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "hardware.emulated.iiod", "--num-radios", "2",
                             "--interferer", "2.4401e9,2.4402e9,1e-6"],
                            stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        uris = [proc.stdout.readline().strip() for _ in range(2)]
        assert all(u.startswith("ip:127.0.0.1:") for u in uris) and uris[0] != uris[1]
        for uri in uris:
            r = iio("iio_attr", "-u", uri, "-c", "ad9361-phy", "RX_LO", "frequency")
            assert r.returncode == 0 and r.stdout.strip() == "2400000000"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


# --- limits: regressions of what main accepted ------------------------------------------
RSS_MARGIN_MB = 100          # peak RSS growth allowed per test; main grew by 225 MB to 1 GB on these


class RssWatch:
    """Peak growth of this process's resident memory while the block runs, in MB, sampled every
    millisecond (the process's all-time peak, ``ru_maxrss``, would hide growth below earlier peaks)."""

    def __enter__(self) -> "RssWatch":
        self.base_mb = self.peak_mb = self._now_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return max(self.peak_mb, self._now_mb()) - self.base_mb

    def _sample(self) -> None:
        while not self._done.wait(0.001):
            self.peak_mb = max(self.peak_mb, self._now_mb())

    @staticmethod
    def _now_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def closed_by_server(client: Raw) -> bool:
    """Whether the server closed the connection (EOF or reset), waiting up to the socket timeout."""
    try:
        return client.rfile.read(1) == b""
    except ConnectionResetError:
        return True


def test_overlong_line_is_refused_without_reading_the_rest(pluto_emulator):
    client = Raw(pluto_emulator)
    try:
        client.sock.sendall(b"READ " + b"A" * (MAX_LINE_BYTES - 5))     # the limit, no newline yet
        assert client.integer() == -errno.EIO
        assert closed_by_server(client)
    finally:
        client.close()
    ok = Raw(pluto_emulator)
    try:
        line = "READ ad9361-phy ensm_mode" + " " * (MAX_LINE_BYTES - 27)     # exactly the limit with \r\n
        assert ok.read_attr(line) == "fdd"
    finally:
        ok.close()


def test_five_connections_with_100_mb_lines_are_dropped_early(pluto_emulator):
    clients = [Raw(pluto_emulator) for _ in range(5)]
    chunk, sent = b"x" * (1 << 20), [0] * 5
    live = set(range(5))
    with RssWatch() as rss:
        while live:
            for i in list(live):
                try:
                    clients[i].sock.sendall(chunk)
                    sent[i] += len(chunk)
                except OSError:                    # the server closed: broken pipe or reset
                    live.discard(i)
                if sent[i] >= 100 << 20:
                    live.discard(i)
        for c in clients:
            c.close()
    assert max(sent) < 32 << 20                  # the server stopped reading after MAX_LINE_BYTES
    assert rss.growth_mb < RSS_MARGIN_MB
    r = Raw(pluto_emulator)
    try:
        assert r.read_attr("READ ad9361-phy ensm_mode") == "fdd"
    finally:
        r.close()


def test_open_larger_than_the_kernel_allows_is_refused(raw):
    assert raw.cmd("OPEN iio:device3 10000000000000 00000003") == -errno.ENOMEM        # 10^13 samples
    assert raw.cmd(f"OPEN iio:device3 {MAX_BUFFER_BYTES // 4 + 1} 00000003") == -errno.ENOMEM
    assert raw.cmd(f"OPEN iio:device3 {MAX_BUFFER_BYTES // 2 + 1} 00000001") == -errno.ENOMEM   # 2 bytes a sample
    for samples in ("0", "-1", "1e3", "abc"):
        assert raw.cmd(f"OPEN iio:device3 {samples} 00000003") == -errno.EINVAL
    assert raw.cmd("OPEN iio:device3 1024 3") == -errno.EINVAL                          # 8 hex digits a word
    assert raw.cmd("OPEN iio:device2 0 00000003 CYCLIC") == -errno.EINVAL               # zero-length cyclic TX
    assert raw.read_attr("READ ad9361-phy ensm_mode") == "fdd"


def test_largest_buffer_is_served_in_chunks_and_a_4_gb_readbuf_gets_one_buffer(raw):
    n = MAX_BUFFER_BYTES // 4
    assert raw.cmd(f"OPEN iio:device3 {n} 00000003") == 0
    with RssWatch() as rss:
        assert raw.cmd(f"READBUF iio:device3 {4 << 30}") == MAX_BUFFER_BYTES      # clamped to the buffer
        assert raw.rfile.readline() == b"00000003\n"
        got = 0
        while got < MAX_BUFFER_BYTES:
            got += len(raw.rfile.read(min(1 << 20, MAX_BUFFER_BYTES - got)))
    assert got == MAX_BUFFER_BYTES
    assert rss.growth_mb < RSS_MARGIN_MB
    assert raw.cmd("READBUF iio:device3 0") == -errno.EINVAL
    assert raw.cmd("READBUF iio:device3 -4") == -errno.EINVAL
    assert raw.cmd("CLOSE iio:device3") == 0


def test_write_lengths_out_of_range(pluto_emulator):
    client = Raw(pluto_emulator)
    try:
        assert client.cmd("WRITE ad9361-phy ensm_mode -1") == -errno.ENOMEM      # as iiod: no buffering to EOF
        assert client.cmd("WRITE ad9361-phy ensm_mode 0") == -errno.EIO
        assert client.cmd("WRITE ad9361-phy ensm_mode x") == -errno.EINVAL
        assert client.read_attr("READ ad9361-phy ensm_mode") == "fdd"              # still in sync
        assert client.cmd("WRITE ad9361-phy ensm_mode 1000000000000") == -errno.ENOMEM   # 10^12 bytes
        assert closed_by_server(client)                                          # what follows is no command
    finally:
        client.close()
    client = Raw(pluto_emulator)
    try:
        assert client.cmd(f"WRITE ad9361-phy ensm_mode {MAX_ATTR_BYTES + 1}") == -errno.ENOMEM
        assert closed_by_server(client)
    finally:
        client.close()
    value = b"fdd" + b" " * (MAX_ATTR_BYTES - 4) + b"\0"                       # the largest value is taken
    client = Raw(pluto_emulator)
    try:
        assert client.cmd(f"WRITE ad9361-phy ensm_mode {len(value)}", value) == MAX_ATTR_BYTES
    finally:
        client.close()


def test_writebuf_of_nothing_or_too_much_is_refused_and_loopback_still_works(raw, pluto_emulator):
    assert raw.cmd("OPEN iio:device2 256 00000003 CYCLIC") == 0
    for num_bytes in (0, -4, 4 * 256 + 4, 6):           # nothing, negative, beyond the buffer, not whole samples
        assert raw.cmd(f"WRITEBUF iio:device2 {num_bytes}") == -errno.EINVAL
    assert not pluto_emulator.rf_port.transmitting
    assert raw.read_attr("READ ad9361-phy ensm_mode") == "fdd"       # no data was expected: still in sync
    loop = b"1\0"
    assert raw.cmd(f"WRITE iio:device0 DEBUG loopback {len(loop)}", loop) == len(loop)
    rx = Raw(pluto_emulator)
    try:
        assert rx.cmd("OPEN iio:device3 1024 00000003") == 0
        assert rx.cmd("READBUF iio:device3 4096") == 4096           # no TX data: the loopback hears zeros
        assert rx.rfile.readline() == b"00000003\n"
        assert not any(rx.rfile.read(4096))
    finally:
        rx.close()


def test_a_half_line_times_out_and_frees_its_slot(pluto_emulator):
    pluto_emulator.command_timeout_s = 0.3
    holder, other = Raw(pluto_emulator), Raw(pluto_emulator)
    try:
        holder.sock.sendall(b"READ ad9361-phy ens")               # and nothing more
        assert other.read_attr("READ ad9361-phy ensm_mode") == "fdd"   # not blocked by it
        start = time.monotonic()
        assert closed_by_server(holder)
        assert time.monotonic() - start < 3
    finally:
        holder.close()
        other.close()


def test_connections_beyond_the_cap_are_closed(pluto_emulator):
    from hardware.emulated.iiod import MAX_CONNECTIONS
    clients = [Raw(pluto_emulator) for _ in range(MAX_CONNECTIONS)]
    try:
        for c in clients:                                        # all served (and so all counted)
            assert c.cmd("TIMEOUT 2500") == 0
        extra = Raw(pluto_emulator)
        try:
            assert closed_by_server(extra)
        finally:
            extra.close()
    finally:
        for c in clients:
            c.close()
    deadline = time.monotonic() + 5
    while True:                                                   # the server notices the hang-ups
        r = Raw(pluto_emulator)
        try:
            if r.cmd("TIMEOUT 2500") == 0:
                break
        except (ValueError, OSError):
            assert time.monotonic() < deadline
        finally:
            r.close()


def test_binding_beyond_loopback_warns(capsys):
    with pytest.warns(RuntimeWarning, match="beyond loopback"):
        emu = IIODEmulator(host="0.0.0.0")
    emu.stop()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("WARNING: IIOD emulator 'pluto' listens on 0.0.0.0:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for host in ("127.0.0.1", "localhost"):
            IIODEmulator(host=host).stop()
    assert capsys.readouterr().err == ""


# --- impairments: kernel buffers, the boot DDS tone, the crystal --------------------------------
def rx_power(client: Raw, n: int) -> float:
    """Mean power of one READBUF of n I/Q samples, full scale 1."""
    assert client.cmd(f"READBUF iio:device3 {4 * n}") == 4 * n
    client.rfile.readline()
    return float(np.mean((np.frombuffer(client.rfile.read(4 * n), "<i2") / RX_FULL_SCALE) ** 2) * 2)


def start_dc(client: Raw, n: int = 256) -> None:
    data = np.zeros((n, 2), "<i2")
    data[:, 0] = 16000
    assert client.cmd(f"OPEN iio:device2 {n} 00000003 CYCLIC") == 0
    client.send(f"WRITEBUF iio:device2 {data.nbytes}", data.tobytes())
    assert client.integer() == 0 and client.integer() == data.nbytes


@pytest.mark.parametrize("kernel_buffers, stale_reads", [(4, 3), (2, 1), (1, 0)])
def test_an_open_rx_buffer_returns_blocks_from_before_a_tx_change(pluto_emulator, kernel_buffers, stale_reads):
    """Reads after a TX change return the kernel_buffers - 1 blocks recorded before it, as a real Pluto does."""
    dds_off = b"0\0"
    tx, rx = Raw(pluto_emulator), Raw(pluto_emulator)
    try:
        assert tx.cmd(f"WRITE iio:device2 OUTPUT altvoltage0 raw {len(dds_off)}", dds_off) == len(dds_off)
        for attr, value in (("gain_control_mode", b"manual\0"), ("hardwaregain", b"0\0")):
            assert rx.cmd(f"WRITE iio:device0 INPUT voltage0 {attr} {len(value)}", value) == len(value)
        assert rx.cmd(f"SET iio:device3 BUFFERS_COUNT {kernel_buffers}") == 0
        assert rx.cmd("OPEN iio:device3 1024 00000003") == 0
        assert rx.cmd("SET iio:device3 BUFFERS_COUNT 2") == -errno.EBUSY
        assert rx_power(rx, 1024) < 1e-6
        start_dc(tx)
        powers = [rx_power(rx, 1024) for _ in range(stale_reads + 1)]
        assert all(p < 1e-6 for p in powers[:-1]) and powers[-1] > 0.01, powers
    finally:
        tx.close()
        rx.close()


def test_buffers_count_refusals(raw):
    assert raw.cmd("SET iio:device3 BUFFERS_COUNT 0") == -errno.EINVAL
    assert raw.cmd("SET iio:device3 BUFFERS_COUNT 65") == -errno.EINVAL
    assert raw.cmd("SET ad9361-phy BUFFERS_COUNT 2") == -errno.EINVAL
    assert raw.cmd("SET iio:device9 BUFFERS_COUNT 2") == -errno.ENODEV
    assert raw.cmd("SET iio:device3 BUFFERS_COUNT 5") == 0
    assert raw.cmd(f"OPEN iio:device3 {MAX_BUFFER_BYTES // 4} 00000003") == -errno.ENOMEM   # 5 x 16 MiB


def test_realtime_reader_too_slow_overflows_and_the_bit_clears(pluto_emulator):
    pluto_emulator.realtime = True
    client = Raw(pluto_emulator)
    try:
        assert client.read_attr("READ iio:device3 DEBUG direct_reg_access") == "0x0"
        assert client.cmd("OPEN iio:device3 1024 00000003") == 0       # 33 us a block at 30.72 MS/s
        rx_power(client, 1024)
        time.sleep(0.05)                                               # far more than 4 blocks
        rx_power(client, 1024)
        select = b"2147483784\0"                                       # 0x80000088, as libiio writes it
        assert client.cmd(f"WRITE iio:device3 DEBUG direct_reg_access {len(select)}", select) == len(select)
        assert int(client.read_attr("READ iio:device3 DEBUG direct_reg_access"), 0) & 4
        assert client.cmd("CLOSE iio:device3") == 0                   # no buffer, no recording: no new overflow
        clear = b"0x80000088 0x4\0"
        assert client.cmd(f"WRITE iio:device3 DEBUG direct_reg_access {len(clear)}", clear) == len(clear)
        assert client.read_attr("READ iio:device3 DEBUG direct_reg_access") == "0x0"
    finally:
        client.close()


def test_boot_dds_tone_until_disabled_or_a_tx_buffer(pluto_emulator, raw):
    port = pluto_emulator.rf_port
    assert port.transmitting                                            # from boot
    off, on = b"0\0", b"1\0"
    assert raw.cmd(f"WRITE iio:device2 OUTPUT altvoltage3 raw {len(off)}", off) == len(off)
    assert not port.transmitting
    assert raw.read_attr("READ iio:device2 OUTPUT altvoltage0 raw") == "0"     # one enable for all four
    assert raw.cmd(f"WRITE iio:device2 OUTPUT altvoltage0 raw {len(on)}", on) == len(on)
    assert port.transmitting
    assert raw.cmd("OPEN iio:device2 256 00000003 CYCLIC") == 0                # the DAC plays DMA (zeros yet)
    assert not port.transmitting
    bad = b"1.5\0"
    assert raw.cmd(f"WRITE iio:device2 OUTPUT altvoltage0 scale {len(bad)}", bad) == -errno.EINVAL
    with IIODEmulator(ideal=True) as ideal:
        assert not ideal.rf_port.transmitting


def test_crystal_error_shifts_the_los_and_xo_correction_corrects_it():
    with IIODEmulator(crystal_ppm=20.0) as emu:
        assert emu._rf_state()["rx_lo_hz"] == pytest.approx(2.4e9 * (1 + 20e-6), abs=1.0)
        client = Raw(emu)
        try:
            xo = str(round(40e6 * (1 + 20e-6))).encode() + b"\0"
            assert client.cmd(f"WRITE ad9361-phy xo_correction {len(xo)}", xo) == len(xo)
            assert emu._rf_state()["tx_lo_hz"] == pytest.approx(2.4e9, abs=1.0)
            far = b"40010000\0"
            assert client.cmd(f"WRITE ad9361-phy xo_correction {len(far)}", far) == -errno.EINVAL
        finally:
            client.close()
    with pytest.raises(ValueError, match="crystal_ppm"):
        IIODEmulator(crystal_ppm=5000.0)
