"""PhaseClock: the only code that reads clocks for phase timing.

The training loop calls ``mark()`` at every phase boundary of a timed step (step start, after
``data``, after ``derivative``, after ``update``, step end); consecutive marks bound the
phases, so phases can never nest or overlap. ``windows()`` turns them into seconds, one array
per measurement window (the steps between two loss checks).

A mark is not free (a CUDA event record cost 25-40 us on an H100 VM, a host clock read about
0.1 us plus what it does to a tight loop), so not every step need be timed: ``sample_every``
picks k from the measured cost of a mark and the burn-in steps' time, so that the marks of
every k-th step cost under ``MARK_BUDGET`` of the window. Throughput never comes from marks: it
is the un-instrumented wall clock of the measured window.

Modes (recorded per point as ``timing_mode``):

- ``cpu``: ``time.perf_counter_ns`` at each mark (or an injected clock, for tests).
- ``events``: a CUDA event recorded on the current stream at each mark; nothing waits for the
  GPU until ``close_window()`` synchronises once, at the end of the window. The times are those of
  the GPU stream reaching each boundary, which is what a phase costs when the host runs ahead.
- ``sync``: synchronise the device, then read the host clock, at every mark. Exact host-side
  phase times, at the price of draining the queue at each boundary (also used for MPS).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch

from harness.store.schema import PHASES

MARKS_PER_STEP = 5
"""Step start, end of ``data``, end of ``derivative``, end of ``update``, step end."""

MARK_BUDGET = 0.01
"""Marks may cost at most this share of the measured window (1%). Half of it was tried: the
harness gained 0.3% against a plain loop, but 31 timed steps of a 500-step point left the
median's interval wide enough that 4-6 of the 23 points of the default sweep read noisy (0 with
62), so the budget stays at 1%."""

MARK_COST_FLOOR_S = {"cpu": 3e-6, "sync": 3e-6, "events": 40e-6}
"""What a mark is taken to cost inside a training loop, at least, per timing mode: a tight
loop of marks reads far lower than what marks do to a loop. ``cpu``: a host clock read took
0.08 us alone, but timing every 2nd step of a 300 us CPU step (B = 256) slowed it 2.3% against
timing every 50th, about 3 us a mark (interleaved rounds in one process). ``events``: on an H100
VM a CUDA event record cost 25-40 us inside a launch-bound loop (four a step slowed a small
MLP's step 11-15%), and with k chosen from the tight-loop cost the harness ran at 0.92 of a
plain loop at B = 32 and 512; 40 us, the measured worst, keeps the marks within the budget.
``sync``: no in-loop measurement yet, the host clock's floor.
``batchbench overhead --attribute`` measures the in-loop cost of a timed step on any machine."""


class PhaseClock:
    """Collects boundary marks; cheap enough to call four times per step at batch size 1.

    Marks accumulate across a point; ``close_window()`` ends a measurement window (before a
    loss check, and at the end). On the CPU nothing is converted until ``windows()`` at the
    end of the point, so the loop between checks does no bookkeeping at all."""

    def __init__(self, mode: str, device: torch.device | None = None, now_ns: Callable[[], int] = time.perf_counter_ns):
        if mode not in ("cpu", "events", "sync"):
            raise ValueError(f"timing mode must be cpu, events or sync, not {mode!r}")
        self.mode = mode
        self._marks: list = []
        self._window_ends: list[int] = []
        self._resolved: list[float] = []  # events mode: seconds since the first event, per mark
        self._first_event: torch.cuda.Event | None = None
        append = self._marks.append
        if mode == "cpu":

            def mark() -> None:
                append(now_ns())

        elif mode == "sync":
            synchronize = _synchronizer(device)

            def mark() -> None:
                synchronize()
                append(now_ns())

        else:
            event = torch.cuda.Event

            def mark() -> None:
                ev = event(enable_timing=True)
                ev.record()
                append(ev)

        self.mark: Callable[[], None] = mark

    def close_window(self) -> None:
        """End the current window with a mark. In ``events`` mode this is the window's one
        sync: the host waits for the last event, then reads and frees the window's events."""
        self.mark()
        if self.mode == "events":
            marks = self._marks
            marks[-1].synchronize()
            if self._first_event is None:
                self._first_event = marks[0]
            first = self._first_event
            self._resolved.extend(first.elapsed_time(ev) / 1e3 for ev in marks)
            self._window_ends.append(len(self._resolved))
            marks.clear()
        else:
            self._window_ends.append(len(self._marks))

    def mark_cost_s(self, samples: int = 64) -> float:
        """What one mark costs the loop: a tight loop of scratch marks (not recorded), raised
        to the floor of its mode (``MARK_COST_FLOOR_S``)."""
        saved, ends = self._marks[:], self._window_ends[:]
        resolved = self._resolved[:]
        start = time.perf_counter_ns()
        for _ in range(samples):
            self.mark()
        cost = (time.perf_counter_ns() - start) / samples / 1e9
        if self.mode == "events":
            self._marks[-1].synchronize()
        self._marks[:], self._window_ends[:], self._resolved[:] = saved, ends, resolved
        return max(cost, MARK_COST_FLOOR_S[self.mode])

    def closed_steps_s(self) -> np.ndarray:
        """Step wall times of every timed step in the windows closed so far (the burn-in's,
        when the loop asks). All of them, not the last window's: a loss check may have closed
        a window just before, and with the default ``log:`` schedule every burn-in step is
        followed by one."""
        walls = [split_steps(window)["step_wall"] for window in self.windows()]
        return np.concatenate(walls) if walls else np.empty(0)

    def first_mark_ns(self) -> int | None:
        """Host time of the first mark (cpu and sync modes), to place steps on the host clock."""
        if self.mode == "events" or not self._marks:
            return None
        return int(self._marks[0])

    def windows(self) -> list[np.ndarray]:
        """Seconds of every closed window's marks (since the point's first mark), one array per
        window; marks after the last ``close_window()`` are dropped."""
        if self.mode == "events":
            seconds = np.array(self._resolved)
        else:
            raw = np.array(self._marks, dtype=np.int64)
            seconds = (raw - raw[0]) / 1e9 if raw.size else np.empty(0)
        out, start = [], 0
        for end in self._window_ends:
            if end > start:
                out.append(seconds[start:end])
            start = end
        return out


def split_steps(seconds: np.ndarray) -> dict[str, np.ndarray]:
    """Per-step phase times from one window's marks: ``5 n + 1`` marks (the last one closes
    the window) give ``n`` timed steps. ``step_wall`` runs from a step's start mark to its end
    mark, so it includes the loop's own bookkeeping that no phase covers."""
    n = max(0, (len(seconds) - 1) // MARKS_PER_STEP)
    grid = seconds[: MARKS_PER_STEP * n].reshape(n, MARKS_PER_STEP)
    out = {"start": grid[:, 0]}
    for i, phase in enumerate(PHASES[: MARKS_PER_STEP - 2]):  # consecutive marks bound the phases, in order
        out[phase] = grid[:, i + 1] - grid[:, i]
    out["step_wall"] = grid[:, -1] - grid[:, 0]
    return out


def sample_every(mark_cost_s: float, step_s: float | None, multiple_of: int = 1) -> int:
    """Time every k-th step, k the smallest that keeps a timed step's marks under
    ``MARK_BUDGET`` of the steps they stand for; every step when the step time is unknown.
    k is then rounded up onto the grid of ``multiple_of`` (the loop reads a batch loss every
    ``LOSS_EVERY``-th step anyway): to a multiple of it, or below it to a divisor of it, so
    timed steps and loss reads share steps (a read cost 4 us inside a small CPU loop here,
    0.15 us in a tight one) without thinning the sample of slow steps (k = 2 stays 2)."""
    if not step_s or step_s <= 0:
        return 1
    k = max(1, math.ceil(MARKS_PER_STEP * mark_cost_s / (MARK_BUDGET * step_s) - 1e-9))
    if k >= multiple_of:
        return math.ceil(k / multiple_of) * multiple_of
    return min(d for d in range(k, multiple_of + 1) if multiple_of % d == 0)


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (no-op on the CPU)."""
    _synchronizer(device)()


def _synchronizer(device: torch.device | None) -> Callable[[], None]:
    if device is not None and device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device is not None and device.type == "mps":
        return torch.mps.synchronize
    return lambda: None
