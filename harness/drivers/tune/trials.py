"""A ``batchbench tune`` trial through the harness: one stored point of (batch size, learning
rate), stopped at the target or once its budget says it cannot win, and what it tells the
search (a ``policy.Trial``). Also the pilot (which fixes a relative target) and the noise scale
at initialisation (which places the first batch size)."""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Callable

import torch

from harness.measures.targets import relative_target, to_target
from harness.measures.noise_scale import b_simple
from harness.config.points import PointSpec
from harness.drivers import crossings
from harness.drivers.plan import Plan
from harness.drivers.tune.policy import Budget, Trial
from harness.errors import RunError
from harness.run.engine import PointInterrupted, run_point
from harness.run.parts import make_loss
from harness.run.prepare import noise_estimator
from harness.run.measurement import PointResult
from harness.store.schema import Status
from harness.store.sqlite import Kept

NOISE_SAMPLES = 512
"""Training samples whose per-example gradients give the noise scale at initialisation."""

FALLBACK_START = 32
"""First batch size where the noise scale cannot be estimated (a model torch.func cannot map)."""

TRIVIAL_SHARE = 0.1
"""A pilot that reaches its own relative target within this share of its budget has measured
the first plateau (a byte model learning byte frequencies), not training: tune says so."""


def prune_for(budget: Budget) -> Callable[[dict, float | None], str | None]:
    """The engine's ``prune``: stop at a check past the budget's steps (another rate needed no
    more at this batch size) or training time (steps x the median step so far)."""

    def prune(check: dict, step_s: float | None) -> str | None:
        if budget.steps is not None and check["step"] > budget.steps:
            return f"pruned: {check['step']} steps without the target; another learning rate reached it in {budget.steps} at this batch size"
        if budget.time_s is not None and step_s and check["step"] * step_s > budget.time_s:
            return (f"pruned: {check['step']} steps x {step_s * 1e3:.3g} ms without the target, past the best time "
                    f"{budget.time_s:.3g} s (with slack)")
        return None

    return prune


def as_trial(batch: int, lr: float, result: PointResult | Kept, goal: dict[str, Any]) -> Trial:
    """What a stored point tells the search: one just run, or one an earlier process of this
    tune stored (``--resume``: the same row and checks, read back)."""
    row, checks = result.row, result.checks
    step_s = None if "burn_in_only" in str(row.get("flags") or "") else row.get("step_wall_s")  # a warm-up time is not its step time
    if row["status"] == Status.OK and row.get("steps_to_target") is not None:
        return Trial(batch, lr, "reached", int(row["steps_to_target"]), step_s, 1.0)
    outcome = {Status.OK: "missed", Status.PRUNED: "pruned"}.get(row["status"], "failed")
    return Trial(batch, lr, outcome, int(row.get("steps") or 0), step_s, progress(checks, goal))


def progress(checks: list[dict], goal: dict[str, Any]) -> float:
    """How far towards the target the last check got, from the first: 0 none, 1 there."""
    if len(checks) < 2:
        return 0.0
    column, target = ("eval_loss", goal["target_loss"]) if goal["target_loss"] is not None else ("eval_acc", goal["target_accuracy"])
    first, last = checks[0][column], checks[-1][column]
    if first is None or last is None or not math.isfinite(last) or first == target:
        return -math.inf
    return (first - last) / (first - target)


def pilot(point: PointSpec, plan: Plan, fraction: float, store, run_id: str) -> tuple[float, PointResult, str | None]:
    """Run the pilot (its whole budget) and fix the target from its curve: L_ref + F (L_0 -
    L_ref). Returns (target loss, the stored point, a warning where the target is trivial)."""
    try:
        result = run_point(point, plan.workload(point))
    except PointInterrupted as stop:  # Ctrl-C or SIGTERM: kept as interrupted (--resume runs it again)
        store.add_point(run_id, stop.result)
        raise
    losses = [c["eval_loss"] for c in result.checks if c["eval_loss"] is not None and math.isfinite(c["eval_loss"])]
    if not losses:
        store.add_point(run_id, result)
        raise _no_check(point, result.row)
    target = relative_target(losses[0], min(losses), fraction)
    found = {"point_id": point.point_id, "target_loss": target, **to_target(result.checks, point.batch_size, target_loss=target)}
    result = result.settle(**crossings.refine(plan, point, target, result.checks, found))  # the target is known only now: find its step
    store.add_point(run_id, result)
    return target, result, _trivial(point, target, result.row.get("steps_to_target"), fraction)


def kept_pilot(point: PointSpec, kept: Kept, fraction: float) -> tuple[float, Kept, str | None]:
    """The pilot an earlier process of this tune stored (``--resume``): the target its curve
    fixed (its ``target_loss``), as ``pilot`` returns it, without training it again."""
    target = kept.row.get("target_loss")
    if target is None:
        raise _no_check(point, kept.row)
    return float(target), kept, _trivial(point, float(target), kept.row.get("steps_to_target"), fraction)


def _no_check(point: PointSpec, row: dict[str, Any]) -> RunError:
    return RunError("--target", f"the pilot trial (B={point.batch_size}, lr {point.lr:g}) ended {row['status']} before a loss check; "
                                f"give --target-loss instead ({row.get('error') or 'no check'})")


def _trivial(point: PointSpec, target: float, hit: int | None, fraction: float) -> str | None:
    """The warning for a pilot that reached its own target within ``TRIVIAL_SHARE`` of its budget."""
    if hit is None or hit > TRIVIAL_SHARE * point.steps:
        return None
    return (f"the pilot reached its target (loss {target:.4g}) at step {hit} of {point.steps}: it measures the first plateau, not "
            f"training; give --target-loss or a smaller F (--target rel:{fraction / 4:g})")


def initial_noise_scale(point: PointSpec, plan: Plan) -> float | None:
    """B_simple at the weights every trial starts from; None where it cannot be estimated."""
    split = plan.split(point)
    probe = dataclasses.replace(point, noise_samples=min(NOISE_SAMPLES, point.train_size))
    device = torch.device(point.device)
    try:
        model, own_loss = plan.workload(point).build()
        estimate = noise_estimator(probe, model.to(device), own_loss or make_loss(split.task), split.X_train, split.y_train, device)
        return None if estimate is None else b_simple(estimate())
    except Exception as exc:  # a model the estimator cannot run: start from the fallback
        print(f"batchbench: no noise scale at initialisation ({type(exc).__name__}: {exc}); starting at B={FALLBACK_START}", file=sys.stderr)
        return None
