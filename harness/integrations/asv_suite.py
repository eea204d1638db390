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


def _metric(name: str, column: str, unit: str):
    """A ``track_`` method returning the point's ``column`` (NaN where it is null: a target
    not reached, a peak not measured on this device)."""

    def track(self, results, *params):
        value = self.point.get(column)
        return float("nan") if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    track.__name__ = track.__qualname__ = name
    track.unit = unit
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
    "track_data_s": ("data_s", "seconds"), "track_derivative_s": ("derivative_s", "seconds"),
    "track_update_s": ("update_s", "seconds"), "track_loss_check_s": ("loss_check_s", "seconds"),
    "track_samples_per_s": ("samples_per_s", "samples/s"), "track_steps_to_target": ("steps_to_target", "steps"),
    "track_time_to_target_s": ("compute_to_target_s", "seconds"),  # training time: loss checks left out
    "track_peak_device_mem_bytes": ("peak_device_mem_bytes", "bytes"), "track_peak_rss_bytes": ("peak_rss_bytes", "bytes"),
}
"""asv metric -> (points column, unit): one ``track_`` method of ``TrainingSuite`` each."""
for _name, (_column, _unit) in METRICS.items():
    setattr(TrainingSuite, _name, _metric(_name, _column, _unit))
del _name, _column, _unit
