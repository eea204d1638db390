"""Convergence, as pure functions on recorded curves (numpy and pandas; no torch).

- ``relative_targets``: a relative target (``rel:F``) per dataset size of a stored sweep, and
  each point's steps and times to it (``measures.targets.to_target``).
- ``fit_critical_batch``: S(B) = S_min (1 + B_crit / B) fitted to steps-to-target in log space
  (McCandlish et al. 2018); E_min = B_crit S_min is the fewest samples any batch size needs.
- ``best_trials``: with ``--lr-policy tuned``, the learning rate per batch size with the fewest
  steps to target (Shallue et al. 2019: the best any trial achieves).
- ``analyze``: all of the above per group of a stored sweep, for ``batchbench analyze``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from harness.analysis.caveats import caveats, excluded
from harness.analysis.keys import GROUP_KEYS
from harness.analysis.recipe import describe
from harness.analysis.uncertainty import COARSE, MIN_FIT_BATCH_SIZES, batch_times, fit_interval, fit_log, point_bounds, tied
from harness.measures.targets import relative_target, to_target
from harness.store.schema import Status


def relative_targets(points, checks, fraction: float) -> list[dict[str, Any]]:
    """For ``--target rel:F``: per dataset size, L_ref is the best (lowest) check loss any
    point of the sweep reached and L_0 each point's loss at step 0; returns each point's
    ``target_loss`` and to-target columns, for the store to update."""
    updates = []
    finite = checks[np.isfinite(checks["eval_loss"].astype(float))]
    for _, group in points.groupby("dataset_size"):
        group_checks = finite[finite["point_id"].isin(set(group["point_id"]))]
        if group_checks.empty:
            continue
        reference = float(group_checks["eval_loss"].min())
        for record in group.to_dict("records"):
            own = group_checks[group_checks["point_id"] == record["point_id"]].sort_values("step")
            start = own[own["step"] == 0]["eval_loss"]
            if start.empty:
                continue
            target = relative_target(float(start.iloc[0]), reference, fraction)
            row = {"point_id": record["point_id"], "target_loss": target}
            row.update(to_target(own.to_dict("records"), int(record["batch_size"]), target_loss=target))
            updates.append(row)
    return updates


@dataclass(frozen=True)
class CriticalBatchFit:
    b_crit: float
    s_min: float
    e_min: float
    rms_log_error: float
    batch_sizes: tuple[int, ...]
    steps: tuple[float, ...]
    b_crit_low: float | None = None
    b_crit_high: float | None = None
    """A 95% interval for B_crit (``uncertainty.fit_interval``)."""

    def predict(self, batch_size) -> np.ndarray:
        return self.s_min * (1 + self.b_crit / np.asarray(batch_size, dtype=float))

    def b_crit_text(self) -> str:
        interval = f" [{self.b_crit_low:,.3g}, {self.b_crit_high:,.3g}]" if self.b_crit_low is not None else ""
        return f"{self.b_crit:,.3g}{interval}"


def fit_critical_batch(batch_sizes: Sequence[float], steps: Sequence[float]) -> CriticalBatchFit | None:
    """Least squares of log S = log S_min + log(1 + B_crit / B) (McCandlish et al. 2018), with a
    95% interval for B_crit; None with fewer than ``MIN_FIT_BATCH_SIZES`` batch sizes that
    reached the target (two parameters through two or three points say nothing)."""
    pairs = sorted((float(b), float(s)) for b, s in zip(batch_sizes, steps) if s is not None and np.isfinite(s) and s > 0)
    if len({b for b, _ in pairs}) < MIN_FIT_BATCH_SIZES:
        return None
    B = np.array([b for b, _ in pairs])
    log_s = np.log([s for _, s in pairs])
    log_bc, log_s_min, rms = fit_log(B, log_s)
    b_crit, s_min = float(np.exp(log_bc)), float(np.exp(log_s_min))
    interval = fit_interval(B, np.exp(log_s))
    return CriticalBatchFit(b_crit, s_min, b_crit * s_min, rms, tuple(int(b) for b in B), tuple(float(np.exp(v)) for v in log_s),
                            *(interval or (None, None)))


def median_ci(values: Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float | None, float | None, float | None]:
    """Median and a bootstrap percentile interval for it (None bounds with one value)."""
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if data.size == 0:
        return None, None, None
    med = float(np.median(data))
    if data.size == 1:
        return med, None, None
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(data, size=(resamples, data.size), replace=True), axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boots, [tail, 100 - tail])
    return med, float(low), float(high)


def best_trials(points, by: str = "steps_to_target"):
    """The rows of the best learning rate per group and batch size: the fewest median
    ``by`` over repeats (ties: less median time to target). Points that did not reach the
    target never win; a batch size where no trial did keeps its best-throughput trial so it
    still appears (with null steps)."""
    import pandas as pd

    if len(points) == 0:
        return points
    keys = [k for k in GROUP_KEYS if k in points.columns] + ["batch_size"]
    chosen = []
    for _, group in points.groupby(keys, dropna=False, sort=True):
        per_lr = group.groupby("lr", dropna=False).agg(score=(by, "median"), time=("time_to_target_s", "median"), speed=("samples_per_s", "median"))
        if per_lr["score"].notna().any():
            best_lr = per_lr.sort_values(["score", "time"], na_position="last").index[0]
        else:
            best_lr = per_lr.sort_values("speed", ascending=False, na_position="last").index[0]
        chosen.append(group[group["lr"] == best_lr])
    return pd.concat(chosen, ignore_index=True)




def target_text(points) -> str | None:
    """The target of these points, as a reader needs it: what was asked (``rel:0.1``, or an
    absolute loss or accuracy) and the loss it came to; None when there was none."""
    rel = points["target_rel"].dropna() if "target_rel" in points else []
    loss, acc = points["target_loss"].dropna(), points["target_accuracy"].dropna()
    if len(acc):
        return f"eval accuracy ≥ {acc.median():.4g}"
    if not len(loss):
        return None
    applied = f"{loss.min():.4g}" if loss.min() == loss.max() else f"{loss.min():.4g}..{loss.max():.4g}"
    return f"eval loss ≤ {applied}" + (f" (rel:{rel.iloc[0]:g}: the best loss reached plus {rel.iloc[0]:g} of the way back to the initial one)" if len(rel) else "")


def check_resolution(points, checks) -> float | None:
    """Median over the points that reached the target of (highest - lowest step it may have been
    reached) / highest: 0 where it is exact (see ``GroupAnalysis.check_resolution``)."""
    gaps = []
    for record in points.to_dict("records"):
        hit = record.get("steps_to_target")
        if hit is None or hit != hit or hit <= 0:
            continue
        low, high = point_bounds(record, checks)
        gaps.append((high - low) / high)  # 0 when exact (refined to one step, or checked every step)
    return float(np.median(gaps)) if gaps else None


@dataclass(frozen=True)
class GroupAnalysis:
    key: dict[str, Any]
    table: Any  # DataFrame: one row per batch size
    fit: CriticalBatchFit | None
    best_batch_by_time: int | None
    best_batch_by_compute: int | None
    best_batch_by_throughput: int | None
    noise_start: float | None
    noise_at_target: float | None
    best_batch: int | None = None
    """The least training time to target: steps to target x the median step time."""
    tied: tuple[int, ...] = ()
    """Batch sizes whose training time cannot be told apart from the best's (``uncertainty.tied``)."""
    target: str | None = None
    """The target as asked and as applied: ``eval loss ≤ 0.3412 (rel:0.1: ...)``; None without one."""
    check_resolution: float | None = None
    """Median over points that reached the target of the width of its steps-to-target interval
    over steps to target (``check_resolution``): 0 where exact. Above ``uncertainty.COARSE``
    steps-to-target mostly measures the check schedule."""

    caveats: tuple[str, ...] = ()
    """What the answer cannot promise (``analysis.caveats``), most serious first."""
    excluded: tuple[tuple[int, str], ...] = ()
    """Batch sizes left out of the ranking, with why (a step time from the burn-in only)."""
    recipe: str | None = None
    """The training recipe the points recorded, in words (``analysis.recipe``)."""

    @property
    def coarse_checks(self) -> bool:
        return self.check_resolution is not None and self.check_resolution > COARSE

    def coarse_note(self) -> str:
        """Why steps-to-target of this group mean little, and what to do."""
        return (f"the loss checks are coarse against steps-to-target: the step that reached the target is known only to a "
                f"median {100 * self.check_resolution:.0f}% of the steps to it, as the crossing was not refined between the checks (a store "
                f"from before refinement, or data-parallel points), so steps-to-target (and B_crit) mostly measure the check "
                f"schedule; run the sweep again: single-process points find the step that crossed the target to within 5%")


def analyze(points, checks) -> list[GroupAnalysis]:
    """Per group of points (data set, size, device, model, optimizer, sampling, policy): a row
    per batch size (best learning rate when tuned; medians over repeats), its training time to
    target with its interval and whether it is tied with the best, the critical-batch fit, the
    best batch sizes, the noise scale at the start and at target, the recipe and the caveats."""
    if len(points) == 0:
        return []
    ok = points[points["status"] == Status.OK]
    if len(ok) == 0:
        return []
    chosen = best_trials(ok) if (ok["lr_policy"] == "tuned").any() else ok
    keys = [k for k in GROUP_KEYS if k in chosen.columns]
    out = []
    for key_values, group in chosen.groupby(keys, dropna=False, sort=True):
        key = dict(zip(keys, key_values if isinstance(key_values, tuple) else (key_values,)))
        point_checks = checks[checks["point_id"].isin(set(group["point_id"]))] if len(checks) else checks
        tried = _members(ok, key)
        table, best, ties = _batch_table(group, point_checks, tried)
        start, at_target = _noise_scales(group, point_checks)
        left_out = excluded(group, tried)
        everything = _members(points, key)
        notes = tuple(f"B={b} is left out of the ranking: it {why}" for b, why in left_out.items())
        out.append(GroupAnalysis(
            key=key, table=table, fit=fit_critical_batch(table["batch_size"], table["steps_to_target"]), best_batch=best, tied=tuple(ties),
            best_batch_by_time=_argbest(table, "time_to_target_s", min), best_batch_by_compute=_argbest(table, "compute_to_target_s", min),
            best_batch_by_throughput=_argbest(table, "samples_per_s", max), noise_start=median_ci(start)[0] if start else None,
            noise_at_target=median_ci(at_target)[0], target=target_text(group),
            check_resolution=check_resolution(group, point_checks) if len(point_checks) else None,
            caveats=notes + caveats(group, tried, everything, point_checks, best), excluded=tuple(left_out.items()),
            recipe=describe(group.to_dict("records")),
        ))
    return out


def _members(points, key: dict):
    """The points of one group (any status), nulls matching nulls."""
    mask = np.ones(len(points), dtype=bool)
    for column, value in key.items():
        if column not in points:
            continue
        values = points[column]
        mask &= values.isna().to_numpy() if value is None or (isinstance(value, float) and math.isnan(value)) else (values == value).to_numpy()
    return points[mask]


def _batch_table(group, point_checks, timing=None):
    """(a row per batch size, the best batch size, the tied ones); ``timing``: the points whose
    step times count (every ok point of the group, where ``group`` holds the best rate's)."""
    import pandas as pd

    rows = []
    for batch, per_b in group.groupby("batch_size", sort=True):
        steps, low, high = median_ci(per_b["steps_to_target"].tolist())
        rows.append({
            "batch_size": int(batch), "lr": float(per_b["lr"].median()), "repeats": len(per_b),
            "reached": int(per_b["steps_to_target"].notna().sum()), "steps_to_target": steps, "steps_ci_low": low, "steps_ci_high": high,
            **{column: median_ci(per_b[column].tolist())[0]
               for column in ("samples_to_target", "time_to_target_s", "compute_to_target_s", "samples_per_s", "final_eval_loss")},
        })
    times = batch_times(group, point_checks, timing)
    best, ties = tied(times)
    table = pd.DataFrame(rows)
    for column in ("steps_low", "steps_high", "step_s", "step_uncertainty", "train_s", "train_low_s", "train_high_s"):
        table[column] = [times.get(int(b), {}).get(column) for b in table["batch_size"]]
    table["tied"] = [int(b) in ties for b in table["batch_size"]]
    return table, best, ties


def _noise_scales(group, point_checks) -> tuple[list[float], list[float]]:
    """The noise scale at step 0, and at the check that reached the target, over the points."""
    if not len(point_checks):
        return [], []
    start = point_checks[point_checks["step"] == 0]["noise_scale"].dropna().tolist()
    at_target = []
    for record in group.to_dict("records"):
        hit_step = record.get("steps_to_target")
        if hit_step is not None and hit_step == hit_step:
            hit = point_checks[(point_checks["point_id"] == record["point_id"]) & (point_checks["step"] == hit_step)]
            at_target += hit["noise_scale"].dropna().tolist()
    return start, at_target


def scaling_efficiency(points):
    """Per data-parallel point: throughput at world size N over N x the single process's at the
    same per-rank batch (1.0: perfect scaling), and exposed communication as a share of the step."""
    ok = points[(points["status"] == Status.OK) & points["samples_per_s"].notna()]
    if ok.empty or ok["world_size"].fillna(1).max() <= 1:
        return ok.iloc[:0]
    keys = ["dataset", "dataset_size", "device", "model", "per_rank_batch_size"]
    base = ok[ok["world_size"].fillna(1) == 1].groupby(keys, dropna=False)["samples_per_s"].median().rename("single_samples_per_s")
    out = ok.groupby(keys + ["world_size"], dropna=False, as_index=False).agg(
        samples_per_s=("samples_per_s", "median"), comm_s=("comm_s", "median"), step_wall_s=("step_wall_s", "median"),
        time_to_target_s=("time_to_target_s", "median"))
    out = out.merge(base.reset_index(), on=keys, how="left")
    out["efficiency"] = out["samples_per_s"] / (out["world_size"] * out["single_samples_per_s"])
    out["comm_share"] = out["comm_s"] / out["step_wall_s"]
    return out


def _argbest(table, column: str, pick) -> int | None:
    valid = table.dropna(subset=[column])
    if valid.empty:
        return None
    index = valid[column].idxmin() if pick is min else valid[column].idxmax()
    return int(valid.loc[index, "batch_size"])
