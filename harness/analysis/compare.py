"""Before and after: did B make training faster, slower, or not significantly different?

Two runs' points are matched on their whole configuration (``MATCH_KEYS``: every axis and
option a point records), never on a file path: a plug-in model is known by its callable's name
and the fingerprint of its parameter shapes, so the same model in two checkouts matches and a
model with a changed layer does not. Per matched pair: the speed ratio (median step time of A
over that of B: B's throughput at the typical step over A's, above 1 is faster) and the
training time to the target (B / A: steps to target times the median step, below 1 is
faster), each with a 95% interval from the per-step samples of both points: the steps are cut
into consecutive blocks and each side's median is bootstrapped over its blocks
(``stats.block_medians``), the way a point's own ``noisy`` flag is decided.

A verdict says a change only when the interval excludes 1 *and* the change is at least the
threshold (1.10x unless told): an interval from one run cannot see what moves between
processes (a shared 2-core machine shifts whole runs by several percent), so a small but
"significant" shift is reported as no significant change, as ``asv continuous --factor`` does.
Pure pandas and numpy, no torch: the terminal and the HTML report both read this frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.analysis import stats
from harness.analysis.keys import MATCH_KEYS
from harness.config.compat import model_fingerprints

DEFAULT_THRESHOLD = 1.10
"""Changes smaller than 10% are "no significant change", whatever the interval says."""

CONFIDENCE = 0.95
RESAMPLES = 2000

FASTER, SLOWER, SAME = "faster", "slower", "no significant change"


@dataclass(frozen=True)
class Comparison:
    """The matched pairs (``frame``, one row each) and what did not match."""

    frame: pd.DataFrame
    keys: tuple[str, ...]
    threshold: float
    only_a: int
    only_b: int

    def counts(self) -> dict[str, int]:
        """Points per throughput verdict."""
        verdicts = self.frame["throughput_verdict"] if len(self.frame) else pd.Series(dtype=str)
        return {v: int((verdicts == v).sum()) for v in (SLOWER, FASTER, SAME)}

    def regressions(self, factor: float) -> pd.DataFrame:
        """Pairs where B is significantly slower by more than ``factor``: throughput down by
        more than that factor, or training time to the target up by more."""
        f = self.frame
        if f.empty:
            return f
        throughput = (f["throughput_verdict"] == SLOWER) & (1 / f["throughput_ratio"] > factor)
        to_target = (f["time_to_target_verdict"] == SLOWER) & (f["time_to_target_ratio"] > factor)
        return f[throughput | to_target]


def config_frame(points: pd.DataFrame) -> pd.DataFrame:
    """The points with the derived keys (``model_name``, ``target``) and every key as text, so
    that nulls match nulls and 0.1 matches 0.1 whatever the store's float type."""
    out = points.copy()
    out["model_name"] = out["model"].astype(str).str.rsplit(":", n=1).str[-1]
    out["model_fingerprint"] = model_fingerprints(out)
    rel = out["target_rel"] if "target_rel" in out else pd.Series(np.nan, index=out.index)
    absolute = out["target_loss"].map(_text) + "/" + out["target_accuracy"].map(_text)
    out["target"] = np.where(rel.notna(), "rel:" + rel.map(_text), absolute)
    for key in MATCH_KEYS:
        if key not in out:
            out[key] = None
        out[key] = out[key].map(_text)
    return out


def _text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return "%.10g" % value
    return str(value)


def step_times(steps: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per point id, the measured (not burn-in) timed steps' times in the order they ran: the
    sum of the step's phases, which are bounded by consecutive clock marks."""
    if steps.empty:
        return {}
    measured = steps[steps["burn_in"] == 0].sort_values(["point_id", "step"])
    total = measured["data_s"] + measured["derivative_s"] + measured["update_s"]
    return {pid: total[idx].to_numpy(dtype=float) for pid, idx in measured.groupby("point_id").groups.items()}


def speed_ratio(times_a: np.ndarray | None, times_b: np.ndarray | None) -> tuple[float, float, float] | None:
    """Median step time A / median step time B (B's speed over A's: above 1, B is faster) and
    a 95% interval for it: each side's steps are cut into blocks and the median resampled by
    block. Medians, not the window's mean: a step stalled by another process (a preemption, a
    neighbour's burst) moves a mean by whole percents between two runs of the same code, a
    median hardly. None when either side has fewer than 3 blocks of timed steps."""
    if times_a is None or times_b is None:
        return None
    a, b = stats.block_medians(times_a), stats.block_medians(times_b)
    if a is None or b is None:
        return None
    rng = np.random.default_rng(0)
    ra = np.median(rng.choice(a, size=(RESAMPLES, a.size)), axis=1)
    rb = np.median(rng.choice(b, size=(RESAMPLES, b.size)), axis=1)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(ra / rb, [tail, 100 - tail])
    return float(np.median(a) / np.median(b)), float(low), float(high)


def verdict(low: float | None, high: float | None, ratio: float | None, threshold: float, *, higher_is_faster: bool) -> str | None:
    """faster / slower / no significant change for a ratio B / A and its interval."""
    if ratio is None or np.isnan(ratio):
        return None
    if low is None or high is None or np.isnan(low) or np.isnan(high):
        return SAME if max(ratio, 1 / ratio) < threshold else None
    if low > 1 and ratio >= threshold:
        return FASTER if higher_is_faster else SLOWER
    if high < 1 and ratio <= 1 / threshold:
        return SLOWER if higher_is_faster else FASTER
    return SAME


def compare(points_a: pd.DataFrame, steps_a: pd.DataFrame, points_b: pd.DataFrame, steps_b: pd.DataFrame,
            *, match: tuple[str, ...] | None = None, threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """Match the ok points of A and B on ``match`` (default: every key of ``MATCH_KEYS``) and
    give each pair its ratios, intervals and verdicts. Several points of one side with the same
    configuration (``--match`` on fewer keys) are paired in order of their repeat."""
    keys = tuple(match or MATCH_KEYS)
    a = config_frame(points_a[points_a["status"] == "ok"])
    b = config_frame(points_b[points_b["status"] == "ok"])
    for side in (a, b):
        side["config"] = side[list(keys)].agg("|".join, axis=1) if len(side) else pd.Series(dtype=str)
        side["nth"] = side.sort_values(["repeat", "point_id"]).groupby("config").cumcount() if len(side) else pd.Series(dtype=int)
    measured = ["point_id", "samples_per_s", "steps_to_target", "compute_to_target_s", "flags"]
    shown = [k for k in (*MATCH_KEYS, "model") if k not in ("model_fingerprint",)]
    merged = a[["config", "nth", *shown, *measured]].merge(b[["config", "nth", *measured]], on=["config", "nth"], suffixes=("_a", "_b"))
    times_a, times_b = step_times(steps_a), step_times(steps_b)
    rows = []
    for r in merged.to_dict("records"):
        speed = speed_ratio(times_a.get(r["point_id_a"]), times_b.get(r["point_id_b"]))
        if speed is not None:
            ratio, low, high = speed
        else:  # no timed steps to compare (a store without them): the throughput columns, no interval
            ratio, low, high = r["samples_per_s_b"] / r["samples_per_s_a"], None, None
        # Training time to target = steps to target x time a step: the steps are what they are
        # (a seeded run), so its interval is the step time's, carried over.
        steps = r["steps_to_target_b"] / r["steps_to_target_a"] if _both(r, "steps_to_target") else None
        ttt = steps / ratio if steps is not None else None
        ttt_low, ttt_high = (steps / high, steps / low) if steps is not None and low is not None else (None, None)
        rows.append({
            **r, "throughput_ratio": ratio, "throughput_low": low, "throughput_high": high,
            "throughput_verdict": verdict(low, high, ratio, threshold, higher_is_faster=True),
            "time_to_target_ratio": ttt, "time_to_target_low": ttt_low, "time_to_target_high": ttt_high,
            "time_to_target_verdict": verdict(ttt_low, ttt_high, ttt, threshold, higher_is_faster=False),
        })
    frame = pd.DataFrame(rows, columns=[*merged.columns, "throughput_ratio", "throughput_low", "throughput_high", "throughput_verdict",
                                        "time_to_target_ratio", "time_to_target_low", "time_to_target_high", "time_to_target_verdict"])
    for column in ("throughput_verdict", "time_to_target_verdict"):  # None, not NaN, where there is no verdict
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    frame = frame.sort_values(["dataset_size", "device", "batch_size", "repeat"], key=_natural).reset_index(drop=True)
    matched_a, matched_b = set(frame["point_id_a"]), set(frame["point_id_b"])
    return Comparison(frame, keys, threshold, only_a=len(set(a["point_id"]) - matched_a), only_b=len(set(b["point_id"]) - matched_b))


def _both(row: dict, column: str) -> bool:
    values = (row[f"{column}_a"], row[f"{column}_b"])
    return all(v is not None and not np.isnan(v) and v > 0 for v in values)


def _natural(column: pd.Series) -> pd.Series:
    """Sort numbers held as text by their value."""
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().all() else column


def varying_keys(comparison: Comparison) -> list[str]:
    """The configuration keys that take more than one value among the pairs: what a table
    must show to tell its rows apart."""
    f = comparison.frame
    keys = [k for k in MATCH_KEYS if k in f and k != "model_fingerprint" and f[k].nunique() > 1]
    if "per_rank_batch_size" in keys and (f["per_rank_batch_size"] == f["batch_size"]).all():
        keys.remove("per_rank_batch_size")  # one process: it is the batch size again
    return keys
