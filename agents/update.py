"""What PPO, MAML and RL² share: the run contract (modes, lock-step episodes), the PPO losses
(clipped surrogate, value loss, entropy bonus, advantage normalisation) and the optimiser loop.

The losses reduce over the last axis, the samples: inputs ``[G, M]`` give one loss per learner
``[G]`` (stacked learners, see ``agents.functional``), inputs ``[M]`` a scalar (one learner, or
one task under ``vmap``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch

from agents.policies import entropy, log_prob

MODES = ("train", "adapt", "eval")
STATS = ("losses/policy", "losses/value", "losses/entropy", "losses/approx_kl", "losses/clipfrac")


# the run contract -------------------------------------------------------------------------------
class EpisodeLengthError(RuntimeError):
    """The env's episodes are not the lock-step length the agent was built for."""


def check_mode(mode: str) -> None:
    """``mode`` must be one of ``MODES``."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose from {MODES}")


def check_lockstep(ended: np.ndarray, t: int, num_steps: int) -> None:
    """Every lane must end its episode together, exactly at step ``num_steps``."""
    if ended.all() != (t == num_steps - 1) or ended.any() != ended.all():
        raise EpisodeLengthError(f"the env ended episodes at step {t + 1} on lanes {np.flatnonzero(ended)}; "
                                 f"the agent expects lock-step episodes of {num_steps} steps")


# losses -----------------------------------------------------------------------------------------
class Batch(NamedTuple):
    """Stored transitions and their GAE targets, samples along one axis (the same for all)."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        return Batch(*(fn(x) for x in self))


def normalize_advantages(adv: torch.Tensor, correction: int = 0) -> torch.Tensor:
    """Zero mean and unit std over the samples; the std's ``correction`` 0 is safe for one sample."""
    return (adv - adv.mean(-1, keepdim=True)) / (adv.std(-1, keepdim=True, correction=correction) + 1e-8)


def clipped_surrogate(newlogp, oldlogp, adv, clip_coef: float, norm_adv: bool = True):
    """PPO policy loss: tensors [..., M] -> (loss [...], approx_kl [...], clipfrac [...])."""
    if norm_adv:
        adv = normalize_advantages(adv)
    logratio = newlogp - oldlogp
    ratio = logratio.exp()
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean(-1)
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean(-1)
        clipfrac = ((ratio - 1).abs() > clip_coef).float().mean(-1)
    return loss, approx_kl, clipfrac


def value_loss(newvalue, returns, oldvalue=None, clip_coef: float | None = None):
    """Squared-error value loss [..., M] -> [...], clipped around ``oldvalue`` if ``clip_coef``."""
    unclipped = (newvalue - returns) ** 2
    if clip_coef is None:
        return 0.5 * unclipped.mean(-1)
    clipped = (oldvalue + (newvalue - oldvalue).clamp(-clip_coef, clip_coef) - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean(-1)


def policy_loss(logits, actions, oldlogp, adv, clip_coef: float, ent_coef: float, norm_adv: bool = True):
    """Clipped surrogate minus the entropy bonus: logits [..., M, H, L], actions [..., M, H], the rest
    [..., M] -> (loss [...], (surrogate, entropy, approx_kl, clipfrac) each [...])."""
    surrogate, approx_kl, clipfrac = clipped_surrogate(log_prob(logits, actions), oldlogp, adv, clip_coef, norm_adv)
    ent = entropy(logits).mean(-1)
    return surrogate - ent_coef * ent, (surrogate, ent, approx_kl, clipfrac)


def ppo_loss(logits, newvalue, batch: Batch, clip_coef: float, ent_coef: float, vf_coef: float,
             norm_adv: bool = True, value_clip: float | None = None):
    """The PPO objective of a minibatch, summed over learners, and its ``STATS`` [5] (means over learners)."""
    loss, (surrogate, ent, approx_kl, clipfrac) = policy_loss(logits, batch.actions, batch.logprobs, batch.advantages,
                                                              clip_coef, ent_coef, norm_adv)
    v_loss = value_loss(newvalue, batch.returns, batch.values, value_clip)
    stats = torch.stack([surrogate.mean(), v_loss.mean(), ent.mean(), approx_kl.mean(), clipfrac.mean()])
    return (loss + vf_coef * v_loss).sum(), stats


# the optimiser loop -----------------------------------------------------------------------------
def shuffled_minibatches(num_samples: int, num_minibatches: int, epochs: int,
                         generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Sample indices of ``epochs`` shuffled passes, ``num_minibatches`` equal minibatches each
    (the remainder of a pass is left out)."""
    size = max(1, num_samples // num_minibatches)
    for _ in range(epochs):
        perm = torch.randperm(num_samples, generator=generator, device=generator.device)
        for start in range(0, num_samples - size + 1, size):
            yield perm[start:start + size]


def optimise(optimizer: torch.optim.Optimizer, minibatch_loss: Callable, minibatches: Iterable,
             max_grad_norm: float | None = None, clip_grad_norm: Callable = torch.nn.utils.clip_grad_norm_) -> list:
    """One step of ``optimizer`` per minibatch: ``minibatch_loss(minibatch) -> (loss, stats)``, the
    gradient clipped by ``clip_grad_norm(params, max_grad_norm)`` unless ``max_grad_norm`` is None.
    Returns the stats of every step."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stats = []
    for minibatch in minibatches:
        loss, step_stats = minibatch_loss(minibatch)
        optimizer.zero_grad()
        loss.backward()
        if max_grad_norm is not None:
            clip_grad_norm(params, max_grad_norm)
        optimizer.step()
        stats.append(step_stats)
    return stats


def anneal_lr(optimizer: torch.optim.Optimizer, base_lr: float, done: int, total: int) -> None:
    """Linear annealing: set the step size to ``base_lr · (1 − done/total)`` (``done`` of ``total`` updates made)."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * max(0.0, 1.0 - done / total)


def mean_stats(stats: list[torch.Tensor]) -> dict[str, float]:
    """The ``STATS`` of ``ppo_loss``, averaged over the steps of an update."""
    return dict(zip(STATS, torch.stack(stats).mean(0).tolist()))
