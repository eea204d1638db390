"""Memory against batch size, as arithmetic: the linear model peak = fixed + per_sample x B, the
largest batch under a limit, and byte sizes as users write them. numpy only, so the report can
use it without torch (the measuring side is ``harness.run.memory``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.errors import SpecError

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
DEFAULT_MARGIN = 0.10
"""Share of the memory limit kept free when predicting the largest batch that fits."""


def parse_bytes(text: str, field: str = "--memory-limit") -> int:
    """``8GiB``, ``512MB``, ``1.5g`` or a plain byte count."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise SpecError(field, f"{text!r} is not a size; use bytes or a unit such as 512MiB, 8GiB, 16GB")
    value = float(match.group(1)) * _UNITS[unit]
    if not 0 < value < 2**63:
        raise SpecError(field, f"{str(text)[:40]!r} is not allowed; use a positive size below 8 EiB")
    return int(value)


@dataclass(frozen=True)
class MemoryFit:
    """peak = fixed_bytes + per_sample_bytes x B, least squares over the probed batch sizes."""

    fixed_bytes: float
    per_sample_bytes: float
    rms_error_bytes: float
    batch_sizes: tuple[int, ...]
    peaks: tuple[int, ...]

    def predict(self, batch_size) -> np.ndarray:
        return self.fixed_bytes + self.per_sample_bytes * np.asarray(batch_size, dtype=float)

    def max_batch_size(self, limit_bytes: int, margin: float = DEFAULT_MARGIN) -> int | None:
        """The largest batch whose predicted peak stays under ``limit x (1 - margin)``;
        None when even B = 1 does not fit, or memory does not grow with B."""
        budget = limit_bytes * (1 - margin) - self.fixed_bytes
        if self.per_sample_bytes <= 0:
            return None
        batch = math.floor(budget / self.per_sample_bytes)
        return batch if batch >= 1 else None


def fit_memory(batch_sizes: Sequence[int], peaks: Sequence[float]) -> MemoryFit | None:
    pairs = [(int(b), float(p)) for b, p in zip(batch_sizes, peaks) if p is not None and np.isfinite(p)]
    if len({b for b, _ in pairs}) < 2:
        return None
    B = np.array([b for b, _ in pairs], dtype=float)
    P = np.array([p for _, p in pairs], dtype=float)
    slope, intercept = np.polyfit(B, P, 1)
    rms = float(np.sqrt(np.mean((intercept + slope * B - P) ** 2)))
    return MemoryFit(float(intercept), float(slope), rms, tuple(int(b) for b in B), tuple(int(p) for p in P))
