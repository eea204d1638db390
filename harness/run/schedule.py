"""When things happen in a point's loop, as rules on the step number (0-based, counted from the
point's first step), so that no setting moves them but their own:

- A loss check follows a step when the point's typed ``check_every`` says so (``due``).
- A batch loss is read at every ``LOSS_EVERY``-th step and at the last step before each check:
  the mean of those since the previous check is the check's ``train_loss``. The burn-in does
  not move this (with 5 burn-in steps or 8, the same training reads the same losses).
- Timed steps (their phases marked by the clock): every burn-in step, then every step number
  that is a multiple of k (``clock.sample_every``: a divisor or a multiple of ``LOSS_EVERY``,
  so timed steps and loss reads share steps). A point too short to hold a multiple of k after
  its burn-in takes the largest smaller k that does (``fit_window``): at least one measured
  step is always timed.
"""

from __future__ import annotations

import functools
from typing import Callable

from harness.config.policies import log_check_steps
from harness.run.refine import EXPECTED_CHECKS, resolved

LOSS_EVERY = 8
"""Every this many steps a batch loss is read for the checks' ``train_loss``: a fixed rule, so
the mean is the same whichever steps were timed. Not every step: reading a loss (``.item()``,
or even ``.detach()`` to read later) cost 1.5-2% of a small CPU step here, as much as all the
rest of the harness."""


def first_timed(burn_in: int, every: int) -> int:
    """The first step after the burn-in that a period of ``every`` times."""
    return -(-burn_in // every) * every


def fit_window(every: int, burn_in: int, steps: int) -> int:
    """``every``, or the largest period on the loss reads' grid below it (a multiple of
    ``LOSS_EVERY`` or a divisor of it) that times a step of the window ``[burn_in, steps)``."""
    if every > LOSS_EVERY and first_timed(burn_in, every) >= steps:  # no period past the window's end can fit
        every = min(every, LOSS_EVERY * max(1, (steps - 1) // LOSS_EVERY))
    while every > 1 and first_timed(burn_in, every) >= steps:
        every = every - LOSS_EVERY if every > LOSS_EVERY else every // 2
    return max(1, every)


def timed_steps(steps: int, burn_in: int, every: int) -> list[int]:
    """The step numbers a point of ``steps`` steps times: the burn-in's, then the multiples of
    ``every`` (the rule the engine follows, for readers of the ``steps`` table)."""
    return list(range(min(burn_in, steps))) + list(range(first_timed(burn_in, every), steps, every))


def due(point, now_ns: Callable[[], int]) -> Callable[[int], bool]:
    """``due(steps_done)``: whether a loss check follows the step just finished."""
    every = point.check_every
    if every.kind == "epoch":
        per_epoch, batch = point.train_size, point.batch_size
        return lambda done: (done * batch) // per_epoch > ((done - 1) * batch) // per_epoch
    if every.kind == "seconds":
        period_ns = int(every.seconds * 1e9)
        last = [now_ns()]

        def due_seconds(done: int) -> bool:
            now = now_ns()
            if now - last[0] >= period_ns:
                last[0] = now
                return True
            return False

        return due_seconds
    if every.kind == "log":
        return frozenset(_log_steps(point.steps, every.count)).__contains__
    count = every.count
    return lambda done: done % count == 0


CHECK_SHARE = 0.25
"""Under ``--check-every auto`` the loss checks take at most about this share of a point's
time: a point whose check costs many steps' time gets fewer checks (a GPT point of 40 steps
spent 9.8 of its 10.9 s in 40 checks). The first check and the last always run."""

CHECKS_WORTH_CAPPING_S = 1.0
"""...when they would take more than this in all: below it (the default sweep's checks take
10 ms a point) ``auto`` keeps every check of its fine schedule; the cap is for checks that
cost real time."""

CHECK_COUNTS = (40, 20, 10, 5, 2)
"""The numbers of checks ``auto`` spaces a point's checks out to when they cost real time:
coarse, so that runs of one point whose timings differ a little check at the same steps.
Steps to target do not depend on it: a coarse interval is refined (``run.refine``)."""


@functools.lru_cache(maxsize=256)
def _log_steps(steps: int, count: int) -> tuple[int, ...]:
    return tuple(log_check_steps(steps, count))


def fine_count(steps: int) -> int:
    """The fewest checks of a ``log:N`` schedule over ``steps`` whose every interval pins
    steps-to-target down to ``refine.RESOLUTION``: what ``auto`` checks at with a target when
    checks are cheap (no interval then needs refining)."""
    count = 1
    while True:
        marks = (0, *_log_steps(steps, count))
        if all(resolved(a, b) for a, b in zip(marks, marks[1:])):
            return count
        count = count + 1 if count < 16 else int(count * 1.1)


def next_check(point, every, done: int) -> int | None:
    """The step of the check after the one at ``done`` (at the latest the point's last step,
    which ``finish`` checks); None where it depends on the clock (``Ts``)."""
    steps = point.steps
    if every.kind == "seconds":
        return None
    if every.kind == "log":
        return next((s for s in _log_steps(steps, every.count) if s > done), steps)
    if every.kind == "epoch":
        per_epoch, batch = point.train_size, point.batch_size
        return min(steps, -(-((done * batch) // per_epoch + 1) * per_epoch // batch))
    return min(steps, (done // every.count + 1) * every.count)


def checks_within_share(steps: int, step_s: float, check_s: float, counts: tuple[int, ...], reserve: int = 0) -> int:
    """The most checks of ``counts`` (largest first) whose time, with ``reserve`` more for a
    refinement, stays within ``CHECK_SHARE`` of the point's: (N + reserve) c <= share / (1 - share)
    x steps x s."""
    allowed = CHECK_SHARE / (1 - CHECK_SHARE) * steps * step_s / check_s - reserve if check_s > 0 else float("inf")
    return next((n for n in counts if n <= allowed), counts[-1])


class CappedChecks:
    """``due`` for a schedule resolved from ``auto``: at the first step's end (the step 0 check
    already priced, the first step's time now known) it settles the schedule. With a target it
    is the fine log schedule (``fine_count``) where its checks take under
    ``CHECKS_WORTH_CAPPING_S`` or within their share; otherwise, and without a target, it spaces
    the checks out to ``checks_within_share``. ``effective`` is the schedule that ran."""

    def __init__(self, point, now_ns: Callable[[], int], check_s: float):
        self.point, self.now_ns, self.check_s = point, now_ns, check_s
        self.effective = point.check_every
        self.start_ns = now_ns()
        self._due: Callable[[int], bool] | None = None

    def __call__(self, done: int) -> bool:
        if self._due is None:
            self._due = self._decide((self.now_ns() - self.start_ns) / 1e9)
        return self._due(done)

    def upcoming(self, done: int) -> int | None:
        """The step of the check after ``done``; None before the schedule is settled."""
        return None if self._due is None else next_check(self.point, self.effective, done)

    def _decide(self, step_s: float):
        from dataclasses import replace

        every, steps = self.point.check_every, self.point.steps
        if every.kind == "log":
            most = fine_count(steps)
            counts = (most, *(n for n in CHECK_COUNTS if n < most))
        else:
            most = max(1, steps // max(1, every.count))
            counts = tuple(n for n in CHECK_COUNTS if n < most) or (most,)
        count = most
        if most * self.check_s >= CHECKS_WORTH_CAPPING_S:
            refines = self.point.target_loss is not None or self.point.target_accuracy is not None
            count = min(most, checks_within_share(steps, step_s, self.check_s, counts, EXPECTED_CHECKS if refines else 0))
        if every.kind == "log":
            self.effective = replace(every, count=count)
        elif count < most:
            self.effective = replace(every, count=max(1, steps // count))
        return due(replace(self.point, check_every=self.effective), self.now_ns)
