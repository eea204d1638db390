"""The policies that turn the user's axes into each point's concrete values, once: dataset
sizes and the holdout split, batch sizes against each training set, ranks, devices against the
machine, the learning rate per batch size, the step budget, the check schedule, the monitor
interval and the timing mode.

Each is an ``Axis.at_point`` hook: ``(spec, at)`` where ``at`` holds the point's fields decided
so far (the outer sweep levels) and the context of the expansion (``at["data"]``: the data
set's ``DataInfo``, ``at["available"]``: this machine's devices). A sweep axis's hook returns
its level's values, each a value or a dict of the point fields it sets; an option's returns
the point's value. Pure: what they must know of the machine and the data is in ``at``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from harness.config import values as v
from harness.errors import SpecError

DEFAULT_THREADS = 1
"""Torch intra-op threads per point. One thread keeps a step's time stable when another
process shares the machine (with the default of one thread per core a step on a busy 2-core
box ran 60x slower); raise it with ``--threads`` to measure a many-core setup."""

DEFAULT_STEPS = 500
DEFAULT_BURN_IN_STEPS = 5
AUTO_CHECKS = 20
"""``--check-every auto`` without a target spreads this many loss checks evenly over a point."""

DEFAULT_TARGET_FRACTION = 0.1
"""The target a sweep sets unless told otherwise (``--target none`` sets none): 10% of the way
from each point's initial loss down to the best check loss the sweep reached at that dataset
size. Relative, so it adapts to any data set; tight enough that small batches still take
many steps to reach it, loose enough that most points do."""

DEFAULT_LR_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
"""``--lr-policy tuned`` tries these (half-decade steps) unless ``--lr-grid`` says otherwise."""

AUTO_DEVICE_SHARE = 0.25
"""``--data-placement auto`` keeps the training set on the accelerator when it takes less than
this share of the device's memory (as users with small data do), else pins it in host memory
and copies each batch asynchronously (as users with large data do)."""

SAMPLING = ("shuffle", "replacement")
PLACEMENTS = ("auto", "pageable", "pinned", "device", "host")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adam", "adamw")
ADAPTIVE = ("adam", "adamw")
"""Optimizers with Adam's moments (``--betas``, ``--eps``)."""
LR_SCHEDULES = ("constant", "cosine", "linear")
LOADERS = ("tensor", "dataloader")
LR_POLICIES = ("constant", "linear", "sqrt", "tuned")
CHECK_SETS = ("holdout", "train")
TIMINGS = ("auto", "events", "sync")
SCALINGS = ("strong", "weak")


@dataclass(frozen=True)
class DataInfo:
    """What expansion must know of a data set: its natural size and how many rows exist
    (None where the data are generated at any size)."""

    natural_size: int
    max_size: int | None


def split_sizes(dataset_size: int, check_set: str, holdout_fraction: float) -> tuple[int, int]:
    """(train, check) sizes: a holdout takes round(size x fraction) samples, at least one each.
    The one place this rule lives: ``workload.datasets.split`` cuts the data by it."""
    if check_set == "train":
        return dataset_size, dataset_size
    check = max(1, round(dataset_size * holdout_fraction))
    train = dataset_size - check
    if train < 1:
        raise SpecError(
            "--dataset-sizes",
            f"{dataset_size} leaves no training samples with --holdout-fraction {holdout_fraction:g}; use a larger size",
        )
    return train, check


def dataset_sizes(spec, at: dict) -> Iterable[dict[str, int]]:
    """Given sizes, or the data set's natural size and half of it; each with its split."""
    data: DataInfo = at["data"]
    sizes = spec.dataset_sizes or tuple(sorted({max(1, data.natural_size // 2), data.natural_size}))
    for size in sizes:
        if data.max_size is not None and size > data.max_size:
            raise SpecError("--dataset-sizes", f"{size} is larger than {spec.dataset} ({data.max_size} samples); use at most {data.max_size}")
    for size in sizes:
        train, check = split_sizes(size, spec.check_set, spec.holdout_fraction)
        yield {"dataset_size": size, "train_size": train, "check_size": check}


def resolve_batch_sizes(tokens: Sequence[v.BatchToken], train_size: int, dataset_size: int) -> list[int]:
    """Batch sizes for one training set: sorted, unique; ``full`` is the training set's size."""
    sizes: set[int] = set()
    for token in tokens:
        if token == v.FULL:
            sizes.add(train_size)
        elif isinstance(token, v.BatchRange):
            high = train_size if token.high is None else token.high
            power = 1 << max(0, (token.low - 1).bit_length())
            while power <= min(high, train_size):
                sizes.add(power)
                power *= 2
            if token.high is None:
                sizes.add(train_size)
            elif high > train_size:
                raise SpecError("--batch-sizes", f"range {token.text()} goes past the training set ({train_size} samples at dataset size "
                                                 f"{dataset_size}); use at most {train_size}, or {token.low}..full")
        elif int(token) > train_size:
            raise SpecError("--batch-sizes", f"{token} is larger than the training set ({train_size} samples at dataset size "
                                             f"{dataset_size}); use at most {train_size} or 'full'")
        else:
            sizes.add(int(token))
    if not sizes:
        raise SpecError("--batch-sizes", f"{','.join(map(str, v.text_of(tuple(tokens))))} gives no batch size for a training set of {train_size}")
    return sorted(sizes)


def batch_sizes(spec, at: dict) -> list[int]:
    return resolve_batch_sizes(spec.batch_sizes, at["train_size"], at["dataset_size"])


def world_sizes(spec, at: dict) -> Iterable[dict[str, Any]]:
    """Each world size with the point's global batch, and why it must be skipped (or None)."""
    for world in spec.world_sizes:
        batch, train = at["batch_size"], at["train_size"]
        skip = None
        if world > 1 and spec.scaling == "weak":
            batch = batch * world
            if batch > train:
                skip = f"weak scaling: {world} ranks x {at['batch_size']} = {batch} exceeds the training set ({train})"
        elif world > 1 and batch % world:
            skip = f"strong scaling: batch {batch} does not split evenly over {world} ranks"
        yield {"world_size": world, "batch_size": batch, "skip_reason": skip}


def learning_rates(spec, at: dict) -> list[float]:
    """The learning rate(s) a batch size gets under the declared policy: scaled from ``--lr``
    at ``--base-batch-size`` (linear: Goyal et al.; sqrt), or every grid value (tuned)."""
    if spec.lr_policy == "tuned":
        return list(spec.lr_grid)
    ratio = at["batch_size"] / spec.base_batch_size
    scale = {"constant": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[spec.lr_policy]
    return [spec.lr * scale]


def resolve_devices(names: Sequence[str], available: Sequence[str]) -> list[str]:
    """Concrete device names (``cuda`` is ``cuda:0``); an unavailable one is an error."""
    out: list[str] = []
    for token in names:
        for name in list(available) if token == "auto" else ["cuda:0" if token == "cuda" else token]:
            if name not in available:
                raise SpecError("--devices", f"{token} is not available on this machine; available: {', '.join(available)}")
            if name not in out:
                out.append(name)
    return out


def devices(spec, at: dict) -> list[str]:
    return resolve_devices(spec.devices, at["available"])


def placements(spec, at: dict) -> tuple[str, ...]:
    """The data placements a device runs: ``host`` on the CPU (there is nowhere else to put
    the data), the axis's values elsewhere (``auto`` resolved by the plan, which knows sizes)."""
    if at["device"] == "cpu":
        return ("host",)
    return tuple(p for p in spec.data_placement if p != "host") or ("auto",)


def prefetch_factors(spec, at: dict) -> tuple[int, ...]:
    """Every --prefetch-factor with workers; the first alone without (no worker prefetches)."""
    return spec.prefetch_factor if at["workers"] > 0 else spec.prefetch_factor[:1]


def repeats(spec, at: dict) -> range:
    return range(spec.repeats)


def steps(spec, at: dict) -> int:
    """The step budget: ``--steps``, or ``--epochs`` of the training set at this global batch."""
    if spec.epochs is not None:
        steps = max(1, math.ceil(spec.epochs * at["train_size"] / at["batch_size"]))
        if steps > v.MAX_STEPS:
            raise SpecError("--epochs", f"{spec.epochs:g} epochs are {steps:,} steps at batch size {at['batch_size']}; "
                                        f"use at most {v.MAX_STEPS:,} steps a point")
        return steps
    return spec.steps if spec.steps is not None else DEFAULT_STEPS


def has_target(spec) -> bool:
    return spec.target is not None or spec.target_loss is not None or spec.target_accuracy is not None


def check_every(spec, at: dict) -> v.CheckEvery:
    """``auto`` becomes geometric spacing when the point has a target (steps-to-target then has
    the same relative resolution at every batch size), else a step count."""
    if spec.check_every.kind != "auto":
        return spec.check_every
    if has_target(spec):
        return v.CheckEvery("log", v.AUTO_LOG_CHECKS, auto=True)
    return v.CheckEvery("steps", max(1, at["steps"] // AUTO_CHECKS), auto=True)


ADAMW_WEIGHT_DECAY = 0.01
"""torch's AdamW default (since 0.6; before, batchbench's AdamW had no weight decay unless given:
``compat.earlier_meanings``)."""


def weight_decay(spec, at: dict) -> float:
    """As given, or the optimizer's own default: 0.01 for AdamW (as torch), 0 for SGD and Adam."""
    if spec.weight_decay is not None:
        return spec.weight_decay
    return ADAMW_WEIGHT_DECAY if spec.optimizer == "adamw" else 0.0


def noise_samples(spec, at: dict) -> int:
    """At most the training set; none for data-parallel points (one process's model only)."""
    return min(spec.noise_samples, at["train_size"]) if at["world_size"] == 1 else 0


def sample_interval_s(spec, at: dict) -> float:
    """The monitor's interval: given, or 0.1 s on the CPU and 0.02 s on a GPU (GPU phases are
    short, and NVML readings cheap)."""
    if spec.sample_interval is not None:
        return spec.sample_interval
    return 0.1 if at["device"] == "cpu" else 0.02


def timing_mode(device: str, timing: str) -> str:
    """``cpu`` on the CPU; CUDA uses events unless ``--timing sync``; MPS synchronises."""
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        return "sync" if timing == "sync" else "events"
    return "sync"


def log_check_steps(steps: int, count: int) -> list[int]:
    """The steps after which a ``log:N`` schedule checks: 1, 2, 3, ... then growing by a fixed
    ratio, at most ``count`` of them, the last at ``steps`` (the smallest ratio that gets there)."""

    def sequence(ratio: float) -> list[int]:
        out = [1]
        while out[-1] < steps:
            out.append(min(steps, max(out[-1] + 1, math.ceil(out[-1] * ratio - 1e-9))))
        return out

    if steps <= count:
        return list(range(1, steps + 1))
    low, high = 1.0, float(steps)
    for _ in range(60):
        middle = (low + high) / 2
        if len(sequence(middle)) <= count:
            high = middle
        else:
            low = middle
    return sequence(high)


def micro_batch_size(spec, at: dict) -> int | str | None:
    """The micro-batch a point accumulates over: none, ``auto`` (resolved by the plan, which
    knows the device), or M, capped at the batch a rank takes (M >= the batch: no accumulation)."""
    micro = spec.micro_batch_size
    if micro is None or micro == "auto":
        return micro
    per_rank = at["batch_size"] // at["world_size"]
    return None if micro >= per_rank else micro
