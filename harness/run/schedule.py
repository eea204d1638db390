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

from typing import Callable

from harness.config.policies import log_check_steps

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
        return frozenset(log_check_steps(point.steps, every.count)).__contains__
    count = every.count
    return lambda done: done % count == 0


CHECK_SHARE = 0.25
"""Under ``--check-every auto`` the loss checks take at most about this share of a point's
time: a point whose check costs many steps' time gets fewer checks (a GPT point of 40 steps
spent 9.8 of its 10.9 s in 40 checks). The first check and the last always run."""

CHECKS_WORTH_CAPPING_S = 1.0
"""...when they would take more than this in all: below it (the default sweep's checks take
10 ms a point) ``auto`` keeps every check, so the same training checks at the same steps on any
machine and its steps-to-target stay comparable; the cap is for checks that cost real time."""

CHECK_COUNTS = (40, 20, 10, 5, 2)
"""The numbers of checks ``auto`` chooses from: coarse, so that runs of one point whose timings
differ a little check at the same steps (their steps-to-target stay comparable)."""


def checks_within_share(steps: int, step_s: float, check_s: float, most: int) -> int:
    """The most checks (of ``CHECK_COUNTS``, at most ``most``) whose time stays within
    ``CHECK_SHARE`` of the point's: N c <= share / (1 - share) x steps x s."""
    allowed = CHECK_SHARE / (1 - CHECK_SHARE) * steps * step_s / check_s if check_s > 0 else float("inf")
    return next((n for n in CHECK_COUNTS if n <= min(most, allowed)), CHECK_COUNTS[-1])


class CappedChecks:
    """``due`` for a schedule resolved from ``auto``: at the first step's end (the step 0 check
    already priced, the first step's time now known) it keeps the schedule, or, where the checks
    would take more than ``CHECKS_WORTH_CAPPING_S``, spaces it out to ``checks_within_share``
    checks. ``effective`` is the schedule that ran."""

    def __init__(self, point, now_ns: Callable[[], int], check_s: float):
        self.point, self.now_ns, self.check_s = point, now_ns, check_s
        self.effective = point.check_every
        self.start_ns = now_ns()
        self._due: Callable[[int], bool] | None = None

    def __call__(self, done: int) -> bool:
        if self._due is None:
            self._due = self._decide((self.now_ns() - self.start_ns) / 1e9)
        return self._due(done)

    def _decide(self, step_s: float):
        from dataclasses import replace

        every, steps = self.point.check_every, self.point.steps
        most = every.count if every.kind == "log" else max(1, steps // max(1, every.count))
        if most * self.check_s < CHECKS_WORTH_CAPPING_S:
            return due(self.point, self.now_ns)
        count = checks_within_share(steps, step_s, self.check_s, most)
        if count < most:
            self.effective = replace(every, count=count) if every.kind == "log" else replace(every, count=max(1, steps // count))
        return due(replace(self.point, check_every=self.effective), self.now_ns)
