"""``harness.benchmark``: a sweep from Python (a notebook, a script, a test), with the CLI's
options and validation, returning the points as the DataFrame ``batchbench export`` writes.

    import harness
    points = harness.benchmark(model=make, data=(X, y), batch_sizes=[32, 256], steps=200, devices=["cpu"])

``model``: a factory (called like a plug-in, with the keywords it takes of ``n_features``,
``input_shape``, ``n_outputs``; it may return a ``(module, loss_fn)`` pair), an ``nn.Module``
(deep-copied for every point, so each starts from the same weights) or a built-in name.
``data``: ``(X, y)`` numpy arrays or tensors (shapes as in a ``.npz``), or a data set name or
file. Every other option is a ``batchbench run`` flag with ``_`` for ``-`` (``lr_policy="tuned"``,
``target="rel:0.2"``, ``check_every=10``); values may be numbers, strings or lists. A bad value
raises ``harness.errors.SpecError`` with the same text the CLI prints.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from harness import datasets, models
from harness.errors import SpecError
from harness.plan import plan
from harness.spec import FIELDS, build_spec
from harness.store import Store
from harness.sweep import run_sweep


def benchmark(model: Any = "mlp", data: Any = "digits", *, store: str | Path | None = None, progress: bool | None = None, **options: Any):
    """Run the sweep and return its points (one row per point, the export's columns). With
    ``store`` the run is kept there (and ``batchbench report --store`` can show it); without,
    it lives in a temporary store that is removed."""
    unknown = sorted(set(options) - set(FIELDS) - {"dataset", "model"})
    if unknown:
        raise SpecError(unknown[0], f"is not an option; options are the `batchbench run` flags: {', '.join(FIELDS)}")
    if "dataset" in options or "model" in options:
        raise SpecError("dataset" if "dataset" in options else "model", "give it as data= / model=")
    world = str(options.get("world_sizes", 1)).strip("[]() ")
    if world not in ("1", ""):
        raise SpecError("world_sizes", "harness.benchmark runs single-process points; use `batchbench run` with a plug-in file for data-parallel ones")
    dataset = datasets.register_arrays(*data) if isinstance(data, (tuple, list)) else str(data)
    model_name = model if isinstance(model, str) else models.register(model)
    values = {name: (list(value) if isinstance(value, (tuple, list)) else value) for name, value in options.items() if value is not None}
    the_plan = plan(build_spec(cli_values={**values, "dataset": dataset, "model": model_name}))
    if store is not None:
        return _run(the_plan, Path(store), progress)
    with tempfile.TemporaryDirectory(prefix="batchbench-") as folder:
        return _run(the_plan, Path(folder) / "run.sqlite", progress)


def _run(the_plan, path: Path, progress: bool | None):
    with Store(path) as store:
        run_id = run_sweep(the_plan, store, progress=progress)
        return store.load("points", [run_id])
