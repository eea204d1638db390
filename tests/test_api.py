"""`harness.benchmark` from a plain Python session: one DataFrame row per point, the export's
columns, the CLI's validation."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import harness
from conftest import ROOT
from harness.errors import SpecError


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 8)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def test_from_a_plain_python_session_one_row_per_point_with_the_exports_columns(tmp_path):
    script = f"""
import json, sys, numpy as np, harness
from torch import nn
rng = np.random.default_rng(0)
X = rng.standard_normal((256, 8)).astype(np.float32); y = (X[:, 0] > 0).astype(np.int64)
points = harness.benchmark(model=nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)), data=(X, y),
                           batch_sizes=[8, 32], steps=40, devices=["cpu"], dataset_sizes=256, store={str(tmp_path / 's.sqlite')!r})
print(json.dumps({{"rows": len(points), "columns": list(points.columns), "status": sorted(set(points["status"])),
                  "batches": sorted(int(b) for b in points["batch_size"])}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    exported = subprocess.run([sys.executable, "-m", "harness", "export", "--store", str(tmp_path / "s.sqlite")], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    header = exported.stdout.splitlines()[0].split(",")
    assert result["rows"] == 2 and result["batches"] == [8, 32] and result["status"] == ["ok"]
    assert result["columns"] == header


def test_a_module_is_copied_for_every_point_and_a_factory_gets_what_it_takes():
    X, y = _data()
    model = nn.Sequential(nn.Linear(8, 2))
    before = [p.detach().clone() for p in model.parameters()]
    points = harness.benchmark(model=model, data=(torch.from_numpy(X), torch.from_numpy(y)), batch_sizes=[4, 16], steps=20,
                               devices="cpu", dataset_sizes=256, check_every=5)
    assert len(points) == 2 and set(points["status"]) == {"ok"}
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the caller's module is untouched
    seen = []

    def factory(input_shape, n_outputs):
        seen.append((input_shape, n_outputs))
        return nn.Linear(input_shape[0], n_outputs)

    harness.benchmark(model=factory, data=(X, y), batch_sizes=8, steps=10, devices="cpu", dataset_sizes=256)
    assert seen and all(s == ((8,), 2) for s in seen)


@pytest.mark.parametrize("options,match", [
    ({"batch_sizes": 0}, "--batch-sizes"),
    ({"stepz": 10}, "stepz: is not an option"),
    ({"devices": "tpu"}, "--devices: 'tpu' is not a device"),
])
def test_a_bad_option_raises_the_clis_error(options, match):
    with pytest.raises(SpecError, match=match):
        harness.benchmark(model="mlp", data=_data(), **options)
