"""Where a step's mini-batch comes from: the index stream of a point and the fetcher that
turns indices into tensors on the device (the ``data`` phase)."""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from harness.config.points import PointSpec

Fetch = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def batch_indices(n: int, batch_size: int, seed: int, sampling: str = "shuffle", device: torch.device | None = None,
                  start: int = 0) -> Iterator[torch.Tensor]:
    """The index stream of a point, from its own generator (never the global RNG), so the
    indices are the same on every device.

    ``shuffle``: a fresh permutation per epoch, read in consecutive slices; a batch that runs
    past the end of an epoch continues into the next permutation, so every batch has exactly
    ``batch_size`` samples and every sample is seen once per epoch. ``replacement``: i.i.d.
    uniform indices. The new permutation is drawn lazily, inside the ``data`` phase it costs.
    With ``device`` (a training set resident there) the indices are moved to it: a
    permutation once per epoch, as a hand-written loop would, not a copy every step.

    ``start``: begin after that many samples of the stream. With ``shuffle`` the stream is the
    same concatenation of permutations at every batch size, so a point that continues another
    from a snapshot reads exactly the samples it would have read next (``run.snapshot``); with
    ``replacement`` the skipped draws are the same only at the same batch size.
    """
    generator = torch.Generator().manual_seed(seed)
    if sampling == "replacement":
        for _ in range(start // batch_size):
            torch.randint(n, (batch_size,), generator=generator)
        while True:
            drawn = torch.randint(n, (batch_size,), generator=generator)
            yield drawn if device is None else drawn.to(device, non_blocking=True)

    def permutation() -> torch.Tensor:
        perm = torch.randperm(n, generator=generator)
        return perm if device is None else perm.to(device, non_blocking=True)

    for _ in range(start // n):  # whole epochs already read
        torch.randperm(n, generator=generator)
    perm = permutation()
    pos = start % n
    while True:
        if pos == n:
            perm = permutation()
            pos = 0
        end = pos + batch_size
        if end <= n:
            yield perm[pos:end]
            pos = end
        else:
            head = perm[pos:]
            perm = permutation()
            pos = end - n
            yield torch.cat((head, perm[:pos]))


def _loader_fetcher(point: PointSpec, items, device: torch.device, batches: Iterator[torch.Tensor]) -> Fetch:
    """``--loader dataloader``: a DataLoader collating sample by sample, over the same indices,
    from ``items`` (the user's Dataset, or the data's tensors). Its batch sampler spans the
    point's whole index stream, so worker processes start once per point (in the burn-in), as
    persistent workers would across epochs; a step's ``data`` phase is the time it waits for
    its batch, so it shows whether the pipeline keeps up."""
    from torch.utils.data import DataLoader

    sampler = (next(batches).tolist() for _ in range(point.steps))
    loader = iter(DataLoader(items, batch_sampler=sampler, pin_memory=point.data_placement == "pinned",
                             num_workers=point.workers, prefetch_factor=point.prefetch_factor if point.workers else None))
    if device.type == "cpu":
        return loader.__next__

    def fetch_loader() -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = next(loader)
        return xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

    return fetch_loader


def fetcher(point: PointSpec, X: torch.Tensor, y: torch.Tensor, device: torch.device, rank: tuple[int, int] | None = None,
            items=None) -> Fetch:
    """``fetch()`` -> the next (inputs, targets) on the device: tensor indexing by default, or
    a DataLoader with per-sample collation (``--loader dataloader``) over the same indices, of
    ``items`` (a user's Dataset over the training rows) where there are any.
    With several ranks each takes its own contiguous slice of the same global batch, so the
    world sees exactly the samples one process would, without overlap.

    Where the batch comes from is the point's ``data_placement``: ``host`` (CPU points index
    the data in place), ``pageable`` (gather in host memory, copy), ``pinned`` (gather into
    pinned host memory, copy asynchronously: the caching host allocator reuses a buffer only
    once its copy is done) or ``device`` (``X``, ``y`` already on the device, indexed there)."""
    resident = point.data_placement == "device" and device.type != "cpu" and point.loader != "dataloader"
    batches = batch_indices(point.train_size, point.batch_size, point.seed, point.sampling, device if resident else None, point.start_sample)
    if rank is not None:
        per_rank = point.batch_size // rank[1]
        low = rank[0] * per_rank
        batches = (b[low : low + per_rank] for b in batches)
    if point.loader == "dataloader":
        from torch.utils.data import TensorDataset

        return _loader_fetcher(point, items if items is not None else TensorDataset(X, y), device, batches)
    if device.type == "cpu":

        def fetch_cpu() -> tuple[torch.Tensor, torch.Tensor]:
            idx = next(batches)
            return X[idx], y[idx]

        return fetch_cpu

    if point.data_placement == "device":

        def fetch_resident() -> tuple[torch.Tensor, torch.Tensor]:
            idx = next(batches)  # already on the device
            return X[idx], y[idx]

        return fetch_resident
    if point.data_placement == "pinned":

        def fetch_pinned() -> tuple[torch.Tensor, torch.Tensor]:
            idx = next(batches)
            xb = torch.empty((len(idx), *X.shape[1:]), dtype=X.dtype, pin_memory=True)
            yb = torch.empty((len(idx), *y.shape[1:]), dtype=y.dtype, pin_memory=True)
            torch.index_select(X, 0, idx, out=xb)
            torch.index_select(y, 0, idx, out=yb)
            return xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

        return fetch_pinned

    def fetch_pageable() -> tuple[torch.Tensor, torch.Tensor]:
        idx = next(batches)
        return X[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)

    return fetch_pageable
