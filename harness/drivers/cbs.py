"""``batchbench cbs``: the critical batch size as training proceeds, and the ramp it implies.

1. **Base run** at B0 from the initial weights, with ``checkpoints`` loss checks spaced
   geometrically in samples seen; at each a snapshot (model, optimizer state, RNG, and the
   position in the data order) is kept in memory (``run.snapshot``).
2. **Branches**: from each snapshot, copies continue at k x B0 (k = 1, 2, 4, ... up to the
   training set) for the same ``branch_samples`` each, at the rate the optimizer's rule gives
   (SGD: lr x k; Adam/AdamW: lr x sqrt(k)) and at ``rates`` - 1 halvings of it, the best kept
   (where the rule pushes past stability the rate diverges and a halved one stands in: the rule
   "capped where it diverges"). Each branch reads the samples the base run would have read
   next, so k = 1 is the base run itself, step for step.
3. **CBS(t)**: per checkpoint, ``analysis.cbs.critical_batch`` on the branches' smoothed losses.
4. **The ramp** (``analysis.cbs.ramp``) and its **verification**: from the initial weights, the
   ramp (a chain of points, each starting from the last one's end) and a constant run at the
   ramp's final batch, for the base run's sample budget, against the base run (constant B0).

Every run is a stored point (``role``, ``start_sample``, ``branch_factor``); what the command
prints is ``analysis.cbs.measured`` of them, as ``report`` and ``analyze`` read them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Callable

from harness import env
from harness.analysis.cbs import DEFAULT_TOLERANCE, Measured, Stage, measured, ramp
from harness.config.points import PointSpec
from harness.config.policies import ADAPTIVE
from harness.config.values import CheckEvery
from harness.drivers.plan import Plan
from harness.errors import RunError
from harness.config.execution import Executor
from harness.drivers.executors import Call, Local, OnRay, PointsInterrupted, executor_for
from harness.run.snapshot import Snapshot
from harness.run.measurement import PointResult
from harness.store.schema import Status
from harness.store.sqlite import Store

HASH_PREFIX = "cbs:"
NOISE_SAMPLES = 512
"""The base run estimates the gradient noise scale B_simple at its checks from this many
per-example gradients (unless --noise-samples says otherwise), to set beside the measured curve."""
BRANCH_CHECKS = 8
"""Loss checks a branch or ramp stage makes (evenly spaced); a branch's loss is the mean of the last few."""


@dataclass(frozen=True)
class CbsSettings:
    checkpoints: int = 10
    branch_samples: int | None = None
    """Samples each branch trains (None: one pass over the training set)."""
    tolerance: float = DEFAULT_TOLERANCE
    rates: int = 2
    """Learning rates a branch tries: the rule's, and halvings of it."""
    largest: int | None = None
    """The largest branch batch (None: the training set)."""


@dataclass(frozen=True)
class CbsResult:
    run_id: str
    measured: Measured

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, **self.measured.as_dict()}


class _Runner:
    """Runs points through the executor (here, or at once on Ray) and stores each as it ends."""

    def __init__(self, plan: Plan, store: Store, run_id: str, executor: Local | OnRay):
        self.plan, self.store, self.run_id, self.executor = plan, store, run_id, executor
        self.own_rates = plan.own_recipe is not None
        """A LightningModule: branches move its own rates (``lr_scale``), not ``--lr``."""

    def run(self, point: PointSpec, start: Snapshot | None = None) -> tuple[PointResult, list[Snapshot]]:
        return self.run_all([(point, {"start": start, "keep": True})])[0]

    def run_all(self, calls: list[Call]) -> list[tuple[PointResult, list[Snapshot]]]:
        """Every call (independent of each other: on Ray they run at once), in their order."""
        done: dict[int, tuple[PointResult, list[Snapshot]]] = {}
        try:
            for index, result, snapshots in self.executor.calls(calls, self.plan.workload):
                self.store.add_point(self.run_id, result)
                done[index] = (result, snapshots)
        except PointsInterrupted as stop:  # Ctrl-C: the points in flight are kept as interrupted
            for interrupted in stop.results:
                self.store.add_point(self.run_id, interrupted)
            raise
        except KeyboardInterrupt:  # between points (storing one): the same for those still in flight
            for interrupted in self.executor.stop():
                self.store.add_point(self.run_id, interrupted)
            raise
        return [done[i] for i in range(len(calls))]

    def measured(self, tolerance: float) -> Measured:
        points, checks = self.store.load("points", [self.run_id]), self.store.load("checks", [self.run_id])
        return measured(points, checks, tolerance)


def measure(plan: Plan, store: Store, settings: CbsSettings = CbsSettings(), say: Callable[[str], None] = lambda line: None,
            executor: Executor = Executor()) -> CbsResult:
    """The whole protocol for the plan's point (B0, lr0): base, branches, ramp, verification;
    on Ray (``executor``) the branches of every checkpoint at once, and the ramp beside the
    constant run it is verified against."""
    with executor_for(executor, say=say) as where:
        return _measure(plan, store, settings, say, where)


def _measure(plan: Plan, store: Store, settings: CbsSettings, say: Callable[[str], None], executor: Local | OnRay) -> CbsResult:
    base = plan.points[0]
    environment = env.environment(list(plan.devices), plan.spec.threads)
    spec_json = json.dumps({**json.loads(plan.spec.to_json()), "cbs": dataclasses.asdict(settings)})
    run_id, _ = store.start_run(spec_json, HASH_PREFIX + plan.sweep_hash, environment, resume=False)
    runner = _Runner(plan, store, run_id, executor)
    largest = min(settings.largest or base.train_size, base.train_size)
    own = plan.own_recipe  # a LightningModule: its own rates, times the rule's factor (lr_scale)
    exponent = 0.5 if (own.optimizer if own else base.optimizer) in ADAPTIVE else 1.0
    base_point = dataclasses.replace(base, role="base", check_every=CheckEvery("log", settings.checkpoints + 1), stop_at_target=False,
                                     noise_samples=base.noise_samples or min(NOISE_SAMPLES, base.train_size))
    rate = f"{own.optimizer}'s own rates" if own else f"lr {base.lr:g}"
    say(f"base run: B={base.batch_size}, {rate}, {base.steps:,} steps, {settings.checkpoints} checkpoints")
    result, snapshots = runner.run(base_point)
    if result.status != Status.OK:
        store.finish_run(run_id)
        smaller = "smaller rates in its configure_optimizers" if own else "a smaller --lr"
        raise RunError("--model" if own else "--lr", f"the base run ended {result.status} ({result.row.get('error')}); give {smaller} or another --batch-sizes")
    factors = [2**i for i in range(int(math.log2(max(1, largest // base.batch_size))) + 1)]
    delta = settings.branch_samples or base.train_size
    kept = snapshots[:-1]  # the last is the end of the budget: nothing to branch into
    runner.run_all([branch for snap in kept for k in factors for branch in _branches(runner, base_point, snap, k, delta, exponent, settings.rates)])
    for snap, found in zip(kept, runner.measured(settings.tolerance).curve):
        say(f"  after {snap.samples:,} samples (check loss {snap.check_loss:.4g}): critical batch {found.text()}")
    stages = ramp(runner.measured(settings.tolerance).curve, base.batch_size, 1.0, exponent, largest)  # each stage's rate as a factor of B0's
    say("ramp: " + " -> ".join(f"B={s.batch_size} from {s.start_samples:,}" for s in stages) + "; verifying it")
    _verify(runner, base_point, stages)
    store.finish_run(run_id)
    return CbsResult(run_id, runner.measured(settings.tolerance))


def _stage(base: PointSpec, role: str, batch: int, factor: float, steps: int, start_sample: int, own_rates: bool = False) -> PointSpec:
    """A point that continues the base run's workload at another batch, length and rate: the
    base's times ``factor`` (``own_rates``, a LightningModule: ``lr_scale`` over its own rates)."""
    rate = {"lr_scale": factor} if own_rates else {"lr": base.lr * factor}
    return dataclasses.replace(base, role=role, batch_size=batch, steps=steps, start_sample=start_sample, noise_samples=0,
                               branch_factor=batch // base.batch_size, burn_in_steps=min(base.burn_in_steps, steps // 2),
                               check_every=CheckEvery("steps", max(1, steps // BRANCH_CHECKS)), **rate)


def _branches(runner: _Runner, base: PointSpec, snap: Snapshot, factor: int, delta: int, exponent: float, rates: int) -> list[Call]:
    """The branch at ``factor`` x B0 from ``snap``, at the rule's rate and its halvings."""
    batch = base.batch_size * factor
    steps = max(1, math.ceil(delta / batch))
    return [(_stage(base, "branch", batch, factor**exponent / 2**j, steps, snap.samples, runner.own_rates), {"start": snap}) for j in range(rates)]


def _verify(runner: _Runner, base: PointSpec, stages: tuple[Stage, ...]) -> None:
    """The ramp, a chain of points each continuing the last from its end, and a constant run at
    its final batch, both from the initial weights for the base run's samples."""
    budget = base.steps * base.batch_size
    final, beside = stages[-1], []
    if final.batch_size != base.batch_size:  # the constant run at the ramp's final batch, beside the ramp's first stage
        steps = max(1, round(budget / final.batch_size))
        beside = [(dataclasses.replace(_stage(base, "constant", final.batch_size, final.lr, steps, 0, runner.own_rates),
                                       check_every=CheckEvery("steps", max(1, steps // 40))), {})]
    start = None
    for i, stage in enumerate(stages):
        end = stages[i + 1].start_samples if i + 1 < len(stages) else budget
        steps = max(1, round((end - stage.start_samples) / stage.batch_size))
        chain: Call = (_stage(base, "ramp", stage.batch_size, stage.lr, steps, stage.start_samples, runner.own_rates), {"start": start, "keep": True})
        (result, snapshots), *_ = runner.run_all([chain, *(beside if i == 0 else [])])
        if result.status != Status.OK or not snapshots:
            return
        start = snapshots[-1]
