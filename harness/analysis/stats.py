"""Statistics of raw per-step samples: medians and IQRs, and the flags that say when a
point's numbers deserve less trust. Pure numpy; formatting lives elsewhere."""

from __future__ import annotations

import numpy as np

NOISY_IQR_RATIO = 0.10
"""A point whose step-time IQR exceeds 10% of its median is flagged ``noisy`` (the threshold
torch.utils.benchmark uses)."""

PHASE_MISMATCH_RATIO = 0.10
"""A point whose phase medians sum to more than 10% away from its median step wall time is
flagged ``phase_mismatch``: time is going somewhere no phase covers."""


def median(values) -> float | None:
    values = np.asarray(values, dtype=float)
    return float(np.median(values)) if values.size else None


def iqr(values) -> float | None:
    values = np.asarray(values, dtype=float)
    if not values.size:
        return None
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 - q1)


def flags(step_wall: np.ndarray, phase_medians: list[float | None]) -> list[str]:
    """Trust flags for one point's measured steps."""
    out: list[str] = []
    wall = median(step_wall)
    if wall is None or wall <= 0:
        return out
    if iqr(step_wall) / wall > NOISY_IQR_RATIO:
        out.append("noisy")
    if all(m is not None for m in phase_medians):
        if abs(sum(phase_medians) - wall) / wall > PHASE_MISMATCH_RATIO:
            out.append("phase_mismatch")
    return out
