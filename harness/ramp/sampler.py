"""The ramp's batches: its stages as a loop trains them (``Segment``) and the batch sampler that
reads each stage's batches in the run's data order (``RampSampler``)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class Segment:
    """One stage of the ramp as a loop trains it: ``steps`` batches of ``batch_size`` read
    from ``start_samples`` in the data order, from step ``first_step`` on, at ``lr_factor`` x
    the base rate."""

    start_samples: int
    batch_size: int
    steps: int
    first_step: int
    lr_factor: float


class RampSampler:
    """A batch sampler (``DataLoader(dataset, batch_sampler=...)``): lists of indices, each
    stage's batches read from the samples where it starts in the seeded data order, as
    ``batchbench cbs`` read them. One pass is the whole ramp; every pass is the same."""

    def __init__(self, segments: tuple[Segment, ...], dataset_size: int, seed: int, sampling: str = "shuffle"):
        self.segments, self.dataset_size, self.seed, self.sampling = segments, dataset_size, seed, sampling

    def __len__(self) -> int:
        return sum(s.steps for s in self.segments)

    def __iter__(self) -> Iterator[list[int]]:
        from harness.run.batches import batch_indices

        for segment in self.segments:
            stream = batch_indices(self.dataset_size, segment.batch_size, self.seed, self.sampling, start=segment.start_samples)
            for _ in range(segment.steps):
                yield next(stream).tolist()

    def batch_size(self, step: int) -> int:
        """The batch at ``step`` (counted from 0)."""
        firsts = [s.first_step for s in self.segments]
        return self.segments[max(0, bisect.bisect_right(firsts, step) - 1)].batch_size
