"""Data as users have it: a map-style Dataset that decodes files on every item, read through a
DataLoader, its cost inside the `data` phase; `harness.benchmark(data=Dataset)`; uint8 refused."""

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.workload import datasets

PIPELINES = Path(__file__).resolve().parent / "pipelines_data.py"


def pipeline(name: str) -> str:
    return f"{PIPELINES}:{name}"


@pytest.fixture
def pngs(tmp_path, monkeypatch):
    """160 16x16 PNGs of 4 classes (a colour per class plus noise), written with PIL."""
    Image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "png"
    folder.mkdir()
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(4, 3))
    for i in range(160):
        label = i % 4
        pixels = np.clip(colours[label] + rng.normal(0, 40, size=(16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}_{label}.png")
    monkeypatch.setenv("BATCHBENCH_TEST_PNG_DIR", str(folder))
    return folder


def _points(store) -> pd.DataFrame:
    with sqlite3.connect(store) as conn:
        return pd.read_sql("SELECT * FROM points", conn)


RUN = ["--devices", "cpu", "--model", "linear", "--steps", "40", "--no-report", "--quiet", "--lr", "0.02", "--dataset-sizes", "160"]


def test_a_dataset_that_decodes_pngs_puts_the_decode_in_the_data_phase(cli, tmp_path, pngs):
    import pipelines_data

    store = tmp_path / "p.sqlite"
    code, _, err = cli("run", "--dataset", pipeline("png_folder"), "--batch-sizes", "16", *RUN, "--store", store)
    assert code == 0, err
    (point,) = _points(store).to_dict("records")
    assert point["status"] == "ok" and point["loader"] == "dataloader" and point["workers"] == 0
    assert point["dataset_size"] == 160 and point["train_size"] == 128 and point["check_size"] == 32
    # every item decodes a PNG and waits its floor inside the step's data phase
    assert point["data_s"] >= 0.9 * 16 * pipelines_data.DECODE_FLOOR_S
    assert point["data_s"] > 3 * point["derivative_s"]
    assert point["final_eval_loss"] < 1.0  # 4 classes (1.39 at chance): it learns from the decoded images


def test_workers_record_their_settings_and_train_the_same_rows(cli, tmp_path, pngs):
    store = tmp_path / "w.sqlite"
    code, _, err = cli("run", "--dataset", pipeline("png_folder"), "--batch-sizes", "16", *RUN, "--workers", "2", "--prefetch-factor", "4",
                       "--store", store)
    assert code == 0, err
    (point,) = _points(store).to_dict("records")
    assert point["status"] == "ok" and point["workers"] == 2 and point["prefetch_factor"] == 4 and point["final_eval_loss"] < 1.0


def test_a_train_and_check_pair_draws_the_holdout_from_the_check_dataset(cli, tmp_path, pngs):
    store = tmp_path / "pair.sqlite"
    code, _, err = cli("run", "--dataset", pipeline("png_pair"), "--batch-sizes", "8", *RUN[:-2], "--dataset-sizes", "150", "--store", store)
    assert code == 0, err
    (point,) = _points(store).to_dict("records")
    # 120 training files, 40 check files: the natural size is the largest whose 80% fits in the training files, 150 = 120 + 30
    assert datasets.info(pipeline("png_pair")).natural_size == 150
    assert point["dataset_size"] == 150 and point["train_size"] == 120 and point["check_size"] == 30


def test_the_python_api_takes_a_dataset_object(pngs):
    import harness
    import pipelines_data

    points = harness.benchmark(model="linear", data=pipelines_data.PngFolder(pngs, floor_s=0.0), batch_sizes=[8], steps=20,
                               devices=["cpu"], dataset_sizes=[80], check_every=10)
    (point,) = points.to_dict("records")
    assert point["status"] == "ok" and point["dataset"] == "dataset:PngFolder" and point["train_size"] == 64


def test_uint8_pixels_are_refused_in_one_line(cli, tmp_path, pngs):
    code, _, err = cli("run", "--dataset", pipeline("png_bytes"), *RUN, "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1 and "--dataset" in err and "uint8" in err and "/ 255" in err


def test_a_uint8_npz_is_refused_in_one_line(cli, tmp_path):
    path = tmp_path / "images.npz"
    np.savez(path, X=np.zeros((20, 3, 8, 8), dtype=np.uint8), y=np.arange(20) % 2)
    code, _, err = cli("run", "--dataset", path, *RUN, "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1 and "uint8" in err and "X / 255" in err


def test_a_callable_that_gives_no_dataset_is_one_line(cli, tmp_path):
    code, _, err = cli("run", "--dataset", pipeline("not_a_dataset"), *RUN, "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1 and "map-style torch Dataset" in err


def test_a_mistyped_builtin_data_set_gets_a_suggestion(cli, tmp_path):
    code, _, err = cli("run", "--dataset", "digts", "--devices", "cpu", "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1 and "did you mean digits?" in err
