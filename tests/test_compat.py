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


def test_adamw_defaults_to_torchs_weight_decay_and_an_older_adamw_run_resumes_as_written(tmp_path, cli):
    """Since 0.6 `--optimizer adamw` means weight decay 0.01, as torch's AdamW. A run written
    before (weight decay 0, as `--weight-decay 0` still writes it), interrupted, resumes with the
    same flags as it was written: its missing point trains with weight decay 0 and joins it."""
    flags = ("run", "--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "100", "--batch-sizes", "4,8", "--steps", "12",
             "--optimizer", "adamw", "--lr", "0.01", "--quiet", "--no-report")
    new = tmp_path / "new.sqlite"
    assert cli(*flags, "--store", new)[0] == 0
    with Store(new, readonly=True) as s:
        assert set(s.load("points")["weight_decay"]) == {0.01}
    old = tmp_path / "old.sqlite"
    assert cli(*flags, "--weight-decay", "0", "--store", old)[0] == 0  # what 0.5 wrote for these flags
    with sqlite3.connect(old) as conn:
        conn.execute("delete from points where batch_size = 8")
        conn.execute("update runs set finished_at = null")
    code, _, err = cli(*flags, "--store", old, "--resume")
    assert code == 0 and "resuming as the run was written" in err and "weight decay 0" in err, err
    with Store(old, readonly=True) as s:
        points = s.load("points")
        assert len(s.load("runs")) == 1 and sorted(points["batch_size"]) == [4, 8] and set(points["weight_decay"]) == {0.0}
