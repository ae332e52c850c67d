"""The Transmitter: the only object that makes radios transmit.

It takes executed powers only as ``sim.safety.SafePowers`` (which only the safety filter can
make), turns them into pilot waveforms (``hardware.dsp.PilotPlan``) scaled by the digital
per-link gains, checks every radio's hard limits for every burst before sending any, and raises
``SafetyViolation`` on anything outside them. It never clips: a burst that would exceed the
amplitude limit is refused, not reshaped. In dry-run mode it builds and checks everything and
sends nothing.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hardware.dsp import PilotPlan
from hardware.radio import _BURST_KEY, Radio, RadioError, SafetyViolation, TxBurst
from sim.safety import SafePowers

__all__ = ["Transmitter"]


class Transmitter:
    """Sends the pilots of every BS from the radio that carries it.

    radios: name -> open, configured Radio; bs_radio: name of the radio carrying each BS [B].
    """

    def __init__(self, radios: Mapping[str, Radio], bs_radio: Sequence[str], plan: PilotPlan,
                 dry_run: bool = False):
        if len(bs_radio) != plan.num_bs:
            raise ValueError(f"bs_radio names {len(bs_radio)} radios, the pilot plan has {plan.num_bs} BSs")
        missing = sorted(set(bs_radio) - set(radios))
        if missing:
            raise ValueError(f"bs_radio names radios that are not open: {missing}")
        self.radios = dict(radios)
        self.bs_radio = list(bs_radio)
        self.plan = plan
        self.dry_run = dry_run
        self.last_bursts: dict[str, TxBurst] = {}   # what the last transmit sent (or would have, in dry run)

    def tx_power(self, safe: SafePowers, env: int, link_gain: np.ndarray) -> np.ndarray:
        """Pilot power of each BS in each band, full-scale units [B, K]: p̂ · link_gain.

        link_gain [B, K]: full-scale units per W (>= 0, finite) for env ``env`` of ``safe``.
        """
        if not isinstance(safe, SafePowers):
            raise SafetyViolation(f"the Transmitter takes powers from the safety filter, got {type(safe).__name__}")
        power_w = safe.power_w[env].detach().cpu().double().numpy()           # [B, K]
        mask = safe.mask[env].cpu().numpy()
        if np.any((power_w > 0) & ~mask):
            raise SafetyViolation("executed power on a band the safety mask closes")
        link_gain = np.asarray(link_gain, dtype=np.float64)
        if link_gain.shape != power_w.shape:
            raise ValueError(f"link_gain must have shape {power_w.shape}, got {link_gain.shape}")
        if np.any(link_gain < 0) or not np.all(np.isfinite(link_gain)):
            raise ValueError("link_gain must be finite and >= 0")
        return power_w * link_gain

    def build(self, safe: SafePowers, env: int, link_gain: np.ndarray, signature: int = 0) -> dict[str, np.ndarray]:
        """One period of IQ per radio (complex64 [P]) on the pilot set ``signature``; radios with
        nothing to send are left out."""
        power = self.tx_power(safe, env, link_gain)
        out = {}
        for name in dict.fromkeys(self.bs_radio):
            mine = np.array([r == name for r in self.bs_radio])
            if np.any(power[mine] > 0):
                out[name] = self.plan.waveform(np.where(mine[:, None], power, 0.0), signature)
        return out

    def peak(self, safe: SafePowers, env: int, link_gain: np.ndarray) -> float:
        """Largest |IQ| any radio's burst would have on either pilot set (0 if nothing would be sent):
        a back-off computed from it holds whichever set the burst is then sent on."""
        return max((float(np.abs(iq).max()) for signature in (0, 1)
                    for iq in self.build(safe, env, link_gain, signature).values()), default=0.0)

    def transmit(self, safe: SafePowers, env: int, link_gain: np.ndarray, signature: int = 0) -> dict[str, TxBurst]:
        """Check every burst against its radio's hard limits, then start them all (cyclic).

        Radios with nothing to send are muted. Raises SafetyViolation before anything is sent
        if any burst or any radio's settings break a limit. ``signature``: the pilot set
        (``PilotPlan.pilots``), alternated by the caller so stale captures can be told apart.
        """
        waves = self.build(safe, env, link_gain, signature)
        for name, iq in waves.items():
            radio = self.radios[name]
            if radio.settings is None:
                raise RadioError(f"{name}: configure() before transmitting")
            radio.limits.check_settings(radio.settings)
            radio.limits.check_iq(iq)
        bursts = {name: TxBurst(iq, cyclic=True, _key=_BURST_KEY) for name, iq in waves.items()}
        self.last_bursts = bursts
        for name in dict.fromkeys(self.bs_radio):
            if self.dry_run or name not in bursts:
                self.radios[name].mute()
            else:
                self.radios[name].send(bursts[name])
        return bursts

    def transmit_calibration(self, safe: SafePowers, radio: str, power_per_band_fs: float) -> TxBurst | None:
        """Start the calibration burst (``PilotPlan.calibration_waveform``) on ``radio`` alone, in
        the bands the filter let every one of its BSs use (``safe`` of env 0, level > 0 where
        asked); every other BS radio is muted. Checked against the radio's hard limits like any
        burst; nothing is sent in dry run or when no band is open (returns None then)."""
        if not isinstance(safe, SafePowers):
            raise SafetyViolation(f"the Transmitter takes powers from the safety filter, got {type(safe).__name__}")
        mine = np.array([r == radio for r in self.bs_radio])
        if not mine.any():
            raise ValueError(f"{radio} carries no BS")
        power_w = safe.power_w[0].detach().cpu().numpy()[mine]          # [B_radio, K]
        if np.any((power_w > 0) & ~safe.mask[0].cpu().numpy()[mine]):
            raise SafetyViolation("calibration power on a band the safety mask closes")
        bands = (power_w > 0).all(axis=0)                                 # [K]
        for name in dict.fromkeys(self.bs_radio):
            if name != radio:
                self.radios[name].mute()
        if self.dry_run or not bands.any():
            self.radios[radio].mute()
            return None
        iq = self.plan.calibration_waveform(power_per_band_fs, bands)
        target = self.radios[radio]
        if target.settings is None:
            raise RadioError(f"{radio}: configure() before transmitting")
        target.limits.check_settings(target.settings)
        target.limits.check_iq(iq)
        burst = TxBurst(iq, cyclic=True, _key=_BURST_KEY)
        target.send(burst)
        return burst

    def mute_all(self) -> None:
        """Mute every BS radio; tries all of them and re-raises the first error."""
        first: Exception | None = None
        for name in dict.fromkeys(self.bs_radio):
            try:
                self.radios[name].mute()
            except RadioError as err:
                first = first or err
        if first is not None:
            raise first
