"""Rollout storage and generalised advantage estimation, shared by PPO, MAML and RL².

Storage is allocated once as ``[num_steps, num_envs, ...]``. Episodes of the vector env run in
lock-step, so a rollout is a whole number of episodes. ``ends[t]`` marks the steps after
which the advantage must not flow back (an episode or trial end); their successor value is
``bootstrap[t]`` (the value of the final observation after a truncation, 0 after a
termination). Everywhere else the successor value is ``values[t + 1]``.
"""
from __future__ import annotations

import torch


class RolloutStorage:
    """Transitions of N lock-step lanes over ``num_steps`` steps."""

    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, num_heads: int, device="cpu"):
        self.num_steps, self.num_envs = num_steps, num_envs
        shape = (num_steps, num_envs)
        self.obs = torch.zeros(*shape, obs_dim, device=device)                         # [T, N, D]
        self.actions = torch.zeros(*shape, num_heads, dtype=torch.long, device=device)  # [T, N, H]
        self.logprobs = torch.zeros(shape, device=device)                               # [T, N]
        self.values = torch.zeros(shape, device=device)                                 # [T, N]
        self.rewards = torch.zeros(shape, device=device)                                # [T, N]
        self.bootstrap = torch.zeros(shape, device=device)                              # [T, N]
        self.ends = torch.zeros(shape, dtype=torch.bool, device=device)                 # [T, N]
        self.step = 0

    def add(self, obs, actions, logprobs, values, rewards) -> None:
        t = self.step
        self.obs[t], self.actions[t], self.logprobs[t] = obs, actions, logprobs
        self.values[t], self.rewards[t] = values, rewards
        self.ends[t] = False
        self.bootstrap[t] = 0.0
        self.step += 1

    def mark_end(self, bootstrap: torch.Tensor | float, lanes: torch.Tensor | None = None) -> None:
        """Mark the last added step as an end for ``lanes`` [N] bool (all if None), successor value ``bootstrap``."""
        t = self.step - 1
        lanes = torch.ones(self.num_envs, dtype=torch.bool, device=self.ends.device) if lanes is None else lanes
        self.ends[t] = self.ends[t] | lanes
        self.bootstrap[t] = torch.where(lanes, torch.as_tensor(bootstrap, dtype=self.bootstrap.dtype), self.bootstrap[t])

    @property
    def full(self) -> bool:
        return self.step == self.num_steps

    def clear(self) -> None:
        self.step = 0

    def advantages(self, last_value: torch.Tensor, gamma: float, gae_lambda: float):
        """GAE advantages and returns [T, N]; ``last_value`` [N] is the successor of the last step where it is no end."""
        return compute_gae(self.rewards, self.values, self.bootstrap, self.ends, last_value, gamma, gae_lambda)


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, bootstrap: torch.Tensor, ends: torch.Tensor,
                last_value: torch.Tensor, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, vectorised over lanes. All [T, N]; returns (advantages, returns)."""
    num_steps = rewards.shape[0]
    following = torch.cat([values[1:], last_value.unsqueeze(0)], dim=0)          # [T, N]
    next_values = torch.where(ends, bootstrap, following)
    carry = (~ends).to(rewards.dtype)
    deltas = rewards + gamma * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(num_steps)):
        running = deltas[t] + gamma * gae_lambda * carry[t] * running
        advantages[t] = running
    return advantages, advantages + values


def env_step(env, action: torch.Tensor):
    """``env.step`` with the agent's actions [N, H]: the tensor itself for an env that acts in
    tensors (``env.tensors``: its observations and rewards are tensors too), a numpy copy for a
    Gymnasium vector env of arrays."""
    return env.step(action if getattr(env, "tensors", False) else action.cpu().numpy())
