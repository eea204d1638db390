"""Which columns make a configuration, from the axes' declarations (``config.axes``): what the
analysis never pools (``group_keys``), what ``compare`` matches on (``match_keys``), which
configuration columns tables show where they vary (``shown_columns``), and how a reader names a
group (``group_label``). No torch; numbers and names only.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from harness.config.axes import AXES, Axis

LEADING = ("dataset", "dataset_size", "device")
"""A group is named by these first, in this order (``digits · 1797 samples · cpu``)."""

DERIVED_MATCH = ("train_size", "check_size", "per_rank_batch_size", "backend", "base_lr", "init_seed", "target")
"""Match keys no single axis records: the split, the ranks' share of a batch, the learning rate
before its policy, the weights' seed, and ``target`` as asked (``rel:0.1``, or the absolute
loss/accuracy: ``analysis.compare.config_frame``)."""


def _reading_order(columns: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(columns, key=lambda c: (LEADING.index(c) if c in LEADING else len(LEADING), columns.index(c))))


def group_keys(axes: Sequence[Axis] = AXES) -> tuple[str, ...]:
    """Points that differ in any of these are different configurations: never pooled as repeats."""
    return _reading_order([a.column_name for a in axes if a.group_key and a.column_name])


def match_keys(axes: Sequence[Axis] = AXES) -> tuple[str, ...]:
    """Two points are the same configuration for ``compare`` when all of these agree. A model
    is matched by its callable's name and the fingerprint of its parameter shapes, not its path."""
    own = [a.column_name for a in axes if a.match and a.column_name]
    return ("model_name", "model_fingerprint", *_reading_order(own), *DERIVED_MATCH)


def shown_columns(axes: Sequence[Axis] = AXES) -> tuple[tuple[str, str], ...]:
    """(column, title) of the configuration columns tables show where the points differ in them."""
    return tuple((a.column_name, a.title) for a in axes if a.title and a.column_name and a.column_name not in LEADING)


def configuration_fields(axes: Sequence[Axis] = AXES) -> tuple[str, ...]:
    """The point fields that name a point among others (asv parameters, pytest-benchmark
    names): batch size, dataset size and device first, then every sweep axis and titled option."""
    rest = [a.point_field for a in axes if (a.sweep or a.title) and a.point_field and a.point_field not in NAMED_BY]
    return (*NAMED_BY, *rest)


NAMED_BY = ("batch_size", "dataset_size", "device")
"""A point is always named by these; by the other configuration fields only where they vary."""

PHRASES = {a.column_name: a.phrase for a in AXES if a.column_name}

GROUP_KEYS = group_keys()
MATCH_KEYS = match_keys()


def say(column: str, value: Any, phrase: str | None = None) -> str:
    """One value as a reader says it (``1797 samples``, ``2 ranks``, ``data on pinned``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = (phrase or PHRASES.get(column, "{}")).format(value)
    return text.replace("1 rank(s)", "1 rank").replace("rank(s)", "ranks")


def _null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def group_label(key: Mapping[str, Any]) -> str:
    """A group's key as a reader says it: ``digits · 1797 samples · cpu · mlp``."""
    return " · ".join(say(k, v) for k, v in key.items() if not _null(v))


def short_labels(groups) -> list[str]:
    """Each group's label with only what tells it apart: data set, dataset size and device, and
    every other key that differs between the groups (``digits · 400 samples · cpu · dataloader loader``)."""
    first = groups[0].key if groups else {}
    shown = [k for k in first if k in LEADING or len({str(g.key[k]) for g in groups}) > 1]
    return [group_label({k: g.key[k] for k in shown}) for g in groups]
