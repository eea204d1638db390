"""How sure an answer is: the training time to the target of each batch size with its interval,
the batch sizes that cannot be told apart from the best (``tied``), and the interval of a
critical-batch fit.

Training time to target = steps to target x the median step time, two factors measured apart
(``docs/measurement.md``): the steps are nearly deterministic at a seed but known only to the
check before the target (the target was reached somewhere after the previous check, at the
latest at the check that saw it), and vary with the data order across repeats; the step time
is a median of many timed steps, known to its block-bootstrap interval, and drifts by a few
percent between the points of one run (``STEP_TIME_FLOOR``). The interval of a batch size's
training time spans the lowest and highest steps its checks and repeats allow, times the step
time's interval. A batch size is tied with the best when its interval reaches the best's.
numpy and pandas only.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from harness.measures.stats import nondecreasing

STEP_TIME_FLOOR = 0.05
"""The least relative uncertainty given a median step time: the points of one run, measured one
after another, drifted by 2-3% at the median step here (12 identical points, 4 runs, a busy
neighbour core), so a smaller interval from one point's own steps is not believed."""

COARSE = 0.25
"""Steps to target known only to an interval wider than this share of themselves (checks that
were not refined: a store from before 0.6, a data-parallel point) are coarse: too coarse to fit
B_crit on or to rank by. ``analyze`` and the report warn per group, the answer per batch size."""

MIN_FIT_BATCH_SIZES = 4
"""B_crit is fitted only to at least this many batch sizes that reached the target: two
parameters through two points fit exactly and say nothing."""

RESAMPLES = 400
LEVEL = 0.95


def steps_bounds(steps_to_target: float, check_steps: Sequence[int]) -> tuple[int, int]:
    """(lowest, highest) step at which the target may first have been reached: just after the
    check before the one that saw it, at the latest that one."""
    before = [s for s in check_steps if s < steps_to_target]
    return (int(max(before)) + 1 if before else 1), int(steps_to_target)


def point_bounds(record: dict, checks) -> tuple[int, int]:
    """A point's (lowest, highest) steps to target: as refined (``steps_to_target_low``), or
    from its checks where a store from before 0.6 has no refined columns."""
    low = record.get("steps_to_target_low")
    if low is not None and low == low:
        return int(low), int(record["steps_to_target"])
    own = checks[checks["point_id"] == record["point_id"]]["step"].tolist() if len(checks) else []
    return steps_bounds(record["steps_to_target"], own)


def measured(points):
    """The points whose step time was measured after their burn-in (``flags`` burn_in_only: a
    point that stopped at its target in its burn-in, whose step time is a warm-up time)."""
    timed = points[points["step_wall_s"].notna()]
    if "flags" in timed:
        timed = timed[~timed["flags"].fillna("").astype(str).str.contains("burn_in_only")]
    return timed


def step_times(points) -> dict[int, float]:
    """Per batch size, its median step time over the points with a measured one (any learning
    rate: the step does the same work), made non-decreasing in the batch size
    (``stats.nondecreasing``, weighted by points)."""
    timed = measured(points)
    if timed.empty:
        return {}
    per_b = timed.groupby("batch_size")["step_wall_s"].agg(["median", "size"]).sort_index()
    fitted = nondecreasing(per_b["median"].astype(float).tolist(), per_b["size"].tolist())
    return {int(b): value for b, value in zip(per_b.index, fitted)}


def batch_times(group, checks, timing=None) -> dict[int, dict[str, float]]:
    """Per batch size of a group of points (repeats pooled) that reached the target: its steps
    (median, and the lowest and highest the checks and repeats allow), its median step time
    (``step_times`` of ``timing``, the group's points by default) with a relative uncertainty,
    and the training time to target with its interval. Steps and step time are measured apart:
    a point that reached the target in its burn-in gives its steps, measured points at its batch
    size the step time; a batch size with none of those is left out (``analysis.caveats``)."""
    out: dict[int, dict[str, float]] = {}
    timing = group if timing is None else timing
    fitted, timed = step_times(timing), measured(timing)
    for batch, per_b in group[group["steps_to_target"].notna()].groupby("batch_size", sort=True):
        if int(batch) not in fitted:
            continue
        lows, highs = zip(*(point_bounds(record, checks) for record in per_b.to_dict("records")))
        own = timed[timed["batch_size"] == batch]
        step_s = own["step_wall_s"].astype(float)
        own_u = (own["step_wall_ci_pct"].astype(float) / 100).fillna(0).max() if "step_wall_ci_pct" in own else 0.0
        spread = float((step_s.max() - step_s.min()) / 2 / step_s.median()) if len(step_s) > 1 else 0.0
        median_step = fitted[int(batch)]
        u = max(STEP_TIME_FLOOR, float(own_u), spread, abs(median_step - float(step_s.median())) / median_step)  # covers its own reading too
        steps = float(per_b["steps_to_target"].median())
        out[int(batch)] = {"steps": steps, "steps_low": float(min(lows)), "steps_high": float(max(highs)), "step_s": median_step,
                           "step_uncertainty": u, "train_s": steps * median_step, "train_low_s": min(lows) * median_step * (1 - u),
                           "train_high_s": max(highs) * median_step * (1 + u)}
    return out


def tied(times: dict[int, dict[str, float]]) -> tuple[int | None, list[int]]:
    """The batch size with the least training time to target, and every batch size whose
    interval reaches the best's (itself included), in order, with the gaps between them filled.

    Training time to target against batch size falls while steps fall faster than a step slows,
    then rises: one valley. A batch size between two tied ones that reads slower measured a load
    spike (one point's steps slowed by another process), not the workload: on a busy machine B=8
    read slower than both 4 and 16 in one of three identical runs. It is tied too."""
    if not times:
        return None, []
    best = min(times, key=lambda b: times[b]["train_s"])
    ceiling = times[best]["train_high_s"]
    reached = [best, *(b for b, t in times.items() if t["train_low_s"] <= ceiling)]  # best itself, whatever NaN its interval holds
    return best, sorted(b for b in times if min(reached) <= b <= max(reached))


def _errors(log_bc: np.ndarray, batch_sizes: np.ndarray, log_steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RMS error, log S_min) at each log B_crit: log S_min has a closed form, the mean residual."""
    shape = np.log1p(np.exp(log_bc)[:, None] / batch_sizes[None, :])
    log_s_min = (log_steps[None, :] - shape).mean(axis=1)
    return np.sqrt(((log_steps[None, :] - log_s_min[:, None] - shape) ** 2).mean(axis=1)), log_s_min


def fit_log(batch_sizes: np.ndarray, log_steps: np.ndarray, *, refine: bool = True) -> tuple[float, float, float]:
    """Least squares of log S = log S_min + log(1 + B_crit / B): (log B_crit, log S_min, RMS),
    over a log grid of B_crit, vectorised, then (``refine``) a golden-section search between the
    best grid point's neighbours."""
    grid = np.linspace(np.log(batch_sizes.min()) - 9, np.log(batch_sizes.max()) + 9, 1801)
    rms, _ = _errors(grid, batch_sizes, log_steps)
    best = int(np.argmin(rms))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(50 if refine else 0):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        error_a, error_b = _errors(np.array([a, b]), batch_sizes, log_steps)[0]
        low, high = (low, b) if error_a < error_b else (a, high)
    log_bc = (low + high) / 2 if refine else float(grid[best])
    error, log_s_min = _errors(np.array([log_bc]), batch_sizes, log_steps)
    return float(log_bc), float(log_s_min[0]), float(error[0])


def fit_interval(batch_sizes: Sequence[float], steps: Sequence[float], *, seed: int = 0) -> tuple[float, float] | None:
    """A 95% interval for B_crit: the fit's residuals (in log steps) resampled onto its curve and
    refitted (a residual bootstrap); None with fewer than ``MIN_FIT_BATCH_SIZES`` points."""
    B = np.asarray(batch_sizes, dtype=float)
    log_s = np.log(np.asarray(steps, dtype=float))
    if len(B) < MIN_FIT_BATCH_SIZES:
        return None
    log_bc, log_s_min, _ = fit_log(B, log_s)
    fitted = log_s_min + np.log1p(math.exp(log_bc) / B)
    residuals = log_s - fitted
    rng = np.random.default_rng(seed)
    draws = [fit_log(B, fitted + rng.choice(residuals, size=len(B)), refine=False)[0] for _ in range(RESAMPLES)]
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(math.exp(low)), float(math.exp(high))
