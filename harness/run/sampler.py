"""A background sampler of utilisation and memory while a point trains.

A daemon thread wakes every ``--sample-interval`` and asks its sources for a reading:
``ProcessSource`` (CPU % and memory of the process with its child processes, such as
DataLoader workers) and, per GPU, ``NvmlSource`` (NVML through the ``pynvml`` module of
``nvidia-ml-py``: utilisation %, memory used, power, SM clock). Timestamps
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
import weakref
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from harness.store.schema import PHASES
from harness.run.memory import proc_fd

SAMPLE_COLUMNS = ("cpu_pct", "rss_bytes", "gpu_util_pct", "gpu_mem_bytes", "gpu_power_w", "gpu_sm_clock_mhz")
_NVML_WARNED: list[str] = []


class Source(Protocol):
    def sample(self) -> dict[str, Any]: ...


class ProcessSource:
    """This process tree's CPU % since the previous reading (100% = one core) and its memory:
    the process's own and that of every live descendant (DataLoader workers, and their
    children). A reading less than ``MIN_INTERVAL_S`` after the last gives no CPU %: over so
    short a span the kernel's tick-granular CPU time would read as thousands of percent.

    CPU is a running total over the tree: the process's own time (``os.times()``), that of the
    children it has reaped, and each live descendant's own and reaped time
    (``Descendants``), so a worker that exits between two readings moves from the live sum to
    the reaped one and its time is neither lost nor counted twice. Memory (``rss_bytes``) is
    the process's RSS plus each descendant's USS (the pages only it maps): a forked worker
    shares most of its parent's pages, which a sum of RSS would count once per worker.

    The process's own readings come from ``os.times()`` and a kept descriptor of
    ``/proc/self/statm`` (3 µs a reading; psutil took 30, and the sampler runs beside the
    training loop); psutil where there is no /proc (macOS)."""

    MIN_INTERVAL_S = 0.01

    def __init__(self):
        self._statm = proc_fd("statm")
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._process: psutil.Process | None = None
        if self._statm is None:
            import psutil

            self._process = psutil.Process()
        self.descendants = Descendants(os.getpid())
        self._last = self._now()

    def cpu_s(self) -> float:
        """The tree's CPU seconds so far: a running total, to take differences of."""
        self.descendants.refresh()
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system + self.descendants.cpu_s()

    def _now(self) -> tuple[float, float]:
        return time.perf_counter(), self.cpu_s()

    def _rss(self) -> int:
        if self._statm is not None:
            return int(os.pread(self._statm, 128, 0).split()[1]) * self._page
        assert self._process is not None
        return self._process.memory_info().rss

    def sample(self) -> dict[str, Any]:
        wall, cpu = self._now()
        cpu = max(cpu, self._last[1])  # a descendant read just after it ended, before its parent's total holds it, dips the sum
        pct = None
        if wall - self._last[0] >= self.MIN_INTERVAL_S:
            pct = 100.0 * (cpu - self._last[1]) / (wall - self._last[0])
            self._last = (wall, cpu)
        return {"cpu_pct": pct, "rss_bytes": self._rss() + self.descendants.private_bytes()}


class Descendants:
    """The live descendants of a process, each read through a ``psutil.Process`` kept while it
    lives (children come and go: a DataLoader's workers live for an epoch, or for the loader).

    Found at every ``refresh`` from the kernel's list of the children each process's main
    thread started (``/proc/PID/task/PID/children``, a kept descriptor read per process: 1 µs),
    which holds DataLoader workers and a forkserver's children; at most every ``FIND_EVERY_S``
    every thread's list is read too (a few µs a thread), or, where the kernel keeps no lists,
    psutil scans every process (a millisecond or more). A descendant found late still counts
    in full: CPU time is a running total. A descendant's CPU times are read at every reading
    (its ``/proc/PID/stat``, kept open: 2 µs), its USS at most every ``USS_EVERY_S`` (its
    ``smaps_rollup``, a few hundred µs). With two workers a reading takes about 50 µs."""

    FIND_EVERY_S = 1.0
    USS_EVERY_S = 0.25

    def __init__(self, pid: int):
        import psutil

        self.pid, self._psutil = pid, psutil
        self._listed = os.path.exists(f"/proc/{pid}/task/{pid}/children")
        self._kept: dict[int, Any] = {}
        self._uss: dict[int, tuple[float, int]] = {}
        self._fds: dict[tuple[int, str], int] = {}
        """Kept descriptors of /proc/PID/task/PID/children and /proc/PID/stat: reads of a
        process, never of a later one with its pid (a read after it is reaped fails)."""
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._found_at = -float("inf")
        weakref.finalize(self, _close_all, self._fds)

    def _scan(self) -> set[int]:
        """Every descendant: each thread's list of children, or psutil's scan."""
        if self._listed:
            return set(children_listed(self.pid))
        try:
            return {child.pid for child in self._psutil.Process(self.pid).children(recursive=True)}
        except self._psutil.Error:
            return set(self._kept)

    def _started_by_main_threads(self) -> set[int]:
        out: set[int] = set()
        todo = [self.pid]
        while todo:
            pid = todo.pop()
            try:
                found = [int(child) for child in self._read(pid, f"task/{pid}/children").split()]
            except (OSError, ValueError):
                continue
            out.update(found)
            todo += found
        return out

    def refresh(self) -> None:
        """Keep a process for each descendant found now; at a full scan, drop those it did not find."""
        now = time.perf_counter()
        full = now - self._found_at >= self.FIND_EVERY_S
        found = self._started_by_main_threads() if self._listed else set()
        if full:
            self._found_at = now
            found |= self._scan()
            for pid in set(self._kept) - found:
                self._drop(pid)
        for pid in found - set(self._kept):
            try:
                self._kept[pid] = self._psutil.Process(pid)
            except self._psutil.Error:  # gone already
                pass

    def _read(self, pid: int, name: str) -> bytes:
        """``/proc/PID/<name>`` through a kept descriptor."""
        fd = self._fds.get((pid, name))
        if fd is None:
            fd = self._fds[(pid, name)] = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return os.pread(fd, 65536, 0)

    def _drop(self, pid: int) -> None:
        self._kept.pop(pid, None)
        self._uss.pop(pid, None)
        for key in [key for key in self._fds if key[0] == pid]:
            os.close(self._fds.pop(key))

    def _cpu_of(self, pid: int, process) -> float:
        """A descendant's CPU seconds, its own and its reaped children's: from /proc/PID/stat
        (2 µs), or psutil (15 µs and more) without the kernel's lists."""
        if not self._listed:
            times = process.cpu_times()
            return times.user + times.system + getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
        stat = self._read(pid, "stat")
        fields = stat[stat.rindex(b")") + 2:].split()  # after the name, which may hold spaces: state, ppid, ...
        return sum(int(tick) for tick in fields[11:15]) / self._tick  # utime, stime, cutime, cstime

    def cpu_s(self) -> float:
        """CPU seconds of the live descendants: their own and that of the children they reaped."""
        total = 0.0
        for pid, process in list(self._kept.items()):
            try:
                total += self._cpu_of(pid, process)
            except (OSError, ValueError, self._psutil.Error):  # exited: its time moves to its parent's reaped children
                self._drop(pid)
        return total

    def private_bytes(self) -> int:
        """The descendants' USS (their RSS where USS cannot be read), each at most ``USS_EVERY_S`` old."""
        now, total = time.perf_counter(), 0
        for pid, process in list(self._kept.items()):
            read_at, value = self._uss.get(pid, (-float("inf"), 0))
            if now - read_at >= self.USS_EVERY_S:
                value = _private(process, self._psutil)
                self._uss[pid] = (now, value)
            total += value
        return total


def _private(process, psutil) -> int:
    try:
        return int(process.memory_full_info().uss)
    except psutil.AccessDenied:
        try:
            return int(process.memory_info().rss)
        except psutil.Error:
            return 0
    except psutil.Error:
        return 0


def _close_all(fds: dict) -> None:
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def children_listed(pid: int) -> list[int]:
    """Every descendant of ``pid``, from the kernel's per-thread lists of children (a process
    that ends while it is read is left out)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in threads:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as listing:
                    found = [int(child) for child in listing.read().split()]
            except (OSError, ValueError):
                continue
            out += found
            todo += found
    return out


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
