"""How much the harness costs: its ``samples_per_s`` beside a plain hand-written PyTorch loop
on the same data, model, seed and thread count.

Timing noise between processes is large (+-30% here), so the two are compared inside one
process, interleaved in rounds (harness, plain, harness, plain, ...), and the median of the
per-round ratios is what counts. Used by the pytest-benchmark suite and the asv suite.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from harness import models
from harness.plan import Plan, plan_flags
from harness.run.checks import evaluate, schedule
from harness.run.clock import synchronize
from harness.run.loop import run_point
from harness.run.parts import make_loss, make_optimizer
from harness.spec import PointSpec


@dataclass(frozen=True)
class OverheadResult:
    batch_size: int
    harness_samples_per_s: tuple[float, ...]
    plain_samples_per_s: tuple[float, ...]

    @property
    def ratios(self) -> np.ndarray:
        return np.array(self.harness_samples_per_s) / np.array(self.plain_samples_per_s)

    @property
    def ratio(self) -> float:
        """Median harness/plain throughput: 1.0 is no overhead, 0.97 is 3% slower."""
        return float(np.median(self.ratios))


def overhead_plan(batch_size: int, *, steps: int = 600, dataset: str = "blobs", dataset_size: int = 10_000, model: str = "mlp", hidden: str = "32",
                  threads: int = 1, noise_samples: int = 0, sample_interval: float | None = None, check_every: str = "auto", device: str = "cpu") -> Plan:
    return plan_flags(dataset=dataset, dataset_sizes=dataset_size, batch_sizes=batch_size, steps=steps, model=model, hidden=hidden,
                      threads=threads, devices=device, noise_samples=noise_samples, sample_interval=sample_interval, check_every=check_every,
                      data_placement="device")


def plain_loop(point: PointSpec, split) -> float:
    """The loop a user would write, doing the harness's work and nothing more: a permutation per
    epoch, slices of it, forward, backward, step, and a check-set evaluation at the same steps
    as the point's loss checks (step 0, the point's ``check_every`` schedule, the end). Returns samples/s
    over the steps after the burn-in, the time between steps (the checks) left out, as the
    harness counts it. On a GPU the training set and each epoch's permutation live on the
    device, as the harness's point does (``data_placement``)."""
    torch.set_num_threads(point.threads)
    torch.manual_seed(point.init_seed)
    device = torch.device(point.device)
    X, y = split.X_train.to(device), split.y_train.to(device)
    X_check, y_check = split.X_check.to(device), split.y_check.to(device)
    model = models.build_builtin(point.model, n_features=split.n_features, n_outputs=split.n_outputs, hidden=point.hidden).to(device)
    optimizer = make_optimizer(point, model.parameters())
    loss_fn = make_loss(split.task)
    due = schedule(point, time.perf_counter_ns)  # the harness's own schedule: the same checks at the same steps
    generator = torch.Generator().manual_seed(point.seed)
    n, batch = X.shape[0], point.batch_size

    def batches():
        while True:
            perm = torch.randperm(n, generator=generator)
            if device.type != "cpu":
                perm = perm.to(device)
            for start in range(0, n - batch + 1, batch):
                yield perm[start : start + batch]

    def check() -> None:
        synchronize(device)
        evaluate(model, X_check, y_check, split.task)  # ends with a sync (the loss as a number)

    stream = batches()
    check()
    checks_ns = 0
    for step in range(point.steps):
        if step == point.burn_in_steps:
            synchronize(device)
            start_ns, checks_ns = time.perf_counter_ns(), 0
        idx = next(stream)
        xb, yb = X[idx], y[idx]
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if due(step + 1):
            paused = time.perf_counter_ns()
            check()
            checks_ns += time.perf_counter_ns() - paused
    synchronize(device)
    seconds = (time.perf_counter_ns() - start_ns - checks_ns) / 1e9
    return (point.steps - point.burn_in_steps) * batch / seconds


def compare(batch_size: int, *, rounds: int = 21, **plan_kwargs) -> OverheadResult:
    """Interleave ``rounds`` harness points with ``rounds`` plain loops (after one discarded
    round of each, which warms caches and the allocator), alternating which goes first so
    that neither always runs in the other's wake."""
    the_plan = overhead_plan(batch_size, **plan_kwargs)
    (run,) = the_plan.points
    split = the_plan.split(run)
    harness_rates, plain_rates = [], []
    for round_index in range(rounds + 1):
        if round_index % 2:
            plain = plain_loop(run, split)
        result = run_point(run, split, the_plan.factory)
        if result.status != "ok":
            raise RuntimeError(f"harness point failed: {result.point['error']}")
        if not round_index % 2:
            plain = plain_loop(run, split)
        if round_index:
            harness_rates.append(result.point["samples_per_s"])
            plain_rates.append(plain)
    return OverheadResult(batch_size, tuple(harness_rates), tuple(plain_rates))


def compare_sampler(batch_size: int, *, interval_s: float = 0.1, rounds: int = 21, **plan_kwargs) -> OverheadResult:
    """The monitor's cost: harness points with the sampler at ``interval_s`` against the same
    points without it, interleaved like ``compare`` (``plain_samples_per_s`` holds the latter)."""
    with_sampler = overhead_plan(batch_size, sample_interval=interval_s, **plan_kwargs)
    without = overhead_plan(batch_size, sample_interval=0, **plan_kwargs)
    (on,), (off,) = with_sampler.points, without.points
    split = with_sampler.split(on)
    on_rates, off_rates = [], []
    for round_index in range(rounds + 1):
        order = [(on, on_rates), (off, off_rates)] if round_index % 2 else [(off, off_rates), (on, on_rates)]
        for run, rates in order:
            result = run_point(run, split, with_sampler.factory)
            if round_index:
                rates.append(result.point["samples_per_s"])
    return OverheadResult(batch_size, tuple(on_rates), tuple(off_rates))
