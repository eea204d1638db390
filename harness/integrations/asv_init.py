"""``batchbench asv init [SPEC.toml]``: set up asv in the user's git repository so that
``asv run`` / ``asv continuous`` / ``asv publish`` track their training step across commits.

Writes (never over an existing file unless ``--force``):

- ``asv.conf.json``: a virtualenv per Python, with nothing resolved from an index: building a
  commit copies its checkout, installing it writes one ``.pth`` (``asv_env``) that shows the
  environment this Python's packages (torch, batchbench, ...). The path of this Python is
  written into the commands, so ``asv init`` is run again after moving the venv.
- ``benchmarks/batchbench_training.py``: a subclass of ``asv_suite.TrainingSuite`` naming the
  spec; ``benchmarks/__init__.py`` if there is none.
- ``batchbench.toml`` when no spec is given and none exists: a starting spec to edit.

The spec is checked (parsed and planned, the model's output shape included) before anything is
written, so a broken one is one line and exit 2, as with ``batchbench run``; its points become
the suite's parameter sets, written as literals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SpecError, StoreError
from harness.outputs import Keep, output_path, write_output

SUITE = "benchmarks/batchbench_training.py"
DEFAULT_SPEC = "batchbench.toml"

STARTER_SPEC = '''\
# What `asv run` tracks for this repository: a batchbench spec (the keys are `batchbench run`
# flags; see `batchbench run --help`). Paths are relative to the repository root and are read
# from the commit being benchmarked.
model = "mlp"                # your model: "path/to/file.py:callable" or "package.module:callable"
dataset = "digits"           # or a .npz / .csv / .parquet file in the repository
dataset-sizes = [1797]
batch-sizes = [32, 256]
devices = ["cpu"]            # pin devices: a history mixes nothing else
steps = 300
'''

SUITE_TEXT = '''\
"""Training-step benchmarks of this repository, written by `batchbench asv init`.

Every point of the spec below is one asv parameter set; one batchbench run per commit
(setup_cache) feeds every track_ metric: phase medians (data, derivative, update, loss check),
time per sample, steps and training time to the target, peak memory. Each is a cost, so a
rise is what asv flags as a regression. The spec is read from this working tree; the model and
data files it names come from the commit being benchmarked.
Edit the spec to change what is tracked, then run `batchbench asv init --force` (also after
moving Python).
"""

from pathlib import Path

from harness.integrations import asv_suite  # the module, not the class: asv would collect that too

ROOT = Path(__file__).resolve().parents[1]


class TrainingStep(asv_suite.TrainingSuite):
    spec_file = str(ROOT / {spec!r})
    root = str(ROOT)
    # The spec's points as of `batchbench asv init` (literals, so that asv's many short
    # processes import nothing heavy): run it again with --force after changing their axes.
    param_names = {names!r}
    params = {params!r}
'''


@dataclass(frozen=True)
class Written:
    path: Path
    created: bool  # False: it was there already and kept


def asv_config(project: str, branch: str, python: str) -> dict:
    env = f"{python} -m harness.integrations.asv_env"
    return {
        "version": 1,
        "project": project,
        "repo": ".",
        "branches": [branch],
        "dvcs": "git",
        "environment_type": "virtualenv",
        "pythons": [f"{sys.version_info.major}.{sys.version_info.minor}"],
        "matrix": {},
        "build_command": [f"{env} build {{build_dir}} {{build_cache_dir}}"],
        "install_command": [f"{env} install {{env_dir}} {{build_cache_dir}}"],
        "uninstall_command": [f"return-code=any {env} uninstall {{env_dir}}"],
        "benchmark_dir": "benchmarks",
        "env_dir": ".asv/env",
        "results_dir": ".asv/results",
        "html_dir": ".asv/html",
    }


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def init(root: Path, spec: str | None, *, force: bool = False) -> list[Written]:
    """Write the files into ``root`` (a git repository's top folder) and return what was
    written or kept. The spec is planned first (every input check of ``batchbench run``),
    in the repository's top folder, where asv will resolve its paths."""
    from harness.integrations.asv_suite import parameters

    root = root.resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    if not top:
        raise SpecError("asv init", f"{root} is not in a git repository: asv benchmarks commits, so run it in one (git init; git commit)")
    if Path(top).resolve() != root:
        raise SpecError("asv init", f"run it at the repository's top folder, {top}: asv.conf.json and benchmarks/ belong there")
    out: list[Written] = []
    if spec is None:
        spec_path = root / DEFAULT_SPEC
        if not spec_path.exists():
            write_output(_inside(root, spec_path, ()), STARTER_SPEC, "asv init")
            out.append(Written(spec_path, True))
    else:
        spec_path = Path(spec).resolve()
        if not spec_path.is_file():
            raise SpecError("SPEC", f"no spec file at {spec}")
        if root not in spec_path.parents:
            raise SpecError("SPEC", f"{spec} is outside the repository; asv reads it from the working tree, so keep it under {root}")
    params, names = parameters(str(spec_path), str(root))
    relative = spec_path.relative_to(root).as_posix()
    branch = _git(root, "symbolic-ref", "--short", "HEAD") or "main"
    files = {
        root / "asv.conf.json": json.dumps(asv_config(root.name, branch, sys.executable), indent=4) + "\n",
        root / SUITE: SUITE_TEXT.format(spec=relative, names=names, params=params),
        root / "benchmarks" / "__init__.py": "",
    }
    todo = {path: text for path, text in files.items() if not (path.exists() and (not force or path.name == "__init__.py"))}
    inputs = [(spec_path, "the spec file"), *_spec_sources(spec_path, root)]
    for path in todo:  # every file checked before any is written
        _inside(root, path, [*inputs, *((other, f"{other.relative_to(root)}, which asv init writes too") for other in files if other != path)])
    for path, text in todo.items():
        write_output(path, text, "asv init")
    out.extend(Written(path, path in todo) for path in files)
    return out


def _inside(root: Path, path: Path, keep: Keep) -> Path:
    """``path`` if asv init may write it: it leads (through any link) to a file in the
    repository, and it is none of ``keep`` (the spec, the files it names, the other files
    written) nor anything else an output may never be (``harness.outputs``)."""
    real = Path(os.path.realpath(path))
    if root not in real.parents:
        raise StoreError("asv init", f"{path.relative_to(root)} is a link to {real}, outside the repository; asv init writes only in {root}: "
                                     "remove the link or point it inside")
    return output_path(path, "asv init", keep, example=path.name)


def _spec_sources(spec_path: Path, root: Path) -> list[tuple[Path, str]]:
    """The model and data files the spec names in the repository (``net.py:make``, ``data.csv``)."""
    from harness.config.spec import load_toml

    found = []
    for key, value in load_toml(spec_path).items():
        if key in ("model", "dataset") and isinstance(value, str):
            name = value.rpartition(":")[0] if ":" in value and not (root / value).exists() else value
            if name and (root / name).is_file():
                found.append((root / name, f"the {key} file of the spec"))
    return found
