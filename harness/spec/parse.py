"""From text to a ``SweepSpec``: the value grammars, the TOML reader and ``build_spec``.

TOML keys and CLI flags end in the same parsers, so a value means the same wherever it is
written. Every problem is a ``SpecError`` naming the flag and what is allowed, raised before
anything runs. Pure: no torch, no files but the TOML reader.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

from harness.errors import SpecError
from harness.spec.sweep import AUTO_LOG_CHECKS, CHOICES, FIELDS, SweepSpec, flag

_DEVICE_RE = re.compile(r"^(cpu|mps|auto|cuda(:\d+)?)$")
MAX_DATASET_SIZE = 2**31 - 1
"""Rows a data set may have (torch indexes a batch with int64, but no machine holds more)."""

RANGE_RE = re.compile(r"^(\d+)\.\.(\d+|full)$")
"""A power-of-two range of batch sizes, ``a..b`` (``b`` may be ``full``)."""


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


def parse_int(field: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    allowed = f"an integer >= {minimum}" + (f" and <= {maximum:,}" if maximum is not None else "")
    if isinstance(value, bool):
        raise SpecError(flag(field), f"{value!r} is not an integer; use {allowed}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise SpecError(flag(field), f"{value!r} is not an integer; use {allowed}") from None
    if number < minimum or (maximum is not None and number > maximum):
        raise SpecError(flag(field), f"{number} is not allowed; use {allowed}")
    return number


def parse_float(field: str, value: Any, low: float, high: float | None = None, *, low_open: bool = True) -> float:
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
        match = RANGE_RE.match(token)
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
    """``rel:F``, or ``none`` (no target: the sweep's default relative target switched off)."""
    text = str(value).strip().lower()
    allowed = "use rel:F with 0 < F < 1 (e.g. rel:0.1), none, or --target-loss / --target-accuracy"
    if text in ("none", "off"):
        return "none"
    if not text.startswith("rel:"):
        raise SpecError("--target", f"{value!r} is not a target; {allowed}")
    fraction = parse_float("target", text[4:], 0.0, 1.0) if text[4:] else None
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


def _bool(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SpecError(flag(field), f"{value!r} is not true or false")


def _choice_list(field: str):
    """The parser of a comma list of a field's choices (an axis), in order, each once."""
    return lambda value: tuple(dict.fromkeys(_choice(field, t) for t in _tokens(field, value)))


def parse_check_every(value: Any) -> str:
    text = str(value).strip().lower()
    allowed = "use a step count (e.g. 50), seconds (e.g. 30s), 'epoch', 'log', 'log:N' (N >= 2) or 'auto'"
    if text in ("auto", "epoch"):
        return text
    if text == "log":
        return f"log:{AUTO_LOG_CHECKS}"
    if text.startswith("log:"):
        count = text[4:]
        if not count.isdigit() or not 2 <= int(count) <= 100_000:
            raise SpecError("--check-every", f"{value!r} is not a schedule; {allowed}")
        return f"log:{int(count)}"
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
    "dataset_sizes": lambda v: tuple(sorted({parse_int("dataset_sizes", t, 1, MAX_DATASET_SIZE) for t in _tokens("dataset_sizes", v)})),
    "batch_sizes": parse_batch_tokens,
    "devices": parse_devices,
    "model": lambda v: str(v).strip(),
    "hidden": lambda v: tuple(parse_int("hidden", t, 1) for t in _tokens("hidden", v)),
    "optimizer": lambda v: _choice("optimizer", v),
    "lr": lambda v: parse_float("lr", v, 0.0),
    "momentum": lambda v: parse_float("momentum", v, 0.0, 1.0, low_open=False),
    "steps": lambda v: parse_int("steps", v, 1),
    "epochs": lambda v: parse_float("epochs", v, 0.0),
    "check_every": parse_check_every,
    "check_set": lambda v: _choice("check_set", v),
    "holdout_fraction": lambda v: parse_float("holdout_fraction", v, 0.0, 1.0),
    "threads": lambda v: parse_int("threads", v, 1),
    "repeats": lambda v: parse_int("repeats", v, 1),
    "seed": lambda v: parse_int("seed", v, 0),
    "data_seed": lambda v: parse_int("data_seed", v, 0),
    "timing": lambda v: _choice("timing", v),
    "burn_in_steps": lambda v: parse_int("burn_in_steps", v, 0),
    "sampling": _choice_list("sampling"),
    "loader": lambda v: _choice("loader", v),
    "workers": lambda v: parse_int("workers", v, 0, 64),
    "target_column": lambda v: str(v).strip(),
    "lr_policy": lambda v: _choice("lr_policy", v),
    "base_batch_size": lambda v: parse_int("base_batch_size", v, 1),
    "lr_grid": lambda v: tuple(sorted({parse_float("lr_grid", t, 0.0) for t in _tokens("lr_grid", v)})),
    "warmup_steps": lambda v: parse_int("warmup_steps", v, 0),
    "target_loss": lambda v: parse_float("target_loss", v, 0.0, low_open=False),
    "target_accuracy": lambda v: parse_float("target_accuracy", v, 0.0, 1.0 + 1e-12),
    "target": parse_target,
    "stop_at_target": lambda v: _bool("stop_at_target", v),
    "noise_samples": lambda v: parse_int("noise_samples", v, 0),
    "sample_interval": parse_interval,
    "shard": parse_shard,
    "world_sizes": lambda v: tuple(sorted({parse_int("world_sizes", t, 1) for t in _tokens("world_sizes", v)})),
    "scaling": lambda v: _choice("scaling", v),
    "data_placement": _choice_list("data_placement"),
    "precision": _choice_list("precision"),
    "peak_tflops": lambda v: parse_float("peak_tflops", v, 0.0),
    "compile": _choice_list("compile"),
}
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
        if name in values:
            raise SpecError("spec", f"{name} given twice in {path} (as {name.replace('_', '-')} and {name}); give it once")
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
    targets = [name for name in ("target_loss", "target_accuracy", "target") if parsed.get(name) not in (None, "none")]
    if len(targets) > 1:
        raise SpecError(flag(targets[1]), f"give one target, not {' and '.join(flag(t) for t in targets)}")
    if parsed.get("target") == "none" or (targets and targets[0] != "target"):
        parsed["target"] = None  # no relative target: switched off, or an absolute one given instead of the default
    if max(parsed.get("world_sizes", (1,))) > 1:
        if str(parsed.get("check_every", "")).endswith("s"):
            raise SpecError("--check-every", "ranks must check at the same steps: use a step count, 'epoch' or 'auto' with --world-sizes > 1")
        if parsed.get("stop_at_target"):
            raise SpecError("--stop-at-target", "is not supported with --world-sizes > 1 (every rank would have to agree when to stop)")
    if parsed.get("workers") and parsed.get("loader", "tensor") != "dataloader":
        raise SpecError("--workers", "applies to --loader dataloader (tensor indexing has no workers)")
    if parsed.get("stop_at_target") and not (parsed.get("target_loss") is not None or parsed.get("target_accuracy") is not None):
        raise SpecError("--stop-at-target", "needs --target-loss or --target-accuracy (a rel: target is known only after the sweep)")
    return SweepSpec(**parsed)


