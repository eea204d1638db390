"""A background sampler of utilisation and memory while a point trains.

A daemon thread wakes every ``--sample-interval`` and asks its sources for a reading:
``ProcessSource`` (process CPU % and RSS) and, per GPU, ``NvmlSource`` (NVML through the
``pynvml`` module of ``nvidia-ml-py``: utilisation %, memory used, power, SM clock). Timestamps
come from the clock the phases use (``perf_counter_ns``), relative to the point's origin, so a
sample can be attributed to the phase that was running (``utilisation_by_phase``).

Without an NVIDIA driver the NVML source says so once per process and the GPU columns stay null;
a source that fails mid-run gives nulls for that reading, never an exception in the sweep.
No torch here.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from harness.store.schema import PHASES
from harness.run.memory import proc_fd

SAMPLE_COLUMNS = ("cpu_pct", "rss_bytes", "gpu_util_pct", "gpu_mem_bytes", "gpu_power_w", "gpu_sm_clock_mhz")
_NVML_WARNED: list[str] = []


class Source(Protocol):
    def sample(self) -> dict[str, Any]: ...


class ProcessSource:
    """This process's CPU % since the previous reading (100% = one core) and its RSS. A
    reading less than ``MIN_INTERVAL_S`` after the last gives no CPU %: over so short a span
    the kernel's tick-granular CPU time would read as thousands of percent.

    Read from ``os.times()`` and a kept descriptor of ``/proc/self/statm`` (3 µs a reading;
    psutil took 30, and the sampler runs beside the training loop); psutil where there is no
    /proc (macOS)."""

    MIN_INTERVAL_S = 0.01

    def __init__(self):
        self._statm = proc_fd("statm")
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._process: psutil.Process | None = None
        if self._statm is None:
            import psutil

            self._process = psutil.Process()
        self._last = self._now()

    def _now(self) -> tuple[float, float]:
        times = os.times()
        return time.perf_counter(), times.user + times.system

    def _rss(self) -> int:
        if self._statm is not None:
            return int(os.pread(self._statm, 128, 0).split()[1]) * self._page
        assert self._process is not None
        return self._process.memory_info().rss

    def sample(self) -> dict[str, Any]:
        wall, cpu = self._now()
        pct = None
        if wall - self._last[0] >= self.MIN_INTERVAL_S:
            pct = 100.0 * (cpu - self._last[1]) / (wall - self._last[0])
            self._last = (wall, cpu)
        return {"cpu_pct": pct, "rss_bytes": self._rss()}


class NvmlSource:
    """One GPU through NVML."""

    def __init__(self, handle, pynvml):
        self.handle, self.nvml = handle, pynvml

    def sample(self) -> dict[str, Any]:
        nvml, handle = self.nvml, self.handle
        out: dict[str, Any] = {}
        for column, read in (
            ("gpu_util_pct", lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
            ("gpu_mem_bytes", lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).used)),
            ("gpu_power_w", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
            ("gpu_sm_clock_mhz", lambda: float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))),
        ):
            try:
                out[column] = read()
            except Exception:  # a reading this GPU does not support
                out[column] = None
        return out


def nvml_source(cuda_index: int, pci_bus_id: str | None = None) -> NvmlSource | None:
    """An NVML source for a CUDA device, or None (said once) where NVML is not available."""
    try:
        import pynvml

        pynvml.nvmlInit()
        if pci_bus_id:
            handle = pynvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id.encode() if isinstance(pci_bus_id, str) else pci_bus_id)
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(cuda_index)
        return NvmlSource(handle, pynvml)
    except Exception as exc:
        if not _NVML_WARNED:
            _NVML_WARNED.append(str(exc))
            print(f"batchbench: no GPU utilisation (NVML unavailable: {exc}); GPU sample columns stay null", file=sys.stderr)
        return None


class Sampler:
    """Samples its sources every ``interval_s`` in a daemon thread between ``start`` and ``stop``.
    ``tick()`` takes one reading; the thread only calls it on a schedule (tests call it directly)."""

    def __init__(self, interval_s: float, sources: Sequence[Source], *, origin_ns: int, now_ns: Callable[[], int] = time.perf_counter_ns):
        self.interval_s = interval_s
        self.sources = list(sources)
        self.origin_ns = origin_ns
        self.now_ns = now_ns
        self.rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        row: dict[str, Any] = dict.fromkeys(SAMPLE_COLUMNS)
        row["t_s"] = (self.now_ns() - self.origin_ns) / 1e9
        for source in self.sources:
            try:
                row.update(source.sample())
            except Exception:  # keep sampling; this reading stays null
                pass
        self.rows.append(row)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def start(self) -> "Sampler":
        self.tick()
        self._thread = threading.Thread(target=self._run, name="batchbench-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.tick()
        return self.rows


def mean_of(rows: Sequence[dict[str, Any]], column: str) -> float | None:
    values = [r[column] for r in rows if r.get(column) is not None]
    return float(np.mean(values)) if values else None


def max_of(rows: Sequence[dict[str, Any]], column: str) -> float | None:
    values = [r[column] for r in rows if r.get(column) is not None]
    return max(values) if values else None


def utilisation_by_phase(samples, steps, column: str = "gpu_util_pct") -> dict[str, float | None]:
    """Mean of a sampled column over the samples that fell inside each phase, from the steps'
    start times (``t_s``) and phase durations; samples between steps (loss checks, setup)
    count as ``other``. Pandas frames of one point."""
    phases = PHASES[:3]  # inside a step; loss checks fall between steps, in "other"
    out: dict[str, float | None] = dict.fromkeys(phases + ("other",))
    if len(samples) == 0 or len(steps) == 0 or samples[column].isna().all():
        return out
    starts = steps["t_s"].to_numpy(dtype=float)
    bounds = np.cumsum(np.c_[steps["data_s"], steps["derivative_s"], steps["update_s"]].astype(float), axis=1)
    order = np.argsort(starts)
    starts, bounds = starts[order], bounds[order]
    buckets: dict[str, list[float]] = {k: [] for k in out}
    for t, value in zip(samples["t_s"].to_numpy(dtype=float), samples[column].to_numpy(dtype=float)):
        if np.isnan(value):
            continue
        i = int(np.searchsorted(starts, t, side="right")) - 1
        phase = "other"
        if i >= 0:
            offset = t - starts[i]
            for name, end in zip(phases, bounds[i]):
                if offset < end:
                    phase = name
                    break
        buckets[phase].append(value)
    return {k: (float(np.mean(v)) if v else None) for k, v in buckets.items()}
