"""``batchbench tune``: run the search of ``harness.drivers.tune.policy`` through the harness, every
trial an ordinary stored point, so a tune run reads like any other in ``report`` and ``analyze``.

Per device x dataset size (x sampling, ranks, placement) of the plan:

1. The gradient noise scale B_simple at the initial weights (per-example gradients of up to
   ``NOISE_SAMPLES`` training samples) places the first batch size; it underestimates the
   critical batch size later in training, which is why the search grows the batch first.
2. With ``--target rel:F`` (the default) the target is not known before training: a pilot trial
   at the first batch size and ``--lr`` runs its whole step budget, and the target is
   L_ref + F (L_0 - L_ref) from its own curve (L_ref its best check loss). The pilot is a trial
   like the others and counts in the compute. ``--target-loss``/``--target-accuracy`` skip it.
3. Trials stop at the target (``--stop-at-target``) or, once they cannot beat the best time so
   far, at the next loss check (status ``pruned``; ``steps`` says how far it got).

Time to target here is training time (``compute_to_target_s``: loss checks left out), as in
the recommendation of ``batchbench run``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch

from harness import env
from harness.workload import datasets
from harness.workload import models
from harness.analysis.convergence import relative_target, to_target
from harness.analysis.noise_scale import b_simple
from harness.errors import RunError, SpecError
from harness.drivers.plan import Plan
from harness.store.schema import PointResult
from harness.run.engine import run_point
from harness.run.prepare import noise_estimator
from harness.run.parts import make_loss
from harness.config.points import PointSpec
from harness.config.spec import SweepSpec
from harness.store.sqlite import Store
from harness.drivers.tune.policy import Choice, Trial, nearest, search

NOISE_SAMPLES = 512
"""Training samples whose per-example gradients give the noise scale at initialisation."""

WARM_UP_STEPS = 50
"""An untimed, unstored run before the first trial: a process's first training steps pay
one-off costs (kernel selection, allocator growth) that would make the first trials look slow."""

FALLBACK_START = 32
"""First batch size where the noise scale cannot be estimated (a model torch.func cannot map)."""

HASH_PREFIX = "tune:"
"""A tune run's ``spec_hash`` is its grid's with this prefix: ``run --resume`` of the same flags
never mistakes a tune run (a few of the grid's points) for an interrupted grid."""


def tune_spec(spec: SweepSpec) -> SweepSpec:
    """The spec a tune runs: the learning rate searched over ``--lr-grid``; without
    ``--dataset-sizes`` the data set's natural size only (one search per device)."""
    if spec.target is None and spec.target_loss is None and spec.target_accuracy is None:
        raise SpecError("--target", "tune needs a target to time: give rel:F, --target-loss or --target-accuracy (not none)")
    sizes = spec.dataset_sizes or (datasets.info(spec.dataset, spec.target_column).natural_size,)
    return dataclasses.replace(spec, lr_policy="tuned", dataset_sizes=sizes)


@dataclass(frozen=True)
class TuneResult:
    key: dict[str, Any]
    choice: Choice
    target: str
    """The target as a sentence: ``check-set loss <= 0.123`` (and where it came from)."""
    start_batch: int
    noise_scale: float | None

    def as_dict(self) -> dict[str, Any]:
        best = self.choice.best
        return {
            **self.key,
            "batch_size": None if best is None else best.batch_size,
            "lr": None if best is None else best.lr,
            "time_to_target_s": None if best is None else best.time_s,
            "steps_to_target": None if best is None else best.steps,
            "trials": len(self.choice.trials),
            "pruned": sum(t.outcome == "pruned" for t in self.choice.trials),
            "samples_processed": self.choice.samples_processed,
            "target": self.target,
            "start_batch_size": self.start_batch,
            "initial_noise_scale": self.noise_scale,
        }

    def sentence(self) -> str:
        best, n = self.choice.best, len(self.choice.trials)
        spent = f"{n} trials ({sum(t.outcome == 'pruned' for t in self.choice.trials)} pruned), {self.choice.samples_processed:,} samples processed"
        if best is None:
            return f"no trial reached the target ({self.target}); {spent}. Try more --steps or a looser target."
        return (f"batch size {best.batch_size} with lr {best.lr:g} reaches {self.target} in {best.time_s:.3g} s of training "
                f"({best.steps:,} steps); {spent}")


def tune(plan: Plan, store: Store, *, say: Callable[[str], None] = lambda line: None) -> tuple[str, list[TuneResult]]:
    """Search every group of the plan; every trial is committed to ``store`` as it ends."""
    environment = env.environment(list(plan.devices), plan.spec.threads)
    run_id, _ = store.start_run(plan.spec.to_json(), HASH_PREFIX + plan.sweep_hash, environment, resume=False)
    results = []
    groups: dict[tuple, dict[tuple[int, float], PointSpec]] = {}
    for point in plan.points:
        if point.repeat == 0 and not point.skip_reason:
            key = (point.device, point.dataset_size, point.sampling, point.world_size, point.data_placement)
            groups.setdefault(key, {})[(point.batch_size, point.lr)] = point
    for (device, size, sampling, world, placement), grid in groups.items():
        key = {"device": device, "dataset_size": size, "sampling": sampling, "world_size": world, "data_placement": placement}
        say(f"tuning {plan.spec.dataset} · {size} samples · {device}: {len({b for b, _ in grid})} batch sizes x {len({lr for _, lr in grid})} learning rates")
        results.append(_tune_group(plan, store, run_id, key, grid, say))
    store.finish_run(run_id)
    return run_id, results


def _tune_group(plan: Plan, store: Store, run_id: str, key: dict, grid: dict[tuple[int, float], PointSpec], say) -> TuneResult:
    spec = plan.spec
    batches = sorted({b for b, _ in grid})
    rates = sorted({lr for _, lr in grid})
    any_point = next(iter(grid.values()))
    noise = initial_noise_scale(any_point, plan)
    start = batches[nearest(batches, noise if noise and noise > 0 else FALLBACK_START)]
    start_lr = rates[nearest(rates, spec.lr)]
    warm = dataclasses.replace(grid[(start, start_lr)], steps=min(WARM_UP_STEPS, grid[(start, start_lr)].steps), stop_at_target=False)
    run_point(warm, plan.split(warm), plan.factory)  # not stored: the process's first steps are slow, and trials are timed
    known: list[Trial] = []
    goal: dict[str, Any] = {"target_loss": spec.target_loss, "target_accuracy": spec.target_accuracy}
    if spec.target_loss is None and spec.target_accuracy is None:  # rel:F: a pilot trial finds L_ref
        pilot = dataclasses.replace(grid[(start, start_lr)], stop_at_target=False)
        result = run_point(pilot, plan.split(pilot), plan.factory)
        losses = [c["eval_loss"] for c in result.checks if c["eval_loss"] is not None and math.isfinite(c["eval_loss"])]
        if not losses:
            store.add_point(run_id, result)
            raise RunError("--target", f"the pilot trial (B={start}, lr {start_lr:g}) ended {result.status} before a loss check; "
                                        f"give --target-loss instead ({result.point.get('error') or 'no check'})")
        goal["target_loss"] = relative_target(losses[0], min(losses), spec.target.fraction)
        result.point.update(target_loss=goal["target_loss"], **to_target(result.checks, start, target_loss=goal["target_loss"]))
        store.add_point(run_id, result)
        known.append(_trial(start, start_lr, result, goal))
        say(f"  pilot B={start} lr={start_lr:g}: target loss {goal['target_loss']:.4g} (rel:{spec.target.fraction:g} of its own curve)")
    target = (f"check-set loss <= {goal['target_loss']:.4g}" if goal["target_loss"] is not None else f"check-set accuracy >= {goal['target_accuracy']:.4g}")

    def run_trial(batch: int, lr: float, budget_s: float | None) -> Trial:
        point = dataclasses.replace(grid[(batch, lr)], stop_at_target=True, **goal)

        def prune(check: dict) -> str | None:
            if budget_s is not None and check["compute_s"] > budget_s:
                return f"pruned: {check['compute_s']:.3g} s of training at step {check['step']} without the target, past the best time {budget_s:.3g} s"
            return None

        result = run_point(point, plan.split(point), plan.factory, prune=prune)
        store.add_point(run_id, result)
        trial = _trial(batch, lr, result, goal)
        say(f"  trial {batch:>6} x lr {lr:<8g} {trial.outcome:<8} {trial.steps:>7,} steps {trial.time_s:9.3g} s")
        return trial

    choice = search(batches, rates, run_trial, start_batch=start, start_lr=start_lr, known=known)
    return TuneResult(key=key, choice=choice, target=target, start_batch=start, noise_scale=noise)


def _trial(batch: int, lr: float, result: PointResult, goal: dict[str, Any]) -> Trial:
    row, checks = result.point, result.checks
    last = checks[-1] if checks else {}
    if row["status"] == "ok" and row.get("steps_to_target") is not None:
        return Trial(batch, lr, "reached", int(row["steps_to_target"]), float(row["compute_to_target_s"]), 1.0)
    outcome = {"ok": "missed", "pruned": "pruned"}.get(row["status"], "failed")
    return Trial(batch, lr, outcome, int(row.get("steps") or 0), float(last.get("compute_s") or 0.0), _progress(checks, goal))


def _progress(checks: list[dict], goal: dict[str, Any]) -> float:
    """How far towards the target the last check got, from the first: 0 none, 1 there."""
    if len(checks) < 2:
        return 0.0
    column, target = ("eval_loss", goal["target_loss"]) if goal["target_loss"] is not None else ("eval_acc", goal["target_accuracy"])
    first, last = checks[0][column], checks[-1][column]
    if first is None or last is None or not math.isfinite(last) or first == target:
        return -math.inf
    return (first - last) / (first - target)


def initial_noise_scale(point: PointSpec, plan: Plan) -> float | None:
    """B_simple at the weights every trial starts from; None where it cannot be estimated."""
    split = plan.split(point)
    probe = dataclasses.replace(point, noise_samples=min(NOISE_SAMPLES, point.train_size))
    device = torch.device(point.device)
    try:
        torch.manual_seed(point.init_seed)
        model, own_loss = models.build_with_loss(point.model, plan.factory, n_features=split.n_features, n_outputs=split.n_outputs,
                                                 hidden=point.hidden, input_shape=split.input_shape)
        estimate = noise_estimator(probe, model.to(device), own_loss or make_loss(split.task), split.X_train, split.y_train, device)
        return None if estimate is None else b_simple(estimate())
    except Exception as exc:  # a model the estimator cannot run: start from the fallback
        print(f"batchbench: no noise scale at initialisation ({type(exc).__name__}: {exc}); starting at B={FALLBACK_START}", file=sys.stderr)
        return None
