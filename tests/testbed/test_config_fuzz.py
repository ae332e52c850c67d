"""Fuzz (seeded, bounded): the shipped configs (configs/*.yaml) mutated field by field, every field
of the schema with values of every type, whole documents of every shape and bytes flipped in the
files. Each load either succeeds or raises ConfigError with a one-line message; nothing else, and
a config that loads passes the Pluto driver's own range check."""
from __future__ import annotations

import copy
import dataclasses
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware.drivers.pluto import check_pluto_settings
from testbed.config import CONFIG_DIR, MAX_CONFIG_BYTES, Config, ConfigError, load_config, to_dict

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(CONFIG_DIR.glob("*.yaml"))}
RESOLVED = {name: to_dict(load_config(name)) for name in SHIPPED}
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def schema_paths(cls, prefix: tuple = ()):
    """(path, metadata) of every field under ``cls``, sections included; list entries as index 0."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = f.metadata["type"]() if "type" in f.metadata else hints[f.name]
        path = prefix + (f.name,)
        yield path, dict(f.metadata)
        args = typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            yield from schema_paths(tp, path)
        elif typing.get_origin(tp) is tuple and args and dataclasses.is_dataclass(args[0]):
            yield from schema_paths(args[0], path + (0,))


PATHS = list(schema_paths(Config))

# one value of every type and shape, and the numbers a parser or a float() chokes on
EVERY_TYPE = [None, True, 0, -1, 2**63, 10**400, -1e308, 5e-324, math.nan, math.inf, -math.inf, "", "x", "3e-4",
              "cuda:7", "a\nb", "a" * 5000, [], [None], [1, "a"], [[1, 2]], [math.nan, 1.0], [1.0, 2.0, 3.0], {},
              {"name": "x"}, {1: 2, "a": 3}, [{"name": "x"}]]


def edges(meta: dict) -> list:
    """The field's range edges, just outside them and an off-grid value inside; its choices and near misses."""
    out = []
    if "range" in meta:
        lo, hi = meta["range"]
        out += [lo, hi, lo - 1, hi + 1, hi * 10, lo + (hi - lo) * 0.37, [lo, hi], [hi, lo], [lo, lo, hi]]
    if "choices" in meta:
        out += list(meta["choices"]) + [list(meta["choices"]), [f"{c}x" for c in meta["choices"]]]
    return out


def values(meta: dict):
    """Random values of every type, the fixed ones above and the field's edges."""
    scalars = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                        st.booleans(), st.none())
    return st.one_of(st.sampled_from(EVERY_TYPE + edges(meta)), scalars, st.lists(scalars, max_size=4),
                     st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), scalars, max_size=3))


def mutate(name: str, path: tuple, value) -> dict:
    """The shipped config ``name`` with the field at ``path`` set to ``value`` (sections the file
    leaves out are filled in from its resolved form, so every path exists)."""
    data = copy.deepcopy(SHIPPED[name])
    node, full = data, RESOLVED[name]
    for key in path[:-1]:
        full = full[key]
        if isinstance(node, dict) and key not in node:
            node[key] = copy.deepcopy(full)
        node = node[key]
    node[path[-1]] = value
    return data


def load_or_fail_on_one_line(source):
    """The config, or None where it raised ConfigError with a one-line message; any other
    exception fails the test."""
    try:
        config = load_config(source)
    except ConfigError as err:
        message = str(err)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return None
    if any(r.driver == "pluto" for r in config.hardware.radios):
        check_pluto_settings(config.hardware.settings())      # no Pluto refuses it at configure time
    return config


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "config.yaml"


@pytest.mark.parametrize("index", range(len(PATHS)), ids=[".".join(map(str, p)) for p, _ in PATHS])
def test_every_field_with_every_type_loads_or_fails_on_one_line(index):
    path, meta = PATHS[index]
    names = sorted(SHIPPED)
    for i, value in enumerate(EVERY_TYPE + edges(meta)):
        targets = {names[(index + i) % len(names)]} | ({"bench_pluto"} if path[0] == "hardware" else set())
        for name in sorted(targets):
            load_or_fail_on_one_line(mutate(name, path, value))


@FUZZ
@given(data=st.data())
def test_random_fields_with_random_values_through_yaml(config_file, data):
    path, meta = data.draw(st.sampled_from(PATHS), label="field")
    name = data.draw(st.sampled_from(sorted(SHIPPED)), label="config")
    value = data.draw(values(meta), label="value")
    config_file.write_text(yaml.dump(mutate(name, path, value), Dumper=yaml.CSafeDumper, allow_unicode=True))
    load_or_fail_on_one_line(config_file)


TOKENS = [b"!!float ", b"!!int ", b"!!bool ", b"!!map ", b"!!set ", b"!!timestamp ", b"!!binary ", b"!!python/name:os ",
          b"\t", b"&a ", b"*a", b"*b", b"{", b"[", b"}", b"]", b": ", b"- ", b"? ", b"<<: ", b"---\n", b"\xff", b"\x00"]


@FUZZ
@given(name=st.sampled_from(sorted(SHIPPED)), edits=st.lists(
    st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 8),
              st.one_of(st.binary(max_size=8), st.sampled_from(TOKENS))), min_size=1, max_size=4))
def test_bytes_flipped_in_a_shipped_file_load_or_fail_on_one_line(config_file, name, edits):
    raw = bytearray((CONFIG_DIR / f"{name}.yaml").read_bytes())
    for where, cut, new in edits:
        at = int(where * len(raw))
        raw[at:at + cut] = new
    config_file.write_bytes(bytes(raw))
    load_or_fail_on_one_line(config_file)


DOCUMENTS = {
    "list": b"- network\n- env\n",
    "scalar": b"3\n",
    "string": b"paper\n",
    "empty": b"",
    "false": b"false\n",
    "null": b"null\n",
    "tabs": b"network:\n\tnum_bs: 3\n",
    "bad bytes": b"network:\n  num_bs: \xc3\x28\n",
    "utf-16": "network: {}\n".encode("utf-16"),
    "duplicate keys": b"env:\n  seed: 1\nenv:\n  seed: 2\n",
    "mixed keys": b"1: a\nnetwork: {}\n",
    "unhashable key": b"? [1, 2]\n: x\n",
    "unclosed": b"network: {num_bs: 3\n",
    "two documents": b"network: {}\n--- \nenv: {}\n",
    "recursive alias": b"run: &r\n  policies: [*r]\n",
    "undefined alias": b"network: *n\n",
    "float tag on a word": b"network: {step_s: !!float fast}\n",
    "timestamp tag on a bad date": b"run: {out_dir: !!timestamp 2020-13-45}\n",
    "mapping tag on a list": b"env: !!map [1]\n",
    "python tag": b"run: !!python/object/apply:os.system [ls]\n",
    "deep nesting": b"network: " + b"[" * 20_000 + b"]" * 20_000 + b"\n",
    "2 MB": b"network:\n" + b"  # padding\n" * (2 * MAX_CONFIG_BYTES // 12),
}


@pytest.mark.parametrize("content", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_every_document_shape_fails_with_one_line(config_file, content):
    config_file.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_config(config_file)
    assert "\n" not in str(err.value)


def test_the_cli_prints_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "BAD.yaml"
    bad.write_text("network:\n\tnum_bs: 3\n")
    out = subprocess.run([sys.executable, "-m", "testbed.cli", "demo", "--config", str(bad)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: ") and "line 2, column 1" in lines[0]
