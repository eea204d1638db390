"""The model against the data, before anything runs: a forward pass (and the plug-in's own loss)
on two training rows, so that a model that cannot take the data, or gives the wrong shape, is a
one-line ``SpecError`` naming ``--model`` now instead of the same error at every point.

The check runs on the CPU; a model that fails there is tried again on the sweep's first other
device (a model may use operations only CUDA has). One that fails everywhere fails the plan,
with its own message.
"""

from __future__ import annotations

from typing import Sequence

import torch

from harness.errors import SpecError
from harness.run.parts import logits_of
from harness.config.axes import BY_NAME
from harness.config.spec import SweepSpec
from harness.config.values import flag
from harness.workload.lightning import LightningModel, RecipeSummary, recipe_of
from harness.workload import models
from harness.workload.datasets import Split
from harness.workload.workload import Workload

ROWS = 2


def check_output(spec: SweepSpec, workload: Workload, devices: Sequence[str] = ("cpu",), decided: Sequence[str] = ()) -> RecipeSummary | None:
    """The model's output on two training rows is what the loss needs: K logits per target for
    K classes (``(B, K)``, or ``(B, T, K)`` for per-token targets), one value per target for
    regression, or a scalar from the plug-in's own loss. Returns a LightningModule's own recipe
    (None for other models); ``workload``: the first point's; ``decided``: fields the command
    set, not the user."""
    split = workload.split
    _check_input_kind(spec, split)
    with torch.random.fork_rng():
        model, own_loss = workload.build()
    own = None
    if isinstance(model, LightningModel):
        _check_lightning_flags(spec, decided)
        with torch.random.fork_rng():
            own = recipe_of(model.module).summary()
    out, value = _forward(spec, model, own_loss, split, ["cpu", *(d for d in devices if d != "cpu")][:2])
    if own_loss is not None:
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = f" of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else ""
            raise SpecError("--model", f"the loss of {spec.model} returns a {type(value).__name__}{shape}, not a scalar tensor")
        return own
    try:
        out = logits_of(out)
    except TypeError:
        raise SpecError("--model", f"{spec.model} returns {type(out).__name__}, not a (batch, outputs) tensor or an object with .logits") from None
    if out.ndim == 0:
        raise SpecError("--model", f"{spec.model} returns a scalar, not a (batch, outputs) tensor")
    _check_shape(spec, out, split)
    return own


LIGHTNING_OWNS = ("optimizer", "lr", "momentum", "weight_decay", "betas", "eps", "lr_schedule", "lr_floor", "warmup_steps", "lr_policy")
"""The flags a LightningModule's ``configure_optimizers`` decides: given too, they would contradict it."""


def _check_lightning_flags(spec, decided: Sequence[str] = ()) -> None:
    for name in LIGHTNING_OWNS:
        if name not in decided and getattr(spec, name) != BY_NAME[name].default:
            raise SpecError(flag(name), f"{spec.model} is a LightningModule: its configure_optimizers sets the optimizer, the "
                                        f"learning rate and its schedule; leave {flag(name)} out (or change configure_optimizers)")


def _check_input_kind(spec, split: Split) -> None:
    shape = "x".join(map(str, split.input_shape))
    tokens = not split.X_train.is_floating_point()
    if spec.model in models.BUILTINS and tokens != (spec.model in models.TOKEN_MODELS):
        if tokens:
            raise SpecError("--model", f"{spec.model} takes float features, but {spec.dataset} holds integer token ids ({shape} a sample); "
                                       "use gpt or a plug-in model with an embedding")
        raise SpecError("--model", f"{spec.model} takes integer token ids, but {spec.dataset} holds float features; use --dataset text or a .npz of token ids")


def _forward(spec, model: torch.nn.Module, own_loss, split: Split, devices: list[str]):
    """(output, own loss or None) on the first device where the model runs; a ``SpecError``
    with the model's own message where it runs on none."""
    failure: Exception | None = None
    for device in devices:
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.startswith("cuda") else []):
                moved = model.to(device).eval()
                xb, yb = split.X_train[:ROWS].to(device), split.y_train[:ROWS].to(device)
                out = moved(xb)
                return out, (own_loss(out, yb) if own_loss is not None else None)
        except Exception as exc:  # the model's own code: said below, with its message
            failure = failure or exc
    shape = ", ".join(map(str, split.input_shape))
    detail = " ".join(f"{type(failure).__name__}: {failure}".split())[:300]
    raise SpecError("--model", f"{spec.model} fails on {ROWS} training rows of {spec.dataset} (shape (B, {shape})) on {' and '.join(devices)}: "
                               f"{detail}; every point would fail the same way")


def _check_shape(spec, out: torch.Tensor, split: Split) -> None:
    shape = ", ".join(map(str, split.input_shape))
    targets = tuple(split.y_train.shape[1:])
    width = int(out.numel() // max(1, out.shape[0]))
    if split.task == "classification":
        if tuple(out.shape) != (ROWS, *targets, split.n_classes):
            per = f"{width} outputs per sample" if not targets else f"output {tuple(out.shape[1:])} per sample"
            need = f"(B, {split.n_classes})" if not targets else f"(B, {', '.join(map(str, targets))}, {split.n_classes})"
            raise SpecError("--model", f"{spec.model} gives {per}, but {spec.dataset} has {split.n_classes} classes; make it map (B, {shape}) to {need}")
    elif out.numel() != split.y_train[:ROWS].numel():
        need = max(1, int(split.y_train[:1].numel()))
        raise SpecError("--model", f"{spec.model} gives {width} outputs per sample, but {spec.dataset} is a regression with {need} target(s); "
                                   f"make it map (B, {shape}) to (B, {need})")
