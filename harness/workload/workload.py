"""``Workload``: what a point trains -- its model (by name, with the knobs its axes hand the
model's constructor) and its data -- as one object, built once per point and handed whole to
every place that builds the point's model: the engine, tune's trials, the pre-flight, overhead's
plain loop, fit's probes and cbs's branches. One place (``build``) turns a point's values into a
model, so no two of them can build different models from the same point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.config.points import PointSpec
from harness.workload import models
from harness.workload.datasets import Split


@dataclass(frozen=True)
class Workload:
    model: str
    """``--model``: a built-in's name or a plug-in's ``module:callable``."""
    factory: models.Factory
    split: Split
    """The point's training and check sets."""
    init_seed: int
    """Seeds the initial weights: every batch size starts from the same ones."""
    knobs: tuple[tuple[str, Any], ...] = ()
    """(keyword, value) of each axis declared ``to_model`` (``--hidden``, ...)."""

    @classmethod
    def of(cls, point: PointSpec, split: Split, factory: models.Factory) -> Workload:
        knobs = tuple((a.point_field, getattr(point, a.point_field)) for a in type(point).axes if a.to_model and a.point_field)
        return cls(point.model, factory, split, point.init_seed, knobs)

    def build(self) -> tuple[torch.nn.Module, models.Loss | None]:
        """The model at its initial weights, on the CPU, and a plug-in's own loss (None: the
        task's loss applies). Seeds torch's global RNG with ``init_seed``."""
        split = self.split
        torch.manual_seed(self.init_seed)
        return models.build_with_loss(self.model, self.factory, n_features=split.n_features, n_outputs=split.n_outputs,
                                      input_shape=split.input_shape, knobs=dict(self.knobs))
