"""Files the commands write (reports, exports, compare pages): checked before any work starts,
written whole or not at all, and never over a file batchbench reads.

- ``output_path`` refuses a target that is a folder, that sits under a file, or that is the same
  file (through any path, symbolic link or hard link) as one the command reads: its store, a
  source store, the spec file or the data file. Writing there would destroy it.
- ``write_output`` writes to a temporary file beside the target, flushes it to disk and renames
  it into place: a kill or a full disk leaves the old file or none, never a part. Replacing an
  existing file is said on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

from harness.errors import SpecError, StoreError

Keep = Iterable[tuple["str | Path | None", str]]
"""(path, what it is) of files an output must never be: ``(store, "the store")``."""


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (symbolic links followed, hard links compared by inode;
    a file not yet there, such as a store a sweep is about to create, by its resolved path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def output_path(path: str | Path, field: str, keep: Keep = ()) -> Path:
    """``path`` if a file can be written there (its missing folders will be made); otherwise a
    ``SpecError`` saying what is in the way."""
    target = Path(path)
    if target.is_dir():
        raise SpecError(field, f"{target} is a directory; give a file name, e.g. {target / 'report.html'}")
    for other, what in keep:
        if other is not None and same_file(target, other):
            raise SpecError(field, f"{target} is {what} ({other}); writing there would destroy it: give another path")
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SpecError(field, f"cannot write {target}: {ancestor} is a file, not a folder")
    return target


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def write_output(path: str | Path, payload: str | bytes, field: str, keep: Keep = ()) -> Path:
    """Write ``payload`` to ``path`` whole (a temporary file renamed into place; folders made as
    needed); an OS error is one line and leaves whatever was at ``path`` as it was."""
    target = output_path(path, field, keep)
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    replacing = target.exists()
    temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        _discard(temporary)
        raise StoreError(field, f"cannot write {target}: {exc.strerror or exc} (nothing was written there)") from None
    except BaseException:  # Ctrl-C mid-write: the target is as it was, and no part is left beside it
        _discard(temporary)
        raise
    if replacing:
        print(f"batchbench: replaced the existing {target}", file=sys.stderr)
    return target
