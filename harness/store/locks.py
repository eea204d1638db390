"""The sweep lock: which process may write a sweep into a store (``Store.sweep_lock``). A new
run shares it with other new runs; a ``--resume`` holds it alone. An advisory ``lockf`` lock on
a byte of ``.NAME.lock`` beside the store, released by the kernel if its holder dies, the file
removed by its last holder."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from harness.errors import StoreError


@contextlib.contextmanager
def sweep_lock(path: Path, spec_hash: str, *, resume: bool = True, field: str = "--store") -> Iterator[None]:
    """Held while a process writes a sweep: a ``--resume`` holds it alone, a new run shares
    it with other new runs (each writes its own run). So a ``--resume`` while the same sweep
    runs, or a run while it resumes, is refused in one line instead of training points
    twice (and failing on the second commit). An advisory lock on a byte of
    a lock file beside the store (``lock_path``: every process that writes the store finds it,
    whatever its temporary folder or node, and a symbolic link to the store shares it),
    released by the kernel if the process dies; other sweeps go on. The last holder to let go
    removes the lock file (``_let_go``)."""
    lock = lock_path(path)
    handle = _take_lock(lock, int(spec_hash[:7], 16), exclusive=resume, field=field)
    if handle is None:
        doing = "already running" if resume else "resuming"
        raise StoreError("--resume" if resume else "--store", f"another batchbench process is {doing} this sweep into {path}; "
                         "wait for it to finish (then --resume finds what it stored)")
    try:
        yield
    finally:
        _let_go(handle, lock)


def lock_path(path: str | Path) -> Path:
    """The sweep lock file of the store at ``path``: ``.NAME.lock`` beside the file it resolves to."""
    real = Path(os.path.realpath(path))
    return real.with_name(f".{real.name}.lock")

LOCK_PATIENCE_S = 1.0
"""How long a lock is tried again before another holder is believed: long enough for one that
lets go to remove the file (``_let_go`` holds the whole file for that moment)."""

def _take_lock(lock_path: Path, offset: int, *, exclusive: bool, field: str = "--store") -> Any:
    """The open lock file with its byte ``offset`` locked, or None if another process holds it.
    A lock taken on a file that a holder letting go removed meanwhile is taken again on the
    file now at ``lock_path`` (a lock on a removed file excludes no one)."""
    import fcntl
    import time

    deadline = time.monotonic() + LOCK_PATIENCE_S
    while True:
        try:
            handle = open(lock_path, "a+b")
        except OSError as exc:  # a folder this process may write the store in but not create files in, say
            raise StoreError(field, f"cannot open the sweep lock file {lock_path}: {exc.strerror or exc}") from None
        try:
            fcntl.lockf(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB, 1, offset)
        except OSError:
            handle.close()
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
            continue
        if _same_file(handle, lock_path):
            return handle
        handle.close()

def _let_go(handle: Any, lock_path: Path) -> None:
    """Release the lock, removing the lock file if no other process holds any lock in it: only
    while holding the whole file, so no one can lock it between the test and the removal (one
    that opened it before finds it removed once it has its lock, and takes the new one)."""
    import fcntl

    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another process holds a lock in it: the last one removes it
        handle.close()
        return
    try:
        if _same_file(handle, lock_path):
            lock_path.unlink(missing_ok=True)
    except OSError:  # a temporary folder that keeps its files: left, as before
        pass
    finally:
        handle.close()

def _same_file(handle: Any, path: Path) -> bool:
    """Whether ``path`` still names the file ``handle`` has open."""
    try:
        named = path.stat()
    except OSError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
