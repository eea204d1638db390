"""The search policy of `batchbench tune` on synthetic curves: S(B) = S_min (1 + B_crit/B) at
the best learning rate, worse away from it, divergence far above it; t(B) = t0 + c B; seeded
noise. The grid is what `--lr-policy tuned --stop-at-target` would run: every (B, lr) to the
target or to the step budget."""

import math

import numpy as np
import pytest

from harness.drivers.tune.policy import Budget, Trial, search

BATCHES = [2**k for k in range(13)]  # 1 .. 4096
LRS = [2.0**k for k in range(-3, 5)]  # 0.125 .. 16
BUDGET_STEPS = 5000


class Curve:
    def __init__(self, s_min, b_crit, t0, c, *, lr_at_1=0.25, lr_max=16.0, noise=0.05, seed=0):
        self.s_min, self.b_crit, self.t0, self.c = s_min, b_crit, t0, c
        self.lr_at_1, self.lr_max, self.noise = lr_at_1, lr_max, noise
        self.rng = np.random.default_rng(seed)

    def best_lr(self, b):  # linear scaling up to B_crit, flat beyond (Goyal et al.; Shallue et al.)
        return min(self.lr_max, self.lr_at_1 * min(b, max(self.b_crit, 1)))

    def steps(self, b, lr, noisy=True):
        """Steps to target, or None where the learning rate diverges."""
        if lr > 2.5 * self.best_lr(b):
            return None
        base = self.s_min * (1 + self.b_crit / b) * (1 + 0.8 * math.log2(lr / self.best_lr(b)) ** 2)
        jitter = math.exp(self.rng.normal(0, self.noise)) if noisy else 1.0
        return max(1, round(base * jitter))

    def step_s(self, b):
        return self.t0 + self.c * b

    def run(self, b, lr, budget):
        """A trial as the harness would run it: to the target, or stopped past its budget's
        steps or training time (steps x its step time, measured with a little noise)."""
        s = self.steps(b, lr)
        t = self.step_s(b) * math.exp(self.rng.normal(0, self.noise / 2))
        if s is None:
            return Trial(b, lr, "failed", 20, None, -1.0)
        limit, outcome = BUDGET_STEPS, "missed"
        if budget.steps is not None and budget.steps < limit:
            limit, outcome = budget.steps + 1, "pruned"
        if budget.time_s is not None and t > 0 and math.ceil(budget.time_s / t) < limit:
            limit, outcome = max(1, math.ceil(budget.time_s / t)), "pruned"
        if s > limit:
            return Trial(b, lr, outcome, limit, t if outcome == "missed" else None, limit / s)
        return Trial(b, lr, "reached", s, t, 1.0)

    def true_time(self, b):
        """The grid's answer at one batch size: the best learning rate's time to target."""
        times = [self.steps(b, lr, noisy=False) for lr in LRS]
        return min(s * self.step_s(b) for s in times if s is not None and s <= BUDGET_STEPS)

    def grid_samples(self):
        total = 0
        for b in BATCHES:
            for lr in LRS:
                s = self.steps(b, lr, noisy=False)
                total += b * (20 if s is None else min(s, BUDGET_STEPS))
        return total


def _check(curve, start_batch, *, tolerance=0.15, compute_share=0.25):
    choice = search(BATCHES, LRS, curve.run, start_batch=start_batch, start_lr=0.25)
    truth = {b: curve.true_time(b) for b in BATCHES}
    best_b = min(truth, key=truth.get)
    assert choice.best is not None
    picked = choice.best.batch_size
    assert picked in (best_b // 2, best_b, best_b * 2) or truth[picked] <= (1 + tolerance) * truth[best_b], (picked, best_b, truth)
    assert choice.samples_processed <= compute_share * curve.grid_samples(), (choice.samples_processed, curve.grid_samples())
    return choice, best_b


@pytest.mark.parametrize("seed", range(5))
def test_finds_the_knee_of_a_classic_curve_with_a_quarter_of_the_grid(seed):
    # B* = sqrt(B_crit t0 / c) = sqrt(256 x 1e-3 / 1e-6) = 512
    choice, best_b = _check(Curve(s_min=15, b_crit=256, t0=1e-3, c=1e-6, seed=seed), start_batch=64)
    assert best_b == 512
    assert all(t.outcome in ("reached", "pruned", "failed", "missed") for t in choice.trials)
    assert any(t.outcome == "pruned" for t in choice.trials)  # losing trials stop at the best time


@pytest.mark.parametrize("start", [1, 16, 4096])
def test_any_start_finds_it(start):
    _check(Curve(s_min=15, b_crit=256, t0=1e-3, c=1e-6, seed=1), start_batch=start)


def test_b_equal_one_wins_when_steps_do_not_fall_and_steps_get_dearer():
    choice, best_b = _check(Curve(s_min=200, b_crit=0.01, t0=1e-4, c=1e-5, noise=0.02), start_batch=64)
    assert best_b == 1 and choice.best.batch_size <= 2


def test_a_flat_curve_picks_a_batch_within_noise_of_the_best():
    # perfect scaling (B_crit huge) against time per step proportional to B: every B takes the same time
    curve = Curve(s_min=1, b_crit=4000, t0=0.0, c=1e-5, noise=0.03)
    _check(curve, start_batch=32)


def test_a_known_pilot_trial_is_reused_not_rerun():
    curve = Curve(s_min=15, b_crit=256, t0=1e-3, c=1e-6)
    pilot = curve.run(64, 0.25, Budget())
    calls = []

    def counted(b, lr, budget):
        calls.append((b, lr))
        return curve.run(b, lr, budget)

    choice = search(BATCHES, LRS, counted, start_batch=64, start_lr=0.25, known=[pilot])
    assert (64, 0.25) not in calls and choice.trials[0] is pilot
    assert len(calls) == len(set(calls))  # no trial run twice


def test_nothing_reached_gives_no_choice():
    curve = Curve(s_min=1e6, b_crit=1, t0=1e-3, c=1e-6)  # every trial misses its budget
    choice = search(BATCHES[:4], LRS[:3], curve.run, start_batch=2, start_lr=0.25)
    assert choice.best is None and choice.trials


@pytest.mark.parametrize("seed", range(3))
def test_rounds_of_trials_at_once_find_what_one_at_a_time_finds(seed):
    """With ``run_trials`` (Ray), each batch size's first rates run as one round under the
    budget the round starts with: more trials, the same answer on the classic curve."""
    asked_together = []

    def together(asked):
        asked_together.append(len(asked))
        return [curve.run(b, lr, budget) for b, lr, budget in asked]

    one = search(BATCHES, LRS, Curve(s_min=15, b_crit=256, t0=1e-3, c=1e-6, seed=seed).run, start_batch=64, start_lr=0.25)
    curve = Curve(s_min=15, b_crit=256, t0=1e-3, c=1e-6, seed=seed)
    rounds = search(BATCHES, LRS, curve.run, start_batch=64, start_lr=0.25, run_trials=together)
    assert asked_together and max(asked_together) == 3  # the hint and its neighbours at once
    assert rounds.best.batch_size in (one.best.batch_size // 2, one.best.batch_size, one.best.batch_size * 2)
    assert len({(t.batch_size, t.lr) for t in rounds.trials}) == len(rounds.trials)  # no trial run twice
