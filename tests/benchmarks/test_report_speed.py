"""Building the report of a 100-point sweep takes a few seconds (target: under 10 s here)."""

import json

import numpy as np
import pandas as pd

from harness import report
from harness.store.schema import CHECKS, POINTS, RUNS, SAMPLES


def synthetic(points_n: int = 100, checks_per_point: int = 21) -> report.ReportData:
    rng = np.random.default_rng(0)
    batches = [2**k for k in range(10)]
    rows, checks = [], []
    for i in range(points_n):
        b = batches[i % 10]
        size = (500, 1000)[(i // 10) % 2]
        row = dict.fromkeys(POINTS)
        row.update(run_id="r", point_id=f"p{i}", status="ok", dataset="blobs", dataset_size=size, batch_size=b, device="cpu", model="mlp",
                   optimizer="sgd", lr=0.1, lr_policy="constant", sampling="shuffle", repeat=i // 20, steps=500, samples_per_s=2000.0 * b ** 0.8,
                   data_s=1e-5 * b ** 0.3, derivative_s=2e-4 * b ** 0.2, update_s=1e-4, loss_check_s=5e-4, loss_check_total_s=1e-2,
                   step_wall_s=3.2e-4, steps_to_target=int(20 * (1 + 16 / b)), samples_to_target=int(20 * (1 + 16 / b)) * b,
                   time_to_target_s=0.01 * (1 + 16 / b), compute_to_target_s=0.008 * (1 + 16 / b), peak_rss_bytes=4e8 + 5e3 * b, final_eval_loss=0.5)
        rows.append(row)
        for k in range(checks_per_point):
            checks.append({**dict.fromkeys(CHECKS), "run_id": "r", "point_id": f"p{i}", "step": 25 * k, "samples_seen": 25 * k * b,
                           "wall_s": 0.01 * k, "compute_s": 0.009 * k, "eval_loss": 1 / (1 + 0.1 * k * b ** 0.5) + 0.01 * rng.random(), "noise_scale": 10.0 + k})
    runs = pd.DataFrame([{**dict.fromkeys(RUNS), "run_id": "r", "spec_json": json.dumps({"model": "mlp", "dataset": "blobs"}),
                          "env_json": json.dumps({"cpu_count": 2, "device_memory_bytes": {"cpu": 2**34}})}])
    samples = pd.DataFrame([{**dict.fromkeys(SAMPLES), "run_id": "r", "point_id": f"p{i}", "t_s": 0.1 * t, "cpu_pct": 95.0, "rss_bytes": 4e8}
                            for i in range(points_n) for t in range(5)])
    return report.ReportData(runs, pd.DataFrame(rows), pd.DataFrame(checks), samples)


def test_report_of_100_points_takes_seconds(benchmark, verdict):
    data = synthetic()
    html = benchmark.pedantic(report.render, args=(data,), rounds=1 if benchmark.disabled else 3, iterations=1)
    assert html.count("<img ") >= 8
    if not benchmark.disabled:
        verdict("median_s", benchmark.stats.stats.median, 10, higher_is_better=False)
