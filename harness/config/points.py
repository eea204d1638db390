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
from typing import Any, Sequence

from harness.config import compat
from harness.config.axes import AXES, Axis, sweep_axes
from harness.config.policies import DataInfo
from harness.config.spec import as_text

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


def _point_id(self) -> str:
    """Stable identity of the point: a hash of every field under its stored name
    (``compat.id_fields``: renamed fields under their old names, later ones left out where
    they mean what points did before), so stores keep resuming across versions."""
    fields = compat.id_fields({k: v for k, v in as_text(self).items() if not (k in LINEAGE and v == LINEAGE[k])}, type(self).axes)
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _to_json(self) -> str:
    return json.dumps(as_text(self))


def _from_json(cls, text: str):
    """The point ``to_json`` wrote (a data-parallel rank reads it from a file)."""
    raw = json.loads(text)
    for axis in cls.axes:
        name = axis.point_field
        if name in raw and isinstance(raw[name], list):
            raw[name] = tuple(raw[name])
        elif name == axis.name and not axis.sweep and hasattr(axis.default, "text") and raw.get(name) is not None:
            raw[name] = axis.parse(raw[name])  # a typed option (the check schedule): from its text
    return cls(**raw)


def _per_rank_batch_size(self) -> int:
    return self.batch_size // self.world_size


def _backend(self) -> str | None:
    if self.world_size == 1:
        return None
    return "nccl" if self.device.startswith("cuda") else "gloo"


def _epochs(self) -> float:
    return self.steps * self.batch_size / self.train_size


def point_class(axes: Sequence[Axis] = AXES) -> type:
    """The frozen dataclass of one point: a field per axis that reaches points, and ``DERIVED``."""
    names = [a.point_field for a in axes if a.point_field is not None] + list(DERIVED)
    namespace = {
        "__module__": __name__, "__doc__": "One sweep point x repeat: everything ``run_point`` needs, nothing it must guess.",
        "axes": tuple(axes), "point_id": property(_point_id), "to_json": _to_json, "from_json": classmethod(_from_json),
        "per_rank_batch_size": property(_per_rank_batch_size), "backend": property(_backend), "epochs": property(_epochs),
    }
    lineage = [(n, Any, dataclasses.field(default=d)) for n, d in LINEAGE.items()]
    return dataclasses.make_dataclass("PointSpec", [(n, Any) for n in names] + lineage, frozen=True, namespace=namespace)


PointSpec = point_class()


def expand(spec, data: DataInfo, available: Sequence[str], axes: Sequence[Axis] = AXES, cls: type | None = None) -> list:
    """Every point of the sweep, in the order they run."""
    cls = cls or (PointSpec if axes is AXES else point_class(axes))
    levels = sweep_axes(axes)
    options = [a for a in axes if not a.sweep and a.point_field is not None]
    points: list = []

    def walk(depth: int, at: dict[str, Any]) -> None:
        if depth == len(levels):
            points.append(_point(cls, spec, at, options))
            return
        axis = levels[depth]
        for value in axis.at_point(spec, at) if axis.at_point else getattr(spec, axis.name):
            walk(depth + 1, {**at, **(value if isinstance(value, dict) else {axis.point_field: value})})

    walk(0, {"data": data, "available": tuple(available)})
    return points


def _point(cls, spec, at: dict[str, Any], options: list[Axis]):
    at = dict(at)
    for axis in options:
        at[axis.point_field] = axis.at_point(spec, at) if axis.at_point else getattr(spec, axis.name)
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
