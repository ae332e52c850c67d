"""The measured network backend: the simulator's step with its two hooks measured on radios.

Per step (``sim.network.SimNetwork`` runs the rest, identically on every backend):
  sense     ``sense_external_w``: every BS radio captures with all TX off; band power above the
            noise floor calibrated at start-up is the external interference X_bs [N, B, K];
  filter    the shared safety filter turns requests into ``SafePowers``;
  transmit  ``link_sinr``: in turns, every BS radio sends the pilots of its BSs, each scaled by
            the executed power and a digital per-link gain that puts the large-scale geometry
            (path loss, shadowing, fading) of the UE measured on that band into the waveform;
  capture   the UE radio standing in for that UE captures;
  estimate  per-band least squares gives every BS's received power and the residual (noise +
            real external interference), hence the SINR of the link;
  map       ``interference_map_w`` (``hardware.measure_map``): after sensing, every BS b in turn has
            its radio capture while the other BS radios send their BSs' pilots b' scaled by the
            executed power and the network's BS-to-BS gain h(b',b) (its own radio is muted: a
            radio never captures its own burst); the estimate gives p̂(b',k)·h(b',b) as the bench
            delivers it, which replaces the model's term of the map I(b,k) the next filter reads.
            Pairs of BSs on one radio keep the model's term.
On band k, turn j measures the j-th active link (b, k): its served UE u is emulated by its UE
radio, and every BS b' is sent at β(b',k)·p̂(b',k)·g(b',u) / (full_scale_w·G_radio). β is a
known digital gain: a pilot boost for pilots that would arrive less than ``pilot_snr_db`` above
N0 (so weak links are estimated precisely, as with boosted reference signals in cellular
systems), times a common back-off when the bursts would exceed the TX amplitude limit. The
estimate divides β out, so every BS's power is referred to the network's reference plane,
while the residual (noise + real external interference) is measured as it is. Bands are measured
in parallel, so a step takes as many turns as the busiest band has active links (at most
``max_turns``; links beyond, and UEs no radio stands for, keep the simulator's SINR and are
marked not measured). The map turns use the same boost, back-off, freshness checks and estimate
(one burst and capture per BS with another BS transmitting); a clipped map capture closes every
band of its BS for the next step (fail safe). Dry run: everything runs, nothing radiates, SINR
and map stay simulated.

Captures hold only the present: successive bursts alternate between the two pilot sets of
``hardware.dsp`` (the step signature), so a capture that still holds the previous burst has its
pilot power on the other set, and one that holds the silence before it has no pilots (the
boosted target pilot always stands 20 dB above N0); a sensing capture (TX off) must hold no
pilots at all. Each UE radio gets, every time, the pilot set it did not capture last time (a
turn whose radios last saw different sets is sent twice, once per set), so whatever an old RX
block holds, it is not this burst. A stale capture is discarded and taken again
(MAX_RECAPTURES times at most, then a ``RadioError``), and counted in ``stale_captures``.

Calibration at start (``hardware.calibrate``): every BS radio in turn sends the calibration
burst (``PilotPlan.calibration_waveform``, through the Transmitter and the safety filter, on the
bands the noise-floor capture found free) and every UE radio measures its offset with the coarse
search (``hardware.dsp.estimate_offset``, ±``max_cfo_hz``) in ``CALIBRATION_CAPTURES`` captures,
keeping the median of the clear ones (a majority must be clear). Taking the first UE radio as the
reference, every other radio whose driver can (``Radio.correct_lo``: Pluto's xo_correction, the
mock's LO) is moved onto it; the offsets are measured again, and the run is refused (a
``RadioError`` naming the radio and its offset) if a UE radio's common offset is beyond what the
per-step estimator removes or its BS radios still disagree by more than ``max_residual_cfo_hz``.
``calibration`` holds the figures per radio.

A capture with I or Q at the ADC's full scale (``CLIP_LEVEL``) in more than ``CLIP_SHARE`` of its
samples is clipped and counted in ``clipped_captures``: sensed with TX off, every band of its BSs
counts as occupied above I_max (fail safe: the filter closes them); measured, its links keep the
simulator's SINR and are marked not measured.

``overflows`` and ``underflows`` sum what every radio's device reported (``Radio.overflows``: RX
samples lost during a capture; ``Radio.underflows``: the DAC ran dry), beside those counts.

Recording (``hardware.record``, ``hardware.recording``): every capture is handed to
``recorder`` with its kind, step, env, bands, pilot set, the levels on air, the receiving BS of a
map capture and its stale/clipped verdicts, every reset and step end too (a step's row with its
map turns' measured and model powers); ``close()`` writes the metadata. With no recording the
recorder does nothing. Replay (``hardware.replay``) runs this same class on radios that serve a
recording's captures and a recorder that checks each capture was taken as recorded.

A radio error (timeout, disconnect), a recording's write error or a safety violation mutes every
radio and propagates, so the env/runner ends the episode and saves its data.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch

from hardware.config import HardwareConfig
from hardware.dsp import BandEstimate, PilotPlan, band_power, estimate, estimate_offset, external_power, link_sinr
from hardware.radio import Radio, RadioError, SafetyViolation
from hardware.recording import NullRecorder, Recorder, step_row
from hardware.transmitter import Transmitter
from sim.network import SimNetwork, StepNoise, StepResult
from sim.params import NetworkParams, TaskRanges
from sim.safety import SafePowers, apply_safety_filter
from sim.units import amplitude_to_db, db_to_lin, dbm_to_w

if TYPE_CHECKING:
    from hardware.emulated.scene import TaskScene
    from hardware.gnuradio_bridge.process import FlowgraphProcess

__all__ = ["MeasuredNetwork", "BackendError", "close_all", "check_radio_map", "ue_radio_map"]

_HEADROOM = 0.95        # bursts are scaled to at most this share of max_amplitude
STALE_SHARE = 0.1        # a band with more pilot power on the other signature than this share of
                         # its own (and more than SENSE_PILOT_SHARE of its residual) is stale
CALIBRATION_CAPTURES = 3  # captures per (BS, UE) radio pair in calibration; the median of their offsets is
                          # kept, so one capture torn by an overflow or a stale buffer cannot set a correction
SENSE_PILOT_SHARE = 0.1  # pilots are present in a band when their power exceeds this share of its residual
MISSING_DB = 10.0        # pilots this far below what is due at the UE radio are missing: a capture
                         # of the silence before the burst
MAX_RECAPTURES = 2
CLIP_LEVEL = 0.999       # |I| or |Q| at this share of full scale is at the ADC's limit
CLIP_SHARE = 1e-4        # a capture with more of its samples there is clipped
CLIPPED_SENSE_W = 1.0    # what a clipped sensing capture reports per band: far above any I_max


class BackendError(ValueError):
    """The radio map does not fit the network (a BS without a radio, a wrong driver)."""


class MeasuredNetwork(SimNetwork):
    """N networks whose SINR and external interference are measured on radios (N envs in turn)."""

    def __init__(self, params: NetworkParams, ranges: TaskRanges, num_envs: int, hw: HardwareConfig,
                 radios: dict[str, Radio], device="cpu", seed: int = 0, task_seed: int | None = None,
                 scene: TaskScene | None = None, flowgraphs: list[FlowgraphProcess] | None = None,
                 plan: PilotPlan | None = None, recorder: Recorder | NullRecorder | None = None):
        super().__init__(params, ranges, num_envs, device=device, seed=seed, task_seed=task_seed)
        self.hw = hw
        self.radios = radios
        self.flowgraphs = list(flowgraphs or [])   # bridge processes this backend started; close() stops them
        self.scene = scene
        self.plan = plan or hw.pilot_plan(params.num_bs, params.num_bands)   # the backend's, shared with its scene
        self.bs_radio = _bs_radio_map(hw, params.num_bs)
        self.ue_radio = ue_radio_map(hw, params.num_ue)
        gain_db = {e.name: e.link_gain_db for e in hw.radios}
        self.radio_gain_lin = {name: db_to_lin(g) for name, g in gain_db.items()}
        self.full_scale_w = dbm_to_w(hw.full_scale_dbm)
        self.pilot_floor_w = params.noise_w * db_to_lin(hw.pilot_snr_db)
        self.transmitter = Transmitter(radios, self.bs_radio, self.plan, dry_run=hw.dry_run)
        self.last_turns = 0
        self.last_backoff_db = 0.0
        self.stale_captures = 0      # captures discarded for holding an earlier burst, since start
        self.clipped_captures = 0    # captures at the ADC's full scale, since start
        self._last_signature = {name: 1 for name in radios}   # pilot set each radio last captured
        self.recorder = recorder or NullRecorder()   # hardware.recording: told every capture and step
        self.steps_done = 0                          # steps since start, over every episode
        self.last_map: dict | None = None            # the last map turns' powers (``measure_map``), for the step row
        self.noise_floor: dict[str, np.ndarray] = {}
        self.calibration: dict[str, dict[str, float]] = {}
        try:
            with self._muting_on_error():
                settings = hw.settings()
                for radio in radios.values():
                    radio.configure(settings)
                self.transmitter.mute_all()
                self.noise_floor = {name: band_power(self.plan, self._capture(name, kind="noise"))
                                    for name in dict.fromkeys(self.bs_radio)}   # [K] full-scale units
                if hw.calibrate and not hw.dry_run:
                    self.calibration = self._calibrate()
        except BaseException:
            self.recorder.close(self.summary())
            raise

    # --- the step, recorded ----------------------------------------------------------------
    def reset(self, seed: int | None = None, new_task: bool = True) -> None:
        self.recorder.reset(seed, new_task)
        super().reset(seed=seed, new_task=new_task)

    def step_with_noise(self, level: torch.Tensor, noise: StepNoise) -> StepResult:
        result = super().step_with_noise(level, noise)
        self.recorder.step(step_row(self.steps_done, result, turns=self.last_turns, backoff_db=self.last_backoff_db,
                                    stale_captures=self.stale_captures, clipped_captures=self.clipped_captures,
                                    **(self.last_map or {})))
        self.steps_done += 1
        return result

    @property
    def overflows(self) -> int:
        """RX overflows every radio's device reported since start (``Radio.overflows``)."""
        return sum(r.overflows for r in self.radios.values())

    @property
    def underflows(self) -> int:
        """TX underflows every radio's device reported since start (``Radio.underflows``)."""
        return sum(r.underflows for r in self.radios.values())

    def summary(self) -> dict:
        """The run's start-up figures and capture counts, as plain data (for the recording)."""
        return {"noise_floor": {name: floor.tolist() for name, floor in self.noise_floor.items()},
                "calibration": self.calibration, "stale_captures": self.stale_captures,
                "clipped_captures": self.clipped_captures, "overflows": self.overflows,
                "underflows": self.underflows, "steps": self.steps_done}

    # --- hooks -------------------------------------------------------------------------
    def sense_external_w(self) -> torch.Tensor:
        """Capture at every BS radio with TX off; band power above the floor, in W. [N, B, K]."""
        p = self.params
        out = np.zeros((self.num_envs, p.num_bs, p.num_bands))
        with self._muting_on_error():
            self.transmitter.mute_all()
            for n in range(self.num_envs):
                self._apply_scene(n)
                for name in dict.fromkeys(self.bs_radio):
                    iq, clipped = self._fresh_capture(name, self._holds_no_pilots, kind="sense", env=n,
                                                      bands=list(range(p.num_bands)))
                    mine = [b for b, r in enumerate(self.bs_radio) if r == name]
                    if clipped:
                        out[n, mine] = CLIPPED_SENSE_W
                        continue
                    excess_w = external_power(self.plan, iq, self.noise_floor[name]) * self.full_scale_w
                    out[n, mine] = excess_w / self.radio_gain_lin[name]
        return torch.as_tensor(out, dtype=torch.float32, device=self.device)

    def link_sinr(self, safe: SafePowers, served_ue: torch.Tensor, gain_db: torch.Tensor,
                  external_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Measured SINR where a radio could measure it, the simulator's elsewhere. [N, B, K] x2."""
        sinr_sim, _ = super().link_sinr(safe, served_ue, gain_db, external_w)
        sinr = sinr_sim.detach().cpu().double().numpy().copy()
        measured = np.zeros(sinr.shape, dtype=bool)
        gain_lin = db_to_lin(gain_db.detach().cpu().double()).numpy()      # [N, B, U]
        served = served_ue.cpu().numpy()
        on = safe.power_w.cpu().numpy() > 0
        with self._muting_on_error():
            for n in range(self.num_envs):
                self._measure_env(safe, n, served[n], on[n], gain_lin[n], sinr[n], measured[n])
            self.transmitter.mute_all()
        if self.hw.dry_run:
            return sinr_sim, torch.zeros_like(safe.mask)
        return (torch.as_tensor(sinr, dtype=sinr_sim.dtype, device=self.device),
                torch.as_tensor(measured, device=self.device))

    def interference_map_w(self, safe: SafePowers, radiated_w: torch.Tensor, external_w: torch.Tensor) -> torch.Tensor:
        """The model's map (Eq. 7) with, under ``hardware.measure_map``, the BS-to-BS terms measured
        on radios in place of the model's, and the bands of a BS whose map capture clipped closed."""
        model = super().interference_map_w(safe, radiated_w, external_w)
        if not self.hw.measure_map:
            return model
        p, n_env = self.params, self.num_envs
        gain = self._bs_gain_lin()                                                   # [N, B', B]
        gain_np = gain.detach().cpu().double().numpy()
        model_w = safe.power_w.detach().cpu().double().numpy()[:, :, None, :] * gain_np[..., None]   # [N, B', B, K]
        rx_w = np.zeros(model_w.shape)
        measured = np.zeros(model_w.shape, dtype=bool)
        clipped = np.zeros((n_env, p.num_bs), dtype=bool)
        with self._muting_on_error():
            for n in range(n_env):
                self._measure_map_env(safe, n, gain_np[n], rx_w[n], measured[n], clipped[n])
            self.transmitter.mute_all()
        self.last_map = {"map_rx_w": rx_w.tolist(), "map_model_w": model_w.tolist(), "map_measured": measured.tolist(),
                         "map_clipped": clipped.tolist()}
        if self.hw.dry_run:
            return model
        terms = radiated_w.unsqueeze(2) * gain.unsqueeze(-1)                          # the model's, [N, B', B, K]
        hit = torch.as_tensor(measured, device=self.device)
        bench = torch.as_tensor(rx_w, dtype=model.dtype, device=self.device)
        out = model + (torch.where(hit, bench, 0.0) - torch.where(hit, terms, 0.0)).sum(1)
        return torch.where(torch.as_tensor(clipped, device=self.device).unsqueeze(-1), CLIPPED_SENSE_W, out)

    # --- the measurement -----------------------------------------------------------------
    def _measure_map_env(self, safe: SafePowers, n: int, gain_lin: np.ndarray, rx_w: np.ndarray,
                         measured: np.ndarray, clipped: np.ndarray) -> None:
        """The map turns of env n: BS b's radio captures the pilots of every BS b' on another radio,
        sent at p̂(b',k)·h(b',b) (``gain_lin`` [B', B]) times the boost; writes the measured power
        (W, the boost divided out) into ``rx_w`` / ``measured`` [B', B, K] and ``clipped`` [B]."""
        self._apply_scene(n)
        power_w = safe.power_w[n].detach().cpu().double().numpy()                       # [B', K]
        on_air = {"env": n, "levels": safe.level[n].tolist()}
        limit = _HEADROOM * min(self.radios[r].limits.max_amplitude for r in self.bs_radio)
        for b, radio in enumerate(self.bs_radio):
            other = np.array([r != radio for r in self.bs_radio])                        # [B']
            senders = other[:, None] & (power_w > 0)                                     # [B', K]
            if not senders.any():
                continue
            link_gain = np.where(other, gain_lin[:, b], 0.0)[:, None] / (self.full_scale_w * self.radio_gain_lin[radio])
            due_w = power_w * np.where(other, gain_lin[:, b], 0.0)[:, None]                # [B', K] at BS b
            boost = pilot_boost(due_w, self.params, self.hw)
            peak = self.transmitter.peak(safe, n, link_gain * boost)
            if peak > limit:
                boost *= (limit / peak) ** 2
            signature = 1 - self._last_signature[radio]
            self.transmitter.transmit(safe, n, link_gain * boost, signature)
            if self.hw.settle_s:
                time.sleep(self.hw.settle_s)
            bands = [int(k) for k in np.flatnonzero(senders.any(0))]
            expected_fs = (due_w * boost).sum(axis=0)[bands] / self.full_scale_w
            est = self._estimate_fresh(radio, signature, bands, expected_fs, {**on_air, "rx_bs": b}, kind="map")
            self._last_signature[radio] = signature
            if est is None:
                clipped[b] = True
                continue
            rx_w[:, b] = np.where(senders, est.power / boost * self.full_scale_w, 0.0)
            measured[:, b] = senders

    def _measure_env(self, safe: SafePowers, n: int, served: np.ndarray, on: np.ndarray,
                     gain_lin: np.ndarray, sinr: np.ndarray, measured: np.ndarray) -> None:
        """Measure the active links of env n in turns; writes into sinr / measured [B, K]."""
        has_radio = np.array([self.ue_radio[u] is not None if u >= 0 else False for u in served.ravel()])
        active = on & has_radio.reshape(served.shape)                      # [B, K]
        rank = np.where(active, np.cumsum(active, axis=0) - 1, -1)         # j-th active link of its band
        power_w = safe.power_w[n].detach().cpu().double().numpy()         # [B, K]
        on_air = {"env": n, "levels": safe.level[n].tolist()}              # what a capture is recorded with
        self.last_turns = num_turns = min(int(active.sum(0).max(initial=0)), self.hw.max_turns)
        backoffs = [0.0]
        for j in range(num_turns):
            targets = {int(k): int(np.flatnonzero(rank[:, k] == j)[0]) for k in np.flatnonzero((rank == j).any(0))}
            link_gain = np.zeros(on.shape)                                  # [B, K] FS units per W
            rx_w = np.zeros(on.shape)                                       # [B, K] at the emulated UE
            ue_bs = {}
            for k, b in targets.items():
                u = int(served[b, k])
                radio = self.ue_radio[u]
                link_gain[:, k] = gain_lin[:, u] / (self.full_scale_w * self.radio_gain_lin[radio])
                rx_w[:, k] = power_w[:, k] * gain_lin[:, u]
                ue_bs[k] = (int(self.tasks.assoc[n, u]), radio)
            self._apply_scene(n, ue_bs)
            boost = pilot_boost(rx_w, self.params, self.hw)
            peak = self.transmitter.peak(safe, n, link_gain * boost)
            limit = _HEADROOM * min(self.radios[r].limits.max_amplitude for r in self.bs_radio)
            if peak > limit:
                boost *= (limit / peak) ** 2
                backoffs.append(amplitude_to_db(peak / limit))
            link_gain *= boost
            expected_fs = (rx_w * boost).sum(axis=0) / self.full_scale_w    # [K] pilot power due at the UE
            estimates = {}
            pending = list(dict.fromkeys(r for _, r in ue_bs.values()))
            while pending:                       # each radio gets the set it did not capture last time
                signature = 1 - self._last_signature[pending[0]]
                group = [r for r in pending if self._last_signature[r] != signature]
                self.transmitter.transmit(safe, n, link_gain, signature)
                if self.hw.settle_s:
                    time.sleep(self.hw.settle_s)
                for radio in group:
                    bands = [k for k, (_, r) in ue_bs.items() if r == radio]
                    estimates[radio] = self._estimate_fresh(radio, signature, bands, expected_fs[bands], on_air)
                    self._last_signature[radio] = signature
                pending = [r for r in pending if r not in group]
            for k, b in targets.items():
                est = estimates[ue_bs[k][1]]
                if est is None:                      # clipped: the simulator's SINR stays, not measured
                    continue
                sinr[b, k] = link_sinr(est.power[:, k:k + 1] / boost[:, k:k + 1], est.residual[k:k + 1])[b, 0]
                measured[b, k] = True
        self.last_backoff_db = max(backoffs)

    # --- calibration ---------------------------------------------------------------------
    def _calibrate(self) -> dict[str, dict[str, float]]:
        """Measure, correct and check every radio's LO offset against the first UE radio; returns
        per radio its measured offset, the correction applied (Hz) and the residual after."""
        bs_radios = list(dict.fromkeys(self.bs_radio))
        ue_radios = [e.name for e in self.hw.radios_with_role("ue")]
        ref = ue_radios[0]
        offsets = self._measure_offsets(bs_radios, ue_radios)              # (bs, ue) -> Hz, f_bs - f_ue
        lo_hz = {s: offsets[s, ref] for s in bs_radios}                    # relative to the reference
        lo_hz.update({r: float(np.median([offsets[s, ref] - offsets[s, r] for s in bs_radios]))
                      for r in ue_radios[1:]})
        report = {name: {"offset_hz": lo_hz.get(name, 0.0), "corrected_hz": 0.0} for name in bs_radios + ue_radios}
        for name, offset in lo_hz.items():
            try:
                self.radios[name].correct_lo(offset)
            except RadioError:
                continue                                                   # the driver cannot: checked below
            report[name]["corrected_hz"] = offset
        residual = self._measure_offsets(bs_radios, ue_radios)
        edge_hz = 0.8 * self.hw.sample_rate_hz / (2 * self.plan.fft_size)
        for r in ue_radios:
            seen = {s: residual[s, r] for s in bs_radios}
            common = float(np.median(list(seen.values())))
            report[r]["residual_hz"] = -common
            if abs(common) > edge_hz:
                raise RadioError(f"{r}: offset {common:+.0f} Hz against the BS radios after calibration, beyond the "
                                 f"±{edge_hz:.0f} Hz the per-step estimator removes; share a reference clock or "
                                 "use radios whose LO can be corrected")
            for s, value in seen.items():
                report[s]["residual_hz"] = max(report[s].get("residual_hz", 0.0), value - common, key=abs)
                if abs(value - common) > self.hw.max_residual_cfo_hz:
                    raise RadioError(f"{s}: offset {value - common:+.0f} Hz from the other BS radios at {r} after "
                                     f"calibration, more than max_residual_cfo_hz={self.hw.max_residual_cfo_hz:g}")
        return report

    def _measure_offsets(self, bs_radios: list[str], ue_radios: list[str]) -> dict[tuple[str, str], float]:
        """The LO offset f_bs - f_ue of every BS radio at every UE radio, Hz, from calibration
        bursts sent one BS radio at a time on the bands found free at start."""
        p = self.params
        shape = (1, p.num_bs, p.num_bands)
        safe = apply_safety_filter(torch.ones(shape, dtype=torch.long), torch.zeros(shape),
                                   torch.tensor([0.0, 1.0]), p.i_max_w)
        weakest = min(self.radio_gain_lin[r] for r in ue_radios)
        power_fs = self.pilot_floor_w / self.full_scale_w / weakest        # per band, pilot_snr_db above N0
        limit = _HEADROOM * min(self.radios[s].limits.max_amplitude for s in bs_radios)
        peak = float(np.abs(self.plan.calibration_waveform(power_fs)).max())
        power_fs *= min(1.0, (limit / peak) ** 2) if peak > 0 else 1.0
        out = {}
        for s in bs_radios:
            self.transmitter.transmit_calibration(safe, s, power_fs)
            if self.hw.settle_s:
                time.sleep(self.hw.settle_s)
            for r in ue_radios:
                found = [estimate_offset(self.plan, self._capture(r, kind="calibrate", tx=s), self.hw.sample_rate_hz,
                                         self.hw.max_cfo_hz) for _ in range(CALIBRATION_CAPTURES)]
                clear = [float(f.cfo_hz) for f in found if f.clear]
                if 2 * len(clear) <= CALIBRATION_CAPTURES:
                    self.transmitter.mute_all()
                    raise RadioError(f"{r}: no clear calibration burst from {s} within ±{self.hw.max_cfo_hz:g} Hz "
                                     "(check the cabling and link_gain_db, or raise hardware.max_cfo_hz)")
                out[s, r] = float(np.median(clear))
        self.transmitter.mute_all()
        return out

    def _capture(self, name: str, **fields) -> np.ndarray:
        """One capture of radio ``name``, recorded with ``fields`` (kind, env, bands, ...)."""
        iq = self.radios[name].capture(self.hw.capture_samples)
        self.recorder.capture(name, iq, step=self.steps_done, **fields)
        return iq

    def _fresh_capture(self, name: str, fresh, **fields) -> tuple[np.ndarray, bool]:
        """A capture of radio ``name`` that ``fresh(iq)`` accepts, and whether it was clipped
        (counted in ``clipped_captures``); stale ones are counted and taken again, at most
        MAX_RECAPTURES times. Every capture is recorded with ``fields`` and its verdicts."""
        for _ in range(1 + MAX_RECAPTURES):
            iq = self.radios[name].capture(self.hw.capture_samples)
            ok = fresh(iq)
            clipped = _at_full_scale(iq)
            self.recorder.capture(name, iq, step=self.steps_done, stale=not ok, clipped=clipped, **fields)
            if ok:
                self.clipped_captures += clipped
                return iq, clipped
            self.stale_captures += 1
        raise RadioError(f"{name}: {1 + MAX_RECAPTURES} captures in a row held no burst or an earlier one: stale "
                         "RX buffers, or an LO offset beyond the estimator's range (hardware.calibrate)")

    def _holds_no_pilots(self, iq: np.ndarray) -> bool:
        """A TX-off capture: no BS's pilots (every tone of one set lit beyond a share of the
        band's residual per tone) in any band; a CW interferer on one pilot bin is no burst."""
        est = estimate(self.plan, iq, self.hw.sample_rate_hz)
        per_tone = SENSE_PILOT_SHARE * est.residual / self.plan.tones_per_bs          # [K]
        return bool(np.all(est.min_tone <= per_tone))

    def _estimate_fresh(self, radio: str, signature: int, bands: list[int], expected_fs: np.ndarray,
                        on_air: dict, kind: str = "measure") -> BandEstimate | None:
        """The estimate of a capture of the burst just sent on pilot set ``signature``, judged on
        the bands this radio measures: not mostly on the other set, and, where the pilots are due
        clearly above the noise (``expected_fs`` [bands], full-scale units), not missing (more
        than MISSING_DB below what is due: room for an inexact ``link_gain_db``). None if the
        capture was clipped. ``on_air``: env and executed levels (and more), recorded with the capture
        of ``kind`` (measure: a link turn; map: a map turn)."""
        out = []

        def fresh(iq: np.ndarray) -> bool:
            est = estimate(self.plan, iq, self.hw.sample_rate_hz, signature=signature)
            out.append(est)
            if self.hw.dry_run:                      # nothing was sent: nothing to recognise
                return True
            own, foreign = est.power[:, bands].sum(axis=0), est.foreign[:, bands].sum(axis=0)   # [bands]
            floor = SENSE_PILOT_SHARE * est.residual[bands]
            due = expected_fs > floor / SENSE_PILOT_SHARE ** 2             # due 10 dB above the residual
            missing = due & (own < expected_fs * db_to_lin(-MISSING_DB))
            return bool(not missing.any() and np.all((foreign <= STALE_SHARE * own) | (foreign <= floor)))
        _, clipped = self._fresh_capture(radio, fresh, kind=kind, bands=bands, signature=signature, **on_air)
        return None if clipped else out[-1]

    def _apply_scene(self, n: int, ue_bs: dict[int, tuple[int, str]] | None = None) -> None:
        """Mock bench only: put env n's incumbents on the medium."""
        if self.scene is None:
            return
        incumbent_w = self.state.incumbent_on[n].cpu().numpy() * float(self.tasks.incumbent_power_w[n])
        self.scene.apply(incumbent_w, ue_bs)

    @contextmanager
    def _muting_on_error(self):
        """On a radio error or safety violation: mute every radio (all are tried), then re-raise;
        a radio error says so if a flowgraph this backend started has ended."""
        try:
            yield
        except SafetyViolation:
            self.mute_all()
            raise
        except RadioError as err:
            self.mute_all()
            ended = [fg.exit_report() for fg in self.flowgraphs if not fg.running]
            if ended:
                raise RadioError(f"{err}; {'; '.join(ended)}") from err
            raise

    def mute_all(self) -> None:
        """Best effort: mute every radio, ignoring the errors of the ones that cannot answer."""
        for radio in self.radios.values():
            try:
                radio.mute()
            except RadioError:
                pass

    def close(self) -> None:
        """Mute and close every radio (all are tried; the first error is re-raised), then stop the
        flowgraphs this backend started and write the recording's metadata, whatever happened."""
        try:
            first = close_all(self.radios)
        finally:
            for fg in self.flowgraphs:
                fg.stop()
            self.recorder.close(self.summary())
        if first is not None:
            raise first


def pilot_boost(due_w: np.ndarray, params: NetworkParams, hw: HardwareConfig) -> np.ndarray:
    """β before any back-off: the digital boost of pilots due at ``due_w`` (W at the receiver) that
    would arrive less than ``pilot_snr_db`` above N0, at most ``max_pilot_boost_db``; 1 otherwise."""
    floor_w = params.noise_w * db_to_lin(hw.pilot_snr_db)
    return np.clip(floor_w / np.maximum(due_w, 1e-300), 1.0, db_to_lin(hw.max_pilot_boost_db))


def _at_full_scale(iq: np.ndarray) -> bool:
    """Whether a capture hit the ADC's full scale: clipped."""
    at_limit = (np.abs(iq.real) >= CLIP_LEVEL) | (np.abs(iq.imag) >= CLIP_LEVEL)
    return bool(at_limit.mean() > CLIP_SHARE)


def close_all(radios: dict[str, Radio]) -> RadioError | None:
    """Mute and close every radio, trying all of them; returns the first error, if any."""
    first = None
    for radio in radios.values():
        try:
            radio.close()
        except RadioError as err:
            first = first or err
    return first


def _bs_radio_map(hw: HardwareConfig, num_bs: int) -> list[str]:
    """Name of the radio carrying each BS [B]; every BS needs exactly one."""
    owner: dict[int, str] = {}
    for entry in hw.radios_with_role("bs"):
        for b in entry.nodes:
            if b >= num_bs:
                raise BackendError(f"hardware.radios: {entry.name} carries BS {b}, the network has {num_bs} BSs")
            if b in owner:
                raise BackendError(f"hardware.radios: BS {b} is carried by both {owner[b]} and {entry.name}")
            owner[b] = entry.name
    missing = [b for b in range(num_bs) if b not in owner]
    if missing:
        raise BackendError(f"hardware.radios: BS {missing} have no radio; list them in a bs radio's nodes")
    return [owner[b] for b in range(num_bs)]


def ue_radio_map(hw: HardwareConfig, num_ue: int) -> list[str | None]:
    """Name of the radio standing in for each UE [U] (None: simulated). Explicit nodes first,
    then ue radios with empty nodes share the rest round-robin."""
    out: list[str | None] = [None] * num_ue
    for entry in hw.radios_with_role("ue"):
        for u in entry.nodes:
            if u >= num_ue:
                raise BackendError(f"hardware.radios: {entry.name} stands for UE {u}, the network has {num_ue} UEs")
            if out[u] is not None:
                raise BackendError(f"hardware.radios: UE {u} is listed by both {out[u]} and {entry.name}")
            out[u] = entry.name
    spare = [e.name for e in hw.radios_with_role("ue") if not e.nodes]
    rest = [u for u in range(num_ue) if out[u] is None]
    for i, u in enumerate(rest if spare else []):
        out[u] = spare[i % len(spare)]
    return out


def check_radio_map(hw: HardwareConfig, params: NetworkParams) -> None:
    """Raise ``BackendError`` unless every BS has exactly one radio and every UE radio a UE."""
    _bs_radio_map(hw, params.num_bs)
    ue_radio_map(hw, params.num_ue)
