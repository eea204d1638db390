"""The parts a step is made of, built the same way for the harness and for the plain loop it
is compared with (``harness.overhead``): the loss for the task and the optimizer."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from harness.spec import PointSpec

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_optimizer(point: PointSpec, params) -> torch.optim.Optimizer:
    if point.optimizer == "adam":
        return torch.optim.Adam(params, lr=point.lr)
    return torch.optim.SGD(params, lr=point.lr, momentum=point.momentum)


def make_loss(task: str) -> Loss:
    """Cross-entropy for classes; MSE for regression, with the ``(B, 1)`` output reshaped to
    the ``(B,)`` targets (broadcasting them would silently compute a ``B x B`` loss)."""
    if task == "classification":
        return F.cross_entropy

    def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.reshape(target.shape), target)

    return mse


def summed_loss(task: str) -> Loss:
    """The same loss summed over the batch (evaluation adds chunks up, then divides once)."""
    if task == "classification":
        return lambda output, target: F.cross_entropy(output, target, reduction="sum")
    return lambda output, target: F.mse_loss(output.reshape(target.shape), target, reduction="sum")
