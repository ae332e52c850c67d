"""Several independent learners that share one network definition.

The parameters of G learners are stacked along a leading axis (``[G, ...]``) and the network
is evaluated with ``torch.func.functional_call`` under ``torch.func.vmap``. Adam is elementwise,
so one ``torch.optim.Adam`` over the stacked tensors updates each learner independently; the
gradient clip is taken per learner. G = 1 is the usual single learner; G = N gives each env
lane its own copy (per-task adaptation, MAML's adapted parameters).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap


def stack_params(params: dict[str, torch.Tensor], num_learners: int) -> dict[str, torch.Tensor]:
    """Copies of ``params`` stacked to [G, ...], as fresh leaves that require grad."""
    return {name: p.detach().unsqueeze(0).repeat(num_learners, *([1] * p.dim())).requires_grad_()
            for name, p in params.items()}


def batched_call(module: nn.Module, params: dict[str, torch.Tensor], *args: torch.Tensor):
    """``module(*args)`` with per-learner params [G, ...] on per-learner inputs [G, ...].

    ``params`` may name a subset of the module's parameters; the rest keep their own values.
    """
    def call(p, *a):
        return functional_call(module, p, a, strict=False)
    num_learners = next(iter(params.values())).shape[0]
    if num_learners == 1:
        out = call({k: v[0] for k, v in params.items()}, *(a[0] for a in args))
        return tuple(o.unsqueeze(0) for o in out) if isinstance(out, tuple) else out.unsqueeze(0)
    return vmap(call)(params, *args)


def clip_grad_norm_per_learner(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each learner's gradient (row g of every [G, ...] tensor) to global norm <= max_norm. Returns norms [G]."""
    sq = sum(p.grad.flatten(1).pow(2).sum(1) for p in params)
    norms = sq.sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(scale.view(-1, *([1] * (p.dim() - 1))))
    return norms
