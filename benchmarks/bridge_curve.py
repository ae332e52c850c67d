"""What CURVE costs on the GNU Radio bridge. Prints one JSON line: the median round trip of a
4096-sample pilot burst (pushed to an emulate flowgraph and read back, one link, 127.0.0.1)
over plain ZMQ and over CURVE (control and IQ authenticated and encrypted, the RX stream
relayed), measured in the same run, and their ratio.

Usage: python benchmarks/bridge_curve.py [--repeats 300]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from hardware.config import HardwareConfig, RadioEntry
from hardware.drivers.gnuradio import ZmqRadio
from hardware.gnuradio_bridge.process import FlowgraphProcess
from hardware.radio import RadioSettings
from hardware.transmitter import Transmitter
from sim.safety import apply_safety_filter
from testbed.keys import generate

SAMPLES = 4096


def roundtrip_ms(radio: ZmqRadio, repeats: int, power_fs: float = 1e-3) -> float:
    """Median time for SAMPLES samples of a cyclic pilot burst sent through the Transmitter (one
    BS on ``radio`` at ``power_fs`` full scale in every band) to come back at the same node."""
    plan = HardwareConfig().pilot_plan(num_bs=1, num_bands=4)
    shape = (1, plan.num_bs, plan.num_bands)
    safe = apply_safety_filter(torch.ones(shape, dtype=torch.long), torch.zeros(shape), torch.tensor([0.0, 1.0]),
                               i_max_w=1.0)
    Transmitter({radio.name: radio}, [radio.name], plan).transmit(safe, 0, np.full(shape[1:], power_fs))
    radio.capture(SAMPLES)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        radio.capture(SAMPLES)          # each capture pushes and reads SAMPLES new samples
        times.append(time.perf_counter() - start)
    radio.mute()
    return 1e3 * float(np.median(times))


def measure(repeats: int, keys: dict | None) -> float:
    """Round trip on a fresh one-link flowgraph, with CURVE when keys (``testbed.keys.generate``)."""
    hw = HardwareConfig()
    curve = {} if keys is None else {"curve_server_secret": str(keys["server_secret"]),
                                     "curve_clients": str(keys["clients"])}
    client = {} if keys is None else {"server_key": str(keys["server_public"]), "client_key": str(keys["client_secret"])}
    with FlowgraphProcess("emulate", tx=["a"], rx=["a"], sample_rate_hz=hw.sample_rate_hz, **curve) as fg:
        entry = RadioEntry(name="a", driver="gnuradio", role="bs", nodes=[0], **fg.endpoints("a"), **client)
        radio = ZmqRadio("a", hw.limits(), entry, timeout_s=hw.timeout_s)
        try:
            radio.configure(RadioSettings(hw.center_hz, hw.sample_rate_hz, hw.bandwidth_hz,
                                          tx_gain_db=min(0.0, hw.max_tx_gain_db), rx_gain_db=0.0))
            return roundtrip_ms(radio, repeats)
        finally:
            radio.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=300, help="captures per set-up")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        plain = measure(args.repeats, None)
        curve = measure(args.repeats, generate(tmp))
    print(json.dumps({"samples": SAMPLES, "repeats": args.repeats, "plain_roundtrip_median_ms": round(plain, 3),
                      "curve_roundtrip_median_ms": round(curve, 3), "curve_over_plain": round(curve / plain, 2)}))


if __name__ == "__main__":
    main()
