"""`batchbench tune --resume` and `batchbench cbs --resume`: a tune or cbs stopped (SIGTERM) or
killed (SIGKILL) part way continues with the same flags and `--resume`, reads back every point
it stored instead of training it again, and gives the answer an uninterrupted run gives on the
same seeded workload: tune's batch size and rate; cbs's curve, ramp and verification losses.

The workloads are small: 8 Gaussian classes in 32 dimensions, an MLP 32-64-8, SGD. The tune
grid's three batch sizes differ in steps to the target by several times while their step times
hardly differ (a tiny model), and its first trial is its best rate (``--lr 2``), which no budget
can prune: so its answer does not depend on the timings of this machine.
"""

import contextlib
import io
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

TUNE = ["--dataset-sizes", "1024", "--devices", "cpu", "--hidden", "64", "--check-set", "train", "--lr-grid", "0.25,0.5,1,2,4,8", "--lr", "2",
        "--batch-sizes", "8,32,128", "--steps", "1000", "--target-loss", "0.3", "--no-report", "--json"]
CBS = ["--devices", "cpu", "--hidden", "64", "--check-set", "train", "--batch-sizes", "8", "--lr", "0.125", "--epochs", "3",
       "--checkpoints", "4", "--largest-batch", "256", "--branch-samples", "512", "--no-report", "--json"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The tune data (1024 samples, std 12 around the centres) and the cbs data (2048, std 10)."""
    from sklearn.datasets import make_blobs

    folder = tmp_path_factory.mktemp("data")
    paths = {}
    for name, n, std in (("tune", 1024, 12.0), ("cbs", 2048, 10.0)):
        X, y = make_blobs(n_samples=n, centers=8, n_features=32, cluster_std=std, random_state=0)
        paths[name] = folder / f"{name}.npz"
        np.savez(paths[name], X=((X - X.mean(0)) / X.std(0)).astype("float32"), y=y.astype("int64"))
    return paths


def batchbench(*args) -> tuple[int, str, str]:
    """``batchbench`` in this process: (exit code, stdout, stderr)."""
    from harness.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def flags(command: str, data, **values) -> list[str]:
    """The command's workload, with ``values`` in place of some flags' (``largest_batch=16``)."""
    args = [command, "--dataset", str(data[command]), *(TUNE if command == "tune" else CBS)]
    for name, value in values.items():
        args[args.index("--" + name.replace("_", "-")) + 1] = str(value)
    return args


@pytest.fixture(scope="module")
def whole(data, tmp_path_factory):
    """Each command's answer uninterrupted (its --json), and the store it wrote."""
    found = {}
    for command in ("tune", "cbs"):
        store = tmp_path_factory.mktemp(command) / "whole.sqlite"
        code, out, err = batchbench(*flags(command, data), "--store", store)
        assert code == 0, err
        found[command] = (json.loads(out), store)
    return found


def stored(store) -> int:
    """Points the store keeps for --resume (all but interrupted ones); 0 before it has any."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)) as conn:
            return conn.execute("SELECT count(*) FROM points WHERE status NOT IN ('interrupted', 'lost')").fetchone()[0]
    except sqlite3.Error:
        return 0


def stop_midway(args: list, store, sig: int, rng: random.Random, spread_s: float) -> tuple[int, str]:
    """``python -m harness ARGS`` in a process of its own, sent ``sig`` at a random moment up to
    ``spread_s`` after it stored its first point; (its exit code, its stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "harness", *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while stored(store) < 1 and proc.poll() is None:
            assert time.monotonic() < deadline, "no point stored in 120 s"
            time.sleep(0.02)
        time.sleep(rng.uniform(0, spread_s))
        if proc.poll() is None:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def untimed(value):
    """A --json answer without what depends on the clock (step times, training times) or on the store (the run id)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in ("run_id", "store") and not k.endswith("_s") and not k.startswith("train_s")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def points_of(store) -> list[tuple[str, str, str]]:
    with contextlib.closing(sqlite3.connect(store)) as conn:
        return conn.execute("SELECT run_id, point_id, status FROM points").fetchall()


def resume_and_check(command: str, data, whole, store, before: int) -> tuple[dict, str]:
    """``--resume`` on a stopped run: exit 0, the uninterrupted answer, one run with no point twice,
    and fewer points trained than the run holds."""
    code, out, err = batchbench(*flags(command, data), "--store", store, "--resume")
    assert code == 0, err
    answer, (expected, whole_store) = json.loads(out), whole[command]
    if command == "tune":
        keys = ("batch_size", "lr", "steps_to_target", "start_batch_size", "target")
        assert {k: answer[k] for k in keys} == {k: expected[k] for k in keys}, err
    else:
        assert untimed(answer) == untimed(expected), err
        assert len(points_of(store)) == len(points_of(whole_store))
    points = points_of(store)
    assert len({run for run, _, _ in points}) == 1 and len({p for _, p, _ in points}) == len(points)  # one run, each point once
    assert "interrupted" not in {status for _, _, status in points}
    assert 1 <= before and len(points) - before < len(points)  # the stored points were read back, not trained again
    return answer, err


@pytest.mark.parametrize("command", ["tune", "cbs"])
def test_a_run_stopped_by_sigterm_resumes_to_the_uninterrupted_answer(command, data, whole, tmp_path):
    store = tmp_path / "stopped.sqlite"
    code, err = stop_midway([*flags(command, data), "--store", store], store, signal.SIGTERM, random.Random(1), spread_s=2.0)
    before = stored(store)
    if code not in (0, -signal.SIGTERM):  # stopped before it finished (it nearly always is; -15: as the interpreter exited)
        assert code == 143 and err.strip().endswith("(rerun with --resume to continue)"), err
    _, said = resume_and_check(command, data, whole, store, before)
    assert f"resuming {command} run" in said or "already finished" in said


@pytest.mark.parametrize("command", ["tune", "cbs"])
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_answer(command, data, whole, tmp_path):
    store = tmp_path / "killed.sqlite"
    code, _ = stop_midway([*flags(command, data), "--store", store], store, signal.SIGKILL, random.Random(2), spread_s=2.0)
    assert code in (-signal.SIGKILL, 0)
    resume_and_check(command, data, whole, store, stored(store))


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("command", ["tune", "cbs"])
def test_ten_random_sigterms_each_resume_to_the_uninterrupted_answer(command, data, whole, tmp_path):
    rng = random.Random(10)
    for attempt in range(10):
        store = tmp_path / f"stopped{attempt}.sqlite"
        code, err = stop_midway([*flags(command, data), "--store", store], store, signal.SIGTERM, rng, spread_s=8.0)
        assert code in (143, 0, -signal.SIGTERM), err  # -15: it had finished, and the signal came as the interpreter exited
        resume_and_check(command, data, whole, store, stored(store))


def test_cbs_trains_again_unstored_the_runs_whose_snapshots_a_point_still_to_run_needs(data, whole, tmp_path):
    """A branch from the last checkpoint and the ramp after its first stage cut off: the base run
    is trained again up to that checkpoint, and the first stage for its end, neither stored;
    the answer is the uninterrupted one to the last bit (deterministic on the CPU)."""
    store = tmp_path / "cut.sqlite"
    expected, whole_store = whole["cbs"]
    shutil.copy(whole_store, store)
    with contextlib.closing(sqlite3.connect(store)) as conn, conn:
        last = conn.execute("SELECT max(start_sample) FROM points WHERE role = 'branch'").fetchone()[0]
        first = conn.execute("SELECT point_id FROM points WHERE role = 'branch' AND start_sample = ? ORDER BY rowid LIMIT 1", (last,)).fetchone()[0]
        cut = conn.execute("UPDATE points SET status = 'interrupted' WHERE point_id = ? OR (role = 'ramp' AND start_sample > 0)", (first,)).rowcount
        conn.execute("UPDATE runs SET finished_at = NULL")
    assert cut >= 3 and len(expected["ramp"]) >= 3  # a chain of stages: the second continues the first's end
    kept = stored(store)
    code, out, err = batchbench(*flags("cbs", data), "--store", store, "--resume")
    assert code == 0, err
    assert untimed(json.loads(out)) == untimed(expected)
    assert "not deterministic" not in err and f"{kept} points stored" in err
    assert stored(store) == kept + cut == len(points_of(whole_store))


def test_a_tune_with_a_relative_target_resumes_with_the_target_its_stored_pilot_fixed(data, tmp_path):
    """The pilot is read back, not run again: its stored target is the one every later trial (and
    its point id) holds; the repeats cut off run again and the answer is the uninterrupted one."""
    store = tmp_path / "rel.sqlite"
    args = [*flags("tune", data, batch_sizes=128, lr_grid="1,2", target_loss=1), "--store", store]
    args[args.index("--target-loss"):args.index("--target-loss") + 2] = ["--target", "rel:0.1"]
    code, out, err = batchbench(*args)
    assert code == 0, err
    expected = json.loads(out)
    with contextlib.closing(sqlite3.connect(store)) as conn, conn:
        cut = conn.execute("UPDATE points SET status = 'interrupted' WHERE repeat > 0").rowcount
        conn.execute("UPDATE runs SET finished_at = NULL")
    code, out, err = batchbench(*args, "--resume")
    assert code == 0 and cut == 2 and "of its own curve, stored)" in err, err
    answer = json.loads(out)
    assert {k: answer[k] for k in ("batch_size", "lr", "steps_to_target", "target", "trials")} == \
        {k: expected[k] for k in ("batch_size", "lr", "steps_to_target", "target", "trials")}


def test_resume_says_in_one_line_when_there_is_nothing_to_resume_and_on_a_store_left_without_tables(data, tmp_path):
    """A store another process left without tables (stopped as SQLite created it) takes --resume:
    nothing to resume, a new run; and a store this batchbench creates is never left so."""
    from harness.store.sqlite import Store

    store = tmp_path / "bare.sqlite"
    with contextlib.closing(sqlite3.connect(store)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    quick = [*flags("tune", data, batch_sizes=128, lr_grid=2), "--quiet"]
    code, out, err = batchbench(*quick, "--store", store, "--resume")
    assert code == 0 and f"batchbench: no earlier tune of these flags in {store}; starting a new run\n" in err, err
    assert json.loads(out)["batch_size"] == 128
    code, out, _ = batchbench("runs", "--store", store, "--json")
    assert code == 0 and len(json.loads(out)) == 1

    fresh = tmp_path / "new.sqlite"

    def stopped(self):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Store, "_create", stopped)
        with pytest.raises(KeyboardInterrupt):
            Store(fresh)
    assert list(tmp_path.glob("*new.sqlite*")) == []  # nothing left: no store without tables, no part-made file


def test_cbs_resume_with_other_settings_starts_a_new_run(data, tmp_path):
    store = tmp_path / "s.sqlite"
    small = [*flags("cbs", data, epochs=1, checkpoints=2, largest_batch=16), "--quiet", "--store", store]
    code, _, err = batchbench(*small)
    assert code == 0, err
    code, _, err = batchbench(*small, "--tolerance", "0.1", "--resume")
    assert code == 0 and "ran with another --tolerance; starting a new run" in err, err
    with contextlib.closing(sqlite3.connect(store)) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2


@pytest.mark.parametrize("command", ["tune", "cbs"])
def test_a_second_process_resuming_the_same_run_is_refused_in_one_line(command, data, tmp_path):
    store = tmp_path / "s.sqlite"
    args = [*flags(command, data), "--store", store, "--resume"]
    holder = subprocess.Popen([sys.executable, "-m", "harness", *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while stored(store) < 1:
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        holder.send_signal(signal.SIGSTOP)  # paused mid-run, holding the sweep's lock
        code, _, err = batchbench(*args)
    finally:
        holder.kill()
        holder.wait()
    assert code == 3 and err.count("\n") == 1 and "--resume: another batchbench process is already running this sweep" in err, err
