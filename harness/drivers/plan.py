"""A plan: the sweep's points, checked against this machine and its data before anything runs.

``plan`` does every check that can fail on user input -- devices, data files, plug-ins, batch
sizes against training sets, the model's output against the data -- so that a bad spec is a
one-line ``SpecError`` before a store is opened. ``plan_flags`` is the one way to go from
flags (as keywords) to a plan, for tests, benchmarks, asv and notebooks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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


def plan(spec: SweepSpec) -> Plan:
    """Validate ``spec`` against this machine and its data; raise ``SpecError`` on any problem."""
    if spec.target_column is not None and not datasets.is_file(spec.dataset):
        raise SpecError("--target-column", f"applies to .csv and .parquet files, not the built-in {spec.dataset!r}")
    info = datasets.info(spec.dataset, spec.target_column)
    available = env.available_devices()
    points = shard_of(expand(spec, info, available), spec.shard)
    _check_ranks(points, available)
    _check_precision(points)
    if not points:
        raise SpecError("--shard", f"shard {spec.shard} of this sweep holds no point; use fewer shards")
    _check_memory(spec, sorted({p.dataset_size for p in points}))
    factory = models.resolve(spec.model)
    splits = {
        size: datasets.load_split(spec.dataset, size, data_seed=spec.data_seed, target_column=spec.target_column,
                                  check_set=spec.check_set, holdout_fraction=spec.holdout_fraction)
        for size in sorted({p.dataset_size for p in points})
    }
    points = [_resolve_placement(p, splits[p.dataset_size]) for p in points]
    first = next(iter(splits.values()))
    if spec.target_accuracy is not None and first.task != "classification":
        raise SpecError("--target-accuracy", f"{spec.dataset} is a regression data set; use --target-loss or --target rel:F")
    model, own_loss = models.build_with_loss(spec.model, factory, n_features=first.n_features, n_outputs=first.n_outputs,
                                             hidden=spec.hidden, input_shape=first.input_shape)
    _check_output(spec, model, own_loss, first)
    devices = tuple(dict.fromkeys(p.device for p in points))
    return Plan(spec=spec, points=tuple(points), splits=splits, factory=factory, devices=devices)


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


def _check_output(spec: SweepSpec, model, own_loss, split: Split) -> None:
    """The model's output on two training rows is what the loss needs: K logits per target for
    K classes (``(B, K)``, or ``(B, T, K)`` for per-token targets), one value per target for
    regression, or a scalar from the plug-in's own loss. (A model that fails on the CPU here is
    left to the run, where its error becomes the point's status.)"""
    import torch

    shape = "x".join(map(str, split.input_shape))
    tokens = not split.X_train.is_floating_point()
    if spec.model in models.BUILTINS and tokens != (spec.model in models.TOKEN_MODELS):
        if tokens:
            raise SpecError("--model", f"{spec.model} takes float features, but {spec.dataset} holds integer token ids ({shape} a sample); "
                                       "use gpt or a plug-in model with an embedding")
        raise SpecError("--model", f"{spec.model} takes integer token ids, but {spec.dataset} holds float features; use --dataset text or a .npz of token ids")
    try:
        with torch.no_grad():
            model.eval()
            out = model(split.X_train[:2])
            value = own_loss(out, split.y_train[:2]) if own_loss is not None else None
    except Exception:
        return
    if own_loss is not None:
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise SpecError("--model", f"the loss {spec.model} returns gives {type(value).__name__} "
                                       f"{tuple(value.shape) if isinstance(value, torch.Tensor) else ''}, not a scalar tensor")
        return
    if not isinstance(out, torch.Tensor) or out.ndim == 0:
        raise SpecError("--model", f"{spec.model} returns {type(out).__name__}, not a (batch, outputs) tensor")
    targets = tuple(split.y_train.shape[1:])
    if split.task == "classification":
        want = (2, *targets, split.n_classes)
        if tuple(out.shape) != want:
            width = int(out.numel() // max(1, out.shape[0]))
            per = f"{width} outputs per sample" if not targets else f"output {tuple(out.shape[1:])} per sample"
            need = f"(B, {split.n_classes})" if not targets else f"(B, {', '.join(map(str, targets))}, {split.n_classes})"
            raise SpecError("--model", f"{spec.model} gives {per}, but {spec.dataset} has {split.n_classes} classes; "
                                       f"make it map (B, {shape.replace('x', ', ')}) to {need}")
    elif out.numel() != split.y_train[:2].numel():
        width = int(out.numel() // max(1, out.shape[0]))
        need = max(1, int(split.y_train[:1].numel()))
        raise SpecError("--model", f"{spec.model} gives {width} outputs per sample, but {spec.dataset} is a regression with {need} target(s); "
                                   f"make it map (B, {shape.replace('x', ', ')}) to (B, {need})")


def plan_flags(**flags: Any) -> Plan:
    """``plan_flags(batch_sizes=8, steps=40, devices="cpu")`` = the plan of ``batchbench run
    --batch-sizes 8 --steps 40 --devices cpu``: values are written as on the command line."""
    return plan(build_spec(cli_values={name: str(value) for name, value in flags.items() if value is not None}))
