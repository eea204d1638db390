"""What surrounds a point's training in ``run.engine``: its monitor (the background sampler), its
deadline (``--point-timeout``), and what a failure becomes (``oom`` or ``error``, in one line)."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import torch

from harness.config.points import PointSpec
from harness.run.sampler import ProcessSource, Sampler, nvml_source


class TimedOut(Exception):
    """The point ran past ``--point-timeout`` (a plug-in that hangs)."""


@contextlib.contextmanager
def deadline(timeout_s: float | None) -> Iterator[None]:
    """Raise ``TimedOut`` in this thread after ``timeout_s`` (a SIGALRM timer; the main thread
    only, where signals are delivered)."""
    if not timeout_s or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimedOut(f"timed out after {timeout_s:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def start_sampler(point: PointSpec, origin_ns: int) -> Sampler | None:
    """The background sampler of the point's process (and its GPU, through NVML), or None at
    ``--sample-interval 0``."""
    if point.sample_interval_s <= 0:
        return None
    sources: list = [ProcessSource()]
    if point.device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(point.device).index or 0
        bus = getattr(torch.cuda.get_device_properties(index), "pci_bus_id", None)
        gpu = nvml_source(index, bus if isinstance(bus, str) else None)
        if gpu is not None:
            sources.append(gpu)
    return Sampler(point.sample_interval_s, sources, origin_ns=origin_ns).start()


OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate", "not enough memory")
"""How allocators say it: CUDA and MPS ("out of memory"), torch's CPU allocator ("can't
allocate memory"), the C library ("cannot allocate memory"), other backends."""


def out_of_memory(exc: BaseException) -> bool:
    """Whether a failure is an allocation failure, on any device: the point's status is ``oom``."""
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in OOM_MESSAGES)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]
