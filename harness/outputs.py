"""Files the commands write (reports, exports, compare pages, merged stores, asv's files): checked
before any work starts, written whole or not at all, and never over a file batchbench reads or
a file of a store. docs/usage.md ("Where outputs go") says the same to users.

- ``-`` is standard output, where the command takes it (``stdout=True``: ``export -o``,
  ``report -o``); elsewhere, and for a store, it is refused.
- A symbolic link: the rules apply to its target, and the target is what is written (the link
  stays a link).
- A character device or a FIFO is opened and written; a folder, a block device or a socket is
  refused.
- ``output_path`` refuses a target that sits under a file, that is the same file (through any
  path, symbolic link or hard link) as one the command reads (its store, a source store, the
  spec file or the data file), or that is a file of a store, an input of the command or not:
  its ``-wal``, ``-shm`` or ``-journal``, its sweep lock file, anything in its tracebacks
  folder, or (for a text output) the store itself. Writing there would destroy it.
- ``write_output`` writes a file to a temporary beside the target (``.NAME.PID.partial``),
  flushes it to disk and renames it into place: a kill or a full disk leaves the old file or
  none, never a part. The temporaries a killed writer left for the same target go at the next
  write of it. Replacing an existing file is said on stderr.
"""

from __future__ import annotations

import glob
import os
import re
import stat
import sys
from pathlib import Path
from typing import Iterable

from harness.errors import SpecError, StoreError

Keep = Iterable[tuple["str | Path | None", str]]
"""(path, what it is) of files an output must never be: ``(store, "the store")``."""

STDOUT = "-"
"""The output path that means standard output."""

JOURNALS = {"-wal": "write-ahead log", "-shm": "shared-memory index", "-journal": "rollback journal"}
"""The files SQLite keeps beside a store, by the suffix of their name."""

LOCK_NAME = re.compile(r"batchbench-\d+-\d+\.lock")
"""A store's sweep lock file as batchbench 0.7 named it (by the store's device and inode, in the
temporary folder); now ``.NAME.lock`` beside the store (``Store.lock_path``)."""

TRACEBACKS = ".tracebacks"
"""``runs.sqlite`` keeps failed points' tracebacks in ``runs.tracebacks/`` (``drivers/sweep.py``)."""

SQLITE_HEADER = b"SQLite format 3\x00"
FILE, DEVICE, MISSING = "file", "device", "missing"


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (symbolic links followed, hard links compared by inode;
    a file not yet there, such as a store a sweep is about to create, by its resolved path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def is_stdout(path: str | Path | None) -> bool:
    return path is not None and str(path) == STDOUT


def output_path(path: str | Path, field: str, keep: Keep = (), *, example: str = "report.html", stdout: bool = False) -> Path:
    """``path`` if the output can be written there (its missing folders will be made);
    otherwise one line saying what is in the way. ``example`` is the file name a folder given
    as ``path`` is told to add; ``stdout``: ``-`` is standard output."""
    return _checked(path, field, keep, example, stdout)[0]


def store_output_path(path: str | Path, field: str, example: str = "merged.sqlite") -> Path:
    """``path`` if a store can be written there (``merge -o``): a regular file or none, never
    standard output, a device, a FIFO or another store's file; one line otherwise."""
    if is_stdout(path):
        raise StoreError(field, f"cannot write a store to {STDOUT} (standard output): a store is a SQLite file; give a file name, e.g. {example}")
    target = Path(path)
    if _kind(target, field, example) == DEVICE:
        raise StoreError(field, f"cannot write a store to {target}: it is a {_describe(target)}; a store is a SQLite file: give a file name, e.g. {example}")
    real = Path(os.path.realpath(target))
    _refuse_store_files(target, real, field, text=False)
    _refuse_under_a_file(real, field)
    return target


def write_output(path: str | Path, payload: str | bytes, field: str, keep: Keep = (), *, example: str = "report.html",
                 stdout: bool = False) -> Path:
    """Write ``payload`` to ``path`` under the rules above (``-`` standard output, where
    ``stdout``); an OS error is one line and leaves whatever was at ``path`` as it was."""
    target, kind = _checked(path, field, keep, example, stdout)
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    if is_stdout(target) or _descriptor(target) == 1:
        _write_stdout(payload, field)
    elif _descriptor(target) is not None:
        _write_descriptor(_descriptor(target), data, field)
    elif kind == DEVICE:
        _write_device(target, data, field)
    else:
        _write_whole(target, data, field)
    return target


# ------------------------------------------------------------------ the checks


def _checked(path: str | Path, field: str, keep: Keep, example: str, stdout: bool) -> tuple[Path, str]:
    if is_stdout(path):
        if not stdout:
            raise StoreError(field, f"cannot write to {STDOUT} (standard output): this command prints its own text there; give a file name, "
                                    f"e.g. {example}")
        return Path(STDOUT), DEVICE
    target = Path(path)
    kind = _kind(target, field, example)
    for other, what in keep:
        if other is not None and same_file(target, other):
            raise SpecError(field, f"{target} is {what} ({other}); writing there would destroy it: give another path")
    if kind == DEVICE or _descriptor(target) is not None:  # /dev/stdout redirected to a file: written there, never replaced
        return target, kind
    real = Path(os.path.realpath(target))
    _refuse_store_files(target, real, field, text=True)
    _refuse_under_a_file(real, field)
    return target, kind


def _kind(target: Path, field: str, example: str) -> str:
    """FILE (a regular file), DEVICE (a character device or a FIFO: written into) or MISSING,
    links followed; a folder, a block device or a socket is refused."""
    try:
        mode = os.stat(target).st_mode
    except OSError:  # not there (or under a file, or a link to nowhere): the folder checks and the write say so
        return MISSING
    if stat.S_ISDIR(mode):
        raise SpecError(field, f"{target} is a folder; give a file name, e.g. {target / example}")
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return DEVICE
    if stat.S_ISREG(mode):
        return FILE
    raise StoreError(field, f"cannot write {target}: it is a {_describe(target)}; give a file, a character device or a FIFO")


def _describe(target: Path) -> str:
    mode = os.stat(target).st_mode
    kinds = ((stat.S_ISCHR, "character device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((what for test, what in kinds if test(mode)), "special file")


def _is_store(path: Path) -> bool:
    """A SQLite file (a store, or a database like one) is at ``path``. Only a regular file is
    opened: opening a FIFO to read would wait for a writer."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def store_file(real: Path) -> str | None:
    """What of a store the resolved path ``real`` is (``the write-ahead log of the store X``),
    or None: by its name beside (or above) an existing store, or by a sweep lock file's name."""
    for suffix, what in JOURNALS.items():
        if real.name.endswith(suffix) and len(real.name) > len(suffix) and _is_store(owner := real.with_name(real.name[: -len(suffix)])):
            return f"the {what} of the store {owner}"
    if real.name.startswith(".") and real.name.endswith(".lock") and _is_store(owner := real.with_name(real.name[1:-len(".lock")])):
        return f"the sweep lock file of the store {owner}"
    if LOCK_NAME.fullmatch(real.name):  # where batchbench 0.7 kept them (the temporary folder)
        return "a store's sweep lock file (batchbench-DEVICE-INODE.lock)"
    for folder in (real, *real.parents):
        stem = folder.name[: -len(TRACEBACKS)]
        if stem and folder.name.endswith(TRACEBACKS):
            owners = sorted(p for p in folder.parent.glob(glob.escape(stem) + "*") if p.stem == stem and p != folder and _is_store(p))
            if owners:
                return f"in the tracebacks folder of the store {owners[0]}"
    return None


def _refuse_store_files(target: Path, real: Path, field: str, text: bool) -> None:
    through = f" (a link to {real})" if target.is_symlink() else ""
    what = store_file(real)
    if what is None and text and _is_store(real):
        what = "a store"
    if what is not None:
        raise StoreError(field, f"cannot write {target}{through}: it is {what}; writing there would destroy the store: give another path")


def _refuse_under_a_file(real: Path, field: str) -> None:
    ancestor = real.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SpecError(field, f"cannot write {real}: {ancestor} is a file, not a folder")


# ------------------------------------------------------------------ the writes


def _write_stdout(payload: str | bytes, field: str) -> None:
    try:
        if isinstance(payload, str):
            sys.stdout.write(payload)
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(payload)
        sys.stdout.flush()
    except OSError as exc:
        raise StoreError(field, f"cannot write to standard output: {exc.strerror or exc}") from None


DESCRIPTORS = re.compile(r"/dev/(stdout|stderr|fd/(\d+))|/proc/self/fd/(\d+)")
"""Names of this process's open files: written through the descriptor, as a shell's ``>&N``."""


def _descriptor(target: Path) -> int | None:
    """The descriptor ``target`` names (``/dev/stdout`` is 1), or None."""
    found = DESCRIPTORS.fullmatch(str(target))
    if found is None:
        return None
    name, fd, proc_fd = found.groups()
    return {"stdout": 1, "stderr": 2}.get(name or "", None) if fd is None and proc_fd is None else int(fd or proc_fd)


def _write_descriptor(fd: int, data: bytes, field: str) -> None:
    sys.stderr.flush()
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise StoreError(field, f"cannot write to descriptor {fd}: {exc.strerror or exc}") from None


def _write_device(target: Path, data: bytes, field: str) -> None:
    """A character device or a FIFO: opened (links followed) and written, as a shell would."""
    try:
        with open(target, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise StoreError(field, f"cannot write {target}: {exc.strerror or exc}") from None


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


def _clear_stale(real: Path) -> None:
    """The temporaries a killed writer of ``real`` left beside it (``.NAME.PID.partial`` whose
    process is gone); another target's, and a living writer's, stay."""
    prefix = f".{real.name}."
    for path in real.parent.glob(glob.escape(prefix) + "*.partial"):
        pid = path.name[len(prefix): -len(".partial")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _discard(path)


def _write_whole(target: Path, data: bytes, field: str) -> None:
    """A temporary beside the file (a link's target) renamed into place."""
    real = Path(os.path.realpath(target))
    replacing = real.exists()
    temporary = real.with_name(f".{real.name}.{os.getpid()}.partial")
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale(real)
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, real)
    except OSError as exc:
        _discard(temporary)
        raise StoreError(field, f"cannot write {target}: {exc.strerror or exc} (nothing was written there)") from None
    except BaseException:  # Ctrl-C mid-write: the target is as it was, and no part is left beside it
        _discard(temporary)
        raise
    if replacing:
        through = f" (through the link, {real})" if target.is_symlink() else ""
        print(f"batchbench: replaced the existing {target}{through}", file=sys.stderr)
