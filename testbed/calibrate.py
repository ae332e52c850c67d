"""`testbed calibrate DIR --out twin.yaml`: fit the simulator to a bench recording (``hardware.record``)
and write the twin, a sim config whose task distribution is centred on the fit.

The measured backend puts the network's geometry (path loss, shadowing, fading: the recorded
``gain_db``) into the pilots digitally, so what the bench adds on top is what is fitted:
  offsets    δ(b,k), dB: how much stronger BS b's signal arrives on band k than the model says
             (its PA's gain offset and ripple, and the cable into the UE radio); least squares
             of the model's SINR (``sim.channel.sinr``, the one Eq. 6) on the recorded SINR of the
             measured links, from the executed powers, the recorded gains and sensed interference;
  noise      per UE radio and band, dBm: the estimator's residual (``hardware.dsp.estimate``) on
             the recorded IQ of measure captures in bands no incumbent occupied;
  incumbents occupancy, mean on-time (steps) and power (dBm) of the sensed external interference;
  crystals   the offset each radio was left with after the start-up correction, and the offset
             the per-step estimator removed at each UE radio (Hz);
  BS-to-BS   with the map turns of ``hardware.measure_map``: ε(b',b,k), dB, how much stronger BS b'
             arrives at BS b's radio than p̂·h(b',b) says, per pair and band, and the twin's
             c(b',b) = ε - δ(b',k) over the bands (its PAs already give BS b' its δ); without
             them the twin keeps the simulator's BS-to-BS gains.
The twin holds a range per BS and band for δ and per BS pair for c (``tasks.pa_gain_offset_db``,
``tasks.bs_gain_offset_db`` as tables of [low, high]). The PA's compression is not fitted: the twin's PAs compress at P_max,
so with offsets <= 0 they never do. The fit uses the first steps; the last ``--held-out`` share
of them is kept out of it and measures its quality: the per-link SINR error (median, p95, dB) of
the fitted model and of the uncalibrated one (no offsets, noise N0) against the bench, and the
error of each measured map term for both.

Exit status 0; 2 on a directory that is not a usable recording (one line, naming what is missing).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from hardware.dsp import estimate
from hardware.measured import BackendError, pilot_boost, ue_radio_map
from hardware.replay import Recording
from sim import channel
from sim.units import db_to_lin, dbm_to_w, lin_to_db, noise_power_dbm, w_to_dbm
from testbed.config import Config, ConfigError, load_config

MIN_STEPS = 20            # measured steps a fit needs, held-out ones included
MAX_NOISE_CAPTURES = 400  # measure captures per UE radio the noise floor is estimated from, at most
OFFSET_MARGIN_DB = 0.5    # the twin's PA and BS-to-BS offsets reach at least this far past the fitted ones:
                          # the fit's bias on the emulated bench (<= 0.2 dB, docs/twin.md), twice over
MAP_SNR_DB = 10.0         # map terms whose pilots were due less than this far above N0 stay out of the BS-to-BS fit


class CalibrationError(ValueError):
    """The recording cannot be calibrated from (one line, naming what is missing)."""


@dataclass(frozen=True)
class Steps:
    """The recorded steps as tensors, the envs of each step flattened into S samples."""

    power_w: torch.Tensor     # [S, B, K] executed power
    gain_db: torch.Tensor     # [S, B, U] BS-to-UE gains the waveforms carried
    served: torch.Tensor      # [S, B, K] long
    external_w: torch.Tensor  # [S, B, K] sensed external interference
    sinr_db: torch.Tensor     # [S, B, K] recorded SINR
    measured: torch.Tensor    # [S, B, K] bool: measured on radios
    step: np.ndarray          # [S] recorded step index
    env: np.ndarray           # [S]
    episode: np.ndarray       # [S] episode index (resets so far)
    map_model_w: np.ndarray | None = None   # [S, B', B, K] p̂(b',k)·h(b',b) of the map turns (None: not measured)
    map_rx_w: np.ndarray | None = None      # [S, B', B, K] what BS b's radio measured of BS b'
    map_measured: np.ndarray | None = None  # [S, B', B, K] bool

    def take(self, keep: np.ndarray) -> Steps:
        index = torch.as_tensor(np.flatnonzero(keep))
        maps = [None if self.map_rx_w is None else getattr(self, f)[keep]
                for f in ("map_model_w", "map_rx_w", "map_measured")]
        return Steps(*(getattr(self, f)[index] for f in ("power_w", "gain_db", "served", "external_w", "sinr_db",
                                                         "measured")),
                     self.step[keep], self.env[keep], self.episode[keep], *maps)


@dataclass(frozen=True)
class Fit:
    """What the bench adds to the model (units in the names)."""

    offset_db: np.ndarray         # [B, K] δ(b,k)
    offset_se_db: np.ndarray      # [B, K] its standard error
    ue_radios: list[str]
    noise_dbm: np.ndarray         # [R, K] noise floor per UE radio and band
    link_gain_db: np.ndarray      # [B, U] mean gain of each BS-to-UE link over the recording, offsets included
    occupancy: tuple[float, float]          # (value, standard error)
    on_steps: tuple[float, float]
    incumbent_power_dbm: tuple[float, float]
    residual_cfo_hz: dict[str, float]       # after the start-up correction, per radio
    step_cfo_hz: dict[str, float]           # median |offset| the per-step estimator removed, per UE radio
    quality: dict[str, dict[str, float]]    # twin / default: median_db, p95_db, links
    train_steps: int
    held_out_steps: int
    bs_offset_db: np.ndarray | None = None      # [B', B, K] ε(b',b,k) of the measured map (None: not measured)
    bs_offset_se_db: np.ndarray | None = None   # [B', B, K] its standard error
    coupling_db: np.ndarray | None = None       # [B', B] c(b',b) = ε - δ(b',k), over bands; NaN: not fitted
    coupling_half_db: np.ndarray | None = None  # [B', B] the twin's half-width around it
    map_quality: dict[str, dict[str, float]] | None = None   # twin / default: median_db, p95_db, terms


# --- reading -------------------------------------------------------------------------------
def open_recording(directory: str | Path) -> tuple[Recording, Config]:
    """The recording and the config it was made with; ``CalibrationError`` if it cannot be calibrated."""
    try:
        recording = Recording(directory, purpose="calibrate (the noise floor per band)")
    except BackendError as err:
        raise CalibrationError(str(err).replace("hardware.replay: ", "")) from None
    if recording.config is None:
        raise CalibrationError(f"{directory} holds no config (recorded outside the testbed)")
    try:
        config = load_config(recording.config)
    except (ConfigError, ValueError) as err:
        raise CalibrationError(f"{directory}: its config no longer loads: {err}") from None
    steps = recording.steps
    if steps and "gain_db" not in steps[0]:
        raise CalibrationError(f"{directory} is a format-{recording.run.get('format')} recording without the "
                               "steps' gains (gain_db); record it again")
    return recording, config


def read_steps(recording: Recording, config: Config) -> Steps:
    """The step table as ``Steps``."""
    level_w = torch.tensor(config.network.level_power_w, dtype=torch.float64)
    rows, episode, episodes = [], [], -1
    for row in recording.rows:
        if "reset" in row:
            episodes += 1
        else:
            rows.append(row)
            episode.append(episodes)
    if not rows:
        raise CalibrationError(f"{recording.dir} holds no steps")
    n = len(rows[0]["sinr"])

    def stack(key, dtype=torch.float64):
        return torch.tensor([row[key] for row in rows], dtype=dtype).flatten(0, 1)
    sinr = stack("sinr")
    maps = {}
    if "map_rx_w" in rows[0]:
        maps = {key: np.array([row[key] for row in rows]).reshape(-1, *np.shape(rows[0][key])[1:])
                for key in ("map_model_w", "map_rx_w", "map_measured")}
    return Steps(power_w=level_w[stack("executed", torch.long)], gain_db=stack("gain_db"),
                 served=stack("served_ue", torch.long), external_w=stack("external_w"),
                 sinr_db=lin_to_db(sinr.clamp_min(1e-30)), measured=stack("measured", torch.bool),
                 step=np.repeat([row["step"] for row in rows], n), env=np.tile(np.arange(n), len(rows)),
                 episode=np.repeat(episode, n), **maps)


# --- the model -----------------------------------------------------------------------------
def predict_sinr_db(steps: Steps, offset_db: torch.Tensor, noise_w: torch.Tensor) -> torch.Tensor:
    """The model's SINR [S, B, K] in dB of the recorded steps: Eq. 6 with every BS's power on each
    band raised by ``offset_db`` [B, K] and noise ``noise_w`` [S, B, K] at each link's receiver."""
    value = channel.sinr(steps.power_w * db_to_lin(offset_db), db_to_lin(steps.gain_db), steps.served,
                         steps.external_w, noise_w)
    return lin_to_db(value.clamp_min(1e-30))


def link_noise_w(steps: Steps, radio_of_ue: list[int], noise_dbm: np.ndarray) -> torch.Tensor:
    """Noise [S, B, K] in W at the UE radio of each link, from the floor per UE radio and band [R, K]."""
    radio = torch.tensor([max(r, 0) for r in radio_of_ue])[steps.served.clamp_min(0)]       # [S, B, K]
    floor = torch.as_tensor(dbm_to_w(noise_dbm), dtype=torch.float64)                        # [R, K]
    return floor[radio, torch.arange(floor.shape[1]).expand_as(radio)]


def fit_offsets(steps: Steps, noise_w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """δ(b,k) [B, K] in dB by least squares of the model's SINR on the measured one, and its
    standard error (from the residuals of the links BS b serves on band k; inf where it served no
    measured link, and δ(b,k) was seen only as interference)."""
    offset = torch.zeros(steps.power_w.shape[1:], dtype=torch.float64, requires_grad=True)
    mask = steps.measured
    opt = torch.optim.LBFGS([offset], max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = ((predict_sinr_db(steps, offset, noise_w) - steps.sinr_db)[mask] ** 2).mean()
        value.backward()
        return value
    opt.step(loss)
    with torch.no_grad():
        residual = torch.where(mask, predict_sinr_db(steps, offset, noise_w) - steps.sinr_db, 0.0)
        links = mask.sum(0)
        count = links.clamp_min(1)
        mean = residual.sum(0) / count
        spread = ((residual - mean) ** 2 * mask).sum(0) / (count - 1).clamp_min(1)
        se = torch.where(links > 1, (spread / count).sqrt(), torch.inf)
    return offset.detach().numpy(), se.numpy()


# --- the measured map (hardware.measure_map) -----------------------------------------------
def map_terms(steps: Steps, config: Config) -> np.ndarray:
    """[S, B', B, K] bool: the map terms measured with pilots due at least MAP_SNR_DB above N0 (with
    the boost the measured backend gave them) and read back above 0: those the BS-to-BS fit uses."""
    hw, p = config.hardware, config.network
    due = steps.map_model_w * pilot_boost(steps.map_model_w, p, hw) >= p.noise_w * db_to_lin(MAP_SNR_DB)
    return steps.map_measured & due & (steps.map_rx_w > 0)


def fit_bs_offsets(steps: Steps, terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ε(b',b,k) [B', B, K] in dB: how much stronger BS b' arrives at BS b on band k than the model's
    p̂·h says (the summed measured over the summed model power of the terms ``terms``), and its
    standard error (the spread of the per-step ratios); NaN and inf where no term was measured."""
    count = terms.sum(0)
    rx, model = (np.where(terms, x, 0.0).sum(0) for x in (steps.map_rx_w, steps.map_model_w))
    value = np.where(count > 0, lin_to_db(np.maximum(rx, 1e-300) / np.maximum(model, 1e-300)), np.nan)
    ratio = lin_to_db(np.where(terms, steps.map_rx_w / np.maximum(steps.map_model_w, 1e-300), 1.0))
    mean = (ratio * terms).sum(0) / np.maximum(count, 1)
    spread = ((ratio - mean) ** 2 * terms).sum(0) / np.maximum(count - 1, 1)
    return value, np.where(count > 1, np.sqrt(spread / np.maximum(count, 1)), np.inf)


def couplings(bs_offset_db: np.ndarray, bs_se_db: np.ndarray, offset_db: np.ndarray, offset_se_db: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """c(b',b) [B', B] in dB, the twin's BS-to-BS gain offset: ε(b',b,k) less the PA offset δ(b',k)
    the twin already gives BS b' (its PA reaches BS b as it reaches the UEs), averaged over the bands
    where both were fitted; and its half-width, the largest of 2 standard errors, the spread over
    the bands and OFFSET_MARGIN_DB. NaN where no band has both."""
    per_band = bs_offset_db - offset_db[:, None, :]                                   # [B', B, K]
    se = np.sqrt(bs_se_db ** 2 + offset_se_db[:, None, :] ** 2)
    ok = np.isfinite(per_band) & np.isfinite(se)
    count = ok.sum(-1)
    value = np.where(count > 0, np.where(ok, per_band, 0.0).sum(-1) / np.maximum(count, 1), np.nan)
    se_mean = np.sqrt(np.where(ok, se ** 2, 0.0).sum(-1)) / np.maximum(count, 1)
    spread = np.where(ok, np.abs(per_band - value[..., None]), 0.0).max(-1)
    return value, np.maximum(np.maximum(2 * se_mean, spread), OFFSET_MARGIN_DB)


def map_error(steps: Steps, terms: np.ndarray, shift_db: np.ndarray) -> dict[str, float]:
    """|model - bench| of the measured map terms ``terms``, the model's p̂·h raised by ``shift_db``
    [B', B, K]: median and p95 in dB, and the number of terms."""
    index = np.nonzero(terms)
    predicted = steps.map_model_w[index] * db_to_lin(np.broadcast_to(shift_db, terms.shape[1:])[index[1:]])
    gap = np.abs(lin_to_db(predicted) - lin_to_db(steps.map_rx_w[index]))
    if gap.size == 0:
        return {"median_db": float("nan"), "p95_db": float("nan"), "terms": 0}
    return {"median_db": float(np.median(gap)), "p95_db": float(np.percentile(gap, 95)), "terms": int(gap.size)}


# --- the bench's own figures ---------------------------------------------------------------
def incumbent_threshold_w(recording: Recording, config: Config) -> np.ndarray:
    """[B, K] W: sensed interference above this (the BS radio's start-up floor, 3 dB over it) is an incumbent."""
    hw, floor = config.hardware, recording.run["summary"].get("noise_floor", {})
    out = np.zeros((config.network.num_bs, config.network.num_bands))
    for entry in hw.radios_with_role("bs"):
        if entry.name in floor:
            out[entry.nodes] = np.array(floor[entry.name]) * dbm_to_w(hw.full_scale_dbm) / db_to_lin(entry.link_gain_db)
    return out


def noise_floor(recording: Recording, config: Config, steps: Steps, occupied: np.ndarray
                ) -> tuple[list[str], np.ndarray, dict[str, float]]:
    """Per UE radio and band, the median estimator residual (dBm) of its measure captures in the fitted
    steps, bands with a sensed incumbent left out; and the median |offset| the estimator removed (Hz)."""
    hw, p = config.hardware, config.network
    plan = hw.pilot_plan(p.num_bs, p.num_bands)
    busy = {(int(s), int(e)): occupied[i].any(0) for i, (s, e) in enumerate(zip(steps.step, steps.env))}   # [K]
    radios = [e.name for e in hw.radios_with_role("ue")]
    noise, cfo = np.full((len(radios), p.num_bands), np.nan), {}
    for r, name in enumerate(radios):
        notes = [(i, a) for i, a in enumerate(recording.annotations(name)) if a.get("testbed:kind") == "measure"
                 and not a.get("testbed:stale") and not a.get("testbed:clipped")
                 and (a["testbed:step"], a["testbed:env"]) in busy]
        chosen = notes[:: max(1, len(notes) // MAX_NOISE_CAPTURES)]
        per_band: list[list[float]] = [[] for _ in range(p.num_bands)]
        offsets = []
        for i, a in chosen:
            est = estimate(plan, recording.samples(name, i), hw.sample_rate_hz, signature=a["testbed:signature"])
            offsets.append(abs(float(est.cfo_hz)))
            for k in a["testbed:bands"]:
                if not busy[a["testbed:step"], a["testbed:env"]][k]:
                    per_band[k].append(float(est.residual[k]))
        for k, values in enumerate(per_band):
            if not values:
                raise CalibrationError(f"{recording.dir}: UE radio {name} has no recorded measure capture of band "
                                       f"{k} free of incumbents in the fitted steps; record a longer run")
            noise[r, k] = w_to_dbm(np.median(values) * dbm_to_w(hw.full_scale_dbm))
        cfo[name] = float(np.median(offsets))
    return radios, noise, cfo


def incumbents(steps: Steps, occupied: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(value, standard error) of the occupancy, the mean on-time in steps (from the on→off rate, so
    episode ends cut no run short) and the median power in dBm of the sensed incumbents."""
    order = np.lexsort((steps.step, steps.env))                                 # each env's steps in turn
    on, episode, env = occupied[order], steps.episode[order], steps.env[order]  # [S, B, K]
    occ = float(on.mean())
    same = (episode[1:] == episode[:-1]) & (env[1:] == env[:-1])
    was, now = on[:-1][same], on[1:][same]
    ons = max(int(was.sum()), 1)
    p_off = max(float((was & ~now).sum()) / ons, 1.0 / ons)
    p_on = float((~was & now).sum()) / max(int((~was).sum()), 1)
    memory = min(max(1.0 - p_on - p_off, 0.0), 0.99)                            # lag-1 correlation of the chain
    occ_se = float(np.sqrt(occ * (1 - occ) / on.size * (1 + memory) / (1 - memory)))
    on_steps, on_se = 1.0 / p_off, float(np.sqrt(p_off * (1 - p_off) / ons)) / p_off ** 2
    power = w_to_dbm(steps.external_w.numpy()[occupied])
    if power.size == 0:
        return (occ, occ_se), (on_steps, on_se), (float("nan"), float("nan"))
    return (occ, occ_se), (on_steps, on_se), (float(np.median(power)), float(1.2533 * power.std() / np.sqrt(power.size)))


def sinr_error(steps: Steps, offset_db: np.ndarray, noise_w: torch.Tensor) -> dict[str, float]:
    """|model - bench| SINR over the measured links: median and p95 in dB, and the number of links."""
    with torch.no_grad():
        gap = (predict_sinr_db(steps, torch.as_tensor(offset_db), noise_w) - steps.sinr_db).abs()[steps.measured]
    gap = gap.numpy()
    return {"median_db": float(np.median(gap)), "p95_db": float(np.percentile(gap, 95)), "links": int(gap.size)}


def calibrate(directory: str | Path, held_out: float = 0.25) -> tuple[Fit, Recording]:
    """Fit the model to the recording in ``directory``; returns the fit and the recording."""
    recording, config = open_recording(directory)
    steps = read_steps(recording, config)
    useful = sorted(set(steps.step[steps.measured.flatten(1).any(1).numpy()].tolist()))
    if len(useful) < MIN_STEPS:
        raise CalibrationError(f"{recording.dir}: {len(useful)} steps with measured links, a fit needs at least "
                               f"{MIN_STEPS}; record a longer run")
    cut = useful[round(len(useful) * (1 - held_out))]
    train, test = steps.take(steps.step < cut), steps.take(steps.step >= cut)
    threshold = incumbent_threshold_w(recording, config)
    occupied = steps.external_w.numpy() > threshold
    radios, noise_dbm, step_cfo = noise_floor(recording, config, train, occupied[steps.step < cut])
    radio_of_ue = [radios.index(r) if r else -1 for r in ue_radio_map(config.hardware, config.network.num_ue)]
    offset, offset_se = fit_offsets(train, link_noise_w(train, radio_of_ue, noise_dbm))
    n0 = torch.full(test.power_w.shape, config.network.noise_w, dtype=torch.float64)
    quality = {"twin": sinr_error(test, offset, link_noise_w(test, radio_of_ue, noise_dbm)),
               "default": sinr_error(test, np.zeros_like(offset), n0)}
    occ, on_steps, power = incumbents(steps, occupied)
    calibration = recording.run["summary"].get("calibration", {})
    bench_map = {}
    if steps.map_rx_w is not None:
        bs_offset, bs_se = fit_bs_offsets(train, map_terms(train, config))
        coupling, half = couplings(bs_offset, bs_se, offset, offset_se)
        held = map_terms(test, config)
        shift = np.nan_to_num(coupling)[..., None] + offset[:, None, :]
        bench_map = {"bs_offset_db": bs_offset, "bs_offset_se_db": bs_se, "coupling_db": coupling,
                     "coupling_half_db": half, "map_quality": {"twin": map_error(test, held, shift),
                                                                "default": map_error(test, held, np.zeros(1))}}
    fit = Fit(offset_db=offset, offset_se_db=offset_se, ue_radios=radios, noise_dbm=noise_dbm,
              link_gain_db=steps.gain_db.mean(0).numpy() + offset.mean(1, keepdims=True),
              occupancy=occ, on_steps=on_steps, incumbent_power_dbm=power,
              residual_cfo_hz={name: c.get("residual_hz", 0.0) for name, c in calibration.items()},
              step_cfo_hz=step_cfo, quality=quality, train_steps=len(set(train.step.tolist())),
              held_out_steps=len(set(test.step.tolist())), **bench_map)
    return fit, recording


# --- the twin ------------------------------------------------------------------------------
def _around(value: float, se: float, low: float, high: float) -> list[float]:
    """[value - 2 se, value + 2 se] within [low, high], rounded to 4 digits."""
    return [round(float(np.clip(value - 2 * se, low, high)), 4), round(float(np.clip(value + 2 * se, low, high)), 4)]


def offset_table(offset_db: np.ndarray, se_db: np.ndarray) -> list:
    """The twin's PA offsets, a [B][K] table of [low, high] in dB: each fitted δ(b,k) ± the larger of 2
    standard errors and OFFSET_MARGIN_DB, within the hardware family's [-60, 0]. An entry whose BS
    served no measured link on that band (δ seen only as interference) gets the range spanning
    every fitted offset, with the margin."""
    seen = np.isfinite(se_db)
    if not seen.any():
        raise CalibrationError("no BS served a measured link: the PA offsets cannot be fitted; record a longer run")
    margin = np.maximum(2 * se_db, OFFSET_MARGIN_DB)
    low, high = offset_db[seen].min() - margin[seen].max(), offset_db[seen].max() + margin[seen].max()
    centre = np.where(seen, offset_db, (low + high) / 2)
    half = np.where(seen, margin, (high - low) / 2)
    return [[_around(float(c), float(h) / 2, -60.0, 0.0) for c, h in zip(*row)] for row in zip(centre, half)]


def coupling_table(coupling_db: np.ndarray, half_db: np.ndarray) -> list:
    """The twin's BS-to-BS gain offsets, a [B'][B] table of [low, high] in dB: c(b',b) ± its half-width;
    [0, 0] (the model's gain) for the diagonal and the pairs not fitted."""
    fitted = np.isfinite(coupling_db)
    centre, half = np.where(fitted, coupling_db, 0.0), np.where(fitted, half_db, 0.0)
    return [[_around(float(c), float(h) / 2, -60.0, 60.0) for c, h in zip(*row)] for row in zip(centre, half)]


def twin_config(fit: Fit, recorded: dict) -> dict:
    """The twin: the recorded config ``recorded`` on the simulator, the hardware task family, the
    noise figure of the fitted floor, PA offsets per BS and band (``offset_table``), BS-to-BS gain
    offsets per pair where the map was measured (``coupling_table``) and incumbents centred on the
    fit (± 2 standard errors)."""
    p = load_config(recorded).network
    twin = {key: value for key, value in recorded.items() if key not in ("hardware", "backend")}
    thermal = noise_power_dbm(p.bandwidth_hz, 0.0)
    twin["backend"] = "sim"
    twin["network"] = {**recorded.get("network", {}), "task_family": "hardware", "informed": False,
                       "noise_figure_db": round(float(np.clip(np.mean(fit.noise_dbm) - thermal, 0.0, 20.0)), 3)}
    tasks = dict(recorded.get("tasks", {}))
    tasks["pa_gain_offset_db"] = offset_table(fit.offset_db, fit.offset_se_db)
    tasks["pa_compression_dbm"] = [p.max_power_dbm, p.max_power_dbm]
    tasks["incumbent_occupancy"] = _around(*fit.occupancy, 0.0, 0.95)
    tasks["incumbent_on_steps"] = _around(*fit.on_steps, 1.0, 1e6)
    if np.isfinite(fit.incumbent_power_dbm[0]):
        tasks["incumbent_power_dbm"] = _around(*fit.incumbent_power_dbm, -150.0, 30.0)
    if fit.coupling_db is not None:
        tasks["bs_gain_offset_db"] = coupling_table(fit.coupling_db, fit.coupling_half_db)
    twin["tasks"] = tasks
    load_config(twin)                                                  # the twin must load as it is written
    return twin


def describe(fit: Fit, recording: Recording) -> str:
    """The fit in words (also the twin file's header)."""
    p, directory = load_config(recording.config).network, recording.dir
    lines = [f"calibration of {directory}: {fit.train_steps} steps fitted, {fit.held_out_steps} held out",
             "per-BS offset and per-band ripple delta(b,k) of the signal at the UE radios (PA + cable), dB:"]
    for b in range(fit.offset_db.shape[0]):
        bands = "  ".join(f"{v:+6.2f}±{s:.2f}" if np.isfinite(s) else f"{v:+6.2f} (as interference only)"
                          for v, s in zip(fit.offset_db[b], fit.offset_se_db[b]))
        lines.append(f"  BS {b}: mean {fit.offset_db[b].mean():+6.2f}   per band {bands}")
    lines.append(f"noise floor per band, dBm (the model: N0 = {p.noise_dbm:.2f}):")
    for name, row in zip(fit.ue_radios, fit.noise_dbm):
        lines.append(f"  {name}: " + "  ".join(f"{v:.2f}" for v in row))
    lines.append("per-link gain BS->UE (mean over the recording, offsets included), dB:")
    for b, row in enumerate(fit.link_gain_db):
        lines.append(f"  BS {b}: " + "  ".join(f"{v:.1f}" for v in row))
    if fit.bs_offset_db is None:
        lines.append("BS->BS gains: not measured in this recording (hardware.measure_map: false); the twin keeps "
                     "the simulator's")
    else:
        lines.append("BS->BS gain offset eps(b'->b,k) of the measured map (bench over model, the PA of b' included), "
                     "dB; and the twin's c(b',b) = eps - delta(b',k):")
        for tx, rx in zip(*np.nonzero(~np.eye(fit.coupling_db.shape[0], dtype=bool))):
            bands = "  ".join("not measured" if not np.isfinite(v) else f"{v:+6.2f}±{e:.2f}"
                              for v, e in zip(fit.bs_offset_db[tx, rx], fit.bs_offset_se_db[tx, rx]))
            c = fit.coupling_db[tx, rx]
            twin = "not fitted (the model's)" if not np.isfinite(c) else f"{c:+6.2f}±{fit.coupling_half_db[tx, rx]:.2f}"
            lines.append(f"  BS {tx} -> BS {rx}: per band {bands}   c {twin}")
    lines.append(f"incumbents: occupancy {fit.occupancy[0]:.3f}±{fit.occupancy[1]:.3f}, mean on-time "
                 f"{fit.on_steps[0]:.2f}±{fit.on_steps[1]:.2f} steps, power {fit.incumbent_power_dbm[0]:.2f}"
                 f"±{fit.incumbent_power_dbm[1]:.2f} dBm")
    lines.append("crystal offsets left after the start-up correction, Hz: "
                 + ", ".join(f"{k} {v:+.1f}" for k, v in fit.residual_cfo_hz.items())
                 + "; removed per step at the UE radios (median |offset|): "
                 + ", ".join(f"{k} {v:.1f}" for k, v in fit.step_cfo_hz.items()))
    if fit.offset_db.max() > 0:
        lines.append(f"note: the bench is up to {fit.offset_db.max():.2f} dB hotter than the model; the hardware "
                     "family's offsets are <= 0, so the twin's range stops at 0 dB")
    lines.append("SINR error on the held-out steps, |model - bench| per measured link:")
    for name, q in (("twin", fit.quality["twin"]), ("default model", fit.quality["default"])):
        lines.append(f"  {name:<14} median {q['median_db']:.2f} dB, p95 {q['p95_db']:.2f} dB ({q['links']} links)")
    if fit.map_quality is not None:
        lines.append("BS->BS map terms on the held-out steps, |model - bench| per measured term:")
        for name, q in (("twin", fit.map_quality["twin"]), ("default model", fit.map_quality["default"])):
            lines.append(f"  {name:<14} median {q['median_db']:.2f} dB, p95 {q['p95_db']:.2f} dB ({q['terms']} terms)")
    return "\n".join(lines)


def write_twin(path: str | Path, twin: dict, text: str) -> Path:
    """The twin config as YAML, the fit as its header comment."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}\n" for line in ["twin written by `testbed calibrate`", *text.splitlines()])
    path.write_text(header + yaml.safe_dump(twin, sort_keys=False))
    return path


# --- the command ---------------------------------------------------------------------------
def add_command(subparsers) -> None:
    """Add ``calibrate`` to the ``testbed`` command's subparsers."""
    cmd = subparsers.add_parser("calibrate", help="fit the simulator to a recording (hardware.record): the twin")
    cmd.add_argument("dir", help="the recording's directory")
    cmd.add_argument("--out", required=True, help="where the twin config (YAML) goes")
    cmd.add_argument("--held-out", type=float, default=0.25,
                     help="share of the recorded steps (the last ones) kept out of the fit to measure it, 0.05..0.9")
    cmd.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    if not 0.05 <= args.held_out <= 0.9:
        print(f"calibrate: --held-out={args.held_out} must be within 0.05..0.9", file=sys.stderr)
        return 2
    try:
        fit, recording = calibrate(args.dir, args.held_out)
    except CalibrationError as err:
        print(f"calibrate: {err}", file=sys.stderr)
        return 2
    text = describe(fit, recording)
    path = write_twin(args.out, twin_config(fit, recording.config), text)
    print(text)
    print(f"wrote the twin {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.calibrate")
    sub = parser.add_subparsers(dest="command", required=True)
    add_command(sub)
    args = parser.parse_args(["calibrate", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
