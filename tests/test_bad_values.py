"""Values that passed validation and then crashed, or were silently changed, are one line
naming the flag before anything runs (exit 2)."""

from __future__ import annotations

import pytest

SMALL = ["--devices", "cpu", "--dataset-sizes", "100", "--quiet", "--no-report"]


@pytest.mark.parametrize("args, words", [
    (["--sample-interval", "1e300"], "--sample-interval: '1e300' is not allowed"),  # the monitor thread died of an OverflowError, its samples lost
    (["--point-timeout", "0.0000001"], "--point-timeout: '0.0000001' is not allowed; use a number >= 1"),  # a raw TimedOut traceback, 0 points
    (["--lr", "1e-320"], "below float32's smallest normal number"),  # 0 in float32, while --lr 0 is refused
    (["--burn-in-steps", "1000000", "--steps", "30"], "--burn-in-steps: 1000000 leaves none of --steps 30 to measure"),
    (["--optimizer", "x" * 1_000_000], "(1,000,002 characters) is not one of sgd"),  # a 1 MB value was echoed whole
])
def test_a_value_that_would_crash_later_is_one_line_now(cli, tmp_path, args, words):
    code, _, err = cli("run", *SMALL, *args, "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1 and words in err and len(err) < 400, err[:400]
    assert not (tmp_path / "s.sqlite").exists()
