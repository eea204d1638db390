"""A user's data pipeline: a map-style torch ``Dataset`` (``__getitem__`` and ``__len__``,
items ``(x, y)``), or a ``(train, check)`` pair of them, named on the command line as
``--dataset module:callable`` / ``file.py:callable`` or handed to ``harness.benchmark(data=...)``.

Training batches come through a DataLoader over the user's Dataset, so the ``data`` phase holds
what the pipeline costs (decoding, augmentation, collation) and, with workers, only the time a
step waits for its batch. Everything else batchbench does with data (loss checks, the final
training loss, the noise scale, FLOP and memory counting, the model's pre-flight) reads a copy
of the same rows decoded once, untimed, before the sweep: the cost of that pass is the price of
checks that do not re-run the pipeline.

A data set size subsamples the Dataset by a seeded index (the rows its points train on); with a
``(train, check)`` pair the holdout rows are drawn from ``check`` and the training rows from
``train``, in the shares ``--holdout-fraction`` gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.errors import SpecError, users_failure, users_own
from harness.workload import plugins

DECODE_BATCH = 256
"""Rows decoded at a time for the untimed copy."""


@dataclass(frozen=True)
class Pipeline:
    """The user's Datasets and what batchbench knows of them."""

    name: str
    train: Any
    check: Any | None
    task: str
    n_classes: int | None

    def natural_size(self, holdout_fraction: float, check_set: str) -> int:
        """Every training row, with a check Dataset the largest size whose holdout share fits in it."""
        if self.check is None or check_set == "train" or holdout_fraction <= 0:
            return len(self.train) + (0 if self.check is None or check_set == "train" else len(self.check))
        return int(min(len(self.train) / (1 - holdout_fraction), len(self.check) / holdout_fraction))


def is_dataset(obj: Any) -> bool:
    """A map-style Dataset: indexable with a length, and not an array (arrays are ``(X, y)`` data)."""
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__") and not isinstance(obj, (torch.Tensor, np.ndarray, str, bytes, list, tuple, dict))


def from_objects(made: Any, name: str, flag: str = "--dataset") -> Pipeline:
    """A Dataset, or a ``(train, check)`` pair of them, as a ``Pipeline``."""
    if isinstance(made, (tuple, list)) and len(made) == 2 and all(is_dataset(d) for d in made):
        train, check = made
    elif is_dataset(made):
        train, check = made, None
    else:
        raise SpecError(flag, f"{name} gave {type(made).__name__}; a data pipeline is a map-style torch Dataset "
                              "(__getitem__ and __len__, items (x, y)) or a (train, check) pair of them")
    if len(train) < 2 or (check is not None and len(check) < 1):
        raise SpecError(flag, f"{name}: the training Dataset has {len(train)} items" + ("" if check is None else f", the check Dataset {len(check)}"))
    task, n_classes = _task(name, train, flag)
    return Pipeline(name, train, check, task, n_classes)


def resolve(name: str) -> Pipeline:
    """``--dataset module:callable``: the callable is called with no arguments."""
    make = plugins.load_callable(name, "--dataset")
    try:
        with plugins.in_place():
            made = make()
    except SpecError:
        raise
    except BaseException as exc:  # sys.exit() in a factory too: one line, nothing run
        if not users_own(exc):
            raise
        raise SpecError("--dataset", f"{name}() failed: {users_failure(exc)}") from None
    return from_objects(made, name)


def _task(name: str, train: Any, flag: str) -> tuple[str, int | None]:
    """Classification for integer targets (classes: the Dataset's ``classes``, else its
    ``targets``' maximum + 1, else the first rows' maximum + 1, raised later to cover every
    decoded row: ``with_classes``), regression for float ones."""
    x, y = _item(train, 0, name, flag)
    target = torch.as_tensor(y)
    if target.is_floating_point():
        return "regression", None
    classes = getattr(train, "classes", None)
    if classes is not None:
        return "classification", len(classes)
    targets = getattr(train, "targets", None)
    if targets is not None:
        return "classification", int(torch.as_tensor(targets).max()) + 1
    seen = max(int(torch.as_tensor(_item(train, i, name, flag)[1]).max()) for i in range(min(len(train), DECODE_BATCH)))
    return "classification", max(2, seen + 1)


def _item(data: Any, index: int, name: str, flag: str) -> tuple[Any, Any]:
    try:
        item = data[index]
    except BaseException as exc:
        if not users_own(exc):
            raise
        raise SpecError(flag, f"{name}: reading item {index} failed: {users_failure(exc)}") from None
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise SpecError(flag, f"{name}: item {index} is {type(item).__name__}; batchbench needs (x, y) pairs")
    for part, value in (("input", item[0]), ("target", item[1])):
        if not isinstance(value, (torch.Tensor, np.ndarray, np.generic, int, float)) or isinstance(value, bool):
            kind = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
            hint = " (a PIL image: convert it in the Dataset, e.g. torchvision's ToTensor)" if "PIL" in kind else ""
            raise SpecError(flag, f"{name}: item {index}'s {part} is a {kind}{hint}; batchbench needs tensors, arrays or numbers")
    return item[0], item[1]


def decode(data: Any, rows: np.ndarray, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``data`` decoded once through a DataLoader (its default collation), as
    tensors: the untimed copy checks and counts read. uint8 inputs are refused: raw bytes
    trained on as 0..255 floats give losses in the thousands."""
    from torch.utils.data import DataLoader, Subset

    parts_x, parts_y = [], []
    try:
        for xb, yb in DataLoader(Subset(data, rows.tolist()), batch_size=DECODE_BATCH):
            parts_x.append(torch.as_tensor(xb))
            parts_y.append(torch.as_tensor(yb))
    except (TypeError, RuntimeError, ValueError) as exc:  # items the default collation cannot stack
        raise SpecError("--dataset", f"{name}: its items cannot be batched: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
    X, y = torch.cat(parts_x), torch.cat(parts_y)
    if X.dtype == torch.uint8:
        raise SpecError("--dataset", f"{name} gives uint8 inputs (0..255 bytes); scale them in the Dataset (e.g. x.float() / 255, "
                                     "or torchvision's ToTensor) so the model trains on 0..1")
    if X.is_floating_point():
        X = X.float()
    if y.is_floating_point():
        y = y.float()
    return X, y


def with_classes(source: Pipeline, *targets: torch.Tensor) -> int | None:
    """The class count covering the decoded rows too (a Dataset that does not say its classes)."""
    if source.task != "classification":
        return None
    return max([source.n_classes or 2, *(int(t.max()) + 1 for t in targets if t.numel())])
