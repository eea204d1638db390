"""`batchbench tune` end to end, and the answer a bare `batchbench run` gives.

The tune workload is a small version of the one quoted in the README ("Which batch size?"):
8 overlapping Gaussian classes in 32 dimensions, an MLP 32-64-8, plain SGD, a train-loss
target; steps-to-target fall from about 70 at B=8 to about 11 at B=1024.
"""

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

WORKLOAD = ["--dataset-sizes", "1024", "--devices", "cpu", "--hidden", "64", "--check-set", "train", "--lr-grid", "0.125,0.25,0.5,1,2,4,8,16",
            "--batch-sizes", "8..1024", "--steps", "1000", "--target-loss", "0.3", "--no-report"]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=1024, centers=8, n_features=32, cluster_std=12.0, random_state=0)
    X = (X - X.mean(0)) / X.std(0)
    path = tmp_path_factory.mktemp("data") / "blobs32.npz"
    np.savez(path, X=X.astype("float32"), y=y.astype("int64"))
    return path


def _points(store):
    with sqlite3.connect(store) as conn:
        return pd.read_sql("SELECT * FROM points", conn)


def test_tune_finds_the_grids_batch_size_with_a_fraction_of_its_compute(cli, tmp_path, blobs):
    grid_store, tune_store = tmp_path / "grid.sqlite", tmp_path / "tune.sqlite"
    code, _, err = cli("run", "--dataset", blobs, *WORKLOAD, "--lr-policy", "tuned", "--stop-at-target", "--quiet", "--store", grid_store)
    assert code == 0, err
    code, out, err = cli("tune", "--dataset", blobs, *WORKLOAD, "--json", "--store", tune_store)
    assert code == 0, err
    answer = json.loads(out)
    for key in ("batch_size", "lr", "time_to_target_s", "steps_to_target", "trials", "samples_processed"):
        assert answer[key] is not None, key

    grid, trials = _points(grid_store), _points(tune_store)
    # every trial is a stored point, and the compute is what they ran
    assert answer["trials"] == len(trials) and answer["samples_processed"] == int((trials["steps"] * trials["batch_size"]).sum())
    pruned = trials[trials["status"] == "pruned"]
    assert len(pruned) == answer["pruned"] > 0 and (pruned["steps"] < 1000).all() and pruned["error"].str.startswith("pruned:").all()
    assert answer["samples_processed"] <= 0.25 * (grid["steps"] * grid["batch_size"]).sum()

    # the grid's answer, per batch size its best learning rate's steps x the median step time
    reached = grid[grid["steps_to_target"].notna()]
    best_time = reached.assign(t=reached["steps_to_target"] * reached["step_wall_s"]).groupby("batch_size")["t"].min()
    grid_b = int(best_time.idxmin())
    picked = answer["batch_size"]
    assert grid_b / 2 <= picked <= grid_b * 2 or best_time[picked] <= 1.5 * best_time.min(), (picked, best_time.to_dict())
    assert picked in answer["tied"]
    mine = trials[(trials["batch_size"] == picked) & (trials["lr"] == answer["lr"]) & trials["steps_to_target"].notna()]
    assert mine["steps_to_target"].median() == answer["steps_to_target"]  # over the seeds it ran


def test_tune_with_a_relative_target_runs_a_pilot_and_reads_like_any_run(cli, tmp_path, blobs):
    store = tmp_path / "t.sqlite"
    flags = [f for f in WORKLOAD if f not in ("--target-loss", "0.3")]
    code, out, err = cli("tune", "--dataset", blobs, *flags, "--target", "rel:0.2", "--store", store)
    assert code == 0, err
    assert "pilot B=" in err and "trial" in err and out.startswith(f"{blobs} · 1024 samples · cpu: ")
    trials = _points(store)
    assert trials["target_loss"].nunique() == 1  # the pilot's curve fixed one target for every trial
    code, analyzed, _ = cli("analyze", "--store", store, "--json")
    group = json.loads(analyzed)[0]
    assert out.startswith(f"{blobs} · 1024 samples · cpu: {group['recommendation']['headline']}")  # tune answers as analyze does


def test_a_target_reached_in_the_first_tenth_of_the_pilot_is_called_trivial(cli, tmp_path, blobs):
    """rel:0.95 is reached within a few steps: the answer would time the first plateau."""
    flags = [f for f in WORKLOAD if f not in ("--target-loss", "0.3")]
    code, out, err = cli("tune", "--dataset", blobs, *flags, "--target", "rel:0.95", "--json", "--store", tmp_path / "t.sqlite")
    answer = json.loads(out)
    assert code == 0 and answer["warnings"] and "first plateau" in answer["warnings"][0] and "first plateau" in err


def test_tune_refuses_to_run_without_a_target(cli, tmp_path, blobs):
    code, _, err = cli("tune", "--dataset", blobs, "--devices", "cpu", "--target", "none", "--store", tmp_path / "t.sqlite")
    assert code == 2 and err.count("\n") == 1 and "--target: tune needs a target" in err and not (tmp_path / "t.sqlite").exists()


def test_a_bare_run_recommends_a_batch_size_for_every_dataset_size(cli, tmp_path):
    from harness.run.refine import resolved
    from harness.run.schedule import fine_count

    store = tmp_path / "s.sqlite"
    code, out, err = cli("run", "--devices", "cpu", "--store", store, "--no-report")
    assert code == 0, err
    code, analyzed, _ = cli("analyze", "--store", store, "--json")
    groups = json.loads(analyzed)
    points = _points(store)
    assert {g["group"]["dataset_size"] for g in groups} == set(points["dataset_size"]) and len(groups) == 2
    for group in groups:
        advice = group["recommendation"]
        assert advice["batch_size"] == group["best_batch_size"]["training_time"] and advice["batch_size"] in advice["tied"]
        assert advice["sentence"] in out and advice["steps_to_target"] > 1
    assert points["steps_to_target"].notna().mean() >= 0.5
    assert (points["check_every"] == "log:40").all()
    with sqlite3.connect(store) as conn:  # geometric checks: every early step, then 5% apart (cheap checks resolve steps to target)
        steps = [row[0] for row in conn.execute("SELECT DISTINCT step FROM checks ORDER BY step")]
    assert steps[:10] == list(range(10)) and steps[-1] == 500 and len(steps) <= fine_count(500) + 1
    assert all(resolved(a, b) for a, b in zip(steps, steps[1:]))


QUICK = ("--dataset", "linreg", "--dataset-sizes", "5120", "--model", "linear", "--lr-grid", ",".join(f"{2.0 ** -k:g}" for k in range(6, -1, -1)),
         "--batch-sizes", "8..4096", "--target-loss", "0.3", "--devices", "cpu", "--no-report", "--quiet")


def test_tune_on_a_target_reached_within_a_few_steps_agrees_with_itself_and_the_grid(cli, tmp_path):
    """A linear regression that reaches its target in 2-9 steps at every batch size: its trials
    end in or just after the burn-in, so the first at each batch size trains on after the target
    for its step time (the others stop there), the steps are exact, and step times do not fall
    with the batch. Two tune runs name overlapping
    tied sets, and each answer ties with the full grid's best (or is within 15% of it)."""
    code, _, err = cli("run", *QUICK, "--lr-policy", "tuned", "--stop-at-target", "--store", tmp_path / "grid.sqlite")
    assert code == 0, err
    code, out, _ = cli("analyze", "--store", tmp_path / "grid.sqlite", "--json")
    (grid,) = json.loads(out)
    grid_tied, grid_best = set(grid["best_batch_size"]["tied"]), grid["recommendation"]["time_to_target_s"]
    answers = []
    for n in range(2):
        code, out, err = cli("tune", *QUICK, "--json", "--store", tmp_path / f"t{n}.sqlite")
        assert code == 0, err
        answers.append(json.loads(out))
        trials = _points(tmp_path / f"t{n}.sqlite")  # every batch size that reached it has a step time measured past its burn-in
        reached = set(trials[trials["steps_to_target"].notna()]["batch_size"])
        assert reached and reached <= set(trials[trials["timed_steps"] >= 20]["batch_size"])
    assert set(answers[0]["tied"]) & set(answers[1]["tied"]), [a["tied"] for a in answers]
    for answer in answers:
        assert answer["batch_size"] in grid_tied or answer["time_to_target_s"] <= 1.15 * grid_best, (answer["batch_size"], grid_tied)
        edge = answer["lr"] == 1.0  # the grid's largest rate: said beside the answer
        assert edge == ("is the largest tried" in " ".join(answer["recommendation"]["caveats"])), answer["recommendation"]["caveats"]
