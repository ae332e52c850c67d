#!/usr/bin/python3
"""A fake of gr-uhd (``gnuradio.uhd``) for the uhd-mode flowgraph, under GNU Radio's Python.

    /usr/bin/python3 tests/hardware/fake_uhd.py hardware/gnuradio_bridge/flowgraph.py uhd ...

runs the flowgraph file with this module installed as ``gnuradio.uhd``. ``usrp_sink`` and
``usrp_source`` are GNU Radio blocks standing for one B200-like device: its ranges, UHD's tune
arithmetic (``tune_request`` policies, an RF LO on a 40 MHz / 2^24 grid, a DSP shift, RX at
rf - dsp and TX at rf + dsp), the sensors ``lo_locked`` and ``ref_locked``, the clock and time
sources, and a loopback cable: what the sink takes at the sample rate comes back through the
source 20 dB down over -80 dBFS noise, the source paced by the wall clock and the sink by the
source (at most MAX_LOOP_SAMPLES in flight). Environment:

- ``FAKE_UHD_SOURCES``: the clock/time sources offered (default ``internal,external``)
- ``FAKE_UHD_REF``: ``locks`` (an external 10 MHz is there) or ``none`` (default ``locks``)
- ``FAKE_UHD_PPS``: ``yes`` or ``no``: whether a PPS edge comes (default ``yes``)
"""
from __future__ import annotations

import collections
import os
import runpy
import sys
import threading
import time
import types

import numpy as np
from gnuradio import gr
from gnuradio import uhd as real_uhd
import pmt

RF_STEP_HZ = 40e6 / 2 ** 24            # the fake LO's synthesizer grid
MASTER_CLOCK_HZ = 32e6                 # the DSP's NCO runs at this rate
NCO_STEP_HZ = MASTER_CLOCK_HZ / 2 ** 32
LOOPBACK_GAIN = 0.1                    # a 20 dB attenuator between TX/RX and RX2
CHUNK_S = 0.005                        # how much stream one work call handles
MAX_LOOP_SAMPLES = 20000               # TX samples in flight to RX (the device's buffers) before the sink waits
NOISE_RMS = 1e-4                       # the receiver's noise, full scale (-80 dBFS)


class Range:
    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = lo, hi

    def start(self) -> float:
        return self.lo

    def stop(self) -> float:
        return self.hi


class Sensor:
    def __init__(self, value: bool):
        self.value = value

    def to_bool(self) -> bool:
        return self.value


class Device:
    """The state both handles share (UHD hands both blocks the same device)."""

    def __init__(self):
        self.sources = os.environ.get("FAKE_UHD_SOURCES", "internal,external").split(",")
        self.clock_source, self.time_source = "internal", "internal"
        self.rate = 1e6
        self.loop = collections.deque()          # TX samples on their way to RX
        self.queued = 0                          # samples in it
        self.ready = threading.Condition()

    def ref_locked(self) -> bool:
        return self.clock_source == "internal" or os.environ.get("FAKE_UHD_REF", "locks") == "locks"


DEVICE = Device()


class _Handle:
    """What gr-uhd's usrp_block offers that the flowgraph uses; ``sign`` +1 RX, -1 TX (UHD's xx_sign)."""

    sign = 1

    def _init_handle(self):
        self.dev = DEVICE
        self.rf_hz, self.dsp_hz, self.gain_db, self.bandwidth_hz = 2.4e9, 0.0, 0.0, 1e6

    def get_gain_range(self, chan=0):
        return Range(0.0, 89.75 if self.sign < 0 else 76.0)

    def get_freq_range(self, chan=0):
        return Range(70e6, 6e9)

    def get_samp_rates(self):
        return Range(200e3, 56e6)

    def get_bandwidth_range(self, chan=0):
        return Range(200e3, 56e6)

    def set_samp_rate(self, rate):
        self.dev.rate = rate

    def get_samp_rate(self):
        return self.dev.rate

    def set_bandwidth(self, bandwidth, chan=0):
        self.bandwidth_hz = bandwidth

    def set_gain(self, gain, chan=0):
        self.gain_db = gain

    def set_center_freq(self, request, chan=0):
        """UHD's tune_xx_subdev_and_dsp: the RF LO as the policy says, the DSP makes up the rest."""
        if not isinstance(request, real_uhd.tune_request):
            request = real_uhd.tune_request(request)
        manual = real_uhd.tune_request.POLICY_MANUAL
        target_rf = request.rf_freq if request.rf_freq_policy == manual else request.target_freq
        self.rf_hz = round(min(max(target_rf, 70e6), 6e9) / RF_STEP_HZ) * RF_STEP_HZ
        dsp = request.dsp_freq if request.dsp_freq_policy == manual else (self.rf_hz - request.target_freq) * self.sign
        self.dsp_hz = round(min(max(dsp, -MASTER_CLOCK_HZ / 2), MASTER_CLOCK_HZ / 2) / NCO_STEP_HZ) * NCO_STEP_HZ
        return types.SimpleNamespace(clipped_rf_freq=target_rf, target_rf_freq=target_rf, actual_rf_freq=self.rf_hz,
                                     target_dsp_freq=dsp, actual_dsp_freq=self.dsp_hz)

    def get_center_freq(self, chan=0):
        return self.rf_hz - self.dsp_hz * self.sign

    def get_sensor_names(self, chan=0):
        return ["lo_locked"]

    def get_sensor(self, name, chan=0):
        return Sensor(True)

    def get_mboard_sensor_names(self, mboard=0):
        return ["ref_locked"]

    def get_mboard_sensor(self, name, mboard=0):
        return Sensor(self.dev.ref_locked())

    def get_clock_sources(self, mboard=0):
        return list(self.dev.sources)

    def get_time_sources(self, mboard=0):
        return list(self.dev.sources)

    def set_clock_source(self, source, mboard=0):
        self.dev.clock_source = source

    def set_time_source(self, source, mboard=0):
        self.dev.time_source = source

    def set_time_unknown_pps(self, time_spec):
        if self.dev.time_source != "internal" and os.environ.get("FAKE_UHD_PPS", "yes") != "yes":
            raise RuntimeError("Board 0 may not be getting a PPS signal!\nNo PPS detected within the time interval.")

    def _pace(self, n: int) -> int:
        """Samples this work call may handle at the sample rate (sleeps for their air time)."""
        n = min(n, max(1, int(self.dev.rate * CHUNK_S)))
        time.sleep(n / self.dev.rate)
        return n


class usrp_sink(gr.sync_block, _Handle):
    sign = -1

    def __init__(self, device_args, stream_args):
        gr.sync_block.__init__(self, name="usrp_sink", in_sig=[np.complex64], out_sig=None)
        self._init_handle()
        self.message_port_register_out(pmt.intern("async_msgs"))

    def work(self, input_items, output_items):
        """Into the cable; the source's pace holds the sink back (as a device's TX clock does)."""
        n = min(len(input_items[0]), max(1, int(self.dev.rate * CHUNK_S)))
        with self.dev.ready:
            if not self.dev.ready.wait_for(lambda: self.dev.queued < MAX_LOOP_SAMPLES, timeout=0.1):
                return 0
            self.dev.loop.append(input_items[0][:n].copy())
            self.dev.queued += n
            self.dev.ready.notify_all()
        return n


class usrp_source(gr.sync_block, _Handle):
    def __init__(self, device_args, stream_args):
        gr.sync_block.__init__(self, name="usrp_source", in_sig=None, out_sig=[np.complex64])
        self._init_handle()
        self.pending = np.zeros(0, np.complex64)
        self.rng = np.random.default_rng(1)

    def work(self, input_items, output_items):
        out = output_items[0]
        n = self._pace(len(out))
        with self.dev.ready:
            self.dev.ready.wait_for(lambda: self.pending.size + self.dev.queued >= n, timeout=CHUNK_S)
            while self.pending.size < n and self.dev.loop:
                chunk = self.dev.loop.popleft()
                self.dev.queued -= chunk.size
                self.pending = np.concatenate([self.pending, chunk])
            self.dev.ready.notify_all()
        took = min(n, self.pending.size)
        out[:n] = (self.rng.standard_normal(n) + 1j * self.rng.standard_normal(n)) * (NOISE_RMS / np.sqrt(2))
        out[:took] += LOOPBACK_GAIN * self.pending[:took]
        self.pending = self.pending[took:]
        return n


def module() -> types.ModuleType:
    """The fake ``gnuradio.uhd``: the fake blocks, the real request/argument types."""
    fake = types.ModuleType("gnuradio.uhd")
    fake.usrp_sink, fake.usrp_source = usrp_sink, usrp_source
    for name in ("tune_request", "stream_args", "time_spec"):
        setattr(fake, name, getattr(real_uhd, name))
    return fake


if __name__ == "__main__":
    import gnuradio

    gnuradio.uhd = sys.modules["gnuradio.uhd"] = module()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
