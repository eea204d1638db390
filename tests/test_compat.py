"""What users' stores and asv histories depend on stays as batchbench 0.4.2 wrote it: the ids of
points (and the names of sweeps) computed for a range of specs, and a store 0.4.2 wrote,
interrupted, which opens, reads and resumes into the same run."""

import json
import sqlite3

import pytest

from conftest import ROOT
from harness.drivers.plan import plan_flags
from harness.store.sqlite import Store

DATA = ROOT / "tests" / "data"
PINNED = json.loads((DATA / "point_ids_0.4.2.json").read_text())


@pytest.mark.parametrize("case", PINNED, ids=[f"case{i}" for i in range(len(PINNED))])
def test_point_ids_and_sweep_names_are_those_of_0_4_2(case):
    the_plan = plan_flags(**case["flags"])
    assert [p.point_id for p in the_plan.points] == case["ids"]
    assert the_plan.sweep_hash == case["sweep_hash"]
    assert list(the_plan.old_hashes) == case["old_hashes"]


def _store_0_4_2(path):
    """The store of `batchbench run --devices cpu --dataset blobs --dataset-sizes 100
    --batch-sizes 4,8,16 --steps 12 --check-every 4` (0.4.2), stopped before its last point."""
    with sqlite3.connect(path) as conn:
        conn.executescript((DATA / "store-0.4.2.sql").read_text())
    return path


def test_a_0_4_2_store_reads_and_resumes_into_the_same_run(tmp_path, cli):
    path = _store_0_4_2(tmp_path / "old.sqlite")
    with Store.open_existing(path) as store:
        (run_id,) = store.run_ids()
        before = store.load("points")
    assert list(before["batch_size"]) == [4, 8] and set(before["status"]) == {"ok"}
    code, _, err = cli("run", "--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "100", "--batch-sizes", "4,8,16",
                       "--steps", "12", "--check-every", "4", "--quiet", "--no-report", "--resume", "--store", path)
    assert code == 0, err
    assert f"resuming run {run_id}: 2 of 3 points done, 1 to run" in err
    with Store.open_existing(path) as store:
        points, runs = store.load("points"), store.load("runs")
    assert list(runs["run_id"]) == [run_id] and runs["finished_at"].notna().all()
    assert sorted(points["batch_size"]) == [4, 8, 16] and set(points["status"]) == {"ok"}


def test_a_store_of_a_newer_format_is_refused_in_one_line(tmp_path, cli):
    path = _store_0_4_2(tmp_path / "new.sqlite")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    code, _, err = cli("runs", "--store", path)
    assert code == 2 and err.count("\n") == 1 and "written by a newer batchbench (store format 99" in err


def test_opening_a_0_4_2_store_to_write_records_its_format(tmp_path):
    from harness.config.compat import STORE_FORMAT

    path = _store_0_4_2(tmp_path / "old.sqlite")
    with Store(path):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == STORE_FORMAT
