"""Tasks: the per-episode random parameters of a network (geometry, propagation, traffic,
incumbents and, in the hardware family, the hidden PA parameters), sampled in batches. A batch
of N tasks is N independent networks."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from sim.params import NetworkParams, TaskRanges, check_task_tables, table_shape
from sim.units import dbm_to_w, w_to_dbm


@dataclass(frozen=True)
class Tasks:
    """N sampled tasks. Every field is a tensor with leading axis N (the PA fields are None in the
    standard family)."""

    bs_pos_m: torch.Tensor             # [N, B, 2]
    ue_pos_m: torch.Tensor             # [N, U, 2]
    path_loss_exponent: torch.Tensor   # [N]
    path_loss_ref_db: torch.Tensor     # [N]
    shadowing_std_db: torch.Tensor     # [N]
    coherence: torch.Tensor            # [N]  ρ of the AR(1) fading
    fading_std_db: torch.Tensor        # [N]
    traffic_bps: torch.Tensor          # [N, U] λ_u
    incumbent_occupancy: torch.Tensor  # [N]
    incumbent_on_steps: torch.Tensor   # [N]
    incumbent_power_w: torch.Tensor    # [N]
    gain_mean_db: torch.Tensor         # [N, B, U] path loss + shadowing (no fading)
    bs_gain_mean_db: torch.Tensor      # [N, B, B] BS-to-BS (offsets c(b',b) included), diagonal -inf
    assoc: torch.Tensor                # [N, U] long, serving BS of each UE
    ue_by_rank: torch.Tensor           # [N, B, U] long, j-th UE of BS b (padded with 0)
    num_assoc: torch.Tensor            # [N, B] long, UEs associated with each BS
    pa_gain_offset_db: torch.Tensor | None = None   # [N, B, K] o(b,k), hardware family only
    pa_compression_dbm: torch.Tensor | None = None  # [N, B] P_c(b), hardware family only
    access_gain_offset_db: torch.Tensor | None = None  # [N, B, K] a(b,k), hardware family only

    @property
    def num_envs(self) -> int:
        return self.coherence.shape[0]

    def select(self, index) -> "Tasks":
        """The tasks at ``index`` (an int, slice or index tensor) along N; keeps the N axis."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Tasks(**{name: None if v is None else v[index] for name, v in values.items()})

    def describe(self) -> dict:
        """Scalar task parameters per env, for ``info["task"]`` (tensors [N])."""
        out = {
            "path_loss_exponent": self.path_loss_exponent,
            "path_loss_ref_db": self.path_loss_ref_db,
            "shadowing_std_db": self.shadowing_std_db,
            "coherence": self.coherence,
            "fading_std_db": self.fading_std_db,
            "incumbent_occupancy": self.incumbent_occupancy,
            "incumbent_on_steps": self.incumbent_on_steps,
            "incumbent_power_dbm": w_to_dbm(self.incumbent_power_w),
            "mean_traffic_bps": self.traffic_bps.mean(-1),
        }
        if self.pa_gain_offset_db is not None:
            out["mean_pa_gain_offset_db"] = self.pa_gain_offset_db.mean((1, 2))
            out["mean_pa_compression_dbm"] = self.pa_compression_dbm.mean(-1)
            out["mean_access_gain_offset_db"] = self.access_gain_offset_db.mean((1, 2))
        return out


def _uniform(gen: torch.Generator, bounds, shape, device) -> torch.Tensor:
    """Uniform draws of ``shape`` from [low, high], or from a table of [low, high] per entry of the
    trailing axes of ``shape`` (``TaskRanges``: per BS and band, per BS pair)."""
    if table_shape(bounds) is None:
        lo, hi = float(bounds[0]), float(bounds[1])
        return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)
    table = torch.tensor(bounds, dtype=torch.float32, device=device)                # [..., 2]
    lo, hi = table[..., 0], table[..., 1]
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


def _offset_db(bounds, shape, gen: torch.Generator, device) -> torch.Tensor:
    """Offsets of ``shape`` in dB drawn from ``bounds``; a range of zero width is its value, drawing
    nothing (so a default [0, 0] leaves every later draw as it was)."""
    if table_shape(bounds) is None and bounds[0] == bounds[1]:
        return torch.full(shape, float(bounds[0]), device=device)
    return _uniform(gen, bounds, shape, device)


def _bs_positions(p: NetworkParams, n: int, gen, device) -> torch.Tensor:
    """Donor at the origin, the other B-1 BSs evenly on a ring with a random rotation and jitter."""
    num_ring = p.num_bs - 1
    pos = torch.zeros(n, p.num_bs, 2, device=device)
    if num_ring:
        phase = 2 * math.pi * torch.rand(n, 1, generator=gen, device=device)
        angle = phase + 2 * math.pi * torch.arange(num_ring, device=device) / num_ring  # [N, B-1]
        pos[:, 1:, 0] = p.ring_radius_m * torch.cos(angle)
        pos[:, 1:, 1] = p.ring_radius_m * torch.sin(angle)
        pos[:, 1:] += p.bs_jitter_m * torch.randn(n, num_ring, 2, generator=gen, device=device)
    return pos


def _ue_positions(p: NetworkParams, bs_pos: torch.Tensor, gen) -> torch.Tensor:
    """UEs uniform in the area, redrawn until at least min_ue_distance_m from every BS."""
    n, device = bs_pos.shape[0], bs_pos.device
    ue = (torch.rand(n, p.num_ue, 2, generator=gen, device=device) - 0.5) * p.area_m
    for _ in range(1000):
        too_close = (torch.cdist(ue, bs_pos) < p.min_ue_distance_m).any(-1)  # [N, U]
        if not too_close.any():
            return ue
        fresh = (torch.rand(n, p.num_ue, 2, generator=gen, device=device) - 0.5) * p.area_m
        ue = torch.where(too_close.unsqueeze(-1), fresh, ue)
    raise ValueError("could not drop UEs at min_ue_distance_m from every BS: area_m too small")


def path_gain_db(distance_m: torch.Tensor, exponent: torch.Tensor, ref_db: torch.Tensor) -> torch.Tensor:
    """Log-distance path gain, Eq. 2: -(PL0 + 10 n log10(d / 1 m)), in dB. exponent/ref_db broadcast."""
    return -(ref_db + 10.0 * exponent * torch.log10(distance_m.clamp_min(1.0)))


def sample_tasks(p: NetworkParams, r: TaskRanges, n: int, gen: torch.Generator, device="cpu") -> Tasks:
    """Draw n tasks from the ranges ``r``; the hardware family draws its PA parameters after the
    rest, so its geometry, propagation, traffic and incumbents are those of the standard family's
    draw; the BS-to-BS offsets c(b',b), then (hardware family) the access offsets a(b,k) come last.
    ValueError for a table of the wrong shape."""
    check_task_tables(p, r)
    u = lambda bounds, shape=(n,): _uniform(gen, bounds, shape, device)  # noqa: E731
    exponent, ref_db = u(r.path_loss_exponent), u(r.path_loss_ref_db)
    shadow_std, rho, fade_std = u(r.shadowing_std_db), u(r.coherence).clamp(0.0, 1.0), u(r.fading_std_db)
    traffic = u(r.traffic_bps, (n, p.num_ue))
    occupancy, on_steps = u(r.incumbent_occupancy), u(r.incumbent_on_steps)
    inc_power_w = dbm_to_w(u(r.incumbent_power_dbm))

    bs = _bs_positions(p, n, gen, device)
    ue = _ue_positions(p, bs, gen)
    col = lambda x: x.view(n, 1, 1)  # noqa: E731
    shadow = torch.randn(n, p.num_bs, p.num_ue, generator=gen, device=device) * col(shadow_std)
    gain = path_gain_db(torch.cdist(bs, ue), col(exponent), col(ref_db)) + shadow

    bs_exponent = (exponent + p.bs_bs_exponent_offset).clamp_min(1.0)
    bs_shadow = torch.randn(n, p.num_bs, p.num_bs, generator=gen, device=device) * col(shadow_std)
    bs_shadow = (bs_shadow + bs_shadow.transpose(1, 2)) / math.sqrt(2.0)  # reciprocal, same variance
    bs_gain = path_gain_db(torch.cdist(bs, bs), col(bs_exponent), col(ref_db)) + bs_shadow
    bs_eye = torch.eye(p.num_bs, dtype=torch.bool, device=device)

    assoc = gain.argmax(dim=1)  # [N, U]
    member = assoc.unsqueeze(1) == torch.arange(p.num_bs, device=device).view(1, -1, 1)  # [N, B, U]
    # UEs of each BS first (in index order), others after: a stable sort on "not a member"
    ue_by_rank = torch.sort((~member).to(torch.int8), dim=-1, stable=True).indices
    hardware = {}
    if p.task_family == "hardware":
        hardware = {"pa_gain_offset_db": u(r.pa_gain_offset_db, (n, p.num_bs, p.num_bands)),
                    "pa_compression_dbm": u(r.pa_compression_dbm, (n, p.num_bs))}
    bs_offset = _offset_db(r.bs_gain_offset_db, (n, p.num_bs, p.num_bs), gen, device)
    bs_gain = (bs_gain + bs_offset).masked_fill(bs_eye, -math.inf)
    if hardware:
        hardware["access_gain_offset_db"] = _offset_db(r.access_gain_offset_db, (n, p.num_bs, p.num_bands), gen, device)
    return Tasks(
        bs_pos_m=bs, ue_pos_m=ue, path_loss_exponent=exponent, path_loss_ref_db=ref_db,
        shadowing_std_db=shadow_std, coherence=rho, fading_std_db=fade_std, traffic_bps=traffic,
        incumbent_occupancy=occupancy, incumbent_on_steps=on_steps, incumbent_power_w=inc_power_w,
        gain_mean_db=gain, bs_gain_mean_db=bs_gain, assoc=assoc, ue_by_rank=ue_by_rank,
        num_assoc=member.sum(-1), **hardware,
    )
