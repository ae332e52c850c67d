"""The safety filter (Eq. 4, docs/model.md) and the token type that proves a power passed it.

``SafePowers`` can only be built by :func:`apply_safety_filter`: its constructor demands a
module-private key. Radios accept nothing else (see ``hardware.transmitter``), so no code path
can radiate a power that skipped the filter.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sim.units import scalar_like

_KEY = object()


class SafetyViolation(RuntimeError):
    """A transmission would break the safety rule or a configured hard limit."""


@dataclass(frozen=True, eq=False)
class SafePowers:
    """Executed powers that passed the safety filter. Shapes [N, B, K]."""

    level: torch.Tensor      # [N, B, K] long, executed level (0 = off)
    power_w: torch.Tensor    # [N, B, K] float, executed power p̂ in W
    mask: torch.Tensor       # [N, B, K] bool, 1[I_prev <= I_max]
    blocked: torch.Tensor    # [N, B, K] bool, request > 0 zeroed by the mask
    lowered: torch.Tensor    # [N, B, K] bool, request lowered (mode "lower") but not zeroed
    _key: object = None

    def __post_init__(self):
        if self._key is not _KEY:
            raise SafetyViolation("SafePowers can only be created by sim.safety.apply_safety_filter")


def safety_mask(interference_prev_w: torch.Tensor, i_max_w: float) -> torch.Tensor:
    """1[I_prev(b,k) <= I_max]: bands each BS may use this step. [N, B, K] bool."""
    return interference_prev_w <= scalar_like(i_max_w, interference_prev_w)


def apply_safety_filter(
    level: torch.Tensor,             # [N, B, K] requested levels
    interference_prev_w: torch.Tensor,  # [N, B, K] map of the previous step, W
    level_power_w: torch.Tensor,     # [L] power of each level, W
    i_max_w: float,
    mode: str = "zero",
    bs_gain_lin: torch.Tensor | None = None,  # [N, B, B] BS-to-BS gains, needed by mode "lower"
) -> SafePowers:
    """Eq. 4: p̂ = p(a)·1[I_prev <= I_max].

    Mode "lower" additionally lowers each request to the highest level whose predicted
    interference at every other BS with an open mask stays within an equal share
    I_max/(B-1) of the budget, so the sum over transmitters stays under I_max.
    """
    mask = safety_mask(interference_prev_w, i_max_w)
    requested = level.clamp(0, level_power_w.numel() - 1)
    executed = requested * mask
    lowered = torch.zeros_like(mask)
    if mode == "lower" and level.shape[1] > 1:
        if bs_gain_lin is None:
            raise ValueError("safety_mode 'lower' needs bs_gain_lin")
        num_bs = level.shape[1]
        share_w = i_max_w / (num_bs - 1)
        # worst gain from b to any other BS b' whose mask is open on band k: [N, B, K]
        gain = bs_gain_lin.clone()
        gain.diagonal(dim1=1, dim2=2).zero_()
        worst = (gain.unsqueeze(-1) * mask.unsqueeze(1)).amax(dim=2)
        allowed = level_power_w.view(1, 1, 1, -1) * worst.unsqueeze(-1) <= share_w  # [N, B, K, L]
        levels = torch.arange(level_power_w.numel(), device=level.device)
        highest_ok = torch.where(allowed, levels, torch.zeros_like(levels)).amax(dim=-1)
        capped = torch.minimum(executed, highest_ok)
        lowered = (capped < executed) & (capped > 0)
        executed = capped
    blocked = (requested > 0) & (executed == 0)
    return SafePowers(
        level=executed,
        power_w=level_power_w.take(executed),
        mask=mask,
        blocked=blocked,
        lowered=lowered,
        _key=_KEY,
    )
