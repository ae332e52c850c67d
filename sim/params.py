"""Parameters of the network model (DESIGN.md section 2) as frozen dataclasses.

Each field carries its allowed range (``metadata["range"]``, inclusive) or choices
(``metadata["choices"]``) and a one-line doc; ``testbed.config`` validates against them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from sim.units import dbm_to_w, noise_power_dbm


def param(default, doc: str, range=None, choices=None, table=None):
    """A dataclass field with its doc and allowed range (inclusive) or choices; ``table`` (a task
    range only): the axes of the per-node table of [low, high] it may also be, e.g. ("num_bs", "num_bands")."""
    meta = {"doc": doc}
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = choices
    if table is not None:
        meta["table"] = table
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NetworkParams:
    """Sizes, physics, traffic and reward of one IAB network (defaults: the paper's setup)."""

    num_bs: int = param(3, "base stations B (one IAB donor at the centre, the rest on a ring)", (1, 64))
    num_ue: int = param(10, "user equipments U", (1, 512))
    num_bands: int = param(5, "frequency bands K", (1, 64))
    num_levels: int = param(4, "discrete power levels L (level 0 is off)", (2, 16))
    step_s: float = param(0.01, "time step Δt in s", (1e-4, 1.0))
    episode_steps: int = param(100, "episode length T in steps", (1, 100_000))

    ring_radius_m: float = param(200.0, "radius of the ring of IAB nodes in m", (1.0, 10_000.0))
    bs_jitter_m: float = param(10.0, "std of the BS position jitter in m", (0.0, 1000.0))
    area_m: float = param(500.0, "side of the square UE drop area (centred on the donor) in m", (10.0, 20_000.0))
    min_ue_distance_m: float = param(10.0, "minimum UE-to-BS distance in m", (1.0, 1000.0))
    bs_bs_exponent_offset: float = param(-0.5, "BS-to-BS path-loss exponent is n plus this (LOS-like)", (-2.0, 0.0))

    max_power_dbm: float = param(23.0, "P_max, power of the top level per band in dBm", (-30.0, 46.0))
    bandwidth_hz: float = param(10e6, "band width W in Hz", (1e3, 1e9))
    noise_figure_db: float = param(7.0, "receiver noise figure NF in dB", (0.0, 20.0))
    i_max_dbm: float = param(-90.0, "I_max, interference threshold of the safety filter in dBm", (-150.0, 0.0))
    safety_mode: str = param("zero", "zero: mask (Eq. 4); lower: also lower requests that would push another BS over I_max",
                             choices=("zero", "lower"))

    packet_bits: float = param(12_000.0, "packet size S in bit", (1.0, 1e7))
    max_delay_s: float = param(0.05, "D_max, latency bound in s", (1e-4, 10.0))
    min_sinr_db: float = param(5.0, "γ_min, SINR below which an active link counts as a violation, in dB", (-30.0, 60.0))

    fairness_over: str = param("links", "Jain's index (Eq. 10) over the rates of the active links (links: the paper's; "
                               "one link alone scores 1) or over the rates of all UEs (ues: a UE left unserved scores 0)",
                               choices=("links", "ues"))
    w_throughput: float = param(1.0, "w1, weight of normalised throughput", (0.0, 100.0))
    w_fairness: float = param(0.5, "w2, weight of Jain's index", (0.0, 100.0))
    w_cost: float = param(1.0, "w3, weight of the power/switching cost", (0.0, 100.0))
    w_penalty: float = param(1.0, "w4, weight of the QoS penalty", (0.0, 100.0))
    throughput_ref_bps: float = param(5e8, "T_ref, throughput normaliser in bit/s", (1.0, 1e13))
    cost_power: float = param(0.02, "c_p, cost per unit of Σ p/P_max", (0.0, 10.0))
    cost_switch: float = param(0.01, "c_s, cost per unit of Σ |Δp|/P_max", (0.0, 10.0))
    penalty_sinr: float = param(0.04, "κ1, penalty per active link below γ_min", (0.0, 10.0))
    penalty_delay: float = param(0.04, "κ2, penalty per UE over D_max", (0.0, 10.0))

    task_family: str = param("standard", "standard: the paper's tasks; hardware: each task also draws hidden PA gain "
                             "offsets and compression points (docs/model.md)", choices=("standard", "hardware"))
    informed: bool = param(False, "append the task's hidden hardware parameters (normalised) to the observation; "
                           "needs task_family hardware", choices=(False, True))
    pa_sdr_max_db: float = param(30.0, "SDR_max, signal-to-distortion ratio of a PA below compression in dB "
                                 "(hardware family)", (0.0, 80.0))
    pa_sdr_slope_db: float = param(3.0, "s, SDR lost per dB of overdrive above the compression point, in dB/dB "
                                   "(hardware family)", (0.0, 10.0))

    def __post_init__(self):
        if self.informed and self.task_family != "hardware":
            raise ValueError("informed: true needs task_family: hardware (the standard family has no hidden "
                             "hardware parameters)")

    @property
    def level_power_dbm(self) -> list[float]:
        """Power of each level in dBm; level 0 (off) is -inf, the rest evenly spaced up to P_max."""
        top = self.max_power_dbm
        steps = self.num_levels - 1
        return [-math.inf] + [top * l / steps for l in range(1, steps + 1)]

    @property
    def level_power_w(self) -> list[float]:
        """Power of each level in W (level 0 is 0 W)."""
        return [0.0] + [dbm_to_w(p) for p in self.level_power_dbm[1:]]

    @property
    def max_power_w(self) -> float:
        return dbm_to_w(self.max_power_dbm)

    @property
    def noise_dbm(self) -> float:
        """N0 per band in dBm."""
        return noise_power_dbm(self.bandwidth_hz, self.noise_figure_db)

    @property
    def noise_w(self) -> float:
        return dbm_to_w(self.noise_dbm)

    @property
    def i_max_w(self) -> float:
        return dbm_to_w(self.i_max_dbm)


@dataclass(frozen=True)
class TaskRanges:
    """Ranges [low, high] from which each episode's task is drawn uniformly. A field with a ``table``
    in its metadata may instead be a table of [low, high], one per node (e.g. per BS and band), each
    entry drawn from its own range (``check_task_tables`` checks its shape against the network)."""

    path_loss_exponent: list = param([2.0, 4.0], "n, path-loss exponent", (1.5, 6.0))
    path_loss_ref_db: list = param([38.0, 48.0], "PL0, path loss at 1 m in dB", (0.0, 120.0))
    shadowing_std_db: list = param([4.0, 8.0], "σ_s, log-normal shadowing std in dB", (0.0, 20.0))
    coherence: list = param([0.80, 0.99], "ρ, AR(1) fading coefficient per step", (0.0, 1.0))
    fading_std_db: list = param([1.0, 4.0], "σ_f, stationary std of fading in dB", (0.0, 20.0))
    traffic_bps: list = param([1e6, 20e6], "λ_u, per-UE traffic rate in bit/s", (1.0, 1e10))
    incumbent_occupancy: list = param([0.0, 0.3], "stationary on-probability of incumbents", (0.0, 0.95))
    incumbent_on_steps: list = param([10.0, 10.0], "mean on-time of incumbents in steps", (1.0, 1e6))
    incumbent_power_dbm: list = param([-85.0, -70.0], "incumbent power received when on, in dBm", (-150.0, 30.0))
    pa_gain_offset_db: list = param([-20.0, 0.0], "o(b,k), PA gain offset per BS and band in dB (hardware family); "
                                    "[low, high], or a num_bs × num_bands table of [low, high] (a twin's, centred on "
                                    "each fitted offset)", (-60.0, 0.0), table=("num_bs", "num_bands"))
    pa_compression_dbm: list = param([10.0, 26.0], "P_c(b), PA output saturation power per BS in dBm "
                                     "(hardware family)", (-30.0, 60.0))
    access_gain_offset_db: list = param([0.0, 0.0], "a(b,k), gain of BS b's access path (antenna panel, filters, "
                                        "cabling toward the UEs) on band k in dB (hardware family): what the UEs "
                                        "receive from b on k is this much weaker, the BS-to-BS (backhaul) path and so "
                                        "the interference map do not see it; [low, high], or a num_bs × num_bands "
                                        "table of [low, high]; a range of zero width draws nothing",
                                        (-60.0, 0.0), table=("num_bs", "num_bands"))
    bs_gain_offset_db: list = param([0.0, 0.0], "c(b',b), offset added to the model's BS-to-BS gain h(b',b) of each "
                                    "pair (transmitter b', receiver b) in dB, e.g. a bench's coupling fitted by "
                                    "`testbed calibrate`; [low, high], or a num_bs × num_bs table of [low, high] (row "
                                    "b', column b; the diagonal is unused); a range of zero width draws nothing",
                                    (-60.0, 60.0), table=("num_bs", "num_bs"))

    def __post_init__(self):
        """Tables: rows of equal length, each entry [low, high] with low <= high (a plain [low, high]
        is checked where the config is read, ``testbed.config``)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if "table" not in f.metadata or not _is_table(value):
                continue
            rows = [len(row) if isinstance(row, (list, tuple)) else -1 for row in value]
            if len(set(rows)) != 1 or rows[0] < 1:
                raise ValueError(f"{f.name}: a table needs rows of equal length, got row lengths {rows}")
            for pair in (pair for row in value for pair in row):
                if not isinstance(pair, (list, tuple)) or len(pair) != 2 or pair[0] > pair[1]:
                    raise ValueError(f"{f.name}: expected [low, high] with low <= high, got {pair!r}")


def _is_table(value) -> bool:
    """Whether a task range is a table of [low, high] (nested lists) rather than one [low, high]."""
    return bool(value) and isinstance(value[0], (list, tuple))


def table_shape(value) -> tuple[int, ...] | None:
    """The shape of a task range's table (rows, entries per row), None for a plain [low, high]."""
    return (len(value), len(value[0])) if _is_table(value) else None


def check_task_tables(p: NetworkParams, r: TaskRanges) -> None:
    """Raise ValueError, naming the field and both shapes, unless every table of ``r`` has the
    shape its metadata asks of the network ``p`` (e.g. num_bs × num_bands)."""
    for f in fields(r):
        shape, axes = table_shape(getattr(r, f.name)), f.metadata.get("table")
        if shape is not None and shape != tuple(getattr(p, a) for a in axes):
            need = " × ".join(f"{a} ({getattr(p, a)})" for a in axes)
            raise ValueError(f"{f.name}: a table must be {need} entries of [low, high], got {shape[0]} × {shape[1]}")


def held_out_task_ranges() -> TaskRanges:
    """The held-out distribution: harsher propagation, denser incumbents and (hardware family only) PAs
    that compress lower."""
    return TaskRanges(
        path_loss_exponent=[4.0, 4.5],
        incumbent_occupancy=[0.3, 0.5],
        incumbent_on_steps=[20.0, 20.0],
        pa_compression_dbm=[4.0, 14.0],
    )
