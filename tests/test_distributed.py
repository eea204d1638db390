"""Data-parallel points on CPU with gloo: two ranks of one thread each."""

import json
import time

import numpy as np

from conftest import plugin
from harness.drivers.plan import plan_flags
from harness.store.sqlite import Store
from harness.drivers.sweep import run_sweep

COMMON = {"dataset": "blobs", "dataset_sizes": "400", "steps": "40", "check_every": "10", "devices": "cpu", "threads": "1", "sample_interval": "0"}


def _sweep(tmp_path, **flags):
    with Store(tmp_path / "s.sqlite") as store:
        run_id = run_sweep(plan_flags(**{**COMMON, **flags}), store, progress=False)
        return store.load("points", [run_id]), store.load("checks", [run_id]), store.load("steps", [run_id])


def test_two_ranks_follow_the_single_process_curve(tmp_path):
    points, checks, steps = _sweep(tmp_path, batch_sizes="1,8", world_sizes="1,2")
    assert len(points) == 4 and points["point_id"].is_unique  # each point reaches the store once
    by_world = {w: p for w, p in points[points["batch_size"] == 8].groupby("world_size")}
    one, two = by_world[1].iloc[0], by_world[2].iloc[0]
    assert two["status"] == "ok" and two["backend"] == "gloo" and two["per_rank_batch_size"] == 4 and two["global_batch_size"] == 8
    curve = {pid: c.sort_values("step")["eval_loss"].to_numpy() for pid, c in checks.groupby("point_id")}
    np.testing.assert_allclose(curve[two["point_id"]], curve[one["point_id"]], rtol=1e-5, atol=1e-6)
    losses = {pid: s.set_index("step")["batch_loss"] for pid, s in steps.groupby("point_id")}
    common = losses[two["point_id"]].index.intersection(losses[one["point_id"]].index)  # the steps both timed
    assert len(common) >= 5
    np.testing.assert_allclose(losses[two["point_id"]][common], losses[one["point_id"]][common], rtol=1e-5, atol=1e-6)
    train = {pid: c.sort_values("step")["train_loss"].to_numpy() for pid, c in checks.groupby("point_id")}
    np.testing.assert_allclose(train[two["point_id"]][1:], train[one["point_id"]][1:], rtol=1e-5, atol=1e-6)
    assert two["comm_s"] >= 0 and two["derivative_s_max_rank"] >= two["derivative_s"]
    skipped = points[(points["batch_size"] == 1) & (points["world_size"] == 2)].iloc[0]
    assert skipped["status"] == "skipped" and "does not split" in skipped["error"]


def test_a_failing_rank_ends_the_point_as_error_without_hanging(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHBENCH_DIST_TIMEOUT_S", "30")
    start = time.monotonic()
    points, _, _ = _sweep(tmp_path, batch_sizes="8", world_sizes="2", model=plugin("fails_on_rank_1"))
    (point,) = points.to_dict("records")
    assert point["status"] == "error" and "rank 1" in point["error"] and "lost its data" in point["error"]
    assert time.monotonic() - start < 90


def test_weak_scaling_multiplies_the_global_batch_and_bad_combinations_are_errors(cli, tmp_path):
    (run,) = plan_flags(**COMMON, batch_sizes=8, world_sizes=2, scaling="weak").points
    assert run.batch_size == 16 and run.per_rank_batch_size == 8 and run.world_size == 2
    for args, field in ((["--nproc", "2", "--check-every", "1s"], "--check-every"), (["--nproc", "2", "--world-sizes", "1,2"], "--nproc"),
                        (["--world-sizes", "0"], "--world-sizes"), (["--scaling", "diagonal"], "--scaling")):
        code, _, err = cli("run", "--store", tmp_path / "x.sqlite", *args)
        assert code == 2 and field in err and len(err.strip().splitlines()) == 1, (args, err)


def test_an_external_torchrun_runs_the_sweep_with_rank_0_storing_and_relative_targets(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    store = tmp_path / "ext.sqlite"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "harness", "run",
               "--store", str(store), "--dataset-sizes", "400", "--batch-sizes", "8,64", "--steps", "30", "--devices", "cpu",
               "--sample-interval", "0", "--check-every", "5", "--target", "rel:0.5", "--quiet"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Store(store) as s:
        points, runs = s.load("points"), s.load("runs")
    assert len(runs) == 1 and len(points) == 2 and points["point_id"].is_unique
    assert set(points["world_size"]) == {2} and set(points["status"]) == {"ok"} and (points["comm_s"] >= 0).all()
    # the relative target is set once the sweep is in, by the same sweep as a plain process runs
    assert points["target_rel"].eq(0.5).all() and points["target_loss"].notna().all() and points["steps_to_target"].notna().all()
    assert runs.loc[0, "finished_at"] is not None


def test_the_report_gets_a_scaling_section(tmp_path):
    from harness import report

    points, checks, _ = _sweep(tmp_path, batch_sizes="4,8", world_sizes="1,2", scaling="weak")
    with Store(tmp_path / "s.sqlite") as store:
        html = report.render(report.load(store))
    assert "<h2>Data-parallel scaling</h2>" in html and "Data-parallel scaling.</b>" in html


def test_combined_rows_have_the_declared_columns_and_a_failure_keeps_no_timing():
    """``combine`` without processes: two ranks' payloads (from a real single-process point),
    ok, one failed, none reported. Every row has exactly the declared keys; a failure has the
    same nulls as a failed single-process point."""
    from harness.parallel.launch import _payload, combine
    from harness.store.schema import POINT_COLUMNS
    from harness.run.measurement import OK_ONLY
    from harness.drivers.sweep import run_flags

    (single,) = run_flags(**COMMON, batch_sizes=8)
    (point,) = plan_flags(**COMMON, batch_sizes=8, world_sizes=2).points
    payload = json.loads(json.dumps(_payload(0, single), default=float))  # as a rank writes it
    ok = combine(point, [{**payload, "rank": 1}, {**payload, "rank": 0}], 0, "")
    broken = {**payload, "status": "error", "error": "ValueError: rank 1 lost its data", "rank": 1}
    failed = combine(point, [{**payload, "rank": 0}, broken], 1, "")
    lost = combine(point, [], 1, "Traceback ...\nRuntimeError: killed")
    for result in (ok, failed, lost):
        assert list(result.row) == list(POINT_COLUMNS), result.status
    assert ok.status == "ok" and ok.row["derivative_s_max_rank"] == single.row["derivative_s"]
    assert [s["batch_loss"] for s in ok.steps] == [s["batch_loss"] for s in single.steps] and len(ok.steps) == len(single.steps)
    assert ok.row["final_eval_loss"] == single.row["final_eval_loss"] and ok.row["world_size"] == 2
    assert failed.steps == [] and failed.checks == single.checks
    assert failed.status == "error" and "rank 1" in failed.row["error"] and all(failed.row[c] is None for c in OK_ONLY)
    assert lost.status == "error" and "0 of 2 reported" in lost.row["error"] and lost.row["world_size"] == 2


def test_more_cuda_ranks_than_gpus_is_refused_before_anything_runs(cli, tmp_path, monkeypatch):
    from harness import env

    monkeypatch.setattr(env, "available_devices", lambda: ["cpu", "cuda:0"])  # a one-GPU machine
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", "--devices", "cuda", "--world-sizes", "1,2", "--dataset-sizes", "100", "--batch-sizes", "8", "--store", store)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--world-sizes: 2 ranks on cuda need 2 GPUs" in err and "has 1" in err
    assert not store.exists()
