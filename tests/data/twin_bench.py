"""A mock bench whose true parameters are set, and hidden from the model: per-band transmit
responses of the BS radios (a PA's gain offset and ripple), cable errors on the links into the UE
radio, a UE radio noisier than N0, couplings between the BS radios (what their map turns
measure, ``hardware.measure_map``), and incumbents of known occupancy, on-time and power. It is
what `testbed calibrate` is tested and timed on (tests/testbed/test_calibrate.py,
benchmarks/calibrate_time.py).

    python tests/data/twin_bench.py DIR [STEPS]      # record STEPS steps of random levels into DIR
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hardware.dsp import PilotPlan
from hardware.emulated.scene import antenna_noise_fs
from hardware.measured import MeasuredNetwork
from sim.units import db_to_amplitude, db_to_lin
from testbed.backends import make_backend
from testbed.config import Config, load_config

RADIOS = [
    {"name": "bs0", "driver": "mock", "role": "bs", "nodes": [0]},
    {"name": "bs1", "driver": "mock", "role": "bs", "nodes": [1]},
    {"name": "ue0", "driver": "mock", "role": "ue", "nodes": [], "link_gain_db": -20.0, "cfo_hz": 300.0,
     "delay_samples": 17},
]
INCUMBENTS = {"incumbent_occupancy": [0.25, 0.25], "incumbent_on_steps": [6.0, 6.0],
              "incumbent_power_dbm": [-80.0, -80.0]}
OVERRIDES = {"network": {"num_bs": 2, "num_ue": 4, "num_bands": 3, "episode_steps": 50},
             "env": {"task_seed": 6},             # both BSs serve two UEs
             "tasks": INCUMBENTS,
             "hardware": {"radios": RADIOS, "fft_size": 256, "capture_samples": 2048, "tones_per_bs": 2}}


@dataclass(frozen=True)
class Truth:
    """What the bench does that the model does not know."""

    tx_response_db: dict = field(default_factory=lambda: {"bs0": [-1.0, -4.0, -2.0], "bs1": [-5.0, -2.0, -3.5]})
    link_error_db: dict = field(default_factory=lambda: {"bs0": -1.5, "bs1": 0.0})   # cable into ue0 vs link_gain_db
    ue_noise_db: float = 3.0          # ue0's noise above N0, dB
    coupling_db: dict = field(default_factory=lambda: {("bs0", "bs1"): 4.0, ("bs1", "bs0"): -3.0})  # BS->BS

    def offset_db(self, bs_radio: list[str]) -> np.ndarray:
        """The gain of each BS's signal on each band beyond the model's [B, K], dB."""
        return np.array([np.add(self.tx_response_db[r], self.link_error_db[r]) for r in bs_radio])

    def bs_offset_db(self, bs_radio: list[str]) -> np.ndarray:
        """ε(b',b,k) [B', B, K], dB: BS b' at BS b's radio beyond the model's, its TX response and the
        coupling (NaN on the diagonal)."""
        out = np.full((len(bs_radio), len(bs_radio), len(self.tx_response_db[bs_radio[0]])), np.nan)
        for (tx, rx), coupling in self.coupling_db.items():
            out[bs_radio.index(tx), bs_radio.index(rx)] = np.add(self.tx_response_db[tx], coupling)
        return out

    def coupling_c_db(self, bs_radio: list[str]) -> np.ndarray:
        """c(b',b) [B', B], dB, what the twin needs on top of its PA offsets δ: the coupling less the
        cable error into the UE radio that δ(b',k) holds (NaN on the diagonal)."""
        out = np.full((len(bs_radio), len(bs_radio)), np.nan)
        for (tx, rx), coupling in self.coupling_db.items():
            out[bs_radio.index(tx), bs_radio.index(rx)] = coupling - self.link_error_db[tx]
        return out


class TxResponse:
    """A BS radio's transmit chain between its DAC and the medium, with a gain per band (dB)."""

    def __init__(self, port, plan: PilotPlan, gain_db: list[float]):
        self.port, self.fft_size = port, plan.fft_size
        self.gain = np.ones(plan.fft_size)
        for k, g in enumerate(gain_db):
            self.gain[plan.band_bins[k]] = db_to_amplitude(g)

    def transmit(self, iq: np.ndarray, cyclic: bool = True, state: dict | None = None) -> None:
        periods = np.asarray(iq).reshape(-1, self.fft_size)          # the bursts are whole pilot periods
        shaped = np.fft.ifft(np.fft.fft(periods, axis=1) * self.gain, axis=1).ravel()
        self.port.transmit(shaped.astype(np.complex64), cyclic, state)

    def __getattr__(self, name):
        return getattr(self.port, name)


def config(directory: Path | str = "", iq: bool = True) -> Config:
    """The bench, recording into ``directory`` (empty: no recording; ``iq``: with the captured IQ)."""
    hw = {**OVERRIDES["hardware"], "record": {"dir": str(directory), "iq": iq}}
    return load_config("bench_mock", {**OVERRIDES, "hardware": hw})


def hide(net: MeasuredNetwork, truth: Truth) -> None:
    """Give the mock bench of ``net`` the true parameters ``truth`` (after its start-up calibration)."""
    hw, params = net.hw, net.params
    medium = next(iter(net.radios.values())).medium
    ue = next(e for e in hw.radios if e.role == "ue")
    for bs, error in truth.link_error_db.items():
        link = medium.link(bs, ue.name)
        medium.set_link(bs, ue.name, gain_db=link.gain_db + error)
        net.radios[bs].port = TxResponse(net.radios[bs].port, net.plan, truth.tx_response_db[bs])
    medium.set_noise(antenna_noise_fs(hw, params, net.plan) * db_to_lin(truth.ue_noise_db), rx=ue.name)
    for (tx, rx), offset in truth.coupling_db.items():
        net.scene.couple(tx, rx, offset)


def record(directory: Path, steps: int, truth: Truth = Truth(), seed: int = 0, iq: bool = True) -> Path:
    """Record ``steps`` steps of seeded random levels on the bench with ``truth`` hidden in it."""
    cfg = config(directory, iq)
    net = make_backend(cfg, num_envs=1)
    gen = torch.Generator().manual_seed(seed)
    p = cfg.network
    try:
        hide(net, truth)
        for t in range(steps):
            if t % p.episode_steps == 0:
                net.reset(seed=seed + t)
            net.step(torch.randint(0, p.num_levels, (1, p.num_bs, p.num_bands), generator=gen))
    finally:
        net.close()
    return directory


if __name__ == "__main__":
    print(record(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 300))
