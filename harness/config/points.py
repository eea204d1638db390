"""From a ``SweepSpec`` to points: one ``PointSpec`` per combination of the sweep axes' values,
each carrying everything the training loop needs.

The expansion is a product over the sweep axes in the order ``axes.AXES`` declares them, repeats
innermost (an interrupted sweep has whole points before it has repeats). A level's values may
depend on the outer ones (batch sizes on the training set's size, learning rates on the batch,
data placements on the device): each sweep axis's ``at_point`` gives them (``policies``). Then
every option's point value is set, in declaration order (so the step budget is known before the
check schedule that spaces checks over it). Pure: what it must know of the machine and the
data is passed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from harness.config import compat
from harness.config.axes import AXES, BY_NAME, Axis, sweep_axes
from harness.config.policies import DataInfo
from harness.config.spec import SweepSpec, as_text
from harness.config.values import CheckEvery

DERIVED = ("train_size", "check_size", "init_seed", "base_lr", "skip_reason")
"""Point fields no single axis gives: the split of the dataset size, the weights' seed, the
learning rate before its policy scaled it, and why the point cannot run as asked."""

LINEAGE = {"role": None, "start_sample": 0, "branch_factor": None, "lr_scale": 1.0}
"""What a command sets on a point beyond the axes. Where it continues another (``batchbench
cbs``): its role (base, branch, ramp, constant), the samples the run had seen where it starts (it
begins from that point's snapshot, in the data order where that point was), and its batch as a
multiple of the base's. And ``lr_scale``: the factor ``tune`` and ``cbs`` apply to a
LightningModule's own learning rates (its optimizer's rule across batch sizes). A sweep's points
hold the defaults, which their ids leave out (so ids are what they were)."""


@dataclass(frozen=True)
class PointSpec:
    """One sweep point x repeat: everything ``run_point`` needs, nothing it must guess. A field
    per axis that reaches points (``Axis.point_field``, in ``axes.AXES``'s order), then what the
    point derives (``DERIVED``) and its lineage (``LINEAGE``); ``tests/test_spec.py`` holds the
    fields and the table together."""

    dataset_size: int
    batch_size: int
    sampling: str
    world_size: int
    lr: float
    device: str
    data_placement: str
    precision: str
    compile: str
    repeat: int
    dataset: str
    target_column: str | None
    model: str
    hidden: tuple[int, ...]
    optimizer: str
    momentum: float
    weight_decay: float
    betas: tuple[float, float] | None
    eps: float | None
    grad_clip: float | None
    micro_batch_size: int | None
    loader: str
    workers: int
    prefetch_factor: int
    seed: int
    data_seed: int
    lr_policy: str
    base_batch_size: int
    lr_warmup_steps: int
    lr_schedule: str
    lr_floor: float
    target_loss: float | None
    target_accuracy: float | None
    target_rel: float | None
    stop_at_target: bool
    noise_samples: int
    steps: int
    check_every: CheckEvery
    check_set: str
    holdout_fraction: float
    threads: int
    timing_mode: str
    sample_interval_s: float
    burn_in_steps: int
    peak_tflops: float | None
    scaling: str
    # DERIVED
    train_size: int
    check_size: int
    init_seed: int
    base_lr: float | None
    skip_reason: str | None
    # LINEAGE
    role: str | None = None
    start_sample: int = 0
    branch_factor: int | None = None
    lr_scale: float = 1.0

    axes: ClassVar[tuple[Axis, ...]] = AXES

    @property
    def point_id(self) -> str:
        """Stable identity of the point: a hash of every field under its stored name
        (``compat.id_fields``: renamed fields under their old names, later ones left out where
        they mean what points did before), so stores keep resuming across versions."""
        fields = compat.id_fields({k: v for k, v in as_text(self).items() if not (k in LINEAGE and v == LINEAGE[k])}, type(self).axes)
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(as_text(self))

    @classmethod
    def from_json(cls, text: str) -> "PointSpec":
        """The point ``to_json`` wrote (a data-parallel rank reads it from a file)."""
        raw = json.loads(text)
        for axis in cls.axes:
            name = axis.point_field
            if name in raw and isinstance(raw[name], list):
                raw[name] = tuple(raw[name])
            elif name == axis.name and not axis.sweep and hasattr(axis.default, "text") and raw.get(name) is not None:
                raw[name] = axis.parse(raw[name])  # a typed option (the check schedule): from its text
        return cls(**raw)

    @property
    def per_rank_batch_size(self) -> int:
        return self.batch_size // self.world_size

    @property
    def backend(self) -> str | None:
        if self.world_size == 1:
            return None
        return "nccl" if self.device.startswith("cuda") else "gloo"

    @property
    def epochs(self) -> float:
        return self.steps * self.batch_size / self.train_size


def point_class(axes: Sequence[Axis] = AXES) -> type[PointSpec]:
    """``PointSpec``, or for a table with more axes (a plug-in's, a test's) a subclass with a
    field for each more that reaches points (typed ``Any``)."""
    more = [a.point_field for a in axes if a.point_field is not None and a.name not in BY_NAME]
    if not more and tuple(axes) == AXES:
        return PointSpec
    fields = [(name, Any, dataclasses.field(default=None)) for name in more]
    return dataclasses.make_dataclass("PointSpec", fields, bases=(PointSpec,), frozen=True,
                                      namespace={"__module__": __name__, "axes": tuple(axes)})


def expand(spec: SweepSpec, data: DataInfo, available: Sequence[str], axes: Sequence[Axis] | None = None,
           cls: type[PointSpec] | None = None) -> list[PointSpec]:
    """Every point of the sweep, in the order they run (``axes``: the spec's own, by default)."""
    axes = type(spec).axes if axes is None else axes
    cls = cls or point_class(axes)
    levels = [(a, a.point_field or a.name) for a in sweep_axes(axes)]  # a sweep axis always reaches points
    options = [(a, a.point_field) for a in axes if not a.sweep and a.point_field is not None]
    points: list[PointSpec] = []

    def walk(depth: int, at: dict[str, Any]) -> None:
        if depth == len(levels):
            points.append(_point(cls, spec, at, options))
            return
        axis, field = levels[depth]
        for value in axis.at_point(spec, at) if axis.at_point else getattr(spec, axis.name):
            walk(depth + 1, {**at, **(value if isinstance(value, dict) else {field: value})})

    walk(0, {"data": data, "available": tuple(available)})
    return points


def _point(cls: type[PointSpec], spec: SweepSpec, at: dict[str, Any], options: list[tuple[Axis, str]]) -> PointSpec:
    at = dict(at)
    for axis, field in options:
        at[field] = axis.at_point(spec, at) if axis.at_point else getattr(spec, axis.name)
    at.setdefault("skip_reason", None)
    at["init_seed"] = spec.seed  # shared by every point: batch sizes start from the same weights, repeats differ in data order
    at["base_lr"] = None if spec.lr_policy == "tuned" else spec.lr
    return cls(**{f.name: at[f.name] for f in dataclasses.fields(cls) if f.name not in LINEAGE})


def recorded(point) -> dict[str, Any]:
    """The point's configuration as ``points`` columns: each axis's (``Axis.recorded``) and
    what the point derives (split sizes, seeds, the learning rate before scaling, the ranks)."""
    out = {a.column_name: a.recorded(point) for a in type(point).axes if a.column_name}
    out.update(train_size=point.train_size, check_size=point.check_size, init_seed=point.init_seed, base_lr=point.base_lr,
               per_rank_batch_size=point.per_rank_batch_size, global_batch_size=point.batch_size, backend=point.backend,
               role=point.role, start_sample=point.start_sample or None, branch_factor=point.branch_factor,
               lr_scale=None if point.lr_scale == 1.0 else point.lr_scale)
    return out


def shard_of(points: list, shard) -> list:
    """Every N-th point starting at I: shards of one sweep are disjoint and cover it."""
    if shard is None:
        return points
    return [point for i, point in enumerate(points) if i % shard.count == shard.index]
