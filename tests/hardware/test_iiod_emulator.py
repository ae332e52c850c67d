"""The IIOD emulator against the real libiio tools, and its protocol edge cases over a raw socket."""
from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from hardware.emulated.iiod import IIODEmulator, serve
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
