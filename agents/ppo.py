"""PPO (clipped surrogate, GAE, clipped value loss, entropy bonus, advantage normalisation,
gradient clipping) for the MLP policy, on a vector env of N lock-step lanes.

``num_learners`` G splits the lanes into G groups with independent parameters and optimiser
state (see ``agents.functional``): G = 1 is ordinary PPO over the task stream; G = N fine-tunes
one copy per lane, i.e. per task (online adaptation). ``mode`` 'train' and 'adapt' learn,
'eval' only acts.
"""
from __future__ import annotations

import numpy as np
import torch

from agents.config import AgentConfig
from agents.functional import batched_call, clip_grad_norm_per_learner, stack_params
from agents.policies import MLPPolicy, entropy, log_prob, sample
from agents.rollout import RolloutStorage

MODES = ("train", "adapt", "eval")


class EpisodeLengthError(RuntimeError):
    """The env's episodes are not the lock-step length the agent was built for."""


def check_lockstep(ended: np.ndarray, t: int, num_steps: int) -> None:
    """Every lane must end its episode together, exactly at step ``num_steps``."""
    if ended.all() != (t == num_steps - 1) or ended.any() != ended.all():
        raise EpisodeLengthError(f"the env ended episodes at step {t + 1} on lanes {np.flatnonzero(ended)}; "
                                 f"the agent expects lock-step episodes of {num_steps} steps")


def clipped_surrogate(newlogp, oldlogp, adv, clip_coef: float, norm_adv: bool):
    """PPO policy loss per learner: tensors [G, M] -> (loss [G], approx_kl [G], clipfrac [G])."""
    if norm_adv:
        adv = (adv - adv.mean(-1, keepdim=True)) / (adv.std(-1, keepdim=True, correction=0) + 1e-8)  # 1-sample safe
    logratio = newlogp - oldlogp
    ratio = logratio.exp()
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean(-1)
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean(-1)
        clipfrac = ((ratio - 1).abs() > clip_coef).float().mean(-1)
    return loss, approx_kl, clipfrac


def value_loss(newvalue, oldvalue, returns, clip_coef: float | None):
    """Squared-error value loss per learner [G, M] -> [G], clipped around the old values if ``clip_coef``."""
    unclipped = (newvalue - returns) ** 2
    if clip_coef is None:
        return 0.5 * unclipped.mean(-1)
    clipped = (oldvalue + (newvalue - oldvalue).clamp(-clip_coef, clip_coef) - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean(-1)


class PPO:
    """PPO over whole lock-step episodes of ``num_steps`` steps."""

    def __init__(self, policy: MLPPolicy, config: AgentConfig, num_envs: int, num_steps: int,
                 mode: str = "train", num_learners: int = 1, seed: int = 0, device="cpu"):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; choose from {MODES}")
        if num_envs % num_learners:
            raise ValueError(f"num_envs={num_envs} must be a multiple of num_learners={num_learners}")
        self.policy, self.config, self.cfg = policy, config, config.ppo
        self.mode, self.num_envs, self.num_steps = mode, num_envs, num_steps
        self.num_learners = num_learners
        self.device = torch.device(device)
        self.params = stack_params(dict(policy.named_parameters()), num_learners)
        self.optimizer = torch.optim.Adam(self.params.values(), lr=self.cfg.learning_rate, eps=1e-5)
        self.storage = RolloutStorage(num_steps * self.cfg.rollout_episodes, num_envs,
                                      policy.actor[0].in_features, policy.num_heads, self.device)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.obs: torch.Tensor | None = None
        self.num_updates = 0

    # acting ---------------------------------------------------------------------------------
    def _forward(self, obs: torch.Tensor, with_value: bool = True):
        """obs [N, D] -> logits [N, H, L] (and value [N]) from each lane's learner."""
        grouped = obs.view(self.num_learners, -1, obs.shape[-1])
        out = batched_call(self.policy, self.params, grouped, with_value=with_value)
        if with_value:
            return out[0].flatten(0, 1), out[1].flatten(0, 1)
        return out.flatten(0, 1)

    def start(self, env, seed: int | None = None) -> None:
        """Reset the env and remember its first observation."""
        obs, _ = env.reset(seed=seed)
        self.obs = torch.as_tensor(obs, device=self.device)

    def run_episode(self, env, on_step=None) -> dict[str, float]:
        """Play one episode on every lane (learning at the end of each rollout unless mode 'eval').

        ``on_step(reward, info)`` sees every step. Returns the losses of an update, if one ran.
        """
        for t in range(self.num_steps):
            with torch.no_grad():
                logits, value = self._forward(self.obs)
                action = sample(logits, self.generator)
            obs, reward, terminated, truncated, info = env.step(action.cpu().numpy())
            if on_step is not None:
                on_step(reward, info)
            check_lockstep(terminated | truncated, t, self.num_steps)
            if self.mode != "eval":
                self.storage.add(self.obs, action, log_prob(logits, action), value, torch.as_tensor(reward))
            self.obs = torch.as_tensor(obs, device=self.device)
        if self.mode == "eval":
            return {}
        with torch.no_grad():
            final_value = self._forward(torch.as_tensor(info["final_obs"], device=self.device))[1]
        self.storage.mark_end(final_value * torch.as_tensor(~terminated, device=self.device))
        if not self.storage.full:
            return {}
        stats = self.update()
        self.storage.clear()
        return stats

    # learning -------------------------------------------------------------------------------
    def update(self) -> dict[str, float]:
        """Clipped-surrogate epochs over the stored rollout; each learner only sees its own lanes."""
        cfg, s = self.cfg, self.storage
        adv, returns = s.advantages(torch.zeros(self.num_envs, device=self.device),
                                    self.config.gamma, self.config.gae_lambda)

        def per_learner(x: torch.Tensor) -> torch.Tensor:   # [T, N, ...] -> [G, T*N/G, ...]
            x = x.view(x.shape[0], self.num_learners, -1, *x.shape[2:]).transpose(0, 1)
            return x.flatten(1, 2)

        obs, actions, oldlogp, oldvalue = map(per_learner, (s.obs, s.actions, s.logprobs, s.values))
        adv, returns = per_learner(adv), per_learner(returns)
        num_samples = obs.shape[1]
        mb_size = max(1, num_samples // cfg.num_minibatches)
        stats = []
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(num_samples, generator=self.generator, device=self.device)
            for start in range(0, num_samples - mb_size + 1, mb_size):
                mb = perm[start:start + mb_size]
                logits, newvalue = batched_call(self.policy, self.params, obs[:, mb])
                newlogp = log_prob(logits, actions[:, mb])
                pg_loss, approx_kl, clipfrac = clipped_surrogate(newlogp, oldlogp[:, mb], adv[:, mb],
                                                                 cfg.clip_coef, cfg.norm_adv)
                v_loss = value_loss(newvalue, oldvalue[:, mb], returns[:, mb], cfg.clip_coef if cfg.clip_vloss else None)
                ent = entropy(logits).mean(-1)
                loss = (pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss).sum()
                self.optimizer.zero_grad()
                loss.backward()
                clip_grad_norm_per_learner(list(self.params.values()), cfg.max_grad_norm)
                self.optimizer.step()
                stats.append(torch.stack([pg_loss.mean(), v_loss.mean(), ent.mean(), approx_kl.mean(), clipfrac.mean()]))
        self.num_updates += 1
        mean = torch.stack(stats).mean(0).tolist()
        return dict(zip(("losses/policy", "losses/value", "losses/entropy", "losses/approx_kl", "losses/clipfrac"), mean))

    # checkpoints ----------------------------------------------------------------------------
    def policy_state(self) -> dict[str, torch.Tensor]:
        """The policy's parameters (learner 0) as a module state dict."""
        return {k: v[0].detach().clone() for k, v in self.params.items()}

    def state_dict(self) -> dict:
        return {"params": {k: v.detach().clone() for k, v in self.params.items()},
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in self.params.items():
                v.copy_(state["params"][k])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.num_updates = state["num_updates"]

    def load_policy(self, policy_state: dict[str, torch.Tensor]) -> None:
        """Start every learner from one policy (e.g. a trained multi-task policy, before fine-tuning)."""
        with torch.no_grad():
            for k, v in self.params.items():
                v.copy_(policy_state[k].unsqueeze(0).expand_as(v))
