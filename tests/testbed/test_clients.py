"""Outside clients: SB3's Monitor, Gymnasium's RecordEpisodeStatistics and vector convention,
sb3-contrib's MaskablePPO, wrapper attributes, and the env checkers."""
import csv

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.utils.passive_env_checker import env_step_passive_checker
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import RecordEpisodeStatistics
from gymnasium.wrappers.vector import RecordEpisodeStatistics as VectorRecordEpisodeStatistics
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.monitor import Monitor

import testbed  # noqa: F401  (registers the env)
from testbed.env import EPISODE_INFO_KEYS, SpectrumEnv, SpectrumVectorEnv
from testbed.metrics import METRIC_KEYS, METRICS, episode_rows

T = 5
SMALL = {"network": {"episode_steps": T}}
ENV_ID = "testbed/SpectrumAllocation-v0"


class InfoSums:
    """The episode metrics recomputed from the step infos' numpy arrays (apart from the env's own
    recorder, which sums the step results on the simulator's device)."""

    def __init__(self, num_envs: int):
        self.steps, self.ret = 0, np.zeros(num_envs)
        self.sums = {key: np.zeros(num_envs) for key in METRICS}

    def add(self, reward: np.ndarray, info: dict) -> None:
        self.steps += 1
        self.ret += reward
        for key in METRICS:
            self.sums[key] += info[key]

    def rows(self) -> list[dict]:
        out = []
        for i in range(len(self.ret)):
            row = {"return": float(self.ret[i])}
            for key, (name, how) in METRICS.items():
                row[name] = float(self.sums[key][i] / self.steps if how == "mean" else self.sums[key][i])
            row["throughput_mbps"] /= 1e6
            out.append(row)
        return out


def runner_metrics(seed: int, actions: np.ndarray) -> dict:
    """What the runner logs for one episode of ``actions`` [T, 15] from ``seed`` (the last step's
    episode metrics), checked against the sums of the step infos."""
    env = SpectrumVectorEnv(SMALL, num_envs=1)
    env.reset(seed=seed)
    sums = InfoSums(1)
    for action in actions:
        _, reward, _, _, info = env.step(action[None])
        sums.add(reward, info)
    logged = episode_rows(info)[0]
    assert logged == pytest.approx(sums.rows()[0], rel=1e-12, abs=1e-12)
    return logged


def test_monitor_logs_the_runners_episode_metrics(tmp_path):
    env = Monitor(gymnasium.make(ENV_ID, config=SMALL), str(tmp_path), info_keywords=EPISODE_INFO_KEYS)
    rng = np.random.default_rng(0)
    logged, expected = [], []
    for seed in (0, 1):
        actions = rng.integers(0, 4, size=(T, 15))
        env.reset(seed=seed)
        for t, action in enumerate(actions):
            _, _, terminated, truncated, info = env.step(action)
            assert ("episode" in info) == (t == T - 1) == truncated and not terminated
        logged.append(info["episode"])
        expected.append(runner_metrics(seed, actions))
    env.close()
    for episode, want in zip(logged, expected):
        assert {k: episode[f"episode_{k}"] for k in METRIC_KEYS} == want
        assert episode["r"] == pytest.approx(want["return"], abs=1e-6) and episode["l"] == T
    assert expected[0] != expected[1]
    with open(tmp_path / "monitor.csv") as f:
        next(f)  # Monitor's JSON header line
        rows = list(csv.DictReader(f))
    assert [{k: float(row[f"episode_{k}"]) for k in METRIC_KEYS} for row in rows] == expected


def test_single_env_puts_episode_metrics_only_at_the_last_step():
    env = gymnasium.make(ENV_ID, config=SMALL)
    env.reset(seed=0)
    for t in range(T):
        *_, info = env.step(env.action_space.sample())
        assert ("episode_metrics" in info) == (t == T - 1)
        assert not any(k in info for k in EPISODE_INFO_KEYS) or t == T - 1
    metrics = info["episode_metrics"]
    assert list(metrics) == list(METRIC_KEYS) and all(type(v) is float for v in metrics.values())
    assert [info[k] for k in EPISODE_INFO_KEYS] == list(metrics.values())
    assert "final_info" not in info and "final_obs" not in info


def test_record_episode_statistics_counts_the_episodes_next_to_the_metrics():
    env = RecordEpisodeStatistics(gymnasium.make(ENV_ID, config=SMALL))
    for seed in (0, 1):
        env.reset(seed=seed)
        for _ in range(T):
            *_, info = env.step(env.action_space.sample())
        assert info["episode"]["l"] == T
        assert info["episode"]["r"] == pytest.approx(info["episode_metrics"]["return"], abs=1e-5)
    assert len(env.return_queue) == 2


def test_vector_env_final_info_exactly_at_episode_ends():
    env = SpectrumVectorEnv(SMALL, num_envs=4)
    env.reset(seed=0)
    sums = InfoSums(4)
    ends = 0
    for t in range(3 * T):
        _, reward, _, truncated, info = env.step(env.action_space.sample())
        sums.add(reward, info)
        assert ("final_info" in info) == ("_final_info" in info) == truncated.all() == ((t + 1) % T == 0)
        if not truncated.all():
            continue
        ends += 1
        final, want = info["final_info"], sums.rows()
        sums = InfoSums(4)
        assert info["_final_info"].all() and final["_episode_metrics"].all()
        metrics = final["episode_metrics"]
        for key in METRIC_KEYS:
            assert metrics[f"_{key}"].all()
            assert metrics[key].tolist() == [row[key] for row in want], key
    assert ends == 3


def test_vector_final_info_is_batched_as_sync_vector_env_batches_the_single_env():
    ours = SpectrumVectorEnv(SMALL, num_envs=2)
    sync = SyncVectorEnv([lambda: SpectrumEnv(SMALL)] * 2, autoreset_mode=AutoresetMode.SAME_STEP)
    infos = []
    for env in (ours, sync):
        env.reset(seed=0)
        for _ in range(T):
            *_, info = env.step(env.action_space.sample())
        infos.append(info)
    a, b = (info["final_info"]["episode_metrics"] for info in infos)
    assert set(a) == set(b) and set(a) == set(METRIC_KEYS) | {f"_{k}" for k in METRIC_KEYS}
    for key in a:
        assert (a[key].shape, a[key].dtype) == (b[key].shape, b[key].dtype), key
    for key in ("_final_info", "_final_obs"):
        assert (infos[0][key].shape, infos[0][key].dtype) == (infos[1][key].shape, infos[1][key].dtype)
    assert infos[0]["final_info"]["_episode_metrics"].tolist() == infos[1]["final_info"]["_episode_metrics"].tolist()


def test_vector_record_episode_statistics_agrees_with_the_episode_return():
    env = VectorRecordEpisodeStatistics(SpectrumVectorEnv(SMALL, num_envs=3))
    env.reset(seed=0)
    for t in range(T):
        *_, info = env.step(env.action_space.sample())
        assert ("episode" in info) == (t == T - 1)
    assert info["_episode"].all() and (info["episode"]["l"] == T).all()
    np.testing.assert_allclose(info["episode"]["r"], info["final_info"]["episode_metrics"]["return"], atol=1e-5)


def test_action_masks_open_level_zero_and_the_bands_the_filter_opens():
    env = SpectrumVectorEnv(SMALL, num_envs=8)
    obs, _ = env.reset(seed=0)
    closed = 0
    for _ in range(2 * T):
        masks = env.action_masks()
        assert masks.shape == (8, 15 * 4) and masks.dtype == bool
        levels = masks.reshape(8, 15, 4)
        assert levels[:, :, 0].all() and (levels[:, :, 1:] == levels[:, :, 1:2]).all()
        assert np.array_equal(levels[:, :, 1], obs[:, env.obs_layout["mask"]] == 1)
        obs, _, _, _, info = env.step(np.full((8, 15), 3))  # the top level everywhere
        assert np.array_equal(levels[:, :, 1], info["mask"].reshape(8, 15))
        assert np.array_equal(info["blocked_unsafe"], (~levels[:, :, 3]).sum(1))
        closed += (~levels[:, :, 3]).sum()
    assert closed > 0
    single, lane = SpectrumEnv(SMALL), SpectrumVectorEnv(SMALL, num_envs=1)
    single.reset(seed=1)
    lane.reset(seed=1)
    for _ in range(3):
        assert single.action_masks().shape == (60,)
        assert np.array_equal(single.action_masks(), lane.action_masks()[0])
        single.step(np.full(15, 3))
        lane.step(np.full((1, 15), 3))


class InfoLog(BaseCallback):
    """Every step info MaskablePPO's rollouts saw."""

    def __init__(self):
        super().__init__()
        self.infos = []

    def _on_step(self) -> bool:
        self.infos.extend(self.locals["infos"])
        return True


def test_maskable_ppo_never_requests_a_masked_level():
    env = Monitor(gymnasium.make(ENV_ID, config={"network": {"episode_steps": 20}}))
    model = MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0)
    log = InfoLog()
    model.learn(total_timesteps=128, callback=log)
    assert len(log.infos) == 128
    closed = 0
    for info in log.infos:
        off = ~info["mask"]
        assert (info["requested_level"][off] == 0).all()
        assert np.array_equal(info["executed_level"], info["requested_level"])
        assert info["blocked_unsafe"] == 0
        closed += off.sum()
    assert closed > 0  # the mask did close bands during the run


def test_wrapper_attributes_through_gymnasium_make():
    env = gymnasium.make(ENV_ID, config=SMALL)
    layout = env.get_wrapper_attr("obs_layout")
    assert layout is env.unwrapped.obs_layout
    obs, _ = env.reset(seed=0)
    assert max(s.stop for s in layout.values()) == obs.shape[0]
    masks = env.get_wrapper_attr("action_masks")()
    assert np.array_equal(masks.reshape(15, 4)[:, 1], obs[layout["mask"]] == 1)


def test_checkers_pass_and_the_last_step_passes_the_step_checker():
    env = SpectrumEnv({"network": {"episode_steps": 2}})
    check_env(env, skip_render_check=True)
    sb3_check_env(SpectrumEnv({"network": {"episode_steps": 1}}))  # its one step ends the episode
    env.reset(seed=0)
    for _ in range(2):
        *_, truncated, info = env_step_passive_checker(env, env.action_space.sample())
    assert truncated and "episode_metrics" in info
