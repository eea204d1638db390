"""The critical batch size through training, and the batch-size ramp it implies (pure: numbers
in, numbers out; ``harness.drivers.cbs`` runs the branches).

At a checkpoint of a run at batch B0, branches continue at k x B0 (k = 1, 2, 4, ...) for the
same number of samples each. A larger batch that reaches (nearly) the loss of the smaller ones
after the same samples spends fewer steps for the same progress: it is below the critical batch
size. Following Merrill et al. 2025 ("Critical Batch Size Revisited", arXiv:2505.23971), the
critical batch size at that checkpoint is the largest k x B0 whose smoothed loss is within a
tolerance of the best loss of the smaller branches, walking up from k = 1 and stopping at the
first that is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence
from harness.store.schema import Status

DEFAULT_TOLERANCE = 0.05
"""A branch keeps up when its loss is at most (1 + this) x the best loss of the smaller branches."""

SMOOTHING_CHECKS = 3
"""A branch's loss is the mean of its last this many check losses (the end of the branch,
not one noisy reading)."""


@dataclass(frozen=True)
class Branch:
    """One branch of a checkpoint: its batch, rate and smoothed loss (None: it failed or diverged)."""

    factor: int
    batch_size: int
    lr: float
    loss: float | None


@dataclass(frozen=True)
class CriticalBatch:
    """The critical batch size at one checkpoint, with what it cannot be told from."""

    samples: int
    """Samples the base run had seen at the checkpoint."""
    batch_size: int
    kept_up: tuple[int, ...]
    """The branch batch sizes within the tolerance of every smaller one (the walk's passes)."""
    fell_behind: int | None
    """The first batch size that did not keep up (None: all did, so the critical batch size is
    at least ``batch_size``: a lower bound)."""
    losses: tuple[tuple[int, float | None], ...]

    @property
    def lower_bound(self) -> bool:
        return self.fell_behind is None

    def text(self) -> str:
        above = f", {self.fell_behind} fell behind" if self.fell_behind else " (every branch kept up: a lower bound)"
        return f"{self.batch_size}{above}"


def smoothed(losses: Sequence[float | None], window: int = SMOOTHING_CHECKS) -> float | None:
    """The mean of the last ``window`` finite losses; None if the last one is not finite."""
    finite = [x for x in losses if x is not None and math.isfinite(x)]
    if not losses or losses[-1] is None or not math.isfinite(losses[-1]) or not finite:
        return None
    tail = finite[-window:]
    return sum(tail) / len(tail)


def critical_batch(samples: int, branches: Sequence[Branch], tolerance: float = DEFAULT_TOLERANCE) -> CriticalBatch:
    """Walk up the branches by batch size: each keeps up when its loss is within ``tolerance``
    of the best loss of the smaller ones; the critical batch size is the last that kept up."""
    ordered = sorted(branches, key=lambda b: b.batch_size)
    kept, best, fell = [], math.inf, None
    for branch in ordered:
        if branch.loss is None or (kept and branch.loss > (1 + tolerance) * best):
            fell = branch.batch_size
            break
        kept.append(branch.batch_size)
        best = min(best, branch.loss)
    first = ordered[0].batch_size if ordered else 0
    return CriticalBatch(samples=samples, batch_size=kept[-1] if kept else first, kept_up=tuple(kept), fell_behind=fell,
                         losses=tuple((b.batch_size, b.loss) for b in ordered))


@dataclass(frozen=True)
class Stage:
    """One stage of a ramp: from ``start_samples`` on, train at ``batch_size`` with ``lr``."""

    start_samples: int
    batch_size: int
    lr: float


def ramp(curve: Sequence[CriticalBatch], b0: int, lr0: float, lr_exponent: float, largest: int) -> tuple[Stage, ...]:
    """A batch-size schedule from the measured curve: start at ``b0``; at each checkpoint whose
    critical batch size has passed twice the current batch, double it (as often as it passed,
    up to ``largest``), the learning rate scaled by (B / b0) ** ``lr_exponent`` (the same rule
    as the branches)."""
    stages = [Stage(0, b0, lr0)]
    batch = b0
    for point in sorted(curve, key=lambda c: c.samples):
        grown = batch
        while point.batch_size >= 2 * grown and 2 * grown <= largest:
            grown *= 2
        if grown != batch:
            batch = grown
            stages.append(Stage(point.samples, batch, lr0 * (batch / b0) ** lr_exponent))
    return tuple(stages)


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties averaged); None for fewer than three pairs or no spread."""
    if len(xs) < 3:
        return None

    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(list(xs)), ranks(list(ys))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    if sx == 0 or sy == 0:
        return None
    return sum((a - mx) * (b - my) for a, b in zip(rx, ry)) / (sx * sy)


# ---------------------------------------------------------------- from the stored points of a cbs run


@dataclass(frozen=True)
class RunSummary:
    """One verification run: constant B0 (the base run), the ramp, or constant at the ramp's end."""

    name: str
    batches: tuple[int, ...]
    steps: int
    final_loss: float | None
    steps_to_base_loss: int | None
    train_s_to_base_loss: float | None
    """Steps to the base run's final loss, each x the median step time at its batch size."""
    train_s: float | None = None
    """Every step of the run, each x the median step time at its batch size."""


@dataclass(frozen=True)
class Measured:
    """What a ``batchbench cbs`` run measured, read from its stored points."""

    b0: int
    lr0: float
    tolerance: float
    curve: tuple[CriticalBatch, ...]
    checkpoint_losses: tuple[tuple[int, float | None], ...]
    noise_scale: tuple[tuple[int, float], ...]
    """(samples seen, B_simple) at the base run's checks, where it was estimated."""
    stages: tuple[Stage, ...]
    verification: tuple[RunSummary, ...]
    base_samples: int
    branch_samples: int

    @property
    def branch_share(self) -> float:
        """Branch compute as a multiple of the base run's (in samples)."""
        return self.branch_samples / self.base_samples if self.base_samples else math.nan

    @property
    def rank_correlation(self) -> float | None:
        return rank_correlation([c.samples for c in self.curve], [c.batch_size for c in self.curve])

    def as_dict(self) -> dict:
        import dataclasses

        losses = dict(self.checkpoint_losses)
        return {
            "b0": self.b0, "lr0": self.lr0, "tolerance": self.tolerance, "rank_correlation": self.rank_correlation,
            "branch_compute_share": self.branch_share, "base_samples": self.base_samples,
            "curve": [{"samples": c.samples, "critical_batch_size": c.batch_size, "lower_bound": c.lower_bound, "kept_up": list(c.kept_up),
                       "fell_behind": c.fell_behind, "check_loss": losses.get(c.samples), "branch_losses": {str(b): x for b, x in c.losses}}
                      for c in self.curve],
            "noise_scale": [{"samples": s, "b_simple": b} for s, b in self.noise_scale],
            "ramp": [dataclasses.asdict(s) for s in self.stages],
            "verification": [dataclasses.asdict(v) for v in self.verification],
        }


def _count(value) -> int:
    """A stored count that may be null (a point that starts from the initial weights)."""
    return 0 if value is None or value != value else int(value)


def _losses(checks) -> list[float | None]:
    return [None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x) for x in checks.sort_values("step")["eval_loss"]]


def measured(points, checks, tolerance: float = DEFAULT_TOLERANCE) -> Measured | None:
    """The curve, the ramp and the verification from a cbs run's points (None: not a cbs run)."""
    if "role" not in points or not (points["role"] == "base").any():
        return None
    by_point = {pid: rows for pid, rows in checks.groupby("point_id")} if len(checks) else {}
    base = points[points["role"] == "base"].iloc[0]
    b0, lr0 = int(base["batch_size"]), float(base["lr"])
    base_checks = by_point.get(base["point_id"], checks.iloc[0:0]).sort_values("step")
    step_s = points.dropna(subset=["step_wall_s"]).groupby("batch_size")["step_wall_s"].median().to_dict()
    curve = []
    branches = points[points["role"] == "branch"]
    for start, at in branches.groupby("start_sample"):
        best: dict[int, Branch] = {}
        for row in at.to_dict("records"):
            loss = smoothed(_losses(by_point[row["point_id"]])) if row["status"] == Status.OK and row["point_id"] in by_point else None
            kept = best.get(int(row["batch_size"]))
            if kept is None or (loss is not None and (kept.loss is None or loss < kept.loss)):
                best[int(row["batch_size"])] = Branch(int(row["branch_factor"]), int(row["batch_size"]), float(row["lr"]), loss)
        curve.append(critical_batch(int(start), list(best.values()), tolerance))
    target = _losses(base_checks)[-1] if len(base_checks) else None
    ramps = points[points["role"] == "ramp"].sort_values("start_sample", na_position="first")
    constant = points[points["role"] == "constant"]

    def segments(frame):
        return [(row, by_point.get(row["point_id"], checks.iloc[0:0])) for row in frame.to_dict("records")]

    verification = [summarize_runs("constant B0", segments(points[points["role"] == "base"]), target, step_s)]
    if len(ramps):
        verification.append(summarize_runs("ramp", segments(ramps), target, step_s))
    for row in constant.to_dict("records"):
        verification.append(summarize_runs(f"constant {int(row['batch_size'])}", segments(constant[constant["point_id"] == row["point_id"]]), target, step_s))
    return Measured(
        b0=b0, lr0=lr0, tolerance=tolerance, curve=tuple(curve),
        checkpoint_losses=tuple((int(s) * b0, x) for s, x in zip(base_checks["step"], _losses(base_checks)) if s > 0),
        noise_scale=tuple((int(s) * b0, float(n)) for s, n in zip(base_checks["step"], base_checks["noise_scale"]) if n == n and n is not None),
        stages=tuple(Stage(_count(r["start_sample"]), int(r["batch_size"]), float(r["lr"])) for r in ramps.to_dict("records")),
        verification=tuple(verification), base_samples=int(base["steps"]) * b0,
        branch_samples=int((branches["steps"].fillna(0) * branches["batch_size"]).sum()),
    )


def summarize_runs(name: str, segments, target: float | None, step_s: dict) -> RunSummary:
    """Steps (over every segment, in order) and training time (steps x that batch's median
    step) to the first check at or below ``target``, and the last check's loss."""
    steps_before, time_before = 0, 0.0
    reached: tuple[int, float] | None = None
    final = None
    for row, rows in segments:
        batch = int(row["batch_size"])
        per_step = step_s.get(batch, math.nan)
        for step, loss in zip(rows.sort_values("step")["step"], _losses(rows)):
            final = loss
            if reached is None and target is not None and loss is not None and loss <= target:
                reached = (steps_before + int(step), time_before + int(step) * per_step)
        done = _count(row["steps"])
        steps_before, time_before = steps_before + done, time_before + done * per_step
    return RunSummary(name=name, batches=tuple(int(r["batch_size"]) for r, _ in segments), steps=steps_before, final_loss=final,
                      steps_to_base_loss=None if reached is None else reached[0],
                      train_s_to_base_loss=None if reached is None or not math.isfinite(reached[1]) else reached[1],
                      train_s=time_before if math.isfinite(time_before) else None)


@dataclass(frozen=True)
class RampCheck:
    """The verified ramp against the base run (constant B0): whether it reached the base run's
    final loss, whether it ended within the tolerance of it, and the steps and training time it
    took for that against the base run's."""

    base: RunSummary
    ramp: RunSummary
    tolerance: float

    @property
    def reached(self) -> bool:
        return self.ramp.steps_to_base_loss is not None

    @property
    def excess(self) -> float | None:
        """The ramp's final loss over the base run's, less 1 (0.02: 2% above); None if either is missing."""
        if self.ramp.final_loss is None or not self.base.final_loss:
            return None
        return self.ramp.final_loss / self.base.final_loss - 1

    @property
    def matched(self) -> bool:
        """The ramp ended within the tolerance of the base run's final loss."""
        return self.excess is not None and self.excess <= self.tolerance

    def saving(self) -> tuple[int, int, float | None, float | None]:
        """(ramp steps, base steps, ramp training s, base training s): to the base run's final
        loss where the ramp reached it, else over each whole run."""
        if self.reached:
            return (self.ramp.steps_to_base_loss or 0, self.base.steps_to_base_loss or self.base.steps,
                    self.ramp.train_s_to_base_loss, self.base.train_s_to_base_loss)
        return self.ramp.steps, self.base.steps, self.ramp.train_s, self.base.train_s


def ramp_check(m: Measured) -> RampCheck | None:
    """The ramp against constant B0 (None where no ramp past B0 was run)."""
    runs = {v.name: v for v in m.verification}
    if "ramp" not in runs or "constant B0" not in runs or len(m.stages) < 2:
        return None
    return RampCheck(runs["constant B0"], runs["ramp"], m.tolerance)


def _curve_words(m: Measured) -> str:
    def at(c: CriticalBatch) -> str:
        return f"{'at least ' if c.lower_bound else ''}{c.batch_size} (after {c.samples:,} samples)"

    if not m.curve:
        return f"No checkpoint measured a critical batch size (B0 = {m.b0})"
    first, last = m.curve[0], m.curve[-1]
    if len({(c.batch_size, c.lower_bound) for c in m.curve}) == 1:
        way = f"{'at least ' if first.lower_bound else ''}{first.batch_size} at every checkpoint ({first.samples:,} to {last.samples:,} samples)"
    else:
        way = f"from {at(first)} to {at(last)}"
    return f"Critical batch size {way}, over {len(m.curve)} checkpoint{'s' * (len(m.curve) > 1)} of the base run at B0 = {m.b0}"


def _ramp_words(m: Measured, check: RampCheck | None) -> str:
    if check is None:
        if m.curve and len(m.stages) < 2:
            return f"it never reached 2 x B0 = {2 * m.b0}, so the ramp stays at B0 and there is nothing to save by growing the batch"
        return "no ramp was verified"
    ramp = " → ".join(str(s.batch_size) for s in m.stages)
    base_loss = "-" if check.base.final_loss is None else f"{check.base.final_loss:.4g}"
    if check.excess is None:
        return f"the ramp {ramp} has no final loss to compare with the base run's {base_loss}"
    ramp_steps, base_steps, ramp_s, base_s = check.saving()
    fewer = f"{ramp_steps:,} steps instead of {base_steps:,} ({1 - ramp_steps / base_steps:.0%} fewer)" if base_steps else f"{ramp_steps:,} steps"
    if ramp_s is not None and base_s:
        fewer += f", {_seconds(ramp_s)} of training instead of {_seconds(base_s)}"
    off = f"{abs(check.excess):.1%} {'above' if check.excess >= 0 else 'below'}"
    if check.reached:
        tail = "" if check.matched else f", though it ended {off} it, beyond the {check.tolerance:.0%} tolerance"
        return f"the ramp {ramp} reached the base run's final loss {base_loss} in {fewer}{tail}"
    if check.matched:
        return (f"the ramp {ramp} ended within the {check.tolerance:.0%} tolerance of the base run's final loss ({check.ramp.final_loss:.4g}, "
                f"{off} {base_loss}) in {fewer}, without reaching {base_loss} itself")
    return (f"the ramp {ramp} never reached the base run's final loss {base_loss}: it ended at {check.ramp.final_loss:.4g}, {off}, beyond the "
            f"{check.tolerance:.0%} tolerance, so this ramp does not pay here: keep B0 = {m.b0}")


def _seconds(value: float) -> str:
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"


def verdict(m: Measured) -> str:
    """The cbs run in one line: the critical batch size through training, the ramp, and whether
    its verification held the base run's loss and what it saved, or that it never reached it."""
    return f"{_curve_words(m)}; {_ramp_words(m, ramp_check(m))}."


def tolerance_of(runs) -> float:
    """The tolerance a stored cbs run used (in its spec's ``cbs`` settings), else the default."""
    from harness.store.schema import spec_of

    for text in reversed(list(runs["spec_json"])) if len(runs) else ():
        settings = spec_of(text).get("cbs")
        if isinstance(settings, dict) and isinstance(settings.get("tolerance"), (int, float)):
            return float(settings["tolerance"])
    return DEFAULT_TOLERANCE
