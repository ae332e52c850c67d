"""Experiment configuration: YAML into validated frozen dataclasses.

Every field declares its allowed range or choices in its dataclass metadata; ``build``
checks types, ranges and unknown keys and raises ``ConfigError`` naming the dotted field path
and what is allowed, before anything runs (and so before any radio transmits).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sim.params import NetworkParams, TaskRanges, held_out_task_ranges, param

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class EnvConfig:
    """How the environment batches and draws tasks."""

    num_envs: int = param(1, "parallel networks N stepped together", (1, 1_000_000))
    seed: int = param(0, "seed of every random draw", (0, 2**63 - 1))
    device: str = param("cpu", "torch device of the simulator (cpu, cuda, cuda:1, ...)")
    episodes_per_task: int = param(1, "episodes played on one task before a new one is drawn (RL² trials)", (1, 10_000))
    task_distribution: str = param("train", "which task ranges episodes draw from", choices=("train", "test"))
    task_seed: typing.Optional[int] = param(None, "if set, every episode uses the one task drawn from this seed", (0, 2**63 - 1))


@dataclass(frozen=True)
class RunConfig:
    """Where runs go and how long the demo is."""

    out_dir: str = param("runs", "folder that receives one sub-folder per run")
    episodes: int = param(5, "episodes per reference policy in `testbed demo`", (1, 100_000))
    policies: list = param(["random", "max_power", "greedy", "oracle"], "reference policies the demo runs",
                           choices=("random", "max_power", "greedy", "oracle"))


def _hardware_config_type():
    from hardware.config import HardwareConfig
    return HardwareConfig


def _agent_config_type():
    from agents.config import AgentConfig
    return AgentConfig


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    network: NetworkParams = field(default_factory=NetworkParams, metadata={"doc": "network sizes, physics and reward"})
    tasks: TaskRanges = field(default_factory=TaskRanges, metadata={"doc": "training task distribution"})
    test_tasks: TaskRanges = field(default_factory=held_out_task_ranges, metadata={"doc": "held-out task distribution"})
    env: EnvConfig = field(default_factory=EnvConfig, metadata={"doc": "environment batching"})
    backend: str = param("sim", "network backend", choices=("sim", "mock", "pluto", "gnuradio"))
    hardware: typing.Any = field(default=None, metadata={"doc": "radios, radio map and hard limits", "type": _hardware_config_type})
    agent: typing.Any = field(default=None, metadata={"doc": "agent hyper-parameters", "type": _agent_config_type})
    run: RunConfig = field(default_factory=RunConfig, metadata={"doc": "output and demo length"})

    @property
    def task_ranges(self) -> TaskRanges:
        """The ranges the environment draws from (train or held-out test)."""
        return self.tasks if self.env.task_distribution == "train" else self.test_tasks


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_scalar(value, tp, where: str):
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _check_bounds(value, meta: dict, where: str):
    items = value if isinstance(value, (list, tuple)) else [value]
    if "range" in meta:
        lo, hi = meta["range"]
        for v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}: expected numbers in [{lo}, {hi}], got {value!r}")
            if not lo <= v <= hi:
                raise ConfigError(f"{where}: {v!r} is out of range; allowed [{lo}, {hi}]")
    if "choices" in meta:
        for v in items:
            if v not in meta["choices"]:
                raise ConfigError(f"{where}: {v!r} is not allowed; choose from {list(meta['choices'])}")


def _convert(value, tp, meta: dict, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], meta, where)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is tuple and typing.get_args(tp) and dataclasses.is_dataclass(typing.get_args(tp)[0]):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list of {_type_name(typing.get_args(tp)[0])} entries")
        return tuple(build(typing.get_args(tp)[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        _check_bounds(value, meta, where)
        return [float(v) if "range" in meta else v for v in value]
    value = _check_scalar(value, tp, where)
    _check_bounds(value, meta, where)
    return value


def build(cls, data, path: str = ""):
    """Validate ``data`` (a dict, or None for defaults) into the frozen dataclass ``cls``."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data):
        data = to_dict(data)
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{path or 'config'}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        where = f"{path}.{f.name}" if path else f.name
        tp = f.metadata["type"]() if "type" in f.metadata else hints[f.name]
        kwargs[f.name] = _convert(data[f.name], tp, dict(f.metadata), where)
    for f in dataclasses.fields(cls):  # late-bound section types get their defaults built
        if "type" in f.metadata and f.name not in kwargs:
            kwargs[f.name] = build(f.metadata["type"](), {}, f"{path}.{f.name}" if path else f.name)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path or 'config'}: {err}") from err
    _check_pairs(obj, path)
    return obj


def _check_pairs(obj, path: str) -> None:
    """[low, high] ranges need two numbers in order."""
    if not isinstance(obj, TaskRanges):
        return
    for f in dataclasses.fields(obj):
        lo_hi = getattr(obj, f.name)
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            raise ConfigError(f"{path}.{f.name}: expected [low, high] with low <= high, got {lo_hi!r}")


def to_dict(obj) -> dict:
    """A dataclass tree as plain YAML-safe data."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if not f.name.startswith("_")}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(obj)


def resolve_path(source: str) -> Path:
    """A preset name ('paper', 'large', ...) or a YAML path, as an existing file."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"config file {source!r} does not exist")
        return path
    preset = CONFIG_DIR / f"{source}.yaml"
    if not preset.exists():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown config preset {source!r}; presets: {names}, or give a .yaml path")
    return preset


def load_config(source=None, overrides: dict | None = None) -> Config:
    """A Config from a YAML path, a preset name, a dict, a Config or None (the paper's setup),
    with ``overrides`` (a nested dict) applied on top."""
    if isinstance(source, Config):
        data = to_dict(source)
    elif isinstance(source, dict):
        data = source
    elif source is None:
        data = {}
    else:
        with open(resolve_path(str(source))) as fh:
            data = yaml.safe_load(fh) or {}
    if overrides:
        data = _merge(data, overrides)
    return build(Config, data)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
