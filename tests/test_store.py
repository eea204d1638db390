import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import ROOT, plugin
from harness.drivers.plan import plan_flags
from harness.store.schema import TABLES
from harness.run.engine import run_point
from harness.store.sqlite import Store
from harness.drivers.sweep import run_sweep

FAST = {"dataset_sizes": 100, "batch_sizes": "2,8,full", "steps": 20, "devices": "cpu"}


def test_sweep_stores_contract_columns_and_environment(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        run_id = run_sweep(plan_flags(**FAST), store, progress=False)
        points, checks, steps = (store.load(t, [run_id]) for t in ("points", "checks", "steps"))
        runs = store.load("runs")
    with sqlite3.connect(tmp_path / "s.sqlite") as conn:  # the file itself, not what load() selects
        for table, columns in TABLES.items():
            assert [row[1] for row in conn.execute(f"PRAGMA table_info({table})")] == list(columns), table
    assert sorted(points["batch_size"]) == [2, 8, 80] and set(points["status"]) == {"ok"}
    assert len(steps) == (points["burn_in_steps"] + points["timed_steps"]).sum() and checks.groupby("point_id").size().min() >= 2
    env = json.loads(runs.loc[0, "env_json"])
    assert env["torch_version"] and env["threads"] == 1 and "cpu" in env["devices"] and env["cpu_model"]
    assert runs.loc[0, "finished_at"] is not None
    # the noise scale is opt-in; the default target (rel:0.1) fills steps-to-target where reached
    assert points["noise_scale"].isna().all() and (points["target_rel"] == 0.1).all() and points["steps_to_target"].notna().any()


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    flags = {**FAST, "batch_sizes": "32,full", "model": plugin("oom_above_64")}
    with Store(tmp_path / "s.sqlite") as store:
        run_id = run_sweep(plan_flags(**flags), store, progress=False)
        points = store.load("points", [run_id]).sort_values("batch_size")
    assert list(points["status"]) == ["ok", "oom"]


def test_resume_runs_only_missing_points_and_the_database_refuses_duplicates(tmp_path):
    the_plan = plan_flags(**FAST)
    spec = the_plan.spec
    with Store(tmp_path / "s.sqlite") as store:
        run_id, _ = store.start_run(spec.to_json(), the_plan.sweep_hash, {}, resume=False)
        first = the_plan.points[0]
        store.add_point(run_id, run_point(first, the_plan.workload(first)))
        ran = []
        resumed = run_sweep(the_plan, store, resume=True, progress=False, on_point=lambda point, _: ran.append(point.point_id))
        assert resumed == run_id and first.point_id not in ran and len(ran) == len(the_plan.points) - 1
        with pytest.raises(sqlite3.IntegrityError):
            store.add_point(run_id, run_point(first, the_plan.workload(first)))
        fresh = run_sweep(the_plan, store, resume=False, progress=False)
        assert fresh != run_id


def test_sigkill_midway_then_resume_gives_every_point_exactly_once(tmp_path):
    store_path = tmp_path / "s.sqlite"
    args = [sys.executable, "-m", "harness", "run", "--model", plugin("slow"), "--dataset-sizes", "64",
            "--batch-sizes", "1,2,4,8,16,32,full", "--steps", "15", "--devices", "cpu", "--quiet", "--store", str(store_path)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if store_path.exists():
            try:
                with sqlite3.connect(store_path, timeout=1) as conn:
                    done = conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(store_path) as conn:
        killed_at = conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    assert 2 <= killed_at < 7
    resumed = subprocess.run(args + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    with sqlite3.connect(store_path) as conn:
        rows = conn.execute("SELECT run_id, point_id, batch_size FROM points").fetchall()
        runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert runs == 1
    assert len(rows) == 7 and len({r[1] for r in rows}) == 7
    assert sorted(r[2] for r in rows) == [1, 2, 4, 8, 16, 32, 51]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_formats(cli, tmp_path, fmt):
    store = tmp_path / "s.sqlite"
    assert cli("run", "--dataset-sizes", "100", "--batch-sizes", "4,8", "--steps", "10", "--devices", "cpu", "--quiet", "--store", store)[0] == 0
    out = tmp_path / f"points.{fmt}"
    code, _, err = cli("export", "--store", store, "--table", "points", "--format", fmt, "-o", out)
    assert code == 0, err
    frame = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[fmt](out)
    assert sorted(frame["batch_size"]) == [4, 8] and "derivative_s" in frame.columns
    code, stdout, _ = cli("export", "--store", store, "--table", "steps")
    assert code == 0 and stdout.splitlines()[0].startswith("run_id,point_id,step,burn_in,data_s")
    assert len(stdout.splitlines()) == 1 + int((frame["burn_in_steps"] + frame["timed_steps"]).sum())


def test_run_prints_the_table(cli, tmp_path):
    code, out, err = cli("run", "--dataset-sizes", "100", "--batch-sizes", "4,full", "--steps", "10", "--devices", "cpu", "--store", tmp_path / "s.sqlite", "--no-report")
    assert code == 0
    header = out.splitlines()[0]
    for title in ("size", "batch", "device", "samples/s", "data ms", "deriv ms", "update ms", "eval loss"):
        assert title in header
    lines = out.splitlines()
    assert len(lines) == 2 + 2 + 2 and lines[4] == "" and "2 points" in err  # header, 2 points, a blank line, the answer
    assert lines[5].startswith("digits · 100 samples · cpu: train with batch size ")


def test_shards_and_merge_reproduce_the_unsharded_sweep_exactly_once(tmp_path, cli):
    common = ["--dataset-sizes", "100,200", "--batch-sizes", "2,8,full", "--steps", "10", "--repeats", "2", "--devices", "cpu", "--quiet", "--no-report"]
    assert cli("run", *common, "--store", tmp_path / "all.sqlite")[0] == 0
    for i in range(3):
        assert cli("run", *common, "--shard", f"{i}/3", "--store", tmp_path / f"s{i}.sqlite")[0] == 0
    stores = [tmp_path / f"s{i}.sqlite" for i in range(3)]
    code, _, err = cli("merge", *stores, stores[0], "-o", tmp_path / "merged.sqlite")  # one shard twice: no duplicates
    assert code == 0, err
    with Store(tmp_path / "all.sqlite") as s:
        expected = sorted(s.load("points")["point_id"])
    with Store(tmp_path / "merged.sqlite") as s:
        points, runs, steps = s.load("points"), s.load("runs"), s.load("steps")
    assert sorted(points["point_id"]) == expected and len(expected) == 2 * 3 * 2
    assert len(runs) == 1 and points["run_id"].nunique() == 1
    assert len(steps) == (points["burn_in_steps"] + points["timed_steps"]).sum()
    shard_sizes = []
    for store in stores:
        with Store(store) as s:
            shard_sizes.append(len(s.load("points")))
    assert shard_sizes == [4, 4, 4]


@pytest.mark.parametrize("shard", ["3/3", "a/b", "1/0"])
def test_bad_shard_is_a_one_line_error(cli, tmp_path, shard):
    code, _, err = cli("run", "--shard", shard, "--store", tmp_path / "s.sqlite")
    assert code == 2 and "--shard" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "s.sqlite").exists()


def test_a_store_from_batchbench_0_1_is_migrated_and_resumes(tmp_path):
    """0.1 named the burn-in ``warmup_steps`` (points) and ``warmup`` (steps). Opening such a
    store renames the columns in place; its rows and their values stay, and the same spec
    resumes the old run (point ids did not change with the rename)."""
    path = tmp_path / "old.sqlite"
    the_plan = plan_flags(**FAST)
    with Store(path) as store:
        run_id, _ = store.start_run(the_plan.spec.to_json(), the_plan.old_hashes[0], {}, resume=False)
        first = the_plan.points[0]
        store.add_point(run_id, run_point(first, the_plan.workload(first)))
    with sqlite3.connect(path) as conn:  # turn it into a 0.1 store
        conn.execute('ALTER TABLE points RENAME COLUMN "burn_in_steps" TO "warmup_steps"')
        conn.execute('ALTER TABLE steps RENAME COLUMN "burn_in" TO "warmup"')
    with Store(path) as store:
        points, steps = store.load("points"), store.load("steps")
        assert list(points["burn_in_steps"]) == [first.burn_in_steps] and steps["burn_in"].sum() == first.burn_in_steps
        assert run_sweep(the_plan, store, resume=True, progress=False) == run_id
        assert len(store.load("points")) == len(the_plan.points)
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(points)")]
    assert "warmup_steps" not in columns and "burn_in_steps" in columns


def test_point_ids_and_sweep_names_of_0_1_still_match():
    """Ids computed by batchbench 0.1 for this spec: stores written then keep resuming."""
    the_plan = plan_flags(devices="cpu", dataset="blobs", target="none", dataset_sizes=100, batch_sizes="4,8", steps=5)  # 0.1's defaults
    assert [p.point_id for p in the_plan.points] == ["f98d69dcb6c968b0", "8ab980a0f817b944"]
    assert the_plan.old_hashes == ("9a37764d73a4802c",)


def test_runs_lists_every_run_with_its_points(cli, tmp_path):
    store = tmp_path / "s.sqlite"
    small = ["--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "100", "--steps", "10", "--quiet", "--no-report", "--store", store]
    assert cli("run", *small, "--batch-sizes", "4,8")[0] == 0
    assert cli("run", *small, "--batch-sizes", "16")[0] == 0
    code, out, _ = cli("runs", "--store", store, "--json")
    listed = json.loads(out)
    assert code == 0 and [r["batch_sizes"] for r in listed] == [[4, 8], [16]] and [r["ok"] for r in listed] == [2, 1]
    assert all(r["kind"] == "sweep" and r["dataset"] == "blobs" and r["finished_at"] for r in listed)
    code, text, _ = cli("runs", "--store", store)
    assert code == 0 and all(r["run_id"] in text for r in listed) and "2/2 ok" in text


def test_a_long_point_shows_a_bar_of_its_steps(tmp_path, monkeypatch, capsys):
    """Inside a point that runs longer than StepBar.DELAY_S a bar counts its steps (0 s here)."""
    from harness.drivers import executors, sweep

    monkeypatch.setattr(executors.StepBar, "DELAY_S", 0.0)
    with Store(tmp_path / "s.sqlite") as store:
        sweep.run_sweep(plan_flags(**{**FAST, "batch_sizes": "8", "steps": 60, "check_every": 20}), store, progress=True)
    err = capsys.readouterr().err
    assert "B=8" in err and "/60 [" in err and "step/s" in err
