import json
import time

import numpy as np
import pandas as pd
import pytest

from conftest import plugin
from harness.drivers.capacity import fit_capacity
from harness.analysis.memory import MemoryFit, fit_memory, parse_bytes
from harness.drivers.plan import plan_flags
from harness.run.engine import run_point
from harness.run.sampler import Sampler, ProcessSource, utilisation_by_phase
from harness.run.memory import rss_peak_bytes
from harness.store.sqlite import Store
from harness.drivers.sweep import run_flags, run_sweep

WIDE = (4096, 4096)


@pytest.fixture(scope="module")
def wide_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "wide.npz"
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.standard_normal((2560, 512)).astype(np.float32), y=rng.integers(0, 10, 2560))
    return path


GROUND_TRUTH = """
import json, sys
import psutil, torch
from harness.run.memory import pin_mmap_threshold, release_free_memory, reset_rss_peak, rss_peak_bytes
pin_mmap_threshold()  # every tensor buffer its own mapping: RSS rises and falls with live tensor bytes
torch.set_num_threads(1)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(512, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
X, y = torch.randn(2048, 512), torch.randint(0, 10, (2048,))
def step(batch):
    rows = torch.randint(2048, (batch,))
    torch.nn.functional.cross_entropy(model(X[rows]), y[rows]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
rise = {}
for batch in (64, 2048):
    step(batch); step(batch)
    release_free_memory(); reset_rss_peak(); base = psutil.Process().memory_info().rss
    step(batch)
    rise[batch] = rss_peak_bytes() - base
print(json.dumps((rise[2048] - rise[64]) / (2048 - 64)))
"""


def test_tensor_bytes_per_sample_match_the_kernels_count(cli, wide_data):
    """The MLP 512-4096-4096-10: fit's per-sample bytes and the slope of a sweep's
    peak_device_mem_bytes from B = 64 to 2048 are within 25% of the ground truth: the rise of
    the kernel's peak RSS over one step, in a process where every tensor buffer is its own
    mapping (so RSS is live tensor bytes, not heap)."""
    import subprocess
    import sys

    from conftest import ROOT

    truth = json.loads(subprocess.run([sys.executable, "-c", GROUND_TRUTH], capture_output=True, text=True, cwd=ROOT, timeout=300,
                                      check=True).stdout)
    code, out, err = cli("fit", "--dataset", wide_data, "--model", "mlp", "--hidden", "4096,4096", "--batch-sizes", "64,512,2048",
                         "--memory-limit", "300MiB", "--json")  # a limit the line puts past 4096: the probes stay at these
    assert code == 0, err
    result = json.loads(out)
    assert result["method"].startswith("linear fit of peak_device_mem_bytes")
    assert result["per_sample_bytes"] == pytest.approx(truth, rel=0.25)
    (small,), (large,) = (run_flags(dataset=str(wide_data), hidden="4096,4096", batch_sizes=b, dataset_sizes=2560, steps=3, devices="cpu")
                          for b in (64, 2048))
    slope = (large.row["peak_device_mem_bytes"] - small.row["peak_device_mem_bytes"]) / (2048 - 64)
    assert slope == pytest.approx(truth, rel=0.25)
    limit = 300 * 2**20
    predicted = result["fixed_bytes"] + result["per_sample_bytes"] * result["max_batch_size"]
    assert result["limit_bytes"] == limit and predicted <= 0.9 * limit < predicted + result["per_sample_bytes"]


def test_training_peaks_leave_out_the_loss_checks(tmp_path):
    """A model whose eval-mode forward holds 1 GiB: its training peaks are those of the same
    model without it (within 256 MiB); the gigabyte shows in the check peak."""
    flags = dict(dataset="blobs", dataset_sizes=400, batch_sizes=32, steps=40, check_every=10, devices="cpu", sample_interval=0)
    (plain,) = run_flags(model=plugin("plain_linear"), **flags)
    (hog,) = run_flags(model=plugin("eval_hog"), **flags)
    assert plain.status == hog.status == "ok"
    assert hog.row["peak_device_mem_bytes"] == plain.row["peak_device_mem_bytes"]
    assert abs(hog.row["peak_rss_bytes"] - plain.row["peak_rss_bytes"]) < 256 * 2**20
    assert hog.row["check_peak_rss_bytes"] > plain.row["peak_rss_bytes"] + 900 * 2**20


def test_peaks_reset_between_points(tmp_path):
    """A small point after a big one reports a small peak: the value does not only grow."""
    p = plan_flags(dataset="mnist-like", dataset_sizes=2560, batch_sizes="2048,16", hidden=2048, steps=3, devices="cpu")
    points = sorted(p.points, key=lambda point: -point.batch_size)  # the big one first
    big, small = (run_point(point, p.workload(point)).row for point in points)
    assert small["peak_rss_bytes"] < big["peak_rss_bytes"] - 20 * 2**20
    assert big["param_bytes"] == big["grad_bytes"] == 4 * big["n_params"] and big["optimizer_state_bytes"] == 0
    assert big["activation_bytes"] == 2048 * (784 + 2048 * 2 + 10 * 1) * 4


def test_optimizer_state_bytes():
    (result,) = run_flags(dataset="blobs", dataset_sizes=200, batch_sizes=8, steps=3, devices="cpu", optimizer="adam")
    point = result.row
    assert point["optimizer_state_bytes"] >= 2 * point["param_bytes"]  # Adam: two moments per parameter


def test_oom_probing_finds_the_limit_and_the_sweep_goes_on():
    the_plan = plan_flags(model=plugin("oom_above_64"), dataset_sizes=200, batch_sizes=1, steps=2, devices="cpu")
    result = fit_capacity(the_plan, [8, 16], limit_bytes=2**30, verify=True)
    assert result.probed_max_batch_size == 64
    statuses = {b: s for b, s, _ in result.probes}
    assert statuses[64] == "ok" and min(b for b, s in statuses.items() if s == "oom") <= 65  # bisected to the edge
    assert result.prediction_error is not None  # the line's prediction, against what ran


def test_probes_move_to_where_the_per_sample_term_dominates():
    """A ResNet-18 (at a quarter of its widths) probed at 1, 2 and 4, where its peak is flat: the
    line through those predicts 2-3x too large a batch; the probes move up until the per-sample
    term dominates and the line stops bending, and the prediction lands within 25% of the batch
    that probing finds. The probed batch is the answer."""
    from harness.analysis.memory import fit_memory

    the_plan = plan_flags(dataset="cifar-like", dataset_sizes=200, model=plugin("resnet18_quarter"), batch_sizes=1, steps=2, devices="cpu")
    result = fit_capacity(the_plan, [1, 2, 4], limit_bytes=128 * 2**20, verify=True)
    given = [(b, p) for b, _, p in result.probes[:3]]
    naive = fit_memory([b for b, _ in given], [p for _, p in given]).max_batch_size(128 * 2**20, 0.0)
    assert naive > 1.5 * result.probed_max_batch_size  # the line through the small probes is far off
    assert abs(result.prediction_error) <= 0.25, result.as_json()
    assert max(b for b, _, _ in result.probes[:len(result.probes) - 1]) > 4 and result.max_batch_size == result.probed_max_batch_size


def test_memory_fit_arithmetic_and_sizes():
    fit = fit_memory([1, 2, 4], [1000 + 10, 1000 + 20, 1000 + 40])
    assert fit.fixed_bytes == pytest.approx(1000) and fit.per_sample_bytes == pytest.approx(10)
    assert fit.max_batch_size(2000, margin=0.1) == 80
    assert MemoryFit(1000, 10, 0, (), ()).max_batch_size(1000) is None
    assert parse_bytes("8GiB") == 8 * 2**30 and parse_bytes("512MB") == 512 * 10**6 and parse_bytes("1024") == 1024


@pytest.mark.parametrize("bad", ["lots", "-1GiB", "8XB"])
def test_bad_memory_limit_is_a_one_line_error(cli, bad):
    code, _, err = cli("fit", "--memory-limit", bad)
    assert code == 2 and "--memory-limit" in err and len(err.strip().splitlines()) == 1


class FakeProbe:
    def __init__(self):
        self.n = 0

    def sample(self):
        self.n += 1
        return {"cpu_pct": 10.0 * self.n, "gpu_util_pct": 50.0}


class BrokenProbe:
    def sample(self):
        raise RuntimeError("driver went away")


def test_monitor_ticks_on_the_shared_clock_and_survives_a_failing_probe():
    ticks = iter([1_000_000_000, 1_100_000_000, 1_300_000_000])
    monitor = Sampler(0.1, [FakeProbe(), BrokenProbe()], origin_ns=1_000_000_000, now_ns=lambda: next(ticks))
    for _ in range(3):
        monitor.tick()
    assert [r["t_s"] for r in monitor.rows] == pytest.approx([0.0, 0.1, 0.3])
    assert [r["cpu_pct"] for r in monitor.rows] == [10.0, 20.0, 30.0]
    assert all(r["gpu_power_w"] is None for r in monitor.rows)


def test_utilisation_is_attributed_to_phases():
    steps = pd.DataFrame({"t_s": [0.0, 1.0], "data_s": [0.1, 0.1], "derivative_s": [0.5, 0.5], "update_s": [0.2, 0.2]})
    samples = pd.DataFrame({"t_s": [0.05, 0.3, 0.7, 0.9, 1.05, 1.5], "gpu_util_pct": [10.0, 90.0, 30.0, 0.0, 20.0, 70.0]})
    means = utilisation_by_phase(samples, steps)
    assert means == {"data": 15.0, "derivative": 80.0, "update": 30.0, "other": 0.0}


def test_psutil_probe_and_samples_in_the_store(tmp_path):
    probe = ProcessSource()
    assert probe.sample()["cpu_pct"] is None  # too soon after the last reading to mean anything
    end = time.perf_counter() + 0.05
    while time.perf_counter() < end:  # busy: this process uses about one core
        pass
    reading = probe.sample()
    assert reading["rss_bytes"] > 10 * 2**20 and 50 <= reading["cpu_pct"] <= 210
    the_plan = plan_flags(dataset="mnist-like", dataset_sizes=1000, batch_sizes=64, steps=150, devices="cpu", sample_interval="10ms")
    with Store(tmp_path / "s.sqlite") as store:
        run_id = run_sweep(the_plan, store, progress=False)
        samples, points, steps = store.load("samples", [run_id]), store.load("points", [run_id]), store.load("steps", [run_id])
    assert len(samples) >= 3 and samples["rss_bytes"].notna().all() and samples["gpu_util_pct"].isna().all()
    assert samples["t_s"].is_monotonic_increasing and steps["t_s"].is_monotonic_increasing
    assert samples["t_s"].iloc[-1] >= steps["t_s"].iloc[-1]  # one clock for both
    assert points.loc[0, "cpu_util_mean_pct"] > 0 and pd.isna(points.loc[0, "gpu_util_mean_pct"])
    assert points.loc[0, "peak_rss_bytes"] >= samples["rss_bytes"].max() * 0.9
    assert rss_peak_bytes() is not None


@pytest.mark.cuda
def test_nvml_probe_reads_a_real_gpu():
    from harness.run.sampler import nvml_source

    probe = nvml_source(0)
    assert probe is not None
    reading = probe.sample()
    assert reading["gpu_mem_bytes"] > 0 and 0 <= reading["gpu_util_pct"] <= 100
