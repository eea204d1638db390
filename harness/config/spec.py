"""``SweepSpec``: the axes and options of one sweep, as the user gave them, typed.

A frozen dataclass with a typed field per axis of ``axes.AXES``, its default the axis's. A spec file (TOML) and
CLI flags end in ``build_spec``, which parses every value once (``Axis.parse``) and checks
what no single value can (a budget or a target given twice, options that need another). Every
problem is a ``SpecError`` naming the flag and what is allowed, raised before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from harness.config.axes import AXES, BY_NAME, Axis
from harness.config.values import NO_TARGET, BatchToken, CheckEvery, RelativeTarget, Shard, flag, text_of
from harness.errors import SpecError


FILE_ENDINGS = (".npz", ".csv", ".parquet")


def _axis(name: str) -> Any:
    """A spec field's default: its axis's (``axes.AXES``), so each is declared once."""
    return dataclasses.field(default=BY_NAME[name].default)


@dataclass(frozen=True)
class SweepSpec:
    """The axes and options of a sweep, typed: a field per axis of ``axes.AXES``, in its order,
    with its default and its value's type (``tests/test_spec.py`` holds the two together)."""

    dataset_sizes: tuple[int, ...] = _axis("dataset_sizes")
    batch_sizes: tuple[BatchToken, ...] = _axis("batch_sizes")
    sampling: tuple[str, ...] = _axis("sampling")
    world_sizes: tuple[int, ...] = _axis("world_sizes")
    lr: float = _axis("lr")
    devices: tuple[str, ...] = _axis("devices")
    data_placement: tuple[str, ...] = _axis("data_placement")
    precision: tuple[str, ...] = _axis("precision")
    compile: tuple[str, ...] = _axis("compile")
    repeats: int = _axis("repeats")
    dataset: str = _axis("dataset")
    target_column: str | None = _axis("target_column")
    model: str = _axis("model")
    hidden: tuple[int, ...] = _axis("hidden")
    optimizer: str = _axis("optimizer")
    momentum: float = _axis("momentum")
    weight_decay: float | None = _axis("weight_decay")
    betas: tuple[float, float] | None = _axis("betas")
    eps: float | None = _axis("eps")
    grad_clip: float | None = _axis("grad_clip")
    micro_batch_size: int | str | None = _axis("micro_batch_size")
    loader: str = _axis("loader")
    workers: tuple[int, ...] = _axis("workers")
    prefetch_factor: tuple[int, ...] = _axis("prefetch_factor")
    seed: int = _axis("seed")
    data_seed: int = _axis("data_seed")
    lr_policy: str = _axis("lr_policy")
    base_batch_size: int = _axis("base_batch_size")
    lr_grid: tuple[float, ...] = _axis("lr_grid")
    warmup_steps: int = _axis("warmup_steps")
    lr_schedule: str = _axis("lr_schedule")
    lr_floor: float = _axis("lr_floor")
    target_loss: float | None = _axis("target_loss")
    target_accuracy: float | None = _axis("target_accuracy")
    target: RelativeTarget | None = _axis("target")
    stop_at_target: bool = _axis("stop_at_target")
    noise_samples: int = _axis("noise_samples")
    steps: int | None = _axis("steps")
    epochs: float | None = _axis("epochs")
    check_every: CheckEvery = _axis("check_every")
    check_set: str = _axis("check_set")
    holdout_fraction: float = _axis("holdout_fraction")
    threads: int = _axis("threads")
    timing: str = _axis("timing")
    sample_interval: float | None = _axis("sample_interval")
    burn_in_steps: int = _axis("burn_in_steps")
    point_timeout: float | None = _axis("point_timeout")
    peak_tflops: float | None = _axis("peak_tflops")
    scaling: str = _axis("scaling")
    shard: Shard | None = _axis("shard")

    axes: ClassVar[tuple[Axis, ...]] = AXES
    """The table the fields come from (a subclass's has more: ``spec_class``)."""

    def to_json(self) -> str:
        """The spec as stored (``runs.spec_json``): every value as its canonical text."""
        return json.dumps(as_text(self), sort_keys=True)


def spec_class(axes: Sequence[Axis] = AXES) -> type[SweepSpec]:
    """``SweepSpec``, or for a table with more axes (a plug-in's, a test's) a subclass with a
    field for each more (typed ``Any``: the table's own axes are the typed ones)."""
    more = [a for a in axes if a.name not in BY_NAME]
    if not more:
        return SweepSpec
    fields = [(a.name, Any, dataclasses.field(default=a.default)) for a in more]
    return dataclasses.make_dataclass("SweepSpec", fields, bases=(SweepSpec,), frozen=True, namespace={"__module__": __name__, "axes": tuple(axes)})


def as_text(values: Any) -> dict[str, Any]:
    """A spec's or a point's fields as their canonical text (``values.text_of``), tuples as
    lists: what JSON, hashes and stored specs hold."""
    out = {}
    for field in dataclasses.fields(values):
        text = text_of(getattr(values, field.name))
        out[field.name] = list(text) if isinstance(text, tuple) else text
    return out


def load_toml(path: str | Path, axes: Sequence[Axis] = AXES) -> dict[str, Any]:
    """Read a spec file; keys are the flag names (``batch-sizes`` or ``batch_sizes``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    if path.is_dir():
        raise SpecError("spec", f"{path} is a folder, not a spec file; give a .toml file")
    if not path.is_file():
        raise SpecError("spec", f"file not found: {path}")
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())
        raise SpecError("spec", f"{path} is not valid TOML: {detail}") from None
    except RecursionError:  # the reader recurses once a level of nesting
        raise SpecError("spec", f"{path} nests arrays or tables too deeply to read; a spec holds values and flat lists") from None
    names = [a.name for a in axes]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in names:
            raise SpecError("spec", f"unknown key {key!r} in {path}; allowed: {', '.join(n.replace('_', '-') for n in names)}")
        if name in values:
            raise SpecError("spec", f"{name} given twice in {path} (as {name.replace('_', '-')} and {name}); give it once")
        values[name] = _flat(key, value, path)
    return values


def _flat(key: str, value: Any, path: Path) -> Any:
    """A spec file's value as every axis takes it: one value or a flat list of them (a table, or
    a list inside a list, is no value of any axis, and is refused here before anything walks it)."""
    if isinstance(value, dict):
        raise SpecError("spec", f"{key} in {path} is a table; give it a value or a flat list, e.g. {key} = [1, 2]")
    if isinstance(value, list) and any(isinstance(item, (list, dict)) for item in value):
        raise SpecError("spec", f"{key} in {path} holds a list or table inside its list; give a flat list, e.g. {key} = [1, 2]")
    return value


def build_spec(file_values: Mapping[str, Any] | None = None, cli_values: Mapping[str, Any] | None = None,
               axes: Sequence[Axis] = AXES, cls: type[SweepSpec] | None = None) -> SweepSpec:
    """Merge a spec file's values with CLI flags (flags win; None means not given) and parse
    every value. A budget flag replaces the file's budget, so ``--epochs`` beats ``steps``."""
    merged: dict[str, Any] = dict(file_values or {})
    cli = {k: value for k, value in (cli_values or {}).items() if value is not None}
    if "steps" in cli or "epochs" in cli:
        merged.pop("steps", None)
        merged.pop("epochs", None)
    merged.update(cli)
    lookup = {a.name: a for a in axes}
    parsed = {name: lookup[name].parse(value) for name, value in merged.items()}
    _check_together(parsed)
    return (cls or spec_class(axes))(**parsed)


def _check_together(parsed: dict[str, Any]) -> None:
    """What no single value can say: one budget, one target, options that need another."""
    if parsed.get("burn_in_steps") is not None and parsed.get("steps") is not None and parsed["burn_in_steps"] >= parsed["steps"]:
        raise SpecError("--burn-in-steps", f"{parsed['burn_in_steps']} leaves none of --steps {parsed['steps']} to measure; "
                                           "at most half the steps are burn-in")
    if parsed.get("steps") is not None and parsed.get("epochs") is not None:
        raise SpecError("--steps", "give --steps or --epochs, not both")
    targets = [name for name in ("target_loss", "target_accuracy", "target") if parsed.get(name) not in (None, NO_TARGET)]
    if len(targets) > 1:
        raise SpecError(flag(targets[1]), f"give one target, not {' and '.join(flag(t) for t in targets)}")
    if parsed.get("target") == NO_TARGET or (targets and targets[0] != "target"):
        parsed["target"] = None  # no relative target: switched off, or an absolute one given instead of the default
    if max(parsed.get("world_sizes", (1,))) > 1:
        every = parsed.get("check_every")
        if every is not None and every.kind == "seconds":
            raise SpecError("--check-every", "ranks must check at the same steps: use a step count, 'epoch' or 'auto' with --world-sizes > 1")
        if parsed.get("stop_at_target"):
            raise SpecError("--stop-at-target", "is not supported with --world-sizes > 1 (every rank would have to agree when to stop)")
    pipeline = ":" in str(parsed.get("dataset", "")) and not str(parsed.get("dataset", "")).endswith(FILE_ENDINGS)
    if any(parsed.get("workers", ())) and parsed.get("loader", "tensor") != "dataloader" and not pipeline:  # a Dataset pipeline always has a DataLoader
        raise SpecError("--workers", "applies to --loader dataloader or a Dataset pipeline (tensor indexing has no workers)")
    if parsed.get("stop_at_target") and not (parsed.get("target_loss") is not None or parsed.get("target_accuracy") is not None):
        raise SpecError("--stop-at-target", "needs --target-loss or --target-accuracy (a rel: target is known only after the sweep)")
