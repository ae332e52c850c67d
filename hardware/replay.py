"""Replay of a recording (``backend: replay``): the measured backend on radios that serve what
was captured, in order.

``ReplayRadio`` stands for one recorded radio: each ``capture`` returns that radio's next
recorded capture, bit for bit; bursts it is sent go nowhere. ``ReplayCheck`` takes the place of
the recorder and checks that every capture is taken as it was recorded: same kind, step, env,
bands, pilot set, levels on air, calibration sender, receiving BS of a map turn, and the same
stale/clipped verdicts of the DSP. So ``hardware.measured.MeasuredNetwork`` runs unchanged (same DSP, filter, reward and
metrics) and, for the recorded actions, gives the recorded estimates exactly; an action whose
transmission the recording does not hold, or a DSP that now judges a capture differently, ends
the run with a ``ReplayError`` (a ``RadioError``) naming the step and the radio.

``drive(net, recording)`` replays the recorded resets and requested levels themselves.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import sigmf
import torch

from hardware.config import HardwareConfig
from hardware.measured import BackendError, MeasuredNetwork
from hardware.radio import Radio, RadioError, RadioSettings, TxLimits
from hardware.recording import RUN_FILE, STEP_FILE

__all__ = ["Recording", "ReplayRadio", "ReplayCheck", "ReplayError", "drive", "open_replay"]

_CHECKED = ("kind", "step", "env", "bands", "signature", "tx", "levels", "rx_bs")   # what a capture must match


class ReplayError(RadioError):
    """The run asks for a capture the recording does not hold, or judges one differently."""


class Recording:
    """A recording directory (``hardware.recording``) opened for reading."""

    def __init__(self, directory: str | Path, purpose: str = "replay"):
        """``purpose``: what needs the IQ, named in the error for a recording made without it."""
        self.dir = Path(directory)
        try:
            self.run = json.loads((self.dir / RUN_FILE).read_text())
            lines = (self.dir / STEP_FILE).read_text().splitlines()
        except (OSError, ValueError) as err:
            raise BackendError(f"hardware.replay: {self.dir} is not a readable recording ({err})") from None
        self.rows = [json.loads(line) for line in lines]
        if not self.run["iq"]:
            raise BackendError(f"hardware.replay: {self.dir} was recorded with hardware.record.iq: false (estimates "
                               f"only); {purpose} needs the captured IQ")
        self.meta = {name: sigmf.fromfile(self.dir / name) for name in self.run["radios"]}

    @property
    def config(self) -> dict | None:
        """The testbed config the run was recorded with (None if the recorder was not given it)."""
        return self.run["context"].get("config")

    @property
    def steps(self) -> list[dict]:
        """The recorded step rows (``hardware.recording.step_row``), resets left out."""
        return [row for row in self.rows if "reset" not in row]

    def annotations(self, radio: str) -> list[dict]:
        """The annotations of ``radio``'s captures, in order."""
        return self.meta[radio].get_annotations()

    def samples(self, radio: str, index: int) -> np.ndarray:
        """Capture ``index`` of ``radio``: complex64 [sample_count]."""
        a = self.annotations(radio)[index]
        return np.asarray(self.meta[radio].read_samples(a["core:sample_start"], a["core:sample_count"]),
                          dtype=np.complex64)

    def global_field(self, radio: str, key: str):
        """A field of ``radio``'s SigMF global section (None if absent)."""
        return self.meta[radio].get_global_field(key)


class ReplayRadio(Radio):
    """One recorded radio: serves its captures in order; what it is sent goes nowhere."""

    def __init__(self, name: str, limits: TxLimits, recording: Recording, dry_run: bool = False):
        super().__init__(name, limits, dry_run)
        if name not in recording.meta:
            raise BackendError(f"hardware.replay: {recording.dir} holds no radio {name!r} (it holds "
                               f"{sorted(recording.meta)})")
        self.recording = recording
        self.cursor = 0                        # captures served so far

    def _configure(self, settings: RadioSettings) -> None:
        rate = self.recording.global_field(self.name, "core:sample_rate")
        if settings.sample_rate_hz != rate:
            raise RadioError(f"{self.name}: sample_rate_hz={settings.sample_rate_hz:g}, recorded at {rate:g}")

    def _send(self, iq: np.ndarray, cyclic: bool) -> None:
        """Nothing: the recorded bursts were sent when the recording was made."""

    def _capture(self, num_samples: int) -> np.ndarray:
        annotations = self.recording.annotations(self.name)
        if self.cursor >= len(annotations):
            stopped = self.recording.run["iq_stopped"]
            why = f" (IQ recording stopped at step {stopped['step']}: {stopped['reason']})" if stopped else ""
            raise ReplayError(f"replay: {self.name} has no recorded capture left after its {len(annotations)}"
                              f"{why}")
        iq = self.recording.samples(self.name, self.cursor)
        if iq.size != num_samples:
            raise ReplayError(f"replay: {self.name} capture {self.cursor} holds {iq.size} samples, "
                              f"{num_samples} were asked for (hardware.capture_samples)")
        self.cursor += 1
        return iq

    def _mute(self) -> None:
        """Nothing on air."""

    def _close(self) -> None:
        """Nothing to release."""

    def correct_lo(self, offset_hz: float) -> None:
        """Accepted where the recorded radio's driver corrected its LO, refused where it could not."""
        recorded = self.recording.global_field(self.name, "testbed:calibration") or {}
        if offset_hz and not recorded.get("corrected_hz"):
            super().correct_lo(offset_hz)


class ReplayCheck:
    """The recorder of a replay: checks each capture against its annotation, keeps the replayed steps."""

    def __init__(self, recording: Recording, radios: dict[str, ReplayRadio], hw: HardwareConfig):
        self.recording = recording
        self.radios = radios
        self.bs_of = {b: e.name for e in hw.radios_with_role("bs") for b in e.nodes}
        self.rows: list[dict] = []           # the replayed resets and step rows, as recorded ones read
        self.summary: dict = {}

    def capture(self, radio: str, iq: np.ndarray, **fields) -> None:
        index = self.radios[radio].cursor - 1
        recorded = {key[len("testbed:"):]: value for key, value in self.recording.annotations(radio)[index].items()
                    if key.startswith("testbed:")}
        now = {key: json.loads(json.dumps(value)) for key, value in fields.items()}   # as the recording holds it
        where = f"replay: step {now['step']}, {radio} capture {index}"
        if any(now.get(key) != recorded.get(key) for key in _CHECKED):
            raise ReplayError(f"{where}: {self._difference(now, recorded)}")
        for verdict in ("stale", "clipped"):
            if now.get(verdict) != recorded.get(verdict):
                raise ReplayError(f"{where} ({now['kind']}): judged {verdict}={recorded.get(verdict)} when recorded, "
                                  f"{verdict}={now.get(verdict)} now: the DSP changed (hardware.dsp, hardware.measured)")

    def _difference(self, now: dict, recorded: dict) -> str:
        """The first difference between a capture asked for and the recorded one, in words."""
        if now["kind"] != recorded.get("kind") or now["step"] != recorded.get("step"):
            return (f"the run takes a {now['kind']} capture, the recording holds a {recorded.get('kind')} capture "
                    f"of step {recorded.get('step')} here: a transmission the recording does not hold")
        if now.get("levels") != recorded.get("levels"):
            rows = [b for b, (x, y) in enumerate(zip(now["levels"], recorded["levels"])) if x != y]
            b = rows[0]
            return (f"BS {b} ({self.bs_of.get(b)}) transmits levels {now['levels'][b]}, the recording holds "
                    f"{recorded['levels'][b]}: an action the recording does not hold")
        key = next(k for k in _CHECKED if now.get(k) != recorded.get(k))
        return f"{key} is {now.get(key)}, the recording holds {recorded.get(key)}"

    def reset(self, seed: int | None, new_task: bool) -> None:
        self.rows.append({"reset": seed, "new_task": bool(new_task)})

    def step(self, row: dict) -> None:
        self.rows.append(json.loads(json.dumps(row)))

    def close(self, summary: dict) -> None:
        self.summary = json.loads(json.dumps(summary))


def open_replay(recording: Recording, hw: HardwareConfig) -> tuple[dict[str, ReplayRadio], ReplayCheck]:
    """Replay radios for every radio of ``hw`` and the check they are used with."""
    radios = {e.name: ReplayRadio(e.name, hw.limits(), recording, hw.dry_run) for e in hw.radios}
    return radios, ReplayCheck(recording, radios, hw)


def drive(net: MeasuredNetwork, recording: Recording) -> list[dict]:
    """Replay the recorded resets and requested levels on ``net`` (a replay backend); returns the
    replayed step rows (``hardware.recording.step_row``)."""
    for row in recording.rows:
        if "reset" in row:
            net.reset(seed=row["reset"], new_task=row["new_task"])
        else:
            net.step(torch.tensor(row["requested"], dtype=torch.long))
    return [row for row in net.recorder.rows if "reset" not in row]
