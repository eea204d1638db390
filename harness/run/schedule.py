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
