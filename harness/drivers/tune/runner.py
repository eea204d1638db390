"""``batchbench tune``: run the search of ``harness.drivers.tune.policy`` through the harness, every
trial an ordinary stored point, so a tune run reads like any other in ``report`` and ``analyze``.

Per device x dataset size (x sampling, ranks, placement) of the plan:

1. The gradient noise scale B_simple at the initial weights (``trials.initial_noise_scale``)
   places the first batch size; it underestimates the critical batch size later in training,
   which is why the search grows the batch first.
2. With ``--target rel:F`` (the default) a pilot trial at the first batch size and ``--lr``
   runs its whole budget and fixes the target from its own curve; a target it reaches within the
   first 10% of its budget is flagged (it measures the first plateau).
3. The search (``policy.search``): trials judged by steps to target, batch sizes by steps times
   their median step time; losing trials stop at a check (status ``pruned``).
4. The finalists (within 1.3x of the best; the winner alone too) are run again over ``REPEATS``
   more seeds, in rounds across the finalists, so that their steps are medians over data orders.
   A trial trains on past its target for a step time only at a batch size no trial has timed
   yet (step time does not depend on the rate or the seed); the others stop at the target.
5. The answer comes from all the trials, as ``batchbench analyze`` would give it for this run:
   the least steps x step time, and the batch sizes tied with it (``analysis.recommend``).

``--resume`` continues the latest tune of the same flags in the store: the search runs again
from the start, and every trial it asks for that the store holds (by its point id, which covers
the batch size, the rate, the seed and the target) is read back instead of trained, its row and
checks giving the search what they gave it the first time; so the search takes the same path
and goes on where the stored trials end. An interrupted or lost trial runs again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable

from harness import env
from harness.analysis.convergence import analyze
from harness.analysis.recommend import Recommendation, recommend
from harness.config.points import PointSpec
from harness.config.policies import ADAPTIVE
from harness.config.spec import SweepSpec
from harness.drivers.capacity import resolve_micro_batches
from harness.drivers.plan import Plan
from harness.drivers.tune import trials as tr
from harness.drivers.tune.policy import Budget, Choice, Trial, nearest, search
from harness.config.axes import BY_NAME
from harness.errors import SpecError
from harness.config.execution import Executor
from harness.drivers.executors import Call, Local, OnRay, executor_for
from harness.drivers.sweep import _cut_off
from harness.run.engine import run_point
from harness.store.sqlite import Kept, Store
from harness.workload import datasets
from harness.run.measurement import PointResult
from harness.store.schema import Status

WARM_UP_STEPS = 50
"""An untimed, unstored run before the first trial: a process's first training steps pay
one-off costs (kernel selection, allocator growth) that would make the first trials look slow."""

REPEATS = 2
"""Further seeds each finalist is run with."""

HASH_PREFIX = "tune:"
"""A tune run's ``spec_hash`` is its grid's with this prefix: ``run --resume`` of the same flags
never mistakes a tune run (a few of the grid's points) for an interrupted grid."""



def tune_spec(spec: SweepSpec) -> SweepSpec:
    """The spec a tune runs: the learning rate searched over ``--lr-grid``; without
    ``--dataset-sizes`` the data set's natural size only (one search per device)."""
    if spec.target is None and spec.target_loss is None and spec.target_accuracy is None:
        raise SpecError("--target", "tune needs a target to time: give rel:F, --target-loss or --target-accuracy (not none)")
    sizes = spec.dataset_sizes or (datasets.info(spec.dataset, spec.target_column, holdout_fraction=spec.holdout_fraction, check_set=spec.check_set).natural_size,)
    return dataclasses.replace(spec, lr_policy="tuned", dataset_sizes=sizes)


@dataclass(frozen=True)
class TuneResult:
    key: dict[str, Any]
    choice: Choice
    advice: Recommendation | None
    """The answer over every trial (finalists' repeats included), with the batch sizes tied with it."""
    target: str
    """The target as a sentence: ``check-set loss <= 0.123``."""
    start_batch: int
    noise_scale: float | None
    samples: int
    """Samples processed by every stored trial: the pilot, the search and the repeats."""
    trials: int
    pruned: int
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        a = self.advice
        return {
            **self.key, "batch_size": None if a is None else a.batch_size, "tied": [] if a is None else list(a.tied),
            "lr": None if a is None else a.lr, "time_to_target_s": None if a is None else a.time_to_target_s,
            "steps_to_target": None if a is None else a.steps_to_target, "step_s": None if a is None else a.step_s,
            "trials": self.trials, "pruned": self.pruned, "samples_processed": self.samples, "target": self.target,
            "start_batch_size": self.start_batch, "initial_noise_scale": self.noise_scale, "warnings": list(self.warnings),
            "recommendation": None if a is None else a.as_dict(),
        }

    def sentence(self) -> str:
        spent = f"{self.trials} trials ({self.pruned} pruned), {self.samples:,} samples processed"
        a = self.advice
        if a is None:
            return f"no trial reached the target ({self.target}); {spent}. Try more --steps or a looser target."
        caveats = " Caveats: " + "; ".join((*self.warnings, *a.caveats)) + "." if self.warnings or a.caveats else ""
        return f"{a.headline()}{a.comparison()}; with {a.lr_note}; target {self.target}; {spent}.{caveats}"


def own_rates(point: PointSpec, plan: Plan) -> PointSpec:
    """A LightningModule's trial point at its batch size: its own optimizer and scheduler, every
    rate times (B / --base-batch-size) ** e, e = 1/2 for Adam and AdamW, 1 for SGD."""
    exponent = 0.5 if plan.own_recipe.optimizer in ADAPTIVE else 1.0
    return dataclasses.replace(point, lr_scale=(point.batch_size / plan.spec.base_batch_size) ** exponent,
                               lr_policy="sqrt" if exponent == 0.5 else "linear")


def check_tunable(plan: Plan) -> None:
    """A LightningModule whose scheduler is bound to a fixed step count cannot be tuned: each
    trial stops at its own step, and such a schedule (OneCycleLR's ``total_steps``) can neither
    stretch nor run past it. A ``--base-batch-size`` applies only to a module's own rates."""
    own, spec = plan.own_recipe, plan.spec
    if own is not None and own.fixed_steps:
        raise SpecError("--model", f"{spec.model} steps a {own.scheduler} bound to total_steps={own.fixed_steps}: tune stops each trial at "
                                   f"its own step, which that schedule can neither stretch to nor run past; give the module a schedule "
                                   f"without a fixed length (CosineAnnealingLR, LambdaLR) or compare batch sizes with `batchbench run`")
    if own is None and spec.base_batch_size != BY_NAME["base_batch_size"].default:
        raise SpecError("--base-batch-size", "applies to a LightningModule's own learning rates; for other models tune searches --lr-grid "
                                             "at every batch size")


def tune(plan: Plan, store: Store, *, say: Callable[[str], None] = lambda line: None, executor: Executor = Executor(),
         resume: bool = False, note: Callable[[str], None] | None = None) -> tuple[str, list[TuneResult]]:
    """Search every group of the plan; every trial is committed to ``store`` as it ends. On
    Ray (``executor``) the first rates of each batch size run as one round, and the finalists'
    repeats side by side; the pilot and the noise scale run here. ``resume``: continue the
    latest tune of these flags in the store, reading back the trials it stored; ``note`` (``say``
    unless given) gets what it found, in one line."""
    check_tunable(plan)
    plan = resolve_micro_batches(plan, say)
    spec_hash = HASH_PREFIX + plan.sweep_hash
    with store.sweep_lock(hashlib.sha1(spec_hash.encode()).hexdigest(), resume=resume):  # a second --resume of it is refused
        run_id = begin(plan, store, resume, say if note is None else note)
        with executor_for(executor, say=say) as where:
            return run_id, _tune(plan, store, run_id, say, where)


def begin(plan: Plan, store: Store, resume: bool, note: Callable[[str], None]) -> str:
    """The run this tune writes: with ``resume``, the latest tune of these flags in the store
    (its interrupted and lost trials dropped, to run again), unless it started from another
    ``--lr`` (the first rate, which no trial's id holds); else a new one."""
    spec_hash, where = HASH_PREFIX + plan.sweep_hash, store.path
    found = store.find_run(spec_hash) if resume else None
    if found is not None:
        run_id, done, finished = found
        before = json.loads(store.load("runs", [run_id])["spec_json"].iloc[0] or "{}").get("lr")
        if before is not None and before != json.loads(plan.spec.to_json()).get("lr"):
            note(f"the latest tune of these flags in {where} (run {run_id}) started from --lr {before:g}; starting a new run")
            found = None
        else:
            note(f"tune run {run_id} already finished: its answer again from its {len(done)} stored trials" if finished else
                 f"resuming tune run {run_id}: {len(done)} trials stored, read back as the search asks for them; the others run")
    elif resume:
        note(f"no earlier tune of these flags in {where}; starting a new run")
    environment = env.environment(list(plan.devices), plan.spec.threads)
    run_id, _ = store.start_run(plan.spec.to_json(), spec_hash, environment, resume=found is not None)
    return run_id


def _tune(plan: Plan, store: Store, run_id: str, say: Callable[[str], None], executor: Local | OnRay) -> list[TuneResult]:
    kept = store.kept(run_id)
    results = []
    groups: dict[tuple, dict[tuple[int, float], PointSpec]] = {}
    for point in plan.points:
        if point.repeat == 0 and not point.skip_reason:
            key = (point.device, point.dataset_size, point.sampling, point.world_size, point.data_placement)
            if plan.own_recipe is None:
                groups.setdefault(key, {})[(point.batch_size, point.lr)] = point
            else:  # a LightningModule: its own rates, moved by its optimizer's rule (one "rate" per batch size: the factor 1)
                groups.setdefault(key, {}).setdefault((point.batch_size, 1.0), own_rates(point, plan))
    for (device, size, sampling, world, placement), grid in groups.items():
        key = {"device": device, "dataset_size": size, "sampling": sampling, "world_size": world, "data_placement": placement}
        say(f"tuning {plan.spec.dataset} · {size} samples · {device}: {len({b for b, _ in grid})} batch sizes x {len({lr for _, lr in grid})} learning rates")
        results.append(_Group(plan, store, run_id, grid, say, executor, kept).tune(key))
    store.finish_run(run_id)
    return results


class _Group:
    """One search: its grid of points, the target, and the ids of the points it stored."""

    def __init__(self, plan: Plan, store: Store, run_id: str, grid: dict[tuple[int, float], PointSpec], say, executor: Local | OnRay,
                 kept: dict[str, Kept]):
        self.plan, self.store, self.run_id, self.grid, self.say, self.executor = plan, store, run_id, grid, say, executor
        self.kept = kept
        """The trials an earlier process of this tune stored (``--resume``), by point id: read back, not trained."""
        self.at_once = isinstance(executor, OnRay)
        spec = plan.spec
        self.goal: dict[str, Any] = {"target_loss": spec.target_loss, "target_accuracy": spec.target_accuracy}
        self.ids: list[str] = []
        self.warnings: list[str] = []
        self.timed: set[int] = set()
        """Batch sizes with a measured step time (a trial's after its burn-in)."""

    def tune(self, key: dict) -> TuneResult:
        spec, grid = self.plan.spec, self.grid
        batches, rates = sorted({b for b, _ in grid}), sorted({lr for _, lr in grid})
        noise = tr.initial_noise_scale(next(iter(grid.values())), self.plan)
        start = batches[nearest(batches, noise if noise and noise > 0 else tr.FALLBACK_START)]
        start_lr = rates[nearest(rates, spec.lr)]
        if not self.at_once:  # on Ray the trials run in other processes
            warm = dataclasses.replace(grid[(start, start_lr)], steps=min(WARM_UP_STEPS, grid[(start, start_lr)].steps), stop_at_target=False)
            run_point(warm, self.plan.workload(warm))  # not stored: the process's first steps are slow, and trials are timed
        known = [] if self.goal["target_loss"] is not None or self.goal["target_accuracy"] is not None else [self._pilot(start, start_lr)]
        optimizer = spec.optimizer if self.plan.own_recipe is None else self.plan.own_recipe.optimizer
        exponent = 0.5 if optimizer in ADAPTIVE else 1.0  # Adam's best rate grows as sqrt(B) (Malladi et al. 2022)
        choice = search(batches, rates, self.run_trial, start_batch=start, start_lr=start_lr, lr_exponent=exponent, known=known,
                        run_trials=self.run_trials if self.at_once else None)
        self._repeat(choice.finalists)
        return self._result(key, choice, start, noise)

    def _pilot(self, start: int, start_lr: float) -> Trial:
        point = dataclasses.replace(self.grid[(start, start_lr)], stop_at_target=False)
        fraction, kept = self.plan.spec.target.fraction, self.kept.get(point.point_id)
        if kept is None:
            self.goal["target_loss"], result, warning = tr.pilot(point, self.plan, fraction, self.store, self.run_id)
        else:
            self.goal["target_loss"], result, warning = tr.kept_pilot(point, kept, fraction)
        self.ids.append(result.row["point_id"])
        stored = "" if kept is None else ", stored"
        self.say(f"  pilot B={start} lr={start_lr:g}: target loss {self.goal['target_loss']:.4g} (rel:{fraction:g} of its own curve{stored})")
        if warning:
            self.warnings.append(warning)
            self.say(f"warning: {warning}")
        return tr.as_trial(start, start_lr, result, self.goal)

    def run_trial(self, batch: int, lr: float, budget: Budget, repeat: int = 0) -> Trial:
        return self.run_trials([(batch, lr, budget)], repeat)[0]

    def run_trials(self, asked: list[tuple[int, float, Budget]], repeat: int = 0) -> list[Trial]:
        """Trials (at once where the executor can), each stored as it ends; in the order asked.
        A trial the store already holds (``--resume``) is read back instead."""
        points = [self._point(batch, lr, repeat) for batch, lr, _ in asked]
        calls: list[Call] = []
        todo: list[int] = []
        for index, ((batch, _, budget), point) in enumerate(zip(asked, points)):
            if point.point_id not in self.kept:  # measured before the round: each option as the round started
                timed = batch in self.timed  # its step time is measured: stop at the target (a run-on past it is for a step time)
                calls.append((point, {"prune": tr.prune_for(budget), "measure_after_target": not timed}))
                todo.append(index)
        trials = {i: self._took(asked[i][:2], point, self.kept[point.point_id], repeat) for i, point in enumerate(points) if point.point_id in self.kept}
        try:
            for at, result, _ in self.executor.calls(calls, self.plan.workload):
                self.store.add_point(self.run_id, result)
                trials[todo[at]] = self._took(asked[todo[at]][:2], points[todo[at]], result, repeat)
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the trials in flight kept as interrupted (--resume runs them again)
            for interrupted in _cut_off(stop, self.executor):
                self.store.add_point(self.run_id, interrupted)
            raise
        return [trials[i] for i in range(len(asked))]

    def _point(self, batch: int, lr: float, repeat: int) -> PointSpec:
        base = self.grid[(batch, lr)]
        return dataclasses.replace(base, stop_at_target=True, seed=base.seed + repeat, repeat=repeat, **self.goal)

    def _took(self, trial_of: tuple, point: PointSpec, result: PointResult | Kept, repeat: int) -> Trial:
        """A trial run (or read back: ``result`` a ``Kept``): what it tells the search, and its line."""
        batch, lr = trial_of
        self.ids.append(result.row["point_id"])
        trial = tr.as_trial(batch, lr, result, self.goal)
        if trial.step_s:
            self.timed.add(batch)
        step = f"{trial.step_s * 1e3:8.3g} ms" if trial.step_s else " " * 11
        rate = f"lr {lr:<8g}" if self.plan.own_recipe is None else f"its lr x {point.lr_scale:<5.3g}"
        stored = " (stored)" if isinstance(result, Kept) else ""
        self.say(f"  {'trial' if not repeat else f'seed+{repeat}'} {batch:>6} x {rate} {trial.outcome:<8} {trial.steps:>7,} steps {step}{stored}")
        return trial

    def _repeat(self, finalists: tuple[Trial, ...]) -> None:
        """The finalists (the winner alone too) again over more seeds, a round across all of them at
        a time, so their steps become medians over data orders (and the step times of those that
        train past their burn-in are measured side by side); on Ray every repeat at once."""
        if not finalists:
            return
        rounds = [[(t.batch_size, t.lr, Budget()) for t in finalists] for _ in range(REPEATS)]
        if self.at_once:
            for repeat, asked in enumerate(rounds, start=1):
                self.run_trials(asked, repeat)  # a round's finalists side by side, on separate slots
            return
        for repeat, asked in enumerate(rounds, start=1):
            for one in asked:
                self.run_trials([one], repeat)

    def _result(self, key: dict, choice: Choice, start: int, noise: float | None) -> TuneResult:
        points = self.store.load("points", [self.run_id])
        mine = points[points["point_id"].isin(self.ids)]
        checks = self.store.load("checks", [self.run_id])
        groups = analyze(mine, checks[checks["point_id"].isin(self.ids)])
        advice = recommend(groups[0]) if groups else None
        goal = self.goal
        target = f"check-set loss <= {goal['target_loss']:.4g}" if goal["target_loss"] is not None else f"check-set accuracy >= {goal['target_accuracy']:.4g}"
        return TuneResult(key=key, choice=choice, advice=advice, target=target, start_batch=start, noise_scale=noise,
                          samples=int((mine["steps"] * mine["batch_size"]).sum()), trials=len(mine),
                          pruned=int((mine["status"] == Status.PRUNED).sum()), warnings=tuple(self.warnings))
