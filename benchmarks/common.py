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


def run_point(**flags) -> dict:
    """Train one harness point and return its ``points`` row."""
    from harness.spec import build_spec
    from harness.sweep import plan
    from harness.train import run_point as train

    values = {"threads": str(THREADS), "sample_interval": "0"}
    values.update({k: str(v) for k, v in flags.items()})
    the_plan = plan(build_spec(cli_values=values))
    (run,) = the_plan.runs
    result = train(run, the_plan.splits[run.dataset_size], the_plan.factory)
    if result.status != "ok":
        raise RuntimeError(f"harness point failed: {result.point['error']}")
    return result.point
