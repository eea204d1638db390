"""Where outputs go (docs/usage.md, "Where outputs go"): every command that writes a file
(`export -o`, `report -o`, `merge -o`, `compare --html`, `asv init`) goes through
harness/outputs.py, and these are its rules, each through the real CLI on a tiny store:

- `-o -` is standard output for a text output; a store (`merge -o -`) refuses it in one line;
- a character device or a FIFO is opened and written, never renamed over;
- a symbolic link: the rules apply to its target, which is written (the link stays);
- no output is ever a file of a store: its `-wal`, `-shm`, `-journal`, sweep lock file or
  tracebacks folder, nor (for a text output) a store itself, input of the command or not;
- temporaries left beside a target by a killed writer go at the next write of that target;
- a folder given as the output suggests a file name of the output's own kind."""

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from harness.integrations.asv_init import STARTER_SPEC
from harness.store.sqlite import Store

SMALL = ["--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "100", "--batch-sizes", "4", "--steps", "10", "--quiet", "--no-report"]


def one_line(err: str, *words: str) -> bool:
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("batchbench: error:") and "Traceback" not in err and all(w in lines[0] for w in words)


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """One finished run of SMALL, made once for the module; each test takes a copy."""
    from harness.cli import main

    path = tmp_path_factory.mktemp("made") / "made.sqlite"
    assert main(["run", *SMALL, "--store", str(path)]) == 0
    return path


@pytest.fixture
def store(stored, tmp_path) -> Path:
    path = tmp_path / "s.sqlite"
    shutil.copy(stored, path)
    return path


@pytest.fixture
def live(store, tmp_path):
    """A second store, ``w2.sqlite``, held open by a writer as during a sweep: its ``-wal`` and
    ``-shm`` are live, and a committed run ("live") is only in the ``-wal`` so far."""
    w2 = tmp_path / "w2.sqlite"
    shutil.copy(store, w2)
    conn = sqlite3.connect(w2)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("INSERT INTO runs (run_id, started_at, spec_json, env_json, spec_hash) "
                 "SELECT 'live', started_at, spec_json, env_json, spec_hash FROM runs LIMIT 1")
    conn.commit()
    assert (tmp_path / "w2.sqlite-wal").stat().st_size > 0 and (tmp_path / "w2.sqlite-shm").is_file()
    yield w2, conn
    conn.close()


def _command(command: str, store: Path, target) -> list:
    return {"export": ["export", "--store", store, "-o", target],
            "report": ["report", "--store", store, "-o", target],
            "merge": ["merge", store, "-o", target]}[command]


# ------------------------------------------------------------------ files of a store


@pytest.mark.parametrize("command", ["export", "report", "merge"])
@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_an_output_onto_a_live_stores_journal_is_refused_and_the_store_keeps_its_points(cli, tmp_path, store, live, command, suffix):
    w2, conn = live
    journal = tmp_path / f"w2.sqlite{suffix}"
    before = journal.read_bytes()
    code, out, err = cli(*_command(command, store, journal))  # w2 is no input of the command
    assert code == 3 and one_line(err, "-o", str(journal), "w2.sqlite"), err
    assert journal.read_bytes() == before
    conn.close()
    with Store.open_existing(w2) as reopened:
        assert "live" in reopened.run_ids()


@pytest.mark.parametrize("command", ["export", "report", "merge"])
def test_an_output_onto_the_journal_of_the_store_it_reads_is_refused(cli, tmp_path, store, command):
    for suffix in ("-wal", "-shm", "-journal"):
        target = tmp_path / f"s.sqlite{suffix}"  # there or not: the name beside the store is enough
        code, _, err = cli(*_command(command, store, target))
        assert code == 3 and one_line(err, "-o", str(target)) and not target.exists(), err


@pytest.mark.parametrize("command", ["export", "report", "merge"])
def test_an_output_into_a_stores_tracebacks_folder_is_refused(cli, tmp_path, store, command):
    folder = tmp_path / "s.tracebacks"
    folder.mkdir()
    kept = folder / "abc123.txt"
    kept.write_text("Traceback ...")
    for target in (kept, folder / "new.csv"):
        code, _, err = cli(*_command(command, store, target))
        assert code == 3 and one_line(err, "-o", str(target), "tracebacks") and not (folder / "new.csv").exists(), err
    assert kept.read_text() == "Traceback ..."


@pytest.mark.parametrize("command", ["export", "report", "merge"])
def test_an_output_onto_a_stores_sweep_lock_file_is_refused(cli, tmp_path, store, command, monkeypatch):
    lock = Store.lock_path(store)
    lock.write_bytes(b"")
    code, _, err = cli(*_command(command, store, lock))
    assert code == 3 and one_line(err, "-o", str(lock), "lock") and lock.read_bytes() == b"", err


@pytest.mark.parametrize("command", ["export", "report"])
def test_a_text_output_onto_another_store_or_through_a_link_to_a_journal_is_refused(cli, tmp_path, store, live, command):
    w2, _ = live
    before = w2.read_bytes()
    code, _, err = cli(*_command(command, store, w2))
    assert code == 3 and one_line(err, "-o", str(w2), "store") and w2.read_bytes() == before, err
    link = tmp_path / "out.csv"
    link.symlink_to(tmp_path / "w2.sqlite-wal")
    wal = (tmp_path / "w2.sqlite-wal").read_bytes()
    code, _, err = cli(*_command(command, store, link))
    assert code == 3 and one_line(err, "-o", str(link), "w2.sqlite") and link.is_symlink() and (tmp_path / "w2.sqlite-wal").read_bytes() == wal, err


def test_merge_into_a_store_is_still_allowed(cli, tmp_path, store):
    out = tmp_path / "all.sqlite"
    assert cli("merge", store, "-o", out)[0] == 0
    code, _, err = cli("merge", store, "-o", out)  # into an existing store: its own files are no obstacle
    assert code == 0, err


# ------------------------------------------------------------------ standard output


def test_dash_is_standard_output_for_text_outputs_and_no_file_named_dash(cli, tmp_path, store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("export", "--store", store, "-o", "-")
    assert code == 0 and out.startswith("run_id,") and len(out.splitlines()) == 2, err
    code, out, err = cli("export", "--store", store, "--format", "json", "-o", "-")
    assert code == 0 and len(json.loads(out)) == 1, err
    code, out, err = cli("report", "--store", store, "-o", "-")
    assert code == 0 and out.lstrip().lower().startswith("<!doctype html") and out.rstrip().endswith("</html>"), err
    assert not (tmp_path / "-").exists()


def test_dash_is_refused_for_a_store_and_where_the_command_prints_its_own_text(cli, tmp_path, store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("merge", store, "-o", "-")
    assert code == 3 and one_line(err, "-o", "standard output") and out == "", err
    code, out, err = cli("compare", store, store, "--html", "-")
    assert code == 3 and one_line(err, "--html", "standard output") and out == "", err
    assert not (tmp_path / "-").exists()


# ------------------------------------------------------------------ special files and links


def test_a_fifo_is_written_into_not_replaced(cli, tmp_path, store):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = tmp_path / "got.csv"
    with open(got, "wb") as sink:
        reader = subprocess.Popen(["cat", str(fifo)], stdout=sink)
        try:
            code, _, err = cli("export", "--store", store, "-o", fifo)
            reader.wait(timeout=30)
        finally:
            if reader.poll() is None:  # nothing ever opened the FIFO to write
                reader.kill()
                reader.wait()
    assert code == 0 and stat.S_ISFIFO(os.lstat(fifo).st_mode), err
    assert got.read_text().startswith("run_id,") and "replaced" not in err


def test_a_character_device_is_written_into_not_replaced(cli, tmp_path, store):
    null = tmp_path / "null"
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers, in a folder of the test's own
    except OSError:
        pytest.skip("making a device file needs root")
    for command in ("export", "report"):
        code, _, err = cli(*_command(command, store, null))
        assert code == 0 and stat.S_ISCHR(os.lstat(null).st_mode), err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_link_to_a_device_writes_the_device_and_keeps_the_link(cli, tmp_path, store):
    link = tmp_path / "out.csv"
    link.symlink_to("/dev/null")
    code, _, err = cli("export", "--store", store, "-o", link)
    assert code == 0 and link.is_symlink() and os.readlink(link) == "/dev/null" and stat.S_ISCHR(os.stat("/dev/null").st_mode), err


@pytest.mark.skipif(not Path("/proc/self/fd/1").exists(), reason="needs /proc")
def test_a_link_to_the_processes_own_standard_output_writes_there(tmp_path, store):
    link = tmp_path / "out.csv"
    link.symlink_to("/proc/self/fd/1")
    done = subprocess.run([sys.executable, "-m", "harness", "export", "--store", str(store), "-o", str(link)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("run_id,") and link.is_symlink(), done.stderr


def test_a_name_beside_a_fifo_is_checked_without_waiting_on_the_fifo(tmp_path, store):
    os.mkfifo(tmp_path / "pipe")  # "pipe-wal" would be a journal if "pipe" were a store: it is not, and is never opened to see
    done = subprocess.run([sys.executable, "-m", "harness", "export", "--store", str(store), "-o", str(tmp_path / "pipe-wal")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and (tmp_path / "pipe-wal").read_text().startswith("run_id,"), done.stderr


def test_a_link_to_a_file_replaces_its_target_and_keeps_the_link(cli, tmp_path, store):
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "latest.csv"
    link.symlink_to(real.name)
    code, _, err = cli("export", "--store", store, "-o", link)
    assert code == 0 and link.is_symlink() and real.read_text().startswith("run_id,") and "replaced" in err, err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_block_devices_and_sockets_are_refused(cli, tmp_path, store):
    import socket

    sock_path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(sock_path))
        code, _, err = cli("export", "--store", store, "-o", sock_path)
        assert code == 3 and one_line(err, "-o", str(sock_path), "socket") and stat.S_ISSOCK(os.lstat(sock_path).st_mode), err
    finally:
        server.close()


# ------------------------------------------------------------------ temporaries and suggestions


def test_temporaries_of_killed_writers_go_at_the_next_write_of_that_target(cli, tmp_path, store):
    dead = []
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        dead.append(proc.pid)
    stale = [tmp_path / f".points.csv.{pid}.partial" for pid in dead]
    for path in stale:
        path.write_text("run_id,\n1")  # what a SIGKILLed export leaves
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = tmp_path / f".points.csv.{alive.pid}.partial"  # a writer still at work
        other = tmp_path / f".other.csv.{dead[0]}.partial"  # another target's
        busy.write_text("x")
        other.write_text("x")
        code, _, err = cli("export", "--store", store, "-o", tmp_path / "points.csv")
        assert code == 0, err
        assert not any(path.exists() for path in stale) and busy.exists() and other.exists()
    finally:
        alive.kill()
        alive.wait()


def test_a_folder_as_the_output_suggests_a_name_of_the_outputs_kind(cli, tmp_path, store):
    code, _, err = cli("export", "--store", store, "-o", tmp_path)
    assert code == 2 and one_line(err, "-o", str(tmp_path), "points.csv") and "report.html" not in err, err
    code, _, err = cli("export", "--store", store, "--table", "steps", "--format", "json", "-o", tmp_path)
    assert code == 2 and one_line(err, "steps.json"), err
    code, _, err = cli("report", "--store", store, "-o", tmp_path)
    assert code == 2 and one_line(err, "report.html"), err


# ------------------------------------------------------------------ asv init


@pytest.fixture
def repo(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("needs git")
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "batchbench.toml").write_text(STARTER_SPEC)
    monkeypatch.chdir(root)
    return root


def test_asv_init_force_never_writes_through_a_link_to_the_spec(cli, repo):
    (repo / "asv.conf.json").symlink_to("batchbench.toml")
    code, _, err = cli("asv", "init", "--force")
    assert code == 2 and one_line(err, "asv.conf.json", "the spec file"), err
    assert (repo / "batchbench.toml").read_text() == STARTER_SPEC and not (repo / "benchmarks").exists()


def test_asv_init_never_writes_through_a_link_out_of_the_repository(cli, repo, tmp_path):
    copy = tmp_path / "passwd"
    copy.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (repo / "asv.conf.json").symlink_to(copy)
    code, _, err = cli("asv", "init", "--force")
    assert code == 3 and one_line(err, "asv.conf.json", os.path.realpath(copy), "outside the repository"), err
    assert copy.read_text() == "root:x:0:0:root:/root:/bin/bash\n" and (repo / "asv.conf.json").is_symlink()
    (repo / "asv.conf.json").unlink()
    (repo / "asv.conf.json").symlink_to(tmp_path / "elsewhere" / "new.json")  # dangling: without --force too
    code, _, err = cli("asv", "init")
    assert code == 3 and one_line(err, "asv.conf.json", "outside the repository") and not (tmp_path / "elsewhere").exists(), err


def test_asv_init_force_writes_a_link_in_the_repository_at_its_target(cli, repo):
    (repo / "conf").mkdir()
    (repo / "conf" / "asv.json").write_text("{}")
    (repo / "asv.conf.json").symlink_to("conf/asv.json")
    code, _, err = cli("asv", "init", "--force")
    assert code == 0 and (repo / "asv.conf.json").is_symlink(), err
    assert json.loads((repo / "conf" / "asv.json").read_text())["benchmark_dir"] == "benchmarks"


def test_dev_stdout_redirected_to_a_file_appends_there_and_never_replaces_it(tmp_path, store):
    """``-o /dev/stdout >> out.txt``: the file was renamed over (its earlier lines lost); a name of
    this process's open file is written through the descriptor, as a shell's ``>&1``."""
    out = tmp_path / "out.txt"
    out.write_text("previous line\n")
    with open(out, "a") as appended:
        done = subprocess.run([sys.executable, "-m", "harness", "export", "--store", str(store), "-o", "/dev/stdout"], cwd=ROOT,
                              stdout=appended, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 0 and "replaced" not in done.stderr, done.stderr
    text = out.read_text()
    assert text.startswith("previous line\nrun_id,") and not list(tmp_path.glob(".*.partial"))
