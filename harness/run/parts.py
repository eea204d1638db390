"""The parts a step is made of, built the same way for the harness and for the plain loop it
is compared with (``harness.drivers.overhead``): the loss for the task and the optimizer."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from harness.config.points import PointSpec
from harness.run.step import Recipe

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_optimizer(point: PointSpec, params) -> torch.optim.Optimizer:
    """The point's optimizer: weight decay decoupled for AdamW (Loshchilov & Hutter 2019), an
    L2 term for SGD and Adam (as torch defines them)."""
    if point.optimizer in ("adam", "adamw"):
        kind = torch.optim.AdamW if point.optimizer == "adamw" else torch.optim.Adam
        return kind(params, lr=point.lr, betas=point.betas or (0.9, 0.999), eps=point.eps or 1e-8, weight_decay=point.weight_decay)
    return torch.optim.SGD(params, lr=point.lr, momentum=point.momentum, weight_decay=point.weight_decay)


def recipe_of(point: PointSpec, own=None) -> Recipe:
    """The schedule and clipping of the point's updates; with a LightningModule's own recipe
    (``own``), its scheduler, stepped every update or every epoch as it asks."""
    if own is not None and own.scheduler is not None:
        every = 1 if own.interval == "step" else -(-point.train_size // point.per_rank_batch_size)
        return Recipe(grad_clip=point.grad_clip, scheduler=own.scheduler, scheduler_every=every * own.frequency)
    return Recipe(warmup_steps=point.lr_warmup_steps, schedule=point.lr_schedule, steps=point.steps, floor=point.lr_floor,
                  grad_clip=point.grad_clip)


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


def logits_of(output) -> torch.Tensor:
    """The prediction tensor of a model's output: the tensor itself, or the ``logits`` of an
    output object (a Hugging Face ``ModelOutput``, a dataclass, a dict), or the first tensor
    of a tuple. What the built-in losses, accuracy and the shape check read; a plug-in's own
    loss gets the output as the model returns it."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"the model returned {type(output).__name__}, which holds no logits tensor; return a tensor, "
                    "an object or dict with .logits, or give a (model, loss_fn) pair")


def make_loss(task: str) -> Loss:
    """Cross-entropy for classes, over the output's last dimension (``(B, K)`` logits for
    ``(B,)`` labels, ``(B, T, K)`` for ``(B, T)`` per-token targets: the mean over tokens);
    MSE for regression, with the output reshaped to the targets' shape (broadcasting a
    ``(B, 1)`` output against ``(B,)`` targets would silently compute a ``B x B`` loss)."""
    if task == "classification":
        def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            output = logits_of(output)
            if target.ndim > 1:
                return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
            return F.cross_entropy(output, target)

        return cross_entropy

    def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits_of(output).reshape(target.shape), target)

    return mse


def summed_loss(task: str) -> Loss:
    """The same loss summed over every target element (evaluation adds chunks up, then divides
    once by the number of target elements)."""
    if task == "classification":
        def cross_entropy(output, target: torch.Tensor) -> torch.Tensor:
            output = logits_of(output)
            return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), reduction="sum")

        return cross_entropy
    return lambda output, target: F.mse_loss(logits_of(output).reshape(target.shape), target, reduction="sum")
