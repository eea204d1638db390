"""SIGTERM and SIGHUP are stops like Ctrl-C (Slurm, Kubernetes and Ray preempt with SIGTERM): the
point in flight is stored ``interrupted``, children end, ``--resume`` finishes with each point
once; and a plug-in that exits or interrupts at plan time is one line, not a silent exit."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ROOT, plugin

SLOW = ["--model", plugin("slow"), "--devices", "cpu", "--dataset-sizes", "64", "--quiet", "--no-report"]


def _started(store, proc, timeout: float = 60.0) -> None:
    """Wait until the run is in the store (its points are about to train)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(store, timeout=1) as conn:
                if conn.execute("select count(*) from runs").fetchone()[0]:
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.05)


def test_sigterm_stores_the_point_in_flight_as_interrupted_and_resume_reruns_it(tmp_path):
    store = tmp_path / "s.sqlite"
    args = [sys.executable, "-m", "harness", "run", *SLOW, "--batch-sizes", "1", "--steps", "400", "--store", str(store)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _started(store, proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "stopped by SIGTERM" in err and "the point in flight as interrupted" in err and "Traceback" not in err, err
    with sqlite3.connect(store) as conn:
        assert conn.execute("select status from points").fetchall() == [("interrupted",)]
    resumed = subprocess.run([*args, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    with sqlite3.connect(store) as conn:
        assert conn.execute("select status, steps from points").fetchall() == [("ok", 400)]


def _stop_and_resume(tmp_path, tries: int, seed: int) -> None:
    """SIGTERM or SIGHUP at random moments: each stop exits 128 + the signal, never doubles a
    point, and ``--resume`` finishes the sweep with each point once."""
    rng = random.Random(seed)
    store = tmp_path / "s.sqlite"
    args = [sys.executable, "-m", "harness", "run", *SLOW, "--batch-sizes", "1,2,4,8,16,32,full", "--steps", "15", "--store", str(store), "--resume"]
    for _ in range(tries):
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.5, 4.0))
        signum = rng.choice([signal.SIGTERM, signal.SIGTERM, signal.SIGHUP])
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 128 + signum) and "Traceback" not in err, err
    final = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    with sqlite3.connect(store) as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 1
        rows = conn.execute("select point_id, status from points").fetchall()
    assert len(rows) == 7 and len({r[0] for r in rows}) == 7 and {r[1] for r in rows} == {"ok"}


def test_stops_at_random_moments_then_resume_leave_every_point_once(tmp_path):
    _stop_and_resume(tmp_path, tries=2, seed=3)


@pytest.mark.long
def test_many_stops_at_random_moments(tmp_path):
    """10 tries (BATCHBENCH_LONG=1); CI runs the 2-try test above."""
    _stop_and_resume(tmp_path, tries=10, seed=4)


def test_sigterm_of_a_runs_parent_ends_its_child_and_nothing_commits_after(tmp_path):
    """``run --runs 3`` starts a process a run: SIGTERM of the parent stops the child the same
    way (its point in flight stored interrupted) and waits for it; nothing commits later."""
    import psutil

    store = tmp_path / "s.sqlite"
    args = [sys.executable, "-m", "harness", "run", *SLOW, "--batch-sizes", "1", "--steps", "400", "--runs", "3", "--store", str(store)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _started(store, proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "stopped by SIGTERM" in err, err
    assert children and not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    with sqlite3.connect(store) as conn:
        seen = conn.execute("select count(*), group_concat(status) from points").fetchone()
    time.sleep(2.0)
    with sqlite3.connect(store) as conn:
        assert conn.execute("select count(*), group_concat(status) from points").fetchone() == seen == (1, "interrupted")


@pytest.mark.parametrize("body, words", [
    ("import sys\nsys.exit(0)\n", "loading"),
    ("def make(n_features, n_outputs):\n    import sys\n    sys.exit(0)\n", "called sys.exit(0)"),
    ("def make(n_features, n_outputs):\n    raise GeneratorExit\n", "GeneratorExit"),
    ("def make(n_features, n_outputs):\n    raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
])
def test_a_plug_in_that_exits_or_interrupts_at_plan_time_is_one_line(cli, tmp_path, body, words):
    """``sys.exit(0)`` in a model factory or at import ran nothing and exited 0 silently; a
    plug-in's own KeyboardInterrupt claimed "finished points are stored"."""
    path = tmp_path / "exits.py"
    path.write_text(body)
    code, _, err = cli("run", "--devices", "cpu", "--dataset-sizes", "100", "--quiet", "--no-report", "--model", f"{path}:make",
                       "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1 and "--model" in err and words in err, err
    assert not (tmp_path / "s.sqlite").exists()


def test_a_resume_does_not_join_a_run_of_the_same_sweep_in_flight(cli, tmp_path):
    """``run --resume`` while a plain ``run`` of the same sweep trains into the store retrained a
    point that was already there, then failed on a unique constraint (exit 3): every writer takes
    the sweep's lock (a new run shares it with other new runs; a resume holds it alone)."""
    store = tmp_path / "s.sqlite"
    args = [*SLOW, "--batch-sizes", "1", "--steps", "400", "--store", str(store)]
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _started(store, proc)
        code, _, err = cli("run", *args, "--resume")
        assert code == 3 and err.count("\n") == 1 and "another batchbench process is already running this sweep" in err, err
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    with sqlite3.connect(store) as conn:
        assert conn.execute("select count(*) from points").fetchone()[0] == 1


def test_sigterm_while_an_export_writes_leaves_no_partial_file(cli, tmp_path, monkeypatch):
    """An export stopped mid-write left a 56 MB ``.partial``: the stop takes the temporary away,
    the target stays as it was, and the exit code is SIGTERM's."""
    from harness import outputs
    from harness.errors import Stopped

    store = tmp_path / "s.sqlite"
    assert cli("run", "--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "100", "--batch-sizes", "4", "--steps", "10",
               "--quiet", "--no-report", "--store", store)[0] == 0

    def stopped(fd):
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(outputs.os, "fsync", stopped)
    code, _, err = cli("export", "--store", store, "--table", "steps", "-o", tmp_path / "steps.csv")
    assert code == 143 and "stopped by SIGTERM" in err, err
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("s.sqlite")) == []


def test_a_signal_ignored_as_nohup_ignores_it_stays_ignored(tmp_path):
    """``nohup batchbench run ... &``: logging out (SIGHUP) must not stop the sweep; batchbench's
    stop handlers leave a signal the caller ignores ignored."""
    store = tmp_path / "s.sqlite"
    args = [sys.executable, "-m", "harness", "run", *SLOW, "--batch-sizes", "1", "--steps", "400", "--store", str(store)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    _started(store, proc)
    proc.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "stopped by SIGTERM" in err, err
