"""Fuzzing the IIOD emulator with adversarial protocol input, against one emulator.

Every exchange must end in a clean reply (a negative errno the protocol allows, or the command's
normal answer) or in the server closing the connection, with the stream still in sync when it stays
open. After each test a fresh client's PRINT and a real ``adi.Pluto`` rx() still work, and the
resident memory of this process (client and server) stayed within ``RSS_MARGIN_MB`` of where it
began. Hypothesis runs derandomized (a fixed seed) with small example counts, so the suite is
repeatable and takes seconds. A server thread dying on an exception fails the suite.
"""
from __future__ import annotations

import errno
import socket
import time

import adi
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings, strategies as st

from hardware.emulated.iiod import MAX_ATTR_BYTES, MAX_BUFFER_BYTES, MAX_LINE_BYTES, IIODEmulator
from tests.hardware.test_iiod_emulator import RSS_MARGIN_MB, Raw, RssWatch

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

TIMEOUT_S = 0.2                     # the emulator's command timeout here: truncated payloads end fast
VERSION_LINE = b"0.24.c4498c2\n"
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=[HealthCheck.too_slow])

# numbers no length, sample count or timeout may be
BAD_NUMBERS = ["0", "-0", "-1", "-4", "1e3", "0x10", "1.5", "abc", "+-1", "\xff", "9" * 40,
               str(10 ** 12), str(10 ** 13), str(2 ** 32), str(2 ** 64), str(-2 ** 63)]
DEVICES = ["iio:device0", "ad9361-phy", "iio:device2", "cf-ad9361-dds-core-lpc", "iio:device3",
           "cf-ad9361-lpc", "xadc", "iio:device9", "\x00", "\xff\xfe", "A" * 200]
REFUSED_WORDS = ["ZPRINT", "GETTRIG", "SETTRIG", "HELP", "BINARY", "READBUFF", "OPENX", "\x00"]   # any arguments


@pytest.fixture(scope="module")
def emu():
    with IIODEmulator(name="fuzz") as server:
        server.command_timeout_s = TIMEOUT_S
        yield server


@pytest.fixture(scope="module")
def rss(emu):
    with RssWatch() as watch:
        yield watch


@pytest.fixture(autouse=True)
def still_serves(emu, rss):
    """After each test: a fresh PRINT, a real pyadi-iio rx(), memory within the margin."""
    yield
    client = Raw(emu)
    try:
        n = client.cmd("PRINT")
        assert client.rfile.read(n + 1).endswith(b"</context>\n")
    finally:
        client.close()
    sdr = adi.Pluto(emu.uri)
    sdr.rx_buffer_size = 1024
    assert len(sdr.rx()) == 1024
    sdr.rx_destroy_buffer()
    del sdr
    assert rss.growth_mb < RSS_MARGIN_MB


class Client:
    """A raw connection that tells a reply line from a closed connection."""

    def __init__(self, emu: IIODEmulator):
        self.sock = socket.create_connection((emu.host, emu.port), timeout=TIMEOUT_S + 5)
        self.rfile = self.sock.makefile("rb")

    def line(self) -> bytes | None:
        """The next line, or None once the server has closed (EOF or reset)."""
        try:
            return self.rfile.readline() or None
        except ConnectionResetError:
            return None

    def integer(self) -> int | None:
        text = self.line()
        return None if text is None else int(text)

    def exit(self) -> None:
        """EXIT and wait for the server to close: by then it has released this connection's buffers."""
        try:
            self.sock.sendall(b"EXIT\r\n")
            while self.line() is not None:
                pass
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


def is_errno(code: int | None) -> bool:
    return code is not None and code < 0 and -code in errno.errorcode


def probe(emu: IIODEmulator, line: bytes) -> str:
    """Send one command line then VERSION on a fresh connection.

    'silent': no reply, then the version; 'errno': one errno reply, then the version (in sync);
    'errno+closed': one errno reply, then the server closed; 'closed': closed without a reply.
    """
    client = Client(emu)
    try:
        client.sock.sendall(line + b"\r\nVERSION\r\n")
        first = client.line()
        if first is None:
            return "closed"
        if first == VERSION_LINE:
            return "silent"
        assert is_errno(int(first)), first
        second = client.line()
        if second is None:
            return "errno+closed"
        assert second == VERSION_LINE, (first, second)
        return "errno"
    finally:
        client.close()


def words_of(line: bytes) -> list[str]:
    return line.decode("ascii", "replace").split()


# --- single lines ----------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")).filter(
    lambda b: not words_of(b) or words_of(b)[0].upper() not in ("PRINT", "VERSION", "TIMEOUT", "WRITE")))
def test_binary_garbage_lines(emu, line):
    """Lines of random bytes (PRINT, VERSION, TIMEOUT may succeed and WRITE takes the next bytes as
    its value: those are left to the tests below)."""
    words = words_of(line)
    expected = "silent" if not words else "closed" if words[0].upper() == "EXIT" else "errno"
    assert probe(emu, line) == expected


@st.composite
def bad_commands(draw) -> str:
    """A command with arguments it must refuse: wrong numbers, devices, shapes, unknown words."""
    dev, bad = draw(st.sampled_from(DEVICES)), draw(st.sampled_from(BAD_NUMBERS))
    mask = draw(st.sampled_from(["00000003", "00000001", "00000004", "3", "zzzzzzzz", "-0000001"]))
    kind = draw(st.sampled_from(["open_samples", "open_mask", "readbuf", "writebuf", "close", "read",
                                 "write", "timeout", "word"]))
    if kind == "open_samples":
        return f"OPEN {dev} {bad} {mask}" + draw(st.sampled_from(["", " CYCLIC"]))
    if kind == "open_mask":
        return f"OPEN {dev} 1024 {draw(st.sampled_from(['00000000', '00000004', '3', 'zzzzzzzz', '']))}"
    if kind == "readbuf":                            # nothing is open on a fresh connection
        return f"READBUF {dev} {draw(st.sampled_from(BAD_NUMBERS + ['4096', '4']))}"
    if kind == "writebuf":
        return f"WRITEBUF {dev} {draw(st.sampled_from(BAD_NUMBERS + ['4096', '4']))}"
    if kind == "close":
        return f"CLOSE {dev}"
    if kind == "read":
        return f"READ {dev} {draw(st.sampled_from(['DEBUG', 'BUFFER', 'INPUT voltage9', 'OUTPUT', '']))} nonsense"
    if kind == "write":
        return f"WRITE {dev} ensm_mode {bad}"
    if kind == "timeout":
        return f"TIMEOUT {draw(st.sampled_from(['', 'soon', '1.5', '0x10', chr(0xff)]))}"
    return " ".join([draw(st.sampled_from(REFUSED_WORDS))]
                    + draw(st.lists(st.sampled_from(DEVICES + BAD_NUMBERS), max_size=6)))


@FUZZ
@given(bad_commands())
def test_bad_arguments_get_an_errno(emu, line):
    outcome = probe(emu, line.encode("utf-8"))
    words = line.split()
    if outcome == "errno+closed":                   # only a WRITE too long for any value hangs up
        assert words[0] == "WRITE" and int(words[-1]) > MAX_ATTR_BYTES, line
    else:
        assert outcome == "errno", (line, outcome)


def attribute_lines(emu: IIODEmulator) -> list[str]:
    """'WRITE <dev> [DEBUG|BUFFER|INPUT ch|OUTPUT ch] <attr>' for every attribute of the model."""
    model, lines = emu.model, []
    for dev in model.devices:
        for section, prefix in (("dev", ""), ("debug", "DEBUG "), ("buffer", "BUFFER ")):
            lines += [f"WRITE {dev.id} {prefix}{a}" for a in model.names(dev, section)]
        for ch in dev.channels:
            kind = "OUTPUT" if ch.output else "INPUT"
            lines += [f"WRITE {dev.id} {kind} {ch.id} {a}" for a in ch.attrs]
    return lines


VALUES = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "1e309", "-1e309", "", " ", "-0", "0x10", "1_000", "manual",
                     "fdd", "RX 3 GAIN -6 DEC", "RX 1 GAIN 0 DEC 4\n" + "1,1\n" * 16, "9" * 400, "-91", "2e9"]
                    ).map(str.encode),
    st.binary(max_size=64))


@FUZZ
@given(data=st.data(), value=VALUES)
def test_attribute_writes_with_hostile_values(emu, data, value):
    """Any value to any attribute: its byte count or an errno, and the stream stays in sync."""
    head = data.draw(st.sampled_from(attribute_lines(emu)))
    payload = value + b"\0"
    client = Client(emu)
    try:
        client.sock.sendall(f"{head} {len(payload)}\r\n".encode() + payload + b"VERSION\r\n")
        reply = client.integer()
        assert reply == len(payload) or is_errno(reply), (head, value, reply)
        assert client.line() == VERSION_LINE
    finally:
        client.close()


@settings(FUZZ, max_examples=10)
@given(length=st.integers(1, MAX_ATTR_BYTES), sent=st.floats(0, 0.99), junk=st.binary(max_size=64))
def test_truncated_write_payload_is_dropped_after_the_timeout(emu, length, sent, junk):
    payload = (junk * (length // max(len(junk), 1) + 1) if junk else b"\0" * length)[:int(length * sent)]
    client = Client(emu)
    try:
        client.sock.sendall(f"WRITE ad9361-phy ensm_mode {length}\r\n".encode() + payload)
        assert client.line() is None                # no reply: closed once the timeout ran out
    finally:
        client.close()


@settings(FUZZ, max_examples=10)
@given(length=st.integers(MAX_LINE_BYTES, 4 * MAX_LINE_BYTES), fill=st.binary(min_size=1, max_size=16))
def test_overlong_lines_are_refused(emu, length, fill):
    line = (b"READ " + fill * length).replace(b"\n", b" ")[:length]
    client = Client(emu)
    try:
        try:
            client.sock.sendall(line)
        except OSError:                              # closed (reset) while still sending
            return
        first = client.line()
        assert first in (None, b"%d\n" % -errno.EIO)
        assert client.line() is None
    finally:
        client.close()


# --- buffers out of order ---------------------------------------------------------------
RX, TX = "iio:device3", "iio:device2"
OPS = st.one_of(                                   # valid values repeated: about half of the commands succeed
    st.tuples(st.just("OPEN"), st.sampled_from([RX, RX, TX, TX, "iio:device0", "iio:device9"]),
              st.sampled_from(["64", "256", "1024"] * 3 + ["0", "-1", str(MAX_BUFFER_BYTES // 4 + 1), "1" + "0" * 13, "x"]),
              st.sampled_from(["00000003"] * 3 + ["00000001", "00000002", "00000000", "3", "zzzzzzzz"]), st.booleans()),
    st.tuples(st.just("READBUF"), st.sampled_from([RX, RX, RX, TX, "iio:device9"]),
              st.sampled_from(["4", "256", "4096"] * 2 + ["3", "0", "-4", str(4 << 30), "x"])),
    st.tuples(st.just("WRITEBUF"), st.sampled_from([TX, TX, TX, RX, "iio:device9"]),
              st.sampled_from(["4", "256", "1024"] * 2 + ["4098", "6", "0", "-4", "x"]),
              st.sampled_from([False] * 3 + [True])),                    # True: the data stops short
    st.tuples(st.just("CLOSE"), st.sampled_from([RX, TX, "iio:device0", "iio:device9"])))
OPEN_RX, OPEN_TX = ("OPEN", RX, "256", "00000003", False), ("OPEN", TX, "256", "00000003", True)
SEQUENCES = st.tuples(st.sampled_from([[OPEN_RX, OPEN_TX], [OPEN_RX], [OPEN_TX], []]),   # mostly with buffers open
                      st.lists(OPS, min_size=4, max_size=16)).map(lambda t: t[0] + t[1])
HAPPY_PATH = [OPEN_RX, ("READBUF", RX, "1024"), OPEN_TX, ("WRITEBUF", TX, "1024", False), ("READBUF", RX, "1024"),
              ("CLOSE", TX), ("CLOSE", RX)]


def number(text: str) -> int | None:
    try:
        return int(text, 10)
    except ValueError:
        return None


class BufferModel:
    """What the emulator must answer to OPEN/READBUF/WRITEBUF/CLOSE on one connection."""

    def __init__(self):
        self.open: dict[str, tuple[int, int]] = {}  # device -> (samples, bytes per sample)

    def open_(self, dev: str, samples: str, mask: str, cyclic: bool) -> int:
        if dev == "iio:device9":
            return -errno.ENODEV
        n = number(samples)
        bits = int(mask, 16) if mask and all(c in "0123456789abcdef" for c in mask) else None
        if dev not in (RX, TX) or n is None or n <= 0 or len(mask) != 8 or bits is None or not 0 < bits < 4:
            return -errno.EINVAL
        if cyclic and dev == RX:
            return -errno.EINVAL
        bps = 2 * bin(bits).count("1")
        if n * bps > MAX_BUFFER_BYTES:
            return -errno.ENOMEM
        if dev == TX and TX in self.open:
            return -errno.EBUSY
        self.open[dev] = (n, bps)
        return 0

    def readbuf(self, dev: str, length: str) -> int:
        if dev == "iio:device9":
            return -errno.ENODEV
        if dev != RX or RX not in self.open:
            return -errno.EBADF
        n, bps = self.open[RX]
        wanted = number(length)
        if wanted is None or min(wanted // bps, n) <= 0:
            return -errno.EINVAL
        return min(wanted // bps, n) * bps

    def writebuf(self, dev: str, length: str) -> int:
        if dev == "iio:device9":
            return -errno.ENODEV
        size = number(length)
        if size is None:
            return -errno.EINVAL
        if dev != TX or TX not in self.open:
            return -errno.EBADF
        n, bps = self.open[TX]
        return size if 0 < size <= n * bps and size % bps == 0 else -errno.EINVAL

    def close(self, dev: str) -> int:
        if dev == "iio:device9":
            return -errno.ENODEV
        return 0 if self.open.pop(dev, None) is not None else -errno.EBADF


@settings(FUZZ, max_examples=100)
@given(SEQUENCES)
@example(HAPPY_PATH)
def test_buffer_commands_in_any_order(emu, ops):
    model, client = BufferModel(), Client(emu)
    try:
        for op in ops:
            cmd, dev = op[0], op[1]
            if cmd == "OPEN":
                line = f"OPEN {dev} {op[2]} {op[3]}" + (" CYCLIC" if op[4] else "")
                client.sock.sendall(line.encode() + b"\r\n")
                assert client.integer() == model.open_(dev, *op[2:]), line
            elif cmd == "READBUF":
                expected = model.readbuf(dev, op[2])
                client.sock.sendall(f"READBUF {dev} {op[2]}\r\n".encode())
                assert client.integer() == expected, op
                if expected > 0:
                    assert client.line() in (b"00000001\n", b"00000002\n", b"00000003\n")
                    assert len(client.rfile.read(expected)) == expected
            elif cmd == "WRITEBUF":
                expected = model.writebuf(dev, op[2])
                client.sock.sendall(f"WRITEBUF {dev} {op[2]}\r\n".encode())
                if expected < 0:
                    assert client.integer() == expected, op
                    continue
                assert client.integer() == 0
                truncated = op[3]
                client.sock.sendall(b"\x01\x02" * (expected // 2 - (1 if truncated else 0)))
                if truncated:                        # the rest never comes: dropped after the timeout
                    assert client.line() is None
                    return
                assert client.integer() == expected
            else:
                client.sock.sendall(f"CLOSE {dev}\r\n".encode())
                assert client.integer() == model.close(dev), op
        client.sock.sendall(b"VERSION\r\n")
        assert client.line() == VERSION_LINE
    finally:
        client.exit()


# --- many connections -------------------------------------------------------------------
def test_misbehaving_clients_do_not_affect_a_good_one(emu):
    """Half lines, half payloads, garbage and held buffers at once: a good client and pyadi-iio are
    served meanwhile, TX stays exclusive (-EBUSY), and each slow one is dropped after the timeout."""
    emu.command_timeout_s = 5.0                      # held for the whole test
    bad = [Client(emu) for _ in range(8)]
    try:
        bad[0].sock.sendall(b"READ ad9361-phy ens")                       # half a line
        bad[1].sock.sendall(b"WRITE ad9361-phy ensm_mode 100\r\nfd")       # half a value
        bad[2].sock.sendall(b"\xff\x00garbage\r\n" * 50)                  # garbage, replies unread
        bad[3].sock.sendall(b"OPEN iio:device2 1024 00000003 CYCLIC\r\n")  # holds TX
        assert bad[3].integer() == 0
        bad[3].sock.sendall(b"WRITEBUF iio:device2 4096\r\n" + b"\0" * 100)   # and stops mid-data
        assert bad[3].integer() == 0
        bad[4].sock.sendall(b"OPEN iio:device3 1024 00000003\r\nREADBUF iio:device3 4096\r\n")  # never reads
        bad[5].sock.sendall(b"A" * 4000)                                   # half of an overlong line
        bad[6].sock.sendall(b"OPEN iio:device3 " + b"9" * 30 + b" 00000003\r\n")
        assert bad[6].integer() == -errno.ENOMEM
        good = Raw(emu)
        try:
            assert good.read_attr("READ ad9361-phy calib_mode") == emu.model.values[("iio:device0", "dev", "calib_mode")]
            assert good.cmd("OPEN iio:device2 64 00000003") == -errno.EBUSY    # bad[3] still holds TX
            assert good.cmd("OPEN iio:device3 256 00000003") == 0
            assert good.cmd("READBUF iio:device3 1024") == 1024
            good.rfile.readline()
            assert len(good.rfile.read(1024)) == 1024
        finally:
            good.close()
        sdr = adi.Pluto(emu.uri)
        sdr.rx_buffer_size = 512
        assert len(sdr.rx()) == 512
        sdr.rx_destroy_buffer()
        del sdr
    finally:
        emu.command_timeout_s = TIMEOUT_S
        for c in bad:
            c.close()
    probe_tx = Client(emu)                           # the TX holder's slot and buffer are freed
    try:
        for _ in range(100):
            probe_tx.sock.sendall(b"OPEN iio:device2 64 00000003\r\n")
            code = probe_tx.integer()
            if code == 0:
                break
            assert code == -errno.EBUSY
            time.sleep(0.02)
        assert code == 0
    finally:
        probe_tx.exit()
