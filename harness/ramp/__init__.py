"""The batch-size ramp ``batchbench cbs`` measured, for training in your own loop.

``load("ramp.json")`` reads the file ``batchbench cbs --ramp-out`` writes (or the whole
``batchbench cbs --json`` output) into a ``Ramp``, which gives:

- ``ramp.sampler(len(dataset))``: a batch sampler (``DataLoader(dataset, batch_sampler=...)``)
  whose batches grow at the ramp's sample counts, in the order ``cbs`` trained the ramp: each
  stage reads the run's index stream (seeded permutations of the training set, one an epoch:
  ``harness.run.batches``) from the samples where the stage starts, for the steps ``cbs`` gave
  it. With the run's seed, the same training set in the same order and the same initial weights
  (``torch.manual_seed(ramp.init_seed)`` before building the model), a loop sees the batches the
  verification's ramp run saw.
- ``ramp.lr_lambda()``: the learning rate at a step as a multiple of the base rate ``lr0``, for
  ``torch.optim.lr_scheduler.LambdaLR``: each stage's rate over the base run's (the optimizer's
  rule: SGD x k, Adam and AdamW x sqrt k, halved where the rule's rate diverged).
- ``ramp.lightning_callback()``: both, applied to a LightningModule's training
  (``harness.ramp.lightning``; Lightning is imported only there).

Each takes ``steps=`` or ``samples=`` for another budget than the base run's samples: stages
that start after it are dropped, the last one runs to it.
"""

from harness.ramp.sampler import RampSampler, Segment
from harness.ramp.schedule import FORMAT, Ramp, Stage, from_dict, load, of_run

__all__ = ["FORMAT", "Ramp", "RampSampler", "Segment", "Stage", "from_dict", "load", "of_run"]
