"""Merges that race or meet a run twice: the result is whole, every process says so."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys

from conftest import ROOT

SMALL = ["--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "100", "--batch-sizes", "4,8", "--steps", "10", "--quiet", "--no-report"]


def test_concurrent_merges_into_one_new_output_all_succeed(cli, tmp_path):
    """Several processes merging the same stores into one new output: the losers of the race
    failed on ``runs.run_id`` (exit 3); now each waits for the write lock and finds the runs there."""
    sources = []
    for name in ("a", "b"):
        assert cli("run", *SMALL, "--store", tmp_path / f"{name}.sqlite")[0] == 0
        sources.append(str(tmp_path / f"{name}.sqlite"))
    out = tmp_path / "m.sqlite"
    procs = [subprocess.Popen([sys.executable, "-m", "harness", "merge", *sources, "-o", str(out)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), [err for code, err in results if code]
    with sqlite3.connect(out) as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 2
        assert conn.execute("select count(*), count(distinct run_id || point_id) from points").fetchone() == (4, 4)


def test_a_run_met_again_finished_is_finished_in_the_merge(cli, tmp_path):
    """A copy of a store taken mid-run, merged before the finished store: the run was kept
    unfinished (``finished_at`` from the first source)."""
    store = tmp_path / "s.sqlite"
    assert cli("run", *SMALL, "--store", store)[0] == 0
    early = tmp_path / "early.sqlite"
    shutil.copy(store, early)
    with sqlite3.connect(early) as conn:
        conn.execute("update runs set finished_at = null")
    code, _, err = cli("merge", early, store, "-o", tmp_path / "m.sqlite")
    assert code == 0, err
    with sqlite3.connect(tmp_path / "m.sqlite") as conn:
        assert conn.execute("select count(*) from runs where finished_at is not null").fetchone()[0] == 1
