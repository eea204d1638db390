"""``harness.benchmark``: a sweep from Python (a notebook, a script, a test), with the CLI's
options and validation, returning the points as the DataFrame ``batchbench export`` writes.

    import harness
    points = harness.benchmark(model=make, data=(X, y), batch_sizes=[32, 256], steps=200, devices=["cpu"])

``model``: a factory (called like a plug-in, with the keywords it takes of ``n_features``,
``input_shape``, ``n_outputs``; it may return a ``(module, loss_fn)`` pair), an ``nn.Module``
(deep-copied for every point, so each starts from the same weights) or a built-in name.
``data``: ``(X, y)`` numpy arrays or tensors (shapes as in a ``.npz``), a map-style torch
``Dataset`` of ``(x, y)`` items or a ``(train, check)`` pair of them (read through a DataLoader:
the pipeline is what ``data`` times), or a data set name or file. Every other option is a ``batchbench run`` flag with ``_`` for ``-`` (``lr_policy="tuned"``,
``target="rel:0.2"``, ``check_every=10``); values may be numbers, strings or lists. A bad value
raises ``harness.errors.SpecError`` with the same text the CLI prints.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.workload import datasets, pipelines
from harness.workload import models
from harness.errors import SpecError
from harness.drivers.plan import plan
from harness.config.axes import FIELDS
from harness.config.execution import Executor, parse_executor
from harness.config.spec import build_spec
from harness.store.sqlite import Store
from harness.drivers.sweep import run_sweep

if TYPE_CHECKING:
    import pandas as pd

    from harness.analysis.recommend import Recommendation


@dataclass(frozen=True)
class Answer:
    """One configuration's answer (the points of a data set, size, device, model, recipe...
    that differ only in batch size): what ``batchbench analyze`` says for it."""

    configuration: str
    """The configuration in words (``digits · 1797 samples · cpu``)."""
    key: dict[str, Any]
    """Its value of each configuration column."""
    recommendation: Recommendation | None
    """The batch size to train with, the ones tied with it, the time to target and the caveats;
    None where no batch size reached the target with a measured step time (``reason`` says why)."""
    reason: str

    @property
    def batch_size(self) -> int | None:
        return None if self.recommendation is None else self.recommendation.batch_size

    def __str__(self) -> str:
        return f"{self.configuration}: {self.reason}"


@dataclass(frozen=True)
class Sweep:
    """A finished sweep: its points and checks (the export's columns) and an answer a configuration."""

    points: pd.DataFrame
    checks: pd.DataFrame
    answers: tuple[Answer, ...]

    @property
    def batch_size(self) -> int | None:
        """The recommended batch size where the sweep has one configuration (else ``ValueError``:
        read ``answers``); None where it has no answer."""
        if len(self.answers) > 1:
            raise ValueError(f"the sweep has {len(self.answers)} configurations: read .answers, one each")
        return self.answers[0].batch_size if self.answers else None

    def __str__(self) -> str:
        return "\n".join(map(str, self.answers)) or "no point finished: nothing to answer"


def benchmark(model: Any = None, data: Any = None, *, spec: str | Path | None = None, store: str | Path | None = None,
              progress: bool | None = None, executor: str = "local", **options: Any) -> pd.DataFrame:
    """Run the sweep and return its points (one row per point, the export's columns). With
    ``store`` the run is kept there (and ``batchbench report --store`` can show it); without,
    it lives in a temporary store that is removed. ``spec``: a spec file whose keys the other
    arguments override, as flags override it for ``batchbench run``. ``executor``: ``local``,
    ``ray``, ``ray:auto`` or ``ray:HOST:PORT``, as ``--executor`` (a Ray instance this process
    already started is joined). ``sweep`` takes the same arguments and adds the answer."""
    return run_tables(model, data, spec=spec, store=store, progress=progress, executor=executor, **options)["points"]


def sweep(model: Any = None, data: Any = None, *, spec: str | Path | None = None, store: str | Path | None = None,
          progress: bool | None = None, executor: str = "local", **options: Any) -> Sweep:
    """``benchmark``, returning the points, their loss checks and the answer for each
    configuration: ``harness.sweep(...).batch_size``, ``print(harness.sweep(...))``."""
    tables = run_tables(model, data, spec=spec, store=store, progress=progress, executor=executor, tables=("points", "checks"), **options)
    return Sweep(tables["points"], tables["checks"], answers(tables["points"], tables["checks"]))


def answers(points: pd.DataFrame, checks: pd.DataFrame) -> tuple[Answer, ...]:
    """An answer per configuration of stored points (``Store.load("points")``, ``("checks")``)."""
    from harness.analysis.convergence import analyze
    from harness.analysis.keys import group_label
    from harness.analysis.recommend import no_answer, recommend

    out = []
    for group in analyze(points, checks):
        advice = recommend(group)
        out.append(Answer(group_label(group.key), dict(group.key), advice, no_answer(group) if advice is None else advice.sentence()))
    return tuple(out)


def run_tables(model: Any = None, data: Any = None, *, spec: str | Path | None = None, store: str | Path | None = None,
               progress: bool | None = None, tables: tuple[str, ...] = ("points",), executor: str = "local", **options: Any) -> dict:
    """``benchmark``, returning the run's ``tables`` (``points``, ``checks``, ``steps``,
    ``samples``) by name: the pytest fixture needs the timed steps, the asv suite a spec file."""
    from harness.config.spec import load_toml

    unknown = sorted(set(options) - set(FIELDS) - {"dataset", "model"})
    if unknown:
        raise SpecError(unknown[0], f"is not an option; options are the `batchbench run` flags: {', '.join(FIELDS)}")
    if "dataset" in options or "model" in options:
        raise SpecError("dataset" if "dataset" in options else "model", "give it as data= / model=")
    world = str(options.get("world_sizes", 1)).strip("[]() ")
    if world not in ("1", ""):
        raise SpecError("world_sizes", "harness.benchmark runs single-process points; use `batchbench run` with a plug-in file for data-parallel ones")
    values = {name: (list(value) if isinstance(value, (tuple, list)) else value) for name, value in options.items() if value is not None}
    source = factory = None
    if data is not None:  # arrays are handed to the plan as objects; a name or a file is resolved as the CLI resolves it
        source = _source(data)
        values["dataset"] = source.name if source is not None else str(data)
    if model is not None:
        name, factory = (model, None) if isinstance(model, str) else models.from_object(model)
        values["model"] = name
    where = parse_executor(executor)
    the_plan = plan(build_spec(load_toml(spec) if spec is not None else {}, cli_values=values), factory=factory, source=source)
    if store is not None:
        return _run(the_plan, Path(store), progress, tables, where)
    with tempfile.TemporaryDirectory(prefix="batchbench-") as folder:
        return _run(the_plan, Path(folder) / "run.sqlite", progress, tables, where)


def _source(data: Any):
    """``data=`` as the plan takes it: a torch Dataset or a ``(train, check)`` pair of them (a
    pipeline), ``(X, y)`` arrays, or None for a name or a file (resolved as the CLI would)."""
    if pipelines.is_dataset(data) or (isinstance(data, (tuple, list)) and len(data) == 2 and all(map(pipelines.is_dataset, data))):
        first = data if pipelines.is_dataset(data) else data[0]
        return pipelines.from_objects(data, f"dataset:{type(first).__name__}", flag="data")
    if isinstance(data, (tuple, list)):
        return datasets.from_arrays(*data)
    return None


def _run(the_plan, path: Path, progress: bool | None, tables: tuple[str, ...], executor: Executor) -> dict:
    with Store(path) as store:
        run_id = run_sweep(the_plan, store, progress=progress, executor=executor)
        return {table: store.load(table, [run_id]) for table in tables}
