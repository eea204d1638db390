"""The architecture as tests: imports flow one way (spec -> plan -> run -> records -> store ->
report), imports inside functions included; one job a file, so none grows past 400 lines."""

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "harness"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """Every harness module ``name`` imports, at the top or inside a function."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import submodule`` depends on the submodule; ``from mod import name`` on mod
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names]
        else:
            continue
        # a package's own __init__ runs before any of its modules: not an import of the module
        found |= {t for t in targets if t in MODULES and t != name and not name.startswith(t + ".")}
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            if nxt == goal:
                return True
            seen.add(nxt)
            todo.append(nxt)
    return False


def test_no_import_cycle():
    cycles = [(a, b) for a in GRAPH for b in GRAPH[a] if _reaches(b, a)]
    assert not cycles, cycles


def test_no_module_over_400_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 400}
    assert not long


@pytest.mark.parametrize("package,forbidden", [
    ("harness.run", ("harness.drivers.sweep", "harness.store.sqlite", "harness.parallel.launch", "harness.report", "harness.cli", "harness.drivers.plan")),
    ("harness.spec", ("harness.drivers.plan", "harness.run", "harness.drivers.sweep", "harness.store.sqlite", "harness.workload.datasets", "harness.workload.models")),
    ("harness.analysis", ("harness.run", "harness.drivers.plan", "harness.drivers.sweep", "harness.store.sqlite", "harness.report", "harness.parallel")),
    ("harness.report", ("harness.run", "harness.drivers.plan", "harness.drivers.sweep", "harness.parallel", "harness.workload.models", "harness.workload.datasets")),
    ("harness.store.schema", ("harness.run", "harness.store.sqlite", "harness.report", "harness.drivers.sweep")),
])
def test_nothing_imports_back_up_the_flow(package, forbidden):
    for name in (n for n in MODULES if n == package or n.startswith(package + ".")):
        back = {m for m in GRAPH[name] if any(m == f or m.startswith(f + ".") for f in forbidden)}
        assert not back, (name, back)


def test_the_run_package_starts_no_process():
    for name in (n for n in MODULES if n.startswith("harness.run")):
        text = MODULES[name].read_text()
        assert "subprocess" not in text and "torch.distributed.run" not in text, name
