"""Reference policies, for scale: random, max power on every unmasked band, a greedy
per-band allocator, the per-band exhaustive oracle (L^B combinations per band), and the oracle
with every link predicted under γ_min switched off (``switch_off``).

They are privileged: greedy, oracle and switch-off read the network's gains and schedule directly from
``env.net`` (agents never do), and in the hardware task family its hidden PA parameters
(``SimNetwork.pa_response``: the power each level radiates and its distortion), so they
maximise the throughput of the real step, not of a nominal one. Each is a callable
``policy(obs, info) -> actions [N, B*K]``. Greedy and oracle maximise this step's throughput;
they ignore fairness, cost and queues; switch-off also drops the links that would miss γ_min
(each a penalty κ1 and a near-zero rate in Jain's index). ``Episodes`` plays one with the agents' episode interface.
"""
from __future__ import annotations

import functools
import itertools
from typing import Callable

import numpy as np
import torch

from sim import channel
from sim.units import db_to_lin

Policy = Callable[[np.ndarray, dict], np.ndarray]
NAMES = ("random", "max_power", "greedy", "oracle", "switch_off")


def _view(net):
    """What the coming step will use: link gains [N, B', B, K], X [N, B, K], mask, links with a UE."""
    t, s, p = net.tasks, net.state, net.params
    served = channel.round_robin(s.t, t.ue_by_rank, t.num_assoc, p.num_bands)
    gain = channel.link_gains(db_to_lin(t.gain_mean_db + s.fading_db), served)
    return gain, s.external_w, net.mask(), served >= 0


def _predicted_sinr(net, level, gain, external_w, informed: bool = True) -> torch.Tensor:
    """SINR [..., N, B, K] of candidate levels [..., N, B, K] (leading axes broadcast) as the step computes
    it: with the network's PA and access-path model (``informed``), or nominal powers, no distortion."""
    if informed:
        power_w, sdr_lin = net.level_response(level)
        power_w = net.toward_ues_w(power_w)
    else:
        power_w, sdr_lin = net.level_power_w[level], None
    sinr = channel.sinr_of_received(power_w.unsqueeze(-2) * gain, external_w, net.params.noise_w)
    return sinr if sdr_lin is None else channel.distortion_limited(sinr, sdr_lin)


def _level_throughput(net, level, gain, external_w, has_ue, informed: bool = True) -> torch.Tensor:
    """Σ_b log2(1 + SINR) per band (throughput / W) of candidate levels [..., N, B, K] -> [..., N, K]."""
    return (torch.log2(1.0 + _predicted_sinr(net, level, gain, external_w, informed)) * has_ue).sum(-2)


@functools.lru_cache(maxsize=8)
def _combinations(num_levels: int, num_bs: int, device: torch.device) -> torch.Tensor:
    """Every combination of one level per BS, [L^B, B] long (built once per size and device)."""
    return torch.tensor(list(itertools.product(range(num_levels), repeat=num_bs)), device=device)


def _oracle_levels(net, combos: torch.Tensor, view: tuple, informed: bool = True) -> torch.Tensor:
    """Per band, the combination of ``combos`` (masked bands off) with the largest predicted throughput,
    ``view`` being ``_view(net)``. [N, B, K]."""
    gain, ext, mask, has_ue = view
    trial = combos.view(-1, 1, net.params.num_bs, 1) * mask                     # [C, N, B, K]
    best = _level_throughput(net, trial, gain, ext, has_ue, informed).argmax(0)   # [N, K]
    return combos[best].permute(0, 2, 1) * mask


def _to_actions(level: torch.Tensor) -> np.ndarray:
    return level.reshape(level.shape[0], -1).cpu().numpy().astype(np.int64)


def random_policy(env, seed: int = 0) -> Policy:
    rng = np.random.default_rng(seed)
    high = env.params.num_levels

    def act(obs, info):
        return rng.integers(0, high, size=(env.num_envs, env.params.num_bs * env.params.num_bands))
    return act


def max_power_policy(env) -> Policy:
    def act(obs, info):
        return _to_actions(env.net.mask().long() * (env.params.num_levels - 1))
    return act


def greedy_policy(env) -> Policy:
    """Start at max power on unmasked bands, then one pass of coordinate ascent per BS:
    each BS in turn picks the level that maximises its band's throughput given the others."""
    def act(obs, info):
        gain, ext, mask, has_ue = _view(env.net)
        p = env.params
        level = mask.long() * (p.num_levels - 1)             # [N, B, K]
        for b in range(p.num_bs):
            trial = level.unsqueeze(0).repeat(p.num_levels, 1, 1, 1)   # [L, N, B, K]
            trial[:, :, b, :] = torch.arange(p.num_levels, device=level.device).view(-1, 1, 1)
            trial = trial * mask
            score = _level_throughput(env.net, trial, gain, ext, has_ue)  # [L, N, K]
            level = trial.gather(0, score.argmax(0).view(1, -1, 1, p.num_bands).expand(1, -1, p.num_bs, -1))[0]
        return _to_actions(level)
    return act


def oracle_policy(env) -> Policy:
    """Per band, the combination of levels (all L^B, masked bands off) with the largest throughput
    (bands couple only through fairness, cost and queues, so this is the one-step optimum)."""
    combos = _combinations(env.params.num_levels, env.params.num_bs, env.net.device)

    def act(obs, info):
        return _to_actions(_oracle_levels(env.net, combos, _view(env.net)))
    return act


def switch_off_levels(net, informed: bool, margin_db: float = 0.0) -> torch.Tensor:
    """Privileged heuristic levels [N, B, K] of the coming step: the oracle's levels, then every link
    predicted under γ_min + ``margin_db`` switched off. Predicted with the network's true PA and
    access-path model (``informed``) or with ideal hardware (nominal powers, no distortion)."""
    view = _view(net)
    level = _oracle_levels(net, _combinations(net.params.num_levels, net.params.num_bs, net.device), view, informed)
    gain, ext, _, _ = view
    return torch.where(_predicted_sinr(net, level, gain, ext, informed) < db_to_lin(net.params.min_sinr_db + margin_db),
                       0, level)


def switch_off_policy(env) -> Policy:
    """``switch_off_levels`` with the network's true hardware model, as a policy."""
    def act(obs, info):
        return _to_actions(switch_off_levels(env.net, informed=True))
    return act


def make_policy(name: str, env, seed: int = 0) -> Policy:
    """A reference policy by name: random, max_power, greedy, oracle or switch_off."""
    if name == "random":
        return random_policy(env, seed)
    if name == "max_power":
        return max_power_policy(env)
    if name == "greedy":
        return greedy_policy(env)
    if name == "oracle":
        return oracle_policy(env)
    if name == "switch_off":
        return switch_off_policy(env)
    raise ValueError(f"unknown policy {name!r}; choose from {list(NAMES)}")


class Episodes:
    """A reference policy with the agents' episode interface (``start``, ``run_episode``,
    ``num_steps``), so the runner's episode loop plays it as it plays an agent."""

    def __init__(self, name: str, env, seed: int = 0):
        self.policy = make_policy(name, env, seed)
        self.num_steps = env.params.episode_steps
        self.obs, self.info = None, None

    def start(self, env, seed: int | None = None) -> None:
        self.obs, self.info = env.reset(seed=seed)

    def run_episode(self, env, on_step=None) -> dict[str, float]:
        """One episode on every lane; ``on_step(reward, info)`` sees every step. Nothing is learned."""
        for _ in range(self.num_steps):
            self.obs, reward, _, _, self.info = env.step(self.policy(self.obs, self.info))
            if on_step is not None:
                on_step(reward, self.info)
        return {}
