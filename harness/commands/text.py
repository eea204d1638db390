"""How the commands lay text out: one table layout, and numbers, seconds and bytes as people
read them. Formatting only; numbers come from the store and the analysis."""

from __future__ import annotations

import math
from typing import Any, Sequence


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: Any, fmt: str = "{:,.4g}") -> str:
    return "-" if missing(value) else fmt.format(value)


def seconds(value: Any) -> str:
    """``12.3 ms`` below a second, ``4.56 s`` above."""
    if missing(value):
        return "-"
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"


def size(value: Any) -> str:
    """Bytes in the largest binary unit that keeps a number of at least 1."""
    if missing(value):
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:,.2f} {unit}"
    return f"{value:,.0f} B"


def layout(rows: Sequence[Sequence[str]], right: set[int] = frozenset(), indent: str = "") -> str:
    """Rows of text cells as aligned columns under a ruled header; columns in ``right`` are
    right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [indent + "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    return "\n".join(lines[:1] + [indent + "  ".join("-" * w for w in widths)] + lines[1:])


def strict(value: Any) -> Any:
    """``value`` as strict JSON can hold it: NaN and infinities become null, numpy scalars
    Python numbers, tuples lists (every ``--json`` output goes through this)."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(value: Any) -> str:
    """Strict JSON (a parser that rejects NaN reads it), indented."""
    import json

    return json.dumps(strict(value), indent=1, allow_nan=False, default=str)
