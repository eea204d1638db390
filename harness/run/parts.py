"""The parts a step is made of, built the same way for the harness and for the plain loop it
is compared with (``harness.drivers.overhead``): the loss for the task and the optimizer."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from harness.config.points import PointSpec

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_optimizer(point: PointSpec, params) -> torch.optim.Optimizer:
    if point.optimizer == "adam":
        return torch.optim.Adam(params, lr=point.lr)
    return torch.optim.SGD(params, lr=point.lr, momentum=point.momentum)


def autocast_for(point: PointSpec, device: torch.device) -> Callable[[], contextlib.AbstractContextManager] | None:
    """A fresh autocast context per step for bf16/fp16 (forward and loss run in it); None for
    fp32 and tf32, whose steps carry no context at all."""
    if point.precision not in ("bf16", "fp16"):
        return None
    dtype = torch.bfloat16 if point.precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def grad_scaler(point: PointSpec, device: torch.device):
    """fp16's gradient scaler (its scale in ``derivative``, unscale and step in ``update``)."""
    return torch.amp.GradScaler(device.type) if point.precision == "fp16" else None


@contextlib.contextmanager
def matmul_precision(point: PointSpec) -> Iterator[None]:
    """TF32 matmuls and convolutions on CUDA for a tf32 point, restored after it."""
    if point.precision != "tf32":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def make_loss(task: str) -> Loss:
    """Cross-entropy for classes, over the output's last dimension (``(B, K)`` logits for
    ``(B,)`` labels, ``(B, T, K)`` for ``(B, T)`` per-token targets: the mean over tokens);
    MSE for regression, with the output reshaped to the targets' shape (broadcasting a
    ``(B, 1)`` output against ``(B,)`` targets would silently compute a ``B x B`` loss)."""
    if task == "classification":
        def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if target.ndim > 1:
                return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
            return F.cross_entropy(output, target)

        return cross_entropy

    def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.reshape(target.shape), target)

    return mse


def summed_loss(task: str) -> Loss:
    """The same loss summed over every target element (evaluation adds chunks up, then divides
    once by the number of target elements)."""
    if task == "classification":
        return lambda output, target: F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), reduction="sum")
    return lambda output, target: F.mse_loss(output.reshape(target.shape), target, reduction="sum")
