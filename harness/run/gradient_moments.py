"""Gradient noise scale at the current parameters, from per-example gradients.

B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018): Sigma is the covariance of per-example
gradients over the training set, G the full-batch gradient. It is estimated on a fixed, seeded
subsample of m training examples:

- exact per-example gradients through ``torch.func`` (``vmap(grad(...))``), where the model
  allows it; otherwise
- the two-batch estimator over 16 disjoint small batches of the same subsample.

Both correct |G|^2 for sampling without replacement from N examples: the mean of m
per-example gradients has variance (1/m - 1/N) tr(Sigma), so |G|^2 = |g_m|^2 - (1/m - 1/N) tr(Sigma).
Without the 1/N term the estimate turns negative once B_simple approaches N; with m = N it is
exact. The parameters, their ``.grad`` and the RNG state are left exactly as they were.
"""

from __future__ import annotations

import warnings

from typing import Callable

import torch

from harness.measures.noise_scale import GradientMoments

CHUNK = 256
"""Per-example gradients computed this many at a time, to bound memory."""
TWO_BATCH_SPLITS = 16


class NoiseScale:
    """Callable estimator bound to one model and one subsample; returns ``GradientMoments``."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor, population: int):
        self.model, self.loss_fn = model, loss_fn
        self.X, self.y = X, y
        self.population = population
        # a model whose loss is computed outside its forward (a LightningModule) hides its
        # parameters from functional_call: only the two-batch estimate sees them
        self.method = "per-example" if getattr(model, "per_example", True) else "two-batch"

    def __call__(self) -> GradientMoments:
        devices = [self.X.device] if self.X.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if self.method == "per-example":
                try:
                    return self._per_example()
                except Exception:  # a model torch.func cannot vmap (batch norm in training, ...)
                    self.method = "two-batch"
            return self._two_batch()

    def _params(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.model.named_parameters() if p.requires_grad}

    def _per_example(self) -> GradientMoments:
        from torch.func import functional_call, grad, vmap

        model, loss_fn = self.model, self.loss_fn
        params = self._params()
        buffers = {name: b.detach() for name, b in model.named_buffers()}

        def loss_one(p, x, t):
            return loss_fn(functional_call(model, (p, buffers), (x.unsqueeze(0),)), t.unsqueeze(0))

        per_example = vmap(grad(loss_one), in_dims=(None, 0, 0), randomness="different")
        total = {name: torch.zeros(p.shape, dtype=torch.float64, device=p.device) for name, p in params.items()}
        sum_sq = torch.zeros((), dtype=torch.float64, device=self.X.device)
        for start in range(0, self.X.shape[0], CHUNK):
            with warnings.catch_warnings():  # torch says vmap over attention falls back to a loop: slower, still right; not the user's concern
                warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented the batching rule")
                grads = per_example(params, self.X[start : start + CHUNK], self.y[start : start + CHUNK])
            for name, g in grads.items():
                g = g.double()
                total[name] += g.sum(0)
                sum_sq += g.flatten(1).pow(2).sum()
        m = self.X.shape[0]
        mean_sq = sum(float((t / m).pow(2).sum()) for t in total.values())
        trace = (float(sum_sq) - m * mean_sq) / (m - 1) if m > 1 else 0.0
        return GradientMoments(m, self.population, mean_sq, trace, "per-example")

    def _two_batch(self) -> GradientMoments:
        """E|g_b|^2 = |G|^2 + (1/b - 1/N) tr(Sigma) at two sizes b gives both unknowns."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        m = self.X.shape[0]
        splits = min(TWO_BATCH_SPLITS, m)
        small = m // splits
        total = [torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in params]
        small_sq = 0.0
        for j in range(splits):
            xb, yb = self.X[j * small : (j + 1) * small], self.y[j * small : (j + 1) * small]
            grads = torch.autograd.grad(self.loss_fn(self.model(xb), yb), params)
            small_sq += sum(float(g.double().pow(2).sum()) for g in grads)
            for t, g in zip(total, grads):
                t += g.double()
        big_sq = sum(float((t / splits).pow(2).sum()) for t in total)
        big = small * splits
        c_small = 1 / small - 1 / self.population
        c_big = 1 / big - 1 / self.population
        trace = (small_sq / splits - big_sq) / (c_small - c_big) if c_small > c_big else 0.0
        # Express as the moments of a mean over `big` samples, so b_simple() applies one formula.
        return GradientMoments(big, self.population, big_sq, trace, "two-batch")
