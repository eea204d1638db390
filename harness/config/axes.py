"""Every axis and option of a sweep, declared once.

An ``Axis`` says everything batchbench needs of one spec field: how its text parses (into a
typed value), its default and its help, whether it sweeps (one point per value), which field of
a point it becomes and how, which ``points`` column records it, whether it counts for the
point's id, whether ``compare`` matches on it and ``analyze`` keeps its values apart, how a
reader names its values, which commands take it, whether the model's constructor takes it, and
since when it exists. From ``AXES`` come the flags of ``run``, ``tune``, ``cbs`` and ``fit``
(``harness.commands``), the TOML keys, the checks of the typed ``SweepSpec`` (``spec``) and
``PointSpec`` (``points``) and the expansion, the ``points`` columns (``store.schema``), compare's
match keys and the analysis's group keys (``keys``).

Adding an axis is its ``Axis(...)`` here with its typed field in ``SweepSpec`` (and ``PointSpec``),
and the code that uses it (``docs/architecture.md``, "Adding an axis").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from harness.config import policies as pol
from harness.config import values as v

GROUPS = ("axes", "workload", "learning rate across batch sizes", "convergence target (one of)", "budget (one of)", "loss checks",
          "timing", "output")
"""The help groups of the sweep flags, in the order ``--help`` lists them."""

_UNSET = object()

COMMANDS = ("run", "tune", "cbs", "fit")
"""The commands that take axes as flags (``run`` takes every one)."""
ALL = COMMANDS
"""The workload a model is built from: every command that builds one takes it."""
SWEEPS = ("run", "tune", "cbs")
"""The commands that train points (the default)."""
RUN_TUNE = ("run", "tune")
"""What ``cbs`` sets itself per point (its branches' targets, schedules and checks)."""
RUN_ONLY = ("run",)
"""What only a sweep has (repeats, ranks, shards) or ``tune`` decides itself (the lr policy)."""


@dataclass(frozen=True)
class Axis:
    """One spec field and all that follows from it (see the module's docstring)."""

    name: str
    """The ``SweepSpec`` field; the flag is ``--name-with-dashes``, the TOML key either spelling."""
    parse: Callable[[Any], Any]
    """Text (flag, TOML or Python value) -> typed value, or ``SpecError`` naming the flag."""
    default: Any
    group: str
    help: str
    shown_default: str | None = None
    """How ``--help`` states the default where the value itself does not say it."""
    sweep: bool = False
    """A comma list whose values each give their own points (the expansion's product, in the
    order the sweep axes are declared, repeats innermost)."""
    point: str | None | object = _UNSET
    """The ``PointSpec`` field it becomes (default: ``name``; None: it reaches no point)."""
    at_point: Callable[[Any, dict], Any] | None = None
    """The point's value from the spec's (and the point's other fields, for options resolved
    per point); a sweep axis: the values of its level, given the point so far."""
    column: str | None | object = _UNSET
    """The ``points`` column that records it (default: the point field; None: not recorded)."""
    record: Callable[[Any], Any] | None = None
    """The recorded value from the point (default: the point field as text); None where it
    does not apply to this point."""
    sql: str | None = None
    """The column's SQLite type (default: from the default value's type)."""
    match: bool = True
    """``batchbench compare`` matches points on it."""
    group_key: bool = True
    """Analysis, reports and tables never pool points that differ in it: every axis unless it
    says otherwise (the batch size, which analysis compares; options that are one value a sweep,
    or that do not change what training converges to)."""
    title: str | None = None
    """Its column title in tables, where tables show it when it varies (None: not shown)."""
    phrase: str = "{}"
    """How a label says a value: ``{} loader``, ``data on {}``."""
    since: str = "0.1"
    """The batchbench version that added it: an axis added after 0.4.2 is left out of point ids
    at its default (``compat.id_fields``), so ids of stores written before stay what they were."""
    flag_kind: str = "value"
    """``value`` (takes one argument) or ``switch`` (a bare flag that sets true)."""
    commands: tuple[str, ...] = SWEEPS
    """The commands whose flags (and spec-file keys) include it; ``run`` takes every axis."""
    to_model: bool = False
    """Its point value is a keyword of the model's constructor: the built-ins' (``workload.models``),
    and a plug-in factory's that names it (``workload.workload.Workload`` hands it over)."""

    @property
    def flag(self) -> str:
        return v.flag(self.name)

    @property
    def point_field(self) -> str | None:
        return self.name if self.point is _UNSET else self.point  # type: ignore[return-value]

    @property
    def column_name(self) -> str | None:
        return self.point_field if self.column is _UNSET else self.column  # type: ignore[return-value]

    @property
    def column_type(self) -> str:
        if self.sql is not None:
            return self.sql
        sample = self.default[0] if isinstance(self.default, tuple) and self.default else self.default
        return "INTEGER" if isinstance(sample, (bool, int)) else "REAL" if isinstance(sample, float) else "TEXT"

    def help_text(self) -> str:
        shown = self.shown_default if self.shown_default is not None else _shown(self.default)
        return self.help + (f" [{shown}]" if shown else "")

    def recorded(self, point) -> Any:
        if self.record is not None:
            return self.record(point)
        assert self.point_field is not None, f"{self.name} reaches no point: give it a record"
        return v.text_of(getattr(point, self.point_field))


def _shown(default: Any) -> str:
    if default is None or default == ():
        return ""
    text = v.text_of(default)
    return ",".join(map(str, text)) if isinstance(text, tuple) else str(text)


def only(condition: Callable[[Any], bool], field: str) -> Callable[[Any], Any]:
    """A ``record`` that records ``field`` where ``condition(point)`` holds, else null."""
    return lambda point: v.text_of(getattr(point, field)) if condition(point) else None


AXES: tuple[Axis, ...] = (
    # -- the sweep's product, outermost first ----------------------------------------------
    Axis("dataset_sizes", v.integers("dataset_sizes", 1, v.MAX_DATASET_SIZE), (), "axes", "comma list of dataset sizes",
         shown_default="the data set's size and half of it", sweep=True, point="dataset_size", at_point=pol.dataset_sizes, title="size", phrase="{} samples"),
    Axis("batch_sizes", v.parse_batch_sizes, (v.BatchRange(1, None),), "axes",
         "comma list of sizes, power-of-two ranges (1..1024, 1..full) and 'full'", sweep=True, point="batch_size",
         at_point=pol.batch_sizes, title="batch", group_key=False),
    Axis("sampling", v.choices("sampling", pol.SAMPLING), ("shuffle",), "workload",
         "comma list of shuffle (without replacement, per epoch) and replacement (i.i.d.)", sweep=True,
         title="sampling", phrase="{} sampling"),
    Axis("world_sizes", v.integers("world_sizes", 1), (1,), "axes", "comma list of data-parallel ranks (torch.distributed, a process each)",
         sweep=True, point="world_size", at_point=pol.world_sizes, title="ranks", phrase="{} rank(s)", commands=RUN_ONLY),
    Axis("lr", lambda value: v.parse_float("lr", value, 0.0, v.FLOAT32_MAX), 0.1, "workload", "learning rate", sweep=True, at_point=pol.learning_rates, group_key=False),
    Axis("devices", v.parse_devices, ("auto",), "axes", "cpu, cuda, cuda:N, mps or auto (all available)", sweep=True, point="device",
         at_point=pol.devices, title="device"),
    Axis("data_placement", v.choices("data_placement", pol.PLACEMENTS), ("auto",), "workload",
         "comma list of pageable (host memory, copied each step), pinned (pinned host memory, asynchronous copies), device (the "
         "training set on the accelerator) and auto (device if it takes under 25% of device memory, else pinned); CPU points are host",
         sweep=True, at_point=pol.placements, title="data on", phrase="data on {}", since="0.3", commands=RUN_TUNE),
    Axis("precision", v.choices("precision", pol.PRECISIONS), ("fp32",), "workload",
         "comma list of fp32, tf32 (CUDA), bf16 and fp16 (autocast; fp16 with a gradient scaler)", sweep=True, title="precision", since="0.3"),
    Axis("compile", v.choices("compile", ("off", "on")), ("off",), "workload",
         "comma list of off and on (torch.compile; the compile time recorded apart as compile_s)", sweep=True, title="compile", phrase="compile {}", since="0.3", commands=RUN_TUNE),
    Axis("repeats", lambda value: v.parse_int("repeats", value, 1, 10_000), 1, "axes", "repeats with seeds seed, seed+1, ...", sweep=True,
         point="repeat", at_point=pol.repeats, title="rep", group_key=False, commands=RUN_ONLY),
    # -- the workload ----------------------------------------------------------------------
    Axis("dataset", v.stripped, "digits", "workload",
         "digits, blobs, linreg, mnist-like, cifar-like (3x32x32 images), text (byte sequences), a .npz/.csv/.parquet file, "
         "or module:callable / file.py:callable returning a torch Dataset (or a (train, check) pair)", commands=ALL),
    Axis("target_column", v.stripped, None, "workload", "target column of a .csv/.parquet file", shown_default="y", column=None, group_key=False, commands=ALL),
    Axis("model", v.stripped, "mlp", "workload",
         "linear, mlp, cnn, resnet (for images), gpt (for token ids), module:callable or path/to/file.py:callable", match=False, title="model", commands=ALL),
    Axis("hidden", v.integers("hidden", 1, 2**20, distinct=False), (32,), "workload", "mlp hidden widths, e.g. 32 or 256,256",
         record=lambda p: ",".join(map(str, p.hidden)) if p.model == "mlp" else None, group_key=False, commands=ALL, to_model=True),
    Axis("optimizer", v.choice("optimizer", pol.OPTIMIZERS), "sgd", "workload", "sgd, adam or adamw", commands=ALL),
    Axis("momentum", lambda value: v.parse_float("momentum", value, 0.0, 1.0, low_open=False), 0.0, "workload", "SGD momentum",
         shown_default="0", record=only(lambda p: p.optimizer == "sgd", "momentum"), group_key=False, commands=ALL),
    Axis("weight_decay", lambda value: v.parse_float("weight_decay", value, 0.0, v.FLOAT32_MAX, low_open=False), None, "workload",
         "weight decay (decoupled for adamw, an L2 term for sgd and adam)", shown_default="0.01 for adamw, as torch's; 0 for sgd and adam",
         at_point=pol.weight_decay, sql="REAL", since="0.5", group_key=False),
    Axis("betas", v.parse_betas, None, "workload", "Adam/AdamW moment decay rates b1,b2", shown_default="0.9,0.999",
         record=lambda p: ",".join(f"{b:g}" for b in (p.betas or (0.9, 0.999))) if p.optimizer in pol.ADAPTIVE else None,
         sql="TEXT", since="0.5", group_key=False),
    Axis("eps", lambda value: v.parse_float("eps", value, 0.0), None, "workload", "Adam/AdamW epsilon", shown_default="1e-08",
         record=lambda p: (p.eps or 1e-8) if p.optimizer in pol.ADAPTIVE else None, sql="REAL", since="0.5", group_key=False),
    Axis("grad_clip", lambda value: v.parse_float("grad_clip", value, 0.0, v.FLOAT32_MAX), None, "workload",
         "clip the gradients' global norm to this before each update (counted in update)", shown_default="off", sql="REAL", since="0.5", group_key=False),
    Axis("micro_batch_size", v.parse_micro_batch, None, "workload",
         "gradient accumulation: each batch runs as micro-batches of M, one update after them; auto: the largest that fits the "
         "device (fit's probes; the whole batch on the CPU)", shown_default="off", at_point=pol.micro_batch_size, sql="INTEGER",
         since="0.5", group_key=False, commands=RUN_TUNE),
    Axis("loader", v.choice("loader", pol.LOADERS), "tensor", "workload",
         "tensor (indexing) or dataloader (per-sample collation, pinned memory with --data-placement pinned); a Dataset "
         "pipeline (--dataset module:callable) always reads through a DataLoader",
         title="loader", phrase="{} loader"),
    Axis("workers", v.integers("workers", 0, 64), (0,), "workload",
         "comma list of DataLoader worker processes with --loader dataloader or a Dataset pipeline", sweep=True,
         record=only(lambda p: p.loader == "dataloader", "workers"), title="workers", phrase="workers {}", since="0.3"),
    Axis("prefetch_factor", v.integers("prefetch_factor", 1, 1024), (2,), "workload",
         "comma list of batches each DataLoader worker prepares ahead (points with --workers 0 take the first)", sweep=True,
         at_point=pol.prefetch_factors, record=only(lambda p: p.loader == "dataloader" and p.workers > 0, "prefetch_factor"),
         title="prefetch", phrase="prefetch {}", since="0.5"),
    Axis("seed", lambda value: v.parse_int("seed", value, 0, 2**62), 0, "workload", "seed of the data order and of the initial weights",
         at_point=lambda spec, at: spec.seed + at["repeat"], group_key=False),
    Axis("data_seed", lambda value: v.parse_int("data_seed", value, 0, 2**32 - 1), 0, "workload",
         "seed of data generation, subsampling and the holdout split", column=None, match=False, group_key=False),
    # -- learning rate across batch sizes ----------------------------------------------------
    Axis("lr_policy", v.choice("lr_policy", pol.LR_POLICIES), "constant", "learning rate across batch sizes",
         "constant, linear or sqrt (scale --lr from --base-batch-size), or tuned (every --lr-grid value)",
         title="lr policy", phrase="lr {}", commands=RUN_ONLY),
    Axis("base_batch_size", lambda value: v.parse_int("base_batch_size", value, 1), 32, "learning rate across batch sizes",
         "batch size at which --lr applies under linear/sqrt (tune: the batch a LightningModule's own rates are for)",
         record=only(lambda p: p.lr_policy in ("linear", "sqrt"), "base_batch_size"), group_key=False, commands=RUN_TUNE),
    Axis("lr_grid", v.floats("lr_grid", 0.0, v.FLOAT32_MAX), pol.DEFAULT_LR_GRID, "learning rate across batch sizes",
         "comma list of learning rates to try (tune searches them; run tries each at every batch size when the lr policy is tuned)",
         shown_default="0.001,0.003,...,1", point=None, group_key=False, commands=RUN_TUNE),
    Axis("warmup_steps", lambda value: v.parse_int("warmup_steps", value, 0), 0, "learning rate across batch sizes",
         "linear learning-rate warm-up over the first N steps", point="lr_warmup_steps", group_key=False, commands=RUN_TUNE),
    Axis("lr_schedule", v.choice("lr_schedule", pol.LR_SCHEDULES), "constant", "learning rate across batch sizes",
         "after the warm-up: constant, or cosine or linear decay to --lr-floor x lr at the point's last step (--steps)", title="schedule", phrase="{} schedule", since="0.5", commands=RUN_TUNE),
    Axis("lr_floor", lambda value: v.parse_float("lr_floor", value, 0.0, 1.0 + 1e-12, low_open=False), 0.0,
         "learning rate across batch sizes", "where a decaying schedule ends, as a share of the peak rate", shown_default="0",
         record=only(lambda p: p.lr_schedule != "constant", "lr_floor"), since="0.5", group_key=False, commands=RUN_TUNE),
    # -- the convergence target -------------------------------------------------------------
    Axis("target_loss", lambda value: v.parse_float("target_loss", value, 0.0, low_open=False), None, "convergence target (one of)",
         "check-set loss to reach", match=False, group_key=False, commands=RUN_TUNE),
    Axis("target_accuracy", lambda value: v.parse_float("target_accuracy", value, 0.0, 1.0 + 1e-12), None, "convergence target (one of)",
         "check-set accuracy to reach (classification)", match=False, group_key=False, commands=RUN_TUNE),
    Axis("target", v.parse_target, v.RelativeTarget(pol.DEFAULT_TARGET_FRACTION), "convergence target (one of)",
         "rel:F = L_ref + F (L_0 - L_ref), L_ref the best check loss of the sweep at that dataset size, or none",
         shown_default="rel:0.1 unless --target-loss/--target-accuracy", point="target_rel",
         at_point=lambda spec, at: None if spec.target is None else spec.target.fraction, match=False, group_key=False, commands=RUN_TUNE),
    Axis("stop_at_target", v.boolean("stop_at_target"), False, "convergence target (one of)",
         "end a point at the check that reaches --target-loss/--target-accuracy", shown_default="", column=None, flag_kind="switch", group_key=False, commands=RUN_ONLY),
    Axis("noise_samples", lambda value: v.parse_int("noise_samples", value, 0, 2**31), 0, "convergence target (one of)",
         "estimate the gradient noise scale at each check from this many per-example gradients (0: off)", at_point=pol.noise_samples,
         shown_default="0", record=lambda p: p.noise_samples or None, group_key=False),
    # -- the budget ---------------------------------------------------------------------------
    Axis("steps", lambda value: v.parse_int("steps", value, 1, v.MAX_STEPS), None, "budget (one of)", "training steps per point",
         shown_default=str(pol.DEFAULT_STEPS), at_point=pol.steps, column=None, match=False, group_key=False),
    Axis("epochs", lambda value: v.parse_float("epochs", value, 0.0, 1e9), None, "budget (one of)",
         "epochs per point (steps = ceil(epochs x train size / batch size))", point=None, group_key=False),
    # -- loss checks --------------------------------------------------------------------------
    Axis("check_every", v.parse_check_every, v.CheckEvery("auto"), "loss checks",
         "N (steps), Ts (seconds, e.g. 30s), epoch, log[:N] (N geometrically spaced checks), or auto (log:40 with a target, else 20 evenly)",
         at_point=pol.check_every, group_key=False, commands=RUN_TUNE),
    Axis("check_set", v.choice("check_set", pol.CHECK_SETS), "holdout", "loss checks", "holdout or train", group_key=False),
    Axis("holdout_fraction", lambda value: v.parse_float("holdout_fraction", value, 0.0, 1.0), 0.2, "loss checks",
         "share of the data held out as the check set", column=None, match=False, group_key=False),
    # -- timing -------------------------------------------------------------------------------
    Axis("threads", lambda value: v.parse_int("threads", value, 1, 4096), pol.DEFAULT_THREADS, "timing",
         "torch threads, pinned and recorded per point", group_key=False, commands=ALL),
    Axis("timing", v.choice("timing", pol.TIMINGS), "auto", "timing", "CUDA timing: events (one sync per window) or sync (per phase)",
         shown_default="auto: events", point="timing_mode", at_point=lambda spec, at: pol.timing_mode(at["device"], spec.timing), group_key=False),
    Axis("sample_interval", v.parse_interval, None, "timing",
         "monitor interval for CPU/GPU utilisation and memory: seconds, 100ms, or 0 (off)", shown_default="0.1 s on CPU, 0.02 s on GPU",
         point="sample_interval_s", at_point=pol.sample_interval_s, record=lambda p: p.sample_interval_s or None,
         match=False, group_key=False),
    Axis("burn_in_steps", lambda value: v.parse_int("burn_in_steps", value, 0), pol.DEFAULT_BURN_IN_STEPS, "timing",
         "warm-up steps left out of statistics (at most half the steps)", at_point=lambda spec, at: min(spec.burn_in_steps, at["steps"] // 2), match=False, group_key=False),
    Axis("point_timeout", lambda value: v.parse_float("point_timeout", value, 1.0, 1e7, low_open=False), None, "timing",
         "end a point that runs longer than this many seconds as an error (a hung plug-in) and go on", shown_default="off",
         point=None, since="0.5", group_key=False, commands=RUN_TUNE),
    Axis("peak_tflops", lambda value: v.parse_float("peak_tflops", value, 0.0), None, "timing",
         "the device's dense peak TFLOPS at the point's precision, for MFU", shown_default="a table of common GPUs; none on the CPU",
         column=None, match=False, since="0.3", group_key=False, commands=RUN_TUNE),
    # -- the rest -----------------------------------------------------------------------------
    Axis("scaling", v.choice("scaling", pol.SCALINGS), "strong", "axes",
         "strong (the global batch is split over the ranks) or weak (each rank takes the batch)", group_key=False, commands=RUN_ONLY),
    Axis("shard", v.parse_shard, None, "output",
         "I/N: run only points I, I+N, ... of the sweep (0 <= I < N); join the stores with `batchbench merge`", point=None, group_key=False, commands=RUN_ONLY),
)
"""Every axis and option, sweep axes first in the order of the expansion's product."""

BY_NAME = {axis.name: axis for axis in AXES}
FIELDS = tuple(axis.name for axis in AXES)


def taken_by(command: str, axes: Sequence[Axis] = AXES) -> list[str]:
    """The axes a command takes as flags, in declaration order."""
    return [a.name for a in axes if command in a.commands]


def sweep_axes(axes: Sequence[Axis] = AXES) -> tuple[Axis, ...]:
    """The sweep axes in the order they multiply points: as declared, ``repeats`` innermost."""
    swept = [a for a in axes if a.sweep]
    return tuple(sorted(swept, key=lambda a: a.name == "repeats"))


def with_axis(axis: Axis, axes: Sequence[Axis] = AXES) -> tuple[Axis, ...]:
    """``axes`` and one more (the last sweep axis before ``repeats`` when it sweeps)."""
    if not axis.sweep:
        return (*axes, axis)
    at = [a.name for a in axes].index("repeats")
    return (*axes[:at], axis, *axes[at:])


def declared(names: Sequence[str], axes: Sequence[Axis] = AXES) -> dict[str, Axis]:
    lookup = {a.name: a for a in axes}
    return {name: lookup[name] for name in names}
