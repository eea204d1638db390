"""Memory of a running point: per-point peaks, the live tensor bytes of a counted step, and the analytic parts of the peak.

Peaks reset at the start of every point, so a value never just grows across a sweep:

- CUDA: the caching allocator's peak allocated and reserved bytes (``reset_peak_memory_stats``).
- CPU: the process's peak resident set. On Linux, writing ``5`` to ``/proc/self/clear_refs``
  resets the kernel's high-water mark (VmHWM) to the current RSS; where that is not allowed the
  monitor's sampled maximum stands in (coarser: it sees what its interval catches).

The fit of these peaks against batch size is arithmetic and lives in ``harness.analysis.memory``.
"""

from __future__ import annotations

import os

_PROC_FDS: dict[str, int | None] = {}
"""Open descriptors of /proc/self files, kept for the process: a peak is read and reset at
every loss check, and opening the file each time cost 30 µs a read (pread on a kept one: 6)."""


def proc_fd(name: str, flags: int = os.O_RDONLY) -> int | None:
    """A kept descriptor of ``/proc/self/<name>``, or None where there is no such file."""
    if name not in _PROC_FDS:
        try:
            _PROC_FDS[name] = os.open(f"/proc/self/{name}", flags | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            _PROC_FDS[name] = None
    return _PROC_FDS[name]


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so that a point's RSS
    starts from what is live rather than from what earlier points left in the allocator's
    free lists (which would hide the next point's growth)."""
    import ctypes
    import ctypes.util

    try:  # (no gc.collect: 75 ms a point here, and a failed point already collects)
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: peaks may then read high
        pass


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def pin_mmap_threshold(threshold_bytes: int = 128 * 1024) -> bool:
    """Serve every allocation above ``threshold_bytes`` by its own mmap, as glibc does before
    its threshold adapts: freed batch-sized buffers then leave the process at once instead of
    fragmenting the heap, and peak RSS tracks live memory. Used by ``batchbench fit`` (its
    probes are not timed; the extra page faults would distort a timed sweep)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):
        return False


def reset_rss_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    fd = proc_fd("clear_refs", os.O_WRONLY)
    try:
        if fd is None or os.write(fd, b"5") != 1:
            return False
    except OSError:
        return False
    return rss_peak_bytes() is not None


def rss_peak_bytes() -> int | None:
    """The process's peak RSS since the last reset (VmHWM), or None off Linux."""
    fd = proc_fd("status")
    try:
        text = os.pread(fd, 16384, 0) if fd is not None else b""
    except OSError:
        return None
    start = text.find(b"VmHWM:")
    if start < 0:
        return None
    return int(text[start + 6 : text.index(b"kB", start)]) * 1024


class PeakMemory:
    """Per-point peaks, kept apart for the training steps and for the loss checks.

    The point's time is cut into segments at every loss check: ``enter_check()`` closes a
    training segment (its peak goes to the training peak) and ``leave_check()`` closes a check
    segment (its peak goes to the check peak), each resetting the counters for the next. What
    runs before the first check (set-up: building the model, moving data) belongs to neither.
    On CUDA the counters are the caching allocator's peaks; on the CPU the kernel's peak RSS
    (VmHWM, reset through /proc/self/clear_refs)."""

    def __init__(self, device: str):
        import torch

        self.device = device
        self.cuda = device.startswith("cuda") and torch.cuda.is_available()
        if self.cuda:  # the allocator's peak counters exist only once CUDA is initialised: a point may be a process's first CUDA use
            torch.cuda.init()
        release_free_memory()
        self.segment = "setup"
        self.peaks: dict[str, dict[str, int]] = {"train": {}, "check": {}}
        self._reset()

    def _reset(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.hwm = reset_rss_peak()

    def _fold(self) -> None:
        """Add the current segment's peaks to its kind (set-up is dropped), then reset."""
        import torch

        if self.segment in self.peaks:
            now = {"rss": rss_peak_bytes() if self.hwm else None}
            if self.cuda:
                now["mem"] = int(torch.cuda.max_memory_allocated(self.device))
                now["reserved"] = int(torch.cuda.max_memory_reserved(self.device))
            kept = self.peaks[self.segment]
            for key, value in now.items():
                if value is not None:
                    kept[key] = max(kept.get(key, 0), value)
        self._reset()

    def enter_check(self) -> None:
        self._fold()
        self.segment = "check"

    def leave_check(self) -> None:
        self._fold()
        self.segment = "train"

    def read(self, sampled_rss_max: float | None = None) -> dict[str, float | None]:
        """The point's peak columns; call once, at its end (what runs since the last check
        counts as training: the steps of a point that failed midway)."""
        self._fold()
        train, check = self.peaks["train"], self.peaks["check"]
        return {
            "peak_rss_bytes": train.get("rss") if self.hwm else sampled_rss_max,
            "peak_device_mem_bytes": train.get("mem"),
            "peak_device_reserved_bytes": train.get("reserved"),
            "check_peak_rss_bytes": check.get("rss"),
            "check_peak_device_mem_bytes": check.get("mem"),
            "check_peak_device_reserved_bytes": check.get("reserved"),
        }


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind some tensors (views counted once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _live_bytes():
    """A torch dispatch mode that counts the bytes of the storages ops create for as long as
    they live, and keeps their peak (``peak``); built on first use (torch loads lazily)."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map_only
    from torch.utils.weak import WeakIdKeyDictionary

    class LiveBytes(TorchDispatchMode):
        """Adds a storage's bytes when an op creates it, subtracts them when it is freed."""

        def __init__(self):
            super().__init__()
            self.known, self.now, self.peak = WeakIdKeyDictionary(), 0, 0

        def _add(self, tensor) -> None:
            storage = tensor.untyped_storage()
            if storage in self.known:
                return
            size = storage.nbytes()
            self.known[storage] = size
            self.now += size
            self.peak = max(self.peak, self.now)
            weakref.finalize(storage, self._free, size)

        def _free(self, size: int) -> None:
            self.now -= size

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tree_map_only(torch.Tensor, self._add, out)
            return out

    return LiveBytes()


def step_tensor_bytes(model, make_optimizer, loss_fn, X, y, batch_size: int, seed: int = 0) -> int | None:
    """Peak live tensor bytes of one training step, counted exactly: parameters, buffers and
    optimizer state, plus every tensor the step creates (the batch, activations, gradients,
    temporaries) for as long as it lives. Runs on a copy of the model with its own optimizer
    and RNG, two steps (the first creates the optimizer's state, the second is counted), so
    the point's own training is untouched. None where the model cannot be copied or run."""
    import copy

    import torch

    try:
        clone = copy.deepcopy(model)
    except (TypeError, RuntimeError, copy.Error):  # a model that cannot be copied (it holds a lock, a generator, ...): no number
        return None
    clone.train()
    optimizer = make_optimizer(clone.parameters())
    rows = torch.randint(X.shape[0], (batch_size,), generator=torch.Generator().manual_seed(seed))

    def step() -> None:
        xb, yb = X[rows], y[rows]
        loss_fn(clone(xb), yb).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # A step that fails here (out of memory, the model's own error) would fail in training too:
    # it is raised, and becomes the point's status with the model's own message.
    with torch.random.fork_rng():
        step()
        state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        resident = storage_bytes([*clone.parameters(), *clone.buffers(), *state])
        with _live_bytes() as live:
            step()
    return resident + live.peak


def analytic_bytes(model, optimizer) -> dict[str, int]:
    """Parameter, gradient and optimizer-state bytes: the batch-independent part of the peak."""
    params = [p for p in model.parameters()]
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    grad_bytes = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    state_bytes = 0
    for state in optimizer.state.values():
        for value in state.values():
            if hasattr(value, "numel") and hasattr(value, "element_size"):
                state_bytes += value.numel() * value.element_size()
    return {"param_bytes": param_bytes, "grad_bytes": grad_bytes, "optimizer_state_bytes": state_bytes}


def activation_bytes(model, row, device, batch_size: int) -> int | None:
    """Analytic activation bytes of a batch, from one eval-mode forward pass of one row (zeros
    of ``row``'s shape and type) that touches neither the RNG nor batch-norm statistics; None
    where the model does not run on a batch of one (it may need more rows, or a fixed batch
    shape): this number is an aside, and training will say what is wrong with the model."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return activation_bytes_per_sample(model, torch.zeros_like(row, device=device)) * batch_size
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError):
        return None
    finally:
        model.train(was_training)


def activation_bytes_per_sample(model, x) -> int:
    """Bytes of one sample ``x`` (a batch of one) and of every leaf module's output in a forward
    pass: what autograd keeps for the backward pass, to first order (the analytic activation memory)."""
    import torch

    total = [0]
    hooks = []
    for module in model.modules():
        if next(module.children(), None) is None:
            hooks.append(module.register_forward_hook(lambda _m, _i, out: total.__setitem__(0, total[0] + _nbytes(out))))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total[0] + x.numel() * x.element_size()


def _nbytes(out) -> int:
    if hasattr(out, "numel"):
        return out.numel() * out.element_size()
    if isinstance(out, (tuple, list)):
        return sum(_nbytes(o) for o in out)
    return 0
