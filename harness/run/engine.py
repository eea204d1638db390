"""The engine: one point, trained and measured, top to bottom.

    run_point:  prepare -> check at step 0 -> run_steps(burn-in, every step timed)
                -> choose k -> run_steps(measured, every k-th timed) -> finish

It is written like a hand-written PyTorch loop on purpose, so that the harness costs what such a
loop costs (``batchbench overhead`` holds it to that). The rules that keep it honest:

- ``PhaseClock.mark()`` at each phase boundary of a timed step (``run.step``); nothing else
  reads a clock inside a step. Throughput is the measured window's own wall clock, never marks.
- Which steps are timed and which batch losses are read are rules on the step number
  (``run.schedule``), the same whatever the burn-in is.
- No hidden sync inside a timed phase: on an accelerator batch losses stay detached tensors
  until a loss check (``checks.BatchLosses``), read there after the window's one sync.
- Burn-in steps train the model like any other step but are left out of the statistics.
- The loss check is its own phase, between steps, after the clock's window has closed.

A run-time failure (out of memory, a diverging loss, an error in user code) becomes the point's
status, and what was measured until then is kept. This module launches nothing: a data-parallel
point is started by ``harness.parallel.launch``, whose ranks each call ``run_point`` with their
``rank``; from here only the collectives are used.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from harness.config.points import PointSpec
from harness.run.collectives import all_max, all_mean, exposed_comm_s
from harness.run.batches import fetcher
from harness.measures.targets import reached
from harness.run.checks import BatchLosses, CheckSet, LossCheck, Outcome, evaluate
from harness.run.clock import PhaseClock, sample_every, split_steps, synchronize
from harness.run.measurement import Measurement, PointResult
from harness.run.memory import PeakMemory, analytic_bytes
from harness.run.parts import matmul_precision, recipe_of
from harness.run.prepare import Built, Prepared, build, prepare
from harness.run.guard import deadline, one_line, out_of_memory, start_sampler
from harness.run.refine import Refiner, Replay, resolved
from harness.run.sampler import max_of
from harness.run import snapshot
from harness.run.snapshot import Snapshot
from harness.run.schedule import LOSS_EVERY, CappedChecks, due, first_timed, fit_window, next_check
from harness.run.step import Step, derivative_of, update_of
from harness.errors import users_own
from harness.store.schema import Status
from harness.workload.workload import Workload

Prune = Callable[[dict, "float | None"], "str | None"]
"""Asked after every loss check with its ``checks`` row and the median step time so far (of the
timed steps after the burn-in; None before any): a reason to stop the point now (its status
becomes ``pruned``), or None to go on. ``batchbench tune`` stops trials that can no longer win."""


class Diverged(Exception):
    """The loss became NaN or infinite."""


class Pruned(Exception):
    """The point was stopped early by its ``prune`` callback."""


class PointInterrupted(KeyboardInterrupt):
    """Ctrl-C during a point. ``result`` is the point as far as it went (status
    ``interrupted``), for the sweep to store before it stops."""

    def __init__(self, result: PointResult):
        super().__init__(Status.INTERRUPTED.value)
        self.result = result


@dataclass(frozen=True)
class PointOptions:
    """How ``run_point`` runs a point, beside the point itself."""

    now_ns: Callable[[], int] = time.perf_counter_ns
    """The host clock (tests give a counting one)."""
    rank: tuple[int, int] | None = None
    """(rank, world size) when this process is one rank of a data-parallel point."""
    prune: Prune | None = None
    """May stop the point at a loss check (status ``pruned``): ``batchbench tune``."""
    timed_every: int | None = None
    """Forces k, the period of timed steps after the burn-in (``batchbench overhead
    --attribute`` prices the marks this way); None chooses it from the marks' budget."""
    progress: Callable[[int, int], None] | None = None
    """Told ``(done, steps)`` at every loss check (between steps, outside timing)."""
    timeout_s: float | None = None
    """Ends a point that runs longer as an ``error`` (``--point-timeout``; main thread only)."""
    start: Snapshot | None = None
    """Continue from this snapshot (model, optimizer, RNG) instead of the initial weights; the
    point's ``start_sample`` places it in the data order."""
    snapshots: list | None = None
    """Where to keep a ``Snapshot`` at every loss check after the first (``batchbench cbs``)."""
    measure_after_target: bool = True
    """Train on past an early target to ``MEASURED_AFTER_TARGET`` timed steps (False: a tune
    trial at a batch size whose step time another trial already measured)."""
    replay: tuple[int, int] | None = None
    """(before, hit): an earlier run of this point checked at both and saw its target (learnt
    only afterwards: ``drivers.crossings``) crossed at ``hit`` only. Train to ``before`` with no
    other check, bisect (before, hit] from there (``run.refine``) and stop."""


MEASURED_AFTER_TARGET = 20
"""A point that stops at its target (``--stop-at-target``, a tune trial) before it has timed this
many steps past its burn-in trains on to there (every k-th step is timed: this costs about 20 x
100 marks' time), its steps to target already fixed: a step time measured only in the burn-in is
a warm-up time, not the point's."""


def run_point(point: PointSpec, workload: Workload, **options) -> PointResult:
    """Train one point (its model and data: ``workload``, ``Workload.of(point, ...)``) and
    measure it; ``options`` are ``PointOptions``'s fields.

    Whatever user code raises becomes the point's status, ``SystemExit`` included; Ctrl-C
    raises ``PointInterrupted`` carrying the point so far. The working directory and torch's
    thread count are put back as the caller had them (a count a plug-in changed during the
    point is flagged ``threads_changed``)."""
    if point.skip_reason:
        return PointResult(point, Measurement(workload.split.n_features, workload.split.n_classes), Status.SKIPPED, point.skip_reason)
    opts = PointOptions(**options)
    if point.world_size > 1 and opts.rank is None:
        raise ValueError(f"a point of {point.world_size} ranks runs through harness.parallel.launch, one run_point per rank")
    callers_threads = torch.get_num_threads()
    torch.set_num_threads(point.threads)
    origin_ns, cwd = time.perf_counter_ns(), os.getcwd()
    peaks = PeakMemory(point.device)
    training = Training(point, workload, peaks, opts)
    with deadline(opts.timeout_s):
        status, error, trace, readings = _attempt(training, opts.prune, opts.timed_every, origin_ns)
    measurement = training.measurement(origin_ns, readings, peaks.read(sampled_rss_max=max_of(readings, "rss_bytes")))
    if status != Status.OK:
        gc.collect()  # drop the failed point's tensors before the next point allocates
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if os.getcwd() != cwd:  # a plug-in moved the process: later paths (the store, the report) must mean what they meant
        os.chdir(cwd)
    changed = torch.get_num_threads() != point.threads  # a plug-in changed the thread count: the point did not run as recorded
    outcome = PointResult(point, measurement, status, error, trace, flags=("threads_changed",) if changed else ())
    torch.set_num_threads(callers_threads)  # as the caller had it (a notebook's, a test's)
    if status == Status.INTERRUPTED:
        raise PointInterrupted(outcome)
    return outcome


def _attempt(training: "Training", prune: Prune | None, timed_every: int | None, origin_ns: int):
    """The point's training with its monitor, as (status, error, traceback, readings)."""
    status, error, trace, sampler = Status.OK, None, None, None
    try:
        sampler = start_sampler(training.point, origin_ns)
        train(training, prune, timed_every)
    except Diverged as exc:
        status, error = Status.DIVERGED, str(exc)
    except Pruned as exc:
        status, error = Status.PRUNED, str(exc)
    except KeyboardInterrupt as exc:  # a stop; a plug-in's own (no signal came) is its point's error, like anything it raises
        own = users_own(exc)
        status, error, trace = (Status.ERROR, one_line(exc), traceback.format_exc()) if own else (Status.INTERRUPTED, f"interrupted after {training.steps_done} steps", None)
    except BaseException as exc:  # user code (a plug-in) may raise anything, SystemExit too: it becomes the point's status
        status, error, trace = (Status.OOM if out_of_memory(exc) else Status.ERROR), one_line(exc), traceback.format_exc()
    finally:
        readings = sampler.stop() if sampler is not None else []
    return status, error, trace, readings


def train(training: "Training", prune: Prune | None, timed_every: int | None) -> None:
    """The point's training, in the order it happens. A point that stops at its target before
    ``MEASURED_AFTER_TARGET`` timed steps after its burn-in trains on to there (no more checks)
    for its step time."""
    point, burn_in = training.point, training.point.burn_in_steps
    with matmul_precision(point):
        training.prepare()
        measure_on = training.replay is None and training.measure_after_target
        stopped = training.check(0) if training.replay is None or training.replay[0] == 0 else False  # a replay checks only where it bisects from
        if not stopped:
            stopped = training.run_steps(range(0, burn_in), 1, prune)
        if stopped and measure_on:  # reached in the burn-in: the rest of it, no more checks
            training.due = lambda done: False
            training.run_steps(range(training.steps_done, burn_in), 1, None)
        training.start_measuring(timed_every)
        if not stopped:
            stopped = training.run_steps(range(burn_in, point.steps), training.timed_every, prune)
        if stopped and measure_on:
            training.due = lambda done: False
            end = first_timed(burn_in, training.timed_every) + (MEASURED_AFTER_TARGET - 1) * training.timed_every + 1
            training.run_steps(range(training.steps_done, min(point.steps, end)), training.timed_every, None)
        training.finish()


class Training:
    """One point's training, live: its state between steps. Only this module writes it;
    ``measurement()`` freezes what it measured into a ``Measurement``, also when training
    failed midway."""

    def __init__(self, point: PointSpec, workload: Workload, peaks: PeakMemory, opts: PointOptions):
        self.point, self.workload, self.split, self.peaks = point, workload, workload.split, peaks
        self.now_ns, self.rank, self.progress, self.start, self.snapshots = opts.now_ns, opts.rank, opts.progress, opts.start, opts.snapshots
        self.replay, self.measure_after_target = opts.replay, opts.measure_after_target
        self.refiner: Refiner | None = None
        self.device = torch.device(point.device)
        self.clock = PhaseClock(point.timing_mode, self.device, opts.now_ns)
        self.losses = BatchLosses(self.device)
        self.built: Built | None = None
        self.parts: Prepared | None = None
        self.checker: LossCheck | None = None
        self.step: Step | None = None
        self.due: Callable[[int], bool] | None = None
        self.checks: list[dict] = []
        self.timed: list[int] = []
        self.timed_every = 1
        self.steps_done = 0
        self.loop_start_ns = self.measure_start_ns = opts.now_ns()
        self.paused_ns = 0
        self.measured_ns: int | None = None
        self.wall_ns = 0
        self.final: tuple[float | None, float | None] = (None, None)
        self.comm_s: float | None = None

    def prepare(self) -> None:
        """Model, optimizer, data and the untimed measurements (FLOPs, compile), then the step,
        the loss check and, with a target, the refiner of its crossing; the clock starts from here."""
        point, rank, device = self.point, self.rank, self.device
        self.built = build(point, self.workload, device)
        self.parts = parts = prepare(point, self.split, self.built, device, rank)
        if self.start is not None:  # continue another point from its snapshot (after the untimed counting steps), at its own rate
            snapshot.restore(self.start, parts.model, parts.optimizer, device, own_rates=True)
        derivative = derivative_of(parts.trained, parts.loss_fn, parts.autocast, parts.scaler, point.micro_batch_size)
        update = update_of(parts.optimizer, parts.scaler, recipe_of(point, parts.own_recipe))
        self.step = Step(fetcher(point, parts.X, parts.y, device, rank, self.split.train_items), derivative, update)
        self.due = due(point, self.now_ns) if self.replay is None else self.replay[0].__eq__
        check_set = CheckSet(parts.model, self.split.X_check.to(device), self.split.y_check.to(device), self.split.task, parts.own_loss)
        self.checker = LossCheck(point, check_set, self.losses, self.now_ns, noise=parts.noise, peaks=self.peaks,
                                 all_mean=None if rank is None else (lambda value: all_mean(value, device)))
        if (point.target_loss is not None or point.target_accuracy is not None) and rank is None:
            def fetch_from(sample: int):
                return fetcher(dataclasses.replace(point, start_sample=sample), parts.X, parts.y, device, None, self.split.train_items)

            self.refiner = Refiner(Replay(parts.model, parts.optimizer, derivative, update, fetch_from, check_set.evaluate,
                                          lambda loss, acc: reached({"eval_loss": loss, "eval_acc": acc}, point.target_loss, point.target_accuracy),
                                          device, parts.own_recipe.scheduler if parts.own_recipe else None, parts.scaler,
                                          point.start_sample or 0, point.batch_size), self.now_ns,
                                   known_high=None if self.replay is None else self.replay[1])

    def check(self, done: int) -> bool:
        """A loss check after ``done`` steps; True when the point is to stop at its target."""
        checker, parts = self.checker, self.parts
        assert checker is not None and parts is not None, "prepare() first"
        outcome: Outcome = checker(done)
        self.checks.append(outcome.row)
        if self.snapshots is not None and done > 0 and not outcome.diverged:
            self.snapshots.append(snapshot.take(parts.model, parts.optimizer, done, (self.point.start_sample or 0) + done * self.point.batch_size,
                                                outcome.row["eval_loss"], self.device))
        if self.progress is not None:
            self.progress(done, self.point.steps)
        if outcome.diverged:
            raise Diverged(outcome.diverged)
        if done == 0:
            if self.point.check_every.auto and self.rank is None:  # ranks check at the same steps: no timing-dependent schedule
                self.due = CappedChecks(self.point, self.now_ns, checker.check_ns[-1] / 1e9)
            self.loop_start_ns = self.now_ns()
            self.measure_start_ns = checker.start_ns
        refiner = self.refiner
        if refiner is not None:
            checker.aside(lambda: refiner.at_check(done, outcome.reached, self.coarse_after(done)))
            if self.replay is not None and refiner.crossing is not None:
                return True
        return outcome.reached and self.point.stop_at_target

    def coarse_after(self, done: int) -> bool:
        """Whether the interval to the next check is too wide to give steps to target within
        ``refine.RESOLUTION`` (or it is not known yet: ``auto`` settles after step 1)."""
        point = self.point
        if isinstance(self.due, CappedChecks):
            upcoming = self.due.upcoming(done)
        else:
            upcoming = next_check(point, point.check_every, done)
        return upcoming is None or not resolved(done, upcoming)

    def run_steps(self, steps: range, every: int, prune: Prune | None) -> bool:
        """Train ``steps``, timing those whose number is a multiple of ``every``, with the loss
        checks that fall due between them; True when a check stopped the point at its target."""
        assert self.step is not None and self.due is not None, "prepare() first"
        fetch, derivative, update = self.step.fetch, self.step.derivative, self.step.update
        mark, keep, due_after, timed_numbers = self.clock.mark, self.losses.keep, self.due, self.timed
        done = self.steps_done
        try:
            for step in steps:
                is_timed = step % every == 0
                if is_timed:  # a mark at each phase boundary: step start, after data, derivative and update
                    mark()
                    xb, yb = fetch()
                    mark()
                    loss = derivative(xb, yb)
                    mark()
                    update(step)
                    mark()
                else:
                    xb, yb = fetch()
                    loss = derivative(xb, yb)
                    update(step)
                done = step + 1
                check_now = due_after(done)
                counted = check_now or step % LOSS_EVERY == 0  # not every step: reading a loss costs as much as the rest of the harness
                if is_timed or counted:
                    keep(step, loss, counted)  # on a device a detached tensor, read at the next check: no per-step sync
                if is_timed:  # the step's end, after its loss read
                    mark()
                    timed_numbers.append(step)
                if check_now and self.pause_for_check(done, prune):
                    return True
            return False
        finally:
            self.steps_done = done

    def pause_for_check(self, done: int, prune: Prune | None) -> bool:
        """A loss check between steps, it and all its bookkeeping left out of the window; True
        when the point stops at its target (``Pruned`` when ``prune`` stops it)."""
        paused = self.now_ns()
        self.clock.close_window()
        self.steps_done = done
        stop = self.check(done)
        reason = None if stop or prune is None else prune(self.checks[-1], self.median_step_s())
        self.paused_ns += self.now_ns() - paused
        if reason:
            raise Pruned(reason)
        return stop

    def median_step_s(self) -> float | None:
        """The median wall time of the timed steps after the burn-in so far; None before any
        (a burn-in step's time is a warm-up time: a trial pruned by it was pruned by the warm-up)."""
        walls = self.clock.closed_steps_s()
        numbers = self.timed[: len(walls)]
        measured = [w for w, step in zip(walls, numbers) if step >= self.point.burn_in_steps]
        return float(np.median(measured)) if measured else None

    def start_measuring(self, timed_every: int | None) -> None:
        """End the burn-in: close its window (the measured window starts on an idle device),
        choose k from its steps' times, and start the measured window's clock."""
        self.clock.close_window()
        steps_s = self.clock.closed_steps_s()
        every = timed_every or sample_every(self.clock.mark_cost_s(), float(np.median(steps_s)) if len(steps_s) else None, multiple_of=LOSS_EVERY)
        if self.rank is not None:  # every rank times the same steps, so their rows line up
            every = all_max(every, self.device)
        self.timed_every = fit_window(every, self.point.burn_in_steps, self.point.steps)
        self.measure_start_ns, self.paused_ns = self.now_ns(), 0

    def finish(self) -> None:
        """Close the last window; the last check, the final training loss, communication time."""
        parts, checker, device = self.parts, self.checker, self.device
        assert parts is not None and checker is not None, "prepare() first"
        self.clock.close_window()
        synchronize(device)
        self.measured_ns = self.now_ns() - self.measure_start_ns - self.paused_ns
        if self.checks[-1]["step"] != self.steps_done:
            self.check(self.steps_done)
        self.wall_ns = self.now_ns() - checker.start_ns - sum(checker.aside_ns)
        self.peaks.enter_check()  # outside the timed loop: the final loss on the whole training set (its memory is a check's)
        self.final = evaluate(parts.model, parts.X.to(device), parts.y.to(device), self.split.task, parts.own_loss)
        if self.rank is not None:
            per_rank = self.point.per_rank_batch_size
            self.comm_s = exposed_comm_s(parts.trained, parts.X[:per_rank].to(device), parts.y[:per_rank].to(device), parts.loss_fn, device)

    def measurement(self, origin_ns: int, readings: list, memory: dict) -> Measurement:
        """What was measured, frozen: the clock's windows as per-step phase times, with the step
        numbers they belong to (the marks of a window a failure left open are dropped)."""
        parts, checker = self.parts, self.checker
        phases = _phases(self.clock, (self.clock.first_mark_ns() or self.loop_start_ns) - origin_ns)
        facts = {} if self.built is None else dict(self.built.facts)
        if parts is not None:
            facts.update(parts.facts, **analytic_bytes(parts.model, parts.optimizer), comm_s=self.comm_s)
        if parts is not None and parts.tensor_peak_bytes is not None:  # the CPU's live tensor bytes, from the counted step
            memory = {**memory, "peak_device_mem_bytes": parts.tensor_peak_bytes}
        return Measurement(
            n_features=self.split.n_features, n_classes=self.split.n_classes, phases=phases, timed=tuple(self.timed[: len(phases["data"])]),
            timed_every=self.timed_every, batch_loss=self.losses.floats(), checks=tuple(self.checks),
            check_ns=tuple(checker.check_ns) if checker else (), noise_ns=tuple(checker.noise_ns) if checker else (),
            steps_done=self.steps_done, wall_ns=self.wall_ns, measured_ns=self.measured_ns, final_train_loss=self.final[0],
            final_train_acc=self.final[1], facts=facts, memory=memory, readings=tuple(readings),
            check_every=self.due.effective.text() if isinstance(self.due, CappedChecks) and self.due.effective != self.point.check_every else None,
            crossing=None if self.refiner is None else self.refiner.crossing,
        )


def _phases(clock: PhaseClock, offset_ns: int) -> dict[str, np.ndarray]:
    """Every closed window's steps, joined: phase seconds, ``step_wall`` and ``start`` (seconds
    since the point began: the window's first mark placed on the host clock by ``offset_ns``)."""
    windows = [split_steps(window) for window in clock.windows()]
    names = ("data", "derivative", "update", "step_wall", "start")
    joined = {name: np.concatenate([w[name] for w in windows]) if windows else np.empty(0) for name in names}
    joined["start"] = joined["start"] + offset_ns / 1e9
    return joined


