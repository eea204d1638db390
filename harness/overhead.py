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


def overhead_plan(batch_size: int, *, steps: int = 600, dataset: str = "blobs", dataset_size: int = 10_000, model: str = "mlp", hidden: str = "32", threads: int = 1, noise_samples: int = 0, sample_interval: float | None = None) -> Plan:
    return plan_flags(dataset=dataset, dataset_sizes=dataset_size, batch_sizes=batch_size, steps=steps, model=model, hidden=hidden,
                      threads=threads, devices="cpu", noise_samples=noise_samples, sample_interval=sample_interval)


def plain_loop(run: PointSpec, X: torch.Tensor, y: torch.Tensor, task: str, n_outputs: int) -> float:
    """The loop a user would write: a permutation per epoch, slices of it, forward, backward,
    step. Returns samples/s over the steps after the same warm-up the harness uses."""
    torch.set_num_threads(run.threads)
    torch.manual_seed(run.init_seed)
    model = models.build_builtin(run.model, n_features=X.shape[1], n_outputs=n_outputs, hidden=run.hidden)
    optimizer = make_optimizer(run, model.parameters())
    loss_fn = make_loss(task)
    generator = torch.Generator().manual_seed(run.seed)
    n, batch = X.shape[0], run.batch_size

    def batches():
        while True:
            perm = torch.randperm(n, generator=generator)
            for start in range(0, n - batch + 1, batch):
                yield perm[start : start + batch]

    stream = batches()
    for step in range(run.steps):
        if step == run.burn_in_steps:
            start_ns = time.perf_counter_ns()
        idx = next(stream)
        xb, yb = X[idx], y[idx]
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = (time.perf_counter_ns() - start_ns) / 1e9
    return (run.steps - run.burn_in_steps) * batch / seconds


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
            plain = plain_loop(run, split.X_train, split.y_train, split.task, split.n_outputs)
        result = run_point(run, split, the_plan.factory)
        if result.status != "ok":
            raise RuntimeError(f"harness point failed: {result.point['error']}")
        if not round_index % 2:
            plain = plain_loop(run, split.X_train, split.y_train, split.task, split.n_outputs)
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
