"""The training recipe a group of points really used, in words, from what the points recorded
(a LightningModule's own optimizer and scheduler, a plug-in's), never from the spec's defaults:
``adamw (weight decay 0.05), peak lr 0.003, OneCycleLR stepped every step``. The word
"constant" is used only where the learning rate is constant. Pure: rows in, text out.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

BUILT_IN_SCHEDULES = ("constant", "cosine", "linear")


def _value(rows: list[Mapping[str, Any]], column: str) -> Any:
    """The column's one value over the rows (None where it is null or differs)."""
    values = {str(r.get(column)) for r in rows if r.get(column) is not None and not (isinstance(r.get(column), float) and math.isnan(r[column]))}
    if len(values) != 1:
        return None
    return next(r[column] for r in rows if r.get(column) is not None)


def schedule_text(rows: list[Mapping[str, Any]]) -> str | None:
    """How the rate moves within a point, or None when it is constant (no warm-up, no decay)."""
    schedule, warmup = _value(rows, "lr_schedule"), _value(rows, "lr_warmup_steps")
    parts = []
    if warmup:
        parts.append(f"{int(warmup)} warm-up steps")
    if schedule and schedule not in BUILT_IN_SCHEDULES:  # a LightningModule's own scheduler: Class/interval
        name, _, interval = str(schedule).partition("/")
        parts.append(f"its {name} stepped every {interval or 'epoch'}")
    elif schedule in ("cosine", "linear"):
        floor = _value(rows, "lr_floor")
        parts.append(f"a {schedule} decay" + (f" to {float(floor):g} of the peak" if floor else ""))
    return " and ".join(parts) or None


def optimizer_text(rows: list[Mapping[str, Any]]) -> str:
    """``adamw (weight decay 0.01, betas 0.9,0.95)`` or ``sgd (momentum 0.9)``."""
    name = _value(rows, "optimizer") or "the optimizer"
    details = []
    momentum, decay, betas = _value(rows, "momentum"), _value(rows, "weight_decay"), _value(rows, "betas")
    if momentum:
        details.append(f"momentum {float(momentum):g}")
    if decay:
        details.append(f"weight decay {float(decay):g}")
    if betas and str(betas) != "0.9,0.999":
        details.append(f"betas {betas}")
    if _value(rows, "grad_clip"):
        details.append(f"gradients clipped to {float(_value(rows, 'grad_clip')):g}")
    return f"{name} ({', '.join(details)})" if details else str(name)


def describe(rows: Iterable[Mapping[str, Any]]) -> str:
    """The recipe of these points in one phrase: optimizer, its settings, the rate (the peak
    where it is scheduled) and its schedule."""
    rows = list(rows)
    schedule = schedule_text(rows)
    rates = sorted({float(r["lr"]) for r in rows if r.get("lr") is not None and r["lr"] == r["lr"]})
    rate = "" if not rates else f"lr {rates[0]:.4g}" if len(rates) == 1 else f"lr {rates[0]:.4g}..{rates[-1]:.4g}"
    if schedule and rate:
        rate = "peak " + rate
    text = optimizer_text(rows) + (f", {rate}" if rate else "")
    return text + (f" with {schedule}" if schedule else ", constant within each point")
