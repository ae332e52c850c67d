"""Wall time of `testbed calibrate` on a 1000-step recording of the mock bench with hidden PA
offsets, cable errors, a noisier UE radio and incumbents (tests/data/twin_bench.py), beside the
time the recording itself took (the baseline, measured in the same run), and the fit's quality.

    python benchmarks/calibrate_time.py [--steps 1000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests.data.twin_bench

from testbed.calibrate import calibrate, twin_config
from tests.data.twin_bench import Truth, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    truth = Truth()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        directory = record(Path(tmp) / "rec", args.steps, truth)
        record_s = time.perf_counter() - start
        size_mb = sum(f.stat().st_size for f in directory.iterdir()) / 1e6
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            fit, recording = calibrate(directory)
            twin_config(fit, recording.config)
            times.append(time.perf_counter() - start)
    fit_s = float(np.median(times))
    error = np.abs(fit.offset_db - truth.offset_db(["bs0", "bs1"])).max()
    print(f"recording: {args.steps} steps on the mock bench in {record_s:.2f} s ({args.steps / record_s:.0f} steps/s), "
          f"{size_mb:.1f} MB")
    print(f"calibrate: {fit_s:.2f} s (median of {args.repeat}; {', '.join(f'{t:.2f}' for t in times)}), "
          f"{fit_s / record_s:.2f}x the recording's wall time")
    print(f"fit: largest PA offset error {error:.2f} dB; held-out SINR error twin median "
          f"{fit.quality['twin']['median_db']:.2f} / p95 {fit.quality['twin']['p95_db']:.2f} dB, default model median "
          f"{fit.quality['default']['median_db']:.2f} / p95 {fit.quality['default']['p95_db']:.2f} dB "
          f"({fit.quality['twin']['links']} links)")


if __name__ == "__main__":
    main()
