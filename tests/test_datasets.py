import numpy as np
import pandas as pd
import pytest
import torch

from harness.workload import datasets
from harness.errors import SpecError


@pytest.mark.parametrize(
    "name,features,task,classes",
    [("blobs", 2, "classification", 3), ("linreg", 16, "regression", None), ("digits", 64, "classification", 10), ("mnist-like", 784, "classification", 10)],
)
def test_builtins(name, features, task, classes):
    data = datasets.load(name, 300)
    assert data.n_samples == 300 and data.n_features == features and data.task == task and data.n_classes == classes
    assert data.X.dtype == torch.float32
    assert data.y.dtype == (torch.int64 if classes else torch.float32)
    assert torch.equal(data.X, datasets.load(name, 300).X)  # seeded


def test_blobs_is_the_classic_experiment():
    data = datasets.load("blobs", 1000)
    assert data.n_samples == 1000 and sorted(torch.bincount(data.y).tolist()) == [333, 333, 334]


def test_linreg_optimum_is_near_the_noise_floor():
    _, mse = datasets.linreg_optimum(datasets.load("linreg", 1000))
    assert 0.005 < mse < 0.015  # noise std 0.1


def test_split_is_seeded_disjoint_and_sized_like_the_points():
    from harness.config.policies import split_sizes

    # row i holds i, so a row in both sets, or a row in neither, shows by its number
    data = datasets.Dataset("ids", torch.arange(501.0)[:, None], torch.arange(501) % 3, "classification", 3)
    split = datasets.split(data, "holdout", 0.2)
    train, check = split.X_train[:, 0].long().tolist(), split.X_check[:, 0].long().tolist()
    assert (len(train), len(check)) == split_sizes(501, "holdout", 0.2) == (401, 100)
    assert not set(train) & set(check) and sorted(train + check) == list(range(501))
    assert torch.equal(split.X_check, datasets.split(data, "holdout", 0.2).X_check)
    assert not torch.equal(split.X_check, datasets.split(data, "holdout", 0.2, data_seed=1).X_check)


def test_files_npz_csv_parquet_and_target_column(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    labels = rng.integers(0, 3, 50)
    np.savez(tmp_path / "d.npz", X=X, y=labels)
    frame = pd.DataFrame(X, columns=list("abcd")).assign(y=labels, value=X[:, 0] * 2.0)
    frame.drop(columns="value").to_csv(tmp_path / "d.csv", index=False)
    frame.drop(columns="y").to_parquet(tmp_path / "d.parquet")
    for path, column in (("d.npz", None), ("d.csv", None)):
        data = datasets.load(str(tmp_path / path), 50, target_column=column)
        assert data.task == "classification" and data.n_classes == 3 and data.n_features == 4
    reg = datasets.load(str(tmp_path / "d.parquet"), 40, target_column="value")
    assert reg.task == "regression" and reg.n_samples == 40 and reg.n_features == 4
    assert datasets.info(str(tmp_path / "d.csv")).max_size == 50
    with pytest.raises(SpecError, match="no column 'y'"):
        datasets.info(str(tmp_path / "d.parquet"))


def test_npz_without_y_and_non_numeric_features(tmp_path):
    np.savez(tmp_path / "x.npz", X=np.zeros((5, 2)))
    with pytest.raises(SpecError, match="no array y"):
        datasets.info(str(tmp_path / "x.npz"))
    pd.DataFrame({"a": ["x", "y", "z"], "y": [0, 1, 0]}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(SpecError, match="must be numeric, not: a"):
        datasets.info(str(tmp_path / "s.csv"))
