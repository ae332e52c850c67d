"""PPO for the MLP policy, on a vector env of N lock-step lanes: GAE over each rollout, then
epochs of shuffled minibatches of the clipped surrogate, clipped value loss and entropy bonus
(``agents.update``), with a per-learner gradient clip.

``num_learners`` G splits the lanes into G groups with independent parameters and optimiser
state (see ``agents.functional``): G = 1 is ordinary PPO over the task stream; G = N fine-tunes
one copy per lane, i.e. per task (online adaptation). ``mode`` 'train' and 'adapt' learn,
'eval' only acts (argmax actions unless ``agent.eval_actions`` is 'sample'). With
``agent.anneal_lr`` the step size falls linearly to 0 over the ``agent.episodes`` of training.
"""
from __future__ import annotations

import torch

from agents.config import AgentConfig
from agents.functional import batched_call, clip_grad_norm_per_learner, stack_params
from agents.policies import MLPPolicy, act, log_prob
from agents.rollout import RolloutStorage, env_step
from agents.update import (Batch, anneal_lr, check_lockstep, check_mode, mean_stats, optimise, ppo_loss,
                           shuffled_minibatches)


class PPO:
    """PPO over whole lock-step episodes of ``num_steps`` steps."""

    def __init__(self, policy: MLPPolicy, config: AgentConfig, num_envs: int, num_steps: int,
                 mode: str = "train", num_learners: int = 1, seed: int = 0, device="cpu"):
        check_mode(mode)
        if num_envs % num_learners:
            raise ValueError(f"num_envs={num_envs} must be a multiple of num_learners={num_learners}")
        self.policy, self.config, self.cfg = policy, config, config.ppo
        self.mode, self.num_envs, self.num_steps = mode, num_envs, num_steps
        self.num_learners = num_learners
        self.device = torch.device(device)
        self.params = stack_params(dict(policy.named_parameters()), num_learners)
        self.optimizer = torch.optim.Adam(self.params.values(), lr=self.cfg.learning_rate, eps=1e-5)
        self.storage = RolloutStorage(num_steps * self.cfg.rollout_episodes, num_envs,
                                      policy.obs_dim, policy.num_heads, self.device)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.greedy = mode == "eval" and config.eval_actions == "argmax"
        self.total_updates = max(1, config.episodes // self.cfg.rollout_episodes)
        self.obs: torch.Tensor | None = None
        self.num_updates = 0

    # acting ---------------------------------------------------------------------------------
    def _forward(self, obs: torch.Tensor):
        """obs [N, D] -> logits [N, H, L], value [N] from each lane's learner."""
        logits, value = batched_call(self.policy, self.params, obs.view(self.num_learners, -1, obs.shape[-1]))
        return logits.flatten(0, 1), value.flatten(0, 1)

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
                action = act(logits, self.generator, self.greedy)
            obs, reward, terminated, truncated, info = env_step(env, action)
            if on_step is not None:
                on_step(reward, info)
            check_lockstep(terminated | truncated, t, self.num_steps)
            if self.mode != "eval":
                self.storage.add(self.obs, action, log_prob(logits, action), value, torch.as_tensor(reward, device=self.device))
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

        batch = Batch(s.obs, s.actions, s.logprobs, s.values, adv, returns).map(per_learner)

        def minibatch_loss(mb: torch.Tensor):
            b = batch.map(lambda x: x[:, mb])
            logits, newvalue = batched_call(self.policy, self.params, b.obs)
            return ppo_loss(logits, newvalue, b, cfg.clip_coef, cfg.ent_coef, cfg.vf_coef, cfg.norm_adv,
                            cfg.clip_coef if cfg.clip_vloss else None)

        if self.config.anneal_lr and self.mode == "train":
            anneal_lr(self.optimizer, cfg.learning_rate, self.num_updates, self.total_updates)
        minibatches = shuffled_minibatches(batch.obs.shape[1], cfg.num_minibatches, cfg.update_epochs, self.generator)
        stats = optimise(self.optimizer, minibatch_loss, minibatches, cfg.max_grad_norm, clip_grad_norm_per_learner)
        self.num_updates += 1
        return mean_stats(stats)

    # checkpoints ----------------------------------------------------------------------------
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
