"""Steps to a target learnt only after the points ran (``--target rel:F``: its loss comes from the
whole sweep), to the same resolution as a target known from the start.

A point with an absolute target refines its own crossing while it trains (``run.refine``). A
relative target is fixed at the sweep's end, when its points have gone; where the check that
first saw it came more than ``RESOLUTION`` after the one before, the point is replayed: trained
again from its initial weights (same seed, same samples: the same steps), checked only at those
two steps, and the interval bisected from a snapshot at the first. Untimed: what it costs is
recorded (``refine_steps``, ``refine_checks``, ``refine_s``), never added to the point's times.
Cheap checks never need it: ``--check-every auto`` checks finely enough where checks cost little.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from harness.measures.targets import to_target
from harness.drivers.plan import Plan
from harness.run.engine import run_point
from harness.run.refine import resolved
from harness.store.schema import Status


def coarse(update: dict[str, Any]) -> bool:
    """Whether a point's to-target columns are known only to a coarse interval."""
    hit, low = update.get("steps_to_target"), update.get("steps_to_target_low")
    return hit is not None and low is not None and hit > 0 and not resolved(low - 1, hit)


def refine(plan: Plan, spec, target_loss: float, checks: list[dict], update: dict[str, Any],
           say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """``update`` (a point's target and to-target columns) with the crossing found by replaying
    the point (``spec``) between the check before the target and the check that saw it; where
    the replay fails, ``update`` as it was, and ``say`` tells why."""
    if spec is None or spec.world_size > 1 or not coarse(update):  # not this plan's point, ranks (a replay runs one process), or fine already
        return update
    before, hit = update["steps_to_target_low"] - 1, update["steps_to_target"]
    replay = dataclasses.replace(spec, target_loss=target_loss, target_accuracy=None, stop_at_target=True, sample_interval_s=0,
                                 noise_samples=0)
    start = time.perf_counter()
    result = run_point(replay, plan.workload(spec), replay=(before, hit))
    seconds = time.perf_counter() - start
    row = result.row
    if result.status != Status.OK or row.get("steps_to_target") is None:
        why = row.get("error") or "its replay did not reach the target (a nondeterministic step?)"
        say(f"the crossing of B={spec.batch_size} (repeat {spec.repeat}) stays between steps {before} and {hit}: {why}")
        return update
    found = to_target(checks, spec.batch_size, target_loss=target_loss, crossing=(row["steps_to_target"], row["steps_to_target_low"]))
    return {**update, **found, "refine_steps": before + int(row.get("refine_steps") or 0),
            "refine_checks": len(result.checks) + int(row.get("refine_checks") or 0), "refine_s": seconds}


def refine_all(plan: Plan, updates: list[dict[str, Any]], checks, say: Callable[[str], None] = lambda line: None) -> list[dict[str, Any]]:
    """Every update whose crossing is coarse, refined (``checks``: the run's checks table)."""
    todo = [u for u in updates if coarse(u)]
    if not todo:
        return updates
    say(f"finding where {len(todo)} point{'s' if len(todo) > 1 else ''} crossed the relative target between coarse checks "
        f"(replayed untimed from their start)")
    refined = {}
    for update in todo:
        own = checks[checks["point_id"] == update["point_id"]].sort_values("step").to_dict("records")
        spec = next((p for p in plan.points if p.point_id == update["point_id"]), None)
        refined[update["point_id"]] = refine(plan, spec, update["target_loss"], own, update, say)
    return [refined.get(u["point_id"], u) for u in updates]
