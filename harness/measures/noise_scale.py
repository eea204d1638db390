"""The gradient noise scale as arithmetic on gradient moments (McCandlish et al. 2018); the
moments themselves are measured by ``harness.run.gradient_moments`` on the point's model."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GradientMoments:
    """Moments of the mean of ``n`` per-example gradients drawn without replacement from
    ``population``: its squared norm and the unbiased trace of the per-example covariance."""

    n: int
    population: int
    mean_sq_norm: float
    trace_cov: float
    method: str


def b_simple(moments: GradientMoments) -> float | None:
    """tr(Sigma) / |G|^2, with |G|^2 corrected by (1/n - 1/N) tr(Sigma); None when the
    corrected |G|^2 is not positive (the gradient is lost in its noise: no finite estimate)."""
    if moments.n < 2 or not math.isfinite(moments.trace_cov):
        return None
    correction = (1 / moments.n - 1 / moments.population) * moments.trace_cov
    signal = moments.mean_sq_norm - correction
    if signal <= 0 or moments.trace_cov <= 0:
        return None
    return moments.trace_cov / signal
