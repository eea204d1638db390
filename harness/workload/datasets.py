"""Data sets: built-ins and user files, returned as plain tensors. Nothing here knows of timing.

Built-ins (``name: natural size``):

- ``blobs`` (1000): 3 Gaussian classes in 2-D, std 2 -- the classic mini-batch experiment.
- ``linreg`` (1000): least squares, 16 features scaled by ``(1 + j) ** -0.5`` (condition
  number 16, so large batches still need tens of steps), float targets ``X @ w + 0.1 noise``;
  the optimum is known (``linreg_optimum``) and the loss floor is the noise, 0.01.
- ``digits`` (1797): scikit-learn's bundled 8x8 handwritten digits, real data, 10 classes.
- ``mnist-like`` (5000): 784 features (28x28), 10 classes, synthetic.
- ``cifar-like`` (2000): ``(3, 32, 32)`` images, 10 classes, synthetic: smooth colour
  prototypes per class plus pixel noise (for ``--model resnet``).
- ``text`` (4096): byte-level sequences of ``generated.TEXT_CONTEXT`` tokens, targets the next byte of each
  (vocabulary 256), cut at seeded offsets from the Python standard library's own source files,
  which every machine with Python has offline (for ``--model gpt``). The same Python version
  gives the same data.

Files: ``.npz`` (arrays ``X`` and ``y``), ``.csv`` and ``.parquet`` (a ``y`` column, or the
one named by ``--target-column``; every other column a numeric feature). Integer, boolean or
string targets mean classification (cross-entropy); float targets mean regression (MSE).

A ``.npz`` keeps its shapes: ``X`` of shape ``(N, ...)`` (images ``(N, 3, 16, 16)``, token ids
``(N, T)``) and ``y`` of shape ``(N,)`` or ``(N, ...)`` (per-token targets). ``X`` of dtype
int32/int64 stays int64 (token ids, for a model with an embedding); any other dtype becomes
float32. Integer ``y`` of more than one dimension are class ids as given (``0..K-1``, K their
maximum + 1: a vocabulary is not renumbered); one-dimensional class labels are numbered
``0..K-1`` in sorted order, as before.

Generated sets are generated at each requested size; real and file data are subsampled
(seeded, without replacement). The train/check split is seeded by ``data_seed`` too, so every
point of a sweep sees the same data.
"""

from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import SpecError
from harness.workload import generated, pipelines, plugins
from harness.workload.pipelines import Pipeline
from harness.config.policies import DataInfo, split_sizes
from harness.config.spec import FILE_ENDINGS

BUILTIN_SIZES = {"blobs": 1000, "linreg": 1000, "digits": 1797, "mnist-like": 5000, "cifar-like": 2000, "text": 4096}
GENERATED_FEATURES = {"blobs": 2, "linreg": 16, "mnist-like": 784, "cifar-like": 3 * 32 * 32, "text": 64}
"""Features of the data sets generated at any size (what their memory grows with)."""


class _Samples:
    """What a data set and its split say of one sample: its shape, its size, the model's outputs."""

    task: str
    n_classes: int | None

    def _rows(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._rows().shape[1:])

    @property
    def n_features(self) -> int:
        """The size of one sample (the product of ``input_shape``)."""
        return int(np.prod(self.input_shape))

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task == "classification" else 1


@dataclass(frozen=True)
class Dataset(_Samples):
    """Features (float32, one row a sample) and targets: int64 class ids or float32 values."""

    name: str
    X: torch.Tensor
    y: torch.Tensor
    task: str  # "classification" | "regression"
    n_classes: int | None

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    def _rows(self) -> torch.Tensor:
        return self.X


@dataclass(frozen=True)
class Split(_Samples):
    """The training set and the check set (the holdout, or the training set itself)."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_check: torch.Tensor
    y_check: torch.Tensor
    task: str
    n_classes: int | None
    train_items: Any = None
    """A user's data pipeline over the training rows (a ``Subset`` of their Dataset, row i
    of it being row i of ``X_train`` decoded): training batches come through it."""

    def _rows(self) -> torch.Tensor:
        return self.X_train


def from_arrays(X, y) -> Dataset:
    """In-memory arrays (numpy or torch) as a data set, as a ``.npz`` with them would be
    (shapes kept, the same checks), named ``arrays:<digest>`` of their contents so the same
    arrays give the same point ids. Passed to the plan as an object (``source``)."""
    import hashlib

    X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    digest = hashlib.sha1()
    for array in (X, y):
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return _dataset(f"arrays:{digest.hexdigest()[:12]}", X, y, shaped=True)


def is_file(name: str) -> bool:
    return Path(name).suffix.lower() in FILE_ENDINGS


def info(name: str, target_column: str | None = None, source: Dataset | Pipeline | None = None, *, holdout_fraction: float = 0.2,
         check_set: str = "holdout") -> DataInfo:
    """Natural and maximum size of a data set (``source``: the data set itself, handed over in
    memory); reads a file once to count its rows."""
    if source is None and is_pipeline(name):
        source = pipeline(name)
    if isinstance(source, Pipeline):
        size = source.natural_size(holdout_fraction, check_set)
        return DataInfo(natural_size=size, max_size=size)
    if source is not None:
        return DataInfo(natural_size=source.n_samples, max_size=source.n_samples)
    if name in generated.GENERATORS:
        return DataInfo(natural_size=BUILTIN_SIZES[name], max_size=None)
    if name == "digits":
        return DataInfo(natural_size=BUILTIN_SIZES[name], max_size=BUILTIN_SIZES[name])
    if is_file(name):
        rows = _read_file(name, target_column).n_samples
        return DataInfo(natural_size=rows, max_size=rows)
    allowed = ", ".join(BUILTIN_SIZES)
    if Path(name).is_dir():
        raise SpecError("--dataset", f"{name} is a folder, not a data set; give a built-in ({allowed}), a .npz, .csv or .parquet file, "
                                     "or module:callable / file.py:callable returning a torch Dataset (which may read a folder)")
    if Path(name).suffix:
        raise SpecError("--dataset", f"{name!r} has an unsupported suffix; use a built-in ({allowed}) or a .npz, .csv or .parquet file")
    import difflib

    close = difflib.get_close_matches(name, list(BUILTIN_SIZES), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise SpecError("--dataset", f"unknown data set {name!r}{hint}; use a built-in ({allowed}), a .npz, .csv or .parquet file, "
                                 "or module:callable / file.py:callable returning a torch Dataset")


def generation_bytes(name: str, size: int) -> int | None:
    """About the peak memory of generating ``size`` rows of a generated data set (float64
    while generated, then float32 tensors); None for data read from a file or bundled."""
    features = GENERATED_FEATURES.get(name)
    return None if features is None else size * (features + 1) * (8 * 2 + 4)


def load(name: str, size: int, *, data_seed: int = 0, target_column: str | None = None, source: Dataset | None = None) -> Dataset:
    """The data set at ``size`` samples (generated, or a seeded subsample of a file, of
    scikit-learn's digits or of ``source``, a data set handed over in memory)."""
    rng = np.random.default_rng(data_seed)
    if source is not None:
        return _subsample(source, size, rng)
    if name in generated.GENERATORS:
        if name == "blobs":  # scikit-learn's make_blobs
            _room_for_scipy()
        X, y = generated.GENERATORS[name](size, data_seed)
        if name == "text":  # next-byte ids over a vocabulary of 256, as given
            return Dataset(name, torch.from_numpy(X), torch.from_numpy(y), "classification", 256)
        return _dataset(name, X, y, shaped=name == "cifar-like")
    if name == "digits":
        _room_for_scipy()
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return _subsample(_dataset(name, bunch.data / 16.0, bunch.target), size, rng)
    return _subsample(_read_file(name, target_column), size, rng)


BLAS_BASE_BYTES = 64 << 20
BLAS_THREAD_BYTES = 48 << 20
"""The address space scipy's bundled OpenBLAS takes as it loads: a base, and per thread its
32 MiB buffer and its stack, with a margin (measured under ``ulimit -v``)."""


def _room_for_scipy() -> None:
    """Refuse to import scipy (scikit-learn's) under an address-space limit (``ulimit -v``) that
    leaves it too little, as an ImportError for lack of memory (the CLI says it in one line):
    the OpenBLAS scipy bundles retries a failed allocation forever as it loads, a hang that
    Ctrl-C cannot end. Nothing to check once scipy is in, without a limit, or off Linux."""
    import os
    import sys

    if "scipy" in sys.modules:
        return
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        with open("/proc/self/status") as status:
            used = next(int(line.split()[1]) << 10 for line in status if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration, ValueError):
        return
    if limit == resource.RLIM_INFINITY:
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    asked = next((int(v) for v in map(os.environ.get, ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"))
                  if v and v.strip().isdigit() and int(v) > 0), cpus)
    threads = max(1, min(asked, cpus, 64))  # as OpenBLAS counts them (its wheels' builds stop at 64)
    need = BLAS_BASE_BYTES + threads * BLAS_THREAD_BYTES
    if limit - used < need:
        raise ImportError(f"not tried, not enough memory: the address-space limit leaves {max(0, limit - used) >> 20} MB, and scipy's "
                          f"OpenBLAS needs about {need >> 20} MB for its {threads} thread(s), with less waiting for memory forever", name="scipy")


def _subsample(full: Dataset, size: int, rng: np.random.Generator) -> Dataset:
    """``size`` rows of ``full``, seeded, without replacement, in their order; all of it at its size."""
    name = full.name
    if size > full.n_samples:
        raise SpecError("--dataset-sizes", f"{size} is larger than {name} ({full.n_samples} samples)")
    if size == full.n_samples:
        return full
    keep = torch.from_numpy(np.sort(rng.choice(full.n_samples, size=size, replace=False)))
    return Dataset(full.name, full.X[keep], full.y[keep], full.task, full.n_classes)


def split(data: Dataset, check_set: str, holdout_fraction: float, *, data_seed: int = 0) -> Split:
    """Seeded train/holdout split, sized by ``config.policies.split_sizes`` (the sizes every point
    records); ``check_set='train'`` checks the loss on the training set itself."""
    if check_set == "train":
        return Split(data.X, data.y, data.X, data.y, data.task, data.n_classes)
    _, n_check = split_sizes(data.n_samples, check_set, holdout_fraction)
    order = torch.from_numpy(np.random.default_rng(data_seed + 1).permutation(data.n_samples))
    check, train = order[:n_check], order[n_check:]
    return Split(data.X[train], data.y[train], data.X[check], data.y[check], data.task, data.n_classes)


def is_pipeline(name: str) -> bool:
    """``--dataset module:callable`` / ``file.py:callable``: a user's data pipeline."""
    return name not in BUILTIN_SIZES and not is_file(name) and plugins.is_plugin_name(name)


def pipeline(name: str) -> Pipeline:
    """The user's pipeline, made by calling their callable (not cached: it may read what
    changes between calls in one process, such as a folder's files)."""
    return pipelines.resolve(name)


def load_split(name: str, size: int, *, data_seed: int, target_column: str | None, check_set: str, holdout_fraction: float,
               source: Dataset | Pipeline | None = None) -> Split:
    """The training and check sets of one dataset size, as every point of that size sees them."""
    if source is None and is_pipeline(name):
        source = pipeline(name)
    if isinstance(source, Pipeline):
        return _pipeline_split(source, size, data_seed, check_set, holdout_fraction)
    data = load(name, size, data_seed=data_seed, target_column=target_column, source=source)
    return split(data, check_set, holdout_fraction, data_seed=data_seed)


def _pipeline_split(source: Pipeline, size: int, data_seed: int, check_set: str, holdout_fraction: float) -> Split:
    """A seeded subsample of the user's Dataset(s), decoded once for checks and counts, with
    the training rows' ``Subset`` that training batches come through."""
    from torch.utils.data import Subset

    n_train, n_check = split_sizes(size, check_set, holdout_fraction)
    rng = np.random.default_rng(data_seed)

    def rows(data, n: int) -> np.ndarray:
        if n > len(data):
            raise SpecError("--dataset-sizes", f"{size} needs {n} rows of {source.name}'s {'check' if data is source.check else 'training'} "
                                               f"Dataset, which has {len(data)}; use at most {source.natural_size(holdout_fraction, check_set)}")
        return np.arange(n) if n == len(data) else np.sort(rng.choice(len(data), size=n, replace=False))

    if source.check is not None and check_set != "train":
        train_rows, check_rows, check_data = rows(source.train, n_train), rows(source.check, n_check), source.check
    else:
        chosen = rows(source.train, size)
        order = np.random.default_rng(data_seed + 1).permutation(size)
        train_rows = chosen if check_set == "train" else np.sort(chosen[order[n_check:]])
        check_rows, check_data = (chosen if check_set == "train" else np.sort(chosen[order[:n_check]])), source.train
    X_train, y_train = pipelines.decode(source.train, train_rows, source.name)
    X_check, y_check = (X_train, y_train) if check_set == "train" else pipelines.decode(check_data, check_rows, source.name)
    classes = pipelines.with_classes(source, y_train, y_check)
    return Split(X_train, y_train, X_check, y_check, source.task, classes, train_items=Subset(source.train, train_rows.tolist()))


def linreg_optimum(data: Dataset) -> tuple[np.ndarray, float]:
    """Least-squares weights (with bias) and the minimal mean squared error on ``data``."""
    X = np.c_[data.X.double().numpy(), np.ones(data.n_samples)]
    y = data.y.double().numpy()
    w, *_ = np.linalg.lstsq(X, y, rcond=None)
    return w, float(np.mean((X @ w - y) ** 2))


def _dataset(name: str, X: np.ndarray, y: np.ndarray, *, shaped: bool = False) -> Dataset:
    """Convert arrays to tensors and decide the task from the targets' type. ``shaped`` (a
    ``.npz``): keep the per-sample shapes and integer token ids; otherwise flat float rows."""
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim > 2 and not shaped:
        X = X.reshape(X.shape[0], -1)
    if X.ndim < 2 or X.shape[0] == 0 or X.size == 0:
        raise SpecError("--dataset", f"{name}: X must hold at least one sample, got shape {X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 0 or y.shape[0] != X.shape[0] or (y.ndim > 1 and not shaped):
        raise SpecError("--dataset", f"{name}: y must be one target (or one array of targets, in a .npz) per row of X ({X.shape[0]}), got shape {y.shape}")
    return _with_targets(name, _features(name, X, shaped), y)


def _features(name: str, X: np.ndarray, shaped: bool) -> torch.Tensor:
    """Integer token ids (a ``.npz`` of int32/int64) as int64, anything else as float32."""
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise SpecError("--dataset", f"{name}: features must be numeric, got {X.dtype}")
    if X.dtype == np.uint8:
        raise SpecError("--dataset", f"{name}: X is uint8 (0..255 image bytes), which would train as unscaled floats (losses in the "
                                     "thousands); save X / 255 as float32, or X as int64 if they are token ids")
    if shaped and X.dtype in (np.int32, np.int64):
        if X.min() < 0:
            raise SpecError("--dataset", f"{name}: integer X are token ids and must be >= 0, found {X.min()}")
        return torch.from_numpy(X.astype(np.int64))
    X = X.astype(np.float32)
    if not np.isfinite(X).all():
        raise SpecError("--dataset", f"{name}: features contain NaN or infinite values")
    return torch.from_numpy(X)


def _with_targets(name: str, features: torch.Tensor, y: np.ndarray) -> Dataset:
    """The task from the targets' type: float targets are a regression, the rest class ids."""
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise SpecError("--dataset", f"{name}: targets contain NaN or infinite values")
        return Dataset(name, features, torch.from_numpy(y.astype(np.float32)), "regression", None)
    if y.ndim > 1:  # per-element class ids (tokens): as given, never renumbered
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise SpecError("--dataset", f"{name}: targets of shape {y.shape} must be class ids >= 0 (integers) or floats")
        classes = int(y.max()) + 1
        if classes < 2:
            raise SpecError("--dataset", f"{name}: classification targets need at least 2 classes, found {classes}")
        return Dataset(name, features, torch.from_numpy(y.astype(np.int64)), "classification", classes)
    classes, ids = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise SpecError("--dataset", f"{name}: classification targets need at least 2 classes, found {len(classes)}")
    return Dataset(name, features, torch.from_numpy(ids.astype(np.int64)), "classification", len(classes))


@functools.lru_cache(maxsize=8)
def _read_file(path_text: str, target_column: str | None) -> Dataset:
    """Read a user file once per process (planning and running share it)."""
    path = Path(path_text)
    if path.is_dir():
        raise SpecError("--dataset", f"{path} is a folder, not a file; give a .npz, .csv or .parquet file")
    if not path.is_file():
        raise SpecError("--dataset", f"file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, target_column)
    return _read_table(path, suffix, target_column)


def _read_npz(path: Path, target_column: str | None) -> Dataset:
    if target_column is not None:
        raise SpecError("--target-column", "applies to .csv and .parquet files; a .npz file holds arrays X and y")
    _refuse_npy(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("X", "y") if k not in archive.files]
            if missing:
                raise SpecError("--dataset", f"{path} has no array {' or '.join(missing)}; a .npz needs arrays X and y (found: {', '.join(archive.files) or 'none'})")
            X, y = archive["X"], archive["y"]
    except SpecError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise SpecError("--dataset", f"cannot read {path} as .npz (corrupt or truncated?): {detail}") from None
    return _dataset(str(path), X, y, shaped=True)


NPY_MAGIC = b"\x93NUMPY"
"""How a ``.npy`` file (one array, ``numpy.save``) starts; a ``.npz`` is a zip archive of them."""


def _refuse_npy(path: Path) -> None:
    """A ``.npy`` saved under a ``.npz`` name holds one array, with no X and y to read."""
    try:
        with path.open("rb") as handle:
            start = handle.read(len(NPY_MAGIC))
    except OSError as exc:
        raise SpecError("--dataset", f"cannot read {path}: {exc.strerror or exc}") from None
    if start == NPY_MAGIC:
        raise SpecError("--dataset", f"{path} is a .npy file (one array, numpy.save), not a .npz archive of arrays X and y; "
                                     "save it with numpy.savez(path, X=X, y=y)")


def _read_table(path: Path, suffix: str, target_column: str | None) -> Dataset:
    import pandas as pd

    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except ImportError as exc:
        raise SpecError("--dataset", f"reading {path} needs pyarrow: pip install 'batchbench[parquet]' ({exc})") from None
    except Exception as exc:  # pandas raises many types for a bad file
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise SpecError("--dataset", f"cannot read {path}: {detail}") from None
    column = target_column or "y"
    if frame.empty:
        raise SpecError("--dataset", f"{path} has a header but no rows")
    if column not in frame.columns:
        flagname = "--target-column" if target_column else "--dataset"
        raise SpecError(flagname, f"{path} has no column {column!r}; columns: {', '.join(map(str, frame.columns))} (choose one with --target-column)")
    features = frame.drop(columns=[column])
    bad = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise SpecError("--dataset", f"{path}: feature columns must be numeric, not: {', '.join(bad)}")
    if features.shape[1] == 0:
        raise SpecError("--dataset", f"{path} has no feature columns besides {column!r}")
    return _dataset(str(path), features.to_numpy(), frame[column].to_numpy())
