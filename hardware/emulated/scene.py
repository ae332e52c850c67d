"""Sets a mock bench's RF medium from the simulated network, so the mock backend measures the
network the simulator computes: receiver noise = N0 per band, the task's incumbents = real
band-limited interferers, and the physical links of the radio map: every BS radio into every UE
radio and into every other BS radio (the map turns of ``hardware.measure_map``), at the receiving
entry's ``link_gain_db``, with an optional hidden coupling per BS pair (``couple``).

Units: the bench maps network power P (W) to full-scale power P / full_scale_w at every
receiver's samples (``HardwareConfig.full_scale_dbm``). A mock radio multiplies by its TX gain
on the way out and its RX gain on the way in; the medium sits between, at the antennas.
"""
from __future__ import annotations

import numpy as np

from hardware.config import HardwareConfig, RadioEntry
from hardware.dsp import PilotPlan
from hardware.emulated.medium import RfMedium
from sim.params import NetworkParams
from sim.units import db_to_lin, dbm_to_w

__all__ = ["TaskScene", "antenna_noise_fs", "antenna_link_gain_db"]


def antenna_noise_fs(hw: HardwareConfig, params: NetworkParams, plan: PilotPlan) -> float:
    """Receiver noise power per sample at the antenna, full-scale units, such that every band
    holds N0 after the RX gain: N0 / full_scale_w / G_rx, spread over the band's share of bins."""
    noise_band_fs = params.noise_w / dbm_to_w(hw.full_scale_dbm) / db_to_lin(hw.rx_gain_db)
    return noise_band_fs * plan.fft_size / plan.bins_per_band


def antenna_link_gain_db(hw: HardwareConfig, entry: RadioEntry) -> float:
    """Gain of the medium's link into a radio, antenna to antenna, in dB: the receiving entry's total
    ``link_gain_db`` (TX gain + path + RX gain) less the radios' TX and RX gains."""
    return entry.link_gain_db - hw.tx_gain_db - hw.rx_gain_db


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
        medium.set_noise(antenna_noise_fs(hw, params, plan))
        for rx in hw.radios:
            for bs in hw.radios_with_role("bs"):
                if bs.name != rx.name:
                    medium.set_link(bs.name, rx.name, gain_db=antenna_link_gain_db(hw, rx), delay_samples=rx.delay_samples)

    def couple(self, tx: str, rx: str, offset_db: float) -> None:
        """Make BS radio ``rx`` hear BS radio ``tx`` ``offset_db`` dB stronger than its ``link_gain_db``
        says: a coupling the model does not know (hidden truth of an emulated bench, for calibration)."""
        entry = next(e for e in self.hw.radios_with_role("bs") if e.name == rx)
        self.medium.set_link(tx, rx, gain_db=antenna_link_gain_db(self.hw, entry) + offset_db)

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
