"""Recording of a measured run (``hardware.record``): what every radio captured, and every step.

A recording is a directory:
  ``<radio>.sigmf-data`` / ``<radio>.sigmf-meta``  per radio, SigMF (the ``sigmf`` package): the
      captures back to back as cf32_le; the global section holds the centre frequency, sample
      rate, radio name and driver, gains, the start-up noise floor and calibration results
      (``testbed:`` keys); one annotation per capture with ``testbed:kind`` (noise: start-up
      noise floor, calibrate: start-up LO calibration burst, sense: TX off, measure: a pilot
      burst at a UE radio, map: a BS radio capturing the other BS radios' pilots, with
      ``hardware.measure_map``), ``testbed:step``, ``testbed:env``, ``testbed:bands``,
      ``testbed:signature`` (pilot set), ``testbed:levels`` (executed levels [B][K] on air,
      measure and map), ``testbed:rx_bs`` (the BS whose map term is measured, map),
      ``testbed:tx`` (the radio sending, calibrate), ``testbed:stale`` and ``testbed:clipped``;
  ``steps.jsonl``  one line per reset (``{"reset": seed, "new_task": ...}``) and per step: requested
      and executed levels, mask, the sensed external interference, SINR, which links were
      measured, the BS-to-UE gains the step's waveforms carried (``gain_db``: path loss,
      shadowing and fading, dB, what ``testbed calibrate`` fits the bench against), reward and
      its parts, turns, TX back-off, stale and clipped counts; with ``hardware.measure_map`` also
      the map turns' powers [N][B'][B][K] in W, from BS b' at BS b: ``map_model_w`` (p̂(b',k)·h(b',b),
      what the pilots carried), ``map_rx_w`` (measured, 0 where not), ``map_measured``, and
      ``map_clipped`` [N][B];
  ``recording.json``  the run: radios, whether IQ was recorded, where the size cap stopped it,
      how the run ended, and the caller's context (the testbed writes its config there).

Captures are counted from the run's start: ``testbed:step`` s is the step during which (sense at
its end) or before which (the first sense of an episode, start-up captures) a capture was taken.
Floats are written with Python's repr, so they read back bit for bit.

IQ stops once ``max_bytes`` would be exceeded (said once on stderr and in ``recording.json``);
the step table goes on. A directory that already holds a recording is refused. A write error (full disk, I/O error) truncates the data to the last
whole capture, writes every metadata file it can, and raises ``RecordingError`` (a
``RadioError``: the run ends like on a dead radio, exit status 3).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from sigmf import SigMFFile

from hardware.config import HardwareConfig
from hardware.radio import RadioError
from sim.network import StepResult

__all__ = ["Recorder", "NullRecorder", "RecordingError", "open_recorder", "step_row",
           "RUN_FILE", "STEP_FILE", "EXTENSION", "FORMAT"]

RUN_FILE = "recording.json"
STEP_FILE = "steps.jsonl"
EXTENSION = {"name": "testbed", "version": "1.0.0", "optional": True}   # the testbed: keys
BYTES_PER_SAMPLE = 8                                                      # cf32_le
FORMAT = 3                                                                # 2: step rows hold gain_db; 3: map turns


class RecordingError(RadioError):
    """Writing the recording failed (full disk, I/O error); what was recorded before stays readable."""


class NullRecorder:
    """The recorder of a run that records nothing."""

    def capture(self, radio: str, iq: np.ndarray, **fields) -> None:
        """Nothing recorded."""

    def reset(self, seed: int | None, new_task: bool) -> None:
        """Nothing recorded."""

    def step(self, row: dict) -> None:
        """Nothing recorded."""

    def close(self, summary: dict) -> None:
        """Nothing to write."""


class Recorder:
    """Writes one run into ``directory`` (see the module docstring); ``close`` writes the metadata."""

    def __init__(self, directory: str | Path, hw: HardwareConfig, context: dict | None = None):
        self.dir = Path(directory)
        self.hw = hw
        self.iq = hw.record.iq
        self.max_bytes = hw.record.max_bytes
        self.context = context or {}
        self.bytes = 0
        self.iq_stopped: dict | None = None       # where and why IQ recording stopped
        self.error: str | None = None
        self.closed = False
        self.steps = 0
        self._step_bytes = 0                       # the step table's size at its last whole line
        self.annotations: dict[str, list[dict]] = {e.name: [] for e in hw.radios}
        self.samples = dict.fromkeys(self.annotations, 0)
        if (self.dir / STEP_FILE).exists():
            raise RecordingError(f"recording: {self.dir} already holds a recording; set another hardware.record.dir "
                                 "(a recording is never overwritten)")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._data = {name: open(self._data_path(name), "wb") for name in self.annotations} if self.iq else {}
            self._steps = open(self.dir / STEP_FILE, "w")
        except OSError as err:
            raise RecordingError(f"recording: cannot write to {self.dir}: {err}") from err

    def _data_path(self, radio: str) -> Path:
        return self.dir / f"{radio}.sigmf-data"

    # --- the run -------------------------------------------------------------------------
    def capture(self, radio: str, iq: np.ndarray, **fields) -> None:
        """Append one capture of ``radio`` and its annotation (``fields``: kind, step, env, ...)."""
        if not self.iq or self.iq_stopped is not None or self.error is not None:
            return
        data = np.ascontiguousarray(iq, dtype=np.complex64).tobytes()
        if self.bytes + len(data) > self.max_bytes:
            self.iq_stopped = {"step": fields.get("step"), "reason": f"hardware.record.max_bytes={self.max_bytes} "
                               f"reached after {self.bytes} bytes of IQ"}
            print(f"recording: IQ stopped at step {fields.get('step')}: hardware.record.max_bytes={self.max_bytes} "
                  "reached; the step table goes on", file=sys.stderr)
            return
        self._guarded(self._data[radio].write, data)
        self.bytes += len(data)
        start = self.samples[radio]
        self.samples[radio] += iq.size
        self.annotations[radio].append({"core:sample_start": start, "core:sample_count": int(iq.size),
                                        **{f"testbed:{k}": v for k, v in fields.items()}})

    def reset(self, seed: int | None, new_task: bool) -> None:
        """A new episode (``SimNetwork.reset``'s arguments)."""
        self._write_line({"reset": seed, "new_task": bool(new_task), "step": self.steps})

    def step(self, row: dict) -> None:
        """One step's row (``step_row``); the IQ written so far is flushed with it."""
        for f in self._data.values():
            self._guarded(f.flush)
        self._write_line(row)
        self.steps += 1

    def close(self, summary: dict) -> None:
        """Write the SigMF metadata of every radio and ``recording.json``; ``summary`` holds the
        run's figures (noise floor, calibration, capture counts). Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._close_files()
        try:
            self._write_metadata(summary)
        except OSError as err:   # the disk is full: the metadata written at the error stays
            print(f"recording: writing the metadata into {self.dir} failed: {err}", file=sys.stderr)

    # --- writing -------------------------------------------------------------------------
    def _write_line(self, row: dict) -> None:
        if self.error is not None or self.closed:
            return
        self._guarded(self._steps.write, json.dumps(row) + "\n")
        self._guarded(self._steps.flush)
        self._step_bytes = self._steps.tell()

    def _guarded(self, write, *args) -> None:
        """Run a write; on an OSError cut every file back to its last whole record, write the
        metadata and raise RecordingError."""
        try:
            write(*args)
        except OSError as err:
            self.error = f"step {self.steps}: {err}"
            self._close_files()
            for radio in self._data:
                self._cut_to_whole_captures(radio)
            os.truncate(self.dir / STEP_FILE, self._step_bytes)
            try:
                self._write_metadata({})
            except OSError:
                pass
            raise RecordingError(f"recording to {self.dir} failed at step {self.steps}: {err}; what was recorded "
                                 "before stays readable") from err

    def _cut_to_whole_captures(self, radio: str) -> None:
        """Drop the captures of ``radio`` that did not reach the disk whole, and their annotations."""
        path = self._data_path(radio)
        on_disk = path.stat().st_size // BYTES_PER_SAMPLE
        kept = [a for a in self.annotations[radio] if a["core:sample_start"] + a["core:sample_count"] <= on_disk]
        self.annotations[radio] = kept
        self.samples[radio] = kept[-1]["core:sample_start"] + kept[-1]["core:sample_count"] if kept else 0
        os.truncate(path, self.samples[radio] * BYTES_PER_SAMPLE)

    def _close_files(self) -> None:
        for f in [*self._data.values(), self._steps]:
            try:
                f.close()
            except OSError as err:
                self.error = self.error or str(err)

    def _write_metadata(self, summary: dict) -> None:
        for entry in self.hw.radios:
            self._write_meta(entry.name, summary)
        run = {"format": FORMAT, "iq": self.iq, "radios": [e.name for e in self.hw.radios], "steps": self.steps,
               "iq_bytes": self.bytes, "iq_stopped": self.iq_stopped, "error": self.error,
               "summary": summary, "context": self.context}
        (self.dir / RUN_FILE).write_text(json.dumps(run, indent=1))

    def _write_meta(self, radio: str, summary: dict) -> None:
        """The .sigmf-meta of one radio (metadata only when IQ was not recorded)."""
        entry = next(e for e in self.hw.radios if e.name == radio)
        hw = self.hw
        info = {
            "core:datatype": "cf32_le", "core:sample_rate": hw.sample_rate_hz, "core:version": "1.2.6",
            "core:hw": f"{entry.name} ({entry.driver} driver, {entry.role} radio)",
            "core:recorder": "hardware.recording", "core:extensions": [EXTENSION],
            "core:description": f"captures of radio {radio}, one annotation each",
            "testbed:radio": radio, "testbed:driver": entry.driver, "testbed:role": entry.role,
            "testbed:nodes": list(entry.nodes), "testbed:link_gain_db": entry.link_gain_db,
            "testbed:tx_gain_db": hw.tx_gain_db, "testbed:rx_gain_db": hw.rx_gain_db,
            "testbed:bandwidth_hz": hw.bandwidth_hz, "testbed:fft_size": hw.fft_size,
            "testbed:capture_samples": hw.capture_samples,
            "testbed:noise_floor_fs": summary.get("noise_floor", {}).get(radio),
            "testbed:calibration": summary.get("calibration", {}).get(radio),
            "testbed:iq_stopped": self.iq_stopped, "testbed:error": self.error,
        }
        if not self.iq:
            info["core:metadata_only"] = True
        meta = {"global": info, "captures": [{"core:sample_start": 0, "core:frequency": hw.center_hz}],
                "annotations": self.annotations[radio]}
        data = self._data_path(radio) if self.iq else None
        SigMFFile(metadata=meta, data_file=data).tofile(self.dir / radio, overwrite=True)


def open_recorder(hw: HardwareConfig, context: dict | None = None) -> Recorder | NullRecorder:
    """The recorder ``hw.record`` asks for (a no-op one when ``record.dir`` is empty)."""
    return Recorder(hw.record.dir, hw, context) if hw.record.dir else NullRecorder()


def step_row(step: int, res: StepResult, **extra) -> dict:
    """One step of N envs as plain data (leading axis N): what the step table holds."""
    return {
        "step": step,
        "requested": res.requested_level.tolist(), "executed": res.safe.level.tolist(),
        "mask": res.safe.mask.tolist(), "external_w": res.external_w.tolist(),
        "sinr": res.sinr_lin.tolist(), "active": res.active.tolist(), "measured": res.measured.tolist(),
        "served_ue": res.served_ue.tolist(), "gain_db": res.gain_db.tolist(),
        **{key: getattr(res, key).tolist() for key in (
            "reward", "throughput_bps", "fairness", "cost", "penalty", "sinr_violations", "latency_violations",
            "blocked_unsafe", "executed_violations")},
        **extra,
    }
