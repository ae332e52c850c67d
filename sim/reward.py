"""Traffic queues, throughput (Eq. 9), Jain's index (Eq. 10), cost (Eq. 11), penalty (Eq. 12) and
reward (Eq. 8). Shared by every backend."""
from __future__ import annotations

import torch

from sim.params import NetworkParams
from sim.units import scalar_like


def link_rate_bps(sinr_lin: torch.Tensor, active: torch.Tensor, bandwidth_hz: float) -> torch.Tensor:
    """Shannon rate W log2(1 + SINR) of each active link, 0 elsewhere. [N, B, K]."""
    one, zero = scalar_like(1.0, sinr_lin), scalar_like(0.0, sinr_lin)
    return torch.where(active, scalar_like(bandwidth_hz, sinr_lin) * torch.log2(one + sinr_lin), zero)


def ue_rate_bps(link_rate: torch.Tensor, served_ue: torch.Tensor, num_ue: int) -> torch.Tensor:
    """R_u: sum of the rates of the links serving each UE. [N, U]."""
    n = link_rate.shape[0]
    out = torch.zeros(n, num_ue, dtype=link_rate.dtype, device=link_rate.device)
    return out.scatter_add_(1, served_ue.clamp_min(0).view(n, -1), link_rate.view(n, -1))


def update_queues(queue_bits: torch.Tensor, arrivals_bits: torch.Tensor, rate_bps: torch.Tensor,
                  step_s: float) -> torch.Tensor:
    """Q ← max(0, Q + A − R Δt), in bit. [N, U]."""
    return (queue_bits + arrivals_bits - rate_bps * scalar_like(step_s, rate_bps)).clamp_min(0.0)


def jain_index(x: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 10 over the active entries of the last axes (all of them when ``active`` is None):
    (Σx)² / (n Σx²); 0 with no active entry. [N]."""
    zero, one = scalar_like(0.0, x), scalar_like(1.0, x)
    x = (x if active is None else torch.where(active, x, zero)).flatten(1)
    top = x.amax(-1, keepdim=True)
    x = x / torch.where(top > zero, top, one)  # scale-free, no underflow of x²
    n = x.shape[-1] if active is None else active.flatten(1).sum(-1)
    sq = (x * x).sum(-1)
    return torch.where(sq > zero, x.sum(-1) ** 2 / (n * sq).clamp_min(1e-30), zero)


def cost(power_w: torch.Tensor, prev_power_w: torch.Tensor, p: NetworkParams) -> torch.Tensor:
    """Eq. 11: c_p Σ p̂/P_max + c_s Σ |p̂ − p̂_prev|/P_max. [N]."""
    c = lambda value: scalar_like(value, power_w)  # noqa: E731
    return (c(p.cost_power) * power_w.sum((1, 2)) + c(p.cost_switch) * (power_w - prev_power_w).abs().sum((1, 2))) \
        / c(p.max_power_w)


def penalty(sinr_violations: torch.Tensor, latency_violations: torch.Tensor, p: NetworkParams) -> torch.Tensor:
    """Eq. 12: κ1 (active links under γ_min) + κ2 (UEs over D_max). [N]."""
    return (scalar_like(p.penalty_sinr, sinr_violations) * sinr_violations
            + scalar_like(p.penalty_delay, latency_violations) * latency_violations)


def reward(throughput_bps, fairness, cost_value, penalty_value, p: NetworkParams) -> torch.Tensor:
    """Eq. 8: w1 T/T_ref + w2 J − w3 C − w4 Ψ. [N]."""
    c = lambda value: scalar_like(value, throughput_bps)  # noqa: E731
    return (c(p.w_throughput) * throughput_bps / c(p.throughput_ref_bps) + c(p.w_fairness) * fairness
            - c(p.w_cost) * cost_value - c(p.w_penalty) * penalty_value)
