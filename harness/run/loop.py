"""The one training loop: data -> derivative -> update, with loss checks on a schedule.

``run_point`` trains one point and measures it; ``train`` is the loop, written like a
hand-written PyTorch loop on purpose so that the harness costs what such a loop costs (the
overhead benchmark holds it to that). The rules that keep it honest:

- ``PhaseClock.mark()`` at each phase boundary of a timed step (every burn-in step, then
  every k-th, ``clock.sample_every``); nothing else reads a clock inside a step. Throughput is
  the window's own wall clock, never the marks.
- No hidden sync inside a timed phase: on an accelerator batch losses stay detached tensors
  until a loss check (``BatchLosses``), read there after the window's one sync; on the CPU a
  loss is read as its step ends (nothing to wait for). Only the losses of the timed steps, of
  every ``LOSS_EVERY``-th and of the last before each check are read: reading one costs as much
  as the rest of the harness.
- Burn-in steps train the model like any other step but are left out of the statistics.
- The loss check is its own phase, between steps.

This module launches nothing: a data-parallel point is started by ``harness.parallel.launch``,
whose ranks each call ``run_point`` with their ``rank``; from here only the collectives are used.
"""

from __future__ import annotations

import gc
import time
from typing import Callable

import numpy as np
import torch

from harness.workload import models
from harness.workload.datasets import Split
from harness.parallel.collectives import all_max, all_mean, exposed_comm_s
from harness.store.schema import PointResult
from harness.run import rows
from harness.run.batches import fetcher
from harness.run.checks import LOSS_EVERY, BatchLosses, Diverged, LossCheck, evaluate, schedule
from harness.run.clock import PhaseClock, sample_every, split_steps, synchronize
from harness.run.sampler import Monitor, ProcessProbe, max_of, nvml_probe
from harness.run.flops import compile_now, step_flops
from harness.run.parts import autocast_for, grad_scaler, make_loss, make_optimizer, matmul_precision
from harness.run.memory import PeakMemory, activation_bytes_per_sample, analytic_bytes, step_tensor_bytes
from harness.config.points import PointSpec


Prune = Callable[[dict], "str | None"]
"""Asked after every loss check with its ``checks`` row: a reason to stop the point now (its
status becomes ``pruned``), or None to go on. ``batchbench tune`` stops trials that can no
longer win this way."""


class Pruned(Exception):
    """The point was stopped early by its ``prune`` callback."""


def run_point(point: PointSpec, split: Split, factory: models.Factory, *, now_ns: Callable[[], int] = time.perf_counter_ns,
              rank: tuple[int, int] | None = None, prune: Prune | None = None, timed_every: int | None = None) -> PointResult:
    """Train one point and measure it. A failure at run time (OOM, a diverging loss, an error
    in user code) becomes the point's status; the caller's sweep goes on. ``rank`` = (rank,
    world size) when this process is one rank of a data-parallel point; ``prune`` may stop it
    at a loss check (status ``pruned``, ``steps`` the steps it ran). ``timed_every`` forces k,
    the period of timed steps after the burn-in (``harness.drivers.overhead.attribute`` prices the
    marks this way); None chooses it from the marks' budget."""
    trace = rows.Trace(origin_ns=time.perf_counter_ns(), n_features=split.n_features, n_classes=split.n_classes)
    if point.skip_reason:
        return rows.result(point, trace, "skipped", point.skip_reason)
    if point.world_size > 1 and rank is None:
        raise ValueError(f"a point of {point.world_size} ranks runs through harness.parallel.launch, one run_point per rank")
    torch.set_num_threads(point.threads)
    peaks = PeakMemory(point.device)
    monitor = _monitor(point, trace.origin_ns)
    status, error = "ok", None
    try:
        with matmul_precision(point):
            train(point, split, factory, trace, now_ns, rank, peaks, prune, timed_every)
    except Diverged as exc:
        status, error = "diverged", str(exc)
    except Pruned as exc:
        status, error = "pruned", str(exc)
    except Exception as exc:  # user code (a plug-in) may raise anything
        status, error = ("oom" if out_of_memory(exc) else "error"), _one_line(exc)
    finally:
        trace.readings = monitor.stop() if monitor is not None else []
    trace.memory = peaks.read(sampled_rss_max=max_of(trace.readings, "rss_bytes"))
    if trace.tensor_peak_bytes is not None:  # the CPU's live tensor bytes, from the probe step
        trace.memory["peak_device_mem_bytes"] = trace.tensor_peak_bytes
    if status != "ok":
        gc.collect()  # drop the failed point's tensors before the next point allocates
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows.result(point, trace, status, error)


def train(point: PointSpec, split: Split, factory: models.Factory, trace: rows.Trace, now_ns: Callable[[], int],
          rank: tuple[int, int] | None = None, peaks: PeakMemory | None = None, prune: Prune | None = None,
          timed_every: int | None = None) -> None:
    """Build the model, train it for the point's steps and record into ``trace``."""
    device = torch.device(point.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(point.init_seed)
    model, own_loss = models.build_with_loss(point.model, factory, n_features=split.n_features, n_outputs=split.n_outputs,
                                             hidden=point.hidden, input_shape=split.input_shape)
    model = model.to(device)
    trace.n_params = sum(p.numel() for p in model.parameters())
    trace.model_fingerprint = models.fingerprint(model)
    trace.analytic["activation_bytes"] = _activation_bytes(model, split.X_train[:1], device, point.batch_size)
    torch.manual_seed(point.seed)  # dropout and the like follow the repeat's seed
    optimizer = make_optimizer(point, model.parameters())
    trained = model  # what the loop calls; loss checks and the noise scale use the plain model
    if rank is not None:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = own_loss or make_loss(split.task)
    X, y = split.X_train, split.y_train  # host memory; moving a batch is part of `data`...
    if point.data_placement == "device":  # ...unless the training set lives on the device (moved now, untimed)
        X, y = X.to(device), y.to(device)
    if device.type == "cpu":  # peak_device_mem_bytes on the CPU: live tensor bytes of an untimed probe step
        trace.tensor_peak_bytes = step_tensor_bytes(model, lambda params: make_optimizer(point, params), loss_fn, X, y,
                                                    point.per_rank_batch_size, seed=point.seed)
    autocast, scaler = autocast_for(point, device), grad_scaler(point, device)
    rows_ = min(point.per_rank_batch_size, X.shape[0])
    first_x, first_y = X[:rows_].to(device), y[:rows_].to(device)  # one training batch for the untimed FLOP count and compile
    trace.flops_per_step = step_flops(model, loss_fn, first_x, first_y, autocast)
    if trace.flops_per_step is not None and rank is not None:
        trace.flops_per_step *= rank[1]  # every rank does its share of the global batch
    if point.compile == "on":
        trained = torch.compile(trained)
        trace.compile_s = compile_now(trained, loss_fn, first_x, first_y, autocast, scaler)
    fetch = fetcher(point, X, y, device, rank)
    clock = PhaseClock(point.timing_mode, device, now_ns)
    due = schedule(point, now_ns)
    losses = BatchLosses(device)
    check = LossCheck(point, model, split.X_check.to(device), split.y_check.to(device), split.task, losses, trace, now_ns,
                      noise=noise_estimator(point, model, loss_fn, X, y, device),
                      all_mean=None if rank is None else (lambda value: all_mean(value, device)), peaks=peaks, loss_fn=own_loss)
    mark, keep = clock.mark, losses.keep
    lr_warmup, base_lr, burn_in = point.lr_warmup_steps, point.lr, point.burn_in_steps
    loop_start_ns = now_ns()  # host time of the first mark, where the clock cannot say (events)
    done = 0  # steps finished
    try:
        stop = check(0) and point.stop_at_target
        loop_start_ns = now_ns()
        measure_start, paused_ns = check.start_ns, 0  # paused: time between steps inside the measured window
        every = 1  # burn-in steps are all timed; after them every k-th (clock.sample_every)
        for step in range(0 if stop else point.steps):
            if step == burn_in:
                clock.close_window()  # the measured window starts on an idle device
                every = timed_every or sample_every(clock.mark_cost_s(), _median(clock.closed_steps_s()), multiple_of=LOSS_EVERY)
                if rank is not None:  # every rank times the same steps, so their rows line up
                    every = all_max(every, device)
                trace.timed_every = every
                measure_start = now_ns()
            since = step - burn_in  # negative in the burn-in
            timed = since < 0 or since % every == 0
            if timed:
                mark()
            xb, yb = fetch()
            if timed:
                mark()
            if autocast is None:
                loss = loss_fn(trained(xb), yb)
            else:
                with autocast():
                    loss = loss_fn(trained(xb), yb)
            if scaler is None:
                loss.backward()
            else:
                scaler.scale(loss).backward()
            if timed:
                mark()
            if step < lr_warmup:  # linear learning-rate warm-up (Goyal et al. 2017)
                for group in optimizer.param_groups:
                    group["lr"] = base_lr * (step + 1) / lr_warmup
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if timed:
                mark()
            done = step + 1
            check_now = due(done)
            counted = check_now or not since % LOSS_EVERY  # not every step: reading a loss costs as much as the rest of the harness
            if timed or counted:
                keep(step, loss, counted)  # on a device a detached tensor, read at the next check: no per-step sync
            if timed:
                mark()
            if check_now:  # between steps: the check and all its bookkeeping are left out of the window
                paused = now_ns()
                clock.close_window()
                stop = check(done) and point.stop_at_target
                reason = None if stop or prune is None else prune(trace.checks[-1])
                if since >= 0:
                    paused_ns += now_ns() - paused
                if stop:
                    break
                if reason:
                    raise Pruned(reason)
        clock.close_window()
        synchronize(device)
        trace.measured_ns = now_ns() - measure_start - paused_ns
        if trace.checks[-1]["step"] != done:
            check(done)
        trace.wall_ns = now_ns() - check.start_ns - sum(trace.aside_ns)
        # Outside the timed loop: the final loss on the whole training set (its memory is a check's).
        if peaks is not None:
            peaks.enter_check()
        trace.final_train_loss, trace.final_train_acc = evaluate(model, X.to(device), y.to(device), split.task, own_loss)
        if rank is not None:
            per_rank = point.per_rank_batch_size
            trace.comm_s = exposed_comm_s(trained, X[:per_rank].to(device), y[:per_rank].to(device), loss_fn, device)
    finally:  # also for a failed point: keep what was measured
        trace.analytic.update(analytic_bytes(model, optimizer))
        first = clock.first_mark_ns() or loop_start_ns
        for window in clock.windows():
            parts = split_steps(window)
            for name in (*rows.STEP_PHASES, "step_wall"):
                trace.phase_s[name].append(parts[name])
            trace.phase_s["start"].append(parts["start"] + (first - trace.origin_ns) / 1e9)
        trace.batch_loss = losses.floats()
        trace.steps_done = done


OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate", "not enough memory")
"""How allocators say it: CUDA and MPS ("out of memory"), torch's CPU allocator ("can't
allocate memory"), the C library ("cannot allocate memory"), other backends."""


def out_of_memory(exc: BaseException) -> bool:
    """Whether a failure is an allocation failure, on any device: the point's status is ``oom``."""
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in OOM_MESSAGES)


def _monitor(point: PointSpec, origin_ns: int) -> Monitor | None:
    if point.sample_interval_s <= 0:
        return None
    probes: list = [ProcessProbe()]
    if point.device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(point.device).index or 0
        bus = getattr(torch.cuda.get_device_properties(index), "pci_bus_id", None)
        gpu = nvml_probe(index, bus if isinstance(bus, str) else None)
        if gpu is not None:
            probes.append(gpu)
    return Monitor(point.sample_interval_s, probes, origin_ns=origin_ns).start()


def _median(values) -> float | None:
    return float(np.median(values)) if len(values) else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def _activation_bytes(model: torch.nn.Module, row: torch.Tensor, device: torch.device, batch_size: int) -> int | None:
    """Analytic activation bytes of a batch, from one eval-mode forward pass of one row (zeros
    of ``row``'s shape and type) that touches neither the RNG nor batch-norm statistics; None
    where the model will not run on one row."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return activation_bytes_per_sample(model, torch.zeros_like(row, device=device)) * batch_size
    except Exception:
        return None
    finally:
        model.train(was_training)


def noise_estimator(point: PointSpec, model, loss_fn, X: torch.Tensor, y: torch.Tensor, device: torch.device):
    """The noise-scale estimator on a fixed, seeded subsample of the training set (the same
    subsample at every check, so the curve shows the parameters changing, not the sample)."""
    if point.noise_samples < 2:
        return None
    from harness.run.noise import NoiseScale

    generator = torch.Generator().manual_seed(point.data_seed + 7919)
    rows_ = torch.randperm(point.train_size, generator=generator)[: point.noise_samples].sort().values
    return NoiseScale(model, loss_fn, X[rows_].to(device), y[rows_].to(device), population=point.train_size)
