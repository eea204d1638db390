"""Every shim that keeps what older batchbench versions wrote working, in one place.

- Point ids hash a point's fields under the names and with the values 0.1 hashed them:
  fields renamed since are hashed under their old name (``ID_NAMES``), and an axis added later
  is left out of the id where its value means what points did before it existed (``BEFORE``;
  for axes added after 0.4.2, their default). So stores written before resume.
- A sweep is found by the hash of its points; batchbench 0.1 named it by a hash of the spec
  as written (``spec_hash_0_1``), so ``--resume`` still finds 0.1 runs.
- Columns renamed since 0.1 (``RENAMED``): ``Store`` renames them in place when it opens an
  older store, and reads them by their old name from a store it may not write.
- Stores before 0.4 have no ``model_fingerprint``: the parameter count stands in for it.
- ``STORE_FORMAT``: the version of the store's layout, kept in SQLite's ``user_version``.
  0 is every store before it (0.1-0.4.2, migrated by their columns); a store of a newer
  format is refused instead of being half understood.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

STORE_FORMAT = 1

ID_NAMES = {"burn_in_steps": "warmup_steps", "sample_interval_s": "sample_interval"}
"""Point fields renamed since 0.1 -> the name their ids hash them under."""

BEFORE = {"data_placement": ("host", "pageable"), "precision": ("fp32",), "peak_tflops": (None,), "workers": (0,), "compile": ("off",),
          "weight_decay": (0.0,)}
"""Point fields added since 0.3, and their values that mean what points did before (weight
decay: none, which every point had before 0.5, and every point but AdamW's has by default)."""

FROZEN_AT = (0, 4, 2)
"""Ids were fixed as of this version: an axis added after it is left out at its default."""

RENAMED = {"points": {"warmup_steps": "burn_in_steps"}, "steps": {"warmup": "burn_in"}}
"""Old column name -> new, per table."""


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def before(axis) -> tuple:
    """The values of an axis's point field that are left out of the point id."""
    if axis.point_field in BEFORE:
        return BEFORE[axis.point_field]
    if version(axis.since) > FROZEN_AT:
        return tuple(axis.default) if axis.sweep and isinstance(axis.default, tuple) else (axis.default,)
    return ()


def id_fields(fields: dict[str, Any], axes: Sequence) -> dict[str, Any]:
    """A point's fields (as text) under the names and with the omissions its id hashes."""
    out = {ID_NAMES.get(name, name): value for name, value in fields.items()}
    for axis in axes:
        name = axis.point_field
        if name is not None and name in fields and fields[name] in before(axis):
            del out[ID_NAMES.get(name, name)]
    return out


def spec_hash_0_1(spec_text: dict[str, Any], axes: Sequence) -> str:
    """How batchbench 0.1 named a sweep: a hash of its spec's fields that existed then."""
    since = {a.name: a.since for a in axes}
    fields = {k: value for k, value in spec_text.items() if since.get(k, "0.1") == "0.1"}
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def model_fingerprints(points):
    """The points' ``model_fingerprint``, the parameter count (``n<count>``) where a store
    from before 0.4 has none."""
    have = points["model_fingerprint"] if "model_fingerprint" in points else None
    stand_in = "n" + points["n_params"].astype(str)
    return stand_in if have is None else have.where(have.notna(), stand_in)


def earlier_meanings(spec) -> list:
    """The same flags as an older batchbench read them, where a default has changed since: a
    ``--resume`` of a run written then continues it as it was written. Before 0.6, ``--optimizer
    adamw`` without ``--weight-decay`` trained with weight decay 0."""
    import dataclasses

    if spec.optimizer == "adamw" and spec.weight_decay is None:
        return [(dataclasses.replace(spec, weight_decay=0.0), "--optimizer adamw without --weight-decay had weight decay 0 before 0.6")]
    return []

