"""Before and after: did B make training faster, slower, or can it not be told?

Timing noise has two levels: the steps of a run jitter, and whole runs shift (identical runs
have differed by up to 1.6x at the median step on a busy machine while each run's own interval
was tight). So the unit of comparison is the run: per configuration, each side's runs give one
median step time each (the median over a run's repeats, which share its process), and a verdict
rests on how those per-run medians spread:

- ``MIN_RUNS`` runs a side or more: Welch's interval for the ratio of the sides' geometric mean
  step times, at 95% over all the matched configurations together (Bonferroni), with the
  between-run spread taken as at least ``RUN_SPREAD_FLOOR``. A change is called when the
  interval excludes 1 *and* the ratio passes the threshold (1.10x unless told).
- fewer: ``UNDETERMINED``: one run cannot show what moves between runs, so nothing is called and
  ``--fail-above`` does not fire; the text says how many runs it needs.

Points are matched on their whole configuration (``keys.match_keys``: every axis and option a
point records), never on a file path: a plug-in model is known by its callable's name and the
fingerprint of its parameter shapes. Seeds and repeats are pooled: they are the same
configuration measured again. Training time to the target is steps to target (a seeded run's,
nearly deterministic) times the median step time, so its interval is the step time's. Pure pandas
and numpy (scipy for Student's t), no torch: the terminal and the HTML report read this frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.analysis.keys import MATCH_KEYS
from harness.config.compat import model_fingerprints
from harness.store.schema import Status

POOLED = ("seed", "repeat")
"""Keys that tell measurements of one configuration apart: pooled, never matched."""

DEFAULT_KEYS = tuple(k for k in MATCH_KEYS if k not in POOLED)

DEFAULT_THRESHOLD = 1.10
"""Changes smaller than 10% are "no significant change", whatever the interval says."""

MIN_RUNS = 2
"""Runs a side below which no verdict is given: one run cannot show the spread between runs."""

RECOMMENDED_RUNS = 3

RUN_SPREAD_FLOOR = 0.02
"""The least spread (standard deviation of log median step time) assumed between identical runs:
pinned runs of one sweep agreed within 1-3% here, and two runs that happen to agree closely must
not make a 2% change look certain."""

FAMILY_LEVEL = 0.95
"""The confidence of all the intervals of one comparison together (Bonferroni)."""

FASTER, SLOWER, SAME = "faster", "slower", "no significant change"
UNDETERMINED = "cannot tell (too few runs)"


@dataclass(frozen=True)
class Comparison:
    """The matched configurations (``frame``, one row each) and what did not match."""

    frame: pd.DataFrame
    keys: tuple[str, ...]
    threshold: float
    only_a: int
    only_b: int

    def counts(self) -> dict[str, int]:
        """Configurations per throughput verdict."""
        verdicts = self.frame["throughput_verdict"] if len(self.frame) else pd.Series(dtype=str)
        return {v: int((verdicts == v).sum()) for v in (SLOWER, FASTER, SAME, UNDETERMINED)}

    def runs_needed(self) -> int | None:
        """How many runs a side would let every configuration be judged, or None if all are."""
        short = self.frame[self.frame["throughput_verdict"] == UNDETERMINED] if len(self.frame) else self.frame
        return None if short.empty else RECOMMENDED_RUNS

    def regressions(self, factor: float) -> pd.DataFrame:
        """Configurations where B is significantly slower by more than ``factor``: throughput
        down by more than that factor, or training time to the target up by more."""
        f = self.frame
        if f.empty:
            return f
        throughput = (f["throughput_verdict"] == SLOWER) & (1 / f["throughput_ratio"] > factor)
        to_target = (f["time_to_target_verdict"] == SLOWER) & (f["time_to_target_ratio"] > factor)
        return f[throughput | to_target]


def config_frame(points: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    """The ok points with the derived keys (``model_name``, ``target``) and every key as text,
    so that nulls match nulls and 0.1 matches 0.1 whatever the store's float type; ``config``
    joins ``keys``."""
    out = points[points["status"] == Status.OK].copy()
    if out.empty:  # every point failed (or none is there): nothing to match, columns as ever
        derived = ("step_s", "model_name", "model_fingerprint", "target", *MATCH_KEYS, "config")
        return out.assign(**{column: pd.Series(dtype=object) for column in derived})
    out["step_s"] = out["step_wall_s"].where(out["step_wall_s"].notna(), out["batch_size"] / out["samples_per_s"]).astype(float)
    out["model_name"] = out["model"].astype(str).str.rsplit(":", n=1).str[-1]
    out["model_fingerprint"] = model_fingerprints(out)
    rel = out["target_rel"] if "target_rel" in out else pd.Series(np.nan, index=out.index)
    absolute = out["target_loss"].map(_text) + "/" + out["target_accuracy"].map(_text)
    out["target"] = np.where(rel.notna(), "rel:" + rel.map(_text), absolute)
    for key in MATCH_KEYS:
        out[key] = (out[key] if key in out else pd.Series(None, index=out.index, dtype=object)).map(_text)
    out["config"] = out[list(keys)].agg("|".join, axis=1) if len(out) else pd.Series(dtype=str)
    return out


def _text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return "%.10g" % value
    return str(value)


def per_run(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration and run: the median over the run's repeats."""
    if frame.empty:
        return pd.DataFrame(columns=["config", "run_id", "step_s", "samples_per_s", "steps_to_target"])
    return frame.groupby(["config", "run_id"], as_index=False).agg(
        step_s=("step_s", "median"), samples_per_s=("samples_per_s", "median"), steps_to_target=("steps_to_target", "median"))


def speed_interval(times_a: np.ndarray, times_b: np.ndarray, tests: int) -> tuple[float, float | None, float | None]:
    """(A's over B's geometric mean step time: above 1, B is faster; and its interval at
    ``FAMILY_LEVEL`` over ``tests`` intervals, or None bounds with fewer than ``MIN_RUNS`` a side)."""
    la, lb = np.log(times_a), np.log(times_b)
    diff = float(la.mean() - lb.mean())
    if min(len(la), len(lb)) < MIN_RUNS:
        return float(np.exp(diff)), None, None
    from scipy import stats as scipy_stats  # only for an interval: one run a side has none

    var_a, var_b = max(la.var(ddof=1), RUN_SPREAD_FLOOR**2) / len(la), max(lb.var(ddof=1), RUN_SPREAD_FLOOR**2) / len(lb)
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(la) - 1) + var_b**2 / (len(lb) - 1))
    half = scipy_stats.t.ppf(1 - (1 - FAMILY_LEVEL) / (2 * max(1, tests)), df) * np.sqrt(var_a + var_b)
    return float(np.exp(diff)), float(np.exp(diff - half)), float(np.exp(diff + half))


def verdict(low: float | None, high: float | None, ratio: float | None, threshold: float, *, higher_is_faster: bool) -> str | None:
    """faster / slower / no significant change for a ratio B / A and its interval; without an
    interval, ``UNDETERMINED``."""
    if ratio is None or np.isnan(ratio):
        return None
    if low is None or high is None or np.isnan(low) or np.isnan(high):
        return UNDETERMINED
    if low > 1 and ratio >= threshold:
        return FASTER if higher_is_faster else SLOWER
    if high < 1 and ratio <= 1 / threshold:
        return SLOWER if higher_is_faster else FASTER
    return SAME


def compare(points_a: pd.DataFrame, points_b: pd.DataFrame, *, match: tuple[str, ...] | None = None,
            threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """Match the ok points of A and B on ``match`` (default: every configuration key but seeds
    and repeats), pool each side's runs per configuration, and give each configuration its
    ratios, intervals and verdicts."""
    keys = tuple(match or DEFAULT_KEYS)
    a, b = config_frame(points_a, keys), config_frame(points_b, keys)
    runs_a, runs_b = per_run(a), per_run(b)
    common = sorted(set(runs_a["config"]) & set(runs_b["config"]))
    shown = [k for k in (*MATCH_KEYS, "model") if k not in ("model_fingerprint", *POOLED)]
    rows = [_row(a, b, runs_a[runs_a["config"] == c], runs_b[runs_b["config"] == c], shown, threshold, len(common)) for c in common]
    frame = pd.DataFrame(rows, columns=_columns(shown))
    for column in ("throughput_verdict", "time_to_target_verdict"):  # None, not NaN, where there is no verdict
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    if len(frame):
        frame = frame.sort_values(["dataset_size", "device", "batch_size"], key=_natural).reset_index(drop=True)
    return Comparison(frame, keys, threshold, only_a=len(set(runs_a["config"]) - set(common)), only_b=len(set(runs_b["config"]) - set(common)))


def _columns(shown: list[str]) -> list[str]:
    return [*shown, "runs_a", "runs_b", "samples_per_s_a", "samples_per_s_b", "step_s_a", "step_s_b", "steps_to_target_a", "steps_to_target_b",
            "train_s_a", "train_s_b", "throughput_ratio", "throughput_low", "throughput_high", "throughput_verdict",
            "time_to_target_ratio", "time_to_target_low", "time_to_target_high", "time_to_target_verdict"]


def _row(a, b, mine_a, mine_b, shown, threshold: float, tests: int) -> dict:
    first = a[a["config"] == mine_a["config"].iloc[0]].iloc[0]
    ratio, low, high = speed_interval(mine_a["step_s"].to_numpy(float), mine_b["step_s"].to_numpy(float), tests)
    step_a, step_b = float(np.exp(np.log(mine_a["step_s"]).mean())), float(np.exp(np.log(mine_b["step_s"]).mean()))
    steps_a, steps_b = mine_a["steps_to_target"].median(), mine_b["steps_to_target"].median()
    reached = all(v == v and v is not None and v > 0 for v in (steps_a, steps_b))
    steps = steps_b / steps_a if reached else None
    ttt = steps / ratio if steps is not None else None
    ttt_low, ttt_high = (steps / high, steps / low) if steps is not None and low is not None else (None, None)
    return {
        **{k: first[k] for k in shown}, "runs_a": len(mine_a), "runs_b": len(mine_b),
        "samples_per_s_a": float(mine_a["samples_per_s"].median()), "samples_per_s_b": float(mine_b["samples_per_s"].median()),
        "step_s_a": step_a, "step_s_b": step_b, "steps_to_target_a": steps_a, "steps_to_target_b": steps_b,
        "train_s_a": steps_a * step_a if reached else None, "train_s_b": steps_b * step_b if reached else None,
        "throughput_ratio": ratio, "throughput_low": low, "throughput_high": high,
        "throughput_verdict": verdict(low, high, ratio, threshold, higher_is_faster=True),
        "time_to_target_ratio": ttt, "time_to_target_low": ttt_low, "time_to_target_high": ttt_high,
        "time_to_target_verdict": verdict(ttt_low, ttt_high, ttt, threshold, higher_is_faster=False) if ttt is not None else None,
    }


def _natural(column: pd.Series) -> pd.Series:
    """Sort numbers held as text by their value."""
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().all() else column


def varying_keys(comparison: Comparison) -> list[str]:
    """The configuration keys that take more than one value among the matched configurations:
    what a table must show to tell its rows apart."""
    f = comparison.frame
    keys = [k for k in MATCH_KEYS if k in f and k != "model_fingerprint" and f[k].nunique() > 1]
    if "per_rank_batch_size" in keys and (f["per_rank_batch_size"] == f["batch_size"]).all():
        keys.remove("per_rank_batch_size")  # one process: it is the batch size again
    return keys


def step_times(steps: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per point id, the measured (not burn-in) timed steps' times in the order they ran: the sum
    of the step's phases, which are bounded by consecutive clock marks (the pytest fixture
    reports these as a benchmark's timings)."""
    if steps.empty:
        return {}
    measured = steps[steps["burn_in"] == 0].sort_values(["point_id", "step"])
    total = measured["data_s"] + measured["derivative_s"] + measured["update_s"]
    return {pid: total[idx].to_numpy(dtype=float) for pid, idx in measured.groupby("point_id").groups.items()}
