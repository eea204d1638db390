"""Everything a point needs before its first step, in the order it is made: the model (seeded by
the sweep's ``init_seed``, so every batch size starts from the same weights), the optimizer, the
training set where the point places it, and the untimed measurements taken before training
(the CPU's live tensor bytes of a step, the FLOPs of a step, ``torch.compile``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, cast

import torch

from harness.config.points import PointSpec
from harness.run.flops import compile_now, step_flops
from harness.run.memory import activation_bytes, step_tensor_bytes
from harness.run.parts import autocast_for, grad_scaler, make_loss, make_optimizer
from harness.workload import models
from harness.workload.lightning import LightningModel, LightningRecipe, recipe_of
from harness.workload.datasets import Split
from harness.workload.workload import Workload


@dataclass(frozen=True)
class Built:
    """The model as built, before training, and what is known of it."""

    model: torch.nn.Module
    own_loss: Callable | None
    """The plug-in's own loss, or None (the task's loss applies)."""
    facts: dict[str, Any]
    """``n_params``, ``model_fingerprint``, ``activation_bytes``."""


@dataclass(frozen=True)
class Prepared:
    model: torch.nn.Module
    trained: torch.nn.Module
    """What the loop calls: the model, or its DDP or ``torch.compile`` wrapper (loss checks and
    the noise scale use the plain model)."""
    optimizer: torch.optim.Optimizer
    loss_fn: Callable
    own_loss: Callable | None
    X: torch.Tensor
    y: torch.Tensor
    """The training set where the point places it (host memory, or the device)."""
    autocast: Callable | None
    scaler: Any
    noise: Callable | None
    """The noise-scale estimator, or None."""
    facts: dict[str, Any]
    """``flops_per_step`` and ``compile_s``."""
    tensor_peak_bytes: int | None
    """CPU: peak live tensor bytes of a training step, counted on an untimed copy."""
    own_recipe: LightningRecipe | None = None
    """A LightningModule's optimizer and scheduler, where the model is one."""


def build(point: PointSpec, workload: Workload, device: torch.device) -> Built:
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model, own_loss = workload.build()
    model = model.to(device)
    split = workload.split
    facts = {"n_params": sum(p.numel() for p in model.parameters()), "model_fingerprint": models.fingerprint(model),
             "activation_bytes": activation_bytes(model, split.X_train[:1], device, point.batch_size)}
    return Built(model, own_loss, facts)


def prepare(point: PointSpec, split: Split, built: Built, device: torch.device, rank: tuple[int, int] | None) -> Prepared:
    model = built.model
    torch.manual_seed(point.seed)  # dropout and the like follow the repeat's seed
    own_recipe = recipe_of(model.module) if isinstance(model, LightningModel) else None  # its configure_optimizers
    if own_recipe is not None:
        own_recipe.scale(point.lr_scale)  # tune and cbs move its rates by its optimizer's rule
    optimizer = own_recipe.optimizer if own_recipe else make_optimizer(point, model.parameters())
    new_optimizer = (lambda params: own_recipe.fresh(params)) if own_recipe else (lambda params: make_optimizer(point, params))
    trained = model
    if rank is not None:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = built.own_loss or make_loss(split.task)
    X, y = split.X_train, split.y_train  # host memory; moving a batch is part of `data`...
    if point.data_placement == "device":  # ...unless the training set lives on the device (moved now, untimed)
        X, y = X.to(device), y.to(device)
    tensor_peak = None
    if device.type == "cpu":  # peak_device_mem_bytes on the CPU: live tensor bytes of an untimed, counted step
        tensor_peak = step_tensor_bytes(model, new_optimizer, loss_fn, X, y, point.micro_batch_size or point.per_rank_batch_size, seed=point.seed)
    autocast, scaler = autocast_for(point, device), grad_scaler(point, device)
    rows = min(point.per_rank_batch_size, X.shape[0])
    first_x, first_y = X[:rows].to(device), y[:rows].to(device)  # one training batch for the untimed FLOP count and compile
    flops = step_flops(model, loss_fn, first_x, first_y, autocast)
    if flops is not None and rank is not None:
        flops *= rank[1]  # every rank does its share of the global batch
    facts: dict[str, Any] = {"flops_per_step": flops, "compile_s": None, **(own_recipe.facts() if own_recipe else {})}
    if point.compile == "on":
        trained = cast(torch.nn.Module, torch.compile(trained))  # an OptimizedModule
        facts["compile_s"] = compile_now(trained, loss_fn, first_x, first_y, autocast, scaler)
    noise = noise_estimator(point, model, loss_fn, X, y, device)
    return Prepared(model, trained, optimizer, loss_fn, built.own_loss, X, y, autocast, scaler, noise, facts, tensor_peak, own_recipe)


def noise_estimator(point: PointSpec, model, loss_fn, X: torch.Tensor, y: torch.Tensor, device: torch.device):
    """The noise-scale estimator on a fixed, seeded subsample of the training set (the same
    subsample at every check, so the curve shows the parameters changing, not the sample)."""
    if point.noise_samples < 2:
        return None
    from harness.run.gradient_moments import NoiseScale

    generator = torch.Generator().manual_seed(point.data_seed + 7919)
    rows = torch.randperm(point.train_size, generator=generator)[: point.noise_samples].sort().values
    return NoiseScale(model, loss_fn, X[rows].to(device), y[rows].to(device), population=point.train_size)
