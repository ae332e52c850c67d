"""MAML (paper Eqs. 13-14) for the MLP policy; every env lane is one task of the meta-batch.

Meta-training, per task batch (``env.episodes_per_task`` must be ``maml.support_episodes +
maml.query_episodes``):
1. ``support_episodes`` episodes with the meta-parameters θ on every lane;
2. inner loop (Eq. 13), per lane i: ``θ'_i = θ - α ∇_θ L_i(θ)``, ``inner_steps`` times, with
   L_i the LVC policy-gradient loss ``-mean(π_θ(a|s) / π_θ₀(a|s) · Â)`` on lane i's support
   episodes (π_θ₀ the policy that sampled them): its gradient at θ = θ₀ is the usual policy
   gradient, and its Hessian holds the score-function term ``∇log π ∇log πᵀ Â`` that the
   surrogate ``-mean(log π · Â)`` lacks, so the outer gradient through the step accounts for
   θ's effect on the support data (Rothfuss et al., ProMP, 2019). With ``meta_sgd`` α is one
   learned step size per actor parameter (Li et al., Meta-SGD, 2017);
3. query episodes with each lane's θ'_i;
4. outer update (Eq. 14): Adam on θ (and the Meta-SGD step sizes) over ``mean_i L'_i(θ'_i(θ))``,
   L' the clipped surrogate on lane i's query data, differentiated through the inner steps
   (``torch.func.grad`` under ``vmap``; second order unless ``first_order``).
Advantages come from a task-shared critic (the policy's value torso), fitted to the returns.
The mean KL(π_θ || π_θ') of the inner step on the support states is logged as ``losses/inner_kl``.

``mode`` 'adapt' (online adaptation): after every ``support_episodes`` episodes each lane takes
``inner_steps`` steps of size α on them, starting again from θ on a new task.
``mode`` 'eval' acts with θ only (argmax actions unless ``agent.eval_actions`` is 'sample').
"""
from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from agents.config import AgentConfig
from agents.functional import batched_call, stack_params
from agents.policies import MLPPolicy, act, kl_divergence, log_prob
from agents.rollout import RolloutStorage, env_step
from agents.update import (anneal_lr, check_lockstep, check_mode, normalize_advantages, optimise, policy_loss,
                           value_loss)

STEP_SIZE_PREFIX = "inner_lr."   # keys of the Meta-SGD step sizes among the checkpointed parameters


class TaskScheduleError(RuntimeError):
    """The env does not start new tasks where meta-training needs them."""


def inner_loss(policy: MLPPolicy, actor: dict, obs, actions, old_logp, adv) -> torch.Tensor:
    """LVC policy-gradient loss of one task: obs [M, D], actions [M, H], old_logp (the sampling
    policy's log-probabilities) and adv [M] (normalised here)."""
    adv = normalize_advantages(adv, correction=1)
    logits = functional_call(policy, actor, (obs,), {"with_value": False}, strict=False)
    return -((log_prob(logits, actions) - old_logp).exp() * adv).mean()


def adapt(policy: MLPPolicy, actor: dict, support: tuple, inner_lr: float | dict, inner_steps: int,
          first_order: bool) -> dict:
    """Eq. 13 for one task: ``inner_steps`` gradient steps from ``actor`` on ``support`` (obs, actions,
    old_logp, adv), of size α = ``inner_lr``: a number, or a tensor per parameter name (Meta-SGD)."""
    for _ in range(inner_steps):
        grads = grad(lambda p: inner_loss(policy, p, *support))(actor)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        actor = {k: actor[k] - (inner_lr[k] if isinstance(inner_lr, dict) else inner_lr) * grads[k] for k in actor}
    return actor


class MAML:
    """Meta-training and online adaptation by gradient steps from a learned initialisation."""

    def __init__(self, policy: MLPPolicy, config: AgentConfig, num_envs: int, num_steps: int,
                 mode: str = "train", seed: int = 0, device="cpu"):
        check_mode(mode)
        self.policy, self.config, self.cfg = policy, config, config.maml
        self.mode, self.num_envs, self.num_steps = mode, num_envs, num_steps
        self.device = torch.device(device)
        self.actor = {k: p for k, p in policy.named_parameters() if k.startswith("actor.")}
        # α: one number, or (Meta-SGD) one learned step size per actor parameter, meta-learned with θ
        self.inner_lr: float | dict = ({k: torch.full_like(p.detach(), self.cfg.inner_lr).requires_grad_()
                                        for k, p in self.actor.items()} if self.cfg.meta_sgd else self.cfg.inner_lr)
        meta_params = [*self.actor.values(), *(self.inner_lr.values() if self.cfg.meta_sgd else ())]
        critic = [p for k, p in policy.named_parameters() if k.startswith("critic.")]
        self.meta_optimizer = torch.optim.Adam(meta_params, lr=self.cfg.meta_lr, eps=1e-5)
        self.critic_optimizer = torch.optim.Adam(critic, lr=self.cfg.critic_lr, eps=1e-5)
        obs_dim = policy.obs_dim
        self.support = RolloutStorage(num_steps * self.cfg.support_episodes, num_envs, obs_dim, policy.num_heads,
                                      self.device)
        self.query = RolloutStorage(num_steps * self.cfg.query_episodes, num_envs, obs_dim, policy.num_heads, self.device)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.greedy = mode == "eval" and config.eval_actions == "argmax"
        self.episodes_per_task = self.cfg.support_episodes + self.cfg.query_episodes
        self.total_updates = max(1, config.episodes // self.episodes_per_task)
        self.adapted: dict | None = None   # per-lane actor params [N, ...] once adapted on the current task
        self.inner_kl = float("nan")       # mean KL of the last inner step on the support states, nats
        self.phase = 0                     # episodes played on the current task
        self.num_updates = 0
        self.obs: torch.Tensor | None = None

    def start(self, env, seed: int | None = None) -> None:
        obs, _ = env.reset(seed=seed)
        self.obs = torch.as_tensor(obs, device=self.device)
        self.adapted, self.phase = None, 0
        self.support.clear()
        self.query.clear()

    def _act(self, obs: torch.Tensor):
        """logits [N, H, L], value [N] with θ, or with each lane's adapted parameters."""
        if self.adapted is None:
            return self.policy(obs)
        logits, value = batched_call(self.policy, self.adapted, obs.unsqueeze(1))
        return logits.squeeze(1), value.squeeze(1)

    def run_episode(self, env, on_step=None) -> dict[str, float]:
        """Play one episode on every lane, then adapt (last support episode) or meta-update (last query episode)."""
        if self.mode == "eval":
            self.support.clear()
        storage = self.query if self.mode == "train" and self.phase >= self.cfg.support_episodes else self.support
        for t in range(self.num_steps):
            with torch.no_grad():
                logits, value = self._act(self.obs)
                action = act(logits, self.generator, self.greedy)
            obs, reward, terminated, truncated, info = env_step(env, action)
            if on_step is not None:
                on_step(reward, info)
            check_lockstep(terminated | truncated, t, self.num_steps)
            storage.add(self.obs, action, log_prob(logits, action), value, torch.as_tensor(reward, device=self.device))
            self.obs = torch.as_tensor(obs, device=self.device)
        with torch.no_grad():
            final_value = self.policy.critic(torch.as_tensor(info["final_obs"], device=self.device)).squeeze(-1)
        storage.mark_end(final_value * torch.as_tensor(~terminated, device=self.device))
        new_task = bool(np.all(info["new_task"]))
        if self.mode == "train":
            return self._train_step(new_task)
        if self.mode == "adapt":
            self._adapt_step(new_task)
        return {}

    def _adapt_step(self, new_task: bool) -> None:
        """Online adaptation: inner steps on every ``support_episodes`` episodes of a task; back to θ on a new one."""
        if new_task:
            self.adapted = None
            self.support.clear()
        elif self.support.full:
            self.adapted = self._adapt_lanes(self.support)
            self.support.clear()

    def _train_step(self, new_task: bool) -> dict[str, float]:
        self.phase += 1
        last = self.phase == self.episodes_per_task
        if new_task != last:
            raise TaskScheduleError(f"MAML meta-training needs env.episodes_per_task = maml.support_episodes + "
                                    f"maml.query_episodes = {self.episodes_per_task}, with every lane starting a "
                                    "task together")
        if self.phase == self.cfg.support_episodes:
            self.adapted = self._adapt_lanes(self.support)
            self.inner_kl = self._kl_to_theta(self.support.obs.transpose(0, 1), self.adapted)
            return {}
        if not last:
            return {}
        stats = self._meta_update()
        self.support.clear()
        self.query.clear()
        self.adapted, self.phase = None, 0
        return stats

    def _per_lane(self, storage: RolloutStorage):
        """(obs [N, M, D], actions [N, M, H], logprobs [N, M], advantages [N, M], returns [N, M])."""
        adv, returns = storage.advantages(torch.zeros(self.num_envs, device=self.device),
                                          self.config.gamma, self.config.gae_lambda)
        lanes = lambda x: x.transpose(0, 1)   # noqa: E731
        return lanes(storage.obs), lanes(storage.actions), lanes(storage.logprobs), lanes(adv), lanes(returns)

    def _adapt_lanes(self, storage: RolloutStorage) -> dict:
        """Eq. 13 on every lane: per-lane actor params [N, ...] (detached), from θ or the current adapted ones."""
        obs, actions, logp, adv, _ = self._per_lane(storage)
        start = self.adapted if self.adapted is not None else stack_params(self.actor, self.num_envs)
        inner_lr = ({k: v.detach() for k, v in self.inner_lr.items()} if isinstance(self.inner_lr, dict)
                    else self.inner_lr)
        step = lambda p, *s: adapt(self.policy, p, s, inner_lr, self.cfg.inner_steps, True)  # noqa: E731
        adapted = vmap(step)(start, obs, actions, logp, adv)
        return {k: v.detach() for k, v in adapted.items()}

    @torch.no_grad()
    def _kl_to_theta(self, obs: torch.Tensor, adapted: dict) -> float:
        """Mean over lanes and states of KL(π_θ || π_θ'_i) on obs [N, M, D], nats."""
        before = self.policy(obs, with_value=False)
        after = batched_call(self.policy, adapted, obs)[0]
        return kl_divergence(before, after).mean().item()

    def query_loss(self, adapted: dict, q_obs, q_act, q_logp, q_adv) -> torch.Tensor:
        """L' of one task: clipped surrogate (and entropy bonus) of ``adapted`` on its query data [M, ...]."""
        logits = functional_call(self.policy, adapted, (q_obs,), {"with_value": False}, strict=False)
        return policy_loss(logits, q_act, q_logp, q_adv, self.cfg.clip_coef, self.cfg.ent_coef)[0]

    def outer_loss(self, support: tuple, query: tuple) -> torch.Tensor:
        """Eq. 14: mean over lanes of L'_i(θ'_i(θ)), differentiable in θ (and the Meta-SGD step sizes).
        support (obs, actions, logprobs, advantages), query (obs, actions, logprobs, advantages), [N, M, ...]."""
        cfg = self.cfg

        def lane(s_obs, s_act, s_logp, s_adv, *q):
            adapted = adapt(self.policy, self.actor, (s_obs, s_act, s_logp, s_adv), self.inner_lr, cfg.inner_steps,
                            cfg.first_order)
            return self.query_loss(adapted, *q)

        return vmap(lane)(*support, *query).mean()

    def _meta_update(self) -> dict[str, float]:
        """``outer_epochs`` Adam steps on θ over the whole meta-batch (Eq. 14), then as many on the critic."""
        s_obs, s_act, s_logp, s_adv, s_ret = self._per_lane(self.support)
        q_obs, q_act, q_logp, q_adv, q_ret = self._per_lane(self.query)
        whole_batch = [None] * self.cfg.outer_epochs

        def outer(_):
            loss = self.outer_loss((s_obs, s_act, s_logp, s_adv), (q_obs, q_act, q_logp, q_adv))
            return loss, loss.detach()

        obs, returns = torch.cat([s_obs, q_obs], 1), torch.cat([s_ret, q_ret], 1)

        def critic(_):
            loss = value_loss(self.policy.critic(obs).squeeze(-1).flatten(), returns.flatten())
            return loss, loss.detach()

        if self.config.anneal_lr:
            anneal_lr(self.meta_optimizer, self.cfg.meta_lr, self.num_updates, self.total_updates)
            anneal_lr(self.critic_optimizer, self.cfg.critic_lr, self.num_updates, self.total_updates)
        outer_losses = optimise(self.meta_optimizer, outer, whole_batch, self.cfg.max_grad_norm)
        critic_losses = optimise(self.critic_optimizer, critic, whole_batch)
        self.num_updates += 1
        return {"losses/outer": float(np.mean([loss.item() for loss in outer_losses])),
                "losses/value": critic_losses[-1].item(), "losses/inner_kl": self.inner_kl}

    # checkpoints ----------------------------------------------------------------------------
    def _params(self) -> dict[str, torch.Tensor]:
        """The policy's parameters and, with Meta-SGD, the step sizes (keys ``inner_lr.<actor param>``)."""
        params = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}
        if isinstance(self.inner_lr, dict):
            params.update({STEP_SIZE_PREFIX + k: v.detach().clone() for k, v in self.inner_lr.items()})
        return params

    def load_policy(self, policy_state: dict[str, torch.Tensor]) -> None:
        """Load θ (and, where the state has them and Meta-SGD is on, the learned step sizes)."""
        self.policy.load_state_dict({k: v for k, v in policy_state.items() if not k.startswith(STEP_SIZE_PREFIX)})
        if isinstance(self.inner_lr, dict):
            with torch.no_grad():
                for k, v in self.inner_lr.items():
                    v.copy_(policy_state.get(STEP_SIZE_PREFIX + k, v))

    def state_dict(self) -> dict:
        return {"params": self._params(), "meta_optimizer": self.meta_optimizer.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(),
                "generator": self.generator.get_state(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.load_policy(state["params"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.generator.set_state(state["generator"])
        self.num_updates = state["num_updates"]
