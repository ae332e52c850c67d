"""RL²: the recurrent state persists across the episodes of a task and resets on a new task;
the input carries the step within the trial; a trained agent's return rises within a trial."""
import numpy as np
import torch

from agents.config import AgentConfig, RecurrentConfig
from agents.policies import RecurrentPolicy
from agents.rl2 import RL2
from testbed.env import SpectrumVectorEnv
from tests.agents.test_maml import HiddenBitBandit

STEPS = 5


def make(attention: bool):
    env = SpectrumVectorEnv({"network": {"episode_steps": STEPS}, "env": {"num_envs": 3, "episodes_per_task": 2}})
    torch.manual_seed(0)
    policy = RecurrentPolicy(env.single_observation_space.shape[0], len(env.single_action_space.nvec), 4,
                             hidden_size=16, attention=attention, num_attention_heads=2, window=4,
                             mask_slice=env.obs_layout["mask"])
    config = AgentConfig(recurrent=RecurrentConfig(episodes_per_trial=2))
    agent = RL2(policy, config, env.num_envs, STEPS, mode="train")
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
    assert torch.equal(inp[:, num_obs:-3].sum(-1), torch.full((3,), 15.0))   # one-hot level of each of 15 heads
    assert torch.equal(inp[:, -3], agent.prev_reward) and agent.prev_reward.abs().sum() > 0
    assert torch.equal(inp[:, -2], torch.ones(3))                        # an episode just ended
    assert torch.equal(inp[:, -1], torch.full((3,), 0.5))               # 5 of the trial's 2·5 steps done
    agent.run_episode(env)                                                # end of the task
    agent._begin_task(agent.new_task)
    assert agent.prev_reward.abs().sum() == 0 and agent.prev_action.abs().sum() == 0
    assert torch.equal(agent._input()[:, -1], torch.zeros(3))            # a new trial starts at step 0


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


def test_a_trained_agent_finds_the_hidden_arm_within_a_trial():
    lanes, steps, per_trial = 32, 8, 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # tiny tensors: threads only add overhead
    try:
        torch.manual_seed(0)
        config = AgentConfig(recurrent=RecurrentConfig(hidden_size=16, episodes_per_trial=per_trial,
                                                       learning_rate=3e-3, num_minibatches=1))
        policy = RecurrentPolicy(1, 1, 2, 16)
        agent = RL2(policy, config, lanes, steps, mode="train", seed=0)
        env = HiddenBitBandit(lanes, steps, per_trial, levels=2)
        agent.start(env, seed=0)
        for _ in range(60):
            agent.run_episode(env)
        agent = RL2(policy, config, lanes, steps, mode="eval", seed=1)
        env = HiddenBitBandit(lanes, steps, per_trial, levels=2)
        agent.start(env, seed=5)
        rewards = []
        for _ in range(2 * per_trial):     # two trials
            agent.run_episode(env, lambda reward, info: rewards.append(reward.mean()))
    finally:
        torch.set_num_threads(threads)
    by_step = np.reshape(rewards, (2, per_trial * steps)).mean(0)
    assert by_step[0] < 0.7                              # the first pull cannot know the task
    assert by_step[2:].mean() > by_step[0] + 0.3         # later pulls exploit what the rewards showed
