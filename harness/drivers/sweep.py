"""The sweep: run a plan's points into a store, each committed on its own, then finalise.

``run_sweep`` is the only sweep, for every launcher: a plain process, a data-parallel point
(launched here through ``harness.parallel.launch``) and an external ``torchrun`` of
``batchbench run`` (every rank runs this function with ``ranks``; rank 0 alone writes). With
``resume`` it skips the points a previous, interrupted run of the same spec committed.
``finalise`` does what needs the whole sweep: relative targets, then the run's end time.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Callable

from harness import env
from harness.workload import models
from harness.analysis.convergence import relative_targets
from harness.workload.datasets import Split
from harness.parallel.launch import ExternalRanks, launch
from harness.drivers.plan import Plan, plan_flags
from harness.store.schema import PointResult
from harness.run.engine import run_point
from harness.config.points import PointSpec
from harness.config.values import flag
from harness.store.sqlite import Store


def run_one(point: PointSpec, split: Split, factory: models.Factory) -> PointResult:
    """One point in this process, or its ranks launched when it is data-parallel."""
    if point.world_size > 1 and not point.skip_reason:
        return launch(point)
    return run_point(point, split, factory)


def run_sweep(
    plan: Plan,
    store: Store | None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    on_point: Callable[[PointSpec, PointResult], None] | None = None,
    ranks: ExternalRanks | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> str:
    """Run every point not yet in the store; returns the run id. ``progress=None`` shows a
    bar only when stderr is a terminal; ``say`` gets what ``--resume`` found. Under an external
    launcher pass ``ranks``, and the store on rank 0 only (None elsewhere)."""
    writes = ranks is None or ranks.writes
    lock = store.sweep_lock(plan.sweep_hash) if writes and resume else contextlib.nullcontext()
    with lock:
        return _sweep(plan, store, resume, progress, on_point, ranks, say, writes)


def _sweep(plan, store, resume, progress, on_point, ranks, say, writes) -> str:
    from tqdm.auto import tqdm

    header = None
    if writes:
        if resume:
            say(resume_note(plan, store))
        environment = env.environment(list(plan.devices), plan.spec.threads)
        header = store.start_run(plan.spec.to_json(), plan.sweep_hash, environment, resume=resume, old_hashes=plan.old_hashes)
    run_id, done = ranks.share(header) if ranks is not None else header
    todo = [p for p in plan.points if p.point_id not in done]
    show = writes and (sys.stderr.isatty() if progress is None else progress)
    with tqdm(total=len(plan.points), initial=len(plan.points) - len(todo), disable=not show, unit="point", desc="sweep", file=sys.stderr) as bar:
        for point in todo:
            bar.set_postfix_str(f"{point.dataset_size}x B={point.batch_size} {point.device} r{point.repeat}", refresh=False)
            split = plan.split(point)
            result = ranks.run(point, split, plan.factory) if ranks is not None else run_one(point, split, plan.factory)
            if writes:
                store.add_point(run_id, result)
                if on_point is not None:
                    on_point(point, result)
            bar.update(1)
    if writes:
        finalise(plan, store, run_id)
    return run_id


def resume_note(plan: Plan, store: Store) -> str:
    """What ``--resume`` finds in the store for this sweep, in one line."""
    found = store.find_run(plan.sweep_hash, *plan.old_hashes)
    total = len(plan.points)
    if found is not None:
        run_id, done, finished = found
        done = len(done & {p.point_id for p in plan.points})
        if done == total:
            return f"run {run_id} already has all {total} points: nothing to do" + ("" if finished else " (finishing it)")
        return f"resuming run {run_id}: {done} of {total} points done, {total - done} to run"
    latest = store.load("runs").tail(1)
    if latest.empty:
        return f"nothing to resume in {store.path}; starting a new run"
    try:
        before = json.loads(latest["spec_json"].iloc[0] or "{}")
    except (TypeError, json.JSONDecodeError):
        before = {}
    now = json.loads(plan.spec.to_json())
    differ = [key for key in now if before.get(key) != now[key]]
    detail = f" (the latest run differs in {', '.join(flag(k) for k in differ)})" if differ else ""
    return f"no earlier run of this sweep in {store.path}{detail}; starting a new run"


def finalise(plan: Plan, store: Store, run_id: str) -> None:
    """What is known only once every point is in: each point's relative target (``--target
    rel:F``) and the to-target columns it gives; then the run is marked finished."""
    if plan.spec.target is not None:
        updates = relative_targets(store.load("points", [run_id]), store.load("checks", [run_id]), plan.spec.target.fraction)
        store.update_points(run_id, updates)
    store.finish_run(run_id)


def run_flags(**flags) -> list[PointResult]:
    """Every point of ``plan_flags(**flags)``, run and returned without a store: the one
    spec -> plan -> points idiom for tests, benchmarks and asv."""
    the_plan = plan_flags(**flags)
    return [run_one(point, the_plan.split(point), the_plan.factory) for point in the_plan.points]
