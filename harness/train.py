"""The one training loop: data -> derivative -> update, with loss checks on a schedule.

Reads like a hand-written PyTorch loop on purpose, so that the harness costs what such a loop
costs (the overhead benchmark holds it to a few percent). The rules that keep it honest:

- ``PhaseClock.mark()`` at each phase boundary; nothing else reads a clock inside a step.
- No hidden sync inside a timed phase: batch losses are kept as tensors (``loss.detach()``)
  and turned into numbers only when a measurement window closes, before a loss check.
- Warm-up steps train the model like any other step but are left out of the statistics.
- The loss check is its own phase, between steps, after the window's single sync.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from harness import convergence, models, stats
from harness.clock import PhaseClock, split_steps, synchronize
from harness.datasets import Split
from harness.env import device_name
from harness.memory import PeakMemory, activation_bytes_per_sample, analytic_bytes
from harness.monitor import Monitor, ProcessProbe, max_of, mean_of, nvml_probe
from harness.records import PointResult
from harness.spec import RunSpec

EVAL_CHUNK = 8192
"""Rows per forward pass in a loss check, to bound its memory on large check sets."""


class Diverged(Exception):
    """The loss became NaN or infinite."""


@dataclass
class _Trace:
    """What the loop has measured so far; kept when a point fails midway."""

    data: list[np.ndarray] = field(default_factory=list)
    derivative: list[np.ndarray] = field(default_factory=list)
    update: list[np.ndarray] = field(default_factory=list)
    step_wall: list[np.ndarray] = field(default_factory=list)
    batch_loss: list[float] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    check_ns: list[int] = field(default_factory=list)
    steps_done: int = 0
    wall_ns: int = 0
    measured_ns: int | None = None
    measured_check_ns: int = 0
    final_train_loss: float | None = None
    final_train_acc: float | None = None
    n_params: int | None = None
    noise_ns: list[int] = field(default_factory=list)
    origin_ns: int = 0
    step_start: list[np.ndarray] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    analytic: dict[str, Any] = field(default_factory=dict)
    comm_s: float | None = None


def batch_indices(n: int, batch_size: int, seed: int, sampling: str = "shuffle") -> Iterator[torch.Tensor]:
    """The index stream of a point, from its own generator (never the global RNG).

    ``shuffle``: a fresh permutation per epoch, read in consecutive slices; a batch that runs
    past the end of an epoch continues into the next permutation, so every batch has exactly
    ``batch_size`` samples and every sample is seen once per epoch. ``replacement``: i.i.d.
    uniform indices. The new permutation is drawn lazily, inside the ``data`` phase it costs.
    """
    generator = torch.Generator().manual_seed(seed)
    if sampling == "replacement":
        while True:
            yield torch.randint(n, (batch_size,), generator=generator)
    perm = torch.randperm(n, generator=generator)
    pos = 0
    while True:
        if pos == n:
            perm = torch.randperm(n, generator=generator)
            pos = 0
        end = pos + batch_size
        if end <= n:
            yield perm[pos:end]
            pos = end
        else:
            head = perm[pos:]
            perm = torch.randperm(n, generator=generator)
            pos = end - n
            yield torch.cat((head, perm[:pos]))


def make_optimizer(run: RunSpec, params) -> torch.optim.Optimizer:
    if run.optimizer == "adam":
        return torch.optim.Adam(params, lr=run.lr)
    return torch.optim.SGD(params, lr=run.lr, momentum=run.momentum)


def make_loss(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy for classes; MSE for regression, with the ``(B, 1)`` output reshaped to
    the ``(B,)`` targets (broadcasting them would silently compute a ``B x B`` loss)."""
    if task == "classification":
        return F.cross_entropy

    def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.reshape(target.shape), target)

    return mse


@torch.no_grad()
def evaluate(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, task: str) -> tuple[float, float | None]:
    """Mean loss (and accuracy for classes) on a whole set, in chunks, in eval mode."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    correct = torch.zeros((), dtype=torch.int64, device=X.device)
    for start in range(0, X.shape[0], EVAL_CHUNK):
        xb, yb = X[start : start + EVAL_CHUNK], y[start : start + EVAL_CHUNK]
        out = model(xb)
        if task == "classification":
            total += F.cross_entropy(out, yb, reduction="sum").double()
            correct += (out.argmax(dim=1) == yb).sum()
        else:
            total += F.mse_loss(out.reshape(yb.shape), yb, reduction="sum").double()
    model.train(was_training)
    n = X.shape[0]
    loss = total.item() / n  # sync: the loss check ends here
    return loss, (correct.item() / n if task == "classification" else None)


def _schedule(check_every: str, run: RunSpec, now_ns: Callable[[], int]) -> Callable[[int], bool]:
    """``due(steps_done)``: whether a loss check follows the step just finished."""
    if check_every == "epoch":
        per_epoch, batch = run.train_size, run.batch_size
        return lambda done: (done * batch) // per_epoch > ((done - 1) * batch) // per_epoch
    if check_every.endswith("s"):
        period_ns = int(float(check_every[:-1]) * 1e9)
        last = [now_ns()]

        def due_seconds(done: int) -> bool:
            now = now_ns()
            if now - last[0] >= period_ns:
                last[0] = now
                return True
            return False

        return due_seconds
    every = int(check_every)
    return lambda done: done % every == 0


def run_point(run: RunSpec, split: Split, factory: models.Factory, *, now_ns: Callable[[], int] = time.perf_counter_ns,
              rank: tuple[int, int] | None = None) -> PointResult:
    """Train one point and measure it. A failure at run time (OOM, a diverging loss, an error
    in user code) becomes the point's status; the caller's sweep goes on. A point of several
    ranks is launched through ``harness.distributed``; ``rank`` = (rank, world size) is how
    each of its processes runs its share here."""
    if run.skip_reason:
        return _result(run, split, _Trace(), "skipped", run.skip_reason)
    if run.world_size > 1 and rank is None:
        from harness.distributed import launch

        return launch(run)
    torch.set_num_threads(run.threads)
    trace = _Trace(origin_ns=time.perf_counter_ns())
    peaks = PeakMemory(run.device)
    monitor = _monitor(run, trace.origin_ns)
    status, error = "ok", None
    try:
        _train(run, split, factory, trace, now_ns, rank)
    except Diverged as exc:
        status, error = "diverged", str(exc)
    except torch.cuda.OutOfMemoryError as exc:
        status, error = "oom", _one_line(exc)
    except RuntimeError as exc:
        status = "oom" if "out of memory" in str(exc).lower() else "error"
        error = _one_line(exc)
    except Exception as exc:  # user code (a plug-in) may raise anything
        status, error = "error", _one_line(exc)
    finally:
        trace.samples = monitor.stop() if monitor is not None else []
    trace.memory = peaks.read(sampled_rss_max=max_of(trace.samples, "rss_bytes"))
    if status != "ok":
        gc.collect()  # drop the failed point's tensors before the next point allocates
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return _result(run, split, trace, status, error)


def _monitor(run: RunSpec, origin_ns: int) -> Monitor | None:
    if run.sample_interval <= 0:
        return None
    probes: list = [ProcessProbe()]
    if run.device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(run.device).index or 0
        bus = getattr(torch.cuda.get_device_properties(index), "pci_bus_id", None)
        gpu = nvml_probe(index, bus if isinstance(bus, str) else None)
        if gpu is not None:
            probes.append(gpu)
    return Monitor(run.sample_interval, probes, origin_ns=origin_ns).start()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def _train(run: RunSpec, split: Split, factory: models.Factory, trace: _Trace, now_ns: Callable[[], int], rank: tuple[int, int] | None = None) -> None:
    device = torch.device(run.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(run.init_seed)
    model = models.build(run.model, factory, n_features=split.n_features, n_outputs=split.n_outputs, hidden=run.hidden).to(device)
    trace.n_params = sum(p.numel() for p in model.parameters())
    per_sample = _activation_bytes(model, split.n_features, device)
    trace.analytic["activation_bytes"] = per_sample * run.batch_size if per_sample is not None else None
    torch.manual_seed(run.seed)  # dropout and the like follow the repeat's seed
    optimizer = make_optimizer(run, model.parameters())
    trained = model  # what the loop calls; loss checks and the noise scale use the plain model
    if rank is not None:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = make_loss(split.task)
    X, y = split.X_train, split.y_train  # host memory; moving a batch is part of `data`
    X_check, y_check = split.X_check.to(device), split.y_check.to(device)
    fetch = _fetcher(run, X, y, device, rank)
    clock = PhaseClock(run.timing_mode, device, now_ns)
    mark = clock.mark
    due = _schedule(run.check_every, run, now_ns)
    batch_size, train_size = run.batch_size, run.train_size
    # Batch losses: on an accelerator kept as tensors until the point ends (reading one would
    # wait for the device); on the CPU read at once, which waits for nothing and lets each
    # loss tensor go as it would in a plain loop.
    pending: list = []
    keep_loss = (lambda l: pending.append(l.item())) if device.type == "cpu" else (lambda l: pending.append(l.detach()))
    since_check = [0]  # index into pending where the current check window starts
    noise = _noise_estimator(run, model, loss_fn, X, y, device)
    t_start = now_ns()

    def loss_check(step: int) -> bool:
        """Evaluate, record, and say whether the target is reached. The noise-scale estimate
        follows, timed apart and left out of every wall and compute time."""
        t0 = now_ns()
        eval_loss, eval_acc = evaluate(model, X_check, y_check, split.task)
        window = pending[since_check[0] :]
        since_check[0] = len(pending)
        train_loss = _mean_loss(window)  # a sync on a device, inside the check
        if rank is not None and train_loss is not None:  # every rank checks at the same step: average their batch losses
            train_loss = _all_mean(train_loss, device)
        t1 = now_ns()
        trace.check_ns.append(t1 - t0)
        excluded = sum(trace.noise_ns)
        check = {
            "step": step,
            "epoch": step * batch_size / train_size,
            "samples_seen": step * batch_size,
            "wall_s": (t1 - t_start - excluded) / 1e9,
            "compute_s": (t0 - t_start - excluded - sum(trace.check_ns[:-1])) / 1e9,
            "train_loss": train_loss,
            "eval_loss": eval_loss,
            "eval_acc": eval_acc,
            "noise_scale": None,
            "noise_scale_s": None,
        }
        trace.checks.append(check)
        for name, value in (("check-set", eval_loss), ("training batch", train_loss)):
            if value is not None and not math.isfinite(value):
                raise Diverged(f"{name} loss became {value} by step {step}")
        if noise is not None:
            n0 = now_ns()
            check["noise_scale"] = convergence.b_simple(noise())
            n1 = now_ns()
            trace.noise_ns.append(n1 - n0)
            check["noise_scale_s"] = (n1 - n0) / 1e9
        return convergence.reached(check, run.target_loss, run.target_accuracy)

    lr_warmup, base_lr = run.lr_warmup_steps, run.lr
    loop_start_ns = now_ns()  # host time of the first mark, where the clock cannot say (events)
    try:
        stop = loss_check(0) and run.stop_at_target
        loop_start_ns = now_ns()
        measure_start, checks_before, noise_before = t_start, 0, 0
        burn_in = run.warmup_steps
        for step in range(0 if stop else run.steps):
            if step == burn_in:
                clock.close_window()  # the measured window starts on an idle device
                measure_start, checks_before, noise_before = now_ns(), sum(trace.check_ns), sum(trace.noise_ns)
            mark()
            xb, yb = fetch()
            mark()
            loss = loss_fn(trained(xb), yb)
            loss.backward()
            mark()
            if step < lr_warmup:  # linear learning-rate warm-up (Goyal et al. 2017)
                for group in optimizer.param_groups:
                    group["lr"] = base_lr * (step + 1) / lr_warmup
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            mark()
            keep_loss(loss)
            if due(step + 1):
                clock.close_window()
                if loss_check(step + 1) and run.stop_at_target:
                    break
        clock.close_window()
        synchronize(device)
        measure_end = now_ns()
        trace.measured_ns = measure_end - measure_start - (sum(trace.noise_ns) - noise_before)
        trace.measured_check_ns = sum(trace.check_ns) - checks_before
        if trace.checks[-1]["step"] != len(pending):
            loss_check(len(pending))
        trace.wall_ns = now_ns() - t_start - sum(trace.noise_ns)
        # Outside the timed loop: the final loss on the whole training set.
        trace.final_train_loss, trace.final_train_acc = evaluate(model, X.to(device), y.to(device), split.task)
        if rank is not None:
            from harness.distributed import exposed_comm_s

            per_rank = run.per_rank_batch_size
            trace.comm_s = exposed_comm_s(trained, X[:per_rank].to(device), y[:per_rank].to(device), loss_fn, device)
    finally:  # also for a failed point: keep what was measured
        trace.analytic.update(analytic_bytes(model, optimizer))
        first = clock.first_mark_ns() or loop_start_ns
        for window in clock.windows():
            parts = split_steps(window)
            for name in ("data", "derivative", "update", "step_wall"):
                getattr(trace, name).append(parts[name])
            trace.step_start.append(parts["start"] + (first - trace.origin_ns) / 1e9)
        if pending:
            trace.batch_loss = _floats(pending)
        trace.steps_done = len(pending)


def _mean_loss(losses: list) -> float | None:
    if not losses:
        return None
    if isinstance(losses[0], float):
        return float(np.mean(losses))
    return torch.stack(losses).float().mean().item()


def _floats(losses: list) -> list[float]:
    return losses if isinstance(losses[0], float) else torch.stack(losses).float().cpu().tolist()


def _activation_bytes(model: torch.nn.Module, n_features: int, device: torch.device) -> int | None:
    """Analytic activation bytes per sample, from one eval-mode forward pass that touches
    neither the RNG nor batch-norm statistics; None where the model will not run on one row."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return activation_bytes_per_sample(model, n_features)
    except Exception:
        return None
    finally:
        model.train(was_training)


def _noise_estimator(run: RunSpec, model, loss_fn, X: torch.Tensor, y: torch.Tensor, device: torch.device):
    """The noise-scale estimator on a fixed, seeded subsample of the training set (the same
    subsample at every check, so the curve shows the parameters changing, not the sample)."""
    if run.noise_samples < 2:
        return None
    from harness.noise import NoiseScale

    generator = torch.Generator().manual_seed(run.data_seed + 7919)
    rows = torch.randperm(run.train_size, generator=generator)[: run.noise_samples].sort().values
    return NoiseScale(model, loss_fn, X[rows].to(device), y[rows].to(device), population=run.train_size)


def _all_mean(value: float | None, device: torch.device) -> float | None:
    import torch.distributed as dist

    total = torch.tensor([value if value is not None else float("nan")], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def _fetcher(run: RunSpec, X: torch.Tensor, y: torch.Tensor, device: torch.device, rank: tuple[int, int] | None = None) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """``fetch()`` -> the next (inputs, targets) on the device: tensor indexing by default, or
    a DataLoader with per-sample collation (``--loader dataloader``) over the same indices.
    With several ranks each takes its own contiguous slice of the same global batch, so the
    world sees exactly the samples one process would, without overlap."""
    batches = batch_indices(run.train_size, run.batch_size, run.seed, run.sampling)
    if rank is not None:
        per_rank = run.batch_size // rank[1]
        low = rank[0] * per_rank
        batches = (b[low : low + per_rank] for b in batches)
    on_cpu = device.type == "cpu"
    if run.loader == "dataloader":
        from torch.utils.data import DataLoader, TensorDataset

        sampler = (next(batches).tolist() for _ in range(run.steps))
        loader = iter(DataLoader(TensorDataset(X, y), batch_sampler=sampler))
        if on_cpu:
            return loader.__next__

        def fetch_loader() -> tuple[torch.Tensor, torch.Tensor]:
            xb, yb = next(loader)
            return xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

        return fetch_loader
    if on_cpu:

        def fetch_cpu() -> tuple[torch.Tensor, torch.Tensor]:
            idx = next(batches)
            return X[idx], y[idx]

        return fetch_cpu

    def fetch_device() -> tuple[torch.Tensor, torch.Tensor]:
        idx = next(batches)
        return X[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)

    return fetch_device


def _result(run: RunSpec, split: Split, trace: _Trace, status: str, error: str | None) -> PointResult:
    """Summarise the trace into the contract's rows; what was not measured stays null."""
    steps_rows = _steps_rows(run, trace)
    point: dict[str, Any] = {
        "point_id": run.point_id,
        "status": status,
        "error": error,
        "model": run.model,
        "dataset": run.dataset,
        "dataset_size": run.dataset_size,
        "n_features": split.n_features,
        "n_classes": split.n_classes,
        "batch_size": run.batch_size,
        "device": run.device,
        "device_name": device_name(run.device),
        "threads": run.threads,
        "optimizer": run.optimizer,
        "lr": run.lr,
        "momentum": run.momentum if run.optimizer == "sgd" else None,
        "sampling": run.sampling,
        "seed": run.seed,
        "repeat": run.repeat,
        "timing_mode": run.timing_mode,
        "steps": trace.steps_done,
        "epochs": trace.steps_done * run.batch_size / run.train_size,
        "samples_seen": trace.steps_done * run.batch_size,
        "warmup_steps": run.warmup_steps,
        "train_size": run.train_size,
        "check_size": run.check_size,
        "check_set": run.check_set,
        "check_every": run.check_every,
        "hidden": ",".join(map(str, run.hidden)) if run.model in ("mlp",) else None,
        "n_params": trace.n_params,
        "loader": run.loader,
        "init_seed": run.init_seed,
        "lr_policy": run.lr_policy,
        "base_lr": run.base_lr,
        "base_batch_size": run.base_batch_size if run.lr_policy in ("linear", "sqrt") else None,
        "lr_warmup_steps": run.lr_warmup_steps,
        "target_loss": run.target_loss,
        "target_accuracy": run.target_accuracy,
        "target_rel": run.target_rel,
        "noise_samples": run.noise_samples or None,
        "world_size": run.world_size,
        "per_rank_batch_size": run.per_rank_batch_size,
        "global_batch_size": run.batch_size,
        "backend": run.backend,
        "scaling": run.scaling,
        "comm_s": trace.comm_s,
    }
    point.update(convergence.to_target(trace.checks, run.batch_size, target_loss=run.target_loss, target_accuracy=run.target_accuracy))
    if trace.checks:
        last = trace.checks[-1]
        point["final_eval_loss"] = last["eval_loss"]
        point["final_eval_acc"] = last["eval_acc"]
        scales = [c["noise_scale"] for c in trace.checks if c["noise_scale"] is not None]
        point["noise_scale"] = scales[-1] if scales else None
    if trace.noise_ns:
        point["noise_scale_total_s"] = sum(trace.noise_ns) / 1e9
    point.update(trace.memory)
    point.update(trace.analytic)
    point["sample_interval_s"] = run.sample_interval or None
    point["cpu_util_mean_pct"] = mean_of(trace.samples, "cpu_pct")
    point["gpu_util_mean_pct"] = mean_of(trace.samples, "gpu_util_pct")
    if trace.check_ns:
        point["loss_check_s"] = stats.median(np.array(trace.check_ns) / 1e9)
        point["loss_check_total_s"] = sum(trace.check_ns) / 1e9
    if status == "ok":
        point.update(_timing_summary(run, trace))
        point["final_train_loss"] = trace.final_train_loss
        point["final_train_acc"] = trace.final_train_acc
    return PointResult(point=point, checks=trace.checks, steps=steps_rows, samples=trace.samples)


def _timing_summary(run: RunSpec, trace: _Trace) -> dict[str, Any]:
    phases = {name: np.concatenate(getattr(trace, name)) for name in ("data", "derivative", "update", "step_wall")}
    warm = run.warmup_steps
    measured = {name: values[warm:] for name, values in phases.items()}
    measured_steps = len(measured["step_wall"])
    compute_ns = trace.measured_ns - trace.measured_check_ns
    out: dict[str, Any] = {
        "wall_s": trace.wall_ns / 1e9,
        "data_total_s": float(phases["data"].sum()),
        "derivative_total_s": float(phases["derivative"].sum()),
        "update_total_s": float(phases["update"].sum()),
    }
    if measured_steps and compute_ns > 0:
        medians = [stats.median(measured[p]) for p in ("data", "derivative", "update")]
        out.update(
            {
                "samples_per_s": measured_steps * run.batch_size / (compute_ns / 1e9),
                "steps_per_s": measured_steps / (compute_ns / 1e9),
                "data_s": medians[0],
                "derivative_s": medians[1],
                "update_s": medians[2],
                "step_wall_s": stats.median(measured["step_wall"]),
                "step_wall_iqr_s": stats.iqr(measured["step_wall"]),
                "flags": ",".join(stats.flags(measured["step_wall"], medians)) or None,
            }
        )
    return out


def _steps_rows(run: RunSpec, trace: _Trace) -> list[dict[str, Any]]:
    if not trace.data:
        return []
    data, deriv, update, start = (np.concatenate(getattr(trace, n)) for n in ("data", "derivative", "update", "step_start"))
    losses = trace.batch_loss
    return [
        {
            "step": i,
            "warmup": int(i < run.warmup_steps),
            "data_s": float(data[i]),
            "derivative_s": float(deriv[i]),
            "update_s": float(update[i]),
            "batch_loss": losses[i] if i < len(losses) else None,
            "t_s": float(start[i]),
        }
        for i in range(len(data))
    ]
