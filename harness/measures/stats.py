"""Statistics of raw per-step samples: medians and IQRs, and the flags that say when a
point's numbers deserve less trust. Pure numpy; formatting lives elsewhere."""

from __future__ import annotations

import numpy as np

NOISY_UNCERTAINTY = 0.10
"""A point is flagged ``noisy`` when its median step time may be off by more than 10%: the
half-width of a 95% interval for the median, from blocked medians, exceeds 10% of it. (On a
shared 2-core VM whole blocks of steps run 20-30% slower while a neighbour is busy; 10% flags
those points, 1 of 21 of a quiet default sweep, and any step whose typical time is a coin toss.) Jitter of
single steps does not count (sub-millisecond steps always jitter); doubt about the median does,
as torch.utils.benchmark warns on the spread of blocked measurements, not of single runs."""

BLOCKS = 20
"""Consecutive blocks the measured steps are cut into; each block's median is one estimate."""
MIN_BLOCK_STEPS = 5

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


def block_medians(values) -> np.ndarray | None:
    """The medians of up to ``BLOCKS`` consecutive blocks (of 5 steps or more) of per-step
    times in the order they ran; None with fewer than 3 blocks. Blocks, not single steps,
    because neighbouring steps share the machine's state (caches, clocks, a noisy neighbour):
    a block median is one honest estimate, and bootstrapping over blocks says how far the
    median may be off."""
    values = np.asarray(values, dtype=float)
    blocks = min(BLOCKS, values.size // MIN_BLOCK_STEPS)
    if blocks < 3:
        return None
    return np.array([np.median(block) for block in np.array_split(values, blocks)])


def median_uncertainty(values) -> float | None:
    """Relative half-width of a 95% interval for the median of ``values`` (per-step times in
    the order they ran): the median of the block medians (``block_medians``) bootstrapped over
    blocks (seeded, so the same data give the same answer). None with fewer than 3 blocks."""
    medians = block_medians(values)
    if medians is None:
        return None
    center = float(np.median(medians))
    if center <= 0:
        return None
    resampled = np.median(np.random.default_rng(0).choice(medians, size=(2000, medians.size)), axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(max(center - low, high - center) / center)


def flags(step_wall: np.ndarray, phase_medians: list[float | None]) -> list[str]:
    """Trust flags for one point's measured steps."""
    out: list[str] = []
    wall = median(step_wall)
    if wall is None or wall <= 0:
        return out
    uncertainty = median_uncertainty(step_wall)
    if uncertainty is not None and uncertainty > NOISY_UNCERTAINTY:
        out.append("noisy")
    if all(m is not None for m in phase_medians):
        if abs(sum(phase_medians) - wall) / wall > PHASE_MISMATCH_RATIO:
            out.append("phase_mismatch")
    return out


def nondecreasing(values, weights=None) -> list[float]:
    """The closest non-decreasing sequence to ``values`` in weighted least squares (pool adjacent
    violators): where a reading falls below one before it, both become their weighted mean.

    Step time does not fall as the batch grows (a larger batch does no less work), so a batch
    size that reads faster than a smaller one measured noise: under load, single points of one
    sweep read 0.20 to 0.42 ms for the same tiny step, and a winner picked on such a reading
    changed from run to run."""
    weights = [1.0] * len(values) if weights is None else [float(w) for w in weights]
    blocks: list[list[float]] = []  # [mean, weight, count]
    for value, weight in zip(values, weights):
        blocks.append([float(value), weight, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, w2, n2), (m1, w1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return [mean for mean, _, count in blocks for _ in range(count)]
