"""A LightningModule used as it is: its ``training_step`` gives the loss, its
``configure_optimizers`` the recipe (optimizer, scheduler and its interval).

batchbench's loop calls ``loss_fn(model(xb), yb)``. ``LightningModel`` makes a LightningModule
fit that shape without running anything twice: its ``forward`` hands the batch through, and
its loss calls ``training_step((xb, yb), batch_idx)``, which runs the module's own forward, loss
and logging as Lightning would (``self.log`` and ``self.log_dict`` become no-ops: no Trainer is attached). The
noise scale's per-example path cannot see through this (it swaps parameters only inside
``forward``), so ``per_example = False`` sends it to the two-batch estimate.

Lightning itself is never imported: a LightningModule is recognised by its class's name in its
MRO, so the extra stays optional.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn


def is_lightning(model: Any) -> bool:
    return any(cls.__name__ == "LightningModule" for cls in type(model).__mro__) and hasattr(model, "training_step")


class LightningModel(nn.Module):
    """A LightningModule as batchbench's (model, loss_fn) pair."""

    per_example = False

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.calls = 0
        for name in ("log", "log_dict"):  # no Trainer to log to: a no-op, instead of a warning every step
            object.__setattr__(module, name, _ignore)

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        return xb

    @contextlib.contextmanager
    def outputs(self) -> Iterator[list]:
        """What the module's own ``forward`` returns while inside (``training_step`` calling
        ``self(x)``): a loss check scores accuracy on it without a second forward pass."""
        seen: list = []
        handle = self.module.register_forward_hook(lambda module, args, output: seen.append(output))
        try:
            yield seen
        finally:
            handle.remove()

    def predict(self, xb: torch.Tensor, seen: list):
        """The module's output on ``xb``: the one its ``training_step`` made, or its ``forward``
        called directly where the step never called it; None where that fails."""
        if seen:
            return seen[-1]
        try:
            return self.module(xb)
        except Exception:  # a forward that takes another input than the batch: no accuracy, not a failed check
            return None

    def loss(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The module's ``training_step`` on the batch: its loss tensor (or a dict's ``loss``)."""
        out = self.module.training_step((xb, yb), self.calls)
        self.calls += 1
        loss = out["loss"] if isinstance(out, dict) else out
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"training_step returned {type(out).__name__}, not a loss tensor or a dict with 'loss'")
        return loss


def _ignore(*args, **kwargs) -> None:
    return None


def adapt(module: nn.Module) -> tuple[nn.Module, Any]:
    adapted = LightningModel(module)
    return adapted, lambda out, yb: adapted.loss(out, yb)


@dataclass(frozen=True)
class RecipeSummary:
    """What a plan needs to know of a LightningModule's own recipe, without keeping it."""

    optimizer: str
    """Its optimizer's class, lower case (``adamw``)."""
    scheduler: str | None
    """Its scheduler's class (``OneCycleLR``), or None."""
    fixed_steps: int | None
    """The step count a scheduler is bound to and cannot run past (OneCycleLR's ``total_steps``)."""


@dataclass(frozen=True)
class LightningRecipe:
    """What ``configure_optimizers`` returned, made usable by the loop."""

    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    interval: str
    """``step`` (the scheduler steps after every update) or ``epoch`` (after each pass over the training set)."""
    frequency: int

    def scale(self, factor: float) -> None:
        """Multiply every rate of the optimizer and its scheduler by ``factor`` (``tune`` and
        ``cbs`` move a module's own rates by its optimizer's rule across batch sizes)."""
        if factor == 1.0:
            return
        for group in self.optimizer.param_groups:
            for key in ("lr", "initial_lr", "max_lr", "min_lr"):
                if key in group:
                    group[key] = group[key] * factor
        if self.scheduler is not None and hasattr(self.scheduler, "base_lrs"):
            self.scheduler.base_lrs = [rate * factor for rate in self.scheduler.base_lrs]
        if self.scheduler is not None and hasattr(self.scheduler, "_last_lr"):
            self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def summary(self) -> "RecipeSummary":
        return RecipeSummary(type(self.optimizer).__name__.lower(), type(self.scheduler).__name__ if self.scheduler is not None else None,
                             getattr(self.scheduler, "total_steps", None) if self.scheduler is not None else None)

    def fresh(self, params) -> torch.optim.Optimizer:
        """The same kind of optimizer with the same settings over other parameters (for the
        untimed step that counts a step's tensor bytes)."""
        import inspect

        accepted = inspect.signature(type(self.optimizer).__init__).parameters
        return type(self.optimizer)(params, **{k: v for k, v in self.optimizer.defaults.items() if k in accepted})

    def facts(self) -> dict[str, Any]:
        """The recipe as the point's columns: the optimizer's class, its first group's peak rate
        (OneCycleLR's ``max_lr``; a decaying scheduler's starting rate), weight decay and betas,
        and the scheduler's class with its interval."""
        group = self.optimizer.param_groups[0]
        betas = group.get("betas")
        return {
            "optimizer": type(self.optimizer).__name__.lower(), "lr": peak_rate(group),
            "weight_decay": float(group.get("weight_decay", 0.0)), "momentum": group.get("momentum"),
            "betas": ",".join(f"{b:g}" for b in betas) if betas else None, "eps": group.get("eps"),
            "lr_schedule": f"{type(self.scheduler).__name__}/{self.interval}" if self.scheduler is not None else "constant",
        }


def peak_rate(group: dict) -> float:
    """The highest rate a parameter group's scheduler gives it: OneCycleLR keeps it as
    ``max_lr`` (its ``initial_lr`` is the low start), other schedulers as ``initial_lr``."""
    return float(group.get("max_lr", group.get("initial_lr", group["lr"])))


def recipe_of(module: nn.Module) -> LightningRecipe:
    """``configure_optimizers()`` in any of the shapes Lightning accepts with one optimizer: an
    optimizer; a list or tuple of one; ``([optimizer], [scheduler])``; or a dict with
    ``optimizer`` and ``lr_scheduler`` (a scheduler, or a dict with ``scheduler``, ``interval``
    and ``frequency``). More than one optimizer (manual optimization) is refused."""
    made = module.configure_optimizers()
    scheduler: Any = None
    if isinstance(made, dict):
        optimizer, scheduler = made.get("optimizer"), made.get("lr_scheduler")
    elif isinstance(made, (list, tuple)) and len(made) == 2 and all(isinstance(m, (list, tuple)) for m in made):
        optimizers, schedulers = made
        optimizer = optimizers[0] if len(optimizers) == 1 else None
        scheduler = schedulers[0] if schedulers else None
    elif isinstance(made, (list, tuple)):
        optimizer = made[0] if len(made) == 1 else None
    else:
        optimizer = made
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"configure_optimizers returned {type(made).__name__}; batchbench takes one optimizer (with at most one scheduler)")
    interval, frequency = "epoch", 1  # Lightning's defaults
    if isinstance(scheduler, dict):
        interval, frequency = scheduler.get("interval", "epoch"), int(scheduler.get("frequency", 1))
        scheduler = scheduler.get("scheduler")
    return LightningRecipe(optimizer, scheduler, interval, frequency)
