"""The ``batchbench`` pytest fixture: benchmark *your* model's training step in your own test
suite, reported through pytest-benchmark.

    def test_training_step(batchbench):
        points = batchbench(model=make_model, data=(X, y), batch_sizes=[32, 256], steps=200, devices=["cpu"])

It runs the points through the harness (``harness.api``, the options of ``batchbench run``)
and reports each point as its own pytest-benchmark benchmark, named
``test_training_step[B=32-N=1000-cpu]``: its timings are the harness's per-step samples
(data + derivative + update of every timed step after the burn-in, so pytest-benchmark's
min/median/IQR describe training steps, not calls of a function), and ``extra_info`` holds
the phase medians, throughput, steps and time to the target and the peaks. So
``pytest --benchmark-only``, ``--benchmark-autosave`` and ``--benchmark-compare`` work on
the user's model as on any benchmark. It returns the points as ``harness.benchmark`` does.

Registered through the ``pytest11`` entry point, so installing batchbench is enough. The
fixture needs pytest-benchmark's ``benchmark`` fixture (that is what makes
``--benchmark-only`` select these tests and ``--benchmark-skip`` skip them); where
pytest-benchmark is not installed or is disabled (``-p no:benchmark``) the test is skipped
with a line saying so. ``--benchmark-disable`` runs the points and reports nothing, as
pytest-benchmark does with its own fixture. A point that ends ``error`` fails the test (the
model is broken); an ``oom`` or ``diverged`` point is a result, not a failure: it gets no
benchmark (it has no steps to time) and keeps its status in the returned points.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.analysis.keys import NAMED_BY, configuration_fields
from harness.store.schema import Status

PHASE_INFO = ("data_s", "derivative_s", "update_s", "loss_check_s", "step_wall_s", "samples_per_s", "steps_per_s",
              "steps_to_target", "time_to_target_s", "compute_to_target_s", "final_eval_loss", "peak_device_mem_bytes",
              "peak_rss_bytes", "timed_steps", "step_wall_ci_pct")
"""Columns of a point copied into its benchmark's ``extra_info``."""
LABELS = configuration_fields()
"""Columns of a point that name it: its benchmark's ``params`` (and, where they vary, its name)."""


def pytest_configure(config) -> None:
    """Register the fixture that fits: reporting to pytest-benchmark when that plugin is
    active, else one that skips with the reason."""
    if config.pluginmanager.hasplugin("benchmark"):
        config.pluginmanager.register(_WithBenchmark(), "batchbench-fixture")
    else:
        config.pluginmanager.register(_WithoutBenchmark(), "batchbench-fixture")


class _WithBenchmark:
    @pytest.fixture
    def batchbench(self, request, benchmark):
        """Run points of your model through the harness; one pytest-benchmark benchmark each."""
        return BatchbenchFixture(request.node, benchmark)


class _WithoutBenchmark:
    @pytest.fixture
    def batchbench(self):
        pytest.skip("the batchbench fixture reports through pytest-benchmark, which is not active: pip install pytest-benchmark")


class BatchbenchFixture:
    """What the ``batchbench`` fixture returns: call it with ``harness.benchmark``'s arguments."""

    def __init__(self, node, benchmark):
        self._node = node
        self._benchmark = benchmark
        self.points = None
        benchmark._mode = "batchbench(...)"  # used, as far as pytest-benchmark's own checks go

    def __call__(self, model: Any = None, data: Any = None, **options: Any):
        from harness.api import run_tables

        options.setdefault("progress", False)
        tables = run_tables(model, data, tables=("points", "steps"), **options)
        points, steps = tables["points"], tables["steps"]
        self.points = points
        if not self._benchmark.disabled:
            self._report(points, steps)
        broken = points[points["status"] == Status.ERROR]
        if len(broken):
            first = broken.iloc[0]
            pytest.fail(f"batchbench: {len(broken)} of {len(points)} points ended in error; first (B={first['batch_size']}, {first['device']}): {first['error']}",
                        pytrace=False)
        return points

    def _report(self, points, steps) -> None:
        from pytest_benchmark.stats import Metadata

        from harness.analysis.compare import step_times

        times = step_times(steps)
        shown = [c for c in LABELS if c in points and (c in NAMED_BY or points[c].astype(str).nunique() > 1)]
        fixture = self._benchmark
        for point in points.to_dict("records"):
            if point["status"] != Status.OK or point["point_id"] not in times:
                continue
            param = "-".join(_label(c, point[c]) for c in shown)
            stats = Metadata(fixture, iterations=1, options={"disable_gc": False, "timer": "batchbench step clock", "min_rounds": 1,
                                                              "max_time": 0.0, "min_time": 0.0, "warmup": False})
            base = self._node.name.split("[", 1)[0]
            stats.name = f"{self._node.name}[{param}]" if "[" not in self._node.name else f"{self._node.name[:-1]}-{param}]"
            stats.fullname = f"{self._node.nodeid}[{param}]" if "[" not in self._node.nodeid else f"{self._node.nodeid[:-1]}-{param}]"
            stats.group = fixture.group or f"batchbench: {base}"
            stats.param = param
            stats.params = {c: _plain(point[c]) for c in LABELS if c in point}
            stats.extra_info = {**{c: _plain(point[c]) for c in PHASE_INFO if c in point}, "point_id": point["point_id"], "status": point["status"]}
            for seconds in times[point["point_id"]]:
                stats.update(float(seconds))
            fixture._add_stats(stats)


def _label(column: str, value) -> str:
    short = {"batch_size": "B", "dataset_size": "N", "world_size": "ranks", "repeat": "rep"}
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if column == "device" else f"{short.get(column, column)}={value}"


def _plain(value):
    """A JSON-friendly Python value (pytest-benchmark saves ``extra_info`` as JSON): numpy
    scalars as Python ones, NaN as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
