"""``SweepSpec``: the axes and options of one sweep, as the user gave them.

Every field is a ``batchbench run`` flag (``--batch-sizes`` is ``batch_sizes``) and a TOML key;
``harness.spec.parse`` turns either into a ``SweepSpec`` and ``harness.spec.expand`` turns a
``SweepSpec`` into points. The defaults live here and only here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

DEFAULT_THREADS = 1
"""Torch intra-op threads per point. One thread keeps a step's time stable when another
process shares the machine (with the default of one thread per core a step on a busy 2-core
box ran 60x slower); raise it with ``--threads`` to measure a many-core setup."""

DEFAULT_STEPS = 500
DEFAULT_BURN_IN_STEPS = 5
AUTO_CHECKS = 20
"""``--check-every auto`` without a target spreads this many loss checks evenly over a point."""

AUTO_LOG_CHECKS = 40
"""``--check-every auto`` with a target: about this many checks, spaced geometrically (every
step at first, then about 13% apart on 500 steps), so steps-to-target is known to the same
relative precision at every batch size: 10 steps at B=4096 as well as 900 at B=8."""

DEFAULT_TARGET = "rel:0.1"
"""The target a sweep sets unless told otherwise (``--target none`` sets none): 10% of the way
from each point's initial loss down to the best check loss the sweep reached at that dataset
size. Relative, so it adapts to any data set; tight enough that small batches still take
many steps to reach it, loose enough that most points do."""

DEFAULT_LR_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
"""``--lr-policy tuned`` tries these (half-decade steps) unless ``--lr-grid`` says otherwise."""

DEFAULT_NOISE_SAMPLES = 0
"""Training samples whose per-example gradients estimate the noise scale at each check; 0 is
off. Opt-in because the estimate, though timed apart, evicts the loop from the CPU caches: the
first steps after each check ran up to 50% slower (about 3-6% throughput at B = 32 with 20
checks a point). ``--noise-samples 1024`` is a good setting for a convergence study."""

CHOICES = {
    "scaling": ("strong", "weak"),
    "lr_policy": ("constant", "linear", "sqrt", "tuned"),
    "optimizer": ("sgd", "adam"),
    "check_set": ("holdout", "train"),
    "timing": ("auto", "events", "sync"),
    "sampling": ("shuffle", "replacement"),
    "loader": ("tensor", "dataloader"),
    "data_placement": ("auto", "pageable", "pinned", "device", "host"),
    "precision": ("fp32", "tf32", "bf16", "fp16"),
    "compile": ("off", "on"),
}

AUTO_DEVICE_SHARE = 0.25
"""``--data-placement auto`` keeps the training set on the accelerator when it takes less than
this share of the device's memory (as users with small data do), else pins it in host memory
and copies each batch asynchronously (as users with large data do)."""


def flag(field: str) -> str:
    """The CLI spelling of a spec field, used in every message."""
    return "--" + field.replace("_", "-")


@dataclass(frozen=True)
class SweepSpec:
    """The axes and options of a sweep, as the user gave them (before expansion)."""

    dataset: str = "digits"
    """Real data every machine has offline (scikit-learn's 8x8 digits): unlike the 2-D blobs,
    steps-to-target keeps falling up to a batch of about 8 and time per step rises beyond it, so
    the quick sweep's recommendation shows the trade-off rather than noise."""
    dataset_sizes: tuple[int, ...] = ()
    """Empty: the data set's natural size and half of it (two sizes, as the quick sweep shows)."""
    batch_sizes: tuple[str, ...] = ("1..full",)
    devices: tuple[str, ...] = ("auto",)
    model: str = "mlp"
    hidden: tuple[int, ...] = (32,)
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    steps: int | None = None
    epochs: float | None = None
    check_every: str = "auto"
    check_set: str = "holdout"
    holdout_fraction: float = 0.2
    threads: int = DEFAULT_THREADS
    repeats: int = 1
    seed: int = 0
    data_seed: int = 0
    timing: str = "auto"
    burn_in_steps: int = DEFAULT_BURN_IN_STEPS
    """Timing warm-up: steps that train but are left out of every statistic."""
    sampling: tuple[str, ...] = ("shuffle",)
    loader: str = "tensor"
    workers: int = 0
    """DataLoader worker processes with ``--loader dataloader`` (0: load in the training process)."""
    target_column: str | None = None
    lr_policy: str = "constant"
    base_batch_size: int = 32
    lr_grid: tuple[float, ...] = DEFAULT_LR_GRID
    warmup_steps: int = 0
    """Learning-rate warm-up (linear ramp over the first steps), not the timing burn-in."""
    target_loss: float | None = None
    target_accuracy: float | None = None
    target: str | None = DEFAULT_TARGET
    """``rel:F`` (None: no relative target): the loss L_ref + F (L_0 - L_ref), L_ref the best check loss of the sweep."""
    stop_at_target: bool = False
    noise_samples: int = DEFAULT_NOISE_SAMPLES
    sample_interval: float | None = None
    """Monitor interval in seconds (the flag ``--sample-interval`` takes 0.1, 0.1s or 100ms);
    None: 0.1 s on the CPU, 0.02 s on a GPU; 0: off. Points carry it as ``sample_interval_s``."""
    shard: str | None = None
    """``I/N``: run only sweep points I, I+N, I+2N, ... (0 <= I < N), e.g. one job of an array."""
    world_sizes: tuple[int, ...] = (1,)
    """Data-parallel ranks (torch.distributed, one process each); 1 is a plain single process."""
    scaling: str = "strong"
    """strong: the global batch is --batch-sizes, split over the ranks; weak: each rank takes it."""
    precision: tuple[str, ...] = ("fp32",)
    """Numeric precision of the training step, an axis: fp32; tf32 (CUDA matmuls in TF32);
    bf16 and fp16 (autocast; fp16 with a gradient scaler whose unscale and step count in
    ``update``). Loss checks evaluate in fp32."""
    compile: tuple[str, ...] = ("off",)
    """torch.compile the model, an axis: ``on`` compiles it before the first step (an untimed
    forward + backward, its time recorded as ``compile_s``), never inside phases or throughput."""
    peak_tflops: float | None = None
    """The device's dense peak for the point's precision, for ``mfu``; None: from the table of
    common GPUs (``harness.run.flops``), and no MFU on the CPU."""
    data_placement: tuple[str, ...] = ("auto",)
    """Where the training set lives on an accelerator: pageable or pinned host memory (a copy
    per batch) or the device itself; auto picks by size. CPU points are always ``host``."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def target_rel(self) -> float | None:
        """F of ``--target rel:F``, or None."""
        return float(self.target[4:]) if self.target else None


FIELDS = tuple(f.name for f in dataclasses.fields(SweepSpec))

FLAG_HELP = {
    "batch_sizes": ("axes", "comma list of sizes, power-of-two ranges (1..1024, 1..full) and 'full' [1..full]"),
    "dataset_sizes": ("axes", "comma list of dataset sizes [the data set's size and half of it]"),
    "devices": ("axes", "cpu, cuda, cuda:N, mps or auto (all available) [auto]"),
    "repeats": ("axes", "repeats with seeds seed, seed+1, ... [1]"),
    "world_sizes": ("axes", "comma list of data-parallel ranks (torch.distributed, a process each) [1]"),
    "scaling": ("axes", "strong (the global batch is split over the ranks) or weak (each rank takes the batch) [strong]"),
    "dataset": ("workload", "digits, blobs, linreg, mnist-like, cifar-like (3x32x32 images), text (byte sequences), or a .npz/.csv/.parquet file [digits]"),
    "target_column": ("workload", "target column of a .csv/.parquet file [y]"),
    "model": ("workload", "linear, mlp, cnn, resnet (for images), gpt (for token ids), module:callable or path/to/file.py:callable [mlp]"),
    "hidden": ("workload", "mlp hidden widths, e.g. 32 or 256,256 [32]"),
    "optimizer": ("workload", "sgd or adam [sgd]"),
    "lr": ("workload", "learning rate [0.1]"),
    "momentum": ("workload", "SGD momentum [0]"),
    "sampling": ("workload", "comma list of shuffle (without replacement, per epoch) and replacement (i.i.d.) [shuffle]"),
    "loader": ("workload", "tensor (indexing) or dataloader (per-sample collation, pinned memory with --data-placement pinned) [tensor]"),
    "workers": ("workload", "DataLoader worker processes with --loader dataloader [0]"),
    "seed": ("workload", "seed of the data order and of the initial weights [0]"),
    "data_seed": ("workload", "seed of data generation, subsampling and the holdout split [0]"),
    "lr_policy": ("learning rate across batch sizes", "constant, linear or sqrt (scale --lr from --base-batch-size), or tuned (every --lr-grid value) [constant]"),
    "base_batch_size": ("learning rate across batch sizes", "batch size at which --lr applies under linear/sqrt [32]"),
    "lr_grid": ("learning rate across batch sizes", "comma list of learning rates tried by --lr-policy tuned [0.001,0.003,...,1]"),
    "warmup_steps": ("learning rate across batch sizes", "linear learning-rate warm-up over the first N steps [0]"),
    "target_loss": ("convergence target (one of)", "check-set loss to reach"),
    "target_accuracy": ("convergence target (one of)", "check-set accuracy to reach (classification)"),
    "target": ("convergence target (one of)", "rel:F = L_ref + F (L_0 - L_ref), L_ref the best check loss of the sweep at that dataset size, or none [rel:0.1 unless --target-loss/--target-accuracy]"),
    "stop_at_target": ("convergence target (one of)", "end a point at the check that reaches --target-loss/--target-accuracy"),
    "noise_samples": ("convergence target (one of)", "estimate the gradient noise scale at each check from this many per-example gradients (0: off) [0]"),
    "steps": ("budget (one of)", "training steps per point [500]"),
    "epochs": ("budget (one of)", "epochs per point (steps = ceil(epochs x train size / batch size))"),
    "check_every": ("loss checks", "N (steps), Ts (seconds, e.g. 30s), epoch, log[:N] (N geometrically spaced checks), or auto (log:40 with a target, else 20 evenly) [auto]"),
    "check_set": ("loss checks", "holdout or train [holdout]"),
    "holdout_fraction": ("loss checks", "share of the data held out as the check set [0.2]"),
    "threads": ("timing", "torch threads, pinned and recorded per point [1]"),
    "timing": ("timing", "CUDA timing: events (one sync per window) or sync (per phase) [auto: events]"),
    "sample_interval": ("timing", "monitor interval for CPU/GPU utilisation and memory: seconds, 100ms, or 0 (off) [0.1 s on CPU, 0.02 s on GPU]"),
    "burn_in_steps": ("timing", "warm-up steps left out of statistics (at most half the steps) [5]"),
    "data_placement": ("workload", "comma list of pageable (host memory, copied each step), pinned (pinned host memory, asynchronous copies), device (the training set on the accelerator) and auto (device if it takes under 25% of device memory, else pinned); CPU points are host [auto]"),
    "precision": ("workload", "comma list of fp32, tf32 (CUDA), bf16 and fp16 (autocast; fp16 with a gradient scaler) [fp32]"),
    "compile": ("workload", "comma list of off and on (torch.compile; the compile time recorded apart as compile_s) [off]"),
    "peak_tflops": ("timing", "the device's dense peak TFLOPS at the point's precision, for MFU [a table of common GPUs; none on the CPU]"),
    "shard": ("output", "I/N: run only points I, I+N, ... of the sweep (0 <= I < N); join the stores with `batchbench merge`"),
}
"""Per spec field: the help group and text of its ``batchbench run`` flag (default in brackets).
The CLI builds its flags from this table, so a field and its flag cannot drift apart."""

FLAG_GROUPS = ("axes", "workload", "learning rate across batch sizes", "convergence target (one of)", "budget (one of)", "loss checks", "timing", "output")

assert set(FLAG_HELP) == set(FIELDS), set(FLAG_HELP) ^ set(FIELDS)
