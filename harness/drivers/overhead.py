"""How much the harness costs: its ``samples_per_s`` beside a plain hand-written PyTorch loop
on the same data, model, seed and thread count.

Timing noise between processes is large (+-30% here), so the two are compared inside one
process, interleaved in rounds (harness, plain, harness, plain, ...), and the median of the
per-round ratios is what counts. ``attribute`` splits the cost into its parts (the monitor,
the loop itself, the timed steps) the same way. Used by ``batchbench overhead``, the
pytest-benchmark suite and the asv suite.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from harness.workload.workload import Workload
from harness.drivers.plan import Plan, plan_flags
from harness.run.checks import evaluate
from harness.run.schedule import fine_count, due as due_checks
from harness.run.clock import MARKS_PER_STEP, PhaseClock, synchronize
from harness.run.engine import run_point
from harness.run.parts import make_loss, make_optimizer
from harness.config.points import PointSpec
from harness.store.schema import Status


TARGET_RATIO = 0.98
"""The harness's samples/s at least this share of the plain loop's, at every batch size and on
every device (``batchbench overhead``, the pytest-benchmark and asv suites)."""


@dataclass(frozen=True)
class OverheadResult:
    batch_size: int
    harness_samples_per_s: tuple[float, ...]
    plain_samples_per_s: tuple[float, ...]

    @property
    def ratios(self) -> np.ndarray:
        return np.array(self.harness_samples_per_s) / np.array(self.plain_samples_per_s)

    @property
    def ratio(self) -> float:
        """Median harness/plain throughput: 1.0 is no overhead, 0.97 is 3% slower."""
        return float(np.median(self.ratios))

    @property
    def ratio_iqr(self) -> tuple[float, float]:
        return _quartiles(self.ratios)

    def as_json(self) -> dict:
        return {"batch_size": self.batch_size, "rounds": len(self.ratios), "harness_ratio": self.ratio, "harness_ratio_iqr": list(self.ratio_iqr),
                "harness_samples_per_s": float(np.median(self.harness_samples_per_s)), "plain_samples_per_s": float(np.median(self.plain_samples_per_s))}


def _quartiles(values: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(values, 25)), float(np.percentile(values, 75))


OVERHEAD_POINT = {"dataset": "blobs", "dataset_sizes": 10_000, "model": "mlp", "hidden": "32", "threads": 1, "noise_samples": 0,
                  "data_placement": "device"}
"""The point both sides of a comparison train: a small MLP on blobs, its training set on the
device, one thread, the loss checks ``--check-every auto`` makes of cheap checks (its fine log
schedule, given explicitly so that the plain loop checks at the same steps)."""


def overhead_plan(batch_size: int, *, steps: int | None = None, device: str = "cpu", **flags) -> Plan:
    """The plan of the overhead point at ``batch_size`` (``OVERHEAD_POINT``, ``flags`` as
    ``batchbench run`` flags overriding it), ``default_steps`` unless given."""
    steps = steps or default_steps(device)
    return plan_flags(**{**OVERHEAD_POINT, "check_every": f"log:{fine_count(steps)}", **flags, "batch_sizes": batch_size, "steps": steps,
                         "devices": device})


CPU_STEPS, ACCELERATOR_STEPS = 600, 2000
"""Steps a round. On an H100, 600-step rounds were noise-bound (B = 32 read 0.93-1.00 across
four 21-round runs); 2000-step rounds gave an interquartile range of 0.895-0.938 in 13."""


def default_steps(device: str) -> int:
    return CPU_STEPS if device == "cpu" else ACCELERATOR_STEPS


def plain_loop(point: PointSpec, workload: Workload) -> float:
    """The loop a user would write, doing the harness's work and nothing more: a permutation per
    epoch, slices of it, forward, backward, step, and a check-set evaluation at the same steps
    as the point's loss checks (step 0, the point's ``check_every`` schedule, the end). Returns samples/s
    over the steps after the burn-in, the time between steps (the checks) left out, as the
    harness counts it. On a GPU the training set and each epoch's permutation live on the
    device, as the harness's point does (``data_placement``)."""
    torch.set_num_threads(point.threads)
    device, split = torch.device(point.device), workload.split
    X, y = split.X_train.to(device), split.y_train.to(device)
    X_check, y_check = split.X_check.to(device), split.y_check.to(device)
    model = workload.build()[0].to(device)
    optimizer = make_optimizer(point, model.parameters())
    loss_fn = make_loss(split.task)
    due = due_checks(point, time.perf_counter_ns)  # the harness's own schedule: the same checks at the same steps
    generator = torch.Generator().manual_seed(point.seed)
    n, batch = X.shape[0], point.batch_size

    def batches():
        while True:
            perm = torch.randperm(n, generator=generator)
            if device.type != "cpu":
                perm = perm.to(device)
            for start in range(0, n - batch + 1, batch):
                yield perm[start : start + batch]

    def check() -> None:
        synchronize(device)
        evaluate(model, X_check, y_check, split.task)  # ends with a sync (the loss as a number)

    stream = batches()
    check()
    checks_ns = 0
    for step in range(point.steps):
        if step == point.burn_in_steps:
            synchronize(device)
            start_ns, checks_ns = time.perf_counter_ns(), 0
        idx = next(stream)
        xb, yb = X[idx], y[idx]
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if due(step + 1):
            paused = time.perf_counter_ns()
            check()
            checks_ns += time.perf_counter_ns() - paused
    synchronize(device)
    seconds = (time.perf_counter_ns() - start_ns - checks_ns) / 1e9
    return (point.steps - point.burn_in_steps) * batch / seconds


def interleave(variants: dict[str, Callable[[], float]], rounds: int, progress: Callable[[int], None] | None = None) -> dict[str, tuple[float, ...]]:
    """Run each variant once a round, ``rounds`` times after one discarded round (it warms
    caches and the allocator), rotating the order each round so that no variant always runs in
    another's wake. Returns each variant's samples/s, one per counted round."""
    names = list(variants)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds + 1):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            rate = variants[name]()
            if round_index:
                rates[name].append(rate)
        if progress is not None:
            progress(round_index)
    return {name: tuple(values) for name, values in rates.items()}


def _harness(run: PointSpec, workload: Workload, points: list[dict] | None = None, **kwargs) -> Callable[[], float]:
    """A harness point as a variant of ``interleave``; its point rows go to ``points``."""
    def one() -> float:
        result = run_point(run, workload, **kwargs)
        if result.status != Status.OK:
            raise RuntimeError(f"harness point failed: {result.row['error']}")
        if points is not None:
            points.append(result.row)
        return result.row["samples_per_s"]

    return one


def against_plain(batch_size: int, *, rounds: int = 21, progress: Callable[[int], None] | None = None, **plan_kwargs) -> OverheadResult:
    """The harness beside the plain loop, interleaved for ``rounds`` rounds (``interleave``)."""
    the_plan = overhead_plan(batch_size, **plan_kwargs)
    (run,) = the_plan.points
    workload = the_plan.workload(run)
    rates = interleave({"harness": _harness(run, workload), "plain": lambda: plain_loop(run, workload)}, rounds, progress)
    return OverheadResult(batch_size, rates["harness"], rates["plain"])


def sampler_cost(batch_size: int, *, interval_s: float = 0.1, rounds: int = 21, **plan_kwargs) -> OverheadResult:
    """The monitor's cost: harness points with the sampler at ``interval_s`` against the same
    points without it, interleaved like ``against_plain`` (``plain_samples_per_s`` holds the latter)."""
    with_sampler = overhead_plan(batch_size, sample_interval=interval_s, **plan_kwargs)
    (on,), (off,) = with_sampler.points, overhead_plan(batch_size, sample_interval=0, **plan_kwargs).points
    rates = interleave({"on": _harness(on, with_sampler.workload(on)), "off": _harness(off, with_sampler.workload(off))}, rounds)
    return OverheadResult(batch_size, rates["on"], rates["off"])


NEVER = 2**62
"""A sampling period no point reaches: after the burn-in only its first step is timed."""

VARIANTS = ("harness", "no_monitor", "untimed", "all_timed", "plain")
"""What ``attribute`` runs each round: the harness as a sweep runs it; without the monitor
thread; without the monitor and with no timed step after the burn-in's (the loop's own cost:
its data stream, loss reads and bookkeeping); without the monitor and every step timed; the
plain loop."""


@dataclass(frozen=True)
class Attribution:
    """Where the harness's cost goes at one batch size, from ``attribute``. Each variant's
    ratio is the median over rounds of its samples/s over the plain loop's in the same round."""

    batch_size: int
    device: str
    steps: int
    burn_in_steps: int
    rates: tuple[tuple[str, tuple[float, ...]], ...]
    """(variant, samples/s per round), in ``VARIANTS`` order."""
    timed_steps: int
    """Measured steps the harness timed (its choice of k, from the marks' budget)."""
    mark_assumed_s: float
    """The cost of one mark that the harness assumed when it chose k: the tight-loop cost on
    this device, raised to its mode's floor (``clock.MARK_COST_FLOOR_S``)."""

    def _rates(self, name: str) -> np.ndarray:
        return np.array(dict(self.rates)[name])

    def versus_plain(self, name: str = "harness") -> OverheadResult:
        """One variant beside the plain loop, round by round."""
        rates = dict(self.rates)
        return OverheadResult(self.batch_size, rates[name], rates["plain"])

    @property
    def measured_steps(self) -> int:
        return self.steps - self.burn_in_steps

    @property
    def timed_step_cost_s(self) -> float:
        """What timing a step costs inside the loop (its five marks and its loss read), from
        the rounds' every-step-timed against no-step-timed times per step (paired, median)."""
        extra_s = self.batch_size / self._rates("all_timed") - self.batch_size / self._rates("untimed")
        return float(np.median(extra_s)) * self.measured_steps / max(1, self.measured_steps - 1)

    @property
    def timed_step_assumed_s(self) -> float:
        """What the harness took a timed step's marks to cost when it chose k."""
        return MARKS_PER_STEP * self.mark_assumed_s

    @property
    def marks_share(self) -> float:
        """Share of the harness's measured window its timed steps cost, at the in-loop price."""
        step_s = self.batch_size / float(np.median(self._rates("harness")))
        return self.timed_step_cost_s * self.timed_steps / (self.measured_steps * step_s)

    def as_json(self) -> dict:
        out = self.versus_plain().as_json()
        for name in VARIANTS[1:-1]:
            versus = self.versus_plain(name)
            out.update({f"{name}_ratio": versus.ratio, f"{name}_ratio_iqr": list(versus.ratio_iqr)})
        out.update({"timed_steps": self.timed_steps, "timed_step_assumed_s": self.timed_step_assumed_s, "timed_step_cost_s": self.timed_step_cost_s,
                    "marks_share": self.marks_share})
        return out


def attribute(batch_size: int, *, rounds: int = 21, progress: Callable[[int], None] | None = None,
              now_ns: Callable[[], int] = time.perf_counter_ns, **plan_kwargs) -> Attribution:
    """Price the harness's parts the way its overhead is measured: ``VARIANTS`` interleaved in
    one process, each against the plain loop of its round. The monitor's share is ``harness``
    against ``no_monitor``; the loop's own is ``untimed`` against ``plain``; what a timed step
    costs in the loop comes from ``all_timed`` against ``untimed``, and is what the choice of k
    should have assumed (``mark_assumed_s``, measured in a tight loop, may read low).
    ``now_ns`` is the harness's clock (a test gives its marks a known cost this way)."""
    the_plan = overhead_plan(batch_size, **plan_kwargs)
    (run,) = the_plan.points
    (quiet,) = overhead_plan(batch_size, **{**plan_kwargs, "sample_interval": 0}).points
    workload, quiet_workload = the_plan.workload(run), the_plan.workload(quiet)
    points: list[dict] = []
    variants = {"harness": _harness(run, workload, points, now_ns=now_ns), "no_monitor": _harness(quiet, quiet_workload, now_ns=now_ns),
                "untimed": _harness(quiet, quiet_workload, now_ns=now_ns, timed_every=NEVER),
                "all_timed": _harness(quiet, quiet_workload, now_ns=now_ns, timed_every=1), "plain": lambda: plain_loop(run, workload)}
    rates = interleave(variants, rounds, progress)
    device = torch.device(run.device)
    return Attribution(batch_size, run.device, run.steps, run.burn_in_steps, tuple((name, rates[name]) for name in VARIANTS),
                       int(np.median([p["timed_steps"] for p in points])), PhaseClock(run.timing_mode, device, now_ns).mark_cost_s())
