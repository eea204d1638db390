"""From a ``SweepSpec`` to points: one ``PointSpec`` per dataset size x batch size x sampling x
world size x learning rate x device x placement x precision x repeat, each carrying everything the loop needs.

The policies that turn the user's axes into concrete values live here, once: the holdout split
(``datasets`` uses it too), batch sizes against each training set, devices against the
machine, the timing mode, the learning rate per batch size, the monitor interval, the check
schedule and the shard. Pure: what expansion must know of the machine and the data is passed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Sequence

from harness.errors import SpecError
from harness.spec.parse import RANGE_RE
from harness.spec.sweep import AUTO_CHECKS, AUTO_LOG_CHECKS, DEFAULT_STEPS, SweepSpec


@dataclass(frozen=True)
class PointSpec:
    """One sweep point x repeat: everything ``run_point`` needs, nothing it must guess."""

    dataset: str
    dataset_size: int
    train_size: int
    check_size: int
    batch_size: int
    device: str
    timing_mode: str
    model: str
    hidden: tuple[int, ...]
    optimizer: str
    lr: float
    momentum: float
    sampling: str
    loader: str
    steps: int
    burn_in_steps: int
    """Timing warm-up: these first steps train but stay out of every statistic."""
    check_every: str
    check_set: str
    holdout_fraction: float
    threads: int
    seed: int
    """Seeds the data order (the epoch permutations); base seed + repeat."""
    init_seed: int
    """Seeds the model's initial weights: shared by every point of a sweep, so batch sizes
    start from the same weights and repeats differ only in their data order."""
    data_seed: int
    repeat: int
    target_column: str | None = None
    lr_policy: str = "constant"
    base_lr: float | None = 0.1
    base_batch_size: int = 32
    lr_warmup_steps: int = 0
    target_loss: float | None = None
    target_accuracy: float | None = None
    target_rel: float | None = None
    stop_at_target: bool = False
    noise_samples: int = 0
    sample_interval_s: float = 0.1
    world_size: int = 1
    scaling: str = "strong"
    skip_reason: str | None = None
    """Set where the point cannot run as asked (a batch that does not split over the ranks)."""
    data_placement: str = "host"
    """host (CPU points), pageable, pinned or device; ``auto`` until the plan resolves it."""
    precision: str = "fp32"
    peak_tflops: float | None = None
    workers: int = 0
    compile: str = "off"

    @property
    def per_rank_batch_size(self) -> int:
        return self.batch_size // self.world_size

    @property
    def backend(self) -> str | None:
        if self.world_size == 1:
            return None
        return "nccl" if self.device.startswith("cuda") else "gloo"

    @property
    def point_id(self) -> str:
        """Stable identity of the point: a hash of every field under its stored name
        (fields renamed since 0.1 hash under their old names, so stores keep resuming)."""
        fields = {_ID_NAMES.get(k, k): v for k, v in dataclasses.asdict(self).items()}
        for name, before in _BEFORE.items():  # what every point did before the field existed
            if fields[name] in before:
                del fields[name]
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def epochs(self) -> float:
        return self.steps * self.batch_size / self.train_size

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "PointSpec":
        raw = json.loads(text)
        raw["hidden"] = tuple(raw["hidden"])
        return cls(**raw)


_ID_NAMES = {"burn_in_steps": "warmup_steps", "sample_interval_s": "sample_interval"}
_BEFORE = {"data_placement": ("host", "pageable"), "precision": ("fp32",), "peak_tflops": (None,), "workers": (0,), "compile": ("off",)}
"""Fields added since 0.1, and their values that mean what points did before: left out of the
id there, so stores written before keep resuming."""


@dataclass(frozen=True)
class DataInfo:
    """What expansion must know of a data set: its natural size and how many rows exist
    (None where the data are generated at any size)."""

    natural_size: int
    max_size: int | None


def split_sizes(dataset_size: int, check_set: str, holdout_fraction: float) -> tuple[int, int]:
    """(train, check) sizes: a holdout takes round(size x fraction) samples, at least one each.
    The one place this rule lives: ``datasets.split`` cuts the data by it."""
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


def resolve_batch_sizes(tokens: Sequence[str], train_size: int, dataset_size: int) -> list[int]:
    """Batch sizes for one training set: sorted, unique; ``full`` is the training set's size."""
    sizes: set[int] = set()
    for token in tokens:
        if token == "full":
            sizes.add(train_size)
            continue
        match = RANGE_RE.match(token)
        if match:
            low = int(match.group(1))
            high = train_size if match.group(2) == "full" else int(match.group(2))
            power = 1 << max(0, (low - 1).bit_length())
            while power <= min(high, train_size):
                sizes.add(power)
                power *= 2
            if match.group(2) == "full":
                sizes.add(train_size)
            elif high > train_size:
                raise SpecError(
                    "--batch-sizes",
                    f"range {token} goes past the training set ({train_size} samples at dataset size "
                    f"{dataset_size}); use at most {train_size}, or {low}..full",
                )
            continue
        size = int(token)
        if size > train_size:
            raise SpecError(
                "--batch-sizes",
                f"{size} is larger than the training set ({train_size} samples at dataset size "
                f"{dataset_size}); use at most {train_size} or 'full'",
            )
        sizes.add(size)
    if not sizes:
        raise SpecError("--batch-sizes", f"{','.join(tokens)} gives no batch size for a training set of {train_size}")
    return sorted(sizes)


def resolve_devices(tokens: Sequence[str], available: Sequence[str]) -> list[str]:
    """Concrete device names (``cuda`` is ``cuda:0``); an unavailable one is an error."""
    out: list[str] = []
    for token in tokens:
        names = list(available) if token == "auto" else ["cuda:0" if token == "cuda" else token]
        for name in names:
            if name not in available:
                have = ", ".join(available)
                raise SpecError("--devices", f"{token} is not available on this machine; available: {have}")
            if name not in out:
                out.append(name)
    return out


def timing_mode(device: str, timing: str) -> str:
    """``cpu`` on the CPU; CUDA uses events unless ``--timing sync``; MPS synchronises."""
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        return "sync" if timing == "sync" else "events"
    return "sync"


def learning_rates(spec: SweepSpec, batch_size: int) -> list[float]:
    """The learning rate(s) a batch size gets under the declared policy: scaled from
    ``--lr`` at ``--base-batch-size`` (linear: Goyal et al.; sqrt), or every grid value (tuned)."""
    if spec.lr_policy == "tuned":
        return list(spec.lr_grid)
    ratio = batch_size / spec.base_batch_size
    scale = {"constant": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[spec.lr_policy]
    return [spec.lr * scale]


def sample_interval_s(spec: SweepSpec, device: str) -> float:
    """The monitor's interval: given, or 0.1 s on the CPU and 0.02 s on a GPU (GPU phases
    are short, and NVML readings cheap)."""
    if spec.sample_interval is not None:
        return spec.sample_interval
    return 0.1 if device == "cpu" else 0.02


def check_interval(check_every: str, steps: int, has_target: bool = False) -> str:
    """The recorded check schedule: ``auto`` becomes geometric spacing when the point has a
    target (steps-to-target then has the same relative resolution at every batch size), else a
    step count."""
    if check_every == "auto":
        return f"log:{AUTO_LOG_CHECKS}" if has_target else str(max(1, steps // AUTO_CHECKS))
    return check_every


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


def placements(spec: SweepSpec, device: str) -> tuple[str, ...]:
    """The data placements a device runs: ``host`` on the CPU (there is nowhere else to put
    the data), the axis's values elsewhere (``auto`` resolved by the plan, which knows sizes)."""
    if device == "cpu":
        return ("host",)
    return tuple(p for p in spec.data_placement if p != "host") or ("auto",)


def shard_of(points: list, shard: str | None) -> list:
    """Every N-th point starting at I: shards of one sweep are disjoint and cover it."""
    if shard is None:
        return points
    index, count = (int(part) for part in shard.split("/"))
    return [point for i, point in enumerate(points) if i % count == index]


def _global_batch(batch_size: int, world: int, scaling: str, train_size: int) -> tuple[int, str | None]:
    """(global batch, why the point must be skipped or None)."""
    if world == 1:
        return batch_size, None
    if scaling == "weak":
        total = batch_size * world
        return total, (f"weak scaling: {world} ranks x {batch_size} = {total} exceeds the training set ({train_size})" if total > train_size else None)
    if batch_size % world:
        return batch_size, f"strong scaling: batch {batch_size} does not split evenly over {world} ranks"
    return batch_size, None


def expand(spec: SweepSpec, data: DataInfo, available_devices: Sequence[str]) -> list[PointSpec]:
    """One ``PointSpec`` per dataset size x batch size x device x repeat, in the order they run
    (repeats innermost, so an interrupted sweep has whole points before it has repeats)."""
    sizes = spec.dataset_sizes or tuple(sorted({max(1, data.natural_size // 2), data.natural_size}))
    for size in sizes:
        if data.max_size is not None and size > data.max_size:
            raise SpecError(
                "--dataset-sizes", f"{size} is larger than {spec.dataset} ({data.max_size} samples); use at most {data.max_size}"
            )
    devices = resolve_devices(spec.devices, available_devices)
    points: list[PointSpec] = []
    for size in sizes:
        train_size, check_size = split_sizes(size, spec.check_set, spec.holdout_fraction)
        for batch_size in resolve_batch_sizes(spec.batch_sizes, train_size, size):
            for sampling, world in ((s, w) for s in spec.sampling for w in spec.world_sizes):
                global_batch, skip = _global_batch(batch_size, world, spec.scaling, train_size)
                if spec.epochs is not None:
                    steps = max(1, math.ceil(spec.epochs * train_size / global_batch))
                else:
                    steps = spec.steps if spec.steps is not None else DEFAULT_STEPS
                for lr in learning_rates(spec, global_batch):
                    for device, placement, precision, compiled in ((d, p, q, c) for d in devices for p in placements(spec, d) for q in spec.precision for c in spec.compile):
                        for repeat in range(spec.repeats):
                            points.append(
                                PointSpec(
                                    data_placement=placement,
                                    precision=precision,
                                    compile=compiled,
                                    peak_tflops=spec.peak_tflops,
                                    world_size=world,
                                    scaling=spec.scaling,
                                    skip_reason=skip,
                                    dataset=spec.dataset,
                                    dataset_size=size,
                                    train_size=train_size,
                                    check_size=check_size,
                                    batch_size=global_batch,
                                    device=device,
                                    timing_mode=timing_mode(device, spec.timing),
                                    model=spec.model,
                                    hidden=spec.hidden,
                                    optimizer=spec.optimizer,
                                    lr=lr,
                                    momentum=spec.momentum,
                                    sampling=sampling,
                                    loader=spec.loader,
                                    workers=spec.workers,
                                    steps=steps,
                                    burn_in_steps=min(spec.burn_in_steps, steps // 2),
                                    check_every=check_interval(spec.check_every, steps, has_target=spec.target is not None or spec.target_loss is not None or spec.target_accuracy is not None),
                                    check_set=spec.check_set,
                                    holdout_fraction=spec.holdout_fraction,
                                    threads=spec.threads,
                                    seed=spec.seed + repeat,
                                    init_seed=spec.seed,
                                    data_seed=spec.data_seed,
                                    repeat=repeat,
                                    target_column=spec.target_column,
                                    lr_policy=spec.lr_policy,
                                    base_lr=None if spec.lr_policy == "tuned" else spec.lr,
                                    base_batch_size=spec.base_batch_size,
                                    lr_warmup_steps=spec.warmup_steps,
                                    target_loss=spec.target_loss,
                                    target_accuracy=spec.target_accuracy,
                                    target_rel=spec.target_rel,
                                    stop_at_target=spec.stop_at_target,
                                    noise_samples=min(spec.noise_samples, train_size) if world == 1 else 0,
                                    sample_interval_s=sample_interval_s(spec, device),
                                )
                            )
    return points
