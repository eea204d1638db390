"""`batchbench cbs`: branches continue a run exactly, and the curve, ramp and verification come
out of the stored points (a small version of the reference workload)."""

import json
import sqlite3

import numpy as np
import pytest

from harness.config.values import CheckEvery
from harness.drivers.plan import plan_flags
from harness.run.engine import run_point


def test_a_k1_branch_reproduces_the_base_run_bit_for_bit():
    """From the snapshot at step 20, a point at the same batch and rate continues exactly as the
    base run did: the same check losses at steps 30 and 40, the same batch losses."""
    the_plan = plan_flags(dataset_sizes=400, batch_sizes=16, steps=40, devices="cpu", check_every=10, lr=0.2, momentum=0.9,
                          optimizer="sgd", sample_interval=0, burn_in_steps=0)
    base = the_plan.points[0]
    snapshots = []
    whole = run_point(base, the_plan.workload(base), snapshots=snapshots)
    at20 = next(s for s in snapshots if s.steps == 20)
    assert at20.samples == 20 * 16
    branch = base.__class__(**{**base.__dict__, "steps": 20, "start_sample": at20.samples, "role": "branch", "branch_factor": 1})
    rest = run_point(branch, the_plan.workload(branch), start=at20)
    base_checks = {c["step"]: c["eval_loss"] for c in whole.checks}
    assert [c["eval_loss"] for c in rest.checks if c["step"] > 0] == [base_checks[30], base_checks[40]]
    base_losses = {r["step"]: r["batch_loss"] for r in whole.steps if r["batch_loss"] is not None}
    for row in rest.steps:
        if row["batch_loss"] is not None and row["step"] + 20 in base_losses:
            assert row["batch_loss"] == base_losses[row["step"] + 20]


@pytest.fixture(scope="module")
def blobs32(tmp_path_factory):
    """The reference workload: 8 Gaussian classes in 32 dimensions (std 10 around make_blobs'
    centres), standardised, 4096 samples."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(4096, centers=8, n_features=32, cluster_std=10, random_state=0)
    path = tmp_path_factory.mktemp("data") / "blobs32.npz"
    np.savez(path, X=((X - X.mean(0)) / X.std(0)).astype(np.float32), y=y)
    return path


def test_cbs_measures_a_rising_curve_and_a_ramp_that_beats_constant_b0(cli, tmp_path, blobs32):
    store = tmp_path / "c.sqlite"
    code, out, err = cli("cbs", "--dataset", blobs32, "--devices", "cpu", "--hidden", "64", "--check-set", "train", "--batch-sizes", "8",
                         "--lr", "0.125", "--epochs", "6", "--checkpoints", "6", "--largest-batch", "1024", "--json", "--store", store,
                         "--report", tmp_path / "cbs.html")
    assert code == 0, err
    answer = json.loads(out)
    curve = [c["critical_batch_size"] for c in answer["curve"]]
    assert curve[-1] >= 2 * curve[0] and answer["rank_correlation"] >= 0.7
    assert all(c["samples"] > 0 for c in answer["curve"]) and answer["noise_scale"] and answer["branch_compute_share"] > 0
    runs = {v["name"]: v for v in answer["verification"]}
    ramp, b0 = runs["ramp"], runs["constant B0"]
    assert answer["ramp"][0]["batch_size"] == 8 and len(answer["ramp"]) > 1
    # the full workload (30 epochs, docs/measurement.md) holds the ramp within 1% of constant B0; a 6-epoch base run, within 5%
    assert ramp["final_loss"] <= 1.05 * b0["final_loss"] and ramp["steps"] <= 0.7 * b0["steps"]
    with sqlite3.connect(store) as conn:
        roles = dict(conn.execute("select role, count(*) from points group by role").fetchall())
    assert roles["base"] == 1 and roles["branch"] > 10 and roles["ramp"] == len(answer["ramp"])
    page = (tmp_path / "cbs.html").read_text()
    assert "Critical batch size through training" in page and "steps to the base run" in page


@pytest.mark.parametrize("flags, field", [(["--batch-sizes", "8,16"], "--batch-sizes"), (["--devices", "auto"], "--devices"),
                                          (["--tolerance", "-1"], "--tolerance"), (["--checkpoints", "1"], "--checkpoints")])
def test_bad_cbs_input_is_one_line(cli, tmp_path, flags, field):
    code, _, err = cli("cbs", "--devices", "cpu", "--batch-sizes", "8", *flags, "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1 and field in err and not (tmp_path / "s.sqlite").exists()


def test_a_base_run_that_diverges_is_a_run_error(cli, tmp_path):
    code, _, err = cli("cbs", "--devices", "cpu", "--batch-sizes", "8", "--lr", "1000", "--steps", "50", "--store", tmp_path / "s.sqlite",
                       "--no-report")
    assert code == 1 and "the base run ended diverged" in err


def test_check_every_is_a_typed_value():
    assert CheckEvery("steps", 10).text() == "10"
