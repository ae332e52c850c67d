"""Real outside clients against the emulated Pluto, impairments on: libiio's tools (iio_info,
iio_attr, iio_readdev, iio_writedev, iio_reg, iio_adi_xflow_check), pylibiio, and GNU Radio's
gr-iio Pluto blocks streaming a tone through sink and source in a flowgraph of its own process."""
from __future__ import annotations

import errno
import signal
import subprocess
import time
from pathlib import Path

import iio
import numpy as np
import pytest

from hardware.emulated.iiod import DDS_PERIOD, IIODEmulator
from hardware.emulated.medium import RfMedium
from hardware.drivers.pluto import RX_FULL_SCALE

GR_SCRIPT = Path(__file__).with_name("gr_iio_loopback.py")
STREAM_FS_HZ = 2_500_000          # a streaming test's sample rate (above 2.083 MS/s: no FIR needed)


def tool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, input=stdin, timeout=60)


def streaming_emulator(**kw) -> IIODEmulator:
    """A realtime emulated Pluto at STREAM_FS_HZ on its own medium (it hears itself at 0 dB)."""
    emu = IIODEmulator(RfMedium(STREAM_FS_HZ, noise_fs=1e-8, seed=1), realtime=True, **kw)
    phy = emu.model.device("ad9361-phy")
    emu.model.write(phy, ("in", "voltage0"), "sampling_frequency", str(STREAM_FS_HZ))
    return emu.start()


def manual_rx_gain(uri: str, gain_db: int) -> None:
    for attr, value in (("gain_control_mode", "manual"), ("hardwaregain", str(gain_db))):
        r = tool("iio_attr", "-u", uri, "-i", "-c", "ad9361-phy", "voltage0", attr, value)
        assert r.returncode == 0, r.stderr


def test_iio_info_and_pylibiio_see_shared_attributes_and_register_access(pluto_emulator):
    r = tool("iio_info", "-u", pluto_emulator.uri)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    out = r.stdout.decode()
    assert "xo_correction value: 40000000" in out
    assert out.count("direct_reg_access") == 3          # ad9361-phy and both streaming cores
    ctx = iio.Context(pluto_emulator.uri)               # the file names gr-iio looks attributes up by
    try:
        phy = ctx.find_device("ad9361-phy")
        rx, tx = phy.find_channel("voltage0"), phy.find_channel("voltage0", True)
        assert rx.attrs["rf_bandwidth"].filename == "in_voltage_rf_bandwidth"
        assert rx.attrs["quadrature_tracking_en"].filename == "in_voltage_quadrature_tracking_en"
        assert rx.attrs["hardwaregain"].filename == "in_voltage0_hardwaregain"
        assert tx.attrs["sampling_frequency"].filename == "out_voltage_sampling_frequency"
        assert phy.find_channel("RX_LO", True).attrs["frequency"].filename == "out_altvoltage0_RX_LO_frequency"
    finally:
        del ctx


def test_iio_attr_xo_correction_in_range_only(pluto_emulator):
    uri = pluto_emulator.uri
    r = tool("iio_attr", "-u", uri, "-d", "ad9361-phy", "xo_correction", "40000800")
    assert r.returncode == 0 and pluto_emulator.model.xo_correction_hz == 40_000_800
    r = tool("iio_attr", "-u", uri, "-d", "ad9361-phy", "xo_correction", "40100000")   # beyond ±200 ppm
    assert r.returncode != 0 and b"Invalid argument" in r.stdout + r.stderr
    assert pluto_emulator.model.xo_correction_hz == 40_000_800


def test_iio_readdev_hears_the_boot_dds_tone(pluto_emulator):
    """Nobody transmitted: the Pluto hears its own boot DDS tone (two 0.25 tones a rail, TX gain -10 dB)."""
    uri, n = pluto_emulator.uri, 8192
    manual_rx_gain(uri, 0)
    r = tool("iio_readdev", "-u", uri, "-s", str(n), "-b", str(n), "cf-ad9361-lpc", "voltage0", "voltage1")
    assert r.returncode == 0, r.stderr
    words = np.frombuffer(r.stdout, "<i2").reshape(n, 2) / RX_FULL_SCALE
    x = words[:, 0] + 1j * words[:, 1]
    assert np.sqrt(np.mean(np.abs(x) ** 2)) == pytest.approx(0.5 * 10 ** (-10 / 20), rel=0.02)
    fs = pluto_emulator.model.sample_rate_hz
    expected_hz = round(9279985 * DDS_PERIOD / fs) * fs / DDS_PERIOD
    peak_hz = np.fft.fftfreq(n, 1 / fs)[np.argmax(np.abs(np.fft.fft(x)))]
    assert abs(peak_hz - expected_hz) <= fs / n                     # at +9.28 MHz: I leads Q by 90°


def test_iio_writedev_cyclic_goes_on_air_and_silences_the_dds(pluto_emulator):
    n = 1024
    data = np.zeros((n, 2), "<i2")
    data[:, 0] = 8000
    proc = subprocess.Popen(["iio_writedev", "-u", pluto_emulator.uri, "-c", "-s", str(n), "-b", str(n),
                             "cf-ad9361-dds-core-lpc", "voltage0", "voltage1"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(data.tobytes())
        proc.stdin.close()
        deadline = time.monotonic() + 10
        while pluto_emulator._tx is None and time.monotonic() < deadline:
            time.sleep(0.02)
        iq, cyclic = pluto_emulator._tx
        assert cyclic and np.allclose(iq, 8000 / 32767)                # DC on I, on air instead of the DDS
        assert pluto_emulator.rf_port.transmitting
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def test_iio_reg_reads_and_writes_registers(pluto_emulator):
    uri = pluto_emulator.uri
    r = tool("iio_reg", "-u", uri, "cf-ad9361-lpc", "0x80000000")
    assert r.returncode == 0 and r.stdout.strip() == b"0xa0162"      # the ADC core's version
    assert tool("iio_reg", "-u", uri, "ad9361-phy", "0x10", "0x5").returncode == 0
    assert tool("iio_reg", "-u", uri, "ad9361-phy", "0x10").stdout.strip() == b"0x5"
    r = tool("iio_reg", "-u", uri, "ad9361-phy", "0x80000088")          # not an SPI register
    assert r.returncode != 0


@pytest.mark.parametrize("device, message", [("cf-ad9361-lpc", "Overflow detected"),
                                             ("cf-ad9361-dds-core-lpc", "Underflow detected")])
def test_iio_adi_xflow_check_sees_a_stall(device, message):
    """ADI's checker streams and polls register 0x80000088 once a second: quiet while the client
    keeps up, and an overflow (RX) or underflow (TX) once it was held up for 0.4 s."""
    emu = streaming_emulator()
    try:
        proc = subprocess.Popen(["iio_adi_xflow_check", "-u", emu.uri, "-s", "8192", device],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(2.5)                                  # its first poll is 1 s in: none yet
        emu.stall()
        time.sleep(0.4)
        emu.stall(False)
        time.sleep(1.8)                                  # a poll after the stall
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        emu.stop()
    lines = err.decode().splitlines()
    assert f"Monitoring {device} for underflows/overflows" in out.decode()
    assert message in lines and all(line == message for line in lines), lines
    assert lines.count(message) <= 2                     # only after the stall, not at every poll


def test_pylibiio_kernel_buffers_registers_and_a_fresh_buffer(pluto_emulator):
    ctx = iio.Context(pluto_emulator.uri)
    try:
        adc = ctx.find_device("cf-ad9361-lpc")
        adc.set_kernel_buffers_count(2)
        assert pluto_emulator.kernel_buffers["cf-ad9361-lpc"] == 2
        for ch in adc.channels:
            ch.enabled = True
        buf = iio.Buffer(adc, 1024)
        buf.refill()
        assert len(buf.read()) == 4096
        with pytest.raises(OSError) as busy:
            adc.set_kernel_buffers_count(3)               # not while a buffer is open
        assert busy.value.errno == errno.EBUSY
        del buf
        with pytest.raises(OSError):
            adc.set_kernel_buffers_count(0)
        adc.reg_write(0x80000088, 0x6)
        assert adc.reg_read(0x80000088) == 0
        pluto_emulator.model.flag_status("cf-ad9361-lpc", 4)
        assert adc.reg_read(0x80000088) == 4
        adc.reg_write(0x80000088, 4)                      # write 1 to clear
        assert adc.reg_read(0x80000088) == 0
    finally:
        del ctx


def test_gr_iio_pluto_sink_and_source_stream_a_tone_for_5_s():
    """gr-iio's fmcomms2 sink sends a 200 kHz tone while its source records, on one emulated Pluto
    hearing itself (0 dB): after 5 s of streaming the source holds the tone at the sink's level
    (0.5 at 10 dB attenuation), not the boot DDS tone the sink's buffer replaced."""
    emu = streaming_emulator()
    tone_hz, seconds = 200e3, 5.0
    try:
        out = Path(f"/tmp/gr_iio_{emu.port}.npy")
        r = subprocess.run(["/usr/bin/python3", str(GR_SCRIPT), emu.uri, str(STREAM_FS_HZ), str(tone_hz), str(seconds),
                            str(out)], capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Failed" not in r.stderr and "Parameter not recognized" not in r.stderr, r.stderr
        streamed, elapsed_s = r.stdout.split()
        assert int(streamed) >= seconds * STREAM_FS_HZ and float(elapsed_s) >= seconds
        x = np.load(out)
        out.unlink()
    finally:
        emu.stop()
    spectrum = np.abs(np.fft.fft(x)) ** 2
    peak_hz = np.fft.fftfreq(x.size, 1 / STREAM_FS_HZ)[np.argmax(spectrum)]
    assert abs(peak_hz - tone_hz) < 100
    assert spectrum.max() / spectrum.sum() > 0.5
    assert np.mean(np.abs(x) ** 2) == pytest.approx(0.25 * 10 ** (-10 / 10), rel=0.15)
