"""The agents by name: the env config each agent and mode runs with, building an agent for an
env, and the policy parameters stored in a checkpoint."""
from __future__ import annotations

import torch

from agents.maml import MAML
from agents.policies import MLPPolicy, RecurrentPolicy, link_features
from agents.ppo import PPO
from agents.rl2 import RL2
from testbed.config import Config, load_config
from testbed.env import SpectrumVectorEnv

AGENTS = ("ppo", "maml", "rnn", "rnn_attention")


class RunError(RuntimeError):
    """A run folder or checkpoint cannot be used as asked."""


def agent_config(name: str, config: Config, mode: str, episodes: int | None = None) -> Config:
    """The config the agent's env runs with: the task schedule each agent and mode needs.

    train: MAML plays support + query episodes per task, the recurrent agents whole trials, PPO the
    config's schedule. adapt: each lane keeps one task for all ``episodes``. eval: trials for
    the recurrent agents (their memory is how they adapt), the config's schedule otherwise.
    """
    a = config.agent
    trial = {"rnn": a.recurrent.episodes_per_trial, "rnn_attention": a.recurrent.episodes_per_trial}
    if mode == "train":
        per_task = {"maml": a.maml.support_episodes + a.maml.query_episodes, **trial}.get(
            name, config.env.episodes_per_task)
    elif mode == "adapt":
        per_task = episodes
    else:
        per_task = trial.get(name, config.env.episodes_per_task)
    return load_config(config, {"env": {"episodes_per_task": per_task}})


def make_agent(name: str, env: SpectrumVectorEnv, config: Config, mode: str, seed: int):
    """An agent for ``env``'s spaces. In mode 'adapt' PPO gets one learner per lane (per task)."""
    if name not in AGENTS:
        raise RunError(f"unknown agent {name!r}; choose from {list(AGENTS)}")
    a = config.agent
    torch.manual_seed(seed)
    obs_dim = env.single_observation_space.shape[0]
    nvec = env.single_action_space.nvec
    mask = env.obs_layout["mask"] if a.mask_mode == "logits" else None
    num_heads, num_levels = len(nvec), int(nvec.max())
    n, steps = env.num_envs, config.network.episode_steps
    if name in ("ppo", "maml"):
        p = config.network
        shared = link_features(env.obs_layout, p.num_bs, p.num_bands) if a.shared_link_head else None
        policy = MLPPolicy(obs_dim, num_heads, num_levels, a.hidden_size, a.num_layers, mask, shared)
        if name == "maml":
            return MAML(policy, a, n, steps, mode, seed)
        return PPO(policy, a, n, steps, mode, num_learners=n if mode == "adapt" else 1, seed=seed)
    r = a.recurrent
    policy = RecurrentPolicy(obs_dim, num_heads, num_levels, r.hidden_size, name == "rnn_attention",
                             r.num_heads, r.attention_window, mask)
    return RL2(policy, a, n, steps, mode, seed)


def policy_of_checkpoint(ck: dict) -> dict:
    """The policy parameters in a checkpoint (learner 0 where parameters are stacked per learner)."""
    params = ck["state"]["params"]
    stacked = ck["agent"] == "ppo"
    return {k: v[0] for k, v in params.items()} if stacked else params
