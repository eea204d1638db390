"""A Lightning ``Callback`` that trains a LightningModule on a measured ramp:

    trainer = Trainer(callbacks=[harness.ramp.load("ramp.json").lightning_callback()])

- the data: the training DataLoader the module (or its DataModule) returns from
  ``train_dataloader`` is made again over the same dataset with the ramp's batch sampler (its
  workers, collate function and pinning kept); a DataLoader handed to ``fit`` directly must
  already have it (``callback.loader(dataset)``);
- the rate: before every step, each parameter group's rate is its rate from
  ``configure_optimizers`` x the ramp's factor at that step (the module's own scheduler would
  fight it: the callback refuses one);
- the length: training stops after the ramp's steps (one pass of its sampler).

Lightning is imported only here, when a callback is made: ``lightning.pytorch`` or
``pytorch_lightning``, whichever the process has already imported (else is installed).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from harness.ramp.sampler import RampSampler


def lightning_package():
    """``lightning.pytorch`` or ``pytorch_lightning``: the one already imported, else the one installed."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        if name in sys.modules:
            return sys.modules[name]
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError:
            raise ImportError("the ramp's Lightning callback needs Lightning: pip install lightning (or pytorch-lightning)") from None
    return pl


class _RampHooks:
    """Trains a LightningModule on the ramp: its batch sampler, its rates, its length."""

    def __init__(self, ramp: Any, *, steps: int | None = None, samples: int | None = None, seed: int | None = None):
        self.ramp, self.steps, self.samples, self.seed = ramp, steps, samples, seed
        last = ramp.schedule(steps=steps, samples=samples)[-1]
        self.total_steps = last.first_step + last.steps
        self.lr_factor = ramp.lr_lambda(steps=steps, samples=samples)
        self._base_rates: list[list[float]] = []
        self._patched: list[tuple[Any, Any]] = []
        """(owner, its own train_dataloader attribute before, or None) of each ``setup`` changed."""

    def sampler(self, dataset_size: int) -> RampSampler:
        return self.ramp.sampler(dataset_size, steps=self.steps, samples=self.samples, seed=self.seed)

    def loader(self, dataset, **options):
        """A DataLoader over ``dataset`` with the ramp's batch sampler (``options``: the
        DataLoader's other keywords), for ``trainer.fit(module, train_dataloaders=...)``."""
        from torch.utils.data import DataLoader

        return DataLoader(dataset, batch_sampler=self.sampler(len(dataset)), **options)

    def _on_ramp(self, loader):
        from torch.utils.data import DataLoader

        if isinstance(getattr(loader, "batch_sampler", None), RampSampler):
            return loader
        if not isinstance(loader, DataLoader):
            raise TypeError(f"the ramp callback makes the training DataLoader again with its batch sampler; train_dataloader returned "
                            f"{type(loader).__name__}: return one DataLoader")
        workers = loader.num_workers
        return self.loader(loader.dataset, num_workers=workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                           worker_init_fn=loader.worker_init_fn, persistent_workers=loader.persistent_workers if workers else False,
                           prefetch_factor=loader.prefetch_factor if workers else None)

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Before Lightning asks for the training data: its ``train_dataloader`` (the module's
        and a DataModule's) returns the ramp's DataLoader instead."""
        if stage != "fit":
            return
        for owner in (pl_module, getattr(trainer, "datamodule", None)):
            before = None if owner is None else vars(owner).get("train_dataloader")
            if owner is None or getattr(before, "ramp_callback", None) is self:
                continue
            make = owner.train_dataloader

            @functools.wraps(make)  # Lightning still sees the owner's own train_dataloader (is_overridden)
            def on_ramp(make=make):
                return self._on_ramp(make())

            on_ramp.ramp_callback = self  # type: ignore[attr-defined]
            owner.train_dataloader = on_ramp
            self._patched.append((owner, before))

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """The module and DataModule as they were."""
        for owner, before in self._patched:
            if before is None:
                vars(owner).pop("train_dataloader", None)
            else:
                owner.train_dataloader = before
        self._patched = []

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.lr_scheduler_configs:
            raise ValueError("the ramp sets the learning rate at every step; configure_optimizers also returns a scheduler: leave it out "
                             "(batchbench cbs measured the ramp at constant rates within each stage)")
        if trainer.accumulate_grad_batches != 1:
            raise ValueError("the ramp's batches are whole steps; leave accumulate_grad_batches at 1")
        if not isinstance(getattr(trainer.train_dataloader, "batch_sampler", None), RampSampler):
            raise ValueError("the training DataLoader has no ramp sampler: return it from train_dataloader (the callback puts it on the "
                             "ramp), or make the one handed to fit() with callback.loader(dataset)")
        self._base_rates = [[group["lr"] for group in optimizer.param_groups] for optimizer in trainer.optimizers]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        factor = self.lr_factor(trainer.global_step)
        for optimizer, rates in zip(trainer.optimizers, self._base_rates):
            for group, rate in zip(optimizer.param_groups, rates):
                group["lr"] = rate * factor

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step >= self.total_steps:
            trainer.should_stop = True


_CLASSES: dict[str, type] = {}


def callback(ramp: Any, *, steps: int | None = None, samples: int | None = None, seed: int | None = None):
    """A ``RampCallback`` (a ``Callback`` of the Lightning package in use) for ``ramp`` (a
    ``harness.ramp.Ramp``); ``steps``, ``samples`` and ``seed`` as for ``Ramp.sampler``."""
    pl = lightning_package()
    cls = _CLASSES.get(pl.__name__)
    if cls is None:
        cls = _CLASSES[pl.__name__] = type("RampCallback", (_RampHooks, pl.Callback), {"__module__": __name__, "__doc__": _RampHooks.__doc__})
    return cls(ramp, steps=steps, samples=samples, seed=seed)
