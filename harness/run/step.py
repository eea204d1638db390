"""One training step: data -> derivative -> update.

Everything a step could branch on (precision, the gradient scaler, the learning-rate warm-up)
is settled here, before the loop, by choosing which closure to build: an fp32 step runs the
same lines a hand-written loop runs. The engine calls the three parts inline (a call less per
step than a wrapper would cost), with the clock's marks between them on a timed step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
