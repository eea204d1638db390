"""pytest-benchmark around harness training steps, per batch size and device. The wall time
is pytest-benchmark's; the phase medians in ``extra_info`` come from the harness's clock (CUDA
events on a GPU), so ``pytest-benchmark compare`` can show both.

    pytest tests/benchmarks --benchmark-only --benchmark-autosave
    pytest-benchmark compare            # against the last autosaved run
"""

import pytest

from harness.drivers.plan import plan_flags
from harness.run.engine import run_point


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("batch_size", [1, 32, 256])
def test_training_steps(benchmark, batch_size, device):
    steps = 20 if benchmark.disabled else 300
    the_plan = plan_flags(dataset="mnist-like", dataset_sizes=2000, batch_sizes=batch_size, devices=device, hidden=128, steps=steps, lr=0.01,
                          threads=1, sample_interval=0)
    (run,) = the_plan.points
    workload = the_plan.workload(run)
    result = benchmark.pedantic(run_point, args=(run, workload), rounds=1 if benchmark.disabled else 5, iterations=1)
    point = result.row
    assert point["status"] == "ok"
    benchmark.extra_info.update({key: point[key] for key in ("data_s", "derivative_s", "update_s", "loss_check_s", "samples_per_s", "batch_size",
                                                             "device", "threads", "timing_mode", "steps")})
