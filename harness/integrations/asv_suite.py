"""The asv benchmark class behind the suite ``batchbench asv init`` writes into a user's
repository: every point of the user's spec is one asv parameter set, and one harness run per
commit (``setup_cache``) feeds every ``track_`` metric of every parameter set.

The spec is read from the working tree (so the parameter sets stay the same across commits);
the model and data files it names are resolved in the checkout of the commit being
benchmarked (``asv_env`` puts it on ``sys.path`` and names it in ``BATCHBENCH_ASV_CHECKOUT``),
so the history tracks the user's training step as their code changes. Outside asv (``asv
check``, a plain import) the spec's own folder stands in for the checkout.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

from harness.analysis.keys import NAMED_BY, configuration_fields
from harness.store.schema import Status



def _plan(spec_file: str, root: str):
    from harness.drivers.plan import plan
    from harness.config.spec import build_spec, load_toml

    with _in_checkout(root):
        return plan(build_spec(load_toml(spec_file), {}))


class _in_checkout:
    """Run with the checkout as the working folder, where the spec's relative paths point
    (under asv, the commit's copy; elsewhere the repository's working tree, ``root``)."""

    def __init__(self, root: str):
        self.folder = os.environ.get("BATCHBENCH_ASV_CHECKOUT") or root

    def __enter__(self):
        self.previous = os.getcwd()
        os.chdir(self.folder)

    def __exit__(self, *exc):
        os.chdir(self.previous)


def parameters(spec_file: str, root: str) -> tuple[list[list], list[str]]:
    """asv's ``params`` and ``param_names`` for the points of this spec. ``asv init`` writes
    them into the suite as literals, so that the many short processes asv starts (one per
    ``track_`` metric and commit) import neither torch nor the data."""
    points = _plan(spec_file, root).points
    names = [n for n in configuration_fields() if n in NAMED_BY or len({getattr(p, n) for p in points}) > 1]
    return [sorted({getattr(p, n) for p in points}, key=_order) for n in names], names


def _order(value):
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def measure(spec_file: str, root: str, names: list[str]) -> dict[tuple, dict]:
    """Run the spec's sweep once (into a temporary store, so relative targets are settled as
    ``batchbench run`` settles them) and return each ok point's row by its parameter values."""
    from harness.api import run_tables

    with _in_checkout(root):
        points = run_tables(spec=spec_file, progress=False)["points"]
    out = {}
    for row in points.to_dict("records"):
        if row["status"] == Status.OK:
            out[tuple(str(_plain(row[n])) for n in names)] = row
    return out


def _plain(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Metric(NamedTuple):
    """What one ``track_`` method reports: a ``points`` column, as a cost. asv ranks every
    ``track_`` value lower-is-better (a rise is a regression) and has no attribute to say
    otherwise, so ``unit`` is "seconds" (asv prints a time; rounded to ``SIGNIFICANT`` digits
    here), "bytes" (asv prints a size) or "steps" (both exact counts), never a rate."""

    column: str
    unit: str
    reciprocal: bool = False  # the column is a rate; the metric is its inverse (a cost)

SIGNIFICANT = 4

VERSION = "batchbench-2"
"""asv's ``version`` of every metric: results with another version are left out of ``asv
publish`` and marked not comparable by ``asv compare``. Without it asv hashes the source of the
``track_``, ``setup`` and ``setup_cache`` methods, so a batchbench release that only reworded them
would hide a history; change it when what a metric measures changes."""


def value_of(row: dict, metric: Metric) -> float | int:
    """The metric's value for a point's row: NaN where the column is null (a target not
    reached, a peak not measured on this device); seconds rounded, counts whole."""
    value = row.get(metric.column)
    if value is None or math.isnan(value) or (metric.reciprocal and value <= 0):
        return float("nan")
    if metric.reciprocal:
        value = 1 / value
    if metric.unit == "seconds":
        return float(f"{value:.{SIGNIFICANT}g}")
    return int(round(value))


def _metric(name: str, metric: Metric):
    """A ``track_`` method returning ``value_of`` the point's row."""

    def track(self, results, *params):
        return value_of(self.point, metric)

    track.__name__ = track.__qualname__ = name
    track.unit = metric.unit  # type: ignore[attr-defined]
    track.version = VERSION  # type: ignore[attr-defined]
    return track


class TrainingSuite:
    """Subclass it with ``spec_file``, ``root`` (the repository's top folder) and ``params``,
    ``param_names`` from ``parameters`` (the generated module does); every ``track_`` method
    reads the one harness run. A parameter set the spec no longer has, or whose point did not
    finish ok, is skipped (asv shows n/a)."""

    spec_file: str = "batchbench.toml"
    root: str = "."
    params: list = []
    param_names: list = []
    timeout = 3600  # the whole sweep runs in setup_cache
    number = 1
    repeat = 1

    def setup_cache(self):
        return measure(self.spec_file, self.root, list(self.param_names))

    def setup(self, results, *params):
        key = tuple(str(p) for p in params)
        if key not in results:
            raise NotImplementedError("not a point of the spec, or it did not finish ok")  # asv skips the parameter set
        self.point = results[key]


METRICS = {
    "track_data_s": Metric("data_s", "seconds"), "track_derivative_s": Metric("derivative_s", "seconds"),
    "track_update_s": Metric("update_s", "seconds"), "track_loss_check_s": Metric("loss_check_s", "seconds"),
    "track_time_per_sample_s": Metric("samples_per_s", "seconds", reciprocal=True),  # 1 / throughput: a slower step rises
    "track_steps_to_target": Metric("steps_to_target", "steps"),
    "track_time_to_target_s": Metric("compute_to_target_s", "seconds"),  # training time: loss checks left out
    "track_peak_device_mem_bytes": Metric("peak_device_mem_bytes", "bytes"), "track_peak_rss_bytes": Metric("peak_rss_bytes", "bytes"),
}
"""asv metric -> what it reports: one ``track_`` method of ``TrainingSuite`` each. A name ends in
``_s`` (seconds), ``_bytes`` (bytes) or ``steps_to_target`` (steps); no rate (``_per_s``) is
tracked, since asv would read its fall as an improvement."""
for _name, _what in METRICS.items():
    setattr(TrainingSuite, _name, _metric(_name, _what))
del _name, _what
