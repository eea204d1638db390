"""What to run: a ``SweepSpec`` (the axes, parsed from TOML and CLI flags alike) and its
expansion into one ``RunSpec`` per sweep point x repeat.

All validation happens here, before anything runs, so a bad value never leaves a half-written
store behind: every problem is a ``SpecError`` naming the field and the allowed values.
This module is pure (no torch, no files but the TOML reader): what it needs to know about the
machine and the data set is passed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.errors import SpecError

DEFAULT_THREADS = 1
"""Torch intra-op threads per point. One thread keeps a step's time stable when another
process shares the machine (with the default of one thread per core a step on a busy 2-core
box ran 60x slower); raise it with ``--threads`` to measure a many-core setup."""

DEFAULT_STEPS = 500
DEFAULT_BURN_IN_STEPS = 5
AUTO_CHECKS = 20
"""``--check-every auto`` spreads this many loss checks over a point's budget."""

DEFAULT_LR_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
"""``--lr-policy tuned`` tries these (half-decade steps) unless ``--lr-grid`` says otherwise."""

DEFAULT_NOISE_SAMPLES = 0
"""Training samples whose per-example gradients estimate the noise scale at each check; 0 is
off. Opt-in because the estimate, though timed apart, evicts the loop from the CPU caches: the
first steps after each check ran up to 50% slower (about 3-6% throughput at B = 32 with 20
checks a point). ``--noise-samples 1024`` is a good setting for a convergence study."""

CHOICES = {
    "scaling": ("strong", "weak"),
    "lr_policy": ("constant", "linear", "sqrt", "tuned"),
    "optimizer": ("sgd", "adam"),
    "check_set": ("holdout", "train"),
    "timing": ("auto", "events", "sync"),
    "sampling": ("shuffle", "replacement"),
    "loader": ("tensor", "dataloader"),
}

_DEVICE_RE = re.compile(r"^(cpu|mps|auto|cuda(:\d+)?)$")
_RANGE_RE = re.compile(r"^(\d+)\.\.(\d+|full)$")


def flag(field: str) -> str:
    """The CLI spelling of a spec field, used in every message."""
    return "--" + field.replace("_", "-")


@dataclass(frozen=True)
class SweepSpec:
    """The axes and options of a sweep, as the user gave them (before expansion)."""

    dataset: str = "blobs"
    dataset_sizes: tuple[int, ...] = ()
    """Empty: the data set's natural size and half of it (two sizes, as the quick sweep shows)."""
    batch_sizes: tuple[str, ...] = ("1..full",)
    devices: tuple[str, ...] = ("auto",)
    model: str = "mlp"
    hidden: tuple[int, ...] = (32,)
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    steps: int | None = None
    epochs: float | None = None
    check_every: str = "auto"
    check_set: str = "holdout"
    holdout_fraction: float = 0.2
    threads: int = DEFAULT_THREADS
    repeats: int = 1
    seed: int = 0
    data_seed: int = 0
    timing: str = "auto"
    burn_in_steps: int = DEFAULT_BURN_IN_STEPS
    sampling: tuple[str, ...] = ("shuffle",)
    loader: str = "tensor"
    target_column: str | None = None
    lr_policy: str = "constant"
    base_batch_size: int = 32
    lr_grid: tuple[float, ...] = DEFAULT_LR_GRID
    warmup_steps: int = 0
    """Learning-rate warm-up (linear ramp over the first steps), not the timing burn-in."""
    target_loss: float | None = None
    target_accuracy: float | None = None
    target: str | None = None
    """``rel:F``: the loss L_ref + F (L_0 - L_ref), L_ref the best check loss of the sweep."""
    stop_at_target: bool = False
    noise_samples: int = DEFAULT_NOISE_SAMPLES
    sample_interval: float | None = None
    """Monitor interval in seconds; None: 0.1 s on the CPU, 0.02 s on a GPU; 0: off."""
    shard: str | None = None
    """``I/N``: run only sweep points I, I+N, I+2N, ... (0 <= I < N), e.g. one job of an array."""
    world_sizes: tuple[int, ...] = (1,)
    """Data-parallel ranks (torch.distributed, one process each); 1 is a plain single process."""
    scaling: str = "strong"
    """strong: the global batch is --batch-sizes, split over the ranks; weak: each rank takes it."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def spec_hash(self) -> str:
        """Identifies the sweep for ``--resume``: same spec, same hash."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:16]

    @property
    def sweep_hash(self) -> str:
        """The same for every shard of a sweep: what ``merge`` joins on."""
        return dataclasses.replace(self, shard=None).spec_hash


@dataclass(frozen=True)
class RunSpec:
    """One sweep point x repeat: everything ``train.run_point`` needs, nothing it must guess."""

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
    warmup_steps: int
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
    sample_interval: float = 0.1
    world_size: int = 1
    scaling: str = "strong"
    skip_reason: str | None = None
    """Set where the point cannot run as asked (a batch that does not split over the ranks)."""

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
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    @property
    def epochs(self) -> float:
        return self.steps * self.batch_size / self.train_size


@dataclass(frozen=True)
class DataInfo:
    """What expansion must know of a data set: its natural size and how many rows exist
    (None where the data are generated at any size)."""

    natural_size: int
    max_size: int | None


# ---------------------------------------------------------------- parsing single values


def _tokens(field: str, value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    elif isinstance(value, (str, int, float)):
        items = [t.strip() for t in str(value).split(",")]
    else:
        raise SpecError(flag(field), f"expected a comma list, got {value!r}")
    if not items or any(t == "" for t in items):
        raise SpecError(flag(field), f"empty entry in {value!r}; give a comma list")
    return items


def _int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise SpecError(flag(field), f"{value!r} is not an integer; use an integer >= {minimum}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise SpecError(flag(field), f"{value!r} is not an integer; use an integer >= {minimum}") from None
    if number < minimum:
        raise SpecError(flag(field), f"{number} is not allowed; use an integer >= {minimum}")
    return number


def _float(field: str, value: Any, low: float, high: float | None = None, *, low_open: bool = True) -> float:
    allowed = f"a number {'>' if low_open else '>='} {low:g}" + (f" and < {high:g}" if high is not None else "")
    if isinstance(value, bool):
        raise SpecError(flag(field), f"{value!r} is not a number; use {allowed}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(flag(field), f"{value!r} is not a number; use {allowed}") from None
    bad = (
        not math.isfinite(number)
        or (number <= low if low_open else number < low)
        or (high is not None and number >= high)
    )
    if bad:
        raise SpecError(flag(field), f"{value!r} is not allowed; use {allowed}")
    return number


def _choice(field: str, value: Any) -> str:
    allowed = CHOICES[field]
    text = str(value).strip().lower()
    if text not in allowed:
        raise SpecError(flag(field), f"{value!r} is not one of {', '.join(allowed)}")
    return text


def parse_batch_tokens(value: Any) -> tuple[str, ...]:
    """Check the grammar of ``--batch-sizes``: integers, power-of-two ranges ``a..b`` (b may be
    ``full``) and ``full``. Sizes are resolved against each training set in ``expand``."""
    tokens = _tokens("batch_sizes", value)
    allowed = "use positive integers, power-of-two ranges like 1..1024 or 1..full, or 'full'"
    for token in tokens:
        if token == "full":
            continue
        match = _RANGE_RE.match(token)
        if match:
            low, high = match.group(1), match.group(2)
            if int(low) < 1 or (high != "full" and int(high) < int(low)):
                raise SpecError("--batch-sizes", f"range {token!r} is empty; {allowed}")
            continue
        if not token.lstrip("-").isdigit():
            raise SpecError("--batch-sizes", f"{token!r} is not a batch size; {allowed}")
        if int(token) < 1:
            raise SpecError("--batch-sizes", f"{token} is not allowed; {allowed}")
    return tuple(tokens)


def parse_devices(value: Any) -> tuple[str, ...]:
    tokens = [t.lower() for t in _tokens("devices", value)]
    for token in tokens:
        if not _DEVICE_RE.match(token):
            raise SpecError("--devices", f"{token!r} is not a device; use cpu, cuda, cuda:N, mps or auto")
    return tuple(tokens)


def parse_target(value: Any) -> str:
    text = str(value).strip().lower()
    allowed = "use rel:F with 0 < F < 1 (e.g. rel:0.1), or --target-loss / --target-accuracy"
    if not text.startswith("rel:"):
        raise SpecError("--target", f"{value!r} is not a target; {allowed}")
    fraction = _float("target", text[4:], 0.0, 1.0) if text[4:] else None
    if fraction is None:
        raise SpecError("--target", f"{value!r} has no fraction; {allowed}")
    return f"rel:{fraction:g}"


def parse_interval(value: Any) -> float:
    text = str(value).strip().lower()
    scale = 1e-3 if text.endswith("ms") else 1.0
    number = text[:-2] if text.endswith("ms") else text[:-1] if text.endswith("s") else text
    try:
        seconds = float(number) * scale
    except ValueError:
        raise SpecError("--sample-interval", f"{value!r} is not an interval; use seconds (0.1, 0.1s), milliseconds (100ms) or 0 for off") from None
    if not math.isfinite(seconds) or seconds < 0 or 0 < seconds < 0.001:
        raise SpecError("--sample-interval", f"{value!r} is not allowed; use 0 (off) or at least 1ms")
    return seconds


def parse_shard(value: Any) -> str:
    text = str(value).strip()
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or int(match.group(2)) < 1 or int(match.group(1)) >= int(match.group(2)):
        raise SpecError("--shard", f"{value!r} is not a shard; use I/N with 0 <= I < N, e.g. 0/4 (Slurm: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return f"{int(match.group(1))}/{int(match.group(2))}"


def shard_of(runs: list, shard: str | None) -> list:
    """Every N-th run starting at I: shards of one sweep are disjoint and cover it."""
    if shard is None:
        return runs
    index, count = (int(part) for part in shard.split("/"))
    return [run for i, run in enumerate(runs) if i % count == index]


def _bool(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SpecError(flag(field), f"{value!r} is not true or false")


def parse_check_every(value: Any) -> str:
    text = str(value).strip().lower()
    allowed = "use a step count (e.g. 50), seconds (e.g. 30s), 'epoch' or 'auto'"
    if text in ("auto", "epoch"):
        return text
    if text.endswith("s"):
        try:
            seconds = float(text[:-1])
        except ValueError:
            raise SpecError("--check-every", f"{value!r} is not a schedule; {allowed}") from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise SpecError("--check-every", f"{value!r} is not allowed; {allowed}")
        return f"{seconds:g}s"
    if text.isdigit() and int(text) >= 1:
        return str(int(text))
    raise SpecError("--check-every", f"{value!r} is not a schedule; {allowed}")


_PARSERS = {
    "dataset": lambda v: str(v).strip(),
    "dataset_sizes": lambda v: tuple(_int("dataset_sizes", t, 1) for t in _tokens("dataset_sizes", v)),
    "batch_sizes": parse_batch_tokens,
    "devices": parse_devices,
    "model": lambda v: str(v).strip(),
    "hidden": lambda v: tuple(_int("hidden", t, 1) for t in _tokens("hidden", v)),
    "optimizer": lambda v: _choice("optimizer", v),
    "lr": lambda v: _float("lr", v, 0.0),
    "momentum": lambda v: _float("momentum", v, 0.0, 1.0, low_open=False),
    "steps": lambda v: _int("steps", v, 1),
    "epochs": lambda v: _float("epochs", v, 0.0),
    "check_every": parse_check_every,
    "check_set": lambda v: _choice("check_set", v),
    "holdout_fraction": lambda v: _float("holdout_fraction", v, 0.0, 1.0),
    "threads": lambda v: _int("threads", v, 1),
    "repeats": lambda v: _int("repeats", v, 1),
    "seed": lambda v: _int("seed", v, 0),
    "data_seed": lambda v: _int("data_seed", v, 0),
    "timing": lambda v: _choice("timing", v),
    "burn_in_steps": lambda v: _int("burn_in_steps", v, 0),
    "sampling": lambda v: tuple(dict.fromkeys(_choice("sampling", t) for t in _tokens("sampling", v))),
    "loader": lambda v: _choice("loader", v),
    "target_column": lambda v: str(v).strip(),
    "lr_policy": lambda v: _choice("lr_policy", v),
    "base_batch_size": lambda v: _int("base_batch_size", v, 1),
    "lr_grid": lambda v: tuple(sorted({_float("lr_grid", t, 0.0) for t in _tokens("lr_grid", v)})),
    "warmup_steps": lambda v: _int("warmup_steps", v, 0),
    "target_loss": lambda v: _float("target_loss", v, 0.0, low_open=False),
    "target_accuracy": lambda v: _float("target_accuracy", v, 0.0, 1.0 + 1e-12),
    "target": parse_target,
    "stop_at_target": lambda v: _bool("stop_at_target", v),
    "noise_samples": lambda v: _int("noise_samples", v, 0),
    "sample_interval": parse_interval,
    "shard": parse_shard,
    "world_sizes": lambda v: tuple(sorted({_int("world_sizes", t, 1) for t in _tokens("world_sizes", v)})),
    "scaling": lambda v: _choice("scaling", v),
}
FIELDS = tuple(f.name for f in dataclasses.fields(SweepSpec))
assert set(_PARSERS) == set(FIELDS)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a spec file; keys are the flag names (``batch-sizes`` or ``batch_sizes``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise SpecError("spec", f"file not found: {path}")
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())
        raise SpecError("spec", f"{path} is not valid TOML: {detail}") from None
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise SpecError("spec", f"unknown key {key!r} in {path}; allowed: {', '.join(f.replace('_', '-') for f in FIELDS)}")
        values[name] = value
    return values


def build_spec(file_values: Mapping[str, Any] | None = None, cli_values: Mapping[str, Any] | None = None) -> SweepSpec:
    """Merge a spec file's values with CLI flags (flags win; None means not given) and parse
    every value. A budget flag replaces the file's budget, so ``--epochs`` beats ``steps``."""
    merged: dict[str, Any] = dict(file_values or {})
    cli = {k: v for k, v in (cli_values or {}).items() if v is not None}
    if "steps" in cli or "epochs" in cli:
        merged.pop("steps", None)
        merged.pop("epochs", None)
    merged.update(cli)
    parsed = {name: _PARSERS[name](value) for name, value in merged.items()}
    if parsed.get("steps") is not None and parsed.get("epochs") is not None:
        raise SpecError("--steps", "give --steps or --epochs, not both")
    targets = [name for name in ("target_loss", "target_accuracy", "target") if parsed.get(name) is not None]
    if len(targets) > 1:
        raise SpecError(flag(targets[1]), f"give one target, not {' and '.join(flag(t) for t in targets)}")
    if max(parsed.get("world_sizes", (1,))) > 1:
        if str(parsed.get("check_every", "")).endswith("s"):
            raise SpecError("--check-every", "ranks must check at the same steps: use a step count, 'epoch' or 'auto' with --world-sizes > 1")
        if parsed.get("stop_at_target"):
            raise SpecError("--stop-at-target", "is not supported with --world-sizes > 1 (every rank would have to agree when to stop)")
    if parsed.get("stop_at_target") and not (parsed.get("target_loss") is not None or parsed.get("target_accuracy") is not None):
        raise SpecError("--stop-at-target", "needs --target-loss or --target-accuracy (a rel: target is known only after the sweep)")
    return SweepSpec(**parsed)


# ---------------------------------------------------------------- expansion


def split_sizes(dataset_size: int, check_set: str, holdout_fraction: float) -> tuple[int, int]:
    """(train, check) sizes: a holdout takes round(size x fraction) samples, at least one each."""
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
        match = _RANGE_RE.match(token)
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


def target_rel(spec: SweepSpec) -> float | None:
    return float(spec.target[4:]) if spec.target else None


def sample_interval(spec: SweepSpec, device: str) -> float:
    """The monitor's interval: given, or 0.1 s on the CPU and 0.02 s on a GPU (GPU phases
    are short, and NVML readings cheap)."""
    if spec.sample_interval is not None:
        return spec.sample_interval
    return 0.1 if device == "cpu" else 0.02


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


def check_interval(check_every: str, steps: int) -> str:
    """The recorded check schedule: ``auto`` becomes a step count."""
    if check_every == "auto":
        return str(max(1, steps // AUTO_CHECKS))
    return check_every


def expand(spec: SweepSpec, data: DataInfo, available_devices: Sequence[str]) -> list[RunSpec]:
    """One ``RunSpec`` per dataset size x batch size x device x repeat, in the order they run
    (repeats innermost, so an interrupted sweep has whole points before it has repeats)."""
    sizes = spec.dataset_sizes or tuple(sorted({max(1, data.natural_size // 2), data.natural_size}))
    for size in sizes:
        if data.max_size is not None and size > data.max_size:
            raise SpecError(
                "--dataset-sizes", f"{size} is larger than {spec.dataset} ({data.max_size} samples); use at most {data.max_size}"
            )
    devices = resolve_devices(spec.devices, available_devices)
    runs: list[RunSpec] = []
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
                    for device in devices:
                        for repeat in range(spec.repeats):
                            runs.append(
                                RunSpec(
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
                                    steps=steps,
                                    warmup_steps=min(spec.burn_in_steps, steps // 2),
                                    check_every=check_interval(spec.check_every, steps),
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
                                    target_rel=target_rel(spec),
                                    stop_at_target=spec.stop_at_target,
                                    noise_samples=min(spec.noise_samples, train_size) if world == 1 else 0,
                                    sample_interval=sample_interval(spec, device),
                                )
                            )
    return runs
