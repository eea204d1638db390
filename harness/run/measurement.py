"""What a point measured (``Measurement``: frozen, its raw arrays kept), how it ended
(``PointResult``: the point, its measurement and its status), and the contract's rows that
derive from them, built once, when first read (``PointResult.row``: where the store writes it).

Every ``points`` row is built by ``store.schema.point_row`` from the declaration, so an ok
point, a failed point and a combined data-parallel point carry exactly the same keys. What only
a finished point can honestly report (throughput, phase medians, totals, the final training
loss) is listed once in ``OK_ONLY`` and left null on every other status, however the point
failed and in whichever process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

import numpy as np

from harness.store.schema import PHASES, Status
from harness.measures import stats
from harness.measures.targets import to_target
from harness.config.points import PointSpec, recorded
from harness.env import device_name
from harness.run.flops import peak_tflops
from harness.run.refine import Crossing, as_columns
from harness.run.sampler import mean_of
from harness.store.schema import point_row

STEP_PHASES = PHASES[:3]
"""The phases inside a step (the loss check runs between steps)."""

OK_ONLY = ("wall_s", "samples_per_s", "steps_per_s", *(f"{p}_s" for p in STEP_PHASES), "step_wall_s", "step_wall_iqr_s", "step_wall_ci_pct", "timed_steps",
           "flags", *(f"{p}_total_s" for p in STEP_PHASES), "final_train_loss", "final_train_acc", "achieved_tflops", "mfu")
"""Columns that only a point with status ``ok`` fills."""


def _empty_phases() -> dict[str, np.ndarray]:
    return {name: np.empty(0) for name in (*STEP_PHASES, "step_wall", "start")}


@dataclass(frozen=True)
class Measurement:
    """Everything a point measured, as the engine left it (also for a point that failed midway)."""

    n_features: int | None = None
    n_classes: int | None = None
    phases: dict[str, np.ndarray] = field(default_factory=_empty_phases)
    """Seconds per timed step of each phase, its wall time (``step_wall``: start mark to end
    mark) and its start (``start``: seconds since the point began)."""
    timed: tuple[int, ...] = ()
    """The step numbers of the timed steps, in the order of ``phases``."""
    timed_every: int = 1
    """After the burn-in, the multiples of this step number were timed (``clock.sample_every``)."""
    batch_loss: dict[int, float] = field(default_factory=dict)
    """Step -> loss of the training batches read (``run.schedule``)."""
    checks: tuple[dict[str, Any], ...] = ()
    check_ns: tuple[int, ...] = ()
    noise_ns: tuple[int, ...] = ()
    steps_done: int = 0
    wall_ns: int = 0
    measured_ns: int | None = None
    """The measured window (the steps after the burn-in) on the host clock, less the time between
    steps (loss checks with their bookkeeping): what ``samples_per_s`` divides by."""
    final_train_loss: float | None = None
    final_train_acc: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    """What the point's set-up found: ``n_params``, ``model_fingerprint``, ``flops_per_step``,
    ``compile_s``, ``comm_s`` and the analytic byte columns."""
    memory: dict[str, Any] = field(default_factory=dict)
    readings: tuple[dict[str, Any], ...] = ()
    """The sampler's readings (the ``samples`` table)."""
    check_every: str | None = None
    """The check schedule that ran, where ``auto`` chose another (``run.schedule.CappedChecks``)."""
    crossing: Crossing | None = None
    """Where the point first reached its target, refined between checks (``run.refine``);
    None without an absolute target or before it reached it."""

    def to_json(self) -> dict[str, Any]:
        """As JSON values (a data-parallel rank sends it to the process that combines them)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["phases"] = {name: values.tolist() for name, values in self.phases.items()}
        out["batch_loss"] = [[step, loss] for step, loss in self.batch_loss.items()]
        out["crossing"] = None if self.crossing is None else dataclasses.asdict(self.crossing)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Measurement:
        values = dict(raw)
        values["phases"] = {name: np.asarray(v, dtype=float) for name, v in raw["phases"].items()}
        values["batch_loss"] = {int(step): loss for step, loss in raw["batch_loss"]}
        values["crossing"] = None if raw["crossing"] is None else Crossing(**raw["crossing"])
        for name in ("timed", "checks", "check_ns", "noise_ns", "readings"):
            values[name] = tuple(raw[name])
        return cls(**values)


@dataclass(frozen=True, eq=False)
class PointResult:
    """One point as it ended: the point, what it measured, its status. Its record rows (``row``,
    ``steps``) derive from these, once, where they are first read (the store, when it commits
    the point); nothing edits a row after: what is known only later (a relative target's
    crossing, the ranks' combination) is ``settled`` into a new result (``settle``)."""

    point: PointSpec
    measurement: Measurement
    status: Status
    error: str | None = None
    traceback: str | None = None
    flags: tuple[str, ...] = ()
    """Flags the run adds to the measurement's own (``threads_changed``)."""
    settled: Mapping[str, Any] = field(default_factory=dict)
    """``points`` columns settled after the point ran, over the measurement's."""

    @cached_property
    def row(self) -> dict[str, Any]:
        """The ``points`` row (the store adds ``run_id``)."""
        row = row_of(self.point, self.measurement, self.status, self.error)
        row["traceback"] = self.traceback
        if self.flags:
            row["flags"] = ",".join(filter(None, (row.get("flags"), *self.flags)))
        row.update(self.settled)
        return row

    @property
    def checks(self) -> list[dict[str, Any]]:
        return list(self.measurement.checks)

    @cached_property
    def steps(self) -> list[dict[str, Any]]:
        """The ``steps`` rows: one per timed step."""
        return _steps_rows(self.point, self.measurement)

    @property
    def samples(self) -> list[dict[str, Any]]:
        """The ``samples`` rows: the monitor's readings."""
        return list(self.measurement.readings)

    def settle(self, **columns: Any) -> PointResult:
        """This result with ``columns`` settled (a target known only after the point ran)."""
        return dataclasses.replace(self, settled={**self.settled, **columns})


def row_of(point: PointSpec, m: Measurement, status: str, error: str | None) -> dict[str, Any]:
    """The contract's ``points`` row of a point; what was not measured stays null."""
    name = device_name(point.device)
    row = point_row(dict(
        **{**recorded(point), **m.facts}, **m.memory, point_id=point.point_id, status=Status(status).value, error=error, n_features=m.n_features,
        n_classes=m.n_classes, device_name=name, steps=m.steps_done, epochs=m.steps_done * point.batch_size / point.train_size,
        samples_seen=m.steps_done * point.batch_size, peak_tflops=peak_tflops(name, point.precision, point.peak_tflops),
        cpu_util_mean_pct=mean_of(m.readings, "cpu_pct"), gpu_util_mean_pct=mean_of(m.readings, "gpu_util_pct"),
        **to_target(m.checks, point.batch_size, target_loss=point.target_loss, target_accuracy=point.target_accuracy,
                    crossing=None if m.crossing is None else (m.crossing.step, m.crossing.low)),
        **as_columns(m.crossing),
    ), type(point).axes)
    micro = point.micro_batch_size
    row["accumulation_steps"] = -(-point.per_rank_batch_size // micro) if isinstance(micro, int) else 1
    if m.check_every is not None:
        row["check_every_run"] = m.check_every
    if m.checks:
        scales = [c["noise_scale"] for c in m.checks if c["noise_scale"] is not None]
        row.update(final_eval_loss=m.checks[-1]["eval_loss"], final_eval_acc=m.checks[-1]["eval_acc"], noise_scale=scales[-1] if scales else None)
    if m.noise_ns:
        row["noise_scale_total_s"] = sum(m.noise_ns) / 1e9
    if m.check_ns:
        row["loss_check_s"] = stats.median(np.array(m.check_ns) / 1e9)
        row["loss_check_total_s"] = sum(m.check_ns) / 1e9
    if status == Status.OK:
        row.update(_timing_summary(point, m), final_train_loss=m.final_train_loss, final_train_acc=m.final_train_acc)
        if row.get("steps_per_s") and row.get("flops_per_step"):
            row["achieved_tflops"] = row["flops_per_step"] * row["steps_per_s"] / 1e12
            row["mfu"] = row["achieved_tflops"] / row["peak_tflops"] if row["peak_tflops"] else None
    return row


def _timing_summary(point, m: Measurement) -> dict[str, Any]:
    measured = np.array([step >= point.burn_in_steps for step in m.timed], dtype=bool)
    phases = {name: values[measured] for name, values in m.phases.items()}
    measured_steps = max(0, m.steps_done - point.burn_in_steps)  # every step counts for throughput; the timed ones for phases
    out: dict[str, Any] = {"wall_s": m.wall_ns / 1e9}
    out.update({f"{p}_total_s": float(m.phases[p].sum()) for p in STEP_PHASES})
    if not measured.any() and len(m.timed):  # stopped in its burn-in (a target reached in a few steps): its timed steps are all there is
        out.update(step_wall_s=stats.median(m.phases["step_wall"]), flags="burn_in_only")
    if measured_steps and m.measured_ns and m.measured_ns > 0:
        medians = [stats.median(phases[p]) for p in STEP_PHASES]
        seconds = m.measured_ns / 1e9
        out.update({f"{p}_s": value for p, value in zip(STEP_PHASES, medians)})
        out.update(
            samples_per_s=measured_steps * point.batch_size / seconds,
            steps_per_s=measured_steps / seconds,
            step_wall_s=stats.median(phases["step_wall"]),
            step_wall_iqr_s=stats.iqr(phases["step_wall"]),
            step_wall_ci_pct=_pct(stats.median_uncertainty(phases["step_wall"])),
            timed_steps=int(measured.sum()),
            flags=",".join(stats.flags(phases["step_wall"], medians)) or None,
        )
    return out


def _steps_rows(point, m: Measurement) -> list[dict[str, Any]]:
    columns = [m.phases[p] for p in STEP_PHASES]
    return [
        {
            "step": step,
            "burn_in": int(step < point.burn_in_steps),
            **{f"{p}_s": float(values[i]) for p, values in zip(STEP_PHASES, columns)},
            "batch_loss": m.batch_loss.get(step),
            "t_s": float(m.phases["start"][i]),
        }
        for i, step in enumerate(m.timed)
    ]


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction
