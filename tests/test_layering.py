"""The package arrows of docs/architecture.md, checked on every import statement (module level,
inside functions and under TYPE_CHECKING alike): sim imports nothing of the project, hardware
only sim, agents nothing of the project, the real drivers no emulator, and testbed's modules
import each other one way (no cycle)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "hardware", "agents", "testbed")
ALLOWED = {"sim": {"sim"}, "hardware": {"hardware", "sim"}, "agents": {"agents"}}
STANDALONE = {"hardware/gnuradio_bridge/flowgraph.py"}   # runs under the system Python: imports nothing of ours


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every project module a file imports, as dotted names."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in PACKAGES}


def test_the_walker_sees_imports_inside_functions(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from testbed.config import load_config\n    import sim.units\n")
    assert _imports(src) == {"testbed.config", "testbed.config.load_config", "sim.units"}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package):
    bad = {f"{_name(p)} imports {m}" for p in _modules(package) for m in _imports(p)
           if m.split(".")[0] not in ALLOWED[package]}
    assert not bad, sorted(bad)


def test_real_drivers_import_no_emulator():
    bad = {f"{_name(p)} imports {m}" for p in _modules("hardware/drivers") for m in _imports(p)
           if m.startswith("hardware.emulated")}
    assert not bad, sorted(bad)


def test_the_flowgraph_imports_nothing_of_the_project():
    for rel in STANDALONE:
        assert not _imports(ROOT / rel), rel


def _testbed_graph() -> dict[str, set[str]]:
    """testbed module -> the testbed modules it imports (``from testbed import x`` counts as x)."""
    modules = {_name(p): p for p in _modules("testbed")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for m in _imports(path):
            for cand in (m, m.rsplit(".", 1)[0]):
                if cand in modules and cand not in (name, "testbed"):
                    targets.add(cand)
                    break
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None."""
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_testbed_modules_import_each_other_one_way():
    cycle = _cycle(_testbed_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
