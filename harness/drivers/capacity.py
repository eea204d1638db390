"""The largest batch that fits: ``batchbench fit``.

Runs a few short probes (one point per probe batch size, two steps each, sampling with
replacement so a batch may exceed the data set), fits peak = fixed + per_sample x B to their
peaks, and predicts the largest batch under the memory limit less a safety margin. The peak is
what decides whether a batch fits: on CUDA the caching allocator's peak reserved bytes of the
training steps (what runs out), on the CPU the live tensor bytes of a training step (exact and
linear in B, where RSS shows the heap). Small probes are dominated by the fixed part, so the
probes move up, whatever sizes were given, until the per-sample term is half the peak
(``PER_SAMPLE_SHARE``), and the line is fitted through the largest three. On CUDA (or with
``--verify``) it then finds the real limit (power-of-two growth to the first failure, then a
binary search: on CUDA until out of memory, each failure freed before the next; on the CPU until
the tensor bytes pass the limit): that probed batch is the answer, the prediction's error beside
it. Lightning's and accelerate's batch finders only crash into OOM; this predicts first and
reports both numbers.
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
from harness.store.schema import Status

PROBE_STEPS = 2
MAX_PROBE_BATCH = 2**24


@dataclass(frozen=True)
class CapacityResult:
    device: str
    metric: str
    limit_bytes: int
    margin: float
    fit: MemoryFit | None
    predicted_max_batch_size: int | None
    """The largest batch the line puts under the limit less the margin."""
    probed_max_batch_size: int | None
    probes: tuple[tuple[int, str, int | None], ...]
    """(batch size, status, peak bytes) of every probe, fit probes first."""
    predicted_no_margin: int | None = None
    """The predicted largest batch at the limit itself: what the probed limit is compared with."""

    @property
    def max_batch_size(self) -> int | None:
        """The answer: the largest batch that ran where it was probed, else the prediction."""
        return self.probed_max_batch_size if self.probed_max_batch_size is not None else self.predicted_max_batch_size

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
            "predicted_max_batch_size": self.predicted_max_batch_size,
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

    def probe(batch: int) -> tuple[int, str, int | None]:
        point = _probe_point(template, batch)
        result = run_point(point, plan.workload(point))
        peak = result.row.get(metric)
        status = result.status
        if status == Status.OK and not cuda and peak is not None and peak > limit:
            status = Status.OOM  # on the CPU nothing fails at the limit: past it is out of memory
        progress(f"B={batch}: {status}" + (f", {metric} {peak / 2**20:,.1f} MiB" if peak else ""))
        return batch, status, peak

    probes = _place_probes(probe, [probe(b) for b in sorted(set(probe_sizes))], limit)
    fit = _fit(probes, largest=3)
    searching = verify if verify is not None else cuda
    predicted = fit.max_batch_size(limit, margin) if fit else None
    found = None
    if searching:
        found, extra = _search(probe, probes, limit)
        probes += extra
    return CapacityResult(device, metric, limit, margin, fit, predicted, found, tuple(probes),
                          fit.max_batch_size(limit, 0.0) if fit else None)


PER_SAMPLE_SHARE = 0.5
"""Probes move up until the per-sample term is at least this share of the largest probe's peak:
below it the fixed part hides the slope (a ResNet probed at 8, 32 and 128 fitted 55 KiB a
sample where a step holds 423 KiB, and predicted 6x too large a batch)."""

SLOPE_AGREEMENT = 0.10
"""...and until the slopes between the last three probes agree within this share: a ResNet-18's
peak is flat up to B = 8 (the gradients' moment), then grows 4.4 MiB a sample."""

MAX_MOVES = 8


def _settled(probes: list, fit: MemoryFit) -> bool:
    """The per-sample term dominates the largest probe's peak, and the line has stopped bending."""
    ok = sorted((b, p) for b, s, p in probes if s == Status.OK and p is not None)
    top = ok[-1][0]
    if fit.per_sample_bytes * top < PER_SAMPLE_SHARE * fit.predict(top):
        return False
    if len(ok) < 3:
        return True
    (b0, p0), (b1, p1), (b2, p2) = ok[-3:]
    low, high = (p1 - p0) / (b1 - b0), (p2 - p1) / (b2 - b1)
    return abs(high - low) <= SLOPE_AGREEMENT * max(abs(high), 1e-9)


def _place_probes(probe, probes: list, limit: int) -> list:
    """Double the largest batch that ran until the per-sample term of the line through the
    largest probes is ``PER_SAMPLE_SHARE`` of its peak and the line has stopped bending,
    whatever sizes were given; a probe that fails, or a batch the line already puts past the
    limit, ends it."""
    for _ in range(MAX_MOVES):
        fit = _fit(probes, largest=3)
        ok = [b for b, s, _ in probes if s == Status.OK]
        if fit is None or fit.per_sample_bytes <= 0 or not ok:
            break
        top = max(ok)
        if _settled(probes, fit) or 2 * top > MAX_PROBE_BATCH:
            break
        if fit.predict(2 * top) > limit:
            break
        probes = probes + [probe(2 * top)]
        if probes[-1][1] != Status.OK:
            break
    return probes


def _fit(probes, largest: int | None = None) -> MemoryFit | None:
    """The line through the ok probes (only the ``largest`` batch sizes, when given)."""
    ok = sorted((b, p) for b, s, p in probes if s == Status.OK and p is not None)
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
    good = max((b for b, s, _ in probes if s == Status.OK), default=None)
    bad = min((b for b, s, _ in probes if s == Status.OOM), default=None)
    if good is None:
        return None, extra
    while bad is None:
        batch = good * 2
        if batch > MAX_PROBE_BATCH:
            return good, extra
        result = probe(batch)
        extra.append(result)
        if result[1] == Status.OK:
            good = batch
        elif result[1] == Status.OOM:
            bad = batch
        else:
            return good, extra  # an error that is not memory: stop where we are
    while bad - good > max(1, good // 100):
        batch = (good + bad) // 2
        result = probe(batch)
        extra.append(result)
        if result[1] == Status.OK:
            good = batch
        else:
            bad = batch
    return good, extra


AUTO_MICRO_PROBES = (8, 32, 128)


def resolve_micro_batches(plan: Plan, progress: Callable[[str], None] = lambda _: None) -> Plan:
    """``--micro-batch-size auto`` made concrete: on an accelerator the largest power of two
    at most the largest batch ``fit_capacity`` finds for the point's device and workload (probed
    once per device, dataset size, precision, compile and placement), no accumulation where the
    whole batch fits; on the CPU the whole batch (no device memory to run out of: accumulating
    would only cost). Run before the points, by every driver (the plan itself runs nothing)."""
    if not any(p.micro_batch_size == "auto" for p in plan.points):
        return plan
    fitted: dict[tuple, int | None] = {}
    points = []
    for point in plan.points:
        micro = point.micro_batch_size
        if micro == "auto":
            micro = None
            if point.device != "cpu":
                key = (point.device, point.dataset_size, point.precision, point.compile, point.data_placement)
                if key not in fitted:
                    template = dataclasses.replace(point, micro_batch_size=None)
                    progress(f"--micro-batch-size auto: probing the largest batch on {point.device}")
                    fitted[key] = fit_capacity(dataclasses.replace(plan, points=(template,)), list(AUTO_MICRO_PROBES)).max_batch_size
                largest = fitted[key]
                if largest is not None and largest < point.per_rank_batch_size:
                    micro = 1 << max(0, largest.bit_length() - 1)
        points.append(dataclasses.replace(point, micro_batch_size=micro))
    return dataclasses.replace(plan, points=tuple(points))
