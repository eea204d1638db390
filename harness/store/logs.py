"""Points written where users look: TensorBoard event files and MLflow runs.

``batchbench run --log tensorboard[:DIR] --log mlflow[:URI]`` writes each point as it is stored;
``batchbench export --format tensorboard|mlflow`` writes the points of a store. A point becomes
one TensorBoard run (a folder) or one MLflow run, named by its label, with

- its configuration: the point's recorded axes, as MLflow params and tags (the run and point
  ids) or a TensorBoard text summary and hparams;
- its loss curve: ``loss/check`` (and ``accuracy/check``, ``loss/train``, ``noise_scale``) at
  each check's step;
- its measurements, once, at its last step: the phase medians (``time/data_s`` ...), step time,
  throughput and peak memory.

Both packages are optional extras (``pip install tensorboard`` / ``mlflow-skinny``), imported
only when asked for; a missing one is a one-line error before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.config.axes import AXES
from harness.errors import SpecError
from harness.store.schema import Status

KINDS = {"tensorboard": "runs", "mlflow": "sqlite:///mlflow.db"}
"""Each log's default place: TensorBoard's own default folder, MLflow's local database."""

CURVES = {"eval_loss": "loss/check", "eval_acc": "accuracy/check", "train_loss": "loss/train", "noise_scale": "noise_scale"}
SUMMARY = ("data_s", "derivative_s", "update_s", "loss_check_s", "step_wall_s", "samples_per_s", "steps_per_s",
           "peak_device_mem_bytes", "peak_rss_bytes", "steps_to_target", "time_to_target_s", "final_eval_loss", "final_train_loss", "mfu")
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


def open_logs(targets: Sequence[LogTarget], run_id: str) -> list:
    return [TensorBoardLog(Path(t.where), run_id) if t.kind == "tensorboard" else MlflowLog(t.where, run_id) for t in targets]


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
    """A folder per point under ``DIR/<run id>/`` (TensorBoard lists them side by side)."""

    def __init__(self, folder: Path, run_id: str):
        self.folder, self.run_id = folder / run_id, run_id

    def point(self, row: dict[str, Any], checks: Sequence[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(self.folder / label(row))) as writer:
            for check in checks:
                for column, tag in CURVES.items():
                    value = _number(check.get(column))
                    if value is not None:
                        writer.add_scalar(tag, value, int(check["step"]))
            last = int(row.get("steps") or 0)
            for column in SUMMARY:
                value = _number(row.get(column))
                if value is not None:
                    writer.add_scalar(f"point/{column}", value, last)
            writer.add_text("configuration", "\n".join(f"{k}: {v}  " for k, v in _configuration(row).items()), last)

    def close(self) -> None:
        pass


class MlflowLog:
    """An MLflow run per point, in the experiment ``batchbench`` (a tag names the batchbench run)."""

    EXPERIMENT = "batchbench"

    def __init__(self, uri: str, run_id: str):
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its database set-up chatter is not the user's business
        self.client, self.run_id = MlflowClient(tracking_uri=uri), run_id
        try:
            found = self.client.get_experiment_by_name(self.EXPERIMENT)
            self.experiment = found.experiment_id if found is not None else self.client.create_experiment(self.EXPERIMENT)
        except Exception as exc:  # the tracking store's own errors: a bad URI, a file store MLflow refuses, ...
            raise SpecError("--log", f"mlflow at {uri}: {' '.join(str(exc).split())[:300]}") from None

    def point(self, row: dict[str, Any], checks: Sequence[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param

        config = _configuration(row)
        run = self.client.create_run(self.experiment, run_name=label(row), tags={"batchbench.run_id": self.run_id,
                                                                               "batchbench.point_id": str(row.get("point_id"))})
        metrics = [Metric(column, value, 0, int(check["step"])) for check in checks for column in CURVES
                   if (value := _number(check.get(column))) is not None]
        last = int(row.get("steps") or 0)
        metrics += [Metric(column, value, 0, last) for column in SUMMARY if (value := _number(row.get(column))) is not None]
        params = [Param(k, v[:500]) for k, v in config.items()]
        for start in range(0, max(len(metrics), 1), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000], params=params if start == 0 else [])
        self.client.set_terminated(run.info.run_id, status="FINISHED" if row.get("status") == Status.OK else "FAILED")

    def close(self) -> None:
        pass
