"""A plan: the sweep's points, checked against this machine and its data before anything runs.

``plan`` does every check that can fail on user input -- devices, data files, plug-ins, batch
sizes against training sets, the model's output against the data -- so that a bad spec is a
one-line ``SpecError`` before a store is opened. ``plan_flags`` is the one way to go from
flags (as keywords) to a plan, for tests, benchmarks, asv and notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness import datasets, env, models
from harness.datasets import Split
from harness.errors import SpecError
from harness.spec import PointSpec, SweepSpec, build_spec, expand
from harness.spec.expand import shard_of


@dataclass(frozen=True)
class Plan:
    spec: SweepSpec
    points: tuple[PointSpec, ...]
    splits: dict[int, Split]
    """Train/check data per dataset size, loaded once and shared by that size's points."""
    factory: models.Factory
    devices: tuple[str, ...]

    def split(self, point: PointSpec) -> Split:
        return self.splits[point.dataset_size]


def plan(spec: SweepSpec) -> Plan:
    """Validate ``spec`` against this machine and its data; raise ``SpecError`` on any problem."""
    if spec.target_column is not None and not datasets.is_file(spec.dataset):
        raise SpecError("--target-column", f"applies to .csv and .parquet files, not the built-in {spec.dataset!r}")
    info = datasets.info(spec.dataset, spec.target_column)
    points = shard_of(expand(spec, info, env.available_devices()), spec.shard)
    if not points:
        raise SpecError("--shard", f"shard {spec.shard} of this sweep holds no point; use fewer shards")
    factory = models.resolve(spec.model)
    splits = {
        size: datasets.load_split(spec.dataset, size, data_seed=spec.data_seed, target_column=spec.target_column,
                                  check_set=spec.check_set, holdout_fraction=spec.holdout_fraction)
        for size in sorted({p.dataset_size for p in points})
    }
    first = next(iter(splits.values()))
    if spec.target_accuracy is not None and first.task != "classification":
        raise SpecError("--target-accuracy", f"{spec.dataset} is a regression data set; use --target-loss or --target rel:F")
    models.build(spec.model, factory, n_features=first.n_features, n_outputs=first.n_outputs, hidden=spec.hidden)
    devices = tuple(dict.fromkeys(p.device for p in points))
    return Plan(spec=spec, points=tuple(points), splits=splits, factory=factory, devices=devices)


def plan_flags(**flags: Any) -> Plan:
    """``plan_flags(batch_sizes=8, steps=40, devices="cpu")`` = the plan of ``batchbench run
    --batch-sizes 8 --steps 40 --devices cpu``: values are written as on the command line."""
    return plan(build_spec(cli_values={name: str(value) for name, value in flags.items() if value is not None}))
