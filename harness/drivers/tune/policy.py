"""The search ``batchbench tune`` runs: which (batch size, learning rate) trial to run next, and
when to stop. Pure: trials are run by a callback, so the policy is tested on synthetic curves
and replayed on recorded grids with no training at all.

Convergence and speed are kept apart. Steps to a target at a seed are nearly deterministic;
time per step is noisy but cheap to measure well. So a trial is judged by its steps, and a batch
size by its steps times its median step time (``Trial.time_s``), never by the wall time of a few
dozen steps (which moved 20-50% between runs and flipped the answer).

What the theory gives (McCandlish et al. 2018; Shallue et al. 2019; Malladi et al. 2022):

- Steps to a target fall as S(B) = S_min (1 + B_crit / B): nearly halving with each doubling
  below the critical batch size, hardly falling above it. Time per step is flat while the device
  has spare capacity, then rises. Time to target = S(B) x t(B) is unimodal in log B: the search
  walks it in powers of two from a start near B_crit (the gradient noise scale, measured by the
  caller), towards larger batches first.
- At each batch size the best learning rate is found by a local search over the grid, starting
  from the previous batch size's best scaled by the optimizer's rule (SGD: linearly with B;
  Adam and AdamW: with its square root, ``lr_exponent``), moving in the direction that helps in
  strides that double while they help; it can move down as well as up (past the noise scale
  Adam's best rate falls again: Li et al. 2024).
- Every trial gets a budget (``Budget``): at its batch size, the fewest steps another rate
  already needed (more cannot win there, whatever the clock says: a deterministic prune); across
  batch sizes, the best time so far with ``PRUNE_SLACK``.
- The batch size stops growing once time to target is no longer within ``FINALIST_RATIO`` of the
  best and steps-to-target stopped falling (by less than ``STILL_FALLING``) for ``PATIENCE`` + 1
  doublings, or rose. Going down is tried only when growing found nothing better than the start.
- ``finalists``: the batch sizes within ``FINALIST_RATIO`` of the best time; the caller repeats
  their best trials over seeds, interleaved, and takes the answer, with the batch sizes tied with
  it, from all of them (``analysis.recommend``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Callable, Sequence

from harness.measures.stats import nondecreasing

PATIENCE = 1
"""Growing, one more batch size is tried after one that neither won nor cut the steps, as long
as its steps did not rise: a coarse learning-rate grid can flatten S(B) for one doubling."""

PRUNE_SLACK = 1.25
"""Across batch sizes a trial stops once its steps times its step time pass this multiple of
the best time to target: the step times of one process still move by several percent."""

STILL_FALLING = 0.75
"""Steps-to-target at 2B below this share of those at B: still below the critical batch size,
so a larger batch may win once its time per step settles; the search looks one size further."""

FINALIST_RATIO = 1.3
"""Batch sizes whose time to target is within this factor of the best are finalists: the
caller repeats them over seeds, interleaved, before it answers."""

MAX_FINALISTS = 4


@dataclass(frozen=True)
class Trial:
    """What one training run of (batch size, learning rate) told the search."""

    batch_size: int
    lr: float
    outcome: str
    """``reached`` the target; ``pruned`` (stopped once it could not win); ``missed`` (ran its
    whole step budget without reaching it); ``failed`` (diverged, out of memory, error)."""
    steps: int
    """Steps to the target when reached, else the steps it ran."""
    step_s: float | None
    """Its median step time (None where it did not finish: a pruned or failed trial)."""
    progress: float = 0.0
    """Share of the way from the initial loss to the target covered when it stopped (1 when
    reached): how the search ranks trials that did not reach the target."""

    @property
    def reached(self) -> bool:
        return self.outcome == "reached"

    @property
    def samples(self) -> int:
        return self.steps * self.batch_size

    @property
    def time_s(self) -> float | None:
        """Training time to the target: steps x the median step time (reached trials)."""
        return self.steps * self.step_s if self.reached and self.step_s else None


@dataclass(frozen=True)
class Budget:
    """When a trial may stop without the target: past ``steps`` (another rate at its batch size
    needed no more) or past ``time_s`` of training (steps x its step time so far)."""

    steps: int | None = None
    time_s: float | None = None


RunTrial = Callable[[int, float, Budget], Trial]
RunTrials = Callable[[list[tuple[int, float, Budget]]], list[Trial]]
"""Several trials at once (``--executor ray``): their results in the order asked."""
"""(batch size, learning rate, budget) -> the trial, run."""


@dataclass(frozen=True)
class Choice:
    best: Trial | None
    """The trial with the least time to target; None when none reached it."""
    trials: tuple[Trial, ...]
    finalists: tuple[Trial, ...] = ()
    """The best trial of each batch size within ``FINALIST_RATIO`` of the best time, best first."""

    @property
    def samples_processed(self) -> int:
        """The compute the search spent: steps x batch size, summed over every trial."""
        return sum(t.samples for t in self.trials)

    def best_by_batch(self) -> dict[int, Trial]:
        """Per batch size tried, its best trial (reached first, then fewest steps / most progress)."""
        out: dict[int, Trial] = {}
        for trial in self.trials:
            if trial.batch_size not in out or _score(trial) < _score(out[trial.batch_size]):
                out[trial.batch_size] = trial
        return dict(sorted(out.items()))


def _score(trial: Trial) -> tuple[int, float]:
    """Lower is better, at one batch size: a reached trial by its steps; the others by how far they got."""
    if trial.reached:
        return (0, trial.steps)
    progress = trial.progress if math.isfinite(trial.progress) else -math.inf
    return (1 if trial.outcome != "failed" else 2, -progress)


def nearest(values: Sequence[float], value: float) -> int:
    """Index of the value nearest on a log scale; of two as near, the larger (a grown batch
    takes the larger learning rate)."""
    return min(range(len(values)), key=lambda i: (round(abs(math.log(values[i]) - math.log(value)), 9), -i))


class _Search:
    """The trials run so far, the step time of each batch size, and the budget of the next trial."""

    def __init__(self, rates: list[float], run_trial: RunTrial, known: Sequence[Trial], run_trials: RunTrials | None = None):
        self.rates, self.run_trial, self.run_trials = rates, run_trial, run_trials
        self.done: dict[tuple[int, float], Trial] = {(t.batch_size, t.lr): t for t in known}
        self.order: list[Trial] = list(known)

    def round(self, batch: int, hint: int) -> None:
        """With room to run trials at once: the hint's rate and its neighbours at this batch size
        in one round, each with the budget the round starts with (the local search then finds
        them run, and goes on one trial at a time)."""
        if self.run_trials is None:
            return
        todo = [i for i in (hint - 1, hint, hint + 1) if 0 <= i < len(self.rates) and (batch, self.rates[i]) not in self.done]
        if len(todo) < 2:
            return
        budget = self.budget(batch)
        for i, result in zip(todo, self.run_trials([(batch, self.rates[i], budget) for i in todo])):
            self.done[(batch, self.rates[i])] = result
            self.order.append(result)

    def budget(self, batch: int) -> Budget:
        fewest = min((t.steps for t in self.order if t.batch_size == batch and t.reached), default=None)
        best = self.best_time()
        return Budget(fewest, None if best is None else best * PRUNE_SLACK)

    def step_s(self, batch: int) -> float | None:
        """The median step time of a batch size, pooled over its trials that finished, made
        non-decreasing across the batch sizes tried (``measures.stats.nondecreasing``: a
        smaller batch's slower reading is noise, as ``analyze`` reads it)."""
        per_batch: dict[int, list[float]] = {}
        for t in self.order:
            if t.step_s:
                per_batch.setdefault(t.batch_size, []).append(t.step_s)
        if batch not in per_batch:
            return None
        sizes = sorted(per_batch)
        fitted = nondecreasing([median(per_batch[b]) for b in sizes], [len(per_batch[b]) for b in sizes])
        return fitted[sizes.index(batch)]

    def time_s(self, trial: Trial) -> float | None:
        step = self.step_s(trial.batch_size)
        return trial.steps * step if trial.reached and step else None

    def best_time(self) -> float | None:
        times = [self.time_s(t) for t in self.order if t.reached]
        return min((t for t in times if t is not None), default=None)

    def trial(self, batch: int, i: int) -> Trial:
        key = (batch, self.rates[i])
        if key not in self.done:
            result = self.run_trial(batch, self.rates[i], self.budget(batch))
            self.done[key] = result
            self.order.append(result)
        return self.done[key]


def search(batch_sizes: Sequence[int], lrs: Sequence[float], run_trial: RunTrial, *, start_batch: float, start_lr: float,
           lr_exponent: float = 1.0, known: Sequence[Trial] = (), run_trials: RunTrials | None = None) -> Choice:
    """Find the (batch size, learning rate) with the least time to target. ``batch_sizes`` and
    ``lrs``: the candidates, any order; ``lr_exponent``: how the best rate is expected to scale
    with the batch (1 for SGD, 0.5 for Adam); ``known``: trials already run (a pilot), reused;
    ``run_trials``: where trials can run at once, the first rates of each batch size as a round."""
    batches, rates = sorted(set(batch_sizes)), sorted(set(lrs))
    if not batches or not rates:
        raise ValueError("tune needs at least one batch size and one learning rate")
    state = _Search(rates, run_trial, known, run_trials)
    first = batches[nearest(batches, max(start_batch, batches[0]))]
    state.round(first, nearest(rates, start_lr))
    results: dict[int, tuple[Trial, int]] = {first: best_rate(lambda i: state.trial(first, i), len(rates), nearest(rates, start_lr))}
    for direction in (+1, -1):
        if direction == -1 and _best_batch(results, state) != first:
            break  # growing found a better batch size than the start: smaller ones lose (unimodal)
        _walk(batches, rates, results, state, first, direction, lr_exponent)
    return _choice(state, results)


def _walk(batches, rates, results, state: _Search, first: int, direction: int, lr_exponent: float) -> None:
    """Batch sizes one after another from ``first`` in ``direction`` while they may still win."""
    position, previous = batches.index(first) + direction, first
    patience = PATIENCE if direction > 0 else 0
    while 0 <= position < len(batches):
        b = batches[position]
        hint = nearest(rates, rates[results[previous][1]] * (b / previous) ** lr_exponent)
        state.round(b, hint)
        results[b] = best_rate(lambda i, b=b: state.trial(b, i), len(rates), hint)
        if _best_batch(results, state) != b and not _still_falling(results[previous][0], results[b][0], direction) and not _near_best(results[b][0], state):
            if patience == 0 or _rising(results[previous][0], results[b][0]):
                break
            patience -= 1
        previous = b
        position += direction


def _choice(state: _Search, results: dict[int, tuple[Trial, int]]) -> Choice:
    timed = [(state.time_s(t), t) for t in state.order if t.reached and state.time_s(t) is not None]
    if not timed:
        return Choice(best=None, trials=tuple(state.order))
    best_time, best = min(timed, key=lambda pair: pair[0])
    per_batch = {}
    for time, trial in sorted(timed, key=lambda pair: pair[0]):
        per_batch.setdefault(trial.batch_size, (time, trial))
    finalists = [t for time, t in sorted(per_batch.values(), key=lambda pair: pair[0]) if time <= FINALIST_RATIO * best_time]
    return Choice(best=best, trials=tuple(state.order), finalists=tuple(finalists[:MAX_FINALISTS]))


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


def _best_batch(results: dict[int, tuple[Trial, int]], state: _Search) -> int:
    def key(b: int) -> tuple[int, float]:
        trial = results[b][0]
        time = state.time_s(trial)
        return (0, time) if time is not None else (1, -trial.progress if math.isfinite(trial.progress) else math.inf)

    return min(results, key=key)


def _near_best(trial: Trial, state: _Search) -> bool:
    """Within ``FINALIST_RATIO`` of the best time: a batch size that still reads as a finalist
    keeps the walk going (a few steps' time is noisy, and a coarse learning-rate grid flattens
    S(B) for a doubling or two: on a linear regression, 5 steps at B=32 and 64, then 3 from 128)."""
    time, best = state.time_s(trial), state.best_time()
    return time is not None and best is not None and time <= FINALIST_RATIO * best


def _still_falling(smaller_side: Trial, larger_side: Trial, direction: int) -> bool:
    """Whether steps-to-target still fell enough across this doubling to look one further
    (growing only: going down, a loss means the batch is already below its best)."""
    if direction < 0 or not (smaller_side.reached and larger_side.reached):
        return False
    return larger_side.steps < STILL_FALLING * smaller_side.steps
