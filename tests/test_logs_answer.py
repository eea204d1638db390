"""The logs hold the answer: steps and time to the target per point (a relative target's settled
at the sweep's end), the sweep as the parent of its points in MLflow, and the recommended batch
size per configuration; read back with TensorBoard's EventAccumulator and MLflow's client."""

import sqlite3

import pytest

@pytest.fixture(autouse=True)
def _file_store(monkeypatch):
    """MLflow 3 keeps its file store (``file:DIR``) behind this switch; fast to set up, as a test wants."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


SWEEP = ["--devices", "cpu", "--dataset-sizes", "300", "--batch-sizes", "8,32", "--steps", "30", "--check-every", "10", "--no-report", "--quiet"]


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def _scalars(events) -> dict:
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _text(events, tag: str) -> str:
    from tensorboard.util import tensor_util

    (event,) = events.Tensors(f"{tag}/text_summary")
    return tensor_util.make_ndarray(event.tensor_proto).item().decode()


def _stored(store):
    with sqlite3.connect(store) as conn:
        (run_id,) = conn.execute("select run_id from runs").fetchone()
        rows = conn.execute("select point_id, steps, target_loss, steps_to_target, time_to_target_s from points").fetchall()
    return run_id, {r[0]: dict(zip(("steps", "target_loss", "steps_to_target", "time_to_target_s"), r[1:])) for r in rows}


def _run(cli, tmp_path, *target):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    store, tb, mlruns = tmp_path / "s.sqlite", tmp_path / "tb", tmp_path / "mlruns"
    code, out, err = cli("run", *SWEEP, *target, "--store", store, "--log", f"tensorboard:{tb}", "--log", f"mlflow:file:{mlruns}")
    assert code == 0, err
    run_id, points = _stored(store)
    assert all(p["steps_to_target"] is not None and p["time_to_target_s"] is not None for p in points.values()), points
    return run_id, points, tb / run_id, f"file:{mlruns}"


def _mlflow_runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("batchbench")
    found = client.search_runs([experiment.experiment_id])
    parents = [r for r in found if r.data.tags.get("batchbench.kind") == "sweep"]
    children = [r for r in found if r.data.tags.get("batchbench.kind") == "point"]
    assert len(parents) == 1 and len(found) == 1 + len(children)
    return client, parents[0], children


def _answer_batch_size(scalars_or_metrics: dict) -> float:
    (key,) = [k for k in scalars_or_metrics if k.startswith("answer/batch_size/")]
    value = scalars_or_metrics[key]
    return value[0][1] if isinstance(value, list) else value


def test_a_relative_target_settled_at_the_sweeps_end_reaches_both_logs(cli, tmp_path):
    run_id, points, tb, uri = _run(cli, tmp_path, "--target", "rel:0.1")

    folders = {p.name.rsplit("-", 1)[1]: p for p in tb.iterdir() if p.is_dir()}
    assert set(folders) == set(points)
    for point_id, point in points.items():
        scalars = _scalars(_events(folders[point_id]))
        for column in ("steps_to_target", "time_to_target_s", "target_loss"):
            assert scalars[f"point/{column}"] == [(point["steps"], pytest.approx(point[column], rel=1e-6))], column
    sweep = _events(tb)
    batch = _answer_batch_size(_scalars(sweep))
    assert batch in (8, 32) and f"batch size {int(batch)}" in _text(sweep, "answer")
    assert "batch_sizes: 8,32" in _text(sweep, "spec")

    client, parent, children = _mlflow_runs(uri)
    assert parent.info.run_name == run_id and parent.info.status == "FINISHED"
    assert parent.data.params["batch_sizes"] == "8,32" and parent.data.params["steps"] == "30" and parent.data.params["target"] == "rel:0.1"
    assert _answer_batch_size(parent.data.metrics) == batch and f"batch size {int(batch)}" in parent.data.tags["mlflow.note.content"]
    assert {c.data.tags["batchbench.point_id"] for c in children} == set(points)
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
        point = points[child.data.tags["batchbench.point_id"]]
        for column in ("steps_to_target", "time_to_target_s", "target_loss"):
            assert child.data.metrics[column] == pytest.approx(point[column], rel=1e-6), column


def test_an_absolute_target_is_logged_with_its_point_and_not_again(cli, tmp_path):
    run_id, points, tb, uri = _run(cli, tmp_path, "--target-loss", "2.25")

    for folder in (p for p in tb.iterdir() if p.is_dir()):
        point = points[folder.name.rsplit("-", 1)[1]]
        scalars = _scalars(_events(folder))
        assert scalars["point/steps_to_target"] == [(point["steps"], point["steps_to_target"])]
        assert scalars["point/time_to_target_s"] == [(point["steps"], pytest.approx(point["time_to_target_s"], rel=1e-6))]
    assert _answer_batch_size(_scalars(_events(tb))) in (8, 32)

    client, parent, children = _mlflow_runs(uri)
    assert len(children) == 2 and all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    for child in children:
        point = points[child.data.tags["batchbench.point_id"]]
        history = client.get_metric_history(child.info.run_id, "steps_to_target")
        assert [(m.step, m.value) for m in history] == [(point["steps"], point["steps_to_target"])]
        assert child.data.metrics["time_to_target_s"] == pytest.approx(point["time_to_target_s"], rel=1e-6)


def test_a_resumed_sweep_finds_its_parent_run_and_settles_the_points_logged_before(tmp_path):
    pytest.importorskip("mlflow")
    from harness.store.logs import Answer, MlflowLog

    uri = f"file:{tmp_path / 'mlruns'}"
    row = {"point_id": "p1", "batch_size": 8, "dataset_size": 300, "device": "cpu", "lr": 0.1, "steps": 30, "status": "ok",
           "steps_to_target": None}
    first = MlflowLog(uri, "run-1", {"steps": "30"})
    first.point(row, [{"step": 0, "eval_loss": 2.3}, {"step": 30, "eval_loss": 2.1}])  # interrupted here: no settle, no close
    again = MlflowLog(uri, "run-1", {"steps": "30"})
    assert again.parent == first.parent
    again.settle([{**row, "target_loss": 2.2, "steps_to_target": 21, "time_to_target_s": 0.5}],
                 [Answer("digits · 300 samples · cpu", 8, (8,), 0.5, 21.0, "train with batch size 8")])
    again.close()
    client, parent, (child,) = _mlflow_runs(uri)
    assert child.data.metrics["steps_to_target"] == 21 and child.data.metrics["target_loss"] == 2.2
    assert parent.data.metrics["answer/batch_size/digits 300 samples cpu"] == 8 and parent.info.status == "FINISHED"
