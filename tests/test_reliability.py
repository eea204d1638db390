"""Nothing lost, nothing touched that is not ours. Each case of the catalogue: the exit code,
one line on stderr, no traceback, and the store's bytes unchanged where they should be."""

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ROOT, plugin
from harness.store.sqlite import Store

SMALL = ["--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "100", "--batch-sizes", "4,8", "--steps", "10", "--quiet", "--no-report"]


def one_line(err: str, *words: str) -> bool:
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("batchbench: error:") and "Traceback" not in err and all(w in lines[0] for w in words)


@pytest.fixture
def store(cli, tmp_path):
    """A store holding one finished run of SMALL."""
    path = tmp_path / "s.sqlite"
    code, _, err = cli("run", *SMALL, "--store", path)
    assert code == 0, err
    return path


def _foreign(path):
    with sqlite3.connect(path) as conn:
        conn.execute("create table points(x, y)")
        conn.execute("insert into points values (1, 2)")
    return path


# ------------------------------------------------------------------ merge keeps every run


def test_merge_keeps_both_runs_of_one_spec_and_adds_nothing_twice(cli, tmp_path, store):
    assert cli("run", *SMALL, "--store", store)[0] == 0  # the same sweep again: a second run
    out = tmp_path / "m.sqlite"
    code, _, err = cli("merge", store, "-o", out)
    assert code == 0 and "4 points added" in err, err
    with Store(out, readonly=True) as m:
        points = m.load("points")
        assert len(m.load("runs")) == 2 and len(points) == 4 and len(m.load("steps")) == (points["burn_in_steps"] + points["timed_steps"]).sum()
    before = out.read_bytes()
    code, _, err = cli("merge", store, "-o", out)
    assert code == 0 and "0 points added, 4 already present" in err
    again = tmp_path / "m2.sqlite"
    assert cli("merge", out, "-o", again)[0] == 0
    code, _, err = cli("merge", out, "-o", again)
    assert code == 0 and "0 points added" in err
    with Store(again, readonly=True) as m:
        assert len(m.load("runs")) == 2 and len(m.load("points")) == 4
    code, _, err = cli("merge", out, "-o", out)  # the output into itself
    assert code == 0 and "0 points added, 4 already present" in err and out.read_bytes() == before


def test_two_machines_stores_of_one_spec_are_both_kept_and_analyzed_as_repeats(cli, tmp_path):
    a, b, out = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "m.sqlite"
    for path in (a, b):
        assert cli("run", *SMALL, "--target", "rel:0.5", "--check-every", "2", "--store", path)[0] == 0
    code, _, err = cli("merge", a, b, "-o", out)
    assert code == 0, err
    with Store(out, readonly=True) as m:
        runs = m.run_ids()
        assert len(runs) == 2 and len(m.load("points")) == 4
    import json

    code, text, err = cli("analyze", "--store", out, "--run", runs[0], "--run", runs[1], "--json")
    assert code == 0, err
    (group,) = json.loads(text)
    assert [row["repeats"] for row in group["batch_sizes"]] == [2, 2]
    assert cli("analyze", "--store", out, "--run", runs[0], runs[1], "--json")[1] == text  # --run A B, as the help says


# ------------------------------------------------------------------ read-only means read-only


@pytest.mark.parametrize("command", [["export"], ["export", "--table", "steps"], ["analyze"], ["report", "-o", "r.html"]])
@pytest.mark.parametrize("kind", ["foreign", "empty", "text"])
def test_read_commands_refuse_what_is_not_a_store_and_leave_it_alone(cli, tmp_path, command, kind):
    path = tmp_path / "other.db"
    if kind == "foreign":
        _foreign(path)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("hello\n")
    before = path.read_bytes()
    code, _, err = cli(*command, "--store", path)
    assert code == 2 and one_line(err, "--store", "not a batchbench store"), err
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_run_refuses_a_foreign_database_without_touching_it(cli, tmp_path):
    path = _foreign(tmp_path / "other.db")
    before = path.read_bytes()
    code, _, err = cli("run", *SMALL, "--store", path)
    assert code == 2 and one_line(err, "--store", "not a batchbench store") and path.read_bytes() == before


def test_a_read_only_store_is_readable_and_unchanged(cli, tmp_path, store):
    os.chmod(store, 0o444)
    before = store.read_bytes()
    for command in (["export"], ["analyze"], ["export", "--table", "runs"], ["report", "-o", tmp_path / "r.html"]):
        code, _, err = cli(*command, "--store", store)
        assert code == 0, (command, err)
    assert store.read_bytes() == before


def test_read_commands_do_not_migrate_an_old_store(cli, tmp_path, store):
    with sqlite3.connect(store) as conn:  # as batchbench 0.1 wrote it
        conn.execute('ALTER TABLE points RENAME COLUMN "burn_in_steps" TO "warmup_steps"')
        conn.execute('ALTER TABLE steps RENAME COLUMN "burn_in" TO "warmup"')
        conn.execute('ALTER TABLE points DROP COLUMN "step_wall_s_max_rank"')
    before = store.read_bytes()
    code, out, err = cli("export", "--store", store, "--table", "steps")
    assert code == 0 and out.startswith("run_id,point_id,step,burn_in,"), err
    code, out, _ = cli("export", "--store", store)
    assert code == 0 and "burn_in_steps" in out.splitlines()[0] and "step_wall_s_max_rank" in out.splitlines()[0]
    assert store.read_bytes() == before
    code, _, err = cli("run", *SMALL, "--store", store)  # a writing command migrates, and says so
    assert code == 0 and "migrated" in err


# ------------------------------------------------------------------ resume knows its sweep


def _partial(cli, store, batch_sizes):
    """Run the first point of a sweep, as an interrupted run would leave it."""
    from harness.drivers.plan import plan_flags
    from harness.run.engine import run_point

    the_plan = plan_flags(devices="cpu", dataset_sizes=100, batch_sizes=batch_sizes, steps=10)
    with Store(store) as s:
        run_id, _ = s.start_run(the_plan.spec.to_json(), the_plan.sweep_hash, {}, resume=False)
        first = the_plan.points[0]
        s.add_point(run_id, run_point(first, the_plan.workload(first)))
    return run_id


@pytest.mark.parametrize("written", [["--batch-sizes", "16,4,1"], ["--batch-sizes", "1,4,4,16"], ["--batch-sizes", "4..4,1,16", "--devices", "auto"]])
def test_resume_finds_the_sweep_however_it_is_written(cli, tmp_path, written):
    path = tmp_path / "s.sqlite"
    run_id = _partial(cli, path, "1,4,16")
    args = ["--devices", "cpu", "--dataset-sizes", "100", "--steps", "10", "--quiet", "--no-report", "--store", path, "--resume"]
    if "--devices" in written:
        args = args[2:]
        if os.environ.get("CUDA_VISIBLE_DEVICES") is None:
            import torch

            if torch.cuda.is_available():
                pytest.skip("auto is more than the CPU on this machine")
    code, _, err = cli("run", *args, *written)
    assert code == 0, err
    assert f"resuming run {run_id}" in err and "1 of 3 points done" in err
    with Store(path, readonly=True) as s:
        points = s.load("points")
        assert s.run_ids() == [run_id] and sorted(points["batch_size"]) == [1, 4, 16] and points["point_id"].is_unique
    code, _, err = cli("run", *args, *written)
    assert code == 0 and "nothing to do" in err


def test_resume_with_changed_flags_names_what_differs_and_starts_anew(cli, tmp_path):
    path = tmp_path / "s.sqlite"
    assert cli("run", *SMALL, "--store", path)[0] == 0
    changed = [a if a != "10" else "12" for a in SMALL]  # --steps 12
    code, _, err = cli("run", *changed, "--store", path, "--resume")
    assert code == 0 and "no earlier run of this sweep" in err and "differs in --steps" in err and "starting a new run" in err
    with Store(path, readonly=True) as s:
        assert len(s.run_ids()) == 2


def test_duplicate_axis_values_collapse_before_anything_runs(cli, tmp_path):
    path = tmp_path / "s.sqlite"
    code, _, err = cli("run", "--devices", "cpu", "--dataset-sizes", "100,100", "--batch-sizes", "4,4,8", "--steps", "5", "--quiet", "--no-report", "--store", path)
    assert code == 0, err
    with Store(path, readonly=True) as s:
        assert len(s.load("points")) == 2


def test_a_second_resume_of_the_same_sweep_is_refused_while_the_first_runs(tmp_path):
    path = tmp_path / "s.sqlite"
    args = [sys.executable, "-m", "harness", "run", "--model", plugin("slow"), "--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "64",
            "--batch-sizes", "1,2,4,8", "--steps", "200", "--quiet", "--no-report", "--store", str(path), "--resume"]
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:  # 4 points of 200 slow steps: about 16 s, and the second starts once one point is in
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None:
            try:
                with sqlite3.connect(path, timeout=1) as conn:
                    if conn.execute("select count(*) from points").fetchone()[0] >= 1:
                        break
            except sqlite3.Error:
                pass
            time.sleep(0.05)
        assert first.poll() is None, "the first sweep ended before the second could start"
        second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 3 and one_line(second.stderr, "--resume", "already"), second.stderr  # a store condition (exit 3), not bad input
    finally:
        first.wait(timeout=120)
    assert first.returncode == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("select count(*), count(distinct point_id) from points").fetchone() == (4, 4)


# ------------------------------------------------------------------ the right status


def test_a_cpu_allocation_failure_is_oom(tmp_path):
    """A plug-in asks for 64 GiB under a 4 GiB address-space limit: the point is ``oom``."""
    path = tmp_path / "s.sqlite"
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30)); "
            "from harness.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "run", "--model", plugin("hungry"), "--devices", "cpu", "--dataset-sizes", "100",
                           "--batch-sizes", "4", "--steps", "5", "--quiet", "--no-report", "--store", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    with sqlite3.connect(path) as conn:
        status, error = conn.execute("select status, error from points").fetchone()
    assert status == "oom", error
    assert proc.returncode == 1 and "every point failed" in proc.stderr


@pytest.mark.parametrize("factory,expected,got", [("three_extra_logits", 3, 6), ("two_logits", 3, 2)])
def test_a_model_whose_output_does_not_fit_the_classes_is_refused_in_the_plan(cli, tmp_path, factory, expected, got):
    path = tmp_path / "s.sqlite"
    code, _, err = cli("run", *SMALL, "--model", plugin(factory), "--store", path)
    assert code == 2 and one_line(err, "--model", f"{got} outputs", f"{expected}") and not path.exists(), err


def test_a_sweep_whose_every_point_failed_exits_1_and_says_why(cli, tmp_path):
    code, _, err = cli("run", *SMALL, "--model", plugin("broken"), "--store", tmp_path / "s.sqlite")
    assert code == 1 and "every point failed" in err
    lines = err.splitlines()
    told = [line for line in lines if line.startswith("batchbench: point B=")]
    assert len(told) == 2 and all("error: ValueError: bug in user model (traceback: " in line for line in told)
    assert "batchbench: 2 points: error: ValueError: bug in user model" in lines  # grouped at the end
    traces = sorted((tmp_path / "s.tracebacks").glob("*.txt"))
    assert len(traces) == 2 and 'raise ValueError("bug in user model")' in traces[0].read_text()
    with sqlite3.connect(tmp_path / "s.sqlite") as conn:
        assert "Traceback (most recent call last)" in conn.execute("select traceback from points").fetchone()[0]


# ------------------------------------------------------------------ one line, the right code


def test_output_paths_that_cannot_be_written(cli, tmp_path, store):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args, field in ((["run", *SMALL[:-1], "--store", tmp_path / "n.sqlite", "--report", afile / "r.html"], "--report"),
                        (["run", *SMALL[:-1], "--store", tmp_path / "n.sqlite", "--report", tmp_path], "--report"),
                        (["report", "--store", store, "-o", afile / "r.html"], "-o")):
        code, _, err = cli(*args)
        assert code == 2 and one_line(err, field), (args, err)
    assert not (tmp_path / "n.sqlite").exists()  # checked before the sweep ran
    code, _, err = cli("export", "--store", store, "-o", tmp_path / "new" / "dir" / "x.csv")  # missing folders are made
    assert code == 0 and (tmp_path / "new" / "dir" / "x.csv").is_file(), err


def test_a_damaged_store_is_one_line(cli, tmp_path, store):
    with sqlite3.connect(store) as conn:
        conn.execute("pragma wal_checkpoint(truncate)")
        pages = conn.execute("pragma page_count").fetchone()[0]
        size = conn.execute("pragma page_size").fetchone()[0]
    data = bytearray(store.read_bytes())
    for page in range(2, pages):  # every page but the schema's
        data[page * size + 8 : page * size + 200] = os.urandom(192)
    store.write_bytes(bytes(data))
    code, _, err = cli("export", "--table", "steps", "--store", store)  # the steps pages are damaged
    assert code == 3 and one_line(err, "--store", "damaged"), err  # a store that cannot be read: exit 3
    for command in (["report", "-o", tmp_path / "r.html"], ["analyze"], ["export", "--table", "samples"]):
        code, _, err = cli(*command, "--store", store)  # these may or may not touch a damaged page
        assert "Traceback" not in err and (code == 0 or (code in (2, 3) and one_line(err, "--store"))), (command, err)


def test_rows_with_nulls_added_by_hand(cli, tmp_path, store):
    with sqlite3.connect(store) as conn:
        run_id = conn.execute("select run_id from runs").fetchone()[0]
        conn.execute("insert into points (run_id, point_id) values (?, 'hand')", (run_id,))
        conn.execute("insert into runs (run_id) values ('hand-run')")
        conn.execute("insert into points (run_id, point_id) values ('hand-run', 'p')")
    code, _, err = cli("report", "--store", store, "--run", run_id, "-o", tmp_path / "r.html")
    assert code == 0, err
    code, _, err = cli("analyze", "--store", store, "--run", run_id)
    assert code == 0, err
    out = tmp_path / "m.sqlite"
    code, _, err = cli("merge", store, "-o", out)
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("args,field", [
    (["--dataset-sizes", "99999999999999999999999"], "--dataset-sizes"),
    (["--dataset", "linreg", "--dataset-sizes", "2000000000"], "--dataset-sizes"),
])
def test_sizes_too_large_for_the_machine(cli, tmp_path, args, field):
    path = tmp_path / "s.sqlite"
    code, _, err = cli("run", "--devices", "cpu", "--batch-sizes", "4", "--steps", "5", "--quiet", "--store", path, *args)
    assert code == 2 and one_line(err, field) and not path.exists(), err


def test_compare_paths_are_read_as_written(cli, tmp_path):
    old, new = tmp_path / "old.db", tmp_path / "x.sqlite.d" / "s.sqlite"
    new.parent.mkdir()
    for path in (old, new):
        assert cli("run", *SMALL, "--store", path)[0] == 0
    code, out, err = cli("report", "--compare", old, new, "-o", tmp_path / "c.html")
    assert code == 0, err
    assert "2 matched points" in (tmp_path / "c.html").read_text()


def test_export_of_an_unknown_run_is_an_error(cli, store):
    code, out, err = cli("export", "--store", store, "--run", "nosuchrun")
    assert code == 2 and one_line(err, "--run", "nosuchrun") and out == ""


def test_merge_errors_name_merge_arguments(cli, tmp_path):
    code, _, err = cli("merge", tmp_path / "none.sqlite", "-o", tmp_path / "m.sqlite")
    assert code == 2 and one_line(err, "STORE") and "--store" not in err


@pytest.mark.parametrize("args", [["--steps", "5", "--steps", "6"], ["--batch-sizes", "4", "--batch-sizes=8"]])
def test_a_flag_given_twice_is_an_error(cli, tmp_path, args):
    code, _, err = cli("run", "--devices", "cpu", "--dataset-sizes", "100", "--quiet", "--store", tmp_path / "s.sqlite", *args)
    assert code == 2 and one_line(err, args[0], "twice")


def test_a_toml_key_given_twice_is_an_error(cli, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text("batch-sizes = [4]\nbatch_sizes = [8]\n")
    code, _, err = cli("run", spec, "--store", tmp_path / "s.sqlite")
    assert code == 2 and one_line(err, "batch_sizes", "twice")


def test_ctrl_c_during_the_report_exits_130(tmp_path):
    """SIGINT while the report renders: exit 130 and the points stay stored."""
    path = tmp_path / "s.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--devices", "cpu", "--dataset-sizes", "200", "--batch-sizes", "1..full",
                             "--steps", "20", "--quiet", "--store", str(path), "--report", str(tmp_path / "r.html")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    finished = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(path, timeout=1) as conn:
                finished = conn.execute("select count(*) from runs where finished_at is not null").fetchone()[0]
        except sqlite3.Error:
            pass
        if finished:
            break
        time.sleep(0.02)
    time.sleep(0.3)  # inside the report now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err


# ------------------------------------------------------------------ kills at random moments


def _kill_and_resume(tmp_path, kills: int, seed: int):
    rng = random.Random(seed)
    path = tmp_path / "s.sqlite"
    args = [sys.executable, "-m", "harness", "run", "--model", plugin("slow"), "--devices", "cpu", "--dataset-sizes", "64",
            "--batch-sizes", "1,2,4,8,16,32,full", "--steps", "15", "--quiet", "--no-report", "--store", str(path), "--resume"]
    for _ in range(kills):
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.0))
        proc.send_signal(rng.choice([signal.SIGKILL, signal.SIGINT]))
        proc.wait(timeout=120)
    final = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert conn.execute("select count(*) from runs").fetchone()[0] == 1
        rows = conn.execute("select point_id, batch_size from points").fetchall()
    assert len(rows) == 7 and len({r[0] for r in rows}) == 7


def test_kills_at_random_moments_then_resume_leave_every_point_once(tmp_path):
    _kill_and_resume(tmp_path, kills=3, seed=1)


@pytest.mark.long
def test_many_kills_at_random_moments(tmp_path):
    """15 kills (BATCHBENCH_LONG=1); CI runs the 3-kill test above."""
    _kill_and_resume(tmp_path, kills=15, seed=2)


def test_a_store_on_a_read_only_file_system_is_read(store, tmp_path):
    """What a read-only mount looks like to a reader: nothing can be written, not even a -shm
    beside the store. As root (who writes through chmod) a read-only bind mount makes it so."""
    folder = tmp_path / "ro"
    folder.mkdir()
    copy = folder / "s.sqlite"
    shutil.copy(store, copy)
    before = copy.read_bytes()
    for command in (["export"], ["analyze"]):
        cli_line = [sys.executable, "-m", "harness", *command, "--store", str(copy)]
        if os.geteuid() == 0:
            if shutil.which("unshare") is None:
                pytest.skip("root without unshare: cannot make a read-only mount")
            script = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$@"'
            cli_line = ["unshare", "--mount", "sh", "-c", script, "sh", *cli_line]
        else:
            os.chmod(copy, 0o444)
            os.chmod(folder, 0o555)
        proc = subprocess.run(cli_line, cwd=ROOT, capture_output=True, text=True, timeout=120)
        os.chmod(folder, 0o755)
        if os.geteuid() == 0 and "mount" in proc.stderr and proc.returncode != 0 and "batchbench" not in proc.stderr:
            pytest.skip(f"no read-only mount here: {proc.stderr.strip()}")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (command, proc.stderr)
    assert copy.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["s.sqlite"]
    # a writing command on the same read-only store: one line, exit 2, nothing changed
    run_line = [sys.executable, "-m", "harness", "run", *SMALL, "--store", str(copy)]
    if os.geteuid() == 0:
        run_line = ["unshare", "--mount", "sh", "-c", script, "sh", *run_line]
    else:
        os.chmod(folder, 0o555)
    proc = subprocess.run(run_line, cwd=ROOT, capture_output=True, text=True, timeout=120)
    os.chmod(folder, 0o755)
    assert proc.returncode == 3 and one_line(proc.stderr, "--store"), proc.stderr  # a store that cannot be written: exit 3
    assert copy.read_bytes() == before


def test_a_model_that_fails_on_the_input_shape_is_refused_in_the_plan_with_its_own_message(cli, tmp_path):
    path = tmp_path / "s.sqlite"
    code, _, err = cli("run", "--devices", "cpu", "--dataset", "cifar-like", "--dataset-sizes", "64", "--model", plugin("channels_last_conv"),
                       "--store", path)
    assert code == 2 and err.count("\n") == 1 and "--model" in err and "RuntimeError" in err and "channels" in err and not path.exists(), err


# ------------------------------------------------------------------ round two: outputs, plug-ins, locks, ranges

def _stored(cli, tmp_path, name="s.sqlite", *extra):
    path = tmp_path / name
    assert cli("run", *SMALL, "--store", path, *extra)[0] == 0
    return path


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
@pytest.mark.parametrize("command", ["export", "report"])
def test_an_output_that_is_the_store_is_refused_and_the_store_is_untouched(cli, tmp_path, how, command):
    store = _stored(cli, tmp_path)
    target = {"same path": store, "symlink": tmp_path / "link.sqlite", "hard link": tmp_path / "hard.sqlite"}[how]
    if how == "symlink":
        target.symlink_to(store)
    elif how == "hard link":
        os.link(store, target)
    before = store.read_bytes()
    code, _, err = cli(command, "--store", store, "-o", target)
    assert code == 2 and one_line(err, "-o", "the store", "would destroy it") and store.read_bytes() == before


def test_a_run_report_that_is_its_new_store_or_spec_is_refused_before_anything_runs(cli, tmp_path):
    store = tmp_path / "fresh.sqlite"
    code, _, err = cli("run", *SMALL[:-1], "--store", store, "--report", store)
    assert code == 2 and one_line(err, "--report", "the store") and not store.exists()
    spec = tmp_path / "sweep.toml"
    spec.write_text('batch_sizes = "4"\n')
    code, _, err = cli("run", spec, *SMALL[:-1], "--store", tmp_path / "t.sqlite", "--report", spec)
    assert code == 2 and one_line(err, "--report", "the spec file") and spec.read_text() == 'batch_sizes = "4"\n'


def test_replacing_an_existing_output_says_so(cli, tmp_path):
    store, target = _stored(cli, tmp_path), tmp_path / "points.csv"
    target.write_text("old")
    code, _, err = cli("export", "--store", store, "-o", target)
    assert code == 0 and f"replaced the existing {target}" in err and target.read_text().startswith("run_id,")


def test_an_output_that_cannot_be_written_leaves_the_old_file_and_no_part(cli, tmp_path, monkeypatch):
    """A full disk, faked: the flush to disk fails. The old file stays, no temporary is left."""
    import errno

    store, target = _stored(cli, tmp_path), tmp_path / "points.csv"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = cli("export", "--store", store, "-o", target)
    assert code == 3 and one_line(err, "-o", "No space left on device", "nothing was written")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".points")) == []


def _kill_while_writing(store, target, command, seed):
    """Start `command` writing `target`, SIGKILL it at a random moment: `target` must be the
    old file or a whole new one."""
    target.write_text("old")
    proc = subprocess.Popen([sys.executable, "-m", "harness", *command, "--store", str(store), "-o", str(target)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(0.2, 2.5))
    proc.kill()
    proc.wait()
    text = target.read_text()
    return text == "old" or text.rstrip().endswith(("</html>", "]")) or text.count("\n") > 1


@pytest.mark.parametrize("seed", [0, 1, *(pytest.param(seed, marks=pytest.mark.long) for seed in range(2, 10))])
def test_a_kill_while_writing_leaves_the_old_file_or_the_whole_new_one(tmp_path, seed):
    store = tmp_path / "s.sqlite"
    subprocess.run([sys.executable, "-m", "harness", "run", "--devices", "cpu", "--dataset-sizes", "200", "--batch-sizes", "1,2", "--steps", "3000",
                    "--burn-in-steps", "1500", "--check-every", "1000", "--quiet", "--no-report", "--store", str(store)], cwd=ROOT, check=True,
                   capture_output=True)
    with sqlite3.connect(store) as conn:
        rows = conn.execute("select count(*) from steps").fetchone()[0]
    for command, name in ((["export", "--table", "steps", "--format", "json"], "steps.json"), (["report"], "r.html")):
        target = tmp_path / name
        assert _kill_while_writing(store, target, command, seed)
        if name == "steps.json" and target.read_text() != "old":
            import json

            assert len(json.loads(target.read_text())) == rows


def test_sys_exit_in_a_plug_in_is_the_points_error_not_a_success(cli, tmp_path):
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", *SMALL, "--model", plugin("exits_in_forward"), "--store", store)
    assert code == 1 and "SystemExit: 0" in err and "every point failed" in err
    with sqlite3.connect(store) as conn:
        assert conn.execute("select status from points").fetchall() == [("error",), ("error",)]
        assert conn.execute("select finished_at from runs").fetchone()[0] is not None


def test_a_store_locked_for_a_while_is_waited_for(cli, tmp_path):
    import threading

    store = _stored(cli, tmp_path)
    held = threading.Event()

    def hold():
        conn = sqlite3.connect(store)
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(3)
        conn.commit()
        conn.close()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    code, _, err = cli("run", *SMALL, "--store", store)
    holder.join()
    assert code == 0, err
    with sqlite3.connect(store) as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 2


def test_a_store_locked_too_long_names_the_point_that_is_lost(cli, tmp_path, monkeypatch):
    from harness.drivers import sweep
    from harness.store import sqlite as store_module

    store = _stored(cli, tmp_path)
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(sweep, "COMMIT_PATIENCE_S", 0.5)
    original = Store.add_point

    def locked_add(self, run_id, result):
        blocker = sqlite3.connect(self.path)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("PRAGMA busy_timeout = 200")
            original(self, run_id, result)
        finally:
            blocker.rollback()
            blocker.close()

    monkeypatch.setattr(Store, "add_point", locked_add)
    code, _, err = cli("run", *SMALL, "--store", store)
    assert code == 3 and "trained but could not be stored, so it is lost" in err and "another process holds its write lock" in err
    assert "damaged" not in err


def test_json_outputs_are_strict_and_an_interrupted_run_is_unfinished(cli, tmp_path):
    import json

    store = _stored(cli, tmp_path)
    with sqlite3.connect(store) as conn:
        conn.execute("update runs set finished_at = NULL")
    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))

    code, out, _ = cli("runs", "--store", store, "--json")
    assert code == 0 and strict(out)[0]["finished_at"] is None
    code, out, _ = cli("runs", "--store", store)
    assert "(unfinished)" in out
    code, out, _ = cli("analyze", "--store", store, "--json")
    assert code == 0 and isinstance(strict(out), list)


def test_the_resume_lock_holds_through_a_symlink(cli, tmp_path):
    from harness.drivers.plan import plan_flags

    store = _stored(cli, tmp_path)
    link = tmp_path / "link.sqlite"
    link.symlink_to(store)
    the_plan = plan_flags(devices="cpu", dataset="blobs", dataset_sizes=100, batch_sizes="4,8", steps=10)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from harness.store.sqlite import Store\n"
                               f"with Store({str(store)!r}) as s, s.sweep_lock({the_plan.sweep_hash!r}):\n"
                               "    print('held', flush=True); time.sleep(60)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # another process resumes this sweep through the real path
        code, _, err = cli("run", *SMALL, "--store", link, "--resume")
    finally:
        holder.kill()
        holder.wait()
    assert code == 3 and one_line(err, "--resume", "already running this sweep")


@pytest.mark.parametrize("flag, value", [("--seed", "99999999999999999999"), ("--steps", "99999999999999999999"), ("--repeats", "100000000"),
                                         ("--lr", "1e308"), ("--hidden", "100000000"), ("--hidden", "1000000,1000000"),
                                         ("--epochs", "100000000"), ("--lr-grid", "0.1,1e39")])
def test_numbers_past_what_can_run_are_refused_in_the_plan(cli, tmp_path, flag, value):
    code, _, err = cli("run", "--devices", "cpu", flag, value, "--store", tmp_path / "s.sqlite")
    assert code == 2 and one_line(err, flag) and not (tmp_path / "s.sqlite").exists()


def _create_many(folder, barrier, failures):
    for i in range(30):
        barrier.wait()
        try:
            Store(folder / f"s{i}.sqlite").close()
        except Exception as exc:  # counted: the test wants none
            failures.put(f"{type(exc).__name__}: {exc}")


def test_three_processes_creating_one_new_store_never_fail(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier, failures = context.Barrier(3), context.Queue()
    workers = [context.Process(target=_create_many, args=(tmp_path, barrier, failures)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    seen = []
    while not failures.empty():
        seen.append(failures.get())
    assert seen == [] and all(w.exitcode == 0 for w in workers)


def test_a_plug_in_that_moves_the_process_or_its_threads_is_contained(cli, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("BATCHBENCH_TEST_ELSEWHERE", str(elsewhere))
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("run", *SMALL[:-1], "--model", plugin("meddles"), "--store", "s.sqlite", "--report", "r.html")
    assert code == 0, err
    assert os.getcwd() == str(tmp_path) and (tmp_path / "r.html").exists() and not (elsewhere / "r.html").exists()
    with sqlite3.connect(tmp_path / "s.sqlite") as conn:
        assert all("threads_changed" in (f or "") for (f,) in conn.execute("select flags from points"))


def test_a_hanging_plug_in_times_out_and_the_sweep_goes_on(cli, tmp_path):
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", *SMALL, "--model", plugin("hangs_at_b8"), "--point-timeout", "2", "--store", store)
    assert code == 0 and "TimedOut: timed out after 2 s" in err
    with sqlite3.connect(store) as conn:
        assert dict(conn.execute("select batch_size, status from points").fetchall()) == {4: "ok", 8: "error"}


def _has_run(store) -> bool:
    try:
        with sqlite3.connect(store, timeout=1) as conn:
            return conn.execute("select count(*) from runs").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def test_ctrl_c_records_the_point_in_flight_as_interrupted_and_resume_reruns_it(tmp_path):
    store = tmp_path / "s.sqlite"
    args = [sys.executable, "-m", "harness", "run", "--model", plugin("slow"), "--devices", "cpu", "--dataset-sizes", "64", "--batch-sizes", "1",
            "--steps", "400", "--quiet", "--no-report", "--store", str(store)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60  # the run is in the store: its point trains (on a loaded machine the imports alone took 4 s)
    while time.monotonic() < deadline and proc.poll() is None and not _has_run(store):
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "the point in flight as interrupted" in err
    with sqlite3.connect(store) as conn:
        assert conn.execute("select status from points").fetchall() == [("interrupted",)]
    resumed = subprocess.run([*args, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    with sqlite3.connect(store) as conn:
        assert conn.execute("select status, steps from points").fetchall() == [("ok", 400)]


@pytest.mark.parametrize("args, words", [
    (["overhead", "--resume"], "--resume is a flag of another command"),
    (["run", *SMALL, "--model", plugin("float_loss")], "returns a float, not a scalar tensor"),
])
def test_messages_say_what_is_wrong(cli, tmp_path, args, words):
    code, _, err = cli(*args, "--store", tmp_path / "s.sqlite")
    assert code == 2 and one_line(err) and words in err, err


def test_a_header_only_csv_and_a_folder_store_are_named_for_what_they_are(cli, tmp_path):
    csv = tmp_path / "empty.csv"
    csv.write_text("a,b,y\n")
    code, _, err = cli("run", "--devices", "cpu", "--dataset", csv, "--store", tmp_path / "s.sqlite")
    assert code == 2 and one_line(err, "--dataset", "no rows")
    code, _, err = cli("run", *SMALL, "--store", tmp_path)
    assert code == 2 and one_line(err, "--store", "is a folder")


def test_a_report_that_fails_after_the_sweep_is_one_line_naming_what_was_kept(cli, tmp_path, monkeypatch):
    """Too few file handles for the plots, say: the points are stored; the report is one line."""
    from harness import report

    def broken(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(report, "render", broken)
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", *SMALL[:-1], "--store", store, "--report", tmp_path / "r.html")
    assert code == 3 and "Traceback" not in err and "is stored in" in err and "Too many open files" in err and f"batchbench report --store {store} --run" in err and "--run " in err
    with sqlite3.connect(store) as conn:
        assert conn.execute("select count(*) from points where status = 'ok'").fetchone()[0] == 2
