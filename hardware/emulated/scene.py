"""Sets a mock bench's RF medium from the simulated network, so the mock backend measures the
network the simulator computes: receiver noise = N0 per band, the task's incumbents = real
band-limited interferers, and the physical links of the radio map.

Units: the bench maps network power P (W) to full-scale power P / full_scale_w at every
receiver's samples (``HardwareConfig.full_scale_dbm``). A mock radio multiplies by its TX gain
on the way out and its RX gain on the way in; the medium sits between, at the antennas.
"""
from __future__ import annotations

import numpy as np

from hardware.config import HardwareConfig
from hardware.dsp import PilotPlan
from hardware.medium import RfMedium
from sim.params import NetworkParams
from sim.units import db_to_lin, dbm_to_w

__all__ = ["TaskScene"]


class TaskScene:
    """The mock medium's noise, links and interferers, kept in step with the network."""

    def __init__(self, medium: RfMedium, hw: HardwareConfig, plan: PilotPlan, params: NetworkParams):
        self.medium = medium
        self.hw = hw
        self.full_scale_w = dbm_to_w(hw.full_scale_dbm)
        self.rx_gain_lin = db_to_lin(hw.rx_gain_db)
        self.band_edges_hz = plan.band_edges_hz(hw.sample_rate_hz) + hw.center_hz     # [K, 2] RF
        self.bs_radio = {b: e.name for e in hw.radios_with_role("bs") for b in e.nodes}
        self.sense_gain_db = {e.name: e.link_gain_db for e in hw.radios_with_role("bs")}
        noise_band = params.noise_w / self.full_scale_w / self.rx_gain_lin            # per band, at the antenna
        medium.set_noise(noise_band * plan.fft_size / plan.bins_per_band)
        for ue in hw.radios_with_role("ue"):
            for bs in hw.radios_with_role("bs"):
                medium.set_link(bs.name, ue.name, gain_db=ue.link_gain_db - hw.tx_gain_db - hw.rx_gain_db,
                                cfo_hz=ue.cfo_hz, delay_samples=ue.delay_samples)

    def apply(self, incumbent_w: np.ndarray, ue_bs: dict[int, tuple[int, str]] | None = None) -> None:
        """Put the incumbents of one env on the medium.

        incumbent_w [B, K]: incumbent power in W near each BS on each band (0 = off). Each BS
        radio hears its BSs' incumbents; ``ue_bs`` maps band k -> (BS whose neighbourhood the
        UE measured on band k sits in, UE radio name), and that radio hears that incumbent.
        """
        self.medium.clear_interferers()
        for b, k in zip(*np.nonzero(incumbent_w > 0)):
            power = float(incumbent_w[b, k]) / self.full_scale_w / self.rx_gain_lin
            bs_name = self.bs_radio[int(b)]
            gains = {bs_name: self.sense_gain_db[bs_name]}
            if ue_bs and int(k) in ue_bs and ue_bs[int(k)][0] == b:
                gains[ue_bs[int(k)][1]] = 0.0
            lo, hi = self.band_edges_hz[k]
            self.medium.set_interferer(f"incumbent_b{b}_k{k}", lo, hi, power, gains)
