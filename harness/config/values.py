"""The value grammars of the spec: text (a flag, a TOML value, a keyword of ``harness.benchmark``)
in, a typed value out, or a ``SpecError`` naming the flag and what is allowed.

A value is parsed once, here; the rest of batchbench reads the typed value (a ``CheckEvery``,
a ``BatchRange``, a ``Shard``), never the text again. Each type writes itself back as the
canonical text (``text()``) that spec files, stored specs and point ids hold, so a typed value
and its text always round-trip. Pure: no torch, no files.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from harness.errors import SpecError

AUTO_LOG_CHECKS = 40
"""``--check-every log`` (and ``auto`` with a target): about this many checks, spaced
geometrically (every step at first, then about 13% apart on 500 steps), so steps-to-target is
known to the same relative precision at every batch size: 10 steps at B=4096 as well as 900 at B=8."""

MAX_DATASET_SIZE = 2**31 - 1
"""Rows a data set may have (torch indexes a batch with int64, but no machine holds more)."""

MAX_COUNT = 2**53
"""The largest count (steps, repeats, seeds) a flag takes: SQLite stores integers in 64 bits
and JSON readers hold them as doubles, so a larger number would be written and read back wrong."""


MAX_STEPS = 10**9
"""The most steps a point may take: a billion steps of the smallest model here take days; more
is a typo, refused before anything runs rather than a sweep that never ends."""

FLOAT32_MAX = 3.4e38
"""A learning rate (or any value that reaches a tensor) must be a float32: a larger one fails
every point with "value cannot be converted to type float without overflow"."""


def flag(field: str) -> str:
    """The CLI spelling of a spec field, used in every message."""
    return "--" + field.replace("_", "-")


# ---------------------------------------------------------------- typed values


@dataclass(frozen=True)
class CheckEvery:
    """When the loss check runs: ``auto`` (resolved per point), every ``count`` steps,
    every ``seconds``, once an ``epoch``, or ``log`` (``count`` geometrically spaced checks)."""

    kind: str  # auto | steps | seconds | epoch | log
    count: int = 0
    seconds: float = 0.0
    auto: bool = False
    """Resolved from ``auto``: the engine may space the checks further apart to keep them under
    their share of the point's time (``run.schedule.CHECK_SHARE``). Not part of the text."""

    def text(self) -> str:
        return {"auto": "auto", "epoch": "epoch", "steps": str(self.count), "seconds": f"{self.seconds:g}s",
                "log": f"log:{self.count}"}[self.kind]

    def __str__(self) -> str:
        return self.text()


@dataclass(frozen=True)
class BatchRange:
    """``low..high``: every power of two from ``low`` to ``high`` (``high`` None: ``full``)."""

    low: int
    high: int | None

    def text(self) -> str:
        return f"{self.low}..{'full' if self.high is None else self.high}"


class Size(int):
    """One batch size as given (written back as text, as spec files hold it)."""

    def text(self) -> str:
        return str(int(self))


FULL = "full"
"""The batch size that is the whole training set."""

BatchToken = Size | BatchRange | str
"""One entry of ``--batch-sizes``: a ``Size``, a ``BatchRange`` or ``FULL``."""


@dataclass(frozen=True)
class RelativeTarget:
    """``rel:F``: the loss L_ref + F (L_0 - L_ref), L_ref the best check loss of the sweep."""

    fraction: float

    def text(self) -> str:
        return f"rel:{self.fraction:g}"


@dataclass(frozen=True)
class Shard:
    """``I/N``: sweep points I, I+N, I+2N, ... of the sweep."""

    index: int
    count: int

    def text(self) -> str:
        return f"{self.index}/{self.count}"


def text_of(value: Any) -> Any:
    """What a typed value is written as (spec files, stored specs, point ids): its canonical
    text; tuples element by element; plain values as they are."""
    if isinstance(value, tuple):
        return tuple(text_of(v) for v in value)
    return value.text() if hasattr(value, "text") else value


# ---------------------------------------------------------------- grammars


def tokens(field: str, value: Any) -> list[str]:
    """A comma list (or a TOML/Python list) as its stripped entries; an empty entry is an error."""
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    elif isinstance(value, (str, int, float)):
        items = [t.strip() for t in str(value).split(",")]
    else:
        raise SpecError(flag(field), f"expected a comma list, got {_shown_value(value)}")
    if not items or any(t == "" for t in items):
        raise SpecError(flag(field), f"empty entry in {_shown_value(value)}; give a comma list")
    return items


def _whole(digits: str) -> int:
    """A run of digits as an int; past 30 digits (beyond every range here, and past Python's
    4300-digit limit a ValueError) a number larger than any allowed."""
    return int(digits) if len(digits) <= 30 else 10**31


def parse_int(field: str, value: Any, minimum: int, maximum: int | None = MAX_COUNT) -> int:
    allowed = f"an integer >= {minimum}" + (f" and <= {maximum:,}" if maximum is not None else "")
    if isinstance(value, bool):
        raise SpecError(flag(field), f"{_shown_value(value)} is not an integer; use {allowed}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise SpecError(flag(field), f"{_shown_value(value)} is not an integer; use {allowed}") from None
    if number < minimum or (maximum is not None and number > maximum):
        raise SpecError(flag(field), f"{number} is not allowed; use {allowed}")
    return number


def parse_float(field: str, value: Any, low: float, high: float | None = None, *, low_open: bool = True) -> float:
    allowed = f"a number {'>' if low_open else '>='} {low:g}" + (f" and < {high:g}" if high is not None else "")
    if isinstance(value, bool):
        raise SpecError(flag(field), f"{_shown_value(value)} is not a number; use {allowed}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(flag(field), f"{_shown_value(value)} is not a number; use {allowed}") from None
    bad = (
        not math.isfinite(number)
        or (number <= low if low_open else number < low)
        or (high is not None and number >= high)
    )
    if bad:
        raise SpecError(flag(field), f"{_shown_value(value)} is not allowed; use {allowed}")
    if 0 < abs(number) < FLOAT32_TINY:  # training runs in float32, where this is 0 or loses its digits
        raise SpecError(flag(field), f"{_shown_value(value)} is below float32's smallest normal number ({FLOAT32_TINY:g}), where training computes; use a larger number")
    return number


FLOAT32_TINY = 1.1754943508222875e-38
"""float32's smallest normal number: a value below it is 0 or a denormal where training computes."""


def _shown_value(value: Any, limit: int = 60) -> str:
    """A value as an error message quotes it, cut short (a 1 MB value is not echoed whole)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def choice(field: str, allowed: tuple[str, ...]) -> Callable[[Any], str]:
    """The parser of one of ``allowed`` (case-insensitive)."""

    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise SpecError(flag(field), f"{_shown_value(value)} is not one of {', '.join(allowed)}")
        return text

    return parse


def choices(field: str, allowed: tuple[str, ...]) -> Callable[[Any], tuple[str, ...]]:
    """The parser of a comma list of ``allowed`` values (an axis), in order, each once."""
    one = choice(field, allowed)
    return lambda value: tuple(dict.fromkeys(one(t) for t in tokens(field, value)))


def integers(field: str, minimum: int, maximum: int | None = MAX_COUNT, *, distinct: bool = True) -> Callable[[Any], tuple[int, ...]]:
    """A comma list of integers: sorted and each once (``distinct``), or in the order given."""

    def parse(value: Any) -> tuple[int, ...]:
        numbers = [parse_int(field, t, minimum, maximum) for t in tokens(field, value)]
        return tuple(sorted(set(numbers))) if distinct else tuple(numbers)

    return parse


def floats(field: str, low: float, high: float | None = None) -> Callable[[Any], tuple[float, ...]]:
    """A comma list of numbers above ``low`` (and below ``high``), sorted, each once."""
    return lambda value: tuple(sorted({parse_float(field, t, low, high) for t in tokens(field, value)}))


def stripped(value: Any) -> str:
    return str(value).strip()


def boolean(field: str) -> Callable[[Any], bool]:
    def parse(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise SpecError(flag(field), f"{_shown_value(value)} is not true or false")

    return parse


RANGE_RE = re.compile(r"^(\d+)\.\.(\d+|full)$")


def parse_batch_sizes(value: Any) -> tuple[BatchToken, ...]:
    """``--batch-sizes``: integers, power-of-two ranges ``a..b`` (b may be ``full``) and
    ``full``. Sizes are resolved against each training set when the sweep expands."""
    allowed = "use positive integers, power-of-two ranges like 1..1024 or 1..full, or 'full'"
    out: list[BatchToken] = []
    for token in tokens("batch_sizes", value):
        match = RANGE_RE.match(token)
        if token == FULL:
            out.append(FULL)
        elif match:
            low, high = _whole(match.group(1)), None if match.group(2) == FULL else _whole(match.group(2))
            if low < 1 or (high is not None and high < low):
                raise SpecError("--batch-sizes", f"range {_shown_value(token)} is empty; {allowed}")
            out.append(BatchRange(low, high))
        elif not token.lstrip("-").isdigit():
            raise SpecError("--batch-sizes", f"{_shown_value(token)} is not a batch size; {allowed}")
        elif not 1 <= _whole(token) <= MAX_COUNT:
            raise SpecError("--batch-sizes", f"{_shown_value(token)} is not allowed; {allowed}")
        else:
            out.append(Size(token))
    return tuple(out)


DEVICE_RE = re.compile(r"^(cpu|mps|auto|cuda(:\d+)?)$")


def parse_devices(value: Any) -> tuple[str, ...]:
    names = [t.lower() for t in tokens("devices", value)]
    for name in names:
        if not DEVICE_RE.match(name):
            raise SpecError("--devices", f"{_shown_value(name)} is not a device; use cpu, cuda, cuda:N, mps or auto")
    return tuple(names)


NO_TARGET = RelativeTarget(0.0)
"""What ``--target none`` parses to: the sweep's default relative target switched off
(``build_spec`` turns it into None)."""


def parse_target(value: Any) -> RelativeTarget:
    """``rel:F``, or ``none`` (``NO_TARGET``)."""
    text = str(value).strip().lower()
    allowed = "use rel:F with 0 < F < 1 (e.g. rel:0.1), none, or --target-loss / --target-accuracy"
    if text in ("none", "off"):
        return NO_TARGET
    if not text.startswith("rel:"):
        raise SpecError("--target", f"{_shown_value(value)} is not a target; {allowed}")
    if not text[4:]:
        raise SpecError("--target", f"{_shown_value(value)} has no fraction; {allowed}")
    return RelativeTarget(parse_float("target", text[4:], 0.0, 1.0))


def parse_interval(value: Any) -> float:
    """``--sample-interval``: seconds (0.1, 0.1s), milliseconds (100ms), or 0 (off)."""
    text = str(value).strip().lower()
    scale = 1e-3 if text.endswith("ms") else 1.0
    number = text[:-2] if text.endswith("ms") else text[:-1] if text.endswith("s") else text
    try:
        seconds = float(number) * scale
    except ValueError:
        raise SpecError("--sample-interval", f"{_shown_value(value)} is not an interval; use seconds (0.1, 0.1s), milliseconds (100ms) or 0 for off") from None
    if not math.isfinite(seconds) or seconds < 0 or 0 < seconds < 0.001 or seconds > 3600:
        raise SpecError("--sample-interval", f"{_shown_value(value)} is not allowed; use 0 (off) or 1ms to 3600s")
    return seconds


def parse_shard(value: Any) -> Shard:
    match = re.fullmatch(r"(\d+)/(\d+)", str(value).strip())
    if not match or _whole(match.group(2)) < 1 or _whole(match.group(1)) >= _whole(match.group(2)):
        raise SpecError("--shard", f"{_shown_value(value)} is not a shard; use I/N with 0 <= I < N, e.g. 0/4 (Slurm: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return Shard(_whole(match.group(1)), _whole(match.group(2)))


def parse_check_every(value: Any) -> CheckEvery:
    text = str(value).strip().lower()
    allowed = "use a step count (e.g. 50), seconds (e.g. 30s), 'epoch', 'log', 'log:N' (N >= 2) or 'auto'"
    if text in ("auto", "epoch"):
        return CheckEvery(text)
    if text == "log":
        return CheckEvery("log", AUTO_LOG_CHECKS)
    if text.startswith("log:"):
        count = text[4:]
        if not count.isdigit() or not 2 <= _whole(count) <= 100_000:
            raise SpecError("--check-every", f"{_shown_value(value)} is not a schedule; {allowed}")
        return CheckEvery("log", _whole(count))
    if text.endswith("s"):
        try:
            seconds = float(text[:-1])
        except ValueError:
            raise SpecError("--check-every", f"{_shown_value(value)} is not a schedule; {allowed}") from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise SpecError("--check-every", f"{_shown_value(value)} is not allowed; {allowed}")
        return CheckEvery("seconds", seconds=seconds)
    if text.isdigit() and 1 <= _whole(text) <= MAX_COUNT:
        return CheckEvery("steps", _whole(text))
    raise SpecError("--check-every", f"{_shown_value(value)} is not a schedule; {allowed}")


def parse_betas(value: Any) -> tuple[float, float]:
    """Adam's two moment decay rates, each in [0, 1)."""
    items = tokens("betas", value)
    if len(items) != 2:
        raise SpecError("--betas", f"{_shown_value(value)} is not two numbers; use b1,b2 with 0 <= b < 1, e.g. 0.9,0.95")
    return tuple(parse_float("betas", t, 0.0, 1.0, low_open=False) for t in items)  # type: ignore[return-value]


def parse_micro_batch(value: Any) -> int | str:
    """``auto`` or a micro-batch size >= 1."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        return parse_int("micro_batch_size", value, 1, MAX_DATASET_SIZE)
    except SpecError:
        raise SpecError("--micro-batch-size", f"{_shown_value(value)} is not allowed; use a micro-batch size >= 1 or auto (the largest that fits)") from None
