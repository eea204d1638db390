"""Train with the batch-size ramp `batchbench cbs` measured, in a plain PyTorch loop.

    batchbench cbs --dataset data.npz --model examples/ramp_loop.py:make_model --devices cpu \\
        --check-set train --batch-sizes 8 --lr 0.1 --epochs 4 --ramp-out ramp.json
    python examples/ramp_loop.py ramp.json data.npz

The loop adds three things to an ordinary one: the DataLoader's batch sampler, a LambdaLR on the
ramp's rates, and the initial weights' seed. With the same data (the `.npz` rows, in their
order: `--check-set train` at the data set's own size trains on all of them) and the same
model, it ends at the loss `cbs` verified the ramp at.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import harness.ramp


def make_model(n_features: int, n_outputs: int) -> torch.nn.Module:
    """The model, for `batchbench cbs --model examples/ramp_loop.py:make_model` and for the loop."""
    return torch.nn.Sequential(torch.nn.Linear(n_features, 64), torch.nn.ReLU(), torch.nn.Linear(64, n_outputs))


def load_npz(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """X and y as batchbench reads a `.npz`: float32 features, class labels numbered 0..K-1 in sorted order."""
    data = np.load(path)
    labels = np.unique(data["y"], return_inverse=True)[1]
    return torch.from_numpy(data["X"].astype(np.float32)), torch.from_numpy(labels.astype(np.int64))


def train(ramp: harness.ramp.Ramp, X: torch.Tensor, y: torch.Tensor, momentum: float = 0.0) -> torch.nn.Module:
    """The ramp's steps over (X, y), with SGD as `cbs` ran it (its --momentum)."""
    torch.manual_seed(ramp.init_seed)  # the weights cbs started from
    model = make_model(X.shape[1], int(y.max()) + 1)
    dataset = TensorDataset(X, y)
    loader = DataLoader(dataset, batch_sampler=ramp.sampler(len(dataset)))  # batches grow at the ramp's sample counts
    optimizer = torch.optim.SGD(model.parameters(), lr=ramp.lr0, momentum=momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, ramp.lr_lambda())  # each stage's rate
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return model


@torch.no_grad()
def check_loss(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """The mean loss over a whole set, as batchbench's loss check computes it."""
    model.eval()
    return float(F.cross_entropy(model(X), y, reduction="sum").double() / len(y))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    ramp = harness.ramp.load(argv[0])
    X, y = load_npz(argv[1])
    model = train(ramp, X, y)
    stages = " -> ".join(f"{s.batch_size} from {s.start_samples:,}" for s in ramp.stages)
    print(f"ramp {stages}: {ramp.steps} steps, loss {check_loss(model, X, y):.6g} (cbs verified {ramp.loss:.6g})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
