"""Hyper-parameters of the agents: the ``agent:`` section of a YAML config.

Every field carries a one-line doc and its allowed range (inclusive) or choices in its
metadata; ``testbed.config`` validates against them. Defaults are valid on their own, so a
config without an ``agent:`` section builds ``AgentConfig()``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


def _f(default, doc: str, range=None, choices=None):
    """A dataclass field with its doc and allowed range (inclusive) or choices."""
    meta = {"doc": doc}
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


def _nested(cls, doc: str):
    return field(default_factory=cls, metadata={"doc": doc})


@dataclass(frozen=True)
class PPOConfig:
    """Proximal policy optimisation (clipped surrogate) for the MLP baseline."""

    learning_rate: float = _f(1e-3, "Adam step size", (1e-7, 1.0))
    rollout_episodes: int = _f(1, "episodes collected per env before each update", (1, 1000))
    num_minibatches: int = _f(4, "minibatches per update epoch", (1, 4096))
    update_epochs: int = _f(4, "passes over each rollout", (1, 100))
    clip_coef: float = _f(0.2, "ratio clip ε of the surrogate", (0.0, 10.0))
    clip_vloss: bool = _f(True, "clip the value loss around the old values (by clip_coef)", choices=(False, True))
    ent_coef: float = _f(0.01, "weight of the entropy bonus", (0.0, 10.0))
    vf_coef: float = _f(0.5, "weight of the value loss", (0.0, 100.0))
    max_grad_norm: float = _f(0.5, "global gradient-norm clip", (0.0, 1e6))
    norm_adv: bool = _f(True, "normalise advantages per minibatch", choices=(False, True))


@dataclass(frozen=True)
class MAMLConfig:
    """Model-agnostic meta-learning (paper Eqs. 13-14); each env lane is one task of the batch."""

    inner_lr: float = _f(0.1, "α, step size of the inner policy-gradient steps (Eq. 13); with meta_sgd the "
                         "initial value of every learned step size", (0.0, 100.0))
    inner_steps: int = _f(1, "policy-gradient steps on the support rollout of each task", (1, 20))
    support_episodes: int = _f(1, "episodes per task collected with θ for the inner steps (1 beat 2 at equal "
                               "training episodes, docs/agents.md)", (1, 100))
    meta_sgd: bool = _f(False, "learn one inner step size per actor parameter in the outer update (Meta-SGD)",
                        choices=(False, True))
    meta_lr: float = _f(1e-3, "β, Adam step size of the outer update (Eq. 14)", (1e-7, 1.0))
    outer_epochs: int = _f(4, "passes of the clipped outer objective over each query rollout", (1, 50))
    first_order: bool = _f(False, "drop second-order terms (FOMAML) instead of differentiating through the inner steps",
                           choices=(False, True))
    query_episodes: int = _f(1, "episodes per task collected with the adapted policy for the outer loss", (1, 100))
    critic_lr: float = _f(1e-3, "Adam step size of the task-shared critic that gives the advantages", (1e-7, 1.0))
    clip_coef: float = _f(0.2, "ratio clip ε of the outer surrogate", (0.0, 10.0))
    ent_coef: float = _f(0.01, "weight of the entropy bonus in the outer objective", (0.0, 10.0))
    max_grad_norm: float = _f(0.5, "global gradient-norm clip of the outer update", (0.0, 1e6))


@dataclass(frozen=True)
class RecurrentConfig:
    """RL²-style recurrent meta-learner (GRU, optionally with causal self-attention)."""

    hidden_size: int = _f(64, "GRU hidden units", (4, 4096))
    num_heads: int = _f(4, "heads of the causal self-attention (attention variant)", (1, 64))
    attention_window: int = _f(128, "recent GRU outputs the attention reads, in steps (≥ network.episode_steps "
                               "reaches back into the previous episode)", (1, 4096))
    episodes_per_trial: int = _f(20, "episodes per task (trial) in training; the hidden state persists across them "
                                 "and the input carries the step index over this trial length", (1, 1000))
    learning_rate: float = _f(3e-4, "Adam step size (3e-4 beat 1e-3 for both recurrent agents, docs/agents.md)",
                              (1e-7, 1.0))
    num_minibatches: int = _f(2, "minibatches (groups of env lanes) per update epoch", (1, 4096))
    update_epochs: int = _f(4, "passes over each rollout", (1, 100))
    clip_coef: float = _f(0.2, "ratio clip ε of the surrogate", (0.0, 10.0))
    clip_vloss: bool = _f(False, "clip the value loss around the old values (by clip_coef)", choices=(False, True))
    ent_coef: float = _f(0.01, "weight of the entropy bonus", (0.0, 10.0))
    vf_coef: float = _f(0.5, "weight of the value loss", (0.0, 100.0))
    max_grad_norm: float = _f(0.5, "global gradient-norm clip", (0.0, 1e6))

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of num_heads={self.num_heads} "
                             "(the attention variant splits the GRU output into heads)")


@dataclass(frozen=True)
class AgentConfig:
    """Agents: shared settings plus one section per algorithm."""

    episodes: int = _f(1200, "episodes of (meta-)training; every env lane plays each one", (1, 10_000_000))
    hidden_size: int = _f(64, "units per hidden layer of the MLP policy and critic", (4, 4096))
    num_layers: int = _f(2, "hidden layers of the MLP policy and critic", (1, 8))
    shared_link_head: bool = _f(False, "PPO and MAML: one actor head shared by every (BS, band) link, reading a "
                                "context of the whole observation, the link's own entries (interference, mask, last "
                                "level; informed: its hidden parameters) and its BS and band (agents.policies."
                                "SharedLinkActor)", choices=(False, True))
    gamma: float = _f(0.8, "discount factor γ (the reward is nearly myopic: 0.8 beat 0.99, docs/agents.md)",
                      (0.0, 1.0))
    gae_lambda: float = _f(0.9, "λ of generalised advantage estimation", (0.0, 1.0))
    anneal_lr: bool = _f(False, "anneal every Adam step size linearly to 0 over agent.episodes (training only)",
                         choices=(False, True))
    eval_actions: str = _f("argmax", "how agents act in mode 'eval': 'argmax' (the most likely level per head, "
                           "deterministic) or 'sample'", choices=("argmax", "sample"))
    mask_mode: str = _f("logits", "how policies use the safety mask: 'logits' forces level 0 on masked bands, "
                        "'input' only feeds it as an observation", choices=("logits", "input"))
    checkpoint_every: int = _f(50, "episodes between checkpoints", (1, 1_000_000))
    ppo: PPOConfig = _nested(PPOConfig, "PPO baseline")
    maml: MAMLConfig = _nested(MAMLConfig, "MAML meta-learner")
    recurrent: RecurrentConfig = _nested(RecurrentConfig, "RL² GRU and GRU + attention meta-learners")
