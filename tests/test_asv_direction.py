"""The asv suite ``batchbench asv init`` writes reports every quantity in the direction asv reads
it: asv takes every ``track_`` value as lower-is-better, so each metric is a cost (seconds, bytes
or steps, as its name says), seconds are rounded and counts whole, and asv's own comparison flags
a slower, bigger model as a regression."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.integrations import asv_suite

MODEL = '''
from torch import nn


def make(n_features, n_outputs):
    return nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(), nn.Linear(16, n_outputs))
'''

SPEC = '''
model = "net.py:make"
dataset-sizes = [300]
batch-sizes = [8, 32]
devices = ["cpu"]
steps = 40
'''

UNIT_BY_SUFFIX = {"_s": "seconds", "_bytes": "bytes", "steps_to_target": "steps"}
"""The naming rule (docs/integrations.md): a metric's name says its unit, and every unit is a cost."""

ROW = {
    "data_s": 0.000123456789, "derivative_s": 0.00234567891, "update_s": 0.000345678912, "loss_check_s": 0.0123456789,
    "samples_per_s": 76627.29763237246, "steps_to_target": 120, "compute_to_target_s": 1.23456789,
    "peak_device_mem_bytes": 123456789.0, "peak_rss_bytes": 987654321,
}
"""A point's row as the store gives it: unrounded floats (the slower commit's is ``_slower``)."""


def _slower(row: dict) -> dict:
    """The same point on a model 4x wider: every phase 4x longer, a quarter of the throughput,
    more memory, and more steps to the target."""
    out = {k: v * 4 for k, v in row.items()}
    out.update(samples_per_s=row["samples_per_s"] / 4, steps_to_target=row["steps_to_target"] + 30)
    return out


@pytest.fixture
def suite(tmp_path, cli, monkeypatch):
    """The module ``batchbench asv init`` writes into a throwaway git repository, imported."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "net.py").write_text(MODEL)
    (repo / "batchbench.toml").write_text(SPEC)
    monkeypatch.chdir(repo)
    code, _, err = cli("asv", "init", "batchbench.toml")
    assert code == 0, err
    path = repo / "benchmarks" / "batchbench_training.py"
    spec = importlib.util.spec_from_file_location("batchbench_training_direction", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tracks(cls) -> dict:
    return {name: getattr(cls, name) for name in dir(cls) if name.startswith("track_")}


def _rounded(value) -> bool:
    return isinstance(value, int) or math.isnan(value) or value == float(f"{value:.4g}")


def test_every_metric_is_a_cost_named_by_its_unit(suite):
    tracks = _tracks(suite.TrainingStep)
    for name, method in tracks.items():
        assert not name.endswith("_per_s"), f"{name} is a rate: asv would read its fall as an improvement"
        units = [unit for suffix, unit in UNIT_BY_SUFFIX.items() if name.endswith(suffix)]
        assert units == [method.unit], f"{name}: unit {method.unit!r}, its name says {units}"
    assert "track_time_per_sample_s" in tracks, "throughput is tracked as its inverse"


def test_values_are_rounded_seconds_and_whole_counts(suite):
    step = suite.TrainingStep()
    step.point = ROW
    values = {name: method(step, {}) for name, method in _tracks(suite.TrainingStep).items()}
    assert all(_rounded(v) for v in values.values()), values
    assert values["track_data_s"] == 0.0001235 and values["track_time_to_target_s"] == 1.235
    assert values["track_steps_to_target"] == 120 and values["track_peak_device_mem_bytes"] == 123456789
    assert values["track_time_per_sample_s"] == 1.305e-05, "1 / 76627.29763237246 samples/s, to 4 digits"
    step.point = {**ROW, "steps_to_target": None, "peak_device_mem_bytes": float("nan"), "samples_per_s": None}
    for name in ("track_steps_to_target", "track_peak_device_mem_bytes", "track_time_per_sample_s"):
        assert math.isnan(getattr(step, name)({})), f"{name}: a null column is n/a"


def test_a_measured_sweep_reports_rounded_values(suite):
    step = suite.TrainingStep()
    results = step.setup_cache()
    measured = 0
    for values in itertools.product(*suite.TrainingStep.params):
        try:
            step.setup(results, *values)
        except NotImplementedError:  # a combination of parameters that is not a point
            continue
        got = {name: method(step, results, *values) for name, method in _tracks(suite.TrainingStep).items()}
        assert all(_rounded(v) for v in got.values()), got
        assert got["track_derivative_s"] > 0 and got["track_peak_rss_bytes"] > 0, got
        measured += 1
    assert measured == 2, "both points of the spec were measured"


def _discovered(benchmarks_dir: Path) -> list[dict]:
    """What asv writes into benchmarks.json for the suite: asv's own discovery, in a process of
    its own (batchbench's repository has a ``benchmarks`` package too)."""
    import harness

    code = f"import sys; from asv_runner.discovery import list_benchmarks; list_benchmarks({str(benchmarks_dir)!r}, sys.stdout)"
    env = {**os.environ, "PYTHONPATH": str(Path(harness.__file__).resolve().parents[1])}  # the batchbench under test
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=benchmarks_dir.parent, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _resultset(benchmarks: list[dict], suite, row: dict):
    """One commit's results as asv's comparison reads them, each value from the suite's own method."""
    step = suite.TrainingStep()
    step.point = row
    for bench in benchmarks:
        combinations = math.prod(len(p) for p in bench["params"])
        value = getattr(step, bench["name"].rsplit(".", 1)[1])({})
        yield bench["name"], bench["params"], [value] * combinations, None, None, bench["version"], "box", "existing-py"


def test_asv_compare_flags_a_slower_model_as_a_regression(suite, tmp_path, capsys):
    pytest.importorskip("asv")
    from asv import util
    from asv.benchmarks import Benchmarks
    from asv.commands.compare import Compare
    from asv.config import Config

    benchmarks = [b for b in _discovered(Path(suite.__file__).parent) if ".track_" in b["name"]]
    conf = Config()
    conf.results_dir = str(tmp_path / "results")
    conf.benchmark_dir = str(Path(suite.__file__).parent)
    Path(conf.results_dir).mkdir()
    util.write_json(Benchmarks.get_benchmark_file_path(conf.results_dir), {b["name"]: b for b in benchmarks}, api_version=Benchmarks.api_version)
    worsened, improved = Compare.print_table(conf, "a" * 40, "b" * 40, factor=1.1, split=True, machine="box",
                                             resultset_1=_resultset(benchmarks, suite, ROW), resultset_2=_resultset(benchmarks, suite, _slower(ROW)))
    table = capsys.readouterr().out
    assert worsened and not improved, table
    assert {b["unit"] for b in benchmarks} <= {"seconds", "bytes", "steps"}, "asv sees the units"
    assert {b["version"] for b in benchmarks} == {asv_suite.VERSION}, "and a version that survives rewording the methods"
    assert "improved" not in table and "stayed the same" not in table, table
    assert "13.1μs" in table and "52.2μs" in table, "time per sample, as asv prints seconds"
    rows = sum(math.prod(len(p) for p in b["params"]) for b in benchmarks)
    assert table.count("| +") == rows, table
