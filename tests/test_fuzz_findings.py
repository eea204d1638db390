"""What a fuzzing pass of 712 inputs found: a plug-in that moved the store, a resume that
rewrote when a run finished, a store written into another store's journal, and tracebacks for
names and numbers past the OS's and Python's limits."""

from __future__ import annotations

import sqlite3

import pytest

SMALL = ["--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "100", "--batch-sizes", "4,8", "--steps", "10", "--quiet", "--no-report"]


def test_a_factory_that_changes_the_working_folder_does_not_move_the_store(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "wanders.py").write_text(
        "import os, torch\n\ndef make(n_features, n_outputs):\n    os.chdir('elsewhere')\n    return torch.nn.Linear(n_features, n_outputs)\n")
    code, _, err = cli("run", *SMALL, "--model", "wanders.py:make", "--store", "o/x.sqlite")
    assert code == 0, err
    assert (tmp_path / "o" / "x.sqlite").is_file() and not (tmp_path / "elsewhere" / "o").exists()


def test_a_resume_with_nothing_to_do_keeps_when_the_run_finished(cli, tmp_path):
    store = tmp_path / "s.sqlite"
    assert cli("run", *SMALL, "--store", store)[0] == 0
    with sqlite3.connect(store) as conn:
        before = conn.execute("select finished_at from runs").fetchone()[0]
    assert cli("run", *SMALL, "--store", store, "--resume")[0] == 0
    with sqlite3.connect(store) as conn:
        assert conn.execute("select finished_at from runs").fetchone()[0] == before


def test_a_store_is_never_written_into_another_stores_journal_or_a_device(cli, tmp_path):
    store = tmp_path / "s.sqlite"
    assert cli("run", *SMALL, "--store", store)[0] == 0
    wal = tmp_path / "s.sqlite-wal"
    wal.write_bytes(b"")  # as while another process has the store open
    for target, words in ((wal, "write-ahead log of the store"), ("/dev/null", "character device")):
        code, _, err = cli("run", *SMALL, "--store", target)
        assert code == 3 and err.count("\n") == 1 and words in err, err
    assert wal.read_bytes() == b""
    fresh = tmp_path / "new.sqlite"  # its journal named as the report, before anything ran
    code, _, err = cli("run", *SMALL[:-1], "--store", fresh, "--report", f"{fresh}-wal")
    assert code == 2 and "the store's write-ahead log" in err and not fresh.exists(), err


def test_a_name_too_long_for_the_file_system_is_one_line(cli, tmp_path):
    small = [a for a in SMALL if a not in ("--dataset", "blobs")]
    code, _, err = cli("run", *small, "--dataset", f"{tmp_path}/{'a' * 5000}.npz", "--store", tmp_path / "s.sqlite")
    assert code == 3 and err.count("\n") == 1 and "File name too long" in err and len(err) < 300, err


@pytest.mark.parametrize("args", [["--batch-sizes", "9" * 5000], ["--check-every", "9" * 5000], ["--shard", "9" * 5000 + "/2"]])
def test_numbers_past_pythons_digit_limit_are_one_line(cli, tmp_path, args):
    small = [a for a in SMALL if a not in ("--batch-sizes", "4,8")] + (["--batch-sizes", "4"] if args[0] != "--batch-sizes" else [])
    code, _, err = cli("run", *small, *args, "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1 and args[0] in err and "twice" not in err and len(err) < 300, err


def test_a_plug_in_that_raises_keyboardinterrupt_in_forward_is_its_points_error(cli, tmp_path):
    """No signal came: it is what the plug-in raised, the point's error, and the sweep goes on
    (it was taken as Ctrl-C: exit 130, the point "interrupted")."""
    (tmp_path / "raises.py").write_text(
        "import torch\n\nclass Net(torch.nn.Linear):\n    def forward(self, x):\n        if x.shape[0] == 8:\n            raise KeyboardInterrupt\n"
        "        return super().forward(x)\n\ndef make(n_features, n_outputs):\n    return Net(n_features, n_outputs)\n")
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", *SMALL, "--model", f"{tmp_path}/raises.py:make", "--store", store)
    assert code == 0 and "KeyboardInterrupt" in err, err
    with sqlite3.connect(store) as conn:
        assert dict(conn.execute("select batch_size, status from points").fetchall()) == {4: "ok", 8: "error"}
