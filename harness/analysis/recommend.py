"""The answer a sweep exists to give: which batch size reaches the target soonest on this
machine, and why.

Time to target is the product of two factors measured per batch size: steps-to-target (falls
with B, fast below the critical batch size, hardly at all above it) and time per step (flat
while the device has idle capacity, then rising). The recommendation is the batch size with the
least *training* time to target (``compute_to_target_s``: the loss checks the harness adds
are left out, since a user's run would not check as often), set against the smallest and the
largest batch size of the group, with the two factors that explain it. Pure: numbers in,
numbers and a sentence out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recommendation:
    key: dict[str, Any]
    batch_size: int
    lr: float | None
    time_to_target_s: float
    """Training time to the target (loss checks excluded)."""
    steps_to_target: float
    step_s: float
    """Training time per step at this batch size, to the target."""
    smallest: tuple[int, float | None]
    """(batch size, its time to target or None when it did not reach the target)."""
    largest: tuple[int, float | None]
    b_crit: float | None
    step_s_smallest: float | None
    step_s_largest: float | None

    def speedup_over(self, other: tuple[int, float | None]) -> float | None:
        return None if other[1] is None else other[1] / self.time_to_target_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "time_to_target_s": self.time_to_target_s,
            "steps_to_target": self.steps_to_target,
            "step_s": self.step_s,
            "speedup_over_smallest": self.speedup_over(self.smallest),
            "smallest_batch_size": self.smallest[0],
            "speedup_over_largest": self.speedup_over(self.largest),
            "largest_batch_size": self.largest[0],
            "b_crit": self.b_crit,
            "sentence": self.sentence(),
        }

    def sentence(self) -> str:
        """One paragraph: the choice, its time as steps x time per step, the comparison with
        the ends of the range, and which factor decides it."""
        b = self.batch_size
        text = (f"train with batch size {b}: it reaches the target in {_seconds(self.time_to_target_s)} of training "
                f"({self.steps_to_target:,.0f} steps x {_seconds(self.step_s)} a step)")
        ends = [end for end in dict.fromkeys((self.smallest, self.largest)) if end[0] != b]
        faster = [f"{self.speedup_over(end):,.2g}x faster than B={end[0]}" for end in ends if end[1] is not None]
        missed = [f"B={end[0]}" for end in ends if end[1] is None]
        if faster:
            text += ", " + " and ".join(faster)
        if missed:
            text += f" ({' and '.join(missed)} did not reach the target)"
        why = []
        if self.b_crit is not None and math.isfinite(self.b_crit):
            why.append(f"steps-to-target fall as 1 + B_crit/B with B_crit = {self.b_crit:,.3g}, so batches far above it save few steps")
        if self.step_s_smallest is not None and self.step_s_largest is not None and self.largest[0] != self.smallest[0]:
            why.append(f"a step takes {_seconds(self.step_s_smallest)} at B={self.smallest[0]} and {_seconds(self.step_s_largest)} at B={self.largest[0]}")
        return text + (". Why: " + "; ".join(why) + "." if why else ".")


def step_s(row) -> float | None:
    """Training seconds per step of one row of a group's table: over the steps to the target
    where it was reached (what the time to target is made of), else from the throughput."""
    time, steps = row.get("compute_to_target_s"), row.get("steps_to_target")
    if _finite(time) and _finite(steps) and steps > 0:
        return float(time) / float(steps)
    speed = row.get("samples_per_s")
    return float(row["batch_size"]) / float(speed) if _finite(speed) and speed > 0 else None


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def recommend(group) -> Recommendation | None:
    """The recommendation for one ``analysis.convergence.GroupAnalysis``; None when no batch
    size reached the target."""
    table = group.table.sort_values("batch_size")
    reached = table.dropna(subset=["compute_to_target_s", "steps_to_target"])
    reached = reached[reached["steps_to_target"] > 0]
    if reached.empty:
        return None
    best = reached.loc[reached["compute_to_target_s"].idxmin()]
    first, last = table.iloc[0], table.iloc[-1]

    def end(row) -> tuple[int, float | None]:
        value = row["compute_to_target_s"]
        return int(row["batch_size"]), (None if value is None or not math.isfinite(value) else float(value))

    return Recommendation(
        key=dict(group.key),
        batch_size=int(best["batch_size"]),
        lr=None if best["lr"] is None else float(best["lr"]),
        time_to_target_s=float(best["compute_to_target_s"]),
        steps_to_target=float(best["steps_to_target"]),
        step_s=float(best["compute_to_target_s"]) / float(best["steps_to_target"]),
        smallest=end(first),
        largest=end(last),
        b_crit=None if group.fit is None else float(group.fit.b_crit),
        step_s_smallest=step_s(first),
        step_s_largest=step_s(last),
    )


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:,.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:,.3g} ms"
    return f"{value * 1e6:,.3g} µs"
