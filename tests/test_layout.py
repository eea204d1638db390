"""The architecture as tests: imports flow one way (config -> workload -> run -> store -> parallel
-> analysis -> report -> drivers -> api -> integrations -> commands -> cli), imports inside
functions and package re-exports included; no function longer than 60 lines or taking more than 8 parameters; ruff's size and
complexity rules (pyproject.toml) hold."""

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
        found |= {t for t in targets if t in MODULES and t != name}
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


def _functions():
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs) - (1 if args.args and args.args[0].arg in ("self", "cls") else 0)
                yield f"{name}.{node.name}", node.end_lineno - node.lineno + 1, count


def test_no_function_over_60_lines_or_8_parameters():
    """A function a reader can hold: at most 60 lines and 8 parameters (``**options`` aside)."""
    big = [(name, lines, params) for name, lines, params in _functions() if lines > 60 or params > 8]
    assert not big, big


def test_ruff_finds_nothing():
    """Pyflakes and the size and complexity rules of pyproject.toml (max 12 branches' complexity,
    15 branches, 50 statements, 8 arguments)."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install 'batchbench[test]')")
    proc = subprocess.run([ruff, "check", "--no-cache", "harness", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


LAYERS = {
    "harness.measures": ("harness.config", "harness.workload", "harness.run", "harness.store", "harness.analysis", "harness.report",
                         "harness.drivers", "harness.parallel", "harness.commands", "harness.cli", "harness.api", "harness.integrations"),
    "harness.config": ("harness.workload", "harness.run", "harness.store", "harness.analysis", "harness.report", "harness.drivers",
                       "harness.parallel", "harness.commands", "harness.cli", "harness.api", "harness.integrations"),
    "harness.workload": ("harness.run", "harness.store", "harness.analysis", "harness.report", "harness.drivers", "harness.parallel",
                         "harness.commands", "harness.cli", "harness.api", "harness.integrations"),
    "harness.run": ("harness.analysis", "harness.drivers", "harness.store.sqlite", "harness.store.merge", "harness.store.logs", "harness.parallel", "harness.report",
                    "harness.commands", "harness.cli", "harness.api", "harness.integrations"),
    "harness.store": ("harness.run", "harness.drivers", "harness.report", "harness.commands", "harness.workload", "harness.analysis",
                      "harness.parallel", "harness.cli", "harness.api", "harness.integrations"),
    "harness.parallel": ("harness.analysis", "harness.report", "harness.drivers", "harness.commands", "harness.cli", "harness.api",
                         "harness.integrations"),
    "harness.analysis": ("harness.run", "harness.drivers", "harness.store.sqlite", "harness.report", "harness.parallel", "harness.workload",
                         "harness.commands", "harness.cli", "harness.api", "harness.integrations"),
    "harness.report": ("harness.run", "harness.drivers", "harness.parallel", "harness.workload", "harness.commands", "harness.cli",
                       "harness.api", "harness.integrations"),
    "harness.drivers": ("harness.commands", "harness.cli", "harness.report", "harness.api", "harness.integrations"),
    "harness.api": ("harness.commands", "harness.cli", "harness.integrations"),
    "harness.ramp": ("harness.drivers", "harness.report", "harness.parallel", "harness.store.sqlite", "harness.api", "harness.integrations",
                     "harness.commands", "harness.cli"),
    "harness.integrations": ("harness.commands", "harness.cli"),
    "harness.commands": ("harness.cli",),
}
"""What each layer may not import: nothing imports back up the flow."""


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_nothing_imports_back_up_the_flow(package):
    forbidden = LAYERS[package]
    for name in (n for n in MODULES if n == package or n.startswith(package + ".")):
        back = {m for m in GRAPH[name] if any(m == f or m.startswith(f + ".") for f in forbidden)}
        assert not back, (name, back)


def test_the_run_package_starts_no_process():
    for name in (n for n in MODULES if n.startswith("harness.run")):
        text = MODULES[name].read_text()
        assert "subprocess" not in text and "torch.distributed.run" not in text, name


STATUS_WORDS = "ok|oom|diverged|error|skipped|pruned|interrupted|lost"


def test_statuses_are_compared_only_through_the_status_type():
    """A status is a ``store.schema.Status``; a literal compared against one outside that module
    (``status == "ok"``, an SQL ``status = 'interrupted'``) would miss a renamed or added status."""
    import re

    literal = re.compile(rf"""(?:status["']?\]?\)?\s*(?:==|!=|IS NOT|=)\s*["']({STATUS_WORDS})["'])|(?:isin\(\(["']({STATUS_WORDS})["'])""")
    found = []
    for path in (ROOT / "harness").rglob("*.py"):
        if path.name == "schema.py" and path.parent.name == "store":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if literal.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)

