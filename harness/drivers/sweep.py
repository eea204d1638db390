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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from harness import env
from harness.analysis.convergence import relative_targets
from harness.config.execution import Executor
from harness.drivers.executors import Local, OnRay, PointsInterrupted, executor_for, run_one
from harness.parallel.launch import ExternalRanks
from harness.drivers import crossings
from harness.drivers.capacity import resolve_micro_batches
from harness.store.logs import LogTarget, open_logs
from harness.drivers.log_answers import settle_logs
from harness.drivers.plan import Plan, plan_flags
from harness.run.measurement import PointResult
from harness.store.schema import FAILED, spec_of
from harness.run.engine import PointInterrupted
from harness.config.points import PointSpec
from harness.config.values import flag
from harness.store.sqlite import Store


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs and reports, beside what it runs (the plan) and where it stores it."""

    resume: bool = False
    progress: bool | None = None
    """Bars on stderr: None shows them only on a terminal."""
    on_point: Callable[[PointSpec, PointResult], None] | None = None
    ranks: ExternalRanks | None = None
    """Under an external launcher (torchrun): this process's part of every point."""
    say: Callable[[str], None] = lambda line: None
    """Lines for the user: what ``--resume`` found, a failed point as it happens."""
    logs: Sequence[LogTarget] = ()
    """TensorBoard / MLflow, written each point as it is stored."""
    executor: Executor = Executor()
    """Where the points run (``--executor``): here, or on Ray."""

    @property
    def writes(self) -> bool:
        return self.ranks is None or self.ranks.writes


def run_sweep(plan: Plan, store: Store | None, **options) -> str:
    """Run every point not yet in the store; returns the run id. ``options`` are
    ``SweepOptions``'s fields. Under an external launcher pass ``ranks``, and the store on rank
    0 only (None elsewhere)."""
    opts = SweepOptions(**options)
    plan = resolve_micro_batches(plan, opts.say)
    lock = store.sweep_lock(plan.sweep_hash, resume=opts.resume) if opts.writes else contextlib.nullcontext()
    with lock:
        return _sweep(plan, store, opts)


def _sweep(plan: Plan, store: Store | None, opts: SweepOptions) -> str:
    from tqdm.auto import tqdm

    header, writes, ranks = None, opts.writes, opts.ranks
    if writes:
        if opts.resume:
            opts.say(resume_note(plan, store))
        environment = env.environment(list(plan.devices), plan.spec.threads)
        header = store.start_run(plan.spec.to_json(), plan.sweep_hash, environment, resume=opts.resume, old_hashes=plan.old_hashes)
    run_id, done = ranks.share(header) if ranks is not None else header
    todo = [p for p in plan.points if p.point_id not in done]
    show = writes and (sys.stderr.isatty() if opts.progress is None else opts.progress)
    writers = open_logs(opts.logs, run_id, plan.spec.to_json()) if writes else []
    executor = executor_for(opts.executor, ranks, show, plan.spec.point_timeout, opts.say)
    with tqdm(total=len(plan.points), initial=len(plan.points) - len(todo), disable=not show, unit="point", desc="sweep", file=sys.stderr) as bar, \
            executor:
        _run_points(plan, todo, executor, (store if writes else None, run_id, writers), opts, bar if show else None)
    if writes:
        finalise(plan, store, run_id, opts.say)
        settle_logs(writers, store, run_id)  # the logs get what the sweep's end settled, and the answer
    return run_id


def _run_points(plan: Plan, todo: list[PointSpec], executor: Local | OnRay, into: tuple, opts: SweepOptions, bar) -> None:
    """The points through the executor, each kept as it comes back (``into``: the store, None
    on a rank that does not write, the run id and the log writers)."""
    store, run_id, writers = into

    def note(text: str) -> None:  # drawn now: the bar names the point that runs, not the one that finished
        if bar is not None:
            bar.set_postfix_str(text, refresh=True)

    try:
        for result in executor.results(todo, plan.workload, note):
            if store is not None and result is not None:
                _keep(store, run_id, result.point, result, writers, opts, bar)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt as stop:  # Ctrl-C: the points so far are kept (status interrupted; --resume runs them again)
        if store is not None:
            for interrupted in _cut_off(stop, executor):
                store.add_point(run_id, interrupted)
        raise
    if store is not None:
        store.update_points(run_id, executor.later())


def _cut_off(stop: KeyboardInterrupt, executor: Local | OnRay) -> list[PointResult]:
    """The points Ctrl-C cut off: the one the engine was training, those in flight on Ray, or
    (Ctrl-C between points, while one was being stored) those the executor still runs."""
    if isinstance(stop, PointInterrupted):
        return [stop.result]
    if isinstance(stop, PointsInterrupted):
        return stop.results
    return executor.stop()


def _keep(store: Store, run_id: str, point: PointSpec, result: PointResult, writers: list, opts: SweepOptions, bar) -> None:
    """A point's result committed, then logged, handed on, and told if it failed."""
    commit(store, run_id, point, result, opts.say)
    for log in writers:
        log.point({**result.row, "run_id": run_id}, result.checks)
    if opts.on_point is not None:
        opts.on_point(point, result)
    if result.status in FAILED:
        line = failure_line(point, result, store)
        bar.write(f"batchbench: {line}", file=sys.stderr) if bar is not None else opts.say(line)


COMMIT_PATIENCE_S = 300.0
"""How long a point just trained waits for a locked store (another process writing it) before
the sweep stops; each try waits ``BUSY_TIMEOUT_S`` inside SQLite."""


def commit(store: Store, run_id: str, point: PointSpec, result: PointResult, say: Callable[[str], None]) -> None:
    """Store a point just trained; while the store is locked by another process, keep it in
    memory and try again; if it cannot be stored, stop the sweep naming the point lost."""
    import sqlite3

    from harness.errors import StoreError
    from harness.store.sqlite import trouble

    deadline, told = time.monotonic() + COMMIT_PATIENCE_S, False
    while True:
        try:
            store.add_point(run_id, result)
            return
        except sqlite3.OperationalError as exc:
            locked = "locked" in str(exc).lower() or "busy" in str(exc).lower()
            if locked and time.monotonic() < deadline:
                if not told:
                    say(f"{store.path} is locked by another process; keeping point B={point.batch_size} in memory until it frees")
                    told = True
                continue
            raise StoreError("--store", f"point B={point.batch_size} · {point.dataset_size} samples ({point.point_id}) trained but "
                                        f"could not be stored, so it is lost (the points before it are kept; --resume runs it "
                                        f"again): {trouble(store.path, exc)}") from None


def failure_line(point: PointSpec, result: PointResult, store: Store) -> str:
    """A failed point in one line, as it happens: which point, its status and reason, and the
    file its traceback was written to (beside the store)."""
    where = f"B={point.batch_size} · {point.dataset_size} samples · {point.device}" + (f" · repeat {point.repeat}" if point.repeat else "")
    trace = result.row.get("traceback")
    kept = ""
    if trace:
        path = tracebacks_dir(store) / f"{point.point_id}.txt"
        try:
            path.parent.mkdir(exist_ok=True)
            path.write_text(trace)
            kept = f" (traceback: {path})"
        except OSError:
            kept = " (traceback: the points table's traceback column)"
    return f"point {where}: {result.status}: {result.row.get('error')}{kept}"


def tracebacks_dir(store: Store) -> Path:
    """``runs.sqlite`` -> ``runs.tracebacks/``: a failed point's traceback, a file per point id."""
    path = Path(store.path)
    return path.with_name(path.stem + ".tracebacks")


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
    before = spec_of(latest["spec_json"].iloc[0])
    now = json.loads(plan.spec.to_json())
    differ = [key for key in now if before.get(key) != now[key]]
    detail = f" (the latest run differs in {', '.join(flag(k) for k in differ)})" if differ else ""
    return f"no earlier run of this sweep in {store.path}{detail}; starting a new run"


def finalise(plan: Plan, store: Store, run_id: str, say: Callable[[str], None] = lambda line: None) -> None:
    """What is known only once every point is in: each point's relative target (``--target
    rel:F``) and the to-target columns it gives, refined where the checks were coarse
    (``drivers.crossings``); then the run is marked finished."""
    if plan.spec.target is not None:
        checks = store.load("checks", [run_id])
        updates = relative_targets(store.load("points", [run_id]), checks, plan.spec.target.fraction)
        store.update_points(run_id, crossings.refine_all(plan, updates, checks, say))
    store.finish_run(run_id)


def run_flags(**flags) -> list[PointResult]:
    """Every point of ``plan_flags(**flags)``, run and returned without a store: the one
    spec -> plan -> points idiom for tests, benchmarks and asv."""
    the_plan = resolve_micro_batches(plan_flags(**flags))
    return [run_one(point, the_plan.workload(point)) for point in the_plan.points]
