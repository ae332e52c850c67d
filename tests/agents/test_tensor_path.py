"""The agents' tensor path (``SpectrumVectorEnv(tensors=True)``: observations and rewards stay
torch tensors, actions go in as tensors) plays and learns exactly as the Gymnasium path (numpy
arrays) does, for every agent and the same seed."""
import numpy as np
import pytest
import torch

from testbed.agent_factory import agent_config, make_agent
from testbed.config import load_config
from testbed.env import SpectrumVectorEnv
from testbed.metrics import episode_rows

SMALL = {"network": {"episode_steps": 6}, "env": {"num_envs": 3},
         "agent": {"maml": {"support_episodes": 1}, "recurrent": {"episodes_per_trial": 2}}}


def _play(name: str, tensors: bool, episodes: int = 3) -> tuple[list, dict]:
    base = load_config("paper", SMALL)
    config = agent_config(name, base, "train", episodes)
    env = SpectrumVectorEnv(config, tensors=tensors)
    agent = make_agent(name, env, config, "train", seed=1)
    agent.start(env, seed=1)
    last, rows = {}, []
    for _ in range(episodes):
        agent.run_episode(env, lambda reward, info: last.update(reward=reward, info=info))
        assert isinstance(last["reward"], torch.Tensor if tensors else np.ndarray)
        rows.append(episode_rows(last["info"]))
    params = {k: v.detach().clone() for k, v in agent.state_dict()["params"].items()}
    env.close()
    return rows, params


@pytest.mark.parametrize("name", ["ppo", "maml", "rnn"])
def test_the_tensor_path_gives_the_gymnasium_paths_trajectories_and_updates(name):
    rows_np, params_np = _play(name, tensors=False)
    rows_t, params_t = _play(name, tensors=True)
    assert rows_t == rows_np
    assert params_t.keys() == params_np.keys()
    for key in params_np:
        assert torch.equal(params_t[key], params_np[key]), key
    assert rows_np[0] != rows_np[-1]      # it played (and learned) something


def test_the_tensor_path_returns_tensors_on_the_simulators_device():
    env = SpectrumVectorEnv(load_config("paper", SMALL), tensors=True)
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.dtype == torch.float32 and obs.shape == (3, env.single_observation_space.shape[0])
    obs, reward, terminated, truncated, info = env.step(torch.zeros(3, 15, dtype=torch.long))
    assert isinstance(reward, torch.Tensor) and reward.shape == (3,) and isinstance(truncated, np.ndarray)
    with pytest.raises(ValueError, match=r"power levels must lie in \[0, 3\]"):
        env.step(torch.full((3, 15), 4))
