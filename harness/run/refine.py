"""Steps to target at a resolution that does not depend on how often a point could afford to
check.

A loss check evaluates the whole check set: on a real model it costs tens of steps, so a point
checks rarely and the check that first sees the target may come long after the step that
reached it. Steps to target would then measure the check schedule. Instead, where the interval
between two checks is coarse (wider than ``RESOLUTION`` of its end), the point keeps a snapshot
of its state at the earlier check (``run.snapshot``: model, optimizer, scheduler, RNG, place in
the data order). When the later check finds the target crossed, the interval is replayed from
that snapshot and bisected with whole checks, down to ``RESOLUTION`` (or one step): log2 of the
interval in checks and at most one interval of extra training, all of it outside the measured
window and set aside from every time. Then the point goes on from the state it had at the check,
as if nothing happened. Replayed steps are the same steps (same samples, same RNG), so on the CPU
the crossing found is the one a check at every step finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from harness.run import snapshot
from harness.run.snapshot import Snapshot

RESOLUTION = 0.05
"""Steps to target are resolved to within this share of themselves (or one step)."""

EXPECTED_CHECKS = 4
"""Checks a refinement typically takes (log2 of an interval three times its start over
``RESOLUTION``): what ``--check-every auto`` sets aside for it, with an absolute target, when it
spaces a point's checks out."""


def resolved(low: int, high: int) -> bool:
    """Whether (low, high] pins the first step at the target down to ``RESOLUTION`` of it."""
    return high - low <= max(1.0, RESOLUTION * high)


@dataclass(frozen=True)
class Crossing:
    """Where a point first reached its target."""

    step: int
    """The first step found at the target (a check there, or in the refinement, saw it)."""
    low: int
    """The earliest step it may have been reached: one past the last step seen short of it."""
    extra_steps: int = 0
    """Steps trained again to find it (outside every timed window)."""
    extra_checks: int = 0
    seconds: float = 0.0
    """What finding it cost, training and checks."""


@dataclass(frozen=True)
class Replay:
    """What a refinement trains with: the point's own parts, as its loop has them."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    derivative: Callable
    update: Callable[[int], None]
    fetch_from: Callable[[int], Callable]
    """Samples seen -> a fetcher that reads on from there in the point's data order."""
    evaluate: Callable[[], tuple[float, float | None]]
    reached: Callable[[float, float | None], bool]
    device: torch.device
    scheduler: object = None
    scaler: object = None
    first_sample: int = 0
    """The point's ``start_sample``: samples seen before its step 0."""
    batch_size: int = 1


class Refiner:
    """Follows a point's checks: keeps a snapshot at a check whose next interval is coarse, and
    at the first check that finds the target, bisects back to the step that reached it.
    ``at_check(step, reached, coarse_next)`` after every check; ``crossing`` once found."""

    def __init__(self, replay: Replay, now_ns: Callable[[], int], known_high: int | None = None):
        self.replay, self.now_ns, self.known_high = replay, now_ns, known_high
        """``known_high``: a step an earlier run of this point saw at the target (a replay that
        refines it: the first check short of it bisects at once, and the point stops)."""
        self.crossing: Crossing | None = None
        self.last_step: int | None = None
        self.kept: Snapshot | None = None

    def at_check(self, step: int, reached: bool, coarse_next: bool) -> None:
        if self.crossing is not None:
            return
        if not reached and self.known_high is not None and step < self.known_high:
            self.kept = self._take(step)
            self.crossing = self._bisect(step, self.known_high, come_back=False)
            return
        if reached:
            low = 0 if self.last_step is None else self.last_step + 1
            if self.kept is None or self.kept.steps != self.last_step or resolved(self.last_step, step):
                self.crossing = Crossing(step, min(low, step))
            else:
                self.crossing = self._bisect(self.last_step, step)
            self.kept = None
            return
        self.last_step = step
        self.kept = self._take(step) if coarse_next else None

    def _take(self, step: int) -> Snapshot:
        r = self.replay
        return snapshot.take(r.model, r.optimizer, step, r.first_sample + step * r.batch_size, float("nan"), r.device, r.scheduler, r.scaler)

    def _restore(self, snap: Snapshot) -> None:
        r = self.replay
        snapshot.restore(snap, r.model, r.optimizer, r.device, scheduler=r.scheduler, scaler=r.scaler)

    def _bisect(self, low: int, high: int, come_back: bool = True) -> Crossing:
        """The first step at the target in (low, high], from the snapshot at ``low``; with
        ``come_back`` the live state is at ``high`` and is put back after, else it is at ``low``."""
        r, start = self.replay, self.now_ns()
        at_high, at_low = (self._take(high) if come_back else None), self.kept
        assert at_low is not None, "a crossing is bisected from the snapshot kept at its low end"
        live, steps, checks = (high if come_back else None), 0, 0
        fetch: Callable | None = None
        while not resolved(low, high):
            middle = (low + high) // 2
            if live != low or fetch is None:
                self._restore(at_low)
                fetch = r.fetch_from(r.first_sample + low * r.batch_size)
                torch.set_rng_state(at_low.rng_state)  # a new DataLoader draws its seed from torch's RNG: put it back
            for number in range(low, middle):
                xb, yb = fetch()
                r.derivative(xb, yb)
                r.update(number)
            steps += middle - low
            loss, accuracy = r.evaluate()
            checks += 1
            if r.reached(loss, accuracy):
                high, live = middle, middle
            else:
                low, live, at_low = middle, middle, self._take(middle)
        if at_high is not None:
            self._restore(at_high)
        return Crossing(high, low + 1, steps, checks, (self.now_ns() - start) / 1e9)


def as_columns(crossing: Crossing | None) -> dict:
    """The ``points`` columns a crossing fills."""
    if crossing is None:
        return {}
    return {"refine_steps": crossing.extra_steps, "refine_checks": crossing.extra_checks, "refine_s": crossing.seconds}
