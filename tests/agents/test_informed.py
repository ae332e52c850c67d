"""The value of information on a tiny hardware family: PPO with a shared link head, told the hidden
access offsets a(b,k) (``network.informed``), beats the same PPO without them on the same tasks."""
import pytest
import torch

from testbed.agent_factory import make_agent
from testbed.config import load_config
from testbed.env import SpectrumVectorEnv

TINY = {"network": {"num_bs": 2, "num_ue": 4, "num_bands": 3, "episode_steps": 20, "task_family": "hardware"},
        "tasks": {"access_gain_offset_db": [-30.0, 0.0], "pa_gain_offset_db": [0.0, 0.0],
                  "pa_compression_dbm": [30.0, 30.0]},
        "env": {"num_envs": 32, "seed": 0}, "agent": {"shared_link_head": True}}
EPISODES = 60


def trained_return(informed: bool) -> float:
    """Mean argmax return per episode on 4 × 32 tasks drawn from seed 99 (the same for both)."""
    config = load_config(None, {**TINY, "network": {**TINY["network"], "informed": informed}})
    torch.manual_seed(0)
    env = SpectrumVectorEnv(config, tensors=True)
    agent = make_agent("ppo", env, config, "train", seed=0)
    agent.start(env, seed=0)
    for _ in range(EPISODES):
        agent.run_episode(env)
    agent.mode, agent.greedy = "eval", True
    agent.start(env, seed=99)
    total = []
    agent.run_episode(env, on_step=lambda reward, info: total.append(torch.as_tensor(reward).mean()))
    for _ in range(3):
        agent.run_episode(env, on_step=lambda reward, info: total.append(torch.as_tensor(reward).mean()))
    return float(sum(total)) / 4


@pytest.mark.slow
def test_informed_ppo_beats_uninformed_on_a_tiny_hardware_family():
    plain, informed = trained_return(False), trained_return(True)
    assert informed > plain + max(0.1 * abs(plain), 0.5), (plain, informed)
