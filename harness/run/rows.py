"""From what the loop measured (a ``Trace``) to the contract's rows (``harness.store.schema``).

Every ``points`` row is built by ``records.point_row`` from the declaration, so an ok point,
a failed point and a combined data-parallel point carry exactly the same keys. What only a
finished point can honestly report (throughput, phase medians, totals, the final training
loss) is listed once in ``OK_ONLY`` and left null on every other status, however the point
failed and in whichever process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness import PHASES
from harness.analysis import stats
from harness.analysis.convergence import to_target
from harness.env import device_name
from harness.store.schema import PointResult, point_row
from harness.run.flops import peak_tflops
from harness.run.sampler import mean_of
from harness.config.points import PointSpec, recorded

STEP_PHASES = PHASES[:3]
"""The phases inside a step (the loss check runs between steps)."""

OK_ONLY = ("wall_s", "samples_per_s", "steps_per_s", *(f"{p}_s" for p in STEP_PHASES), "step_wall_s", "step_wall_iqr_s", "step_wall_ci_pct", "timed_steps",
           "flags", *(f"{p}_total_s" for p in STEP_PHASES), "final_train_loss", "final_train_acc", "achieved_tflops", "mfu")
"""Columns that only a point with status ``ok`` fills."""


@dataclass
class Trace:
    """What the loop has measured so far; kept when a point fails midway."""

    phase_s: dict[str, list[np.ndarray]] = field(default_factory=lambda: {p: [] for p in (*STEP_PHASES, "step_wall", "start")})
    """Per closed window, seconds per step of each phase, its wall time and its start."""
    batch_loss: dict[int, float] = field(default_factory=dict)
    """Step -> loss of the training batches read (timed steps, and the last before each check)."""
    checks: list[dict[str, Any]] = field(default_factory=list)
    check_ns: list[int] = field(default_factory=list)
    noise_ns: list[int] = field(default_factory=list)
    aside_ns: list[int] = field(default_factory=list)
    """Time between steps that belongs to no measurement (noise-scale estimates, reading the
    memory peaks): left out of every wall and compute time."""
    timed_every: int = 1
    """After the burn-in every k-th step was timed (``clock.sample_every``); the burn-in's all were."""
    tensor_peak_bytes: int | None = None
    """CPU: peak live tensor bytes of an untimed probe step (``probes.step_tensor_bytes``)."""
    steps_done: int = 0
    wall_ns: int = 0
    measured_ns: int | None = None
    """The measured window (the steps after the burn-in) on the host clock, less the time between
    steps (loss checks with their bookkeeping): what ``samples_per_s`` divides by."""
    final_train_loss: float | None = None
    final_train_acc: float | None = None
    n_params: int | None = None
    model_fingerprint: str | None = None
    n_features: int | None = None
    n_classes: int | None = None
    origin_ns: int = 0
    readings: list[dict[str, Any]] = field(default_factory=list)
    """The monitor's readings (the ``samples`` table)."""
    memory: dict[str, Any] = field(default_factory=dict)
    analytic: dict[str, Any] = field(default_factory=dict)
    comm_s: float | None = None
    flops_per_step: int | None = None
    compile_s: float | None = None

    def phases(self) -> dict[str, np.ndarray]:
        """Every recorded step's phase times, windows joined."""
        return {name: np.concatenate(parts) if parts else np.empty(0) for name, parts in self.phase_s.items()}


def result(point: PointSpec, trace: Trace, status: str, error: str | None) -> PointResult:
    """Summarise the trace into the contract's rows; what was not measured stays null."""
    row = point_row(
        **recorded(point), point_id=point.point_id, status=status, error=error, n_features=trace.n_features, n_classes=trace.n_classes,
        device_name=device_name(point.device), steps=trace.steps_done, epochs=trace.steps_done * point.batch_size / point.train_size,
        samples_seen=trace.steps_done * point.batch_size, n_params=trace.n_params, model_fingerprint=trace.model_fingerprint,
        flops_per_step=trace.flops_per_step, compile_s=trace.compile_s, comm_s=trace.comm_s,
        peak_tflops=peak_tflops(device_name(point.device), point.precision, point.peak_tflops),
        cpu_util_mean_pct=mean_of(trace.readings, "cpu_pct"), gpu_util_mean_pct=mean_of(trace.readings, "gpu_util_pct"),
        **to_target(trace.checks, point.batch_size, target_loss=point.target_loss, target_accuracy=point.target_accuracy),
        **trace.memory, **trace.analytic,
    )
    if trace.checks:
        last = trace.checks[-1]
        scales = [c["noise_scale"] for c in trace.checks if c["noise_scale"] is not None]
        row.update(final_eval_loss=last["eval_loss"], final_eval_acc=last["eval_acc"], noise_scale=scales[-1] if scales else None)
    if trace.noise_ns:
        row["noise_scale_total_s"] = sum(trace.noise_ns) / 1e9
    if trace.check_ns:
        row["loss_check_s"] = stats.median(np.array(trace.check_ns) / 1e9)
        row["loss_check_total_s"] = sum(trace.check_ns) / 1e9
    if status == "ok":
        row.update(_timing_summary(point, trace), final_train_loss=trace.final_train_loss, final_train_acc=trace.final_train_acc)
        if row.get("steps_per_s") and trace.flops_per_step:
            row["achieved_tflops"] = trace.flops_per_step * row["steps_per_s"] / 1e12
            row["mfu"] = row["achieved_tflops"] / row["peak_tflops"] if row["peak_tflops"] else None
    return PointResult(point=row, checks=trace.checks, steps=_steps_rows(point, trace), samples=trace.readings)


def failed(row: dict[str, Any], status: str, error: str) -> dict[str, Any]:
    """The row of a point that did not finish: ``OK_ONLY`` columns nulled, status and error set."""
    return {**row, **dict.fromkeys(OK_ONLY), "status": status, "error": error}


def _timing_summary(point: PointSpec, trace: Trace) -> dict[str, Any]:
    phases = trace.phases()
    burn_in = point.burn_in_steps
    measured = {name: values[burn_in:] for name, values in phases.items()}
    measured_steps = max(0, trace.steps_done - burn_in)  # every step counts for throughput; the timed ones for phases
    out: dict[str, Any] = {"wall_s": trace.wall_ns / 1e9}
    out.update({f"{p}_total_s": float(phases[p].sum()) for p in STEP_PHASES})
    if measured_steps and trace.measured_ns > 0:
        medians = [stats.median(measured[p]) for p in STEP_PHASES]
        out.update({f"{p}_s": m for p, m in zip(STEP_PHASES, medians)})
        out.update(
            samples_per_s=measured_steps * point.batch_size / (trace.measured_ns / 1e9),
            steps_per_s=measured_steps / (trace.measured_ns / 1e9),
            step_wall_s=stats.median(measured["step_wall"]),
            step_wall_iqr_s=stats.iqr(measured["step_wall"]),
            step_wall_ci_pct=_pct(stats.median_uncertainty(measured["step_wall"])),
            timed_steps=len(measured["step_wall"]),
            flags=",".join(stats.flags(measured["step_wall"], medians)) or None,
        )
    return out


def timed_step_numbers(point: PointSpec, trace: Trace, count: int) -> list[int]:
    """The step numbers of the timed steps: every burn-in step, then every k-th."""
    burn_in = min(point.burn_in_steps, count)
    return list(range(burn_in)) + list(range(point.burn_in_steps, point.burn_in_steps + (count - burn_in) * trace.timed_every, trace.timed_every))


def _steps_rows(point: PointSpec, trace: Trace) -> list[dict[str, Any]]:
    phases = trace.phases()
    n = len(phases["data"])
    losses = trace.batch_loss
    columns = [phases[p] for p in STEP_PHASES]
    return [
        {
            "step": step,
            "burn_in": int(step < point.burn_in_steps),
            **{f"{p}_s": float(values[i]) for p, values in zip(STEP_PHASES, columns)},
            "batch_loss": losses.get(step),
            "t_s": float(phases["start"][i]),
        }
        for i, step in enumerate(timed_step_numbers(point, trace, n))
    ]


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction
