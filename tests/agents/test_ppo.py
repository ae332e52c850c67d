"""PPO: learners of a stacked PPO are independent; a rollout bootstraps from the final observation;
evaluation acts by argmax; the step size can anneal."""
import numpy as np
import pytest
import torch

from agents.config import AgentConfig, PPOConfig
from agents.functional import clip_grad_norm_per_learner
from agents.maml import MAML
from agents.policies import MLPPolicy
from agents.ppo import PPO
from agents.update import EpisodeLengthError
from testbed.env import SpectrumVectorEnv

OBS, HEADS, LEVELS, STEPS = 6, 2, 3, 8


def filled(num_learners: int, lanes: int, seed: int, change_lanes: slice | None = None) -> PPO:
    torch.manual_seed(0)
    agent = PPO(MLPPolicy(OBS, HEADS, LEVELS, 8, 1), AgentConfig(), lanes, STEPS, num_learners=num_learners, seed=3)
    g = torch.Generator().manual_seed(seed)
    s = agent.storage
    s.obs.copy_(torch.randn(s.obs.shape, generator=g))
    s.actions.copy_(torch.randint(0, LEVELS, s.actions.shape, generator=g))
    s.rewards.copy_(torch.randn(s.rewards.shape, generator=g))
    s.logprobs.fill_(-2.0)
    if change_lanes is not None:
        s.rewards[:, change_lanes] += 10.0
        s.obs[:, change_lanes] *= -1.0
    s.step = STEPS
    s.mark_end(0.0)
    return agent


def test_each_learner_only_learns_from_its_own_lanes():
    a = filled(2, 4, seed=1)
    b = filled(2, 4, seed=1, change_lanes=slice(2, 4))   # only learner 1's data differ
    a.update(), b.update()
    for k in a.params:
        torch.testing.assert_close(a.params[k][0], b.params[k][0], rtol=0, atol=0)
    assert any(not torch.allclose(a.params[k][1], b.params[k][1]) for k in a.params)


def test_update_moves_the_parameters_and_reports_losses():
    agent = filled(1, 4, seed=2)
    before = {k: v.detach().clone() for k, v in agent.params.items()}
    stats = agent.update()
    assert set(stats) == {"losses/policy", "losses/value", "losses/entropy", "losses/approx_kl", "losses/clipfrac"}
    assert any(not torch.equal(before[k], agent.params[k]) for k in before)


def test_gradient_clip_is_per_learner():
    p = torch.zeros(2, 3, requires_grad=True)
    p.grad = torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0]])
    norms = clip_grad_norm_per_learner([p], 1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    torch.testing.assert_close(p.grad, torch.tensor([[0.6, 0.8, 0.0], [0.3, 0.4, 0.0]]), atol=1e-5, rtol=0)


def test_episode_bootstraps_from_the_final_observation_value():
    env = SpectrumVectorEnv({"network": {"episode_steps": 4}, "env": {"num_envs": 2}})
    torch.manual_seed(0)
    two_episode_rollouts = AgentConfig(ppo=PPOConfig(rollout_episodes=2))   # no update after the first episode
    agent = PPO(MLPPolicy(env.single_observation_space.shape[0], 15, 4), two_episode_rollouts, 2, 4, seed=0)
    agent.start(env, seed=0)
    final = {}
    step = env.step

    def spy(actions):
        out = step(actions)
        if "final_obs" in out[4]:
            final["obs"] = torch.as_tensor(out[4]["final_obs"])
        return out
    env.step = spy
    agent.run_episode(env)
    with torch.no_grad():
        expected = agent.policy.critic(final["obs"]).squeeze(-1)
    assert agent.storage.ends[3].all()
    torch.testing.assert_close(agent.storage.bootstrap[3], expected)


def test_an_env_with_another_episode_length_is_refused():
    env = SpectrumVectorEnv({"network": {"episode_steps": 3}, "env": {"num_envs": 2}})
    agent = PPO(MLPPolicy(env.single_observation_space.shape[0], 15, 4), AgentConfig(), 2, 5)
    agent.start(env, seed=0)
    with pytest.raises(EpisodeLengthError, match="step 3"):
        agent.run_episode(env)


def eval_actions(eval_actions: str, agent_seed: int, agent: str = "ppo") -> np.ndarray:
    """The actions an eval-mode agent sends in one episode of a fixed env, [steps, lanes, heads]."""
    env = SpectrumVectorEnv({"network": {"episode_steps": 5}, "env": {"num_envs": 3}})
    obs_dim, config = env.single_observation_space.shape[0], AgentConfig(eval_actions=eval_actions)
    torch.manual_seed(0)
    policy = MLPPolicy(obs_dim, 15, 4, 16, 1, env.obs_layout["mask"])
    with torch.no_grad():       # away from the near-uniform start, so the argmax is not a tie
        policy.actor[-1].weight.mul_(300.0)
    if agent == "ppo":
        agent = PPO(policy, config, 3, 5, mode="eval", seed=agent_seed)
    else:
        agent = MAML(policy, config, 3, 5, mode="eval", seed=agent_seed)
    agent.start(env, seed=7)
    sent, step = [], env.step
    env.step = lambda actions: (sent.append(actions.copy()), step(actions))[1]
    agent.run_episode(env)
    return np.stack(sent)


@pytest.mark.parametrize("agent", ["ppo", "maml"])
def test_eval_mode_takes_argmax_actions_that_reruns_reproduce(agent):
    a, b = eval_actions("argmax", 1, agent), eval_actions("argmax", 2, agent)
    np.testing.assert_array_equal(a, b)                 # the agent's random generator plays no part
    assert len(np.unique(a)) > 1
    assert not np.array_equal(eval_actions("sample", 1, agent), eval_actions("sample", 2, agent))


def test_annealing_lowers_the_step_size_linearly_to_zero():
    config = AgentConfig(episodes=4, anneal_lr=True, ppo=PPOConfig(learning_rate=1e-3))
    agent = PPO(MLPPolicy(OBS, HEADS, LEVELS, 8, 1), config, 2, STEPS)
    rates = []
    for _ in range(4):
        agent.storage.step = STEPS
        agent.update()
        rates.append(agent.optimizer.param_groups[0]["lr"])
    np.testing.assert_allclose(rates, [1e-3, 0.75e-3, 0.5e-3, 0.25e-3])
    agent = PPO(MLPPolicy(OBS, HEADS, LEVELS, 8, 1), AgentConfig(episodes=4), 2, STEPS)
    agent.storage.step = STEPS
    agent.update()
    assert agent.optimizer.param_groups[0]["lr"] == 1e-3               # off by default
