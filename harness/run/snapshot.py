"""A point's training state at a loss check, kept in memory, from which training continues:
``batchbench cbs`` branches from them, and a point goes back to one to find the step where it
crossed its target (``run.refine``). Everything the next step depends on:

- the model's and the optimizer's state (copied to host memory, so a snapshot outlives the
  point and does not hold device memory), a LightningModule's scheduler and fp16's gradient
  scaler;
- torch's random state (dropout and the like continue as they would have);
- the position in the data order, as samples seen: a point's index stream is a concatenation of
  seeded permutations of the training set whatever the batch size (``run.batches``), so a point
  that starts at ``samples`` with the same seed reads exactly the samples the base would have
  read next, at any batch size.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Snapshot:
    steps: int
    """Steps the point had taken (its own count)."""
    samples: int
    """Samples seen since the initial weights (the point's ``start_sample`` plus its own)."""
    check_loss: float
    model_state: dict[str, Any]
    optimizer_state: dict[str, Any]
    rng_state: torch.Tensor
    cuda_rng_state: torch.Tensor | None
    scheduler_state: dict[str, Any] | None = None
    """A LightningModule's own scheduler, where it has one."""
    scaler_state: dict[str, Any] | None = None
    """fp16's gradient scaler, where the point has one."""


def _to_host(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(v) for v in value)
    return copy.deepcopy(value)


def take(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, samples: int, check_loss: float, device: torch.device,
         scheduler=None, scaler=None) -> Snapshot:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return Snapshot(steps, samples, check_loss, _to_host(model.state_dict()), _to_host(optimizer.state_dict()), torch.get_rng_state(), cuda,
                    None if scheduler is None else _to_host(scheduler.state_dict()), None if scaler is None else _to_host(scaler.state_dict()))


def restore(snapshot: Snapshot, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, *, own_rates: bool = False,
            scheduler=None, scaler=None) -> None:
    """Load the snapshot into a model and optimizer (freshly built, or the ones it was taken
    of). ``own_rates``: each parameter group keeps the learning rate it has now (a point that
    continues another at its own rate: a ``cbs`` branch) instead of the one the state carried."""
    rates = [group["lr"] for group in optimizer.param_groups]
    model.load_state_dict(snapshot.model_state)
    optimizer.load_state_dict(snapshot.optimizer_state)  # moves its tensors to the parameters' device
    if own_rates:
        for group, lr in zip(optimizer.param_groups, rates):
            group["lr"] = lr
    if scheduler is not None and snapshot.scheduler_state is not None:
        scheduler.load_state_dict(snapshot.scheduler_state)
    if scaler is not None and snapshot.scaler_state is not None:
        scaler.load_state_dict(snapshot.scaler_state)
    torch.set_rng_state(snapshot.rng_state)
    if snapshot.cuda_rng_state is not None and device.type == "cuda":
        torch.cuda.set_rng_state(snapshot.cuda_rng_state, device)
