"""Steps to target at a resolution that does not depend on what a check costs (``run.refine``,
``drivers.crossings``): a plug-in whose check costs about 60 steps gets few checks, and every
point that reaches the target still records the step a check at every step finds, to 5%."""

import sqlite3

import pandas as pd
import pytest
from conftest import plugin

from harness.drivers.sweep import run_flags
from harness.run.refine import RESOLUTION, resolved

WORKLOAD = dict(model=plugin("slow_check"), dataset="linreg", dataset_sizes=1000, batch_sizes="4,16,64", steps=150, lr=0.05, devices="cpu",
                sample_interval=0)


def _first_step_at(checks: list[dict], target: float) -> int:
    return next(c["step"] for c in checks if c["eval_loss"] <= target)


def _every_step(monkeypatch, **flags) -> dict[int, list[dict]]:
    """The reference: the same points checked after every step (checks made free meanwhile)."""
    monkeypatch.setenv("BATCHBENCH_TEST_CHECK_S", "0")
    results = run_flags(**{**WORKLOAD, **flags, "check_every": 1})
    monkeypatch.delenv("BATCHBENCH_TEST_CHECK_S")
    return {r.row["batch_size"]: r.checks for r in results}


def _close(found: int, exact: int) -> bool:
    return abs(found - exact) <= max(1, RESOLUTION * exact)


def test_an_absolute_target_is_found_between_costly_checks(monkeypatch):
    target = 0.45
    results = run_flags(**WORKLOAD, target_loss=target)
    reference = _every_step(monkeypatch, target_loss=target)
    refined = 0
    for r in results:
        row = r.row
        marks = [c["step"] for c in r.checks]
        assert len(marks) <= 12, marks  # auto spaced the costly checks out...
        exact = _first_step_at(reference[row["batch_size"]], target)
        assert row["steps_to_target"] is not None and _close(row["steps_to_target"], exact), (row["batch_size"], row["steps_to_target"], exact)
        assert resolved(row["steps_to_target_low"] - 1, row["steps_to_target"])  # ...and the crossing was refined between them
        refined += row["refine_steps"] > 0
        assert row["refine_checks"] <= 8 and row["refine_steps"] <= max(marks)
        before = max(c["step"] for c in r.checks if c["step"] < row["steps_to_target"])
        after = min(c for c in marks if c >= row["steps_to_target"])
        wall = {c["step"]: c["compute_s"] for c in r.checks}
        assert wall[before] <= row["compute_to_target_s"] <= wall[after]  # its time lies between the two checks around it
    assert refined >= 2


def test_a_relative_target_is_found_between_costly_checks_after_the_sweep(cli, tmp_path, monkeypatch):
    store = tmp_path / "s.sqlite"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in WORKLOAD.items()]
    code, out, err = cli("run", *flags, "--store", store, "--no-report", "--quiet")
    assert code == 0, err
    assert "crossed the relative target between coarse checks" in err
    with sqlite3.connect(store) as conn:
        points = pd.read_sql("SELECT * FROM points", conn)
    reference = _every_step(monkeypatch)
    for row in points.to_dict("records"):
        exact = _first_step_at(reference[row["batch_size"]], row["target_loss"])
        assert _close(row["steps_to_target"], exact), (row["batch_size"], row["steps_to_target"], exact)
        assert row["refine_s"] is not None and row["refine_s"] >= 0
    best = points.loc[points["time_to_target_s"].idxmin()]
    assert f"({int(best['steps_to_target']):,} steps x" in out or "steps x" in out  # the answer quotes the refined steps


@pytest.mark.parametrize("every", ["10", "log:5"])
def test_a_given_coarse_schedule_is_refined_too(monkeypatch, every):
    (result,) = run_flags(**{**WORKLOAD, "batch_sizes": "16"}, target_loss=0.45, check_every=every)
    exact = _first_step_at(_every_step(monkeypatch, batch_sizes="16", target_loss=0.45)[16], 0.45)
    assert _close(result.row["steps_to_target"], exact)


def test_a_relative_target_crossed_before_the_first_coarse_check_is_refined_from_the_start(cli, tmp_path):
    """The replay of a crossing in (0, first check] bisects from the initial weights (it once
    found no check to start from and left the crossing coarse)."""
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", "--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "200", "--batch-sizes", "4,16", "--steps", "30",
                       "--check-every", "10", "--repeats", "2", "--store", store, "--no-report", "--quiet")
    assert code == 0, err
    with sqlite3.connect(store) as conn:
        reached = pd.read_sql("SELECT * FROM points WHERE steps_to_target IS NOT NULL", conn)
    assert len(reached) >= 3 and (reached["refine_checks"] >= 1).all(), reached[["steps_to_target", "steps_to_target_low", "refine_checks"]]
    for row in reached.to_dict("records"):
        assert resolved(row["steps_to_target_low"] - 1, row["steps_to_target"]), row
