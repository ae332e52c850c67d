"""RL²: the recurrent state persists across the episodes of a task and resets on a new task."""
import torch

from agents.config import AgentConfig
from agents.policies import RecurrentPolicy
from agents.rl2 import RL2
from testbed.env import SpectrumVectorEnv

STEPS = 5


def make(attention: bool):
    env = SpectrumVectorEnv({"network": {"episode_steps": STEPS}, "env": {"num_envs": 3, "episodes_per_task": 2}})
    torch.manual_seed(0)
    policy = RecurrentPolicy(env.single_observation_space.shape[0], len(env.single_action_space.nvec), 4,
                             hidden_size=16, attention=attention, num_attention_heads=2, window=4,
                             mask_slice=env.obs_layout["mask"])
    agent = RL2(policy, AgentConfig(), env.num_envs, STEPS, mode="train")
    starts = []
    update = agent.update
    agent.update = lambda state0, next_value: (starts.append(state0), update(state0, next_value))[1]
    return env, agent, starts


def test_state_persists_within_a_task_and_resets_on_a_new_task():
    for attention in (False, True):
        env, agent, starts = make(attention)
        agent.start(env, seed=0)
        ends = []
        for _ in range(4):                  # two tasks of two episodes
            agent.run_episode(env)
            ends.append(tuple(s.clone() for s in agent.state))
        assert all(s.abs().sum() == 0 for s in starts[0][:2])        # first task: fresh
        for a, b in zip(starts[1], ends[0]):                           # same task: carried over
            assert torch.equal(a, b)
        assert starts[1][0].abs().sum() > 0
        assert all(s.abs().sum() == 0 for s in starts[2][:2])        # new task: reset
        assert not starts[2][2].any()                                  # no valid attention memory
        for a, b in zip(starts[3], ends[2]):
            assert torch.equal(a, b)


def test_previous_action_and_reward_feed_the_input_and_reset_with_the_task():
    env, agent, _ = make(False)
    agent.start(env, seed=0)
    agent.run_episode(env)
    inp = agent._input()
    num_obs = env.single_observation_space.shape[0]
    assert torch.equal(inp[:, num_obs:-2].sum(-1), torch.full((3,), 15.0))   # one-hot level of each of 15 heads
    assert torch.equal(inp[:, -2], agent.prev_reward) and agent.prev_reward.abs().sum() > 0
    assert torch.equal(inp[:, -1], torch.ones(3))                        # an episode just ended
    agent.run_episode(env)                                                # end of the task
    agent._begin_task(agent.new_task)
    assert agent.prev_reward.abs().sum() == 0 and agent.prev_action.abs().sum() == 0


def test_a_trained_step_changes_the_parameters():
    env, agent, _ = make(True)
    agent.start(env, seed=0)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    stats = agent.run_episode(env)
    assert set(stats) >= {"losses/policy", "losses/value", "losses/entropy"}
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))


def test_eval_mode_never_changes_the_parameters():
    env, agent, _ = make(False)
    agent = RL2(agent.policy, AgentConfig(), env.num_envs, STEPS, mode="eval")
    agent.start(env, seed=0)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    for _ in range(3):
        assert agent.run_episode(env) == {}
    assert all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))
