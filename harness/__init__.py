"""batchbench: phase-timed mini-batch gradient descent, swept over batch sizes, dataset sizes
and devices. The import package is ``harness``; the CLI is ``batchbench`` (= ``python -m harness``)."""

from harness.store.schema import PHASES
from harness.version import __version__

__all__ = ["PHASES", "__version__", "benchmark", "ramp", "sweep"]


def __getattr__(name: str):
    """``harness.benchmark`` and ``harness.sweep`` (the Python API), imported on first use: ``import harness`` stays
    light for the report, which never imports torch."""
    if name in ("benchmark", "sweep"):
        from harness import api

        return getattr(api, name)
    if name == "ramp":  # the ramp `batchbench cbs` measured, for training in your own loop
        import harness.ramp

        return harness.ramp
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
