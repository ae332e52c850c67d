"""The Gymnasium environments: env checker, registration, spaces, info, autoreset, tasks."""
import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import testbed  # noqa: F401  (registers the env)
from testbed.env import SpectrumEnv, SpectrumVectorEnv

SMALL = {"network": {"episode_steps": 5}}


def test_check_env_passes_on_the_single_env():
    env = SpectrumEnv(SMALL)
    check_env(env, skip_render_check=True)


def test_gymnasium_make_gives_the_paper_configuration():
    env = gymnasium.make("testbed/SpectrumAllocation-v0")
    p = env.unwrapped.config.network
    assert (p.num_bs, p.num_ue, p.num_bands, p.num_levels, p.episode_steps) == (3, 10, 5, 4, 100)
    assert env.action_space == gymnasium.spaces.MultiDiscrete([4] * 15)
    obs, info = env.reset(seed=0)
    assert obs.shape == (3 * 10 + 3 * 5 * 3 + 2 * 10,)
    env.close()


def test_make_accepts_a_config_dict_preset_and_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("network:\n  num_bands: 2\n")
    for cfg, bands in ((path, 2), (str(path), 2), ("large", 10), ({"network": {"num_bands": 3}}, 3)):
        env = gymnasium.make("testbed/SpectrumAllocation-v0", config=cfg)
        assert env.unwrapped.config.network.num_bands == bands
        env.close()


def test_single_env_info_has_every_field_with_its_shape():
    env = SpectrumEnv()
    env.reset(seed=1)
    _, _, _, _, info = env.step(env.action_space.sample())
    b, u, k = 3, 10, 5
    shapes = {"gain_db": (b, u), "interference_dbm": (b, k), "mask": (b, k), "requested_level": (b, k),
              "executed_power_w": (b, k), "served_ue": (b, k), "external_ue_w": (u, k), "noise_w": (),
              "sinr_db": (b, k), "throughput_bps": (), "fairness": (), "sinr_violations": (),
              "latency_violations": (), "blocked_unsafe": (), "executed_violations": (), "delay_s": (u,),
              "rate_bps": (u,)}
    for key, shape in shapes.items():
        assert np.shape(info[key]) == shape, key
    assert isinstance(info["task"], dict) and "path_loss_exponent" in info["task"]
    off = info["executed_power_w"] == 0
    assert np.isnan(info["sinr_db"].data[off]).all() and info["sinr_db"].mask[off].all()
    assert not np.isnan(info["sinr_db"].data[~off]).any()
    assert info["executed_violations"] == 0
    assert info["mask"].dtype == bool


def test_vector_env_step_reset_autoreset():
    env = SpectrumVectorEnv(SMALL, num_envs=8)
    assert env.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.SAME_STEP
    obs, info = env.reset(seed=0)
    assert obs.shape == (8, env.single_observation_space.shape[0])
    assert env.observation_space.contains(obs)
    first_task = info["task"]["path_loss_exponent"].copy()
    for t in range(5):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        assert reward.shape == (8,) and reward.dtype == np.float32
        assert info["sinr_db"].shape == (8, 3, 5)
        assert trunc.all() == (t == 4)
        assert not term.any()
    assert "final_obs" in info and info["final_obs"].shape == obs.shape
    assert not np.array_equal(info["final_obs"], obs)
    assert info["new_task"].all()
    assert not np.allclose(env._task()["path_loss_exponent"], first_task)  # autoreset drew new tasks
    assert env.net.state.t == 0


def test_episodes_per_task_keeps_the_task_then_changes_it():
    env = SpectrumVectorEnv({**SMALL, "env": {"episodes_per_task": 2}}, num_envs=4)
    _, info = env.reset(seed=0)
    task0 = info["task"]["path_loss_exponent"].copy()
    tasks, new = [], []
    for _ in range(3 * 5):
        _, _, _, trunc, info = env.step(env.action_space.sample())
        if trunc.all():
            tasks.append(info["task"]["path_loss_exponent"].copy())
            new.append(bool(info["new_task"].all()))
    assert new == [False, True, False]
    assert np.array_equal(env._task()["path_loss_exponent"], tasks[-1])  # the third task is still on
    assert np.array_equal(tasks[0], task0) and np.array_equal(tasks[1], task0)
    assert not np.array_equal(tasks[2], task0)


def test_task_seed_fixes_one_task_for_all_envs_and_episodes():
    env = SpectrumVectorEnv({**SMALL, "env": {"task_seed": 5}}, num_envs=3)
    _, info = env.reset(seed=0)
    a = info["task"]["path_loss_exponent"]
    assert np.all(a == a[0])
    _, info = env.reset(seed=1)
    assert np.array_equal(info["task"]["path_loss_exponent"], a)


def test_test_distribution_draws_from_the_held_out_ranges():
    env = SpectrumVectorEnv({"env": {"task_distribution": "test"}}, num_envs=64)
    _, info = env.reset(seed=0)
    assert (info["task"]["path_loss_exponent"] >= 4.0).all()


def test_same_seed_same_observations():
    def run():
        env = SpectrumVectorEnv(SMALL, num_envs=4)
        obs, _ = env.reset(seed=3)
        out = [obs]
        for _ in range(7):
            obs, *_ = env.step(np.full((4, 15), 2))
            out.append(obs)
        return np.stack(out)
    assert np.array_equal(run(), run())


def test_wrong_action_shape_is_an_error():
    env = SpectrumVectorEnv(SMALL, num_envs=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="expected shape"):
        env.step(np.zeros((2, 7), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        env.step(np.full((2, 15), 4))


def test_num_envs_given_in_code_is_checked_as_the_config_field():
    from testbed.config import ConfigError

    with pytest.raises(ConfigError, match=r"sizes: the step's link tensors would hold env\.num_envs"):
        SpectrumVectorEnv("large", num_envs=10**6)
    with pytest.raises(ConfigError, match=r"env\.num_envs: 0 is out of range; allowed \[1, 1000000\]"):
        SpectrumVectorEnv("paper", num_envs=0)
    assert SpectrumVectorEnv("paper", num_envs=3).config.env.num_envs == 3


def test_single_env_reset_after_an_episode_continues_the_task_stream():
    """The vector env inside already began the next episode: a plain reset() returns it (tasks
    repeat every env.episodes_per_task episodes); a seeded reset starts over."""
    from testbed.config import load_config

    env = SpectrumEnv(load_config("paper", {"env": {"num_envs": 1, "episodes_per_task": 2},
                                            "network": {"episode_steps": 3}}))
    obs, info = env.reset(seed=1)
    tasks, first_obs = [], []
    for _ in range(4):
        tasks.append(float(info["task"]["path_loss_exponent"]))
        first_obs.append(obs)
        for _ in range(3):
            obs, _, _, truncated, info = env.step(env.action_space.sample())
        assert truncated
        obs, info = env.reset()
    assert tasks[0] == tasks[1] != tasks[2] == tasks[3]
    assert bool(info["new_task"]) is True and not np.array_equal(first_obs[0], first_obs[1])
    again, _ = env.reset(seed=1)
    np.testing.assert_array_equal(again, first_obs[0])
