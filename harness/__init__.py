"""batchbench: phase-timed mini-batch gradient descent, swept over batch sizes, dataset sizes
and devices. The import package is ``harness``; the CLI is ``batchbench`` (= ``python -m harness``)."""

__version__ = "0.4.2"

PHASES = ("data", "derivative", "update", "loss_check")
"""The phases of a training step, in order; they never nest or overlap."""


def __getattr__(name: str):
    """``harness.benchmark`` (the Python API), imported on first use: ``import harness`` stays
    light for the report, which never imports torch."""
    if name == "benchmark":
        from harness.api import benchmark

        return benchmark
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
