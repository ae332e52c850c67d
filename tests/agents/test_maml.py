"""MAML: the inner step moves the parameters; the meta-gradient through it matches finite differences."""
import dataclasses

import torch
from torch.func import grad

from agents.config import AgentConfig, MAMLConfig
from agents.maml import MAML, adapt, inner_loss
from agents.policies import MLPPolicy, log_prob

OBS, HEADS, LEVELS, STEPS, LANES = 3, 2, 3, 6, 2


def tiny_maml(first_order: bool, inner_steps: int = 2) -> MAML:
    torch.manual_seed(0)
    policy = MLPPolicy(OBS, HEADS, LEVELS, hidden_size=4, num_layers=1).double()
    with torch.no_grad():   # a non-trivial start (the last layer is initialised near zero)
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    cfg = dataclasses.replace(AgentConfig(), maml=MAMLConfig(inner_lr=0.5, inner_steps=inner_steps,
                                                             first_order=first_order, ent_coef=0.05))
    return MAML(policy, cfg, num_envs=LANES, num_steps=STEPS)


def task_data(maml: MAML, seed: int = 1):
    """Support and query batches [lanes, steps, ...]; the query log-probs are those of the adapted policy."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    acts = lambda: torch.randint(0, LEVELS, (LANES, STEPS, HEADS), generator=g)  # noqa: E731
    support = (rand(LANES, STEPS, OBS), acts(), rand(LANES, STEPS))
    q_obs, q_act, q_adv = rand(LANES, STEPS, OBS), acts(), rand(LANES, STEPS)
    with torch.no_grad():
        q_logp = torch.stack([
            log_prob(torch.func.functional_call(maml.policy, adapt(maml.policy, maml.actor, tuple(x[i] for x in support),
                                                                   0.5, 2, False), (q_obs[i],), {"with_value": False},
                                                strict=False), q_act[i]) for i in range(LANES)])
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
