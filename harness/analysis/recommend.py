"""The answer a sweep exists to give: which batch size reaches the target soonest on this
machine, which others cannot be told apart from it, and why.

Training time to target is the product of two factors measured apart per batch size: steps to
target (falls with B, fast below the critical batch size, hardly at all above it; nearly
deterministic at a seed) and the median step time (flat while the device has idle capacity,
then rising; noisy, so a median of many steps). The recommendation is the batch size with the
least product; ``tied`` holds every batch size whose interval reaches the best's
(``analysis.uncertainty``), so an answer that moves between runs moves inside it. It holds for
the learning rates the sweep used, which the sentence names. Pure: numbers in, numbers and a
sentence out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recommendation:
    key: dict[str, Any]
    batch_size: int
    tied: tuple[int, ...]
    """Every batch size not significantly slower to the target than ``batch_size`` (itself included)."""
    lr: float | None
    lr_note: str
    """The learning rates the answer holds for: ``lr 0.1 at every batch size (constant)``."""
    time_to_target_s: float
    """Training time to the target: steps to target x the median step time."""
    steps_to_target: float
    step_s: float
    smallest: tuple[int, float | None]
    """(batch size, its training time to target or None when it did not reach the target)."""
    largest: tuple[int, float | None]
    b_crit: str | None
    """B_crit with its interval, from a fit of at least four batch sizes; None without one."""
    step_s_smallest: float | None
    step_s_largest: float | None

    def speedup_over(self, other: tuple[int, float | None]) -> float | None:
        return None if other[1] is None else other[1] / self.time_to_target_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "tied": list(self.tied),
            "lr": self.lr,
            "lr_note": self.lr_note,
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

    def tied_text(self) -> str:
        others = [b for b in self.tied if b != self.batch_size]
        if not others:
            return "no other batch size is as fast within noise"
        span = f"{self.tied[0]}-{self.tied[-1]}" if len(self.tied) > 2 else " and ".join(map(str, self.tied))
        return f"{span} are tied within noise"

    def sentence(self) -> str:
        """One paragraph: the choice and what it is tied with, its time as steps x time per step,
        the comparison with the ends of the range, the learning rates it holds for, and why."""
        b = self.batch_size
        text = (f"train with batch size {b} ({self.tied_text()}): it reaches the target in {_seconds(self.time_to_target_s)} of training "
                f"({self.steps_to_target:,.0f} steps x {_seconds(self.step_s)} a step)")
        ends = [end for end in dict.fromkeys((self.smallest, self.largest)) if end[0] != b]
        faster = [f"{self.speedup_over(end):,.2g}x faster than B={end[0]}" for end in ends if end[1] is not None]
        missed = [f"B={end[0]}" for end in ends if end[1] is None]
        if faster:
            text += ", " + " and ".join(faster)
        if missed:
            text += f" ({' and '.join(missed)} did not reach the target)"
        text += f"; at {self.lr_note}"
        why = []
        if self.b_crit is not None:
            why.append(f"steps-to-target fall as 1 + B_crit/B with B_crit = {self.b_crit}, so batches far above it save few steps")
        if self.step_s_smallest is not None and self.step_s_largest is not None and self.largest[0] != self.smallest[0]:
            why.append(f"a step takes {_seconds(self.step_s_smallest)} at B={self.smallest[0]} and {_seconds(self.step_s_largest)} at B={self.largest[0]}")
        return text + (". Why: " + "; ".join(why) + "." if why else ".")


def lr_note(key: dict[str, Any], lr: float | None) -> str:
    """Which learning rates an answer holds for, in words."""
    policy = key.get("lr_policy") or "constant"
    if policy == "tuned":
        chosen = "" if lr is None else f"lr {lr:.4g}, "
        return f"{chosen}the best learning rate of the grid at this batch size (tuned)"
    rate = "" if lr is None else f"lr {lr:.4g} "
    if policy == "constant":
        return f"{rate}for every batch size (constant; `batchbench tune` re-tunes the rate per batch size, which can move the answer)"
    return f"{rate}scaled with the batch size ({policy}; `batchbench tune` re-tunes it)"


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def recommend(group) -> Recommendation | None:
    """The recommendation for one ``analysis.convergence.GroupAnalysis``; None when no batch
    size reached the target."""
    if group.best_batch is None:
        return None
    table = group.table.sort_values("batch_size").set_index("batch_size")
    best = table.loc[group.best_batch]
    first, last = table.iloc[0], table.iloc[-1]

    def end(batch, row) -> tuple[int, float | None]:
        return int(batch), (float(row["train_s"]) if _finite(row["train_s"]) else None)

    def step(row) -> float | None:
        return float(row["step_s"]) if _finite(row["step_s"]) else (float(row.name) / row["samples_per_s"] if _finite(row["samples_per_s"]) else None)

    return Recommendation(
        key=dict(group.key), batch_size=int(group.best_batch), tied=tuple(group.tied), lr=None if best["lr"] is None else float(best["lr"]),
        lr_note=lr_note(group.key, None if best["lr"] is None else float(best["lr"])), time_to_target_s=float(best["train_s"]),
        steps_to_target=float(best["steps_to_target"]), step_s=float(best["step_s"]), smallest=end(table.index[0], first),
        largest=end(table.index[-1], last), b_crit=None if group.fit is None else group.fit.b_crit_text(),
        step_s_smallest=step(first), step_s_largest=step(last),
    )


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:,.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:,.3g} ms"
    return f"{value * 1e6:,.3g} µs"
