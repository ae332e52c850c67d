"""The lazy step ``info``: every key reads as the eager copy taken at the step would (values, dtypes,
shapes, the masked ``sinr_db``), whenever it is read; it behaves as a dict; unread keys cost no copy."""
import copy
import pickle

import numpy as np
import torch

from testbed.env import LazyInfo, SpectrumEnv, SpectrumVectorEnv
from testbed.metrics import episode_rows
from sim.units import lin_to_db

T = 4
SMALL = {"network": {"episode_steps": T}, "env": {"episodes_per_task": 1}}


def assert_same(a, b, where=""):
    """Equal values, dtypes and shapes; masked arrays with equal masks; nested dicts key by key."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
        return
    assert type(a) is type(b), where
    if isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        if isinstance(a, np.ma.MaskedArray):
            assert np.array_equal(np.ma.getmaskarray(a), np.ma.getmaskarray(b)), where
            a, b = a.data, b.data
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    else:
        assert a == b, where


def eager(info: dict) -> dict:
    """Every key read now, copied so that nothing later can change it."""
    return copy.deepcopy({key: info[key] for key in info})


def run(env, actions, read_at_once: bool):
    """Infos of every step: read as soon as the step returns, or only after the whole run."""
    infos = [env.reset(seed=3)[1]]
    infos[0] = eager(infos[0]) if read_at_once else infos[0]
    for action in actions:
        info = env.step(action)[-1]
        infos.append(eager(info) if read_at_once else info)
    return infos


def test_lazy_info_read_late_equals_the_info_read_at_the_step():
    """Read after later steps and autoresets (new tasks), every key of every step still reads as it did."""
    actions = np.random.default_rng(0).integers(0, 4, size=(2 * T + 1, 4, 15))
    at_once = run(SpectrumVectorEnv(SMALL, num_envs=4), actions, read_at_once=True)
    late = run(SpectrumVectorEnv(SMALL, num_envs=4), actions, read_at_once=False)
    assert "final_info" in late[T] and "final_obs" in late[2 * T]
    for t, (a, b) in enumerate(zip(at_once, late)):
        assert isinstance(b, LazyInfo)
        assert_same(a, eager(b), f"step {t}")


def test_lazy_info_holds_the_step_results_values():
    env = SpectrumVectorEnv(SMALL, num_envs=8)
    env.reset(seed=1)
    results = []
    step = env.net.step
    env.net.step = lambda level: results.append(step(level)) or results[-1]
    info = env.step(np.full((8, 15), 3))[-1]
    env.step(np.full((8, 15), 1))
    res = results[0]
    assert info["executed_power_w"].dtype == np.float32 and info["mask"].dtype == bool
    assert np.array_equal(info["executed_level"], res.safe.level.numpy())
    assert np.array_equal(info["gain_db"], res.gain_db.numpy())
    assert np.array_equal(info["sinr_violations"], res.sinr_violations.numpy())
    sinr = info["sinr_db"]
    assert isinstance(sinr, np.ma.MaskedArray) and sinr.shape == (8, 3, 5) and sinr.dtype == np.float32
    active = res.active.numpy()
    assert np.array_equal(sinr.mask, ~active) and np.isnan(sinr.data[~active]).all()
    assert np.array_equal(sinr.data[active], lin_to_db(res.sinr_lin).numpy()[active])
    assert np.array_equal(info["noise_w"], np.full(8, env.params.noise_w))
    assert np.array_equal(info["lowered_unsafe"], res.safe.lowered.sum((1, 2)).numpy())


def test_single_env_info_equals_lane_zero_of_the_vector_info():
    actions = np.random.default_rng(1).integers(0, 4, size=(T, 15))
    single, lane = SpectrumEnv(SMALL), SpectrumVectorEnv(SMALL, num_envs=1)
    single.reset(seed=5)
    lane.reset(seed=5)
    for action in actions:
        a = single.step(action)[-1]
        b = lane.step(action[None])[-1]
        assert isinstance(a, LazyInfo)
        for key in ("gain_db", "sinr_db", "mask", "throughput_bps", "next_mask", "new_task"):
            assert_same(eager(a)[key], b[key][0], key)
        assert_same(a["task"], {k: v[0] for k, v in b["task"].items()})
    assert "episode_metrics" in a and "final_obs" not in a


def fresh_info() -> LazyInfo:
    """The unread info of one fixed step."""
    env = SpectrumVectorEnv(SMALL, num_envs=2)
    env.reset(seed=0)
    return env.step(np.full((2, 15), 2))[-1]


def test_lazy_info_is_a_dict_in_every_way_of_reading_it():
    want = eager(fresh_info())
    info = fresh_info()
    assert isinstance(info, dict) and len(info) == len(want) and list(info.keys()) == list(want)
    assert "gain_db" in info and "nope" not in info and list(iter(info)) == list(want)
    for read in (dict, lambda i: {**i}, lambda i: dict(i.items()), lambda i: pickle.loads(pickle.dumps(i)),
                 copy.deepcopy, copy.copy, LazyInfo.copy):
        assert_same(read(fresh_info()), want)
    assert [type(v) for v in fresh_info().values()] == [type(v) for v in want.values()]
    assert_same(info.get("fairness"), want["fairness"]) and info.get("nope", 7) == 7
    info["extra"] = 1
    assert info["extra"] == 1
    assert_same(info.pop("cost"), want["cost"]) and "cost" not in info
    assert info.pop("cost", None) is None
    del info["extra"]
    assert_same(info.setdefault("penalty"), want["penalty"])
    key, value = info.popitem()
    assert key == "next_mask"
    assert_same(value, want["next_mask"])


def test_the_runners_reads_leave_every_step_uncopied_but_the_last():
    """The env sums the episode's metrics on the simulator's device and the runner reads them from
    the last step's ``final_info``: no key of any other step is ever copied."""
    env = SpectrumVectorEnv(SMALL, num_envs=2)
    env.reset(seed=0)
    for t in range(T):
        _, reward, _, truncated, info = env.step(np.full((2, 15), 2))
        loaded = {key for key in info if isinstance(dict.__getitem__(info, key), np.ndarray)}
        assert loaded == ({"final_obs", "_final_obs", "_final_info"} if t == T - 1 else set()), t
        assert not isinstance(dict.__getitem__(info, "sinr_db"), (np.ndarray, torch.Tensor))
    assert truncated.all() and len(episode_rows(info)) == 2
