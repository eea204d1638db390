"""A user's callable named on the command line: ``module:callable`` or ``path/to/file.py:callable``.

One loader serves ``--model`` (a model factory) and ``--dataset`` (a data pipeline), so both
spell plug-ins the same way and fail the same way: one line naming the flag.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.errors import SpecError, users_failure, users_own


def is_plugin_name(name: str) -> bool:
    """``module:callable`` or ``file.py:callable`` (a Windows drive letter is not a module)."""
    target, _, attr = name.rpartition(":")
    return bool(target) and bool(attr) and len(target) > 1 and "/" not in attr


def load_callable(name: str, flag: str) -> Callable[..., Any]:
    """The callable ``name`` names; a ``SpecError`` naming ``flag`` when it cannot be had."""
    target, _, attr = name.rpartition(":")
    if not target or not attr:
        raise SpecError(flag, f"{name!r} is not module:callable or path/to/file.py:callable")
    if target.endswith(".py"):
        module = load_file(target, flag)
    else:
        _searched(Path.cwd())  # as ``python -m``: a module in the working folder imports, console script or not
        try:
            with in_place():
                module = importlib.import_module(target)
        except ImportError as exc:
            raise SpecError(flag, f"cannot import module {target!r}: {exc}") from None
        except BaseException as exc:  # the plug-in's own code failed at import (sys.exit() too)
            if not users_own(exc):
                raise
            raise SpecError(flag, f"importing {target!r} failed: {users_failure(exc)}") from None
    made = getattr(module, attr, None)
    if made is None:
        raise SpecError(flag, f"{target!r} has no attribute {attr!r}")
    if not callable(made):
        raise SpecError(flag, f"{target}:{attr} is not callable")
    return made


def load_file(path_text: str, flag: str):
    """A ``.py`` file as a module, once per process (under a name derived from its path, so
    DataLoader workers and data-parallel ranks that import it again find the same module)."""
    path = Path(path_text)
    if not path.is_file():
        raise SpecError(flag, f"plug-in file not found: {path}")
    key = "batchbench_plugin_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    if key in sys.modules:
        return sys.modules[key]
    _searched(path.resolve().parent)  # as ``python file.py``: the modules beside it import
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise SpecError(flag, f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        with in_place():
            spec.loader.exec_module(module)
    except BaseException as exc:  # sys.exit() at import too: one line, nothing run
        del sys.modules[key]
        if not users_own(exc):
            raise
        raise SpecError(flag, f"loading {path} failed: {users_failure(exc)}") from None
    return module


def _searched(folder: Path) -> None:
    """Put ``folder`` first on the import path, as Python does for the script it runs, unless
    it is there already: a plug-in imports its own modules whichever way batchbench started."""
    on_path = {str(Path(entry or ".").resolve()) for entry in sys.path}
    if str(folder) not in on_path:
        sys.path.insert(0, str(folder))


@contextlib.contextmanager
def in_place() -> Iterator[None]:
    """Around a user's code at plan time (its import, its factory): the working folder it may
    change is put back, so paths the command resolves after it (the store, outputs) mean
    what they meant on the command line."""
    folder = os.getcwd()
    try:
        yield
    finally:
        if os.getcwd() != folder:
            os.chdir(folder)
