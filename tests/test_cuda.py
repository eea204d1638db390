"""The CUDA paths, for real; skipped cleanly without a GPU (see conftest)."""

import pytest
import torch

from harness.run.clock import PhaseClock, split_steps
from harness.sweep import run_flags

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
    # the empty phases hold no part of it: without a per-phase sync the host ran ahead, yet
    # the events placed the matmul's GPU time in the phase that queued it
    assert (parts["derivative"] < parts["data"] / 10).all() and (parts["update"] < parts["data"] / 10).all()
    assert b.shape == a.shape


@pytest.mark.parametrize("timing,mode", [("auto", "events"), ("sync", "sync")])
def test_cuda_sweep_records_timing_mode(timing, mode):
    for result in run_flags(devices="cuda", dataset="mnist-like", dataset_sizes=2000, batch_sizes="32,full", steps=50, timing=timing):
        point = result.point
        assert point["status"] == "ok" and point["timing_mode"] == mode and point["device"] == "cuda:0"
        assert point["derivative_s"] > 0 and point["samples_per_s"] > 0
        phase_sum = point["data_s"] + point["derivative_s"] + point["update_s"]
        assert phase_sum == pytest.approx(point["step_wall_s"], rel=0.5)
