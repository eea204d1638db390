"""What a rank of a data-parallel point does with the others while it trains: average a number
over the ranks, and measure the communication the backward pass did not hide. The loop imports
these; it never starts processes (``harness.parallel.launch`` does)."""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import torch

from harness.run.clock import synchronize

TIMEOUT_ENV = "BATCHBENCH_DIST_TIMEOUT_S"
"""Seconds a collective waits for the other ranks before failing (default 300)."""


def timeout_s() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "300"))


def all_mean(value: float | None, device: torch.device) -> float:
    """The mean of ``value`` over all ranks (NaN from a rank that has none)."""
    import torch.distributed as dist

    total = torch.tensor([value if value is not None else float("nan")], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def all_max(value: int, device: torch.device) -> int:
    """The largest ``value`` of any rank: what ranks agree on when each measured its own."""
    import torch.distributed as dist

    top = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    return int(top.item())


def exposed_comm_s(ddp, xb, yb, loss_fn, device, repeats: int = 7) -> float:
    """Median extra time of a synchronised backward over a ``no_sync`` one: the all-reduce
    the backward pass failed to hide. Gradients are zeroed after; parameters never move."""

    def timed(context) -> int:
        synchronize(device)
        start = time.perf_counter_ns()
        with context:
            loss_fn(ddp(xb), yb).backward()
        synchronize(device)
        return time.perf_counter_ns() - start

    synced, local = [], []
    for _ in range(repeats):
        local.append(timed(ddp.no_sync()))
        synced.append(timed(contextlib.nullcontext()))
    ddp.module.zero_grad(set_to_none=True)
    return (float(np.median(synced)) - float(np.median(local))) / 1e9


def external_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when a launcher such as ``torchrun --nnodes ...`` started
    this ``batchbench run`` as one of several ranks; None for a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))
