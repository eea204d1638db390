"""The record tables and their columns: a contract that tests, reports and asv history rely on.

Tidy tables, one observation a row, units in column names (``_s``, ``_bytes``, ``_pct``, ``_w``,
``_mhz``). Each column is declared here once, with its SQLite type; its unit comes from its
name, and ``display`` formats a value by that unit for the console and the report. A column
whose feature does not apply (or is not measured on this device) is null, never a made-up
number. Columns beyond DESIGN.md's list are appended at the end of a table, an axis's column
from its declaration (``config.axes``); a renamed column is listed in ``config.compat.RENAMED``
so that ``Store`` migrates older stores.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Mapping, Protocol, Sequence

from harness.config.axes import AXES, Axis

PHASES = ("data", "derivative", "update", "loss_check")
"""The phases of a training step, in order; they never nest or overlap. Each names its columns
(``data_s``, ``data_total_s``, ...)."""

RUNS = {
    "run_id": "TEXT PRIMARY KEY",
    "started_at": "TEXT",
    "finished_at": "TEXT",
    "spec_json": "TEXT",
    "env_json": "TEXT",
    "spec_hash": "TEXT",
}

POINTS_LAID_OUT = {
    "run_id": "TEXT",
    "point_id": "TEXT",
    "status": "TEXT",  # Status: ok | oom | diverged | error | skipped | pruned (stopped by `batchbench tune`: it could no longer win) | interrupted
    "error": "TEXT",
    "model": "TEXT",
    "dataset": "TEXT",
    "dataset_size": "INTEGER",
    "n_features": "INTEGER",
    "n_classes": "INTEGER",
    "batch_size": "INTEGER",
    "device": "TEXT",
    "device_name": "TEXT",
    "threads": "INTEGER",
    "optimizer": "TEXT",
    "lr": "REAL",
    "lr_policy": "TEXT",
    "momentum": "REAL",
    "sampling": "TEXT",  # shuffle | replacement
    "seed": "INTEGER",
    "repeat": "INTEGER",
    "timing_mode": "TEXT",  # cpu | events | sync
    "steps": "INTEGER",
    "epochs": "REAL",
    "samples_seen": "INTEGER",
    "burn_in_steps": "INTEGER",  # timing warm-up steps, left out of statistics (was warmup_steps)
    "wall_s": "REAL",
    "samples_per_s": "REAL",
    "steps_per_s": "REAL",
    "data_s": "REAL",
    "derivative_s": "REAL",
    "update_s": "REAL",
    "loss_check_s": "REAL",
    "data_total_s": "REAL",
    "derivative_total_s": "REAL",
    "update_total_s": "REAL",
    "loss_check_total_s": "REAL",
    "step_wall_s": "REAL",
    "target_loss": "REAL",
    "steps_to_target": "INTEGER",
    "samples_to_target": "INTEGER",
    "time_to_target_s": "REAL",
    "compute_to_target_s": "REAL",
    "final_train_loss": "REAL",
    "final_eval_loss": "REAL",
    "final_eval_acc": "REAL",
    "peak_device_mem_bytes": "INTEGER",
    "peak_rss_bytes": "INTEGER",
    "gpu_util_mean_pct": "REAL",
    "cpu_util_mean_pct": "REAL",
    "noise_scale": "REAL",
    # batchbench additions
    "train_size": "INTEGER",
    "check_size": "INTEGER",
    "check_set": "TEXT",  # holdout | train
    "check_every": "TEXT",  # steps ("25"), seconds ("30s") or "epoch"
    "hidden": "TEXT",
    "n_params": "INTEGER",
    "loader": "TEXT",  # tensor | dataloader
    "init_seed": "INTEGER",
    "step_wall_iqr_s": "REAL",
    "flags": "TEXT",  # comma list: noisy (the median step time may be off by > 10%), phase_mismatch (phase sum vs step wall > 10%), burn_in_only (stopped in the burn-in: step_wall_s is the burn-in's)
    "base_lr": "REAL",  # --lr before the policy scaled it (null when tuned)
    "base_batch_size": "INTEGER",
    "lr_warmup_steps": "INTEGER",
    "target_accuracy": "REAL",
    "target_rel": "REAL",  # F of --target rel:F
    "final_train_acc": "REAL",
    "noise_samples": "INTEGER",
    "noise_scale_total_s": "REAL",  # time spent estimating the noise scale, outside every phase
    "peak_device_reserved_bytes": "INTEGER",  # CUDA caching allocator's peak reserved in training steps (peak_device_mem_bytes: allocated; CPU: live tensor bytes of a probe step)
    "param_bytes": "INTEGER",
    "grad_bytes": "INTEGER",
    "optimizer_state_bytes": "INTEGER",
    "activation_bytes": "INTEGER",  # analytic: input and every leaf module's output, x batch size
    "sample_interval_s": "REAL",
    "world_size": "INTEGER",  # data-parallel ranks (1: one process)
    "per_rank_batch_size": "INTEGER",
    "global_batch_size": "INTEGER",  # = batch_size
    "backend": "TEXT",  # gloo | nccl (null for one process)
    "scaling": "TEXT",  # strong | weak
    "comm_s": "REAL",  # exposed communication per step: synced backward minus no_sync backward (median over ranks)
    "derivative_s_max_rank": "REAL",  # the slowest rank's median derivative (stragglers)
    "step_wall_s_max_rank": "REAL",
    "step_wall_ci_pct": "REAL",
    "check_peak_device_mem_bytes": "INTEGER",  # peaks of the loss checks and the final evaluation (the peak_* columns: training steps only)
    "check_peak_device_reserved_bytes": "INTEGER",
    "check_peak_rss_bytes": "INTEGER",
    "timed_steps": "INTEGER",  # measured steps whose phases were timed (every k-th after the burn-in; marks cost < 1% of the window)
    "data_placement": "TEXT",  # host (CPU) | pageable | pinned | device: where the training set lives
    "precision": "TEXT",  # fp32 | tf32 | bf16 | fp16 (null in stores before 0.3: fp32)
    "flops_per_step": "INTEGER",  # forward + backward FLOPs of one training step (torch.utils.flop_counter, an untimed step)
    "achieved_tflops": "REAL",  # flops_per_step x steps_per_s / 1e12
    "peak_tflops": "REAL",  # the device's dense peak at this precision (--peak-tflops, or the table); null where unknown
    "mfu": "REAL",  # achieved_tflops / peak_tflops: model FLOPs utilisation
    "compile": "TEXT",  # off | on (torch.compile)
    "compile_s": "REAL",  # seconds torch.compile took (an untimed step before the first), outside every other time
    "workers": "INTEGER",  # DataLoader worker processes (--loader dataloader; 0: in the training process)
    "model_fingerprint": "TEXT",  # 12 hex digits of the parameter shapes in order (compare matches plug-ins by callable name and this, not path)
    "check_every_run": "TEXT",  # the check schedule that ran where --check-every auto chose another: finer to resolve steps to target, or spaced out to keep the checks within a quarter of the point (null: check_every ran)
    "role": "TEXT",  # batchbench cbs: base | branch | ramp | constant (null: a sweep's point)
    "start_sample": "INTEGER",  # samples the run had seen where this point starts (it continues from a snapshot); null: from the initial weights
    "branch_factor": "INTEGER",  # batchbench cbs: the point's batch as a multiple of the base run's
    "traceback": "TEXT",  # the Python traceback of a point whose status is error or oom (null otherwise)
    "accumulation_steps": "INTEGER",  # micro-batches a batch runs as (1: no gradient accumulation; see micro_batch_size)
    "steps_to_target_low": "INTEGER",  # the earliest step the target may have been reached: one past the last step seen short of it (= steps_to_target when exact)
    "refine_steps": "INTEGER",  # steps trained again to find where the target was crossed between two checks (outside every timed window; 0: the checks were fine enough)
    "refine_checks": "INTEGER",  # whole check-set evaluations that refinement took
    "refine_s": "REAL",  # seconds the refinement took, training and checks (set aside from every other time)
    "lr_scale": "REAL",  # the factor tune and cbs applied to a LightningModule's own learning rates (null: its rates as written)
    "host": "TEXT",  # where it ran: the host name (on Ray, with the node's id: two nodes of one machine differ)
    "executor": "TEXT",  # local (in the sweep's process, one after another) or ray
    "co_running": "INTEGER",  # other points of the sweep that ran on the same node while it was measured (0: alone)
}

CHECKS = {
    "run_id": "TEXT",
    "point_id": "TEXT",
    "step": "INTEGER",
    "epoch": "REAL",
    "samples_seen": "INTEGER",
    "wall_s": "REAL",  # since training started, loss checks included (this one too)
    "compute_s": "REAL",  # the same, loss checks excluded
    "train_loss": "REAL",  # mean loss of every 8th batch after the burn-in and the last before this check, since the previous check (null at step 0)
    "eval_loss": "REAL",
    "eval_acc": "REAL",
    "noise_scale": "REAL",  # B_simple = tr(Sigma) / |G|^2 at this check's parameters
    "noise_scale_s": "REAL",  # time the estimate took (excluded from wall_s and compute_s)
}

STEPS = {
    "run_id": "TEXT",
    "point_id": "TEXT",
    "step": "INTEGER",  # the timed steps: every burn-in step, then every k-th (points.timed_steps)
    "burn_in": "INTEGER",  # 1 for a burn-in step (was warmup)
    "data_s": "REAL",
    "derivative_s": "REAL",
    "update_s": "REAL",
    "batch_loss": "REAL",
    "t_s": "REAL",  # step start, seconds since the point began (the monitor's clock)
}

SAMPLES = {
    "run_id": "TEXT",
    "point_id": "TEXT",
    "t_s": "REAL",
    "cpu_pct": "REAL",
    "rss_bytes": "INTEGER",
    "gpu_util_pct": "REAL",
    "gpu_mem_bytes": "INTEGER",
    "gpu_power_w": "REAL",
    "gpu_sm_clock_mhz": "REAL",
}



def points_columns(axes: Sequence[Axis] = AXES) -> dict[str, str]:
    """The ``points`` columns: those laid out above (their order is the contract exports
    keep), then the column of every axis declared since that is not among them."""
    added = {a.column_name: a.column_type for a in axes if a.column_name and a.column_name not in POINTS_LAID_OUT}
    return {**POINTS_LAID_OUT, **added}


POINTS = points_columns()

TABLES = {"runs": RUNS, "points": POINTS, "checks": CHECKS, "steps": STEPS, "samples": SAMPLES}


class Status(str, Enum):
    """What became of a point: the ``points.status`` column. A str, so the stored text, JSON and
    CSV are the words themselves (``ok``), and a status read back from a store compares equal."""

    OK = "ok"
    OOM = "oom"
    DIVERGED = "diverged"
    ERROR = "error"
    SKIPPED = "skipped"
    """It could not run as asked (``skip_reason``)."""
    PRUNED = "pruned"
    """``batchbench tune`` stopped it once it could no longer win."""
    INTERRUPTED = "interrupted"
    """Ctrl-C stopped it; ``--resume`` runs it again."""
    LOST = "lost"
    """The process or node running it died more often than ``--retries`` allows (Ray); ``--resume`` runs it again."""

    __hash__ = str.__hash__  # hashes as its text: pandas' isin and dict keys find the stored words

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)

    def __str__(self) -> str:
        return self.value


FAILED = (Status.ERROR, Status.OOM, Status.DIVERGED, Status.LOST)
"""Statuses of points that failed (told on the terminal as they happen); ``pruned`` and
``skipped`` are decisions, ``interrupted`` a stop."""

AGAIN = (Status.INTERRUPTED, Status.LOST)
"""Statuses ``--resume`` runs again: the point was cut off, not measured (Ctrl-C; a worker or
node that died on Ray past ``--retries``)."""

POINT_COLUMNS = tuple(c for c in POINTS if c != "run_id")
"""The keys of every ``PointResult.row`` (the store adds ``run_id``)."""


def point_row(values: Mapping[str, Any], axes: Sequence[Axis] = AXES) -> dict[str, Any]:
    """A ``points`` row: every declared column (of ``axes``: a point's own table), null unless
    given; an undeclared key is a bug in batchbench and fails loudly here rather than at the store."""
    columns = POINT_COLUMNS if axes is AXES else tuple(c for c in points_columns(axes) if c != "run_id")
    unknown = set(values) - set(columns)
    if unknown:
        raise KeyError(f"points has no column(s) {sorted(unknown)}")
    return {**dict.fromkeys(columns), **values}


def unit(column: str) -> str | None:
    """The unit a column's name declares: s, bytes, pct, w, mhz; None for counts and labels."""
    for suffix in ("_s", "_bytes", "_pct", "_w", "_mhz"):
        if column.endswith(suffix):
            return suffix[1:]
    return None


def display(column: str, value: Any) -> str:
    """A value as people read it: seconds per step in ms, bytes in MiB, rates with thousands
    separators; empty for null. Used by the terminal tables and the report alike."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    kind = unit(column)
    if column.endswith("_per_s"):
        return f"{value:,.0f}"
    if kind == "s" and column in PHASE_COLUMNS:
        return f"{value * 1e3:.3f}"
    if kind == "bytes":
        return f"{value / 2**20:,.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


PHASE_COLUMNS = ("data_s", "derivative_s", "update_s", "loss_check_s", "step_wall_s")
"""Per-step (loss check: per-check) medians, shown in milliseconds."""


class Recorded(Protocol):
    """What the store commits of a point (``run.measurement.PointResult``): its rows."""

    @property
    def row(self) -> dict[str, Any]: ...

    @property
    def checks(self) -> list[dict[str, Any]]: ...

    @property
    def steps(self) -> list[dict[str, Any]]: ...

    @property
    def samples(self) -> list[dict[str, Any]]: ...


def spec_of(text: Any) -> dict[str, Any]:
    """A run's ``spec_json`` as a dict: {} where it is missing, not JSON or not an object (a
    store some other program wrote); readers show what they find, never fail on it."""
    import json

    try:
        spec = json.loads(text) if isinstance(text, (str, bytes)) else {}
    except ValueError:
        return {}
    return spec if isinstance(spec, dict) else {}
