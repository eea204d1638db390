"""The CUDA paths, for real; skipped cleanly without a GPU (see conftest)."""

import pytest
import torch

from harness.run.clock import PhaseClock, split_steps
from harness.drivers.sweep import run_flags

pytestmark = pytest.mark.cuda


def test_events_clock_times_gpu_work_without_per_phase_sync():
    device = torch.device("cuda:0")
    a = torch.randn(4096, 4096, device=device)
    clock = PhaseClock("events", device)
    for _ in range(3):  # the loop's five marks a step: start, data, derivative, update, end
        clock.mark()
        b = a @ a  # queued; the host runs ahead
        clock.mark()
        clock.mark()
        clock.mark()
        clock.mark()
    clock.close_window()
    parts = split_steps(clock.windows()[0])
    assert len(parts["data"]) == 3 and (parts["data"] > 1e-4).all()  # a 4096^3 matmul takes well over 0.1 ms on the GPU
    # the empty phases hold no part of it: without a per-phase sync the host ran ahead, yet
    # the events placed the matmul's GPU time in the phase that queued it
    assert (parts["derivative"] < parts["data"] / 10).all() and (parts["update"] < parts["data"] / 10).all()
    assert b.shape == a.shape


def test_a_first_cuda_use_in_a_fresh_process_is_a_harness_point():
    """Nothing has initialised CUDA when a script's first point starts (the peak counters
    refused to reset before): the overhead benchmark's CUDA comparison in its own process."""
    import subprocess
    import sys

    code = "from harness.drivers.overhead import against_plain; r = against_plain(32, rounds=1, steps=60, device='cuda'); print(r.ratio > 0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]


@pytest.mark.parametrize("timing,mode", [("auto", "events"), ("sync", "sync")])
def test_cuda_sweep_records_timing_mode(timing, mode):
    for result in run_flags(devices="cuda", dataset="mnist-like", dataset_sizes=2000, batch_sizes="32,full", steps=50, timing=timing):
        point = result.row
        assert point["status"] == "ok" and point["timing_mode"] == mode and point["device"] == "cuda:0"
        assert point["derivative_s"] > 0 and point["samples_per_s"] > 0
        phase_sum = point["data_s"] + point["derivative_s"] + point["update_s"]
        assert phase_sum == pytest.approx(point["step_wall_s"], rel=0.5)


@pytest.mark.parametrize("timing,every", [("auto", 1), ("sync", None), ("auto", None)], ids=["events-every-step", "sync", "events-sampled"])
def test_a_known_gpu_cost_lands_in_derivative(timing, every, monkeypatch):
    """A spin kernel of known GPU time in the forward pass: ``derivative`` within 5% of the
    spin's time by an independent synchronised clock (plus the tiny linear model's own work)."""
    import plugins
    from harness.run import loop

    if every is not None:
        monkeypatch.setattr(loop, "sample_every", lambda cost, step, multiple_of=1: every)
    (result,) = run_flags(devices="cuda", dataset="blobs", dataset_sizes=2000, batch_sizes=32, steps=120, timing=timing,
                          model=f"{plugins.__file__}:spin_forward", sample_interval=0)
    point = result.row
    expected = plugins.spin_seconds(plugins.spin_cycles(plugins.SPIN_S))
    assert point["status"] == "ok" and point["derivative_s"] == pytest.approx(expected, rel=0.05), (point["derivative_s"], expected)
    # events time the GPU stream; sync mode times the host, which adds the optimizer's launches
    # (0.2 ms of a 2 ms spin on an H100 VM)
    small = (0.1 if timing == "auto" else 0.2) * expected
    assert point["data_s"] < small and point["update_s"] < small
    if every is None and timing == "auto":
        assert point["timed_steps"] < 120 - 5  # events cost enough that only a sample is timed


def test_a_cuda_out_of_memory_is_a_status_and_the_sweep_goes_on(tmp_path):
    from conftest import plugin
    from harness.drivers.plan import plan_flags
    from harness.store.sqlite import Store
    from harness.drivers.sweep import run_sweep

    with Store(tmp_path / "s.sqlite") as store:
        run_id = run_sweep(plan_flags(devices="cuda", dataset_sizes=400, batch_sizes="32,128,256", steps=10, model=plugin("cuda_oom_above_64")),
                           store, progress=False)
        points = store.load("points", [run_id]).sort_values("batch_size")
    assert list(points["status"]) == ["ok", "oom", "oom"] and "OutOfMemoryError" in points["error"].iloc[1]


def test_fit_predicts_the_probed_limit_within_10_percent(cli):
    import json

    code, out, err = cli("fit", "--device", "cuda", "--dataset", "mnist-like", "--model", "mlp", "--hidden", "4096,4096", "--json", "--quiet")
    assert code == 0, err
    result = json.loads(out)
    assert result["probed_max_batch_size"] and abs(result["prediction_error"]) <= 0.10, result


def test_training_peaks_on_cuda_leave_out_the_checks():
    from conftest import plugin

    flags = dict(devices="cuda", dataset="blobs", dataset_sizes=400, batch_sizes=32, steps=40, check_every=10, sample_interval=0)
    (plain,) = run_flags(model=plugin("plain_linear"), **flags)
    (hog,) = run_flags(model=plugin("eval_hog"), **flags)
    assert abs(hog.row["peak_device_mem_bytes"] - plain.row["peak_device_mem_bytes"]) < 256 * 2**20
    assert hog.row["check_peak_device_mem_bytes"] > plain.row["peak_device_mem_bytes"] + 900 * 2**20


@pytest.mark.parametrize("placement", ["pageable", "pinned", "device"])
def test_every_data_placement_trains_the_same(placement):
    (result,) = run_flags(devices="cuda", dataset="mnist-like", dataset_sizes=2000, batch_sizes=64, steps=30, data_placement=placement, sample_interval=0)
    (reference,) = run_flags(devices="cpu", dataset="mnist-like", dataset_sizes=2000, batch_sizes=64, steps=30, sample_interval=0)
    assert result.status == "ok" and result.row["data_placement"] == placement
    assert [c["step"] for c in result.checks] == [c["step"] for c in reference.checks]
    assert result.checks[-1]["eval_loss"] == pytest.approx(reference.checks[-1]["eval_loss"], rel=1e-3)
