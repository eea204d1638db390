"""Shared set-up for the asv suites: pinned threads, flushed denormals, and one harness point
per parameter set (its PhaseClock gives CUDA-correct phase times that asv's wall clock cannot)."""

import torch

THREADS = 1


def pin() -> None:
    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)


def require(device: str) -> None:
    """asv skips a parameter set whose setup raises NotImplementedError."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA GPU on this machine")


def measured_row(**flags) -> dict:
    """Train one harness point and return its ``points`` row."""
    from harness.drivers.sweep import run_flags

    (result,) = run_flags(**{"threads": THREADS, "sample_interval": 0, **flags})
    if result.status != "ok":
        raise RuntimeError(f"harness point failed: {result.row['error']}")
    return result.row
