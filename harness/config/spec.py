"""``SweepSpec``: the axes and options of one sweep, as the user gave them, typed.

Built from ``axes.AXES``: one frozen field per axis, with its default. A spec file (TOML) and
CLI flags end in ``build_spec``, which parses every value once (``Axis.parse``) and checks
what no single value can (a budget or a target given twice, options that need another). Every
problem is a ``SpecError`` naming the flag and what is allowed, raised before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.config.axes import AXES, Axis
from harness.config.values import NO_TARGET, flag, text_of
from harness.errors import SpecError


FILE_ENDINGS = (".npz", ".csv", ".parquet")


def spec_class(axes: Sequence[Axis] = AXES) -> type:
    """The frozen dataclass of a sweep's values, one field per axis (its default)."""

    def to_json(self) -> str:
        """The spec as stored (``runs.spec_json``): every value as its canonical text."""
        return json.dumps(as_text(self), sort_keys=True)

    fields = [(a.name, Any, dataclasses.field(default=a.default)) for a in axes]
    return dataclasses.make_dataclass("SweepSpec", fields, frozen=True, namespace={"to_json": to_json, "__module__": __name__,
                                                                                   "__doc__": "The axes and options of a sweep, typed."})


def as_text(values) -> dict[str, Any]:
    """A spec's or a point's fields as their canonical text (``values.text_of``), tuples as
    lists: what JSON, hashes and stored specs hold."""
    out = {}
    for field in dataclasses.fields(values):
        text = text_of(getattr(values, field.name))
        out[field.name] = list(text) if isinstance(text, tuple) else text
    return out


SweepSpec = spec_class()


def load_toml(path: str | Path, axes: Sequence[Axis] = AXES) -> dict[str, Any]:
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
    names = [a.name for a in axes]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in names:
            raise SpecError("spec", f"unknown key {key!r} in {path}; allowed: {', '.join(n.replace('_', '-') for n in names)}")
        if name in values:
            raise SpecError("spec", f"{name} given twice in {path} (as {name.replace('_', '-')} and {name}); give it once")
        values[name] = value
    return values


def build_spec(file_values: Mapping[str, Any] | None = None, cli_values: Mapping[str, Any] | None = None,
               axes: Sequence[Axis] = AXES, cls: type | None = None):
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
    return (cls or (SweepSpec if axes is AXES else spec_class(axes)))(**parsed)


def _check_together(parsed: dict[str, Any]) -> None:
    """What no single value can say: one budget, one target, options that need another."""
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
    if parsed.get("workers") and parsed.get("loader", "tensor") != "dataloader" and not pipeline:  # a Dataset pipeline always has a DataLoader
        raise SpecError("--workers", "applies to --loader dataloader or a Dataset pipeline (tensor indexing has no workers)")
    if parsed.get("stop_at_target") and not (parsed.get("target_loss") is not None or parsed.get("target_accuracy") is not None):
        raise SpecError("--stop-at-target", "needs --target-loss or --target-accuracy (a rel: target is known only after the sweep)")
