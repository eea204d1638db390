"""Stores with content batchbench did not write (another program's edits, a damaged file, a
minimal store) are one line naming what is wrong, never a traceback; compare says when a side
has nothing to compare."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

SMALL = ["--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "100", "--batch-sizes", "4,8", "--steps", "10", "--quiet", "--no-report"]
READERS = [("runs",), ("analyze",), ("report", "-o", "{tmp}/r.html"), ("export", "-o", "{tmp}/p.csv")]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from harness.cli import main

    path = tmp_path_factory.mktemp("foreign") / "base.sqlite"
    assert main(["run", *SMALL, "--store", str(path)]) == 0
    return path


def _changed(base, tmp_path, sql: str):
    path = tmp_path / "changed.sqlite"
    shutil.copy(base, path)
    with sqlite3.connect(path) as conn:
        conn.execute(sql)
    return path


def _read(cli, tmp_path, store, command):
    return cli(*[part.format(tmp=tmp_path) for part in command], "--store", store)


@pytest.mark.parametrize("command", READERS, ids=[c[0] for c in READERS])
@pytest.mark.parametrize("sql", ["update runs set spec_json = 'not json{'", "update runs set spec_json = '[1, 2]'",
                                 "update runs set env_json = '\"text\"'"], ids=["not-json", "a-list", "env-text"])
def test_a_spec_that_is_not_a_json_object_is_read_as_empty(cli, base, tmp_path, command, sql):
    code, _, err = _read(cli, tmp_path, _changed(base, tmp_path, sql), command)
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("command", [*READERS, ("compare", "{tmp}/../base.sqlite")], ids=[*(c[0] for c in READERS), "compare"])
def test_text_where_a_number_belongs_is_one_line_naming_the_column(cli, base, tmp_path, command):
    store = _changed(base, tmp_path, "update points set batch_size = 'big'")
    if command[0] == "compare":
        shutil.copy(base, tmp_path / ".." / "base.sqlite")
        code, _, err = cli("compare", tmp_path / ".." / "base.sqlite", store)
    else:
        code, _, err = _read(cli, tmp_path, store, command)
    assert code == 3 and err.count("\n") == 1 and "points.batch_size holds 'big' where a number belongs" in err, err


def test_a_minimal_store_is_read(cli, tmp_path):
    """Only the columns that make a store (run ids, point ids): the readers said "started_at"."""
    path = tmp_path / "min.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("create table runs (run_id text)")
        conn.execute("create table points (run_id text, point_id text)")
        conn.execute("insert into runs values ('r1')")
        conn.execute("insert into points values ('r1', 'p1')")
    for command in READERS:
        code, _, err = _read(cli, tmp_path, path, command)
        assert code == 0 and "Traceback" not in err, (command, err)


def test_a_damaged_store_is_a_store_condition_and_a_file_that_is_no_store_is_bad_input(cli, base, tmp_path):
    """Exit 3 for a SQLite file SQLite cannot read (as the docs say), 2 for a file that is not SQLite."""
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84 + b"garbage" * 100)
    code, _, err = cli("analyze", "--store", damaged)
    assert code == 3 and err.count("\n") == 1 and "damaged" in err, err
    other = tmp_path / "other.sqlite"
    other.write_bytes(b"just text\n" * 100)
    code, _, err = cli("analyze", "--store", other)
    assert code == 2 and err.count("\n") == 1 and "not a SQLite file" in err, err


def test_compare_with_a_side_whose_points_all_failed(cli, base, tmp_path):
    """numpy's _UFuncNoLoopError and an empty --json before: now a line says B has no ok point,
    and the gate fails on it."""
    failed = tmp_path / "failed.sqlite"
    assert cli("run", *SMALL, "--lr", "1e30", "--store", failed)[0] == 1  # every point diverged
    code, out, err = cli("compare", base, failed, "--json")
    assert code == 0 and out.strip().strip("[]").strip() == "" and "B has no ok point (2 diverged)" in err, err
    code, _, err = cli("compare", base, failed, "--fail-above", "1.1")
    assert code == 1 and "the gate fails" in err
