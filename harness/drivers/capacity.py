"""The largest batch that fits: ``batchbench fit``.

Runs a few short probes (one point per probe batch size, two steps each, sampling with
replacement so a batch may exceed the data set), fits peak = fixed + per_sample x B to their
peaks, and predicts the largest batch under the memory limit less a safety margin. The peak is
what decides whether a batch fits: on CUDA the caching allocator's peak reserved bytes of the
training steps (what runs out), on the CPU the live tensor bytes of a training step (exact and
linear in B, where RSS shows the heap). Small probes are dominated by the fixed part, so when it
probes (CUDA, or ``--verify``) it also probes the batch predicted to fill half the limit and
refits on the largest probes before predicting; it then finds the real limit (power-of-two
growth to the first failure, then a binary search: on CUDA until out of memory, each failure
freed before the next; on the CPU until the tensor bytes pass the limit) and reports the
prediction's error. Lightning's and accelerate's batch finders only crash into OOM; this
predicts first and reports both numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from harness.analysis.memory import DEFAULT_MARGIN, MemoryFit, fit_memory
from harness.env import device_memory
from harness.errors import SpecError
from harness.drivers.plan import Plan
from harness.run.engine import run_point
from harness.config.points import PointSpec
from harness.config.values import CheckEvery

PROBE_STEPS = 2
MAX_PROBE_BATCH = 2**24


@dataclass(frozen=True)
class CapacityResult:
    device: str
    metric: str
    limit_bytes: int
    margin: float
    fit: MemoryFit | None
    max_batch_size: int | None
    probed_max_batch_size: int | None
    probes: tuple[tuple[int, str, int | None], ...]
    """(batch size, status, peak bytes) of every probe, fit probes first."""
    predicted_no_margin: int | None = None
    """The predicted largest batch at the limit itself: what the probed limit is compared with."""

    @property
    def prediction_error(self) -> float | None:
        """Predicted (before the margin) over probed largest batch, minus 1."""
        if self.predicted_no_margin is None or not self.probed_max_batch_size:
            return None
        return self.predicted_no_margin / self.probed_max_batch_size - 1

    @property
    def method(self) -> str:
        how = f"linear fit of {self.metric} over {len(self.fit.batch_sizes)} probes" if self.fit else "no fit"
        return how + (", verified by OOM probing" if self.probed_max_batch_size is not None else "")

    def as_json(self) -> dict:
        return {
            "max_batch_size": self.max_batch_size,
            "fixed_bytes": None if self.fit is None else round(self.fit.fixed_bytes),
            "per_sample_bytes": None if self.fit is None else self.fit.per_sample_bytes,
            "limit_bytes": self.limit_bytes,
            "method": self.method,
            "margin": self.margin,
            "device": self.device,
            "metric": self.metric,
            "probed_max_batch_size": self.probed_max_batch_size,
            "predicted_max_batch_size_no_margin": self.predicted_no_margin,
            "prediction_error": self.prediction_error,
            "fit_rms_error_bytes": None if self.fit is None else self.fit.rms_error_bytes,
            "probes": [{"batch_size": b, "status": s, "peak_bytes": p} for b, s, p in self.probes],
        }


def device_capacity(device: str) -> int:
    """Default limit: the GPU's total memory, or the machine's physical memory."""
    capacity = device_memory(device)
    if capacity is None:
        raise SpecError("--memory-limit", f"the capacity of {device} is unknown; give --memory-limit")
    return capacity


def fit_capacity(
    plan: Plan,
    probe_sizes: list[int],
    *,
    limit_bytes: int | None = None,
    margin: float = DEFAULT_MARGIN,
    verify: bool | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> CapacityResult:
    """Probe, fit, predict; on CUDA (or with ``verify``) find the real limit by probing."""
    template = plan.points[0]
    device = template.device
    cuda = device.startswith("cuda")
    metric = "peak_device_reserved_bytes" if cuda else "peak_device_mem_bytes"
    limit = limit_bytes or device_capacity(device)
    split = plan.split(template)

    def probe(batch: int) -> tuple[int, str, int | None]:
        result = run_point(_probe_point(template, batch), split, plan.factory)
        peak = result.point.get(metric)
        status = result.status
        if status == "ok" and not cuda and peak is not None and peak > limit:
            status = "oom"  # on the CPU nothing fails at the limit: past it is out of memory
        progress(f"B={batch}: {status}" + (f", {metric} {peak / 2**20:,.1f} MiB" if peak else ""))
        return batch, status, peak

    probes = [probe(b) for b in sorted(set(probe_sizes))]
    fit = _fit(probes)
    searching = verify if verify is not None else cuda
    if searching and fit is not None:
        half = fit.max_batch_size(limit, 0.5)  # where the per-sample term is about half the peak
        if half is not None and half > 1.5 * max(b for b, _, _ in probes) and half <= MAX_PROBE_BATCH:
            probes.append(probe(half))
            fit = _fit(probes, largest=3)
    predicted = fit.max_batch_size(limit, margin) if fit else None
    found = None
    if searching:
        found, extra = _search(probe, probes, limit)
        probes += extra
    return CapacityResult(device, metric, limit, margin, fit, predicted, found, tuple(probes),
                          fit.max_batch_size(limit, 0.0) if fit else None)


def _fit(probes, largest: int | None = None) -> MemoryFit | None:
    """The line through the ok probes (only the ``largest`` batch sizes, when given)."""
    ok = sorted((b, p) for b, s, p in probes if s == "ok" and p is not None)
    if largest is not None:
        ok = ok[-largest:]
    return fit_memory([b for b, _ in ok], [p for _, p in ok])


def _probe_point(template: PointSpec, batch: int) -> PointSpec:
    return dataclasses.replace(
        template, batch_size=batch, sampling="replacement", steps=PROBE_STEPS, burn_in_steps=0,
        check_every=CheckEvery("steps", PROBE_STEPS), noise_samples=0, stop_at_target=False, target_loss=None, target_accuracy=None,
    )


def _search(probe, probes, limit: int) -> tuple[int | None, list]:
    """Largest batch that runs: double from the largest good probe until a failure, then
    bisect between the last success and the first failure (to 1% of the batch)."""
    extra = []
    good = max((b for b, s, _ in probes if s == "ok"), default=None)
    bad = min((b for b, s, _ in probes if s == "oom"), default=None)
    if good is None:
        return None, extra
    while bad is None:
        batch = good * 2
        if batch > MAX_PROBE_BATCH:
            return good, extra
        result = probe(batch)
        extra.append(result)
        if result[1] == "ok":
            good = batch
        elif result[1] == "oom":
            bad = batch
        else:
            return good, extra  # an error that is not memory: stop where we are
    while bad - good > max(1, good // 100):
        batch = (good + bad) // 2
        result = probe(batch)
        extra.append(result)
        if result[1] == "ok":
            good = batch
        else:
            bad = batch
    return good, extra
