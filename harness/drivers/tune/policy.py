"""The search ``batchbench tune`` runs: which (batch size, learning rate) trial to run next,
and when to stop. Pure: trials are run by a callback, so the policy is tested on synthetic
curves with no training at all.

What the theory gives (McCandlish et al. 2018; Shallue et al. 2019):

- Steps to a target fall as S(B) = S_min (1 + B_crit / B): nearly halving with each doubling
  below the critical batch size, hardly falling above it. Time per step is flat while the
  device has spare capacity, then rises. Time to target = S(B) x t(B) is therefore unimodal in
  log B, and the search walks it in powers of two from a start near B_crit (the gradient noise
  scale, measured by the caller), towards larger batches first.
- At each batch size the best learning rate is found by a local search over the grid, starting
  from the previous batch size's best scaled linearly with B (exact below B_crit, a guess
  above), moving in the direction that helps in strides that double while they help. Steps-to-target against
  the learning rate is unimodal too: too small is slow, too large diverges.
- Every trial gets the best time so far (with ``PRUNE_SLACK``) as its budget: it stops at the
  target, or as soon as it can no longer beat the best (``pruned``), so most losing trials
  cost a fraction of a winner.
- The batch size stops growing once time to target stops improving and steps-to-target stopped
  falling (by less than ``STILL_FALLING``) for ``PATIENCE`` + 1 doublings, or rose: past B_crit
  the steps will not fall again while each step only gets dearer. Going down is tried only when
  growing found nothing better than the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

PATIENCE = 1
"""Growing, one more batch size is tried after one that neither won nor cut the steps, as long
as its steps did not rise: a coarse learning-rate grid can flatten S(B) for one doubling (the
best rate at 2B may sit between grid points) before it falls again."""

PRUNE_SLACK = 1.25
"""A trial is stopped once its training time passes this multiple of the best time to target:
measured times of one configuration vary by 10-20% from run to run on a busy machine, so a
trial about to tie the best is let finish rather than cut on noise."""

STILL_FALLING = 0.75
"""Steps-to-target at 2B below this share of those at B: still below the critical batch size,
so a larger batch may win once its time per step settles; the search looks one size further."""


@dataclass(frozen=True)
class Trial:
    """What one training run of (batch size, learning rate) told the search."""

    batch_size: int
    lr: float
    outcome: str
    """``reached`` the target; ``pruned`` (stopped once it could not beat the best); ``missed``
    (ran its whole step budget without reaching it); ``failed`` (diverged, out of memory, error)."""
    steps: int
    """Steps to the target when reached, else the steps it ran."""
    time_s: float
    """Training seconds (loss checks excluded): to the target when reached, else until it stopped."""
    progress: float = 0.0
    """Share of the way from the initial loss to the target covered when it stopped (1 when
    reached): how the search ranks trials that did not reach the target."""

    @property
    def reached(self) -> bool:
        return self.outcome == "reached"

    @property
    def samples(self) -> int:
        return self.steps * self.batch_size


RunTrial = Callable[[int, float, "float | None"], Trial]
"""(batch size, learning rate, time budget in seconds or None) -> the trial, run."""


@dataclass(frozen=True)
class Choice:
    best: Trial | None
    """The trial with the least time to target; None when none reached it."""
    trials: tuple[Trial, ...]

    @property
    def samples_processed(self) -> int:
        """The compute the search spent: steps x batch size, summed over every trial."""
        return sum(t.samples for t in self.trials)

    def best_by_batch(self) -> dict[int, Trial]:
        """Per batch size tried, its best trial (reached first, then least time / most progress)."""
        out: dict[int, Trial] = {}
        for trial in self.trials:
            if trial.batch_size not in out or _score(trial) < _score(out[trial.batch_size]):
                out[trial.batch_size] = trial
        return dict(sorted(out.items()))


def _score(trial: Trial) -> tuple[int, float]:
    """Lower is better: a reached trial by its time; the others by how far they got."""
    if trial.reached:
        return (0, trial.time_s)
    progress = trial.progress if math.isfinite(trial.progress) else -math.inf
    return (1 if trial.outcome != "failed" else 2, -progress)


def nearest(values: Sequence[float], value: float) -> int:
    """Index of the value nearest on a log scale; of two as near, the larger (a grown batch
    takes the larger learning rate)."""
    return min(range(len(values)), key=lambda i: (round(abs(math.log(values[i]) - math.log(value)), 9), -i))


def search(batch_sizes: Sequence[int], lrs: Sequence[float], run_trial: RunTrial, *, start_batch: float, start_lr: float,
           known: Sequence[Trial] = ()) -> Choice:
    """Find the (batch size, learning rate) with the least time to target. ``batch_sizes`` and
    ``lrs``: the candidates, any order; ``known``: trials already run (a pilot), reused."""
    batches, rates = sorted(set(batch_sizes)), sorted(set(lrs))
    if not batches or not rates:
        raise ValueError("tune needs at least one batch size and one learning rate")
    done: dict[tuple[int, float], Trial] = {(t.batch_size, t.lr): t for t in known}
    order: list[Trial] = list(known)
    best: list[Trial] = [min((t for t in known if t.reached), key=lambda t: t.time_s)] if any(t.reached for t in known) else []

    def trial(b: int, i: int) -> Trial:
        key = (b, rates[i])
        if key not in done:
            result = run_trial(b, rates[i], best[0].time_s * PRUNE_SLACK if best else None)
            done[key] = result
            order.append(result)
            if result.reached and (not best or result.time_s < best[0].time_s):
                best[:] = [result]
        return done[key]

    def at_batch(b: int, hint: int) -> tuple[Trial, int]:
        return best_rate(lambda i: trial(b, i), len(rates), hint)

    index = {b: n for n, b in enumerate(batches)}
    first = batches[nearest(batches, max(start_batch, batches[0]))]
    results: dict[int, tuple[Trial, int]] = {first: at_batch(first, nearest(rates, start_lr))}
    for step in (+1, -1):
        if step == -1 and _best_batch(results) != first:
            break  # growing found a better batch size than the start: smaller ones lose (unimodal)
        position = index[first] + step
        previous, patience = first, PATIENCE if step > 0 else 0
        while 0 <= position < len(batches):
            b = batches[position]
            ratio = b / previous
            hint = nearest(rates, rates[results[previous][1]] * ratio)
            results[b] = at_batch(b, hint)
            if _best_batch(results) != b and not _still_falling(results[previous][0], results[b][0], step):
                if patience == 0 or _rising(results[previous][0], results[b][0]):
                    break
                patience -= 1
            previous = b
            position += step
    ranked = sorted((t for t in order if t.reached), key=lambda t: t.time_s)
    return Choice(best=ranked[0] if ranked else None, trials=tuple(order))


def best_rate(trial: Callable[[int], Trial], count: int, hint: int) -> tuple[Trial, int]:
    """The best learning rate at one batch size (``trial(i)`` runs the i-th of ``count`` rates):
    from the hint, in strides that double while they help (1, 2, 4 grid steps), back to single
    steps once one overshoots. Returns the best trial and its index."""
    found, at = trial(hint), hint
    for direction in (+1, -1):
        stride, moved = 1, False
        while True:
            i = at + direction * stride
            if not 0 <= i < count:
                if stride == 1:
                    break
                stride = 1
                continue
            current = trial(i)
            if _score(current) < _score(found):
                found, at, moved, stride = current, i, True, stride * 2
            elif stride == 1:
                break
            else:
                stride = 1
        if moved:  # it helped in this direction: the other side is worse (unimodal)
            break
    return found, at


def _rising(smaller_side: Trial, larger_side: Trial) -> bool:
    """Steps-to-target went up with the batch (or the larger one never got there in the time
    the best took): past the best for good."""
    return not larger_side.reached or (smaller_side.reached and larger_side.steps > smaller_side.steps)


def _best_batch(results: dict[int, tuple[Trial, int]]) -> int:
    return min(results, key=lambda b: _score(results[b][0]))


def _still_falling(smaller_side: Trial, larger_side: Trial, step: int) -> bool:
    """Whether steps-to-target still fell enough across this doubling to look one further
    (growing only: going down, a loss means the batch is already below its best)."""
    if step < 0 or not (smaller_side.reached and larger_side.reached):
        return False
    return larger_side.steps < STILL_FALLING * smaller_side.steps
