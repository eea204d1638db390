"""What an answer cannot promise, said beside it (in the line ``run`` and ``tune`` print, the
report's answer box and ``analyze``): points that failed, steps to target still known only
coarsely, a learning rate at the edge of what was tried, a winner whose step time rests on few
measured steps, CPU points timed beside others on their node. And what is left out of the ranking, with why: a point whose only timed steps are
its burn-in's (warm-up times are not its step time). Pure: rows in, sentences out.
"""

from __future__ import annotations

import math
from typing import Any

from harness.analysis.uncertainty import COARSE, measured, point_bounds
from harness.store.schema import Status, FAILED

FEW_TIMED_STEPS = 10
"""A step time from fewer timed steps after the burn-in than this is said to be thin."""




def _null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def excluded(group, tried=None) -> dict[int, str]:
    """Batch sizes left out of the ranking, with the reason: they reached the target, but no
    point at their batch size (``tried``: every ok point of the group) has a step time measured
    after its burn-in."""
    timed = set(measured(group if tried is None else tried)["batch_size"])
    return {int(b): "reached the target inside its burn-in and stopped, and no point at its batch size has a measured step time"
            for b in sorted(set(group[group["steps_to_target"].notna()]["batch_size"])) if b not in timed}


def failures(everything) -> str | None:
    """``2 points failed and are not in the answer: B=512 oom, B=1024 diverged``. A rate that
    diverged in a search of rates (``tuned``) is the search's answer about that rate, not a failure."""
    bad = everything[everything["status"].isin((*FAILED, Status.INTERRUPTED))] if len(everything) else everything
    if len(bad) and "lr_policy" in bad:
        bad = bad[~((bad["lr_policy"] == "tuned") & (bad["status"] == Status.DIVERGED))]
    if not len(bad):
        return None
    said = ", ".join(f"B={int(r['batch_size'])} {r['status']}" for r in bad.sort_values("batch_size").to_dict("records")[:6])
    more = "" if len(bad) <= 6 else f" and {len(bad) - 6} more"
    return f"{len(bad)} point{'s' if len(bad) > 1 else ''} failed and {'are' if len(bad) > 1 else 'is'} not in the answer: {said}{more}"


def coarse(group, checks) -> str | None:
    """Batch sizes whose steps to target are still known only coarsely."""
    wide = []
    for record in group[group["steps_to_target"].notna()].to_dict("records"):
        hit = record["steps_to_target"]
        if hit <= 0:
            continue
        low, high = point_bounds(record, checks)
        if high - low > max(1, COARSE * high):  # more than one step, and more than a quarter of them, between the bounds
            wide.append((int(record["batch_size"]), low, high))
    if not wide:
        return None
    said = ", ".join(f"B={b}: {low:,}-{high:,}" for b, low, high in sorted(set(wide))[:4])
    return (f"steps to target are known only coarsely at {said} steps (coarse checks that could not be refined: a data-parallel "
            f"point, or a store from before refinement); their ranking is uncertain")


def lr_edge(group, everything, best_batch: int | None) -> str | None:
    """The best batch size's learning rate (the best of ``group``, its ok points) at the edge of
    the rates tried (``everything``, whatever became of them) in a tuned search."""
    if best_batch is None or not (group["lr_policy"] == "tuned").any():
        return None
    rates = sorted(set(everything["lr"].dropna().astype(float)))
    best = group[(group["batch_size"] == best_batch) & group["steps_to_target"].notna()]
    if len(rates) < 2 or best.empty:
        return None
    lr = float(best.sort_values("steps_to_target")["lr"].iloc[0])
    if lr == rates[-1]:
        return f"B={best_batch}'s best learning rate {lr:g} is the largest tried: a larger one may be faster (widen --lr-grid)"
    if lr == rates[0]:
        return f"B={best_batch}'s best learning rate {lr:g} is the smallest tried: a smaller one may reach the target sooner (widen --lr-grid)"
    return None


def thin_step_time(group, best_batch: int | None) -> str | None:
    """The best batch size's step time from few measured steps, or flagged noisy."""
    if best_batch is None:
        return None
    rows = group[group["batch_size"] == best_batch]
    timed = rows["timed_steps"].dropna() if "timed_steps" in rows else []
    if len(timed) and int(timed.max()) < FEW_TIMED_STEPS:
        return f"B={best_batch}'s step time rests on {int(timed.max())} timed step{'s' if int(timed.max()) != 1 else ''} after its burn-in"
    if rows["flags"].fillna("").str.contains("noisy").any():
        return f"B={best_batch}'s median step time is noisy (uncertain by over 10%)"
    return None


def side_by_side(group) -> str | None:
    """CPU points timed while other points of the sweep ran on their node (Ray with
    ``--cpus-per-point`` below a node's cores): they shared its cores, caches and memory bandwidth."""
    if "co_running" not in group or "device" not in group:
        return None
    beside = group[(group["co_running"].fillna(0) > 0) & (group["device"] == "cpu")]
    if beside.empty:
        return None
    batches = ", ".join(f"B={int(b)}" for b in sorted(set(beside["batch_size"]))[:6])
    return (f"{len(beside)} CPU point{'s' if len(beside) > 1 else ''} ({batches}) were timed beside other points on their node "
            f"(up to {int(beside['co_running'].max())} at once): their step times are slower than alone, by however much they shared")


def caveats(chosen, tried, everything, checks, best_batch: int | None) -> tuple[str, ...]:
    """Every caveat of one group's answer, most serious first: ``chosen``, the points it ranks
    (the best rate per batch size where tuned); ``tried``, every ok point; ``everything``, every
    point of the group whatever its status."""
    found = (failures(everything), coarse(chosen, checks), lr_edge(tried, everything, best_batch), thin_step_time(chosen, best_batch),
             side_by_side(tried))
    return tuple(c for c in found if c)
