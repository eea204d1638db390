"""The ``loss_check`` phase: what it measures (the check-set loss,
the mean loss of the training batches read since the last check, and optionally the gradient noise scale)
and how it is kept apart from the training steps' time.

A check runs between steps, after the clock's window has closed, so it never lands inside a
step's phases. Its own duration is recorded per check; the noise-scale estimate that may
follow it is timed apart again and left out of every wall and compute time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from harness.measures.targets import reached
from harness.measures.noise_scale import b_simple
from harness.run.parts import logits_of, summed_loss
from harness.run.memory import PeakMemory
from harness.config.points import PointSpec
from harness.workload.lightning import LightningModel

EVAL_CHUNK = 8192
"""Rows per forward pass in a loss check, to bound its memory on large check sets."""

DIVERGED_FACTOR = 10.0
"""A point whose check-set loss rises above this multiple of its loss at step 0 has diverged
(status ``diverged``, and it stops): a loss that grows tenfold is not training, whether or not
it has become infinite yet (``--lr 200`` on digits went from 2.3 to 82 and kept "training")."""


def _logits(output):
    """The output's logits, or None where it holds none (a plug-in's own loss reads it)."""
    try:
        return logits_of(output)
    except TypeError:
        return None


@torch.no_grad()
def evaluate(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, task: str, loss_fn: Callable | None = None) -> tuple[float, float | None]:
    """Mean loss (and accuracy for classes) on a whole set, in chunks, in eval mode: per target
    element with the built-in losses; with a user's ``loss_fn`` (a mean over its batch), the
    mean of its chunk values weighted by their rows. Accuracy where the output is one row of
    logits per target (argmax over its last dimension); a LightningModule's output is what its
    own forward returned inside its ``training_step``."""
    was_training = model.training
    model.eval()
    loss_sum = summed_loss(task)
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    correct = torch.zeros((), dtype=torch.int64, device=X.device)
    scored = task == "classification"
    lightning = model if isinstance(model, LightningModel) else None
    own = lightning.outputs if lightning is not None else None  # its loss and its outputs come from its training_step
    for start in range(0, X.shape[0], EVAL_CHUNK):
        xb, yb = X[start : start + EVAL_CHUNK], y[start : start + EVAL_CHUNK]
        out = model(xb)
        if loss_fn is None:
            total += loss_sum(out, yb).double()
        elif own is None:
            total += loss_fn(out, yb).double() * xb.shape[0]
        else:
            with own() as seen:
                total += loss_fn(out, yb).double() * xb.shape[0]
            out = lightning.predict(xb, seen) if scored and lightning is not None else None
        scored = scored and isinstance(logits := _logits(out), torch.Tensor) and logits.shape[:-1] == yb.shape
        if scored:
            correct += (logits.argmax(dim=-1) == yb).sum()
    model.train(was_training)
    n = X.shape[0] if loss_fn is not None else y.numel()
    loss = total.item() / n  # sync: the loss check ends here
    return loss, (correct.item() / y.numel() if scored else None)


class BatchLosses:
    """The training-batch losses the loop reads: of every ``LOSS_EVERY``-th step and the last
    before each loss check (``counted``: their mean since the previous check is the check's
    ``train_loss``), and of the timed steps (the ``steps`` table shows them). Not every step's:
    reading a loss (``.item()``, or even ``.detach()`` to read later) cost 1.5-2% of a small CPU
    step here, as much as all the rest of the harness. On an accelerator they stay detached
    tensors until a check, read there in one stacked read (reading one per step would wait for
    the device); on the CPU they are read at once (nothing to wait for, and the step's graph
    goes as in a plain loop). ``keep(step, loss, counted)`` is the call."""

    def __init__(self, device: torch.device):
        self.steps: list[int] = []
        self.values: list = []
        self.counted: list[bool] = []
        steps, values, counted = self.steps.append, self.values.append, self.counted.append
        read = (lambda loss: loss.item()) if device.type == "cpu" else (lambda loss: loss.detach())

        def keep(step: int, loss: torch.Tensor, is_counted: bool) -> None:
            steps(step)
            values(read(loss))
            counted(is_counted)

        self.keep: Callable[[int, torch.Tensor, bool], None] = keep
        self._window_start = 0

    def window_mean(self) -> float | None:
        """Mean loss of the counted batches since the previous call (a sync on a device)."""
        window = [v for v, c in zip(self.values[self._window_start :], self.counted[self._window_start :]) if c]
        self._window_start = len(self.values)
        if not window:
            return None
        if isinstance(window[0], float):
            return sum(window) / len(window)
        return torch.stack(window).float().mean().item()

    def floats(self) -> dict[int, float]:
        """Step -> batch loss, for the steps read."""
        if not self.values or isinstance(self.values[0], float):
            return dict(zip(self.steps, self.values))
        return dict(zip(self.steps, torch.stack(self.values).float().cpu().tolist()))


@dataclass(frozen=True)
class CheckSet:
    """What a loss check evaluates: the model on a set (the holdout or the training set), with
    the plug-in's own loss or the task's."""

    model: torch.nn.Module
    X: torch.Tensor
    y: torch.Tensor
    task: str
    loss_fn: Callable | None = None

    def evaluate(self) -> tuple[float, float | None]:
        return evaluate(self.model, self.X, self.y, self.task, self.loss_fn)


@dataclass(frozen=True)
class Outcome:
    """What one check found: its ``checks`` row, whether the point's target is reached, and why
    the point diverged (a non-finite loss) or None."""

    row: dict[str, Any]
    reached: bool
    diverged: str | None


class LossCheck:
    """``check(step) -> Outcome``: evaluate the check set, take the mean of the batch losses read
    since the previous check, estimate the noise scale if asked, and say whether the target is
    reached. It keeps its own account of the time it takes (``check_ns``; ``noise_ns`` and
    ``aside_ns``, left out of every wall and compute time)."""

    def __init__(self, point: PointSpec, check_set: CheckSet, losses: BatchLosses, now_ns: Callable[[], int], *,
                 noise: Callable | None = None, all_mean: Callable[[float | None], float | None] | None = None,
                 peaks: PeakMemory | None = None):
        self.point, self.check_set, self.losses, self.now_ns = point, check_set, losses, now_ns
        self.noise, self.all_mean, self.peaks = noise, all_mean, peaks
        self.initial_loss: float | None = None
        self.check_ns: list[int] = []
        self.noise_ns: list[int] = []
        self.aside_ns: list[int] = []
        self.start_ns = now_ns()

    def aside(self, action: Callable[[], None]) -> None:
        """Run harness bookkeeping between steps, its time set aside from every measurement."""
        start = self.now_ns()
        action()
        self.aside_ns.append(self.now_ns() - start)

    def __call__(self, step: int) -> Outcome:
        if self.peaks is not None:
            self.aside(self.peaks.enter_check)
        try:
            return self._check(step)
        finally:
            if self.peaks is not None:
                self.aside(self.peaks.leave_check)

    def _check(self, step: int) -> Outcome:
        now_ns, point = self.now_ns, self.point
        t0 = now_ns()
        eval_loss, eval_acc = self.check_set.evaluate()
        train_loss = self.losses.window_mean()
        if self.all_mean is not None and train_loss is not None:  # ranks check at the same step: average them
            train_loss = self.all_mean(train_loss)
        t1 = now_ns()
        self.check_ns.append(t1 - t0)
        excluded = sum(self.aside_ns)
        row: dict[str, Any] = {
            "step": step,
            "epoch": step * point.batch_size / point.train_size,
            "samples_seen": step * point.batch_size,
            "wall_s": (t1 - self.start_ns - excluded) / 1e9,
            "compute_s": (t0 - self.start_ns - excluded - sum(self.check_ns[:-1])) / 1e9,
            "train_loss": train_loss,
            "eval_loss": eval_loss,
            "eval_acc": eval_acc,
            "noise_scale": None,
            "noise_scale_s": None,
        }
        diverged = self._diverged(step, eval_loss, train_loss)
        if diverged:
            return Outcome(row, False, diverged)
        if self.noise is not None:
            n0 = now_ns()
            row["noise_scale"] = b_simple(self.noise())
            n1 = now_ns()
            self.noise_ns.append(n1 - n0)
            self.aside_ns.append(n1 - n0)
            row["noise_scale_s"] = (n1 - n0) / 1e9
        return Outcome(row, reached(row, point.target_loss, point.target_accuracy), None)

    def _diverged(self, step: int, eval_loss: float, train_loss: float | None) -> str | None:
        """Why the point has diverged (a non-finite loss, or a check-set loss past
        ``DIVERGED_FACTOR`` times the first), or None."""
        for name, value in (("check-set", eval_loss), ("training batch", train_loss)):
            if value is not None and not math.isfinite(value):
                return f"{name} loss became {value} by step {step}"
        if self.initial_loss is None:
            self.initial_loss = eval_loss
        elif self.initial_loss > 0 and eval_loss > DIVERGED_FACTOR * self.initial_loss:
            return f"check-set loss {eval_loss:.4g} at step {step} is more than {DIVERGED_FACTOR:g}x its {self.initial_loss:.4g} at the start"
        return None
