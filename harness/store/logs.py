"""Points written where users look: TensorBoard event files and MLflow runs.

``batchbench run --log tensorboard[:DIR] --log mlflow[:URI]`` writes each point as it is stored;
``batchbench export --format tensorboard|mlflow`` writes the points of a store. A point becomes
one TensorBoard run (a folder) or one MLflow run, named by its label, with

- its configuration: the point's recorded axes, as MLflow params and tags (the run and point
  ids) or a TensorBoard text summary and hparams;
- its loss curve: ``loss/check`` (and ``accuracy/check``, ``loss/train``, ``noise_scale``) at
  each check's step;
- its measurements, once, at its last step: the phase medians (``time/data_s`` ...), step time,
  throughput, peak memory and, where it reached its target, ``steps_to_target`` and
  ``time_to_target_s``.

A sweep's run is the points' parent: an MLflow run named by the run id, the sweep's spec as its
params, each point a nested child run; in TensorBoard the ``DIR/<run id>/`` folder itself, its
spec a text summary. At the sweep's end (``settle``) each log gets what only the whole sweep
settles: a relative target's (``--target rel:F``) ``target_loss``, ``steps_to_target`` and
``time_to_target_s`` per point, and the answer per configuration (the recommended batch size,
its time and steps to the target, the sentence) on the parent: ``answer/batch_size/<configuration>``
and the ``answer`` text (MLflow: the parent run's description).

Both packages are optional extras (``pip install tensorboard`` / ``mlflow-skinny``), imported
only when asked for; a missing one is a one-line error before anything runs.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.config.axes import AXES
from harness.errors import SpecError
from harness.store.schema import Status

KINDS = {"tensorboard": "runs", "mlflow": "sqlite:///mlflow.db"}
"""Each log's default place: TensorBoard's own default folder, MLflow's local database."""

CURVES = {"eval_loss": "loss/check", "eval_acc": "accuracy/check", "train_loss": "loss/train", "noise_scale": "noise_scale"}
SETTLED = ("target_loss", "steps_to_target", "time_to_target_s")
"""What a relative target knows only at the sweep's end (``settle``); an absolute one at the point's."""
SUMMARY = ("data_s", "derivative_s", "update_s", "loss_check_s", "step_wall_s", "samples_per_s", "steps_per_s",
           "peak_device_mem_bytes", "peak_rss_bytes", *SETTLED, "final_eval_loss", "final_train_loss", "mfu")
CONFIGURATION = ("run_id", "point_id", "status", *(a.column_name for a in AXES if a.column_name), "train_size", "n_params")


@dataclass(frozen=True)
class LogTarget:
    kind: str
    where: str

    def text(self) -> str:
        return f"{self.kind}:{self.where}"


def parse_logs(values: Sequence[str] | None, flag: str = "--log") -> tuple[LogTarget, ...]:
    """``tensorboard``, ``tensorboard:DIR``, ``mlflow`` or ``mlflow:URI``, each at most once; the
    package each needs must import."""
    targets: list[LogTarget] = []
    for value in values or ():
        kind, _, where = str(value).strip().partition(":")
        if kind not in KINDS:
            raise SpecError(flag, f"{value!r} is not a log; use tensorboard[:DIR] or mlflow[:URI]")
        if any(t.kind == kind for t in targets):
            raise SpecError(flag, f"{kind} is given twice; give each log once")
        _require(kind, flag)
        targets.append(LogTarget(kind, where or KINDS[kind]))
    return tuple(targets)


def _require(kind: str, flag: str) -> None:
    import importlib.util

    module, package = ("tensorboard", "tensorboard") if kind == "tensorboard" else ("mlflow", "mlflow-skinny")
    if importlib.util.find_spec(module) is None:
        raise SpecError(flag, f"{kind} logs need the {package} package: pip install {package}")


@dataclass(frozen=True)
class Answer:
    """A configuration's answer, as the analysis gives it (the driver hands it in: the store
    does not import the analysis)."""

    configuration: str
    """The configuration in words (``digits · 1797 samples · cpu``)."""
    batch_size: int | None
    """The recommended batch size; None where there is no answer (``text`` says why)."""
    tied: tuple[int, ...] = ()
    time_to_target_s: float | None = None
    steps_to_target: float | None = None
    text: str = ""

    def metrics(self) -> dict[str, float]:
        """``answer/<what>/<configuration>``: the numbers, where there are some."""
        values = {"batch_size": self.batch_size, "time_to_target_s": self.time_to_target_s, "steps_to_target": self.steps_to_target}
        name = _key(self.configuration)
        return {f"answer/{what}/{name}": number for what, value in values.items() if (number := _number(value)) is not None}


def open_logs(targets: Sequence[LogTarget], run_id: str, spec_json: str | None = None) -> list:
    """A log per target for the run ``run_id``; ``spec_json`` (the run's stored spec) becomes the
    parent's params or text."""
    spec = _spec(spec_json)
    return [TensorBoardLog(Path(t.where), run_id, spec) if t.kind == "tensorboard" else MlflowLog(t.where, run_id, spec) for t in targets]


def _spec(spec_json: str | None) -> dict[str, str]:
    """The spec's given values, each as text (a list as its comma list)."""
    try:
        values = json.loads(spec_json) if spec_json else {}
    except json.JSONDecodeError:
        return {}
    out = {}
    for key, value in (values.items() if isinstance(values, dict) else ()):
        if value is not None:
            out[str(key)] = ",".join(map(str, value)) if isinstance(value, list) else json.dumps(value) if isinstance(value, dict) else str(value)
    return out


def _key(text: str) -> str:
    """Text as a metric name's part (MLflow allows letters, digits, ``_-. /``)."""
    return " ".join(re.sub(r"[^A-Za-z0-9_.\- ]+", " ", text).split())[:120] or "all"


def _answer_text(answers: Sequence[Answer]) -> str:
    return "\n\n".join(f"**{a.configuration}**: {a.text}" for a in answers)


def _last_step(row: dict[str, Any]) -> int:
    return int(_number(row.get("steps")) or 0)


def _to_settle(row: dict[str, Any], logged: dict[str, float]) -> dict[str, float]:
    """A point's settled values the log does not hold yet (or holds otherwise)."""
    values = {column: _number(row.get(column)) for column in SETTLED}
    return {column: value for column, value in values.items() if value is not None and logged.get(column) != value}


def label(row: dict[str, Any]) -> str:
    """A point's name in a log: what tells it from its neighbours, then its id."""
    parts = [f"B{row.get('batch_size')}", f"n{row.get('dataset_size')}", str(row.get("device", "")).replace(":", ""),
             f"lr{row.get('lr'):g}" if isinstance(row.get("lr"), (int, float)) else "", f"r{row.get('repeat', 0)}"]
    return "-".join(p for p in parts if p) + f"-{row.get('point_id')}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _configuration(row: dict[str, Any]) -> dict[str, str]:
    return {k: str(row[k]) for k in CONFIGURATION if k in row and row[k] is not None and not (isinstance(row[k], float) and math.isnan(row[k]))}


class TensorBoardLog:
    """A folder per point under ``DIR/<run id>/`` (TensorBoard lists them side by side); the
    sweep's own summaries (its spec, its answer) in ``DIR/<run id>/`` itself."""

    def __init__(self, folder: Path, run_id: str, spec: dict[str, str] | None = None):
        self.folder, self.run_id = folder / run_id, run_id
        self._folders: dict[str, Path] = {}
        self._logged: dict[str, dict[str, float]] = {}
        if spec:
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(log_dir=str(self.folder)) as writer:
                writer.add_text("spec", "\n".join(f"{k}: {v}  " for k, v in spec.items()), 0)

    def point(self, row: dict[str, Any], checks: Sequence[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        point_id = str(row.get("point_id"))
        self._folders[point_id] = self.folder / label(row)
        with SummaryWriter(log_dir=str(self._folders[point_id])) as writer:
            for check in checks:
                for column, tag in CURVES.items():
                    value = _number(check.get(column))
                    if value is not None:
                        writer.add_scalar(tag, value, int(check["step"]))
            last = _last_step(row)
            for column in SUMMARY:
                value = _number(row.get(column))
                if value is not None:
                    writer.add_scalar(f"point/{column}", value, last)
            writer.add_text("configuration", "\n".join(f"{k}: {v}  " for k, v in _configuration(row).items()), last)
        self._logged[point_id] = {column: value for column in SETTLED if (value := _number(row.get(column))) is not None}

    def settle(self, points: Sequence[dict[str, Any]], answers: Sequence[Answer] = ()) -> None:
        """The sweep's end: each point's settled values (``point/steps_to_target`` ..., at its last
        step) where they are new, and the answer in the run's folder."""
        from torch.utils.tensorboard import SummaryWriter

        for row in points:
            point_id = str(row.get("point_id"))
            values = _to_settle(row, self._logged.get(point_id, {}))
            if not values:
                continue
            with SummaryWriter(log_dir=str(self._folders.get(point_id) or self.folder / label(row))) as writer:
                for column, value in values.items():
                    writer.add_scalar(f"point/{column}", value, _last_step(row))
            self._logged.setdefault(point_id, {}).update(values)
        if answers:
            with SummaryWriter(log_dir=str(self.folder)) as writer:
                for answer in answers:
                    for tag, value in answer.metrics().items():
                        writer.add_scalar(tag, value, 0)
                writer.add_text("answer", _answer_text(answers), 0)

    def close(self) -> None:
        pass


class MlflowLog:
    """The sweep's MLflow run (named by its run id; the spec as params), each point a child run
    nested in it, in the experiment ``batchbench``; tags name the batchbench run and point. A
    resumed sweep (the same run id) finds its parent run again."""

    EXPERIMENT = "batchbench"
    BATCH = 100
    """Params (and tags) MLflow takes in one batch; metrics: 1000."""

    def __init__(self, uri: str, run_id: str, spec: dict[str, str] | None = None):
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its database set-up chatter is not the user's business
        self.client, self.run_id = MlflowClient(tracking_uri=uri), run_id
        self._children: dict[str, str] = {}
        self._logged: dict[str, dict[str, float]] = {}
        try:
            found = self.client.get_experiment_by_name(self.EXPERIMENT)
            self.experiment = found.experiment_id if found is not None else self.client.create_experiment(self.EXPERIMENT)
            self.parent = self._parent(spec or {})
        except Exception as exc:  # the tracking store's own errors: a bad URI, a file store MLflow refuses, ...
            raise SpecError("--log", f"mlflow at {uri}: {' '.join(str(exc).split())[:300]}") from None

    def _parent(self, spec: dict[str, str]) -> str:
        """The sweep's run: the one a resumed sweep made before, or a new one with the spec as params."""
        from mlflow.entities import Param

        found = self.client.search_runs([self.experiment], max_results=1, filter_string=f"tags.`batchbench.run_id` = '{self.run_id}' "
                                                                                         f"and tags.`batchbench.kind` = 'sweep'")
        if found:
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        run = self.client.create_run(self.experiment, run_name=self.run_id, tags={"batchbench.run_id": self.run_id, "batchbench.kind": "sweep"})
        params = [Param(k, v[:500]) for k, v in spec.items()]
        for start in range(0, len(params), self.BATCH):
            self.client.log_batch(run.info.run_id, params=params[start:start + self.BATCH])
        return run.info.run_id

    def point(self, row: dict[str, Any], checks: Sequence[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param

        point_id = str(row.get("point_id"))
        run = self.client.create_run(self.experiment, run_name=label(row), tags={
            "batchbench.run_id": self.run_id, "batchbench.point_id": point_id, "batchbench.kind": "point", "mlflow.parentRunId": self.parent})
        self._children[point_id] = run.info.run_id
        metrics = [Metric(column, value, 0, int(check["step"])) for check in checks for column in CURVES
                   if (value := _number(check.get(column))) is not None]
        last = _last_step(row)
        metrics += [Metric(column, value, 0, last) for column in SUMMARY if (value := _number(row.get(column))) is not None]
        params = [Param(k, v[:500]) for k, v in _configuration(row).items()]
        for start in range(0, max(len(metrics), 1), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000], params=params if start == 0 else [])
        self.client.set_terminated(run.info.run_id, status="FINISHED" if row.get("status") == Status.OK else "FAILED")
        self._logged[point_id] = {column: value for column in SETTLED if (value := _number(row.get(column))) is not None}

    def _find_children(self) -> None:
        """The child runs a resumed sweep's earlier process made, by their point ids, with the
        settled values they hold."""
        token = None
        while True:
            page = self.client.search_runs([self.experiment], filter_string=f"tags.`mlflow.parentRunId` = '{self.parent}'",
                                           max_results=1000, page_token=token)
            for run in page:
                point_id = run.data.tags.get("batchbench.point_id", "")
                self._children.setdefault(point_id, run.info.run_id)
                self._logged.setdefault(point_id, {k: v for k, v in run.data.metrics.items() if k in SETTLED})
            token = page.token
            if not token:
                return

    def settle(self, points: Sequence[dict[str, Any]], answers: Sequence[Answer] = ()) -> None:
        """The sweep's end: each point's settled values where they are new (newer than what it
        logged, so MLflow shows them as the latest), and the answer on the parent."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        if any(str(row.get("point_id")) not in self._children for row in points):
            self._find_children()
        for row in points:
            point_id = str(row.get("point_id"))
            values = _to_settle(row, self._logged.get(point_id, {}))
            if values and point_id in self._children:
                self.client.log_batch(self._children[point_id], metrics=[Metric(k, v, now, _last_step(row)) for k, v in values.items()])
                self._logged.setdefault(point_id, {}).update(values)
        if answers:
            metrics = [Metric(k, v, now, 0) for answer in answers for k, v in answer.metrics().items()]
            for start in range(0, len(metrics), 1000):
                self.client.log_batch(self.parent, metrics=metrics[start:start + 1000])
            self.client.log_batch(self.parent, tags=[RunTag("mlflow.note.content", _answer_text(answers)[:5000])])

    def close(self) -> None:
        self.client.set_terminated(self.parent, status="FINISHED")
