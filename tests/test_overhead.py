"""``batchbench overhead`` and ``harness.drivers.overhead.attribute``: what the harness costs, and where.

The ratio's target (0.98) is a benchmark (tests/benchmarks/test_overhead.py), not asserted here:
these tests check that the command works, refuses bad input, and that the attribution finds a
cost that is known because the test puts it there."""

import json
import time

from harness.cli import main
from harness.drivers.overhead import attribute

MARK_COST_NS = 40_000


def slow_clock() -> int:
    """A clock whose every read busy-waits 40 us: each of a timed step's 5 marks costs that."""
    end = time.perf_counter_ns() + MARK_COST_NS
    while time.perf_counter_ns() < end:
        pass
    return time.perf_counter_ns()


def test_the_attribution_finds_the_known_cost_of_a_timed_step():
    result = attribute(32, rounds=5, steps=200, now_ns=slow_clock, device="cpu")
    seen = result.as_json()
    expected_s = 5 * MARK_COST_NS / 1e9  # 200 us against a step of about 250 us here
    assert 0.6 * expected_s < result.timed_step_cost_s < 1.6 * expected_s, seen
    assert result.timed_step_assumed_s >= expected_s, seen  # the tight loop sees the slow clock too: k keeps the marks under budget
    assert result.timed_steps < (200 - 5) / 8, seen
    assert result.versus_plain("all_timed").ratio < result.versus_plain("untimed").ratio, seen


def test_overhead_command_prints_a_ratio_per_batch_size_as_json(capsys):
    assert main(["overhead", "--device", "cpu", "--batch-sizes", "1,8", "--rounds", "1", "--steps", "40", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["batch_size"] for row in rows] == [1, 8]
    for row in rows:
        assert row["device"] == "cpu" and row["steps"] == 40 and row["rounds"] == 1
        assert row["harness_ratio"] > 0 and row["plain_samples_per_s"] > 0


def test_overhead_attribution_table_names_every_part(capsys):
    assert main(["overhead", "--device", "cpu", "--batch-sizes", "4", "--rounds", "1", "--steps", "40", "--attribute"]) == 0
    out, err = capsys.readouterr()
    for column in ("harness/plain", "no monitor", "no timed steps", "all timed", "timed step", "assumed", "marks' share"):
        assert column in out
    assert "B=4: round 1/1" in err  # progress on stderr, the table alone on stdout
