"""When a curve of loss checks reaches a target, as pure functions on check rows.

``to_target``: steps, samples, wall time (loss checks included, as MLPerf counts) and compute
time (checks excluded, as AlgoPerf counts) to the first check that reaches a target, or to a
crossing found between two checks (``run.refine``)."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

TARGET_COLUMNS = ("steps_to_target", "samples_to_target", "time_to_target_s", "compute_to_target_s")


def reached(check: Mapping[str, Any], target_loss: float | None, target_accuracy: float | None) -> bool:
    if target_loss is not None:
        value = check.get("eval_loss")
        return value is not None and math.isfinite(value) and value <= target_loss
    if target_accuracy is not None:
        value = check.get("eval_acc")
        return value is not None and value >= target_accuracy
    return False


def to_target(checks: Iterable[Mapping[str, Any]], batch_size: int, *, target_loss: float | None = None, target_accuracy: float | None = None,
              crossing: tuple[int, int] | None = None) -> dict[str, Any]:
    """Steps/samples/time to the target, and the earliest step it may have been reached
    (``steps_to_target_low``); nulls when no check reached it.

    Without ``crossing`` the steps are the first check's that reached it (known to the check
    before). With ``crossing`` = (step, low), found between two checks (``run.refine``), the
    steps are that step, and the times are the check before's plus the training between it and
    the check that saw the target, in proportion to the steps (checks, and the refinement, are
    not training)."""
    rows = list(checks)
    hit = next((i for i, check in enumerate(rows) if reached(check, target_loss, target_accuracy)), None)
    if hit is None:
        out = dict.fromkeys((*TARGET_COLUMNS, "steps_to_target_low"))
        if crossing is not None:  # a replay that bisected up to a check it never made itself (drivers.crossings)
            out.update(steps_to_target=crossing[0], samples_to_target=crossing[0] * batch_size, steps_to_target_low=crossing[1])
        return out
    after = rows[hit]
    step, low = (int(after["step"]), int(rows[hit - 1]["step"]) + 1 if hit else 0) if crossing is None else crossing
    wall, compute = after["wall_s"], after["compute_s"]
    if hit and step < after["step"]:
        before = rows[hit - 1]
        training = (step - before["step"]) / (after["step"] - before["step"]) * (after["compute_s"] - before["compute_s"])
        wall, compute = before["wall_s"] + training, before["compute_s"] + training
    return {"steps_to_target": step, "samples_to_target": step * batch_size, "time_to_target_s": wall, "compute_to_target_s": compute,
            "steps_to_target_low": min(low, step)}


def relative_target(initial_loss: float, reference_loss: float, fraction: float) -> float:
    """``rel:F``: L_ref + F (L_0 - L_ref)."""
    return reference_loss + fraction * (initial_loss - reference_loss)
