"""Where users work: the ``batchbench`` pytest fixture in a throwaway project's own test suite,
and ``batchbench asv init`` + ``asv run`` over two commits of a throwaway git repository."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

MODEL = '''
from torch import nn


def make(n_features, n_outputs):
    return nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(), nn.Linear(16, n_outputs))
'''

TEST = '''
import numpy as np

from mymodel import make

rng = np.random.default_rng(0)
X = rng.standard_normal((300, 6)).astype("float32")
y = (X[:, 0] > 0).astype("int64")


def test_step(batchbench):
    points = batchbench(model=make, data=(X, y), dataset_sizes=[300], batch_sizes=[8, 32], steps=60, devices=["cpu"])
    assert list(points["status"]) == ["ok", "ok"]
'''


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=project,
                          capture_output=True, text=True, env=env, timeout=300)


def test_the_fixture_reports_each_point_to_pytest_benchmark(tmp_path):
    pytest.importorskip("pytest_benchmark")
    project = tmp_path / "project"
    project.mkdir()
    (project / "mymodel.py").write_text(MODEL)
    (project / "test_speed.py").write_text(TEST)
    storage = f"file://{tmp_path / 'saved'}"
    for _ in range(2):
        done = _pytest(project, "--benchmark-only", "--benchmark-autosave", f"--benchmark-storage={storage}")
        assert done.returncode == 0, done.stdout + done.stderr
    saved = sorted((tmp_path / "saved").rglob("*.json"))
    assert len(saved) == 2
    report = json.loads(saved[-1].read_text())
    by_name = {b["name"]: b for b in report["benchmarks"]}
    assert sorted(by_name) == ["test_step[B=32-N=300-cpu]", "test_step[B=8-N=300-cpu]"]
    for bench in by_name.values():
        info = bench["extra_info"]
        assert info["status"] == "ok" and info["derivative_s"] > 0 and info["data_s"] > 0 and info["update_s"] > 0
        assert info["samples_per_s"] > 0
        assert bench["stats"]["rounds"] == info["timed_steps"], "the timings are the harness's timed steps"
        assert bench["params"]["batch_size"] in (8, 32) and bench["group"] == "batchbench: test_step"
    compared = _pytest(project, "--benchmark-only", f"--benchmark-storage={storage}", "--benchmark-compare")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    table = compared.stdout + compared.stderr
    assert "0002" in table and "test_step[B=8-N=300-cpu] (NOW)" in table and "test_step[B=32-N=300-cpu] (0002" in table
    plain = _pytest(project, "--benchmark-disable")
    assert plain.returncode == 0 and "1 passed" in plain.stdout, "with benchmarks disabled the test still runs its points"
    skipped = _pytest(project, "-p", "no:benchmark", "-rs")
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout and "pip install pytest-benchmark" in skipped.stdout


def test_a_point_that_errors_fails_the_test_with_its_message(tmp_path):
    pytest.importorskip("pytest_benchmark")
    project = tmp_path / "project"
    project.mkdir()
    (project / "mymodel.py").write_text(MODEL.replace("nn.Linear(16, n_outputs)", "nn.Linear(16, n_outputs), Boom()")
                                        + "\n\nclass Boom(nn.Module):\n    def forward(self, x):\n        if self.training and x.shape[0] == 32:\n"
                                          "            raise RuntimeError('broken at 32')\n        return x\n")
    (project / "test_speed.py").write_text(TEST)
    done = _pytest(project, "--benchmark-only")
    assert done.returncode == 1 and "1 of 2 points ended in error" in done.stdout and "broken at 32" in done.stdout


SPEC = '''
model = "net.py:make"
dataset-sizes = [300]
batch-sizes = [8, 32]
devices = ["cpu"]
steps = 60
'''


@pytest.mark.slow
def test_asv_init_then_asv_run_tracks_two_commits(tmp_path, cli, monkeypatch):
    asv = shutil.which("asv", path=str(Path(sys.executable).parent)) or shutil.which("asv")
    if asv is None or shutil.which("git") is None:
        pytest.skip("needs asv and git (pip install 'batchbench[test]')")
    pytest.importorskip("virtualenv")
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (repo / "net.py").write_text(MODEL)
    (repo / "batchbench.toml").write_text(SPEC)
    git("add", ".")
    git("commit", "-q", "-m", "first")
    (repo / "net.py").write_text(MODEL.replace("16", "24"))  # the second commit widens the model
    git("commit", "-q", "-am", "second")

    monkeypatch.chdir(repo)
    code, out, err = cli("asv", "init", "batchbench.toml")
    assert code == 0, err
    assert (repo / "asv.conf.json").is_file() and (repo / "benchmarks" / "batchbench_training.py").is_file()
    code, _, err = cli("asv", "init", "batchbench.toml")
    assert code == 0 and "kept" in err, "a second init keeps what is there"

    started = time.perf_counter()
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([asv, "machine", "--yes", "--machine", "box"], cwd=repo, check=True, capture_output=True, env=env)
    done = subprocess.run([asv, "run", "--quick", "--show-stderr", "--machine", "box", "ALL"], cwd=repo, capture_output=True, text=True, env=env, timeout=900)
    print(f"asv run over two commits: {time.perf_counter() - started:.0f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = [p for p in (repo / ".asv" / "results" / "box").glob("*.json") if p.name != "machine.json"]
    assert len(results) == 2, [p.name for p in results]
    widths = []
    for path in results:
        data = json.loads(path.read_text())["results"]
        speed = data["batchbench_training.TrainingStep.track_time_per_sample_s"][0]
        assert len(speed) == 2 and all(v is not None and v > 0 for v in speed), speed
        assert all(v > 0 for v in data["batchbench_training.TrainingStep.track_derivative_s"][0])
        assert "batchbench_training.TrainingStep.track_steps_to_target" in data
        widths.append(data["batchbench_training.TrainingStep.track_peak_device_mem_bytes"][0])
        assert not any("TrainingSuite" in name for name in data), "only the user's class is a benchmark"
    assert widths[0] != widths[1], "each commit's own model was measured"


def test_asv_init_refuses_what_asv_cannot_use(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("asv", "init")
    assert code == 2 and err.count("\n") == 1 and "is not in a git repository" in err
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "bad.toml").write_text('model = "net.py:make"\nbatch-sizes = [0]\n')
    code, _, err = cli("asv", "init", "bad.toml")
    assert code == 2 and err.count("\n") == 1 and "--batch-sizes" in err
    assert not (tmp_path / "asv.conf.json").exists(), "nothing is written for a broken spec"
    code, _, err = cli("asv", "init")
    assert code == 0 and (tmp_path / "batchbench.toml").is_file() and (tmp_path / "asv.conf.json").is_file()
