"""A point's training state at a loss check, kept in memory, from which another point continues
(``batchbench cbs`` branches from them): everything the next step depends on.

- the model's and the optimizer's state (copied to host memory, so a snapshot outlives the
  point and does not hold device memory);
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


def _to_host(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(v) for v in value)
    return copy.deepcopy(value)


def take(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, samples: int, check_loss: float, device: torch.device) -> Snapshot:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return Snapshot(steps, samples, check_loss, _to_host(model.state_dict()), _to_host(optimizer.state_dict()), torch.get_rng_state(), cuda)


def restore(snapshot: Snapshot, model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr: float, device: torch.device) -> None:
    """Load the snapshot into a freshly built model and optimizer; the point's own learning
    rate replaces the one the optimizer's state carried."""
    model.load_state_dict(snapshot.model_state)
    optimizer.load_state_dict(snapshot.optimizer_state)  # moves its tensors to the parameters' device
    for group in optimizer.param_groups:
        group["lr"] = lr
    torch.set_rng_state(snapshot.rng_state)
    if snapshot.cuda_rng_state is not None and device.type == "cuda":
        torch.cuda.set_rng_state(snapshot.cuda_rng_state, device)
