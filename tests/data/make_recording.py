"""Regenerates tests/data/recording_mock: a small recording of the mock bench (2 BSs, 4 UEs,
3 bands, 512-sample captures, 2 episodes of 4 steps with random levels, one stale capture
injected), the regression input of the DSP (tests/hardware/test_replay.py).

    python tests/data/make_recording.py [DIR]
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from testbed.backends import make_backend
from testbed.config import load_config

DEFAULT_DIR = Path(__file__).resolve().parent / "recording_mock"
RADIOS = [
    {"name": "bs0", "driver": "mock", "role": "bs", "nodes": [0]},
    {"name": "bs1", "driver": "mock", "role": "bs", "nodes": [1]},
    {"name": "ue0", "driver": "mock", "role": "ue", "nodes": [], "link_gain_db": -20.0, "cfo_hz": 300.0,
     "delay_samples": 17},
]
OVERRIDES = {"network": {"num_bs": 2, "num_ue": 4, "num_bands": 3, "episode_steps": 4},
             "hardware": {"radios": RADIOS, "fft_size": 256, "capture_samples": 512, "tones_per_bs": 2}}
STEPS = 8


def config(directory: Path):
    """The bench of the recording, recording into ``directory``."""
    return load_config("bench_mock", {**OVERRIDES, "hardware": {**OVERRIDES["hardware"],
                                                                 "record": {"dir": str(directory)}}})


def record(directory: Path = DEFAULT_DIR) -> Path:
    """Record the run into ``directory`` (replacing what is there)."""
    shutil.rmtree(directory, ignore_errors=True)
    cfg = config(directory)
    net = make_backend(cfg, num_envs=1)
    gen = torch.Generator().manual_seed(3)
    shape = (1, cfg.network.num_bs, cfg.network.num_bands)
    try:
        net.reset(seed=cfg.env.seed)
        for t in range(STEPS):
            if t == 2:
                net.radios["ue0"].inject_fault("stale")        # the next ue0 capture repeats the one before
            if t and t % cfg.network.episode_steps == 0:
                net.reset()
            net.step(torch.randint(0, cfg.network.num_levels, shape, generator=gen))
    finally:
        net.close()
    return directory


if __name__ == "__main__":
    print(record(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR))
