"""A sweep: plan it (validate everything, load the data) and run its points into a store.

``plan`` does every check that can fail on user input -- devices, data files, plug-ins, batch
sizes against training sets -- so that a bad spec fails before the store is opened.
``run_sweep`` then commits each point on its own; with ``resume`` it skips the points a
previous, interrupted run of the same spec already committed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from harness import datasets, env, models
from harness.datasets import Split
from harness.errors import SpecError
from harness.records import PointResult
from harness.spec import RunSpec, SweepSpec, expand, shard_of
from harness.store import Store
from harness.train import run_point


@dataclass(frozen=True)
class Plan:
    spec: SweepSpec
    runs: tuple[RunSpec, ...]
    splits: dict[int, Split]
    """Train/check data per dataset size, loaded once and shared by that size's points."""
    factory: models.Factory
    devices: tuple[str, ...]


def plan(spec: SweepSpec) -> Plan:
    """Validate ``spec`` against this machine and its data; raise ``SpecError`` on any problem."""
    if spec.target_column is not None and not datasets.is_file(spec.dataset):
        raise SpecError("--target-column", f"applies to .csv and .parquet files, not the built-in {spec.dataset!r}")
    info = datasets.info(spec.dataset, spec.target_column)
    runs = shard_of(expand(spec, info, env.available_devices()), spec.shard)
    if not runs:
        raise SpecError("--shard", f"shard {spec.shard} of this sweep holds no point; use fewer shards")
    factory = models.resolve(spec.model)
    splits: dict[int, Split] = {}
    for size in sorted({r.dataset_size for r in runs}):
        data = datasets.load(spec.dataset, size, data_seed=spec.data_seed, target_column=spec.target_column)
        splits[size] = datasets.split(data, spec.check_set, spec.holdout_fraction, data_seed=spec.data_seed)
    first = next(iter(splits.values()))
    if spec.target_accuracy is not None and first.task != "classification":
        raise SpecError("--target-accuracy", f"{spec.dataset} is a regression data set; use --target-loss or --target rel:F")
    models.build(spec.model, factory, n_features=first.n_features, n_outputs=first.n_outputs, hidden=spec.hidden)
    devices = tuple(dict.fromkeys(r.device for r in runs))
    return Plan(spec=spec, runs=tuple(runs), splits=splits, factory=factory, devices=devices)


def run_sweep(
    plan: Plan,
    store: Store,
    *,
    resume: bool = False,
    progress: bool | None = None,
    on_point: Callable[[RunSpec, PointResult], None] | None = None,
) -> str:
    """Run every point not yet in the store; returns the run id. ``progress=None`` shows a
    bar only when stderr is a terminal."""
    from tqdm.auto import tqdm

    environment = env.environment(list(plan.devices), plan.spec.threads)
    run_id, done = store.start_run(plan.spec.to_json(), plan.spec.spec_hash, environment, resume=resume)
    todo = [r for r in plan.runs if r.point_id not in done]
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(plan.runs), initial=len(plan.runs) - len(todo), disable=not show, unit="point", desc="sweep", file=sys.stderr) as bar:
        for run in todo:
            bar.set_postfix_str(f"{run.dataset_size}x B={run.batch_size} {run.device} r{run.repeat}", refresh=False)
            result = run_point(run, plan.splits[run.dataset_size], plan.factory)
            store.add_point(run_id, result)
            if on_point is not None:
                on_point(run, result)
            bar.update(1)
    if plan.spec.target is not None:
        from harness.convergence import relative_targets
        from harness.spec import target_rel

        updates = relative_targets(store.load("points", [run_id]), store.load("checks", [run_id]), target_rel(plan.spec))
        store.update_points(run_id, updates)
    store.finish_run(run_id)
    return run_id
