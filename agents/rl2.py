"""RL²-style recurrent meta-learner trained with recurrent PPO.

The policy (``agents.policies.RecurrentPolicy``, GRU or GRU + causal self-attention) reads
(observation, previous action, previous reward, done, progress = step index within the trial /
(``recurrent.episodes_per_trial`` · episode steps)). Its state persists across the episodes of
one task (a trial) and is zeroed when the env starts a new task (``info["new_task"]``), so it
adapts to a task by memory, without gradient steps. Training runs PPO on whole episodes:
each update re-runs the network over the episode from the state it started with. Advantages
flow across episode boundaries inside a trial and stop at the trial's end.
``mode`` 'train' learns; 'adapt' and 'eval' only act (the state does the adapting); 'eval'
takes argmax actions unless ``agent.eval_actions`` is 'sample'. An adaptation run longer than
the training trial feeds progress above 1.
"""
from __future__ import annotations

import torch

from agents.config import AgentConfig
from agents.policies import RecurrentPolicy, act, log_prob
from agents.rollout import RolloutStorage, env_step
from agents.update import (Batch, anneal_lr, check_lockstep, check_mode, mean_stats, optimise, ppo_loss,
                           shuffled_minibatches)


class RL2:
    """Recurrent PPO over lock-step episodes of ``num_steps`` steps, trials of several episodes."""

    def __init__(self, policy: RecurrentPolicy, config: AgentConfig, num_envs: int, num_steps: int,
                 mode: str = "train", seed: int = 0, device="cpu"):
        check_mode(mode)
        self.policy, self.config, self.cfg = policy, config, config.recurrent
        self.mode, self.num_envs, self.num_steps = mode, num_envs, num_steps
        self.device = torch.device(device)
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=self.cfg.learning_rate, eps=1e-5)
        self.storage = RolloutStorage(num_steps, num_envs, policy.input_dim, policy.num_heads, self.device)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.greedy = mode == "eval" and config.eval_actions == "argmax"
        self.trial_steps = self.cfg.episodes_per_trial * num_steps
        self.num_updates = 0
        self.obs: torch.Tensor | None = None

    def start(self, env, seed: int | None = None) -> None:
        """Reset the env; every lane starts a new task with a fresh state."""
        obs, info = env.reset(seed=seed)
        n = self.num_envs
        self.obs = torch.as_tensor(obs, device=self.device)
        self.state = self.policy.initial_state(n, self.device)
        self.prev_action = torch.zeros(n, self.policy.num_heads, dtype=torch.long, device=self.device)
        self.prev_reward = torch.zeros(n, device=self.device)
        self.prev_done = torch.ones(n, device=self.device)
        self.trial_step = torch.zeros(n, device=self.device)
        self.new_task = torch.as_tensor(info["new_task"], device=self.device)

    def _begin_task(self, lanes: torch.Tensor) -> None:
        """Forget everything on ``lanes`` [N] bool: a new task starts there."""
        self.state = self.policy.reset_state(self.state, lanes)
        self.prev_action = self.prev_action * ~lanes.unsqueeze(-1)
        self.prev_reward = self.prev_reward * ~lanes
        self.trial_step = self.trial_step * ~lanes

    def _input(self) -> torch.Tensor:
        return self.policy.make_input(self.obs, self.prev_action, self.prev_reward, self.prev_done,
                                      self.trial_step / self.trial_steps)

    def run_episode(self, env, on_step=None) -> dict[str, float]:
        """Play one episode on every lane; in mode 'train', one PPO update on it."""
        self._begin_task(self.new_task)
        state0 = tuple(s.detach().clone() for s in self.state)
        for t in range(self.num_steps):
            inp = self._input()
            with torch.no_grad():
                logits, value, self.state = self.policy.step(inp, self.state)
                action = act(logits, self.generator, self.greedy)
            obs, reward, terminated, truncated, info = env_step(env, action)
            if on_step is not None:
                on_step(reward, info)
            ended = terminated | truncated
            check_lockstep(ended, t, self.num_steps)
            reward_t = torch.as_tensor(reward, device=self.device)
            if self.mode == "train":
                self.storage.add(inp, action, log_prob(logits, action), value, reward_t)
            self.obs = torch.as_tensor(obs, device=self.device)
            self.prev_action, self.prev_reward = action, reward_t
            self.prev_done = torch.as_tensor(ended, dtype=torch.float32, device=self.device)
            self.trial_step = self.trial_step + 1
        self.new_task = torch.as_tensor(info["new_task"], device=self.device)
        if self.mode != "train":
            return {}
        with torch.no_grad():
            next_value = self.policy.step(self._input(), self.state)[1]
        trial_end = self.new_task | torch.as_tensor(terminated, device=self.device)
        self.storage.mark_end(0.0, lanes=trial_end)
        stats = self.update(state0, next_value)
        self.storage.clear()
        return stats

    def update(self, state0, next_value: torch.Tensor) -> dict[str, float]:
        """PPO epochs over the stored episode; minibatches are groups of whole lanes."""
        cfg, s = self.cfg, self.storage
        adv, returns = s.advantages(next_value, self.config.gamma, self.config.gae_lambda)
        batch = Batch(s.obs, s.actions, s.logprobs, s.values, adv, returns)   # [T, N, ...]

        def minibatch_loss(mb: torch.Tensor):
            b = batch.map(lambda x: x[:, mb])
            logits, newvalue, _ = self.policy.sequence(b.obs, tuple(x[mb] for x in state0))
            flat = lambda x: x.flatten(0, 1)   # noqa: E731  [T, n, ...] -> [T*n, ...], one learner
            return ppo_loss(flat(logits), flat(newvalue), b.map(flat), cfg.clip_coef, cfg.ent_coef, cfg.vf_coef,
                            value_clip=cfg.clip_coef if cfg.clip_vloss else None)

        if self.config.anneal_lr:
            anneal_lr(self.optimizer, cfg.learning_rate, self.num_updates, self.config.episodes)
        minibatches = shuffled_minibatches(self.num_envs, cfg.num_minibatches, cfg.update_epochs, self.generator)
        stats = optimise(self.optimizer, minibatch_loss, minibatches, cfg.max_grad_norm)
        self.num_updates += 1
        return mean_stats(stats)

    def state_dict(self) -> dict:
        return {"params": {k: v.detach().clone() for k, v in self.policy.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["params"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.num_updates = state["num_updates"]

    def load_policy(self, policy_state: dict[str, torch.Tensor]) -> None:
        self.policy.load_state_dict(policy_state)
