"""The data sets batchbench generates at any size, as arrays (``workload.datasets`` turns them
into tensors and decides the task): blobs, linreg, mnist-like, cifar-like and text. Seeded by
``data_seed``; nothing here reads user files or knows of training."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np

from harness.errors import SpecError

TEXT_CONTEXT = 64
TEXT_CORPUS_BYTES = 2_000_000
"""The text corpus: the first this many bytes of the standard library's .py files, by sorted path."""
LINREG_FEATURES = 16


def blobs(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3 Gaussian classes in 2-D, std 2: the classic mini-batch experiment."""
    from sklearn.datasets import make_blobs

    return make_blobs(n_samples=size, centers=3, n_features=2, cluster_std=2.0, random_state=seed)


def linreg(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Least squares with condition number 16 and noise 0.1 (the loss floor 0.01)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((size, LINREG_FEATURES)) * (1 + np.arange(LINREG_FEATURES)) ** -0.5
    w = np.random.default_rng(10_000 + seed).standard_normal(LINREG_FEATURES)
    return X, (X @ w + 0.1 * rng.standard_normal(size)).astype(np.float64)


def mnist_like(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten smooth random 28x28 class prototypes plus pixel noise: image-shaped, learnable,
    not separable at a glance (the noise is as large as the prototypes' spread)."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((10, 7, 7))
    prototypes = np.kron(coarse, np.ones((4, 4))).reshape(10, 784)
    y = rng.integers(0, 10, size=size)
    X = prototypes[y] + 1.5 * rng.standard_normal((size, 784))
    return X, y


def cifar_like(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten smooth random colour prototypes (8x8, upsampled to 32x32) plus pixel noise."""
    rng = np.random.default_rng(seed)
    prototypes = np.kron(rng.standard_normal((10, 3, 8, 8)), np.ones((1, 1, 4, 4)))
    y = rng.integers(0, 10, size=size)
    X = prototypes[y] + 1.5 * rng.standard_normal((size, 3, 32, 32))
    return X.astype(np.float32), y


@functools.lru_cache(maxsize=1)
def corpus() -> bytes:
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, total = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        chunks.append(data)
        total += len(data)
        if total >= TEXT_CORPUS_BYTES:
            break
    corpus = b"".join(chunks)[:TEXT_CORPUS_BYTES]
    if len(corpus) < 10 * (TEXT_CONTEXT + 1):
        raise SpecError("--dataset", f"text: found only {len(corpus)} bytes of Python source under {root}")
    return corpus


def text(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` windows of ``TEXT_CONTEXT`` bytes at seeded offsets, and the next byte of each."""
    source = np.frombuffer(corpus(), dtype=np.uint8)
    starts = np.random.default_rng(seed).integers(0, len(source) - TEXT_CONTEXT - 1, size=size)
    windows = source[starts[:, None] + np.arange(TEXT_CONTEXT + 1)].astype(np.int64)
    return windows[:, :-1].copy(), windows[:, 1:].copy()


GENERATORS: dict[str, Callable[[int, int], tuple[np.ndarray, np.ndarray]]] = {
    "blobs": blobs, "linreg": linreg, "mnist-like": mnist_like, "cifar-like": cifar_like, "text": text,
}
