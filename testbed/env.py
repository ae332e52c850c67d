"""The Gymnasium environments: a batched ``SpectrumVectorEnv`` (N networks in one call) and a
single ``SpectrumEnv``. The safety filter runs inside the backend's step, before any SINR is
computed or any radio transmits; it is not a wrapper and cannot be walked around.

At the last step of each episode the vector env's ``info["final_info"]["episode_metrics"]`` and
the single env's ``info["episode_metrics"]`` hold the runner's per-episode metrics
(``testbed.metrics.METRIC_KEYS``); the single env also puts them flat under ``EPISODE_INFO_KEYS``
for SB3's ``Monitor(env, info_keywords=EPISODE_INFO_KEYS)``. ``action_masks()`` gives the
levels each action dimension may take next, in sb3-contrib MaskablePPO's layout.

A step's ``info`` is a ``LazyInfo``: its arrays stay tensors until a key is read, so a loop that
reads a few keys does not pay for the host copies of the rest."""
from __future__ import annotations

from collections.abc import ItemsView, ValuesView
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sim.network import SimNetwork, StepResult
from sim.tasks import Tasks, sample_tasks
from sim.units import lin_to_db, w_to_dbm
from testbed.config import Config, load_config
from testbed.metrics import METRIC_KEYS, EpisodeRecorder

OBS_BOUND = 10.0
# flat info keys of the episode metrics at an episode's last step (the per-step info already
# uses several of the bare names, e.g. "sinr_violations")
EPISODE_INFO_KEYS = tuple(f"episode_{key}" for key in METRIC_KEYS)


def make_network(config: Config, num_envs: int, device: str | None = None) -> SimNetwork:
    """The backend named by ``config.backend``: the simulator, or radios (mock, pluto, gnuradio)."""
    device = device or config.env.device
    if config.backend == "sim":
        return SimNetwork(config.network, config.task_ranges, num_envs, device=device,
                          seed=config.env.seed, task_seed=config.env.task_seed, compiled=config.env.compile)
    from testbed.backends import make_backend
    return make_backend(config, num_envs=num_envs, device=device)


# a tag in the evaluation set's seed: its tasks never coincide with a task stream's of the same seed number
EVALUATION_STREAM = 0x65_76_61_6C
DISTRIBUTIONS = ("train", "test")


def evaluation_tasks(config: Config, num: int, device: str | torch.device = "cpu") -> Tasks:
    """The fixed evaluation set of ``config.env.task_distribution``: ``num`` tasks from their own
    generator, seeded by ``evaluation.seed`` and the distribution, never by ``env.seed``."""
    entropy = [config.evaluation.seed, EVALUATION_STREAM, DISTRIBUTIONS.index(config.env.task_distribution)]
    seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))
    gen = torch.Generator(device=device).manual_seed(seed)
    return sample_tasks(config.network, config.task_ranges, num, gen, device)


class _Pending:
    """A value not read yet: a tensor (read as its numpy copy) or a function giving the value."""

    __slots__ = ("source",)

    def __init__(self, source):
        self.source = source

    def load(self):
        value = self.source() if callable(self.source) else self.source
        return value.cpu().numpy() if isinstance(value, torch.Tensor) else value


class LazyInfo(dict):
    """A step's ``info``: a dict whose pending values (tensors, or functions of nothing) become numpy
    arrays on first read and stay cached. It is a real dict (Gymnasium's checkers and vector wrappers
    demand one); every way of reading it (``[]``, ``get``, ``items``, ``values``, ``dict(info)``,
    ``{**info}``, ``pop``, pickling, copying) gives the loaded values."""

    def __init__(self, pending: dict[str, Any] | None = None):
        super().__init__({key: _Pending(value) for key, value in (pending or {}).items()})

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if type(value) is _Pending:
            value = value.load()
            super().__setitem__(key, value)
        return value

    def __iter__(self):   # overridden so that dict(info) and {**info} go through __getitem__
        return super().__iter__()

    def get(self, key, default=None):
        return self[key] if key in self else default

    def pop(self, key, *default):
        if key not in self:
            return super().pop(key, *default)
        value = self[key]
        super().pop(key)
        return value

    def setdefault(self, key, default=None):
        if key not in self:
            super().__setitem__(key, default)
        return self[key]

    def popitem(self):
        key = next(reversed(self.keys()))
        return key, self.pop(key)

    def items(self):
        return ItemsView(self)

    def values(self):
        return ValuesView(self)

    def copy(self) -> dict:
        return dict(self)

    def __eq__(self, other):
        return dict(self.items()) == other

    __hash__ = None

    def __repr__(self) -> str:
        return repr(dict(self.items()))

    def __reduce__(self):
        return dict, (dict(self.items()),)


def step_info(res: StepResult, noise_w: float) -> LazyInfo:
    """The per-step ``info`` arrays (leading axis N) described in the README, each copied to host
    memory when first read."""
    return LazyInfo({
        "gain_db": res.gain_db,
        "interference_dbm": partial(w_to_dbm, res.map_w),
        "mask": res.safe.mask,
        "requested_level": res.requested_level,
        "executed_level": res.safe.level,
        "executed_power_w": res.safe.power_w,
        "served_ue": res.served_ue,
        "external_ue_w": res.external_ue_w,
        "noise_w": partial(np.full, res.active.shape[0], noise_w),
        "sinr_db": partial(_sinr_db, res.sinr_lin, res.active),
        "measured": res.measured,
        "throughput_bps": res.throughput_bps,
        "fairness": res.fairness,
        "sinr_violations": res.sinr_violations,
        "latency_violations": res.latency_violations,
        "blocked_unsafe": res.blocked_unsafe,
        "lowered_unsafe": partial(torch.sum, res.safe.lowered, (1, 2)),
        "executed_violations": res.executed_violations,
        "cost": res.cost,
        "penalty": res.penalty,
        "delay_s": res.delay_s,
        "rate_bps": res.rate_bps,
    })


CAPTURE_FAULTS = ("stale_captures", "clipped_captures", "overflows", "underflows")


def capture_faults(net) -> dict[str, int]:
    """A measured backend's fault counts since it started (stale captures discarded and taken
    again, clipped captures, RX overflows and TX underflows the devices reported); empty for the
    simulator."""
    return {key: int(getattr(net, key)) for key in CAPTURE_FAULTS if hasattr(net, key)}


def _sinr_db(sinr_lin: torch.Tensor, active: torch.Tensor) -> np.ma.MaskedArray:
    """SINR in dB as a masked array: NaN (and masked) where the link is off, so .mean() averages active links."""
    return np.ma.masked_invalid(
        torch.where(active, lin_to_db(sinr_lin), torch.full_like(sinr_lin, float("nan"))).cpu().numpy())


class SpectrumVectorEnv(VectorEnv):
    """N spectrum-allocation networks stepped in lock-step (episodes of T steps, SAME_STEP autoreset).

    ``config``: a Config, a YAML path, a preset name ('paper', 'large') or a dict.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, config=None, num_envs: int | None = None, device: str | None = None,
                 tensors: bool = False):
        """``tensors``: observations, rewards and ``info["final_obs"]`` stay torch tensors on the
        simulator's device (float32) instead of numpy arrays, for loops that act in tensors (the
        agents'); actions may be tensors or arrays either way."""
        self.tensors = tensors
        self.config = config if isinstance(config, Config) else load_config(config)
        if num_envs is not None and num_envs != self.config.env.num_envs:   # checked as if in the config
            self.config = load_config(self.config, {"env": {"num_envs": num_envs}})
        p = self.config.network
        self.num_envs = self.config.env.num_envs
        self.net = make_network(self.config, self.num_envs, device)
        self.fixed_tasks = evaluation_tasks(self.config, self.num_envs, self.net.device) \
            if self.config.env.task_set == "evaluation" else None
        self.obs_layout = self.net.obs_layout()
        obs_dim = max(s.stop for s in self.obs_layout.values())
        self.single_observation_space = gym.spaces.Box(-OBS_BOUND, OBS_BOUND, (obs_dim,), np.float32)
        self.single_action_space = gym.spaces.MultiDiscrete([p.num_levels] * (p.num_bs * p.num_bands))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.episode = 0
        self.recorder = EpisodeRecorder(self.num_envs)

    @property
    def params(self):
        return self.config.network

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """New episode everywhere. ``options={"new_task": False}`` keeps the current tasks. With
        ``env.task_set: evaluation`` every reset puts the fixed evaluation set back (one task per lane)."""
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
            self.action_space.seed(seed)
        new_task = (options or {}).get("new_task", True)
        if self.fixed_tasks is not None:
            self.net.tasks = self.fixed_tasks
        self.net.reset(seed=seed, new_task=new_task and self.fixed_tasks is None)
        self.episode = 0
        self.recorder.reset()
        return self._obs(), self.reset_info(new_task)

    def reset_info(self, new_task: bool) -> LazyInfo:
        """The info of an episode's start: mask, whether its tasks are new, the task parameters."""
        return LazyInfo({"mask": self.net.mask(), "new_task": partial(np.full, self.num_envs, bool(new_task)),
                         "task": partial(_describe, self.net.tasks)})

    def step(self, actions):
        actions = torch.as_tensor(actions, dtype=torch.long, device=self.net.device)
        expected = (self.num_envs,) + self.single_action_space.shape
        if tuple(actions.shape) != expected:
            raise ValueError(f"actions: expected shape {expected}, got {tuple(actions.shape)}")
        low, high = torch.stack(torch.aminmax(actions)).tolist()
        if low < 0 or high >= self.params.num_levels:
            raise ValueError(f"actions: power levels must lie in [0, {self.params.num_levels - 1}]")
        res = self.net.step(actions)
        info = step_info(res, self.params.noise_w)
        reward = res.reward.float()
        info["task"] = _Pending(partial(_describe, self.net.tasks))
        for key, count in capture_faults(self.net).items():
            info[key] = np.full(self.num_envs, count)
        self.recorder.add(reward, res)
        done = self.net.state.t >= self.params.episode_steps
        truncated = np.full(self.num_envs, done)
        terminated = np.zeros(self.num_envs, dtype=bool)
        new_task = False
        if done:
            info["final_obs"] = self._obs()
            info["_final_obs"] = truncated.copy()
            info["final_info"] = {"episode_metrics": self._episode_metrics(), "_episode_metrics": truncated.copy()}
            info["_final_info"] = truncated.copy()
            self.episode += 1
            new_task = self.fixed_tasks is None and self.episode % self.config.env.episodes_per_task == 0
            self.net.reset(new_task=new_task)
        info["new_task"] = _Pending(partial(np.full, self.num_envs, new_task))
        info["next_mask"] = _Pending(self.net.mask())
        return self._obs(), reward if self.tensors else reward.cpu().numpy(), terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Levels each action dimension may take at the next step, [N, B*K*L] bool: dimension
        d = b*K + k holds levels 0..L-1 (MaskablePPO's MultiDiscrete layout); level 0 is always
        allowed, levels above it only on bands the safety mask opens."""
        band = self._mask().reshape(self.num_envs, -1, 1)
        levels = np.ones((*band.shape[:2], self.params.num_levels), dtype=bool)
        levels[:, :, 1:] = band
        return levels.reshape(self.num_envs, -1)

    def _episode_metrics(self) -> dict[str, np.ndarray]:
        """The finished episode's metrics per lane, batched as Gymnasium's vector envs batch
        infos: ``{key: [N] float64, "_key": [N] bool}``."""
        rows = self.recorder.finish()
        out = {}
        for key in METRIC_KEYS:
            out[key] = np.array([row[key] for row in rows])
            out[f"_{key}"] = np.ones(self.num_envs, dtype=bool)
        return out

    def _obs(self) -> np.ndarray | torch.Tensor:
        obs = self.net.observation()
        return obs if self.tensors else obs.cpu().numpy().astype(np.float32, copy=False)

    def _mask(self) -> np.ndarray:
        """Bands each BS may use at the next step, [N, B, K] bool."""
        return self.net.mask().cpu().numpy()

    def _task(self) -> dict[str, np.ndarray]:
        return _describe(self.net.tasks)

    def close_extras(self, **kwargs) -> None:
        self.net.close()


class SpectrumEnv(gym.Env):
    """One spectrum-allocation network (the paper's setup by default)."""

    metadata = {"render_modes": []}

    def __init__(self, config=None, device: str | None = None):
        self.vec = SpectrumVectorEnv(config, num_envs=1, device=device)
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self.obs_layout = self.vec.obs_layout
        self._started: tuple[np.ndarray, bool] | None = None   # (obs, new_task) of the episode autoreset began

    @property
    def config(self) -> Config:
        return self.vec.config

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A new episode. After an episode's end, a plain ``reset()`` returns the episode the vector env
        already began (so ``env.episodes_per_task`` holds here too); a seed or options reset anew."""
        super().reset(seed=seed)
        started, self._started = self._started, None
        if started is not None and seed is None and options is None:
            obs, new_task = started
            return obs, _first(self.vec.reset_info(new_task))
        obs, info = self.vec.reset(seed=seed, options=options)
        return obs[0], _first(info)

    def step(self, action):
        self._started = None
        obs, reward, terminated, truncated, info = self.vec.step(np.asarray(action)[None])
        info = _first(info)
        if truncated[0]:
            self._started = (obs[0], bool(info["new_task"]))
            obs = info.pop("final_obs")
            del info["_final_obs"], info["_final_info"]
            final = info.pop("final_info")["episode_metrics"]
            info["episode_metrics"] = {key: float(final[key]) for key in METRIC_KEYS}
            info.update(zip(EPISODE_INFO_KEYS, info["episode_metrics"].values()))
        return obs[0] if obs.ndim == 2 else obs, float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def action_masks(self) -> np.ndarray:
        """Levels each action dimension may take at the next step, [B*K*L] bool (see the vector env's)."""
        return self.vec.action_masks()[0]

    def close(self) -> None:
        self.vec.close()


def _describe(tasks: Tasks) -> dict[str, np.ndarray]:
    """``info["task"]``: the scalar task parameters per env, [N] each."""
    return {k: v.cpu().numpy() for k, v in tasks.describe().items()}


def _first(info: dict) -> dict:
    """Index 0 of every array in a (nested) vector info dict; a ``LazyInfo`` stays lazy."""
    if isinstance(info, LazyInfo):
        return LazyInfo({key: partial(_first_of, info, key) for key in info})
    return {key: _first_of(info, key) for key in info}


def _first_of(info: dict, key: str):
    value = info[key]
    if isinstance(value, dict):
        return _first(value)
    if isinstance(value, np.ndarray) and value.ndim >= 1:
        return value[0]
    return value
