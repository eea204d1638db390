"""The critical-batch rule and the ramp on synthetic branch losses, where the answer is known."""

import math
import random

import pytest

from harness.analysis.cbs import Branch, critical_batch, ramp, rank_correlation, smoothed


def _branches(b0, losses):
    return [Branch(factor=2**i, batch_size=b0 * 2**i, lr=0.1 * 2**i, loss=loss) for i, loss in enumerate(losses)]


def _ideal(b_crit, b0=8, factors=7, level=0.5):
    """Branch losses with a known critical batch: flat (a hair lower with each doubling) up to
    ``b_crit``, then 20% worse per doubling beyond it, as perfect scaling ends."""
    out = []
    for i in range(factors):
        b = b0 * 2**i
        out.append(level * (1 - 0.001 * i) if b <= b_crit else level * (1 + 0.2 * math.log2(b / b_crit)))
    return out


@pytest.mark.parametrize("b_crit", [16, 64, 256])
def test_a_known_critical_batch_is_found(b_crit):
    found = critical_batch(0, _branches(8, _ideal(b_crit)), tolerance=0.05)
    assert found.batch_size == b_crit and found.fell_behind == b_crit * 2 and not found.lower_bound


def test_a_flat_curve_keeps_up_everywhere_and_says_it_is_a_lower_bound():
    found = critical_batch(0, _branches(8, [0.5] * 6))
    assert found.batch_size == 8 * 32 and found.lower_bound and "lower bound" in found.text()


def test_a_failed_branch_stops_the_walk():
    found = critical_batch(0, _branches(8, [0.5, 0.49, None, 0.4]))
    assert found.batch_size == 16 and found.fell_behind == 32


def test_noise_within_the_tolerance_does_not_move_the_answer():
    rng = random.Random(0)
    truth = critical_batch(0, _branches(8, _ideal(64))).batch_size
    answers = {critical_batch(0, _branches(8, [x * (1 + rng.uniform(-0.01, 0.01)) for x in _ideal(64)])).batch_size for _ in range(50)}
    assert answers <= {truth // 2, truth, truth * 2} and truth in answers


def test_smoothing_takes_the_last_checks_and_a_non_finite_end_is_a_failure():
    assert smoothed([3.0, 2.0, 1.0, 0.5, 0.3]) == pytest.approx((1.0 + 0.5 + 0.3) / 3)
    assert smoothed([1.0, float("nan")]) is None and smoothed([]) is None


def test_the_ramp_doubles_when_the_curve_passes_twice_the_batch():
    curve = [critical_batch(s, _branches(8, _ideal(c))) for s, c in ((0, 8), (1000, 24), (5000, 80), (20000, 400))]
    stages = ramp(curve, b0=8, lr0=0.1, lr_exponent=1.0, largest=64)
    batches = [(s.start_samples, s.batch_size) for s in stages]
    assert batches[0] == (0, 8) and [b for _, b in batches] == sorted(b for _, b in batches) and batches[-1][1] == 64
    assert all(s.lr == pytest.approx(0.1 * s.batch_size / 8) for s in stages)
    sqrt = ramp(curve, b0=8, lr0=0.1, lr_exponent=0.5, largest=64)
    assert sqrt[-1].lr == pytest.approx(0.1 * math.sqrt(8))


def test_rank_correlation():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2], [1, 2]) is None
