"""Points written where users look, read back with the real libraries: TensorBoard's
EventAccumulator and MLflow's client."""

import sqlite3

import pytest

SWEEP = ["--devices", "cpu", "--dataset-sizes", "300", "--batch-sizes", "8,32", "--steps", "30", "--check-every", "10", "--no-report", "--quiet"]


def _event_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = {}
    for run in sorted(p for p in folder.iterdir() if p.is_dir()):
        events = EventAccumulator(str(run))
        events.Reload()
        runs[run.name] = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return runs


def test_a_sweep_writes_tensorboard_and_mlflow_logs_the_libraries_read(cli, tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store, tb, db = tmp_path / "s.sqlite", tmp_path / "tb", tmp_path / "mlflow.db"
    code, _, err = cli("run", *SWEEP, "--store", store, "--log", f"tensorboard:{tb}", "--log", f"mlflow:sqlite:///{db}")
    assert code == 0, err
    with sqlite3.connect(store) as conn:
        (run_id,) = conn.execute("select run_id from runs").fetchone()
        expected = dict(conn.execute("select point_id, samples_per_s from points").fetchall())
    runs = _event_scalars(tb / run_id)
    assert len(runs) == 2
    for name, scalars in runs.items():
        point_id = name.rsplit("-", 1)[1]
        assert [step for step, _ in scalars["loss/check"]] == [0, 10, 20, 30]
        assert scalars["point/samples_per_s"][0] == (30, pytest.approx(expected[point_id], rel=1e-6))
        assert "point/data_s" in scalars and "point/peak_rss_bytes" in scalars

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("batchbench")
    found = client.search_runs([experiment.experiment_id], filter_string="tags.`batchbench.kind` = 'point'")  # the sweep is their parent run
    assert len(found) == 2 and {r.data.tags["batchbench.point_id"] for r in found} == set(expected)
    for run in found:
        assert run.data.params["batch_size"] in ("8", "32") and run.data.params["optimizer"] == "sgd" and run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "eval_loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 10, 20, 30]
        assert run.data.metrics["samples_per_s"] == pytest.approx(expected[run.data.tags["batchbench.point_id"]], rel=1e-6)


def test_export_writes_a_stored_run_to_tensorboard(cli, tmp_path):
    pytest.importorskip("tensorboard")
    store, tb = tmp_path / "s.sqlite", tmp_path / "later"
    assert cli("run", *SWEEP, "--store", store)[0] == 0
    code, _, err = cli("export", "--store", store, "--format", "tensorboard", "-o", tb)
    assert code == 0 and "wrote 2 points to tensorboard" in err
    (run_folder,) = tb.iterdir()
    assert all(scalars["loss/check"][-1][0] == 30 for scalars in _event_scalars(run_folder).values())


@pytest.mark.parametrize("value, words", [("wandb", "'wandb' is not a log; use tensorboard[:DIR] or mlflow[:URI]")])
def test_an_unknown_log_is_one_line(cli, tmp_path, value, words):
    code, out, err = cli("run", *SWEEP, "--store", tmp_path / "s.sqlite", "--log", value)
    assert code == 2 and err.count("\n") == 1 and words in err and not (tmp_path / "s.sqlite").exists()
