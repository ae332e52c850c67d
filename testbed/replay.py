"""`testbed replay DIR [--plot] [--out DIR]`: replay a recording (``hardware.record``) through the
measured backend and print how its estimates compare with the recorded ones; ``--plot`` writes,
per radio, a spectrogram of its captures with the band grid, the mask and the executed levels
overlaid, and the SINR of every link over time. Exit code 0 if the replay gave the recorded
estimates bit for bit, 1 if not (or if it could not replay)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hardware.dsp import PilotPlan
from hardware.measured import BackendError
from hardware.radio import RadioError, SafetyViolation
from hardware.replay import Recording, drive
from sim.units import lin_to_db
from testbed.backends import make_backend, replay_config
from testbed.config import ConfigError

COMPARED = ("executed", "mask", "external_w", "sinr", "measured", "reward", "throughput_bps", "fairness",
            "cost", "penalty", "stale_captures", "clipped_captures")   # what a replay must give as recorded


def add_command(subparsers) -> None:
    """Add ``replay`` to the ``testbed`` command's subparsers."""
    replay = subparsers.add_parser("replay", help="replay a recording (hardware.record) and compare its estimates")
    replay.add_argument("dir", help="the recording's directory")
    replay.add_argument("--plot", action="store_true", help="write the spectrograms and the SINR over time")
    replay.add_argument("--out", help="where the pictures go (default: DIR/plots)")
    replay.set_defaults(func=run_replay)


def compare(recorded: list[dict], replayed: list[dict]) -> dict[str, int]:
    """Per compared key, how many of the replayed steps differ from the recorded ones."""
    return {key: sum(a.get(key) != b.get(key) for a, b in zip(recorded, replayed)) for key in COMPARED}


def _sinr_db(rows: list[dict]) -> np.ndarray:
    """SINR in dB of env 0's links over the steps [T, B, K]; NaN where a link was off."""
    sinr = np.array([row["sinr"][0] for row in rows], dtype=float)
    active = np.array([row["active"][0] for row in rows], dtype=bool)
    return np.where(active, lin_to_db(np.maximum(sinr, 1e-30)), np.nan)


def summary(recording: Recording, replayed: list[dict], failure: str | None) -> tuple[str, bool]:
    """The replay in words, and whether it gave the recorded estimates bit for bit."""
    run, recorded = recording.run, recording.steps
    lines = [f"recording {recording.dir}: radios {', '.join(run['radios'])}, {len(recorded)} steps, "
             f"{run['iq_bytes'] / 1e6:.2f} MB of IQ"]
    if run["iq_stopped"]:
        lines.append(f"  IQ recording stopped at step {run['iq_stopped']['step']}: {run['iq_stopped']['reason']}")
    if run["error"]:
        lines.append(f"  the recorded run ended on a write error: {run['error']}")
    for name in run["radios"]:
        notes = recording.annotations(name)
        kinds = {k: sum(a.get("testbed:kind") == k for a in notes) for k in ("noise", "calibrate", "sense", "measure")}
        stale = sum(bool(a.get("testbed:stale")) for a in notes)
        clipped = sum(bool(a.get("testbed:clipped")) for a in notes)
        lines.append(f"  {name:<8} {len(notes):>5} captures (" + ", ".join(f"{v} {k}" for k, v in kinds.items() if v)
                     + f"), {stale} stale, {clipped} clipped")
    differ = compare(recorded, replayed)
    same = failure is None and len(replayed) == len(recorded) and not any(differ.values())
    lines.append(f"replayed {len(replayed)} of {len(recorded)} steps: "
                 + ("estimates, SINR, reward and metrics identical to the recorded ones, bit for bit" if same else
                    "differences in " + (", ".join(f"{k} ({n} steps)" for k, n in differ.items() if n) or "none")))
    if replayed and any(differ.values()):
        gap = np.abs(_sinr_db(replayed) - _sinr_db(recorded[:len(replayed)]))
        lines.append(f"  largest SINR difference {np.nanmax(gap, initial=0.0):.3g} dB")
    if replayed:
        rec, rep = sum(r["reward"][0] for r in recorded[:len(replayed)]), sum(r["reward"][0] for r in replayed)
        lines.append(f"  return (env 0, summed over the replayed steps): recorded {rec:.6g}, replayed {rep:.6g}")
    if failure:
        lines.append(f"replay stopped: {failure}")
    return "\n".join(lines), same


def _spectrum_db(iq: np.ndarray, fft_size: int) -> np.ndarray:
    """Power per DFT bin of one capture, averaged over its pilot periods, centred (DC in the middle), dB full scale."""
    periods = np.fft.fft(iq[: iq.size // fft_size * fft_size].reshape(-1, fft_size), axis=1) / fft_size
    return lin_to_db(np.fft.fftshift(np.mean(np.abs(periods) ** 2, axis=0)) + 1e-30)


def plot_radio(recording: Recording, radio: str, plan: PilotPlan, path: Path) -> Path:
    """A spectrogram of every capture of ``radio`` (one column each) with the band grid; per band
    the executed level on air (BS radios: of their BSs at that step; UE radios: the highest of the
    levels the capture was taken under) and an x where the safety mask closed the band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notes = recording.annotations(radio)
    rate = recording.global_field(radio, "core:sample_rate")
    mine = recording.global_field(radio, "testbed:nodes") if recording.global_field(radio, "testbed:role") == "bs" else []
    image = np.stack([_spectrum_db(recording.samples(radio, i), plan.fft_size) for i in range(len(notes))], axis=1)
    freq_khz = (np.arange(plan.fft_size) - plan.fft_size // 2) * rate / plan.fft_size / 1e3
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(notes) + 3), 4.5))
    mesh = ax.pcolormesh(np.arange(len(notes)), freq_khz, image, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="power per bin (dB full scale)")
    edges = plan.band_edges_hz(rate) / 1e3
    centres = edges.mean(axis=1)
    for lo, hi in edges:
        ax.axhline(lo, color="white", lw=0.6, ls="--")
        ax.axhline(hi, color="white", lw=0.6, ls="--")
    rows = {row["step"]: row for row in recording.steps}
    for i, note in enumerate(notes):
        row, env = rows.get(note.get("testbed:step")), note.get("testbed:env")
        if row is None or env is None:
            continue
        levels = np.array(note.get("testbed:levels") or row["executed"][env])          # [B, K]
        closed = ~np.array(row["mask"][env], dtype=bool)
        if mine:
            levels, closed = levels[mine], closed[mine]
        for k, centre in enumerate(centres):
            if levels[:, k].max() > 0:
                ax.text(i, centre, str(int(levels[:, k].max())), color="red", ha="center", va="center", fontsize=7)
            if mine and closed[:, k].any():
                ax.plot(i, centre, "x", color="orange", ms=6)
    kinds = [note.get("testbed:kind", "?")[0] for note in notes]
    ax.set_xticks(range(len(notes)), kinds, fontsize=6)
    ax.set_yticks(centres, [f"band {k}\n{c:+.0f} kHz" for k, c in enumerate(centres)], fontsize=7)
    ax.set_xlabel("capture: n noise, c calibrate, s sense, m measure\ndigits: executed level; x: band masked")
    ax.set_ylabel("baseband frequency")
    ax.set_title(f"{radio}: {len(notes)} captures, bands dashed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sinr(rows: list[dict], path: Path) -> Path:
    """SINR of every link of env 0 over the steps: filled where measured, hollow where simulated."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sinr = _sinr_db(rows)                                             # [T, B, K]
    measured = np.array([row["measured"][0] for row in rows], dtype=bool)
    steps = np.array([row["step"] for row in rows])
    fig, ax = plt.subplots(figsize=(7, 4))
    for b in range(sinr.shape[1]):
        for k in range(sinr.shape[2]):
            if np.isnan(sinr[:, b, k]).all():
                continue
            line, = ax.plot(steps, sinr[:, b, k], lw=0.8, label=f"BS {b} band {k}")
            m = measured[:, b, k]
            ax.plot(steps[m], sinr[m, b, k], "o", color=line.get_color(), ms=4)
            ax.plot(steps[~m], sinr[~m, b, k], "o", mfc="none", color=line.get_color(), ms=4)
    ax.set_xlabel("step")
    ax.set_ylabel("SINR (dB)")
    ax.set_title("per-link SINR (filled: measured on radios, hollow: simulated)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_recording(recording: Recording, plan: PilotPlan, out: Path) -> list[Path]:
    """Every picture of a recording into ``out``: one spectrogram per radio, then the SINR."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_radio(recording, name, plan, out / f"{name}_spectrogram.png") for name in recording.run["radios"]
             if recording.annotations(name)]
    return paths + [plot_sinr(recording.steps, out / "sinr.png")]


def run_replay(args: argparse.Namespace) -> int:
    try:
        config = replay_config(args.dir)
        recording = Recording(args.dir)
        net = make_backend(config, num_envs=recording.run["context"].get("num_envs", 1))
    except (BackendError, ConfigError, RadioError) as err:
        print(f"replay: {err}", file=sys.stderr)
        return 1
    failure = None
    try:
        drive(net, recording)
    except (RadioError, SafetyViolation) as err:
        failure = str(err)
    finally:
        net.close()
    replayed = [row for row in net.recorder.rows if "reset" not in row]
    text, same = summary(recording, replayed, failure)
    print(text)
    if args.plot:
        for path in plot_recording(recording, config.hardware.pilot_plan(config.network.num_bs,
                                                                         config.network.num_bands),
                                   Path(args.out) if args.out else Path(args.dir) / "plots"):
            print(f"wrote {path}")
    return 0 if same else 1
