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
    """The learning rates and recipe the answer holds for, in words."""
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
    times: tuple[tuple[int, float | None], ...] = ()
    """Every batch size of the table with its training time to target (None: not reached or left out)."""
    caveats: tuple[str, ...] = ()
    left_out: tuple[int, ...] = ()
    """Batch sizes that reached the target but are not ranked (``analysis.caveats.excluded``)."""

    def speedup_over(self, other: tuple[int, float | None]) -> float | None:
        return None if other[1] is None else other[1] / self.time_to_target_s

    def clearly_slower(self) -> list[tuple[int, float]]:
        """The batch sizes the answer may call slower (outside the tied set), as (batch size,
        how many times slower): the farthest that reached the target on each side."""
        outside = [(b, t) for b, t in self.times if t is not None and b not in self.tied]
        below = [pair for pair in outside if pair[0] < min(self.tied)]
        above = [pair for pair in outside if pair[0] > max(self.tied)]
        return [(b, t / self.time_to_target_s) for b, t in ([below[0]] if below else []) + ([above[-1]] if above else [])]

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
            "clearly_slower": [{"batch_size": b, "times_slower": r} for b, r in self.clearly_slower()],
            "b_crit": self.b_crit,
            "caveats": list(self.caveats),
            "headline": self.headline(),
            "sentence": self.sentence(),
        }

    def tied_text(self) -> str:
        others = [b for b in self.tied if b != self.batch_size]
        if not others:
            return "no other batch size is as fast within noise"
        span = f"{self.tied[0]}-{self.tied[-1]}" if len(self.tied) > 2 else " and ".join(map(str, self.tied))
        return f"{span} are tied within noise"

    def headline(self) -> str:
        """The choice: the tied set first where it is wide, then the batch size fastest in this run."""
        b = self.batch_size
        time = f"{_seconds(self.time_to_target_s)} of training ({self.steps_to_target:,.0f} steps x {_seconds(self.step_s)} a step)"
        if len(self.tied) > 2:
            return f"batch sizes {self.tied[0]}-{self.tied[-1]} are equally fast to the target within noise; {b} was fastest in this run: {time}"
        if len(self.tied) == 2:
            return f"train with batch size {b} ({self.tied_text()}): it reaches the target in {time}"
        return f"train with batch size {b}: it reaches the target in {time}"

    def comparison(self) -> str:
        """Against the batch sizes outside the tied set, or that none is clearly slower."""
        slower = self.clearly_slower()
        text = (", " + " and ".join(f"{r:,.2g}x faster than B={b}" for b, r in slower)) if slower else \
            "; no batch size that reached the target is clearly slower"
        missed = [f"B={b}" for b, t in self.times if t is None and b not in self.left_out and b in (self.smallest[0], self.largest[0])]
        return text + (f" ({' and '.join(missed)} did not reach the target)" if missed else "")

    def sentence(self) -> str:
        """One paragraph: the choice and what it is tied with, its time as steps x time per step,
        the comparison with the batch sizes clearly slower, the recipe it holds for, why, and
        its caveats."""
        text = self.headline() + self.comparison() + f"; with {self.lr_note}"
        why = []
        if self.b_crit is not None:
            why.append(f"steps-to-target fall as 1 + B_crit/B with B_crit = {self.b_crit}, so batches far above it save few steps")
        if self.step_s_smallest is not None and self.step_s_largest is not None and self.largest[0] != self.smallest[0]:
            why.append(f"a step takes {_seconds(self.step_s_smallest)} at B={self.smallest[0]} and {_seconds(self.step_s_largest)} at B={self.largest[0]}")
        text += (". Why: " + "; ".join(why) + "." if why else ".")
        return text + (" Caveats: " + "; ".join(self.caveats) + "." if self.caveats else "")


def lr_note(key: dict[str, Any], lr: float | None, recipe: str | None = None, batch: int | None = None) -> str:
    """Which learning rates (and recipe) an answer holds for, in words: what follows "with"."""
    policy = key.get("lr_policy") or "constant"
    what = recipe or ("" if lr is None else f"lr {lr:.4g}")
    if policy == "tuned":
        chosen = "" if lr is None else f"lr {lr:.4g}, "
        return f"{chosen}the best learning rate of the grid at this batch size" + (f" ({recipe})" if recipe else "")
    if policy == "constant":
        return f"the same recipe at every batch size: {what}; `batchbench tune` re-tunes the rate per batch size, which can move the answer"
    at = "" if lr is None else f"lr {lr:.4g}" + (f" at B={batch}" if batch else "") + ", "
    return f"{at}scaled with the batch size by the {policy} rule" + (f" ({recipe})" if recipe else "") + "; `batchbench tune` re-tunes it"


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def recommend(group) -> Recommendation | None:
    """The recommendation for one ``analysis.convergence.GroupAnalysis``; None when no batch
    size reached the target with a measured step time (``no_answer`` says why)."""
    if group.best_batch is None:
        return None
    table = group.table.sort_values("batch_size").set_index("batch_size")
    best = table.loc[group.best_batch]
    first, last = table.iloc[0], table.iloc[-1]

    def time_of(row) -> float | None:
        return float(row["train_s"]) if _finite(row["train_s"]) else None

    def step(row) -> float | None:
        return float(row["step_s"]) if _finite(row["step_s"]) else (float(row.name) / row["samples_per_s"] if _finite(row["samples_per_s"]) else None)

    lr = None if best["lr"] is None else float(best["lr"])
    return Recommendation(
        key=dict(group.key), batch_size=int(group.best_batch), tied=tuple(group.tied), lr=lr,
        lr_note=lr_note(group.key, lr, getattr(group, "recipe", None), int(group.best_batch)), time_to_target_s=float(best["train_s"]),
        steps_to_target=float(best["steps_to_target"]), step_s=float(best["step_s"]), smallest=(int(table.index[0]), time_of(first)),
        largest=(int(table.index[-1]), time_of(last)), b_crit=None if group.fit is None else group.fit.b_crit_text(),
        step_s_smallest=step(first), step_s_largest=step(last), times=tuple((int(b), time_of(row)) for b, row in table.iterrows()),
        caveats=tuple(getattr(group, "caveats", ())), left_out=tuple(b for b, _ in getattr(group, "excluded", ())),
    )


def no_answer(group) -> str:
    """Why a group has no recommendation, in one sentence."""
    reasons = "; ".join(getattr(group, "caveats", ()))
    return "no batch size reached the target with a measured step time" + (f" ({reasons})" if reasons else "") + "; see `batchbench analyze`"


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:,.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:,.3g} ms"
    return f"{value * 1e6:,.3g} µs"
