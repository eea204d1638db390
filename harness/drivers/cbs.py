"""``batchbench cbs``: the critical batch size as training proceeds, and the ramp it implies.

1. **Base run** at B0 from the initial weights, with ``checkpoints`` loss checks spaced
   geometrically in samples seen; at each a snapshot (model, optimizer state, RNG, and the
   position in the data order) is kept in memory (``run.snapshot``).
2. **Branches**: from each snapshot, copies continue at k x B0 (k = 1, 2, 4, ... up to the
   training set) for the same ``branch_samples`` each, at the rate the optimizer's rule gives
   (SGD: lr x k; Adam/AdamW: lr x sqrt(k)) and at ``rates`` - 1 halvings of it, the best kept
   (where the rule pushes past stability the rate diverges and a halved one stands in: the rule
   "capped where it diverges"). Each branch reads the samples the base run would have read
   next, so k = 1 is the base run itself, step for step.
3. **CBS(t)**: per checkpoint, ``analysis.cbs.critical_batch`` on the branches' smoothed losses.
4. **The ramp** (``analysis.cbs.ramp``) and its **verification**: from the initial weights, the
   ramp (a chain of points, each starting from the last one's end) and a constant run at the
   ramp's final batch, for the base run's sample budget, against the base run (constant B0).

Every run is a stored point (``role``, ``start_sample``, ``branch_factor``); what the command
prints is ``analysis.cbs.measured`` of them, as ``report`` and ``analyze`` read them.

``--resume`` continues the latest cbs of the same flags and settings in the store: the protocol
runs again from the start, and every point it asks for that the store holds (by its point id,
which covers its role, batch, rate, length and the sample it starts from) is read back, not
trained. A snapshot lives in memory only: where a point still to run continues one whose point
is stored (a branch the base run, a ramp stage the last), that point is trained again, not
stored, up to the check it needs (deterministic at a fixed seed on the CPU, which the replay
checks against the stored losses and names where they differ).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Callable

from harness import env
from harness.analysis.cbs import DEFAULT_TOLERANCE, Measured, Stage, measured, ramp
from harness.config.points import PointSpec
from harness.config.policies import ADAPTIVE
from harness.config.values import CheckEvery
from harness.drivers.plan import Plan
from harness.errors import RunError
from harness.config.execution import Executor
from harness.drivers.executors import Call, Local, OnRay, executor_for
from harness.drivers.sweep import _cut_off
from harness.run.snapshot import Snapshot
from harness.run.measurement import PointResult
from harness.store.schema import Status
from harness.store.sqlite import Kept, Store

HASH_PREFIX = "cbs:"
NOISE_SAMPLES = 512
"""The base run estimates the gradient noise scale B_simple at its checks from this many
per-example gradients (unless --noise-samples says otherwise), to set beside the measured curve."""
BRANCH_CHECKS = 8
"""Loss checks a branch or ramp stage makes (evenly spaced); a branch's loss is the mean of the last few."""
FLAGS = {"checkpoints": "--checkpoints", "branch_samples": "--branch-samples", "tolerance": "--tolerance", "rates": "--rates",
         "largest": "--largest-batch"}
"""``CbsSettings``'s fields as the flags that set them."""


@dataclass(frozen=True)
class CbsSettings:
    checkpoints: int = 10
    branch_samples: int | None = None
    """Samples each branch trains (None: one pass over the training set)."""
    tolerance: float = DEFAULT_TOLERANCE
    rates: int = 2
    """Learning rates a branch tries: the rule's, and halvings of it."""
    largest: int | None = None
    """The largest branch batch (None: the training set)."""


@dataclass(frozen=True)
class CbsResult:
    run_id: str
    measured: Measured

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, **self.measured.as_dict()}


Done = tuple[PointResult | Kept, list[Snapshot] | None]
"""A call's point as it ended, run (with the snapshots it kept) or read back from the store
(``--resume``: a ``Kept``, and None for its snapshots, which lived in the process that ran it)."""


class _Runner:
    """Runs points through the executor (here, or at once on Ray) and stores each as it ends;
    a point the store holds already (``--resume``) is read back instead."""

    def __init__(self, plan: Plan, store: Store, run_id: str, executor: Local | OnRay, say: Callable[[str], None]):
        self.plan, self.store, self.run_id, self.executor, self.say = plan, store, run_id, executor, say
        self.own_rates = plan.own_recipe is not None
        """A LightningModule: branches move its own rates (``lr_scale``), not ``--lr``."""
        self.kept = store.kept(run_id)

    def run(self, point: PointSpec, start: Snapshot | None = None) -> Done:
        return self.run_all([(point, {"start": start, "keep": True})])[0]

    def run_all(self, calls: list[Call]) -> list[Done]:
        """Every call (independent of each other: on Ray they run at once), in their order."""
        done: dict[int, Done] = {i: (self.kept[point.point_id], None) for i, (point, _) in enumerate(calls) if point.point_id in self.kept}
        todo = [i for i in range(len(calls)) if i not in done]
        try:
            for at, result, snapshots in self.executor.calls([calls[i] for i in todo], self.plan.workload):
                self.store.add_point(self.run_id, result)
                done[todo[at]] = (result, snapshots)
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the points in flight are kept as interrupted
            for interrupted in _cut_off(stop, self.executor):
                self.store.add_point(self.run_id, interrupted)
            raise
        return [done[i] for i in range(len(calls))]

    def replay(self, point: PointSpec, start: Snapshot | None, upto: int | None = None) -> list[Snapshot]:
        """The snapshots of a stored point, trained again from ``start`` and not stored, up to its
        check at ``upto`` samples (None: to its end); a loss that differs from the stored one is
        said in one line (a device that is not deterministic): what follows continues the replay."""
        options: dict = {"start": start, "keep": True}
        if upto is not None:
            options["prune"] = _until(point, upto)
        ((_, result, snapshots),) = list(self.executor.calls([(point, options)], self.plan.workload))
        stored = {c["step"]: c["eval_loss"] for c in self.kept[point.point_id].checks}
        off = [(c["step"], c["eval_loss"], stored[c["step"]]) for c in result.checks if c["step"] in stored and c["eval_loss"] != stored[c["step"]]]
        if off:
            step, now, then = off[0]
            self.say(f"the {point.role} run trained again for its snapshots differs from the stored one at step {step} (check loss {now} "
                     f"against {then}): this device is not deterministic; the points still to run continue the replay")
        return snapshots

    def measured(self, tolerance: float) -> Measured:
        points, checks = self.store.load("points", [self.run_id]), self.store.load("checks", [self.run_id])
        return measured(points, checks, tolerance)


def _until(point: PointSpec, samples: int) -> Callable[[dict, float | None], str | None]:
    """A ``prune`` that stops a replay at its first check at or past ``samples`` samples seen."""
    def stop(check: dict, step_s: float | None) -> str | None:
        return "replayed to its checkpoint" if point.start_sample + check["step"] * point.batch_size >= samples else None

    return stop


def measure(plan: Plan, store: Store, settings: CbsSettings = CbsSettings(), say: Callable[[str], None] = lambda line: None,
            executor: Executor = Executor(), resume: bool = False, note: Callable[[str], None] | None = None) -> CbsResult:
    """The whole protocol for the plan's point (B0, lr0): base, branches, ramp, verification;
    on Ray (``executor``) the branches of every checkpoint at once, and the ramp beside the
    constant run it is verified against. ``resume``: continue the latest cbs of these flags and
    settings in the store, reading back the points it stored; ``note`` (``say`` unless given)
    gets what it found, in one line."""
    spec_hash = HASH_PREFIX + plan.sweep_hash
    with store.sweep_lock(hashlib.sha1(spec_hash.encode()).hexdigest(), resume=resume):  # a second --resume of it is refused
        run_id = begin(plan, store, settings, resume, say if note is None else note)
        with executor_for(executor, say=say) as where:
            return _measure(plan, store, settings, say, _Runner(plan, store, run_id, where, say))


def begin(plan: Plan, store: Store, settings: CbsSettings, resume: bool, note: Callable[[str], None]) -> str:
    """The run this cbs writes: with ``resume``, the latest cbs of these flags in the store (its
    interrupted and lost points dropped, to run again), unless it ran with other settings
    (``--checkpoints``, ``--tolerance``, ...: no point of the plan holds them); else a new one."""
    spec_hash, where = HASH_PREFIX + plan.sweep_hash, store.path
    now = json.loads(json.dumps(dataclasses.asdict(settings)))
    found = store.find_run(spec_hash) if resume else None
    if found is not None:
        run_id, done, finished = found
        before = json.loads(store.load("runs", [run_id])["spec_json"].iloc[0] or "{}").get("cbs") or {}
        differ = [FLAGS.get(key, key) for key in now if before.get(key) != now[key]]
        if differ:
            note(f"the latest cbs of these flags in {where} (run {run_id}) ran with another {', '.join(differ)}; starting a new run")
            found = None
        else:
            note(f"cbs run {run_id} already finished: its answer again from its {len(done)} stored points" if finished else
                 f"resuming cbs run {run_id}: {len(done)} points stored, read back as the protocol asks for them; the others run")
    elif resume:
        note(f"no earlier cbs of these flags in {where}; starting a new run")
    spec_json = json.dumps({**json.loads(plan.spec.to_json()), "cbs": dataclasses.asdict(settings)})
    environment = env.environment(list(plan.devices), plan.spec.threads)
    run_id, _ = store.start_run(spec_json, spec_hash, environment, resume=found is not None)
    return run_id


def _measure(plan: Plan, store: Store, settings: CbsSettings, say: Callable[[str], None], runner: _Runner) -> CbsResult:
    base, run_id = plan.points[0], runner.run_id
    largest = min(settings.largest or base.train_size, base.train_size)
    own = plan.own_recipe  # a LightningModule: its own rates, times the rule's factor (lr_scale)
    exponent = 0.5 if (own.optimizer if own else base.optimizer) in ADAPTIVE else 1.0
    base_point = dataclasses.replace(base, role="base", check_every=CheckEvery("log", settings.checkpoints + 1), stop_at_target=False,
                                     noise_samples=base.noise_samples or min(NOISE_SAMPLES, base.train_size))
    rate = f"{own.optimizer}'s own rates" if own else f"lr {base.lr:g}"
    say(f"base run: B={base.batch_size}, {rate}, {base.steps:,} steps, {settings.checkpoints} checkpoints")
    result, snapshots = runner.run(base_point)
    if result.row["status"] != Status.OK:
        store.finish_run(run_id)
        smaller = "smaller rates in its configure_optimizers" if own else "a smaller --lr"
        raise RunError("--model" if own else "--lr", f"the base run ended {result.row['status']} ({result.row.get('error')}); give {smaller} or another --batch-sizes")
    factors = [2**i for i in range(int(math.log2(max(1, largest // base.batch_size))) + 1)]
    marks = [(c["step"] * base.batch_size, c["eval_loss"]) for c in result.checks if c["step"] > 0][:-1]  # the last is the end of the budget
    delta = settings.branch_samples or base.train_size
    branches = [b for samples, _ in marks for k in factors for b in _branches(runner, base_point, samples, k, delta, exponent, settings.rates)]
    _run_branches(runner, base_point, branches, snapshots)
    for (samples, loss), found in zip(marks, runner.measured(settings.tolerance).curve):
        say(f"  after {samples:,} samples (check loss {loss:.4g}): critical batch {found.text()}")
    stages = ramp(runner.measured(settings.tolerance).curve, base.batch_size, 1.0, exponent, largest)  # each stage's rate as a factor of B0's
    say("ramp: " + " -> ".join(f"B={s.batch_size} from {s.start_samples:,}" for s in stages) + "; verifying it")
    _verify(runner, base_point, stages)
    store.finish_run(run_id)
    return CbsResult(run_id, runner.measured(settings.tolerance))


def _run_branches(runner: _Runner, base: PointSpec, branches: list[PointSpec], snapshots: list[Snapshot] | None) -> None:
    """The branches, each from the base run's snapshot at its start; where the base run was read
    back (``--resume``) and a branch is still to run, the base run is trained again up to the
    last checkpoint such a branch starts from."""
    todo = [b for b in branches if b.point_id not in runner.kept]
    if todo and snapshots is None:
        snapshots = runner.replay(base, None, max(b.start_sample for b in todo))
    at = {snap.samples: snap for snap in snapshots or []}
    missing = sorted({b.start_sample for b in todo} - set(at))
    if missing:
        raise RunError("--checkpoints", f"the base run kept no snapshot at {missing[0]:,} samples, where a branch starts")
    runner.run_all([(b, {"start": at.get(b.start_sample)}) for b in branches])


def _stage(base: PointSpec, role: str, batch: int, factor: float, steps: int, start_sample: int, own_rates: bool = False) -> PointSpec:
    """A point that continues the base run's workload at another batch, length and rate: the
    base's times ``factor`` (``own_rates``, a LightningModule: ``lr_scale`` over its own rates)."""
    rate = {"lr_scale": factor} if own_rates else {"lr": base.lr * factor}
    return dataclasses.replace(base, role=role, batch_size=batch, steps=steps, start_sample=start_sample, noise_samples=0,
                               branch_factor=batch // base.batch_size, burn_in_steps=min(base.burn_in_steps, steps // 2),
                               check_every=CheckEvery("steps", max(1, steps // BRANCH_CHECKS)), **rate)


def _branches(runner: _Runner, base: PointSpec, samples: int, factor: int, delta: int, exponent: float, rates: int) -> list[PointSpec]:
    """The branch at ``factor`` x B0 from the base run's checkpoint at ``samples``, at the rule's
    rate and its halvings."""
    batch = base.batch_size * factor
    steps = max(1, math.ceil(delta / batch))
    return [_stage(base, "branch", batch, factor**exponent / 2**j, steps, samples, runner.own_rates) for j in range(rates)]


def _verify(runner: _Runner, base: PointSpec, stages: tuple[Stage, ...]) -> None:
    """The ramp, a chain of points each continuing the last from its end, and a constant run at
    its final batch, both from the initial weights for the base run's samples. A stage read back
    (``--resume``) is trained again for its end only where a later stage is still to run."""
    budget = base.steps * base.batch_size
    final, beside = stages[-1], []
    if final.batch_size != base.batch_size:  # the constant run at the ramp's final batch, beside the ramp's first stage
        steps = max(1, round(budget / final.batch_size))
        beside = [(dataclasses.replace(_stage(base, "constant", final.batch_size, final.lr, steps, 0, runner.own_rates),
                                       check_every=CheckEvery("steps", max(1, steps // 40))), {})]
    chain = []
    for i, stage in enumerate(stages):
        end = stages[i + 1].start_samples if i + 1 < len(stages) else budget
        steps = max(1, round((end - stage.start_samples) / stage.batch_size))
        chain.append(_stage(base, "ramp", stage.batch_size, stage.lr, steps, stage.start_samples, runner.own_rates))
    start = None
    for i, point in enumerate(chain):
        (result, snapshots), *_ = runner.run_all([(point, {"start": start, "keep": True}), *(beside if i == 0 else [])])
        if result.row["status"] != Status.OK:
            return
        if snapshots is None:  # read back: its end is needed only by a later stage still to run
            if all(later.point_id in runner.kept for later in chain[i + 1:]):
                continue
            snapshots = runner.replay(point, start)
        if not snapshots:
            return
        start = snapshots[-1]
