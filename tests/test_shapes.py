"""Data of any shape: images (N, 3, 16, 16) with a CNN plug-in that takes `input_shape`, and
token ids (N, 16) -> per-token targets (N, 16) with a plug-in that brings its own loss."""

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from conftest import plugin

RUN = ["--devices", "cpu", "--dataset-sizes", "512", "--batch-sizes", "16,64", "--steps", "80", "--target", "none", "--quiet", "--no-report"]


def _images(path, n=512, seed=0):
    rng = np.random.default_rng(seed)
    prototypes = (rng.standard_normal((4, 3, 1, 1)) + 0.5 * rng.standard_normal((4, 3, 16, 16))).astype(np.float32)  # class colours and textures
    y = rng.integers(0, 4, n)
    np.savez(path, X=prototypes[y] + 0.8 * rng.standard_normal((n, 3, 16, 16)).astype(np.float32), y=y)


def _tokens(path, n=512, length=16, vocab=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, vocab, (n, length))
    np.savez(path, X=X.astype(np.int64), y=((X * 5 + 3) % vocab).astype(np.int64))  # a per-token mapping to learn


def _curves(store):
    with sqlite3.connect(store) as conn:
        points = pd.read_sql("SELECT point_id, status, n_features, final_eval_loss, final_eval_acc FROM points", conn)
        checks = pd.read_sql("SELECT point_id, step, eval_loss FROM checks ORDER BY step", conn)
    return points, checks


@pytest.mark.parametrize("make,model,features", [(_images, "image_cnn", 3 * 16 * 16), (_tokens, "token_model", 16)])
def test_shaped_data_sweep_and_their_loss_falls(cli, tmp_path, make, model, features):
    data, store = tmp_path / "data.npz", tmp_path / "s.sqlite"
    make(data)
    code, _, err = cli("run", "--dataset", data, "--model", plugin(model), "--store", store, *RUN)
    assert code == 0, err
    points, checks = _curves(store)
    assert len(points) == 2 and set(points["status"]) == {"ok"} and set(points["n_features"]) == {features}
    for _, curve in checks.groupby("point_id"):
        assert curve["eval_loss"].iloc[-1] < 0.8 * curve["eval_loss"].iloc[0]
    assert points["final_eval_acc"].notna().all()  # accuracy over every token / image


def test_built_in_models_refuse_token_ids_in_one_line(cli, tmp_path):
    data = tmp_path / "tokens.npz"
    _tokens(data)
    code, _, err = cli("run", "--dataset", data, "--model", "mlp", "--store", tmp_path / "s.sqlite", *RUN)
    assert code == 2 and err.count("\n") == 1 and "--model: mlp takes float features" in err and "token ids" in err


def test_a_per_token_model_of_the_wrong_width_is_refused_in_the_plan(cli, tmp_path):
    data = tmp_path / "tokens.npz"
    _tokens(data, vocab=12)
    np.savez(data, X=np.load(data)["X"], y=np.load(data)["y"] % 6)  # 6 classes now; the model still gives 12
    code, _, err = cli("run", "--dataset", data, "--model", f"{plugin('image_cnn').rsplit(':', 1)[0]}:TokenMixer", "--store", tmp_path / "s.sqlite", *RUN)
    assert code == 2 and err.count("\n") == 1, err


def test_precision_is_an_axis_and_flops_follow_the_dense_work(cli, tmp_path):
    store = tmp_path / "s.sqlite"
    code, out, err = cli("run", "--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "400", "--hidden", "256,256", "--batch-sizes", "8,32",
                         "--steps", "30", "--precision", "fp32,bf16", "--no-report", "--store", store)
    assert code == 0, err
    with sqlite3.connect(store) as conn:
        points = pd.read_sql("SELECT batch_size, precision, status, flops_per_step, achieved_tflops, mfu, steps_per_s FROM points", conn)
    assert len(points) == 4 and set(points["status"]) == {"ok"} and sorted(points["precision"]) == ["bf16", "bf16", "fp32", "fp32"]
    dense = 2 * 256 + 256 * 256 + 256 * 3  # in x out, summed over the layers of an MLP 2-256-256-3
    for row in points.to_dict("records"):
        assert abs(row["flops_per_step"] / (6 * row["batch_size"] * dense) - 1) < 0.15
        assert row["achieved_tflops"] == pytest.approx(row["flops_per_step"] * row["steps_per_s"] / 1e12)
        assert row["mfu"] is None  # no peak for a CPU unless --peak-tflops gives one
    assert "precision" in out.splitlines()[0]  # the table tells the configurations apart
    code, analyzed, _ = cli("analyze", "--store", store, "--json")
    assert sorted(g["group"]["precision"] for g in json.loads(analyzed)) == ["bf16", "fp32"]  # never pooled
    code, _, _ = cli("report", "--store", store, "-o", tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert code == 0 and "How much of the hardware each batch size uses" in html and "no MFU (give --peak-tflops)" in html


def test_a_precision_the_device_cannot_run_is_one_line(cli, tmp_path):
    code, _, err = cli("run", "--devices", "cpu", "--precision", "tf32", "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1 and "--precision: tf32 is a CUDA matmul mode" in err


@pytest.mark.parametrize("model,dataset,shape", [("resnet", "cifar-like", 3 * 32 * 32), ("gpt", "text", 64)])
def test_realistic_built_ins_sweep_in_seconds_and_their_loss_falls(cli, tmp_path, model, dataset, shape):
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", "--devices", "cpu", "--model", model, "--dataset", dataset, "--dataset-sizes", "256", "--batch-sizes", "8,32",
                       "--steps", "40", "--check-every", "20", "--target", "none", "--quiet", "--no-report", "--store", store)
    assert code == 0, err
    points, checks = _curves(store)
    assert set(points["status"]) == {"ok"} and set(points["n_features"]) == {shape}
    for _, curve in checks.groupby("point_id"):
        assert curve["eval_loss"].iloc[-1] < 0.9 * curve["eval_loss"].iloc[0]


def test_text_is_the_next_byte_of_python_source():
    from harness.workload import datasets

    data = datasets.load("text", 32, data_seed=0)
    assert data.X.shape == (32, 64) and data.y.shape == (32, 64) and data.n_classes == 256
    assert bytes(data.X[0, 1:].tolist()) == bytes(data.y[0, :-1].tolist())  # y is X shifted by one byte
    assert datasets.load("text", 32, data_seed=0).X.equal(data.X)  # seeded


def test_dataloader_workers_are_recorded_per_point_and_need_the_dataloader(cli, tmp_path):
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", "--devices", "cpu", "--loader", "dataloader", "--workers", "1", "--dataset-sizes", "400", "--batch-sizes", "16",
                       "--steps", "20", "--target", "none", "--quiet", "--no-report", "--store", store)
    assert code == 0, err
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT workers, loader, status FROM points").fetchall() == [(1, "dataloader", "ok")]
    code, _, err = cli("run", "--devices", "cpu", "--workers", "2", "--store", tmp_path / "t.sqlite")
    assert code == 2 and err.count("\n") == 1 and "--workers: applies to --loader dataloader" in err


def test_compile_is_an_axis_and_its_time_is_kept_apart(cli, tmp_path):
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", "--devices", "cpu", "--dataset", "blobs", "--dataset-sizes", "400", "--batch-sizes", "16", "--steps", "30",
                       "--compile", "off,on", "--target", "none", "--quiet", "--no-report", "--store", store)
    assert code == 0, err
    with sqlite3.connect(store) as conn:
        rows = dict(conn.execute("SELECT compile, compile_s FROM points WHERE status = 'ok'").fetchall())
        walls = dict(conn.execute("SELECT compile, wall_s FROM points").fetchall())
    assert set(rows) == {"off", "on"} and rows["off"] is None and rows["on"] > 0
    assert walls["on"] < rows["on"]  # the compile time is not inside the point's wall time
