"""Files the commands write (reports, exports): checked before any work starts, written with
their missing folders, and every way that can fail said in one line naming the flag."""

from __future__ import annotations

from pathlib import Path

from harness.errors import SpecError


def output_path(path: str | Path, field: str) -> Path:
    """``path`` if a file can be written there (its missing folders will be made); otherwise a
    ``SpecError`` saying what is in the way."""
    target = Path(path)
    if target.is_dir():
        raise SpecError(field, f"{target} is a directory; give a file name, e.g. {target / 'report.html'}")
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SpecError(field, f"cannot write {target}: {ancestor} is a file, not a folder")
    return target


def write_output(path: str | Path, payload: str | bytes, field: str) -> Path:
    """Write ``payload`` to ``path`` (folders made as needed); an OS error is one line."""
    target = output_path(path, field)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(payload, bytes):
            target.write_bytes(payload)
        else:
            target.write_text(payload, encoding="utf-8")
    except OSError as exc:
        raise SpecError(field, f"cannot write {target}: {exc.strerror or exc}") from None
    return target
