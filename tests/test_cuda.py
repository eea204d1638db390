"""The CUDA paths, for real; skipped cleanly without a GPU (see conftest)."""

import pytest
import torch

from harness.clock import PhaseClock, split_steps
from harness.spec import build_spec
from harness.sweep import plan
from harness.train import run_point

pytestmark = pytest.mark.cuda


def test_events_clock_times_gpu_work_without_per_phase_sync():
    device = torch.device("cuda:0")
    a = torch.randn(4096, 4096, device=device)
    clock = PhaseClock("events", device)
    for _ in range(3):
        clock.mark()
        b = a @ a  # queued; the host runs ahead
        clock.mark()
        clock.mark()
        clock.mark()
    clock.close_window()
    parts = split_steps(clock.windows()[0])
    assert (parts["data"] > 1e-4).all()  # a 4096^3 matmul takes well over 0.1 ms on the GPU
    assert (parts["derivative"] >= 0).all() and b.shape == a.shape


@pytest.mark.parametrize("timing,mode", [("auto", "events"), ("sync", "sync")])
def test_cuda_sweep_records_timing_mode(timing, mode):
    spec = build_spec(cli_values={"devices": "cuda", "dataset": "mnist-like", "dataset_sizes": "2000", "batch_sizes": "32,full", "steps": "50", "timing": timing})
    p = plan(spec)
    for run in p.runs:
        result = run_point(run, p.splits[run.dataset_size], p.factory)
        point = result.point
        assert point["status"] == "ok" and point["timing_mode"] == mode and point["device"] == "cuda:0"
        assert point["derivative_s"] > 0 and point["samples_per_s"] > 0
        phase_sum = point["data_s"] + point["derivative_s"] + point["update_s"]
        assert phase_sum == pytest.approx(point["step_wall_s"], rel=0.5)
