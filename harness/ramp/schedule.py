"""The ramp itself: its stages as a loop trains them (``Ramp.schedule``), the batch sampler, the
learning-rate multiplier, and reading and writing the ramp file (``harness.ramp`` says how a
loop uses them)."""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.analysis.cbs import Measured, Stage
from harness.config.points import PointSpec
from harness.errors import SpecError
from harness.ramp.sampler import RampSampler, Segment

FORMAT = "batchbench-ramp/1"
SAMPLING = ("shuffle", "replacement")


@dataclass(frozen=True)
class Ramp:
    """A batch-size ramp measured by ``batchbench cbs``: its stages and what a loop needs to
    train it as ``cbs`` did."""

    stages: tuple[Stage, ...]
    """From ``start_samples`` on, ``batch_size`` at ``lr`` (the base run's rate x the rule's factor)."""
    b0: int
    lr0: float
    """The base run's learning rate: ``lr_lambda`` gives each stage's rate as a multiple of it."""
    samples: int
    """The budget ``cbs`` verified the ramp for: the base run's samples."""
    seed: int = 0
    """The run's ``--seed``: the data order."""
    init_seed: int = 0
    """Seeds the initial weights: ``torch.manual_seed(init_seed)``, then build the model."""
    sampling: str = "shuffle"
    train_size: int | None = None
    """The training set ``cbs`` ran on (the same rows in the same order give the same batches)."""
    steps_measured: int | None = None
    """The ramp's steps in the verification."""
    loss: float | None = None
    """The check-set loss the verification's ramp run ended at."""
    optimizer: str | None = None

    @property
    def steps(self) -> int:
        """The ramp's steps at its own budget."""
        last = self.schedule()[-1]
        return last.first_step + last.steps

    def schedule(self, *, steps: int | None = None, samples: int | None = None) -> tuple[Segment, ...]:
        """The stages as a loop trains them, for ``samples`` (default the ramp's budget), then
        cut or the last one lengthened to ``steps`` in all, where given. Each stage's steps are
        those ``cbs`` gave it: its samples over its batch size, rounded (at least one)."""
        budget = _positive("samples", self.samples if samples is None else samples)
        kept = [s for i, s in enumerate(self.stages) if i == 0 or s.start_samples < budget]
        out, first = [], 0
        for i, stage in enumerate(kept):
            end = kept[i + 1].start_samples if i + 1 < len(kept) else budget
            count = max(1, round((end - stage.start_samples) / stage.batch_size))
            out.append(Segment(stage.start_samples, stage.batch_size, count, first, stage.lr / self.lr0))
            first += count
        return _to_steps(tuple(out), steps)

    def sampler(self, dataset_size: int, *, steps: int | None = None, samples: int | None = None, seed: int | None = None) -> RampSampler:
        """Index batches over a dataset of ``dataset_size`` rows, growing as the ramp does
        (``seed``: the data order, the run's by default)."""
        return RampSampler(self.schedule(steps=steps, samples=samples), _positive("dataset_size", dataset_size),
                           self.seed if seed is None else seed, self.sampling)

    def lr_lambda(self, *, steps: int | None = None, samples: int | None = None) -> Callable[[int], float]:
        """``step -> factor``: the rate at a step (counted from 0) over the base rate, for
        ``LambdaLR(optimizer, ramp.lr_lambda())`` on an optimizer made with ``lr=ramp.lr0``;
        past the last step, the last stage's."""
        segments = self.schedule(steps=steps, samples=samples)
        firsts = [s.first_step for s in segments]

        def factor(step: int) -> float:
            return segments[max(0, bisect.bisect_right(firsts, step) - 1)].lr_factor

        return factor

    def lightning_callback(self, *, steps: int | None = None, samples: int | None = None, seed: int | None = None):
        """A Lightning ``Callback`` that trains a LightningModule on the ramp (``harness.ramp.lightning``)."""
        from harness.ramp.lightning import callback

        return callback(self, steps=steps, samples=samples, seed=seed)

    def settings(self) -> dict[str, Any]:
        """What of the run a loop follows besides the stages: the data order (``seed``,
        ``sampling``, the training set's size), the initial weights' seed and the optimizer."""
        return {"seed": self.seed, "init_seed": self.init_seed, "sampling": self.sampling, "train_size": self.train_size, "optimizer": self.optimizer}

    def as_dict(self) -> dict[str, Any]:
        """The ramp file ``batchbench cbs --ramp-out`` writes (``load`` reads it back)."""
        return {"format": FORMAT, "b0": self.b0, "lr0": self.lr0, "base_samples": self.samples,
                "ramp": [{"start_samples": s.start_samples, "batch_size": s.batch_size, "lr": s.lr} for s in self.stages],
                "steps": self.steps_measured, "loss": self.loss, **self.settings()}


def _to_steps(segments: tuple[Segment, ...], steps: int | None) -> tuple[Segment, ...]:
    """The segments cut at ``steps`` in all, or the last one lengthened to reach it."""
    if steps is None:
        return segments
    steps = _positive("steps", steps)
    out = []
    for segment in segments:
        if segment.first_step >= steps:
            break
        out.append(Segment(segment.start_samples, segment.batch_size, min(segment.steps, steps - segment.first_step), segment.first_step,
                           segment.lr_factor))
    last = out[-1]
    return (*out[:-1], Segment(last.start_samples, last.batch_size, steps - last.first_step, last.first_step, last.lr_factor))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(name, f"must be a whole number >= 1, not {value!r}")
    return value


# ---------------------------------------------------------------- from a cbs run, and from its files


def of_run(measured: Measured, point: PointSpec, optimizer: str | None = None) -> Ramp:
    """The ramp a cbs run measured (``measured``), with its base point's data order and seeds."""
    ramp_run = next((v for v in measured.verification if v.name == "ramp"), None)
    return Ramp(stages=measured.stages, b0=measured.b0, lr0=measured.lr0, samples=measured.base_samples, seed=point.seed,
                init_seed=point.init_seed, sampling=point.sampling, train_size=point.train_size,
                steps_measured=None if ramp_run is None else ramp_run.steps, loss=None if ramp_run is None else ramp_run.final_loss,
                optimizer=optimizer)


def load(path: str | Path) -> Ramp:
    """The ramp in a ``batchbench cbs --ramp-out`` file or a ``batchbench cbs --json`` output;
    a malformed file is a ``SpecError`` naming the file and the field."""
    source = str(path)
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SpecError(source, f"cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SpecError(source, f"not JSON ({exc}); give the file `batchbench cbs --ramp-out` or `--json` wrote") from None
    return from_dict(raw, source)


def from_dict(raw: Any, source: str = "ramp") -> Ramp:
    """A ``Ramp`` from the ramp file's dict (or ``cbs --json``'s)."""
    if not isinstance(raw, dict):
        raise SpecError(source, "not a ramp: give the file `batchbench cbs --ramp-out` or `--json` wrote")
    if raw.get("format", FORMAT) != FORMAT:
        raise SpecError(f"{source}: format", f"{raw['format']!r} is not a format this version reads ({FORMAT})")
    read = _Reader(raw, source)
    b0, lr0 = read.count("b0"), read.rate("lr0")
    stages = _stages(read, raw.get("ramp"))
    if stages[0].batch_size != b0 or stages[0].start_samples != 0:
        raise SpecError(f"{source}: ramp[0]", f"the first stage starts at sample 0 at b0 ({b0}), not at {stages[0].start_samples} "
                                              f"with batch size {stages[0].batch_size}")
    verified = next((v for v in raw.get("verification") or () if isinstance(v, dict) and v.get("name") == "ramp"), {})
    sampling = raw.get("sampling", "shuffle")
    if sampling not in SAMPLING:
        raise SpecError(f"{source}: sampling", f"must be one of {', '.join(SAMPLING)}, not {sampling!r}")
    return Ramp(stages=stages, b0=b0, lr0=lr0, samples=read.count("base_samples"), seed=read.count("seed", 0, low=0),
                init_seed=read.count("init_seed", 0, low=0), sampling=sampling, train_size=read.count("train_size", None),
                steps_measured=read.count("steps", verified.get("steps")), loss=read.loss("loss", verified.get("final_loss")),
                optimizer=raw.get("optimizer") if isinstance(raw.get("optimizer"), str) else None)


def _stages(read: "_Reader", stages: Any) -> tuple[Stage, ...]:
    if not isinstance(stages, list) or not stages:
        raise SpecError(f"{read.source}: ramp", "must be a list of stages ({start_samples, batch_size, lr}), at least one")
    out: list[Stage] = []
    for i, stage in enumerate(stages):
        at = read.inner(stage, f"ramp[{i}]")
        start = at.count("start_samples", low=0)
        if out and start <= out[-1].start_samples:
            raise SpecError(f"{read.source}: ramp[{i}].start_samples", f"must grow from stage to stage ({start} after {out[-1].start_samples})")
        out.append(Stage(start, at.count("batch_size"), at.rate("lr")))
    return tuple(out)


_REQUIRED = object()


@dataclass(frozen=True)
class _Reader:
    """Typed fields of one JSON object, each error naming the file and the field."""

    raw: dict
    source: str
    prefix: str = ""

    def inner(self, value: Any, name: str) -> "_Reader":
        if not isinstance(value, dict):
            raise SpecError(f"{self.source}: {name}", f"must be an object, not {value!r}")
        return _Reader(value, self.source, f"{name}.")

    def _get(self, name: str, default: Any) -> Any:
        if name not in self.raw or self.raw[name] is None:
            if default is _REQUIRED:
                raise SpecError(f"{self.source}: {self.prefix}{name}", "missing (the file `batchbench cbs --ramp-out` or `--json` writes has it)")
            return default
        return self.raw[name]

    def count(self, name: str, default: Any = _REQUIRED, low: int = 1) -> Any:
        value = self._get(name, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise SpecError(f"{self.source}: {self.prefix}{name}", f"must be a whole number >= {low}, not {value!r}")
        return value

    def rate(self, name: str) -> float:
        value = self._get(name, _REQUIRED)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise SpecError(f"{self.source}: {self.prefix}{name}", f"must be a number > 0, not {value!r}")
        return float(value)

    def loss(self, name: str, default: Any) -> float | None:
        value = self._get(name, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SpecError(f"{self.source}: {self.prefix}{name}", f"must be a number, not {value!r}")
        return None if value is None else float(value)
