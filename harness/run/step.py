"""One training step: data -> derivative -> update.

Everything a step could branch on (precision, the gradient scaler, accumulation, the
learning-rate schedule, clipping) is settled here, before the loop, by choosing which closure
to build: an fp32 step runs the same lines a hand-written loop runs. The engine calls the three parts inline (a call less per
step than a wrapper would cost), with the clock's marks between them on a timed step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Step:
    """The three parts of a step, each settled for the point: ``fetch() -> (xb, yb)``,
    ``derivative(xb, yb) -> loss`` and ``update(step)``. The engine calls them in its loop,
    with the clock's marks between them on a timed step."""

    fetch: Callable[[], Batch]
    derivative: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    update: Callable[[int], None]


def derivative_of(trained: torch.nn.Module, loss_fn: Callable, autocast=None, scaler=None,
                  micro_batch_size: int | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Forward, loss and backward of one batch: as written by hand for fp32 and tf32, in an
    autocast context for bf16 and fp16 (fp16's loss scaled by its ``GradScaler``).

    With ``micro_batch_size`` M smaller than the batch, gradient accumulation: the batch runs as
    micro-batches of M (the last one smaller where M does not divide it), each micro-batch's
    mean loss weighted by its share of the batch, so the summed gradients are the batch mean's
    and the update after them is the one the whole batch would give. Only one micro-batch's
    activations are alive at a time: that is what accumulation buys."""
    scale = (lambda loss: loss) if scaler is None else scaler.scale
    if autocast is None:
        def whole(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            loss = loss_fn(trained(xb), yb)
            loss.backward()
            return loss
    else:
        def whole(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            with autocast():
                loss = loss_fn(trained(xb), yb)
            scale(loss).backward()
            return loss
    if micro_batch_size is None:
        return whole

    def accumulated(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        rows = xb.shape[0]
        if rows <= micro_batch_size:
            return whole(xb, yb)
        total = None
        for x_part, y_part in zip(xb.split(micro_batch_size), yb.split(micro_batch_size)):
            share = x_part.shape[0] / rows
            if autocast is None:
                loss = loss_fn(trained(x_part), y_part)
            else:
                with autocast():
                    loss = loss_fn(trained(x_part), y_part)
            scale(loss * share).backward()
            part = loss.detach() * share
            total = part if total is None else total + part
        assert total is not None  # a batch has at least one micro-batch
        return total

    return accumulated


def lr_factor(step: int, warmup_steps: int, schedule: str, steps: int, floor: float) -> float:
    """The learning rate at ``step`` as a share of the peak: a linear warm-up over the first
    ``warmup_steps`` (Goyal et al. 2017), then ``constant``, or a ``cosine`` (Loshchilov &
    Hutter 2017) or ``linear`` decay to ``floor`` at the point's last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps - 1))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return floor + (1.0 - floor) * shape


@dataclass(frozen=True)
class Recipe:
    """What an update does besides the optimizer's step: the learning-rate schedule and the
    gradient clipping (by global norm; with fp16 the gradients are unscaled first)."""

    warmup_steps: int = 0
    schedule: str = "constant"
    steps: int = 1
    floor: float = 0.0
    grad_clip: float | None = None
    scheduler: Any = None
    """A LightningModule's own scheduler (its ``configure_optimizers``), stepped after the update..."""
    scheduler_every: int = 1
    """...every this many updates (1: interval ``step``; an epoch's steps: interval ``epoch``)."""

    @property
    def scheduled(self) -> bool:
        return self.warmup_steps > 0 or self.schedule != "constant"


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler, recipe: Recipe) -> Callable[[int], None]:
    """The parameter update itself, ``step_once(step)``: the optimizer's step (fp16: through the
    scaler), after clipping where the recipe clips, followed by a LightningModule's scheduler
    where it has one (stepped after every ``scheduler_every``-th update, counted by the step
    number, so a point that goes back to a snapshot steps it as it did the first time)."""
    if scaler is None:
        def step_once(step: int) -> None:
            optimizer.step()
    else:
        def step_once(step: int) -> None:
            scaler.step(optimizer)
            scaler.update()
    if recipe.grad_clip is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        unclipped, max_norm = step_once, recipe.grad_clip

        def step_once(step: int) -> None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            unclipped(step)
    if recipe.scheduler is not None:
        unscheduled, scheduler, every = step_once, recipe.scheduler, recipe.scheduler_every

        def step_once(step: int) -> None:
            unscheduled(step)
            if (step + 1) % every == 0:
                scheduler.step()
    return step_once


def update_of(optimizer: torch.optim.Optimizer, scaler=None, recipe: Recipe = Recipe()) -> Callable[[int], None]:
    """The optimizer's step and ``zero_grad``, after setting the step's learning rate where the
    recipe schedules it. The plain update (no schedule, no clipping) is the two lines of a
    hand-written loop."""
    step_once, zero, groups = _optimizer_step(optimizer, scaler, recipe), optimizer.zero_grad, optimizer.param_groups
    if not recipe.scheduled:
        if scaler is None and recipe.grad_clip is None and recipe.scheduler is None:
            step_plain = optimizer.step  # the two lines of a hand-written loop

            def update(step: int) -> None:
                step_plain()
                zero(set_to_none=True)

            return update

        def update_steps(step: int) -> None:
            step_once(step)
            zero(set_to_none=True)

        return update_steps
    peaks = [group["lr"] for group in groups]  # each parameter group's own rate is its peak

    def update_scheduled(step: int) -> None:
        factor = lr_factor(step, recipe.warmup_steps, recipe.schedule, recipe.steps, recipe.floor)
        for group, peak in zip(groups, peaks):
            group["lr"] = peak * factor
        step_once(step)
        zero(set_to_none=True)

    return update_scheduled
