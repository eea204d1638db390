"""A plan: the sweep's points, checked against this machine and its data before anything runs.

``plan`` does every check that can fail on user input -- devices, data files, plug-ins, batch
sizes against training sets, the model's output against the data -- so that a bad spec is a
one-line ``SpecError`` before a store is opened. ``plan_flags`` is the one way to go from
flags (as keywords) to a plan, for tests, benchmarks, asv and notebooks.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

from harness import env
from harness.workload import datasets
from harness.workload import models
from harness.workload.datasets import Split
from harness.errors import SpecError
from harness.config import compat
from harness.config.axes import AXES
from harness.config.points import PointSpec, expand, shard_of
from harness.config.policies import AUTO_DEVICE_SHARE
from harness.config.spec import SweepSpec, as_text, build_spec
from harness.drivers.preflight import check_output
from harness.workload.lightning import RecipeSummary
from harness.workload.workload import Workload


@dataclass(frozen=True)
class Plan:
    spec: SweepSpec
    points: tuple[PointSpec, ...]
    splits: dict[int, Split]
    """Train/check data per dataset size, loaded once and shared by that size's points."""
    factory: models.Factory
    devices: tuple[str, ...]
    own_recipe: RecipeSummary | None = None
    """A LightningModule's own optimizer and scheduler (None for other models)."""

    def split(self, point: PointSpec) -> Split:
        return self.splits[point.dataset_size]

    def workload(self, point: PointSpec) -> Workload:
        """What the point trains: its model and its data, one object for every place that builds them."""
        return Workload.of(point, self.split(point), self.factory)

    @property
    def sweep_hash(self) -> str:
        """What the sweep is, however it was written: a hash of its points (each point's id
        covers every value it runs with), so ``--batch-sizes 16,4,1`` and ``1,4,16``, or
        ``--devices auto`` and the devices it means, are one sweep for ``--resume``."""
        ids = "\n".join(sorted(p.point_id for p in self.points))
        return hashlib.sha1(ids.encode()).hexdigest()[:16]

    @property
    def old_hashes(self) -> tuple[str, ...]:
        """How batchbench 0.1 named this sweep (a hash of the spec as written), so that
        ``--resume`` still finds its runs."""
        return (compat.spec_hash_0_1(as_text(self.spec), AXES),)


def plan(spec: SweepSpec, *, factory: models.Factory | None = None, source: datasets.Dataset | None = None, decided: tuple[str, ...] = ()) -> Plan:
    """Validate ``spec`` against this machine and its data; raise ``SpecError`` on any problem.
    ``factory`` and ``source``: a model and a data set handed over as objects (the Python API),
    in place of resolving ``spec.model`` and ``spec.dataset`` by name. ``decided``: the spec's
    fields the command set itself (``tune``'s lr policy), which no error blames on the user."""
    if spec.target_column is not None and not datasets.is_file(spec.dataset):
        raise SpecError("--target-column", f"applies to .csv and .parquet files, not the built-in {spec.dataset!r}")
    info = datasets.info(spec.dataset, spec.target_column, source, holdout_fraction=spec.holdout_fraction, check_set=spec.check_set)
    available = env.available_devices()
    points = shard_of(expand(spec, info, available), spec.shard)
    _check_ranks(points, available)
    _check_precision(points)
    if not points:
        raise SpecError("--shard", f"shard {spec.shard.text()} of this sweep holds no point; use fewer shards")
    _check_memory(spec, sorted({p.dataset_size for p in points}))
    factory = factory or models.resolve(spec.model)
    splits = {
        size: datasets.load_split(spec.dataset, size, data_seed=spec.data_seed, target_column=spec.target_column,
                                  check_set=spec.check_set, holdout_fraction=spec.holdout_fraction, source=source)
        for size in sorted({p.dataset_size for p in points})
    }
    points = [_resolve_placement(_through_pipeline(p, splits[p.dataset_size]), splits[p.dataset_size]) for p in points]
    first = next(iter(splits.values()))
    if spec.target_accuracy is not None and first.task != "classification":
        raise SpecError("--target-accuracy", f"{spec.dataset} is a regression data set; use --target-loss or --target rel:F")
    _check_widths(spec, first)
    own = check_output(spec, Workload.of(points[0], splits[points[0].dataset_size], factory), devices=sorted({p.device for p in points}),
                       decided=decided)
    devices = tuple(dict.fromkeys(p.device for p in points))
    return Plan(spec=spec, points=tuple(points), splits=splits, factory=factory, devices=devices, own_recipe=own)


def _through_pipeline(point: PointSpec, split: Split) -> PointSpec:
    """A user's Dataset is read through a DataLoader: that is the pipeline being measured."""
    return point if split.train_items is None else dataclasses.replace(point, loader="dataloader")


def _resolve_placement(point: PointSpec, split: Split) -> PointSpec:
    """``auto``: the training set on the device when it takes under ``AUTO_DEVICE_SHARE`` of
    the device's memory, else pinned host memory (MPS has no pinned copies: pageable)."""
    if point.loader == "dataloader" and point.data_placement == "device":
        raise SpecError("--data-placement", "device needs --loader tensor (a DataLoader collates on the host); use pinned or pageable")
    if point.data_placement != "auto":
        return point
    size = split.X_train.nbytes + split.y_train.nbytes
    capacity = env.device_memory(point.device) or 0
    small = size < AUTO_DEVICE_SHARE * capacity and point.loader == "tensor"
    placement = "device" if small else ("pinned" if point.device.startswith("cuda") else "pageable")
    return dataclasses.replace(point, data_placement=placement)


def _check_ranks(points, available: list[str]) -> None:
    """Data-parallel ranks on CUDA take one GPU each: more ranks than GPUs cannot run."""
    gpus = sum(d.startswith("cuda") for d in available)
    wanted = max((p.world_size for p in points if p.device.startswith("cuda")), default=1)
    if wanted > max(1, gpus):
        raise SpecError("--world-sizes", f"{wanted} ranks on cuda need {wanted} GPUs (one per rank) and this machine has {gpus}; "
                                         f"use --world-sizes up to {gpus}, or --devices cpu (gloo ranks share the CPU)")


def _check_precision(points) -> None:
    """Every precision asked for runs on its device: a one-line error now, not a failed sweep."""
    import torch

    for point in points:
        cuda = point.device.startswith("cuda")
        if point.precision == "tf32" and not cuda:
            raise SpecError("--precision", f"tf32 is a CUDA matmul mode; {point.device} runs fp32, bf16 or fp16")
        if point.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
            raise SpecError("--precision", f"{point.device} ({torch.cuda.get_device_name(point.device)}) does not support bf16; use fp16 or fp32")
        if point.precision in ("bf16", "fp16") and not (cuda or point.device == "cpu"):
            raise SpecError("--precision", f"{point.precision} autocast is supported here on cpu and cuda, not {point.device}")


def _check_widths(spec: SweepSpec, split: Split) -> None:
    """An MLP too wide for this machine's memory (its weights, gradients and two optimizer
    moments) is a one-line error now, not an allocator's traceback in the pre-flight."""
    if spec.model != "mlp":
        return
    import psutil

    widths = [split.n_features, *spec.hidden, split.n_outputs]
    params = sum(a * b + b for a, b in zip(widths, widths[1:]))
    need, free = 16 * params, psutil.virtual_memory().available
    if need > free:
        raise SpecError("--hidden", f"an mlp of widths {','.join(map(str, spec.hidden))} has {params:,} parameters, about "
                                    f"{need / 2**30:,.1f} GiB with gradients and optimizer state; this machine has "
                                    f"{free / 2**30:,.1f} GiB free: use narrower layers")


def _check_memory(spec: SweepSpec, sizes: list[int]) -> None:
    """A generated data set too large for this machine's free memory is a one-line error now,
    not a MemoryError from numpy later."""
    import psutil

    available = psutil.virtual_memory().available
    for size in sizes:
        need = datasets.generation_bytes(spec.dataset, size)
        if need is not None and need > available:
            raise SpecError("--dataset-sizes", f"{size:,} rows of {spec.dataset} need about {need / 2**30:,.1f} GiB to generate; "
                                               f"this machine has {available / 2**30:,.1f} GiB free: use a smaller size")


def plan_flags(**flags: Any) -> Plan:
    """``plan_flags(batch_sizes=8, steps=40, devices="cpu")`` = the plan of ``batchbench run
    --batch-sizes 8 --steps 40 --devices cpu``: each value parsed as its flag's would be."""
    return plan(build_spec(cli_values=flags))
