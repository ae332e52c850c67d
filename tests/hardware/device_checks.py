"""The calibration and TX switch checks the device tests run on real radios, shared with tests that
run them on emulated ones (emulated Plutos, the USRP stand-in, the uhd flowgraph on a fake gr-uhd),
so the code a device test runs is tested here too.

- ``start_up_calibration(config, radios)``: the measured backend's start-up calibration
  (``hardware.calibrate``) on these radios; ``check_calibration(net)`` asserts every radio's
  residual is within ``max_residual_cfo_hz`` and every BS radio was corrected by what was measured.
- ``check_tx_switch(tx, rx, wait_s)``: burst A, then burst B, then a mute; each change is given
  ``wait_s`` (the driver's documented switch latency in samples at the device's rate, plus a
  margin, as seconds; ``latency_wait_s``) before a capture, and every block of that capture must
  hold only what is on air now: A, then only B, then neither.
"""
from __future__ import annotations

import time

import numpy as np

from hardware.measured import MeasuredNetwork
from hardware.radio import _BURST_KEY, Radio, TxBurst

PERIOD = 1024                 # samples per tone period and per analysed block
TONE_A, TONE_B = 100, 300     # bins of the two bursts (their IQ images, 924 and 724, are far from both)
WINDOW_BINS = 3               # a tone's power is taken over ±this many bins (an offset of a few kHz)
PRESENT = 100.0               # a tone is on air: its window holds this many times the window's noise (20 dB)
ABSENT = 10.0                 # a tone is off: its window holds less than this many times the noise (10 dB)
NOISE_FLOOR_FS = 1e-12        # noise per bin assumed at least (a digital loopback has none)
CAPTURE_SAMPLES = 16 * PERIOD


def start_up_calibration(config, radios: dict[str, Radio]) -> MeasuredNetwork:
    """The measured backend on these radios (configured, noise floor, ``hardware.calibrate``)."""
    hw, p = config.hardware, config.network
    return MeasuredNetwork(p, config.task_ranges, 1, hw, radios, plan=hw.pilot_plan(p.num_bs, p.num_bands))


def check_calibration(net: MeasuredNetwork) -> dict[str, dict[str, float]]:
    """Every radio calibrated: each BS radio corrected by the offset it was measured at, and every
    radio's residual within ``max_residual_cfo_hz``. Returns the calibration report."""
    cal, bound = net.calibration, net.hw.max_residual_cfo_hz
    assert set(cal) == {e.name for e in net.hw.radios}, f"calibration reports {sorted(cal)}"
    for name in dict.fromkeys(net.bs_radio):
        assert cal[name]["corrected_hz"] == cal[name]["offset_hz"], f"{name} was not corrected: {cal[name]}"
    for name, figures in cal.items():
        assert abs(figures["residual_hz"]) <= bound, f"{name}: residual {figures['residual_hz']:+.1f} Hz > {bound:g} Hz"
    return cal


def tone_burst(bin_: int, amplitude: float = 0.3) -> TxBurst:
    """A cyclic burst of one tone period on bin ``bin_`` (below the Transmitter, as the driver tests do)."""
    iq = (amplitude * np.exp(2j * np.pi * bin_ * np.arange(PERIOD) / PERIOD)).astype(np.complex64)
    return TxBurst(iq, cyclic=True, _key=_BURST_KEY)


def tone_levels(iq: np.ndarray) -> np.ndarray:
    """Per block of PERIOD samples, the power of tone A and of tone B over the noise in their
    windows (noise: the block's median bin). [blocks, 2]"""
    blocks = iq[: iq.size // PERIOD * PERIOD].reshape(-1, PERIOD)
    spectrum = np.abs(np.fft.fft(blocks, axis=1) / PERIOD) ** 2
    noise = np.maximum(np.median(spectrum, axis=1), NOISE_FLOOR_FS) * (2 * WINDOW_BINS + 1)
    offsets = np.arange(-WINDOW_BINS, WINDOW_BINS + 1)
    power = np.stack([spectrum[:, (b + offsets) % PERIOD].sum(axis=1) for b in (TONE_A, TONE_B)], axis=1)
    return power / noise[:, None]


def latency_wait_s(latency_samples: int, margin_samples: int, sample_rate_hz: float) -> float:
    """The documented switch latency plus a margin, in samples of the device's rate, as seconds."""
    return (latency_samples + margin_samples) / sample_rate_hz


def check_tx_switch(tx: Radio, rx: Radio, wait_s: float, capture_samples: int = CAPTURE_SAMPLES) -> dict:
    """A then B then mute on ``tx``, each given ``wait_s`` before ``rx`` captures: A's capture
    holds A in every block; B's holds B in every block and A in none; the mute's neither. Returns
    per change the weakest wanted and the strongest unwanted tone over the noise, dB."""
    figures = {}
    for label, change, wanted in (("A", lambda: tx.send(tone_burst(TONE_A)), [0]),
                                  ("B", lambda: tx.send(tone_burst(TONE_B)), [1]),
                                  ("mute", tx.mute, [])):
        change()
        time.sleep(wait_s)
        levels = tone_levels(rx.capture(capture_samples))
        unwanted = [i for i in (0, 1) if i not in wanted]
        weakest = float(levels[:, wanted].min()) if wanted else np.inf
        strongest = float(levels[:, unwanted].max())
        assert weakest > PRESENT, f"after {label}: its tone only {10 * np.log10(weakest):.1f} dB over the noise"
        assert strongest < ABSENT, (f"after {label} and {wait_s * 1e3:.1f} ms: a tone no longer sent is still "
                                    f"{10 * np.log10(strongest):.1f} dB over the noise")
        figures[label] = {"wanted_db": 10 * np.log10(weakest), "unwanted_db": 10 * np.log10(max(strongest, 1e-30))}
    return figures
