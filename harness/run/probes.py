"""Memory probes of a running point: per-point peaks and the analytic parts of the peak.

Peaks reset at the start of every point, so a value never just grows across a sweep:

- CUDA: the caching allocator's peak allocated and reserved bytes (``reset_peak_memory_stats``).
- CPU: the process's peak resident set. On Linux, writing ``5`` to ``/proc/self/clear_refs``
  resets the kernel's high-water mark (VmHWM) to the current RSS; where that is not allowed the
  monitor's sampled maximum stands in (coarser: it sees what its interval catches).

The fit of these peaks against batch size is arithmetic and lives in ``harness.analysis.memory``.
"""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


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
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return rss_peak_bytes() is not None


def rss_peak_bytes() -> int | None:
    """The process's peak RSS since the last reset (VmHWM), or None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Resets the peaks when created (at a point's start); ``read()`` gives the point's peaks."""

    def __init__(self, device: str):
        import torch

        self.device = device
        self.cuda = device.startswith("cuda") and torch.cuda.is_available()
        if self.cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        release_free_memory()
        self.hwm = reset_rss_peak()

    def read(self, sampled_rss_max: int | None = None) -> dict[str, int | None]:
        import torch

        out: dict[str, int | None] = {"peak_rss_bytes": rss_peak_bytes() if self.hwm else sampled_rss_max}
        if self.cuda:
            out["peak_device_mem_bytes"] = int(torch.cuda.max_memory_allocated(self.device))
            out["peak_device_reserved_bytes"] = int(torch.cuda.max_memory_reserved(self.device))
        return out


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


def activation_bytes_per_sample(model, n_features: int, dtype=None) -> int:
    """Bytes of one sample's input and of every leaf module's output in a forward pass: what
    autograd keeps for the backward pass, to first order (the analytic activation memory)."""
    import torch

    total = [0]
    hooks = []
    for module in model.modules():
        if next(module.children(), None) is None:
            hooks.append(module.register_forward_hook(lambda _m, _i, out: total.__setitem__(0, total[0] + _nbytes(out))))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(1, n_features, device=device, dtype=dtype or torch.float32)
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
