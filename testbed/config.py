"""Experiment configuration: YAML into validated frozen dataclasses.

Every field declares its allowed range or choices in its dataclass metadata; ``build``
checks types, ranges and unknown keys and raises ``ConfigError`` naming the dotted field path
and what is allowed, before anything runs (and so before any radio transmits). Everything that
loading a config can raise is a ``ConfigError`` with a one-line message: unreadable or malformed
YAML, duplicate keys, values of any shape, and sizes that would exhaust memory.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from sim.network import observation_layout
from sim.params import NetworkParams, TaskRanges, check_task_tables, held_out_task_ranges, param, table_shape

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
MAX_CONFIG_BYTES = 1_000_000     # largest config file read, bytes
MAX_TENSOR_VALUES = 2**27        # largest tensor a config may make the testbed allocate (512 MiB of float32)


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


_repr = reprlib.Repr()           # values in messages: short and on one line
_repr.maxstring = _repr.maxother = 60


def _show(value) -> str:
    return _repr.repr(value)


def check_device(name: str) -> None:
    """Raise ValueError unless torch can run on ``name`` here: cpu, cuda, cuda:N (N < device count), mps."""
    count = torch.cuda.device_count()
    allowed = ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if count else [])
    if torch.backends.mps.is_available():
        allowed.append("mps")
    if name not in allowed:
        raise ValueError(f"{_show(name)} is not a torch device on this machine; allowed: {allowed}")


@dataclass(frozen=True)
class EnvConfig:
    """How the environment batches and draws tasks."""

    num_envs: int = param(1, "parallel networks N stepped together", (1, 1_000_000))
    seed: int = param(0, "seed of every random draw", (0, 2**63 - 1))
    device: str = field(default="cpu", metadata={"doc": "torch device of the simulator (cpu, cuda, cuda:1, ...)",
                                                 "check": check_device})
    episodes_per_task: int = param(1, "episodes played on one task before a new one is drawn (RL² trials)", (1, 10_000))
    task_distribution: str = param("train", "which task ranges episodes draw from", choices=("train", "test"))
    task_seed: typing.Optional[int] = param(None, "if set, every episode uses the one task drawn from this seed", (0, 2**63 - 1))
    task_set: str = param("stream", "stream: tasks drawn from env.seed as episodes go; evaluation: the fixed "
                          "evaluation set of the distribution (evaluation.seed, one task per lane, never redrawn)",
                          choices=("stream", "evaluation"))
    compile: bool = param(False, "backend sim: run the step and the observation through torch.compile (the "
                          "first step compiles, some seconds; pays at N = 1, see docs/benchmarks.md)")

    def __post_init__(self):
        if self.task_set == "evaluation" and self.task_seed is not None:
            raise ValueError("task_set: evaluation plays the fixed evaluation set; it cannot also use task_seed")


@dataclass(frozen=True)
class EvaluationConfig:
    """The evaluation protocol of `testbed evaluate` and `testbed reproduce`: per distribution a fixed
    set of tasks, one per env lane, that every agent and reference policy plays with the same draws."""

    num_tasks: int = param(16, "evaluation tasks per distribution (one per env lane)", (1, 1_000_000))
    episodes: int = param(5, "episodes on each evaluation task (the recurrent agents keep their memory across "
                          "them)", (1, 10_000))
    seed: int = param(0, "seed of the evaluation tasks and their draws; apart from env.seed, so the set does not "
                      "change with the training seed", (0, 2**63 - 1))


@dataclass(frozen=True)
class RunConfig:
    """Where runs go and how long the demo is."""

    out_dir: str = param("runs", "folder that receives one sub-folder per run")
    episodes: int = param(5, "episodes per reference policy in `testbed demo`", (1, 100_000))
    policies: list = param(["random", "max_power", "greedy", "oracle", "switch_off"],
                           "reference policies the demo, evaluate and reproduce run",
                           choices=("random", "max_power", "greedy", "oracle", "switch_off"))


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
    backend: str = param("sim", "network backend (replay: a recording made by `hardware.record`, see "
                         "`hardware.replay`)", choices=("sim", "mock", "pluto", "gnuradio", "replay"))
    hardware: typing.Any = field(default=None, metadata={"doc": "radios, radio map and hard limits", "type": _hardware_config_type})
    agent: typing.Any = field(default=None, metadata={"doc": "agent hyper-parameters", "type": _agent_config_type})
    run: RunConfig = field(default_factory=RunConfig, metadata={"doc": "output and demo length"})
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig,
                                         metadata={"doc": "the fixed evaluation tasks of evaluate and reproduce"})

    def __post_init__(self):
        if self.env.compile and self.backend != "sim":
            raise ValueError(f"env.compile: only the simulator's step compiles; backend is {self.backend!r}")
        if self.env.task_set == "evaluation" and self.env.num_envs != self.evaluation.num_tasks:
            raise ValueError(f"env.task_set: evaluation plays one evaluation task per lane: env.num_envs "
                             f"({self.env.num_envs}) must equal evaluation.num_tasks ({self.evaluation.num_tasks})")
        for section in ("tasks", "test_tasks"):
            try:
                check_task_tables(self.network, getattr(self, section))
            except ValueError as err:
                raise ValueError(f"{section}.{err}") from None

    @property
    def task_ranges(self) -> TaskRanges:
        """The ranges the environment draws from (train or held-out test)."""
        return self.tasks if self.env.task_distribution == "train" else self.test_tasks


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


_type_hints = functools.cache(typing.get_type_hints)   # per dataclass: resolving them is most of a load's time


def _check_type(value, tp, where: str) -> None:
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {_show(value)}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
    if tp is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{where}: expected a number, got {_show(value)}")
    if tp is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {_show(value)}")


def _check_bounds(value, meta: dict, where: str):
    items = value if isinstance(value, (list, tuple)) else [value]
    if "range" in meta:
        lo, hi = meta["range"]
        for v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}: expected numbers in [{lo}, {hi}], got {_show(value)}")
            if not lo <= v <= hi:
                raise ConfigError(f"{where}: {_show(v)} is out of range; allowed [{lo}, {hi}]")
    if "choices" in meta:
        for v in items:
            if v not in meta["choices"]:
                raise ConfigError(f"{where}: {_show(v)} is not allowed; choose from {list(meta['choices'])}")


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
    if "table" in meta and isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        return _table(value, meta, where)
    if tp in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)) or any(isinstance(v, (list, tuple, dict)) for v in value):
            raise ConfigError(f"{where}: expected a flat list, got {_show(value)}")
        _check_bounds(value, meta, where)
        return [float(v) if "range" in meta else v for v in value]
    _check_type(value, tp, where)
    _check_bounds(value, meta, where)
    if "check" in meta:
        try:
            meta["check"](value)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    return float(value) if tp is float else value      # in range, so it fits a float


def _table(value, meta: dict, where: str) -> list:
    """A task range given as a table of [low, high] (rows of pairs): numbers in range, as floats."""
    rows = []
    for i, row in enumerate(value):
        if not isinstance(row, (list, tuple)) or any(not isinstance(v, (list, tuple)) for v in row):
            raise ConfigError(f"{where}: expected [low, high] or a table of [low, high] rows; row {i} is {_show(row)}")
        rows.append([_convert(pair, list, meta, f"{where}[{i}]") for pair in row])
    return rows


def build(cls, data, path: str = ""):
    """Validate ``data`` (a dict, or None for defaults) into the frozen dataclass ``cls``."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data):
        data = to_dict(data)
    where = path or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_show(data)}")
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be strings (field names), got {_show(key)}")
    hints = _type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {_show(unknown)}; allowed: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        at = f"{path}.{f.name}" if path else f.name
        tp = f.metadata["type"]() if "type" in f.metadata else hints[f.name]
        kwargs[f.name] = _convert(data[f.name], tp, dict(f.metadata), at)
    for f in dataclasses.fields(cls):  # late-bound section types get their defaults built
        if "type" in f.metadata and f.name not in kwargs:
            kwargs[f.name] = build(f.metadata["type"](), {}, f"{path}.{f.name}" if path else f.name)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err
    _check_pairs(obj, path)
    return obj


def _check_pairs(obj, path: str) -> None:
    """[low, high] ranges need two numbers in order."""
    if not isinstance(obj, TaskRanges):
        return
    for f in dataclasses.fields(obj):
        lo_hi = getattr(obj, f.name)
        if table_shape(lo_hi) is not None:       # each entry checked by TaskRanges itself
            continue
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


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """``yaml.safe_load``'s loader (libyaml's where installed) that refuses duplicate keys, reads
    exponent numbers without a dot or exponent sign (``3e-4``, ``1e6``) as floats, as YAML 1.2 does,
    and reports a value its explicit tag cannot construct (``!!float abc``) as a YAML error."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise yaml.constructor.ConstructorError(None, None, f"cannot read {_show(node.value)} as {node.tag}",
                                                    node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:     # unhashable: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        f"found duplicate key {_show(key)}", key_node.start_mark)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
                              list("-+0123456789."))


def read_value(text: str):
    """One YAML scalar or flow value as a config file reads it (``3e-4`` is a float); ConfigError,
    one line, for text that is not one."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError(f"not a YAML value: {text!r} ({problem})") from None


def _yaml_error(path: Path, text: str, err: yaml.YAMLError) -> ConfigError:
    """A YAML error as one line with the line and column it points at."""
    mark = getattr(err, "problem_mark", None)
    if mark is None:
        return ConfigError(f"{path}: invalid YAML: {' '.join(str(err).split())}")
    what = ", ".join(x for x in (getattr(err, "context", None), err.problem) if x)
    lines = text.splitlines()
    if mark.line < len(lines) and "\t" in lines[mark.line]:
        what += " (YAML indents with spaces; this line has a tab)"
    return ConfigError(f"{path}: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}")


def read_yaml(path: Path) -> dict:
    """The mapping a config file holds; ConfigError for anything else (too large, not UTF-8, bad YAML)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: a config file may hold at most {MAX_CONFIG_BYTES:,} bytes; this one is larger")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start} is {raw[err.start:err.start + 1]!r})") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise _yaml_error(path, text, err) from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    if data is None:
        raise ConfigError(f"{path}: the config file is empty; give its sections (network:, env:, ...) "
                          "or {} for the defaults")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (network:, env:, ...), got {_show(data)}")
    return data


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
        data = read_yaml(resolve_path(str(source)))
    if overrides:
        data = _merge(data, overrides)
    config = build(Config, data)
    check_sizes(config)
    return config


def _merge(base: dict, extra: dict, path: str = "") -> dict:
    out = dict(base)
    for key, value in extra.items():
        at = f"{path}.{key}" if path else key
        old = out.get(key)
        if isinstance(value, dict) and old is not None and not isinstance(old, dict):
            raise ConfigError(f"{at}: expected a mapping, got {_show(old)}")
        out[key] = _merge(old or {}, value, at) if isinstance(value, dict) else value
    return out


def observation_size(p: NetworkParams) -> int:
    """Values in one env's observation (``sim.network.observation_layout``)."""
    return list(observation_layout(p).values())[-1].stop


def check_sizes(config: Config) -> None:
    """Raise ConfigError if a tensor the config makes the testbed allocate would hold more than
    MAX_TENSOR_VALUES values: the simulator's step, the policies' input layers, the agents' rollout
    storage and the candidate powers of the greedy, oracle and switch-off reference policies."""
    p, a, n = config.network, config.agent, config.env.num_envs
    b, u, k, levels, t = p.num_bs, p.num_ue, p.num_bands, p.num_levels, p.episode_steps
    obs = observation_size(p)
    rnn_in = obs + b * k * levels + 3            # the recurrent policy's input (obs, one-hot action, r, done, step)
    sizes = [
        ("the step's link tensors", "env.num_envs·B·K·(B+U)", n * b * k * (b + u), ""),
        ("the MLP policy's input layer", "agent.hidden_size·obs", a.hidden_size * obs, ""),
        ("the recurrent policy's input layer", "3·agent.recurrent.hidden_size·(obs+B·K·L+3)",
         3 * a.recurrent.hidden_size * rnn_in, ""),
        ("the PPO/MAML rollout storage",
         "network.episode_steps·max(agent.ppo.rollout_episodes, agent.maml.support_episodes, "
         "agent.maml.query_episodes)·env.num_envs·obs",
         t * max(a.ppo.rollout_episodes, a.maml.support_episodes, a.maml.query_episodes) * n * obs, ""),
        ("the RL² rollout storage", "network.episode_steps·env.num_envs·(obs+B·K·L+3)", t * n * rnn_in, ""),
    ]
    for name, formula, value in (("greedy", "L·env.num_envs·B²·K", levels * n * b * b * k),
                                 ("oracle", "L^B·env.num_envs·B²·K", levels ** b * n * b * b * k),
                                 ("switch_off", "L^B·env.num_envs·B²·K", levels ** b * n * b * b * k)):
        if name in config.run.policies:
            sizes.append((f"the {name} policy's candidates", formula, value, f", or drop {name} from run.policies"))
    for what, formula, value, hint in sizes:
        if value > MAX_TENSOR_VALUES:
            raise ConfigError(f"sizes: {what} would hold {formula} = {value:,} values, over the limit of "
                              f"{MAX_TENSOR_VALUES:,} per tensor (B=network.num_bs={b}, U=num_ue={u}, "
                              f"K=num_bands={k}, L=num_levels={levels}, observation size obs={obs}); "
                              f"lower these fields{hint}")


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
