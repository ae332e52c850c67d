"""MAML: the LVC inner step adapts the policy; the meta-gradient through it is the exact one
(finite differences, and a bandit whose true meta-gradient is known); Meta-SGD learns its step sizes."""
import dataclasses

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad

from agents.config import AgentConfig, MAMLConfig
from agents.maml import MAML, TaskScheduleError, adapt, inner_loss
from agents.policies import MLPPolicy, log_prob

OBS, HEADS, LEVELS, STEPS, LANES = 3, 2, 3, 6, 2


class HiddenBitBandit:
    """A vector env of repeated pulls of a ``levels``-armed bandit: lane i's hidden task bit picks
    the arm that pays 1 (arm 0 or the last arm), the others pay 0; the observation is a constant
    1, so only the rewards reveal the task. Episodes of ``steps`` pulls; every lane draws a new
    bit every ``episodes_per_task`` episodes (``info["new_task"]``), or keeps ``bits`` if given."""

    def __init__(self, num_envs: int, steps: int, episodes_per_task: int, levels: int = 3, bits=None):
        self.num_envs, self.steps, self.episodes_per_task, self.levels = num_envs, steps, episodes_per_task, levels
        self.fixed = None if bits is None else np.asarray(bits)
        self.obs = np.ones((num_envs, 1), np.float32)

    def reset(self, seed=None):
        self.rng = np.random.default_rng(seed)
        self.t, self.episode = 0, 0
        self._draw()
        return self.obs, {"new_task": np.ones(self.num_envs, bool)}

    def _draw(self):
        self.bits = self.rng.integers(0, 2, self.num_envs) if self.fixed is None else self.fixed

    def step(self, actions):
        reward = (actions[:, 0] == self.bits * (self.levels - 1)).astype(np.float32)
        self.t += 1
        ended = np.full(self.num_envs, self.t == self.steps)
        info = {"final_obs": self.obs, "new_task": np.zeros(self.num_envs, bool)}
        if self.t == self.steps:
            self.t, self.episode = 0, self.episode + 1
            if self.episode % self.episodes_per_task == 0:
                info["new_task"][:] = True
                self._draw()
        return self.obs, reward, np.zeros(self.num_envs, bool), ended, info


def bandit_config(**maml) -> AgentConfig:
    return dataclasses.replace(AgentConfig(gamma=0.0, gae_lambda=0.0), maml=MAMLConfig(**maml))


def tiny_maml(first_order: bool, inner_steps: int = 2) -> MAML:
    torch.manual_seed(0)
    policy = MLPPolicy(OBS, HEADS, LEVELS, hidden_size=4, num_layers=1).double()
    with torch.no_grad():   # a non-trivial start (the last layer is initialised near zero)
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    cfg = dataclasses.replace(AgentConfig(), maml=MAMLConfig(inner_lr=0.5, inner_steps=inner_steps,
                                                             first_order=first_order, ent_coef=0.05))
    return MAML(policy, cfg, num_envs=LANES, num_steps=STEPS)


def logits_of(policy: MLPPolicy, actor: dict, obs: torch.Tensor) -> torch.Tensor:
    return functional_call(policy, actor, (obs,), {"with_value": False}, strict=False)


def task_data(maml: MAML, seed: int = 1):
    """Support and query batches [lanes, steps, ...]; the support log-probs are those of θ, the
    query log-probs those of the adapted policy."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    acts = lambda: torch.randint(0, LEVELS, (LANES, STEPS, HEADS), generator=g)  # noqa: E731
    s_obs, s_act = rand(LANES, STEPS, OBS), acts()
    with torch.no_grad():
        s_logp = log_prob(logits_of(maml.policy, maml.actor, s_obs), s_act)
    support = (s_obs, s_act, s_logp, rand(LANES, STEPS))
    q_obs, q_act, q_adv = rand(LANES, STEPS, OBS), acts(), rand(LANES, STEPS)
    with torch.no_grad():
        q_logp = torch.stack([log_prob(logits_of(maml.policy, adapt(maml.policy, maml.actor, tuple(x[i] for x in support),
                                                             0.5, 2, False), q_obs[i]), q_act[i])
                              for i in range(LANES)])
    return support, (q_obs, q_act, q_logp, q_adv)


def test_inner_step_changes_the_parameters_and_lowers_the_inner_loss():
    maml = tiny_maml(first_order=True, inner_steps=1)
    support, _ = task_data(maml)
    lane = tuple(x[0] for x in support)
    adapted = adapt(maml.policy, maml.actor, lane, inner_lr=0.05, inner_steps=1, first_order=True)
    assert any(not torch.equal(adapted[k], maml.actor[k]) for k in adapted)
    assert inner_loss(maml.policy, adapted, *lane) < inner_loss(maml.policy, maml.actor, *lane)


def test_meta_gradient_matches_finite_differences():
    maml = tiny_maml(first_order=False)
    support, query = task_data(maml)
    maml.outer_loss(support, query).backward()
    eps = 1e-6
    for name, param in maml.actor.items():
        fd = torch.zeros_like(param)
        with torch.no_grad():
            for i in range(param.numel()):
                flat = param.view(-1)
                flat[i] += eps
                up = maml.outer_loss(support, query)
                flat[i] -= 2 * eps
                down = maml.outer_loss(support, query)
                flat[i] += eps
                fd.view(-1)[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(param.grad, fd, atol=1e-7, rtol=1e-5, msg=name)


def test_first_order_gradient_is_the_query_gradient_at_the_adapted_parameters():
    fo, so = tiny_maml(first_order=True), tiny_maml(first_order=False)
    support, query = task_data(fo)
    fo.outer_loss(support, query).backward()
    so.outer_loss(support, query).backward()
    # FOMAML treats dθ'/dθ as the identity: the gradient is that of the query loss at fixed θ'_i
    expected = {k: torch.zeros_like(v) for k, v in fo.actor.items()}
    for i in range(LANES):
        adapted = {k: v.detach() for k, v in adapt(fo.policy, fo.actor, tuple(x[i] for x in support), 0.5, 2, True).items()}
        g = grad(lambda p: fo.query_loss(p, *(x[i] for x in query)))(adapted)
        for k in expected:
            expected[k] += g[k] / LANES
    for k, p in fo.actor.items():
        torch.testing.assert_close(p.grad, expected[k], atol=1e-10, rtol=1e-7)
    assert any(not torch.allclose(fo.actor[k].grad, so.actor[k].grad) for k in fo.actor)


def test_lvc_meta_gradient_is_the_true_one_and_the_plain_surrogate_misses_the_score_term():
    """One-step bandit, exact reference: θ' = θ + α ∇_θ E_π[r̃] with r̃ the rewards normalised
    under π_θ, meta-objective E_π'[q]. The sampled LVC estimate of its gradient (many support
    pulls) must match; the surrogate ``-mean(log π · Â)`` lacks the score-function term of the
    Hessian and must not."""
    torch.manual_seed(3)
    policy = MLPPolicy(1, 1, LEVELS, hidden_size=4, num_layers=1).double()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5 * torch.randn_like(p))
    actor = {k: p for k, p in policy.named_parameters() if k.startswith("actor.")}
    obs1 = torch.ones(1, 1, dtype=torch.float64)
    r = torch.tensor([1.0, 0.0, 0.3], dtype=torch.float64)      # support rewards per arm
    q = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)      # query rewards per arm
    alpha, pulls = 2.0, 4000
    probs = lambda a: torch.softmax(logits_of(policy, a, obs1)[0, 0], -1)  # noqa: E731

    def meta_grad(objective):
        g = torch.autograd.grad(objective(), list(actor.values()))
        return torch.cat([x.flatten() for x in g])

    with torch.no_grad():
        p0 = probs(actor)
        mu = (p0 * r).sum()
        r_norm = (r - mu) / ((p0 * (r - mu) ** 2).sum()).sqrt()

    def exact():
        inner = grad(lambda a: (probs(a) * r_norm).sum())(actor)
        return -(probs({k: actor[k] + alpha * inner[k] for k in actor}) * q).sum()

    g_exact = meta_grad(exact)

    def sampled(loss, seed):
        g = torch.Generator().manual_seed(seed)
        actions = torch.multinomial(p0, pulls, replacement=True, generator=g).view(pulls, 1)
        obs = torch.ones(pulls, 1, dtype=torch.float64)
        logp = log_prob(logits_of(policy, actor, obs), actions).detach()
        support = (obs, actions, logp, r[actions[:, 0]])

        def objective():
            step = grad(lambda a: loss(policy, a, *support))(actor)
            return -(probs({k: actor[k] - alpha * step[k] for k in actor}) * q).sum()
        return meta_grad(objective)

    def surrogate_loss(policy, a, obs, actions, old_logp, adv):
        adv = (adv - adv.mean()) / adv.std()
        return -(log_prob(logits_of(policy, a, obs), actions) * adv).mean()

    seeds = range(4)
    g_lvc = torch.stack([sampled(inner_loss, s) for s in seeds]).mean(0)
    g_plain = torch.stack([sampled(surrogate_loss, s) for s in seeds]).mean(0)
    err_lvc, err_plain = (g_lvc - g_exact).norm().item(), (g_plain - g_exact).norm().item()
    assert err_lvc < 0.1 * g_exact.norm()
    assert err_plain > 4 * err_lvc


def bandit_maml(mode: str, seed: int, **maml) -> MAML:
    torch.manual_seed(seed)
    return MAML(MLPPolicy(1, 1, LEVELS, 16, 2), bandit_config(**maml), 8, 16, mode=mode, seed=seed)


def test_an_inner_step_on_the_support_episodes_raises_the_query_return_of_each_task():
    gains = {0: [], 1: []}
    bits = np.array([0, 1] * 4)
    for seed in range(5):
        env = HiddenBitBandit(8, 16, episodes_per_task=100, bits=bits)
        maml = bandit_maml("adapt", seed, inner_lr=0.5, support_episodes=2)
        maml.start(env, seed=seed)
        returns = []
        for _ in range(3):                   # two support episodes with θ, then one with θ'
            rewards = []
            maml.run_episode(env, lambda reward, info: rewards.append(reward))
            returns.append(np.mean(rewards, axis=0))
        assert maml.adapted is not None
        for bit in (0, 1):
            gains[bit].append(returns[2][bits == bit].mean() - np.mean(returns[:2], axis=0)[bits == bit].mean())
    assert np.mean(gains[0]) > 0.15 and np.mean(gains[1]) > 0.15      # chance level is 1/3


def test_meta_sgd_step_sizes_are_learned_and_checkpointed():
    env = HiddenBitBandit(8, 16, episodes_per_task=3)
    maml = bandit_maml("train", 0, inner_lr=0.3, support_episodes=2, query_episodes=1, meta_sgd=True)
    maml.start(env, seed=0)
    stats = [maml.run_episode(env) for _ in range(3)]
    assert stats[:2] == [{}, {}] and stats[2]["losses/inner_kl"] > 0
    lrs = torch.cat([v.flatten() for v in maml.inner_lr.values()])
    assert not torch.allclose(lrs, torch.full_like(lrs, 0.3))          # moved by the outer update
    other = bandit_maml("adapt", 1, inner_lr=0.3, meta_sgd=True)
    other.load_policy(maml.state_dict()["params"])
    for k, v in maml.inner_lr.items():
        torch.testing.assert_close(other.inner_lr[k], v.detach())


def test_meta_training_refuses_a_schedule_without_support_plus_query_episodes_per_task():
    env = HiddenBitBandit(8, 16, episodes_per_task=2)                   # 1 + query, not support + query
    maml = bandit_maml("train", 0, support_episodes=2, query_episodes=1)
    maml.start(env, seed=0)
    maml.run_episode(env)
    with pytest.raises(TaskScheduleError, match=r"maml.support_episodes \+ maml.query_episodes = 3"):
        maml.run_episode(env)
