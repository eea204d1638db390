"""One training step, plain and timed: data -> derivative -> update.

Everything a step could branch on (precision, the gradient scaler, the learning-rate warm-up)
is settled here, before the loop, by choosing which closure to build: an fp32 step runs the
same lines a hand-written loop runs, and the timed step is the plain one with the clock's four
marks between its phases (the engine adds the fifth, closing the step, after it reads the loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Step:
    """``plain(step)`` and ``timed(step)`` train one step and return its loss (a tensor)."""

    plain: Callable[[int], torch.Tensor]
    timed: Callable[[int], torch.Tensor]


def derivative_of(trained: torch.nn.Module, loss_fn: Callable, autocast=None, scaler=None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Forward, loss and backward of one batch: as written by hand for fp32 and tf32, in an
    autocast context for bf16 and fp16 (fp16's loss scaled by its ``GradScaler``)."""
    if autocast is None:
        def derivative(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            loss = loss_fn(trained(xb), yb)
            loss.backward()
            return loss

        return derivative
    scale = (lambda loss: loss) if scaler is None else scaler.scale

    def derivative_amp(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with autocast():
            loss = loss_fn(trained(xb), yb)
        scale(loss).backward()
        return loss

    return derivative_amp


def update_of(optimizer: torch.optim.Optimizer, scaler=None, warmup_steps: int = 0, lr: float = 0.0) -> Callable[[int], None]:
    """The optimizer's step and ``zero_grad`` (fp16: the scaler unscales, steps and updates its
    scale), after a linear learning-rate warm-up over the first ``warmup_steps`` (Goyal et al. 2017)."""
    if scaler is None:
        step_once = optimizer.step
    else:
        def step_once() -> None:
            scaler.step(optimizer)
            scaler.update()
    zero, groups = optimizer.zero_grad, optimizer.param_groups
    if warmup_steps == 0:
        def update(step: int) -> None:
            step_once()
            zero(set_to_none=True)

        return update

    def update_warming(step: int) -> None:
        if step < warmup_steps:
            for group in groups:
                group["lr"] = lr * (step + 1) / warmup_steps
        step_once()
        zero(set_to_none=True)

    return update_warming


def make_step(fetch: Callable[[], Batch], derivative: Callable, update: Callable[[int], None], mark: Callable[[], None]) -> Step:
    def plain(step: int) -> torch.Tensor:
        xb, yb = fetch()
        loss = derivative(xb, yb)
        update(step)
        return loss

    def timed(step: int) -> torch.Tensor:
        mark()
        xb, yb = fetch()
        mark()
        loss = derivative(xb, yb)
        mark()
        update(step)
        mark()
        return loss

    return Step(plain, timed)
