"""`testbed radio check --config PATH [--record DIR]`: open the configured radios, print the
per-band noise floor, the occupancy sensed with TX off and a short SINR table (one step at full
power on every unmasked band), the capture and device fault counts, then mute and close. ``--record DIR`` records the check's
captures and step (``hardware.record.dir``; replay it with `testbed replay DIR`). Exit code 0 if
the bench answered, 1 if it did not, 3 if writing the recording failed."""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from hardware.measured import BackendError, MeasuredNetwork
from hardware.radio import RadioError, SafetyViolation
from hardware.recording import RecordingError
from testbed.backends import make_backend
from sim.units import lin_to_db, w_to_dbm
from testbed.config import load_config


def add_command(subparsers) -> None:
    """Add ``radio check`` to the ``testbed`` command's subparsers."""
    radio = subparsers.add_parser("radio", help="inspect the configured radios")
    sub = radio.add_subparsers(dest="radio_command", required=True)
    check = sub.add_parser("check", help="noise floor, occupancy and a short SINR table, then mute")
    check.add_argument("--config", required=True, help="YAML path or preset name with backend mock|pluto|gnuradio")
    check.add_argument("--record", metavar="DIR", help="record the captures and the step into DIR "
                       "(hardware.record.dir)")
    check.set_defaults(func=run_check)


def _dbm(x_w) -> np.ndarray:
    """W to dBm for arrays (0 W reads -300 dBm)."""
    return w_to_dbm(np.maximum(np.asarray(x_w, dtype=float), 1e-33))


def _table(title: str, rows: list[str], cells: list[list[str]]) -> str:
    """A rows x bands table of preformatted cells, with a header line."""
    width = max(len(r) for r in rows)
    head = " " * width + "".join(f"{f'band {k}':>11}" for k in range(len(cells[0])))
    lines = [title, head] + [r.ljust(width) + "".join(f"{c:>11}" for c in row) for r, row in zip(rows, cells)]
    return "\n".join(lines)


def report(net: MeasuredNetwork, seed: int) -> str:
    """Noise floor, occupancy and one full-power step, as text."""
    p, hw = net.params, net.hw
    names = list(dict.fromkeys(net.bs_radio))
    floor_dbm = np.stack([_dbm(net.noise_floor[r] * net.full_scale_w / net.radio_gain_lin[r]) for r in names])
    out = [f"{len(net.radios)} radios open ({', '.join(net.radios)}), centre {hw.center_hz / 1e6:.3f} MHz, "
           f"{hw.sample_rate_hz / 1e6:.3f} MS/s, {p.num_bands} bands, dry_run={hw.dry_run}",
           _table(f"noise floor at the BS radios (dBm, network-referred; N0 = {p.noise_dbm:.1f} dBm)",
                  names, [[f"{v:.1f}" for v in row] for row in floor_dbm])]
    if net.calibration:
        rows = [f"  {name:<8} {c['offset_hz']:>+12.1f} {c['corrected_hz']:>+12.1f} {c.get('residual_hz', 0.0):>+12.1f}"
                for name, c in net.calibration.items()]
        out.append("frequency calibration against the first UE radio (Hz: offset measured, correction applied, "
                   "residual after)\n" + f"  {'radio':<8} {'offset':>12} {'corrected':>12} {'residual':>12}\n"
                   + "\n".join(rows))
    else:
        out.append("frequency calibration: off (hardware.calibrate: false, or dry run)")
    net.reset(seed=seed)
    external = net.state.external_w[0].cpu().numpy()                  # [B, K]
    masked = ~net.mask()[0].cpu().numpy()                             # with TX off the map is X
    cells = [[("-" if x <= 0 else f"{_dbm(x):.1f}") + ("*" if m else " ") for x, m in zip(row, mrow)]
             for row, mrow in zip(external, masked)]
    out.append(_table(f"occupancy with TX off: external interference above the floor (dBm; * = above I_max "
                      f"{p.i_max_dbm:.0f} dBm, masked)", [f"BS {b} ({net.bs_radio[b]})" for b in range(p.num_bs)], cells))
    level = net.mask().long() * (p.num_levels - 1)
    res = net.step(level)
    sinr_db = torch.where(res.active, lin_to_db(res.sinr_lin), torch.full_like(res.sinr_lin, float("nan")))
    tags = np.where(res.measured[0].cpu().numpy(), "m", "s")
    cells = [[f"{v:.1f}{t}" if np.isfinite(v) else "- " for v, t in zip(row, trow)]
             for row, trow in zip(sinr_db[0].cpu().numpy(), tags)]
    out.append(_table("SINR at full power on unmasked bands (dB; m = measured, s = simulated, - = off)",
                      [f"BS {b}" for b in range(p.num_bs)], cells))
    out.append(f"turns {net.last_turns}, TX back-off {net.last_backoff_db:.1f} dB; captures: "
               f"{net.stale_captures} stale (held an earlier burst, taken again), "
               f"{net.clipped_captures} clipped (ADC at full scale: lower rx_gain_db or add attenuation); "
               f"device faults: {net.overflows} RX overflows, {net.underflows} TX underflows" + "".join(
                   f"\n  {name}: {r.overflows} overflows, {r.underflows} underflows"
                   for name, r in net.radios.items() if r.overflows or r.underflows))
    return "\n\n".join(out)


def run_check(args: argparse.Namespace) -> int:
    config = load_config(args.config, {"hardware": {"record": {"dir": args.record}}} if args.record else None)
    if config.backend in ("sim", "replay"):
        print(f"radio check: {args.config} has backend: {config.backend}; set backend: mock, pluto or gnuradio",
              file=sys.stderr)
        return 1
    net = None
    try:
        net = make_backend(config, num_envs=1)
        print(report(net, config.env.seed))
    except RecordingError as err:
        print(f"radio check stopped: {err}", file=sys.stderr)
        return 3
    except (RadioError, SafetyViolation, BackendError) as err:
        print(f"radio check failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        if net is not None:
            try:
                net.close()
            except RadioError as err:
                print(f"radio check: closing failed: {err}", file=sys.stderr)
                return 1
    print("\nall radios muted and closed" + (f"; recorded into {args.record}" if args.record else ""))
    return 0
