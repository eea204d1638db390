import sys

import numpy as np
import pytest
import torch

from conftest import common_losses, plugin
from harness.workload import models
from harness.store.schema import POINT_COLUMNS
from harness.run.batches import batch_indices
from harness.run.parts import make_loss
from harness.drivers.sweep import run_flags

BASE = {"dataset_sizes": 200, "batch_sizes": 8, "steps": 40, "devices": "cpu"}


def _run(**flags):
    return run_flags(**{**BASE, **flags})


def test_known_cost_forward_is_measured_in_derivative_only():
    import plugins

    (result,) = _run(model=plugin("known_cost"), steps=60, check_every=30)
    point = result.row
    own = sys.modules[models.resolve(plugin("known_cost")).__module__].FORWARD_DURATIONS_S
    cost = plugins.FORWARD_COST_S
    assert point["status"] == "ok"
    # derivative holds the forward's busy-wait, agreeing with the plug-in's own clock
    # (plus the loss and backward of a tiny linear model, well under a millisecond)
    forward = np.median(own[-55:])
    assert cost <= forward <= point["derivative_s"] < forward + 0.001
    # and the other phases do not absorb it
    assert point["data_s"] < cost / 4 and point["update_s"] < cost / 4
    # the phases add up to the step's wall time
    phase_sum = point["data_s"] + point["derivative_s"] + point["update_s"]
    assert phase_sum == pytest.approx(point["step_wall_s"], rel=0.1)
    assert 1 / point["steps_per_s"] == pytest.approx(point["step_wall_s"], rel=0.2)


def test_same_seed_gives_bit_identical_curves_and_data_order():
    a, b = _run(seed=3)[0], _run(seed=3)[0]
    assert [c["eval_loss"] for c in a.checks] == [c["eval_loss"] for c in b.checks]
    assert [c["train_loss"] for c in a.checks] == [c["train_loss"] for c in b.checks]
    first, second = common_losses(a, b)
    assert first == second
    c = _run(seed=4)[0]
    assert [c_["train_loss"] for c_ in a.checks] != [c_["train_loss"] for c_ in c.checks]


def test_data_order_is_seeded_and_every_epoch_is_a_permutation():
    def take(seed, sampling="shuffle", n=10, batch=3, count=20, device=None):
        stream = batch_indices(n, batch, seed, sampling, device)
        return torch.cat([next(stream) for _ in range(count)])

    first = take(1)
    assert torch.equal(first, take(1))
    on = "cuda" if torch.cuda.is_available() else "cpu"  # the resident-data path: the same order, moved per epoch
    assert torch.equal(first, take(1, device=torch.device(on)).cpu())
    assert torch.equal(take(1, "replacement"), take(1, "replacement", device=torch.device(on)).cpu())
    assert not torch.equal(first, take(2))
    for epoch in range(6):  # 60 indices = 6 epochs of 10, each a permutation
        assert sorted(first[epoch * 10 : (epoch + 1) * 10].tolist()) == list(range(10))
    stream = batch_indices(10, 3, 1)
    assert all(len(next(stream)) == 3 for _ in range(50))
    with_replacement = take(1, "replacement")
    assert any(len(set(with_replacement[e * 10 : (e + 1) * 10].tolist())) < 10 for e in range(6))


def test_global_rng_does_not_change_the_data_order():
    torch.manual_seed(123)
    a = next(batch_indices(100, 10, 5))
    torch.manual_seed(456)
    assert torch.equal(a, next(batch_indices(100, 10, 5)))


def test_regression_output_column_does_not_broadcast_against_targets():
    loss = make_loss("regression")
    out = torch.tensor([[1.0], [2.0], [3.0]])
    target = torch.tensor([1.0, 2.0, 5.0])
    assert loss(out, target).item() == pytest.approx(4 / 3)


def test_linreg_regression_learns():
    (result,) = _run(dataset="linreg", model="linear", lr=0.05, steps=200, batch_sizes=16)
    losses = [c["eval_loss"] for c in result.checks]
    assert result.row["n_classes"] is None and losses[-1] < losses[0] / 20


def test_records_steps_checks_and_burn_in():
    (result,) = _run(steps=40, check_every=10, burn_in_steps=5)
    point = result.row
    assert len(result.steps) == 5 + point["timed_steps"] and 0 < point["timed_steps"] <= 35  # every k-th of 35, k from the machine
    assert [s["burn_in"] for s in result.steps[:6]] == [1, 1, 1, 1, 1, 0] and [s["step"] for s in result.steps[:5]] == [0, 1, 2, 3, 4]
    measured = [s["step"] for s in result.steps[5:]]  # after the burn-in: the multiples of k
    k = measured[1] - measured[0] if len(measured) > 1 else measured[0]
    assert measured == list(range(-(-5 // k) * k, 40, k))
    assert [c["step"] for c in result.checks] == [0, 10, 20, 30, 40]
    assert point["steps"] == 40 and point["samples_seen"] == 320 and point["burn_in_steps"] == 5
    assert point["timing_mode"] == "cpu" and point["threads"] == 1
    assert all(c["compute_s"] <= c["wall_s"] for c in result.checks)
    # wall time minus compute time at the last check is the time of all five checks: the total
    last = result.checks[-1]
    assert point["loss_check_total_s"] == pytest.approx(last["wall_s"] - last["compute_s"], rel=1e-9)
    assert 0 < point["loss_check_s"] <= point["loss_check_total_s"] / 3  # the median of 5 positive times


def test_every_row_has_exactly_the_declared_columns():
    """An ok point, a failed point and a skipped one: the same keys, the declaration's."""
    (ok,) = _run(steps=10)
    (failed,) = _run(model=plugin("broken"), steps=10)
    (skipped,) = _run(steps=10, batch_sizes=3, world_sizes=2)
    for result in (ok, failed, skipped):
        assert list(result.row) == list(POINT_COLUMNS), result.status
    assert failed.status == "error" and failed.row["samples_per_s"] is None and failed.row["wall_s"] is None
    assert skipped.status == "skipped"


def test_the_loop_reads_the_clock_only_on_timed_steps():
    """What the loop does per step, counted: the overhead promise in a form that can fail on
    any machine. Untimed steps read no clock; a timed step reads it 5 times (its marks); a
    check adds a fixed few. 200 steps against 100, a check every 50."""
    import time

    from harness.drivers.plan import plan_flags
    from harness.run.engine import run_point

    def reads(steps):
        the_plan = plan_flags(**{**BASE, "steps": steps, "check_every": 50, "sample_interval": 0})
        (point,) = the_plan.points
        calls = [0]

        def counting_clock():
            calls[0] += 1
            return time.perf_counter_ns()

        result = run_point(point, the_plan.workload(point), now_ns=counting_clock)
        assert result.status == "ok" and result.row["timed_steps"] == len(result.steps) - point.burn_in_steps
        return calls[0], len(result.steps)

    (long_reads, long_timed), (short_reads, short_timed) = reads(200), reads(100)
    # 100 more steps: 5 reads per timed step among them, and two checks of 9 reads (the pause's
    # start and end, the window-closing mark, the check's start and end, and the memory-peak
    # reads set aside)
    assert long_reads - short_reads == 5 * (long_timed - short_timed) + 2 * 9


def test_sampled_timing_times_every_kth_step_and_throughput_counts_them_all():
    from harness.run.clock import MARK_BUDGET, MARK_COST_FLOOR_S, MARKS_PER_STEP, PhaseClock, sample_every

    host = MARK_COST_FLOOR_S["cpu"]  # a host clock read costs a loop at least 3 us, whatever a tight loop shows
    assert PhaseClock("cpu").mark_cost_s() >= host and MARK_COST_FLOOR_S["events"] >= 25e-6  # an event record: 25-40 us in a loop on an H100
    assert sample_every(host, 1.5e-3) == 1  # against a 1.5 ms step
    assert sample_every(host, 3e-4) == 5
    assert sample_every(30e-6, 3e-4) == 50  # a CUDA event record against a 300 us launch-bound step
    assert sample_every(30e-6, None) == 1
    assert sample_every(host, 3e-4, multiple_of=8) == 8 and sample_every(30e-6, 3e-4, multiple_of=8) == 56  # onto the loss reads
    assert sample_every(host, 1.5e-3, multiple_of=8) == 1  # every step stays every step
    assert sample_every(host, 7e-4, multiple_of=8) == 4 and sample_every(host, 1e-3, multiple_of=8) == 2  # divisors below it
    k = sample_every(30e-6, 3e-4)
    assert MARKS_PER_STEP * 30e-6 / (k * 3e-4) == pytest.approx(MARK_BUDGET)  # just inside the budget
    import harness.run.engine as engine

    original = engine.sample_every
    engine.sample_every = lambda cost, step, multiple_of=1: 7
    try:
        (result,) = _run(steps=100, burn_in_steps=5, check_every=25)
    finally:
        engine.sample_every = original
    assert [s["step"] for s in result.steps] == [0, 1, 2, 3, 4] + list(range(7, 100, 7))  # after the burn-in, the multiples of k
    assert result.row["timed_steps"] == len(range(7, 100, 7)) and result.row["steps"] == 100
    assert result.row["samples_per_s"] == pytest.approx(8 * result.row["steps_per_s"]) and result.row["derivative_s"] > 0


def test_k_comes_from_the_burn_in_steps_under_the_default_check_schedule(monkeypatch):
    """The default ``log:`` schedule checks after every burn-in step, so the window closed
    last before the measured window is empty: k must still come from the burn-in's steps
    (it once fell back to timing every step, marks costing several % of a small step)."""
    import harness.run.engine as engine

    asked = []
    real = engine.sample_every
    monkeypatch.setattr(engine, "sample_every", lambda cost, step, multiple_of: asked.append((cost, step, multiple_of)) or real(cost, step, multiple_of))
    (result,) = _run(steps=200, burn_in_steps=5)
    assert result.row["check_every"].startswith("log:") and [c["step"] for c in result.checks][:6] == [0, 1, 2, 3, 4, 5]
    ((cost_s, step_s, multiple_of),) = asked
    assert step_s is not None and step_s > 0
    k = real(cost_s, step_s, multiple_of)
    assert result.row["timed_steps"] == len(range(-(-5 // k) * k, 200, k))
    # timed steps and the every-8th loss reads share a grid: k divides 8 or is a multiple of it
    assert 8 % k == 0 or (k % 8 == 0 and all(s["batch_loss"] is not None for s in result.steps))


@pytest.mark.parametrize("check_every", [10, "log:12"])
def test_the_burn_in_moves_neither_the_losses_read_nor_which_steps_are_timed(check_every):
    """Which batch losses are read (every 8th step and the last before each check) and which
    steps are timed (every burn-in step, then the multiples of k) are rules on the step number:
    with 5 burn-in steps or 8, the same training gives the same train_loss at every check."""
    from harness.run.schedule import timed_steps

    runs = {n: _run(steps=60, check_every=check_every, burn_in_steps=n)[0] for n in (5, 8)}
    assert [c["train_loss"] for c in runs[5].checks] == [c["train_loss"] for c in runs[8].checks]
    assert [c["eval_loss"] for c in runs[5].checks] == [c["eval_loss"] for c in runs[8].checks]
    for burn_in, result in runs.items():
        measured = [s["step"] for s in result.steps if not s["burn_in"]]
        k = measured[1] - measured[0] if len(measured) > 1 else 60
        assert [s["step"] for s in result.steps] == timed_steps(60, burn_in, k)
        read = {s["step"] for s in result.steps if s["batch_loss"] is not None}
        assert all(s in read for s in range(0, 60, 8) if s in measured or s < burn_in)


def test_a_short_point_still_times_a_measured_step():
    from harness.run.schedule import fit_window

    assert fit_window(56, 5, 40) == 32 and fit_window(56, 5, 100) == 56 and fit_window(16, 5, 12) == 8 and fit_window(8, 5, 7) == 2
    assert fit_window(4, 3, 4) == 1 and fit_window(2**62, 5, 600) == 592 and fit_window(2**62, 5, 100) == 96


def test_auto_checks_stay_within_their_share_of_a_point():
    """A check worth ten steps: ``auto`` spaces 200 steps' checks out from 40 to 5, so the checks
    take about a fifth of the point, not two thirds; a schedule the user gave is kept as given,
    and cheap checks (the default sweep's) follow the fine schedule, every interval within 5% of
    its end (or one step), so steps to target need no refining."""
    from harness.run.refine import resolved
    from harness.run.schedule import CHECK_SHARE, fine_count

    (auto,) = _run(model=plugin("costly_check"), steps=200, sample_interval=0, noise_samples=0)
    assert auto.row["check_every"] == "log:40" and auto.row["check_every_run"] == "log:5" and len(auto.checks) == 6  # step 0 and 5
    share = auto.row["loss_check_total_s"] / auto.row["wall_s"]
    assert share <= CHECK_SHARE + 0.05, share
    (given,) = _run(model=plugin("costly_check"), steps=20, check_every="log:40", sample_interval=0)
    assert given.row["check_every"] == "log:40" and given.row["check_every_run"] is None and len(given.checks) == 21
    (cheap,) = _run(steps=300)
    assert cheap.row["check_every_run"] == f"log:{fine_count(300)}" and len(cheap.checks) == fine_count(300) + 1
    marks = [c["step"] for c in cheap.checks]
    assert all(resolved(a, b) for a, b in zip(marks, marks[1:])), marks


def test_a_loss_that_grows_tenfold_is_diverged_and_stops():
    (result,) = _run(lr=200, steps=200, check_every=10, dataset="digits", dataset_sizes=400)
    assert result.status == "diverged" and "more than 10x" in result.row["error"], result.row["error"]
    assert result.row["steps"] < 200 and result.row["samples_per_s"] is None


def test_epoch_check_schedule():
    (result,) = _run(check_every="epoch", steps=55, batch_sizes=32)  # 160 train samples: 5 steps an epoch
    assert [c["step"] for c in result.checks] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]


def test_diverging_loss_is_a_status_not_a_crash():
    (result,) = _run(model=plugin("exploding"), steps=60, check_every=10)
    assert result.status == "diverged"
    assert "inf" in result.row["error"] or "nan" in result.row["error"]
    assert result.checks and result.row.get("samples_per_s") is None  # partial curve kept, no made-up numbers


def test_oom_and_user_errors_are_statuses(tmp_path):
    results = _run(model=plugin("oom_above_64"), batch_sizes="32,128", steps=10)
    assert [r.status for r in results] == ["ok", "oom"]
    assert "OutOfMemoryError" in results[1].row["error"]
    (broken,) = _run(model=plugin("broken"), steps=10)
    assert broken.status == "error" and "bug in user model" in broken.row["error"]


def test_dataloader_sees_the_same_batches_as_tensor_indexing():
    tensor = _run(loader="tensor")[0]
    loader = _run(loader="dataloader")[0]
    assert [c["train_loss"] for c in tensor.checks] == [c["train_loss"] for c in loader.checks]
    first, second = common_losses(tensor, loader)
    assert first == second
    assert loader.row["loader"] == "dataloader"


@pytest.mark.parametrize("model,dataset", [("cnn", "digits"), ("mlp", "mnist-like"), ("linear", "blobs")])
def test_builtin_models_train_on_builtin_data(model, dataset):
    (result,) = _run(model=model, dataset=dataset, steps=30, dataset_sizes=300)
    assert result.status == "ok" and result.row["samples_per_s"] > 0


def test_noisy_means_the_median_is_uncertain_not_that_steps_jitter():
    from harness.measures.stats import median_uncertainty

    (steady,) = _run(model=plugin("steady"), steps=200, check_every=200, sample_interval=0)
    (coin,) = _run(model=plugin("one_or_three_ms"), steps=200, check_every=200, sample_interval=0)
    assert "noisy" not in (steady.row["flags"] or "") and steady.row["step_wall_ci_pct"] < 10
    assert "noisy" in coin.row["flags"] and coin.row["step_wall_ci_pct"] > 10
    # jitter alone: steps spread +-30% around a stable median are not noisy
    rng = np.random.default_rng(0)
    assert median_uncertainty(1e-4 * (1 + 0.3 * rng.uniform(-1, 1, 500))) < 0.05
    assert median_uncertainty([1e-3] * 10) is None  # too few steps to say


def test_a_point_leaves_torchs_thread_count_as_the_caller_had_it():
    import torch

    torch.set_num_threads(2)
    (result,) = _run(steps=10, threads=1)
    assert result.row["threads"] == 1 and torch.get_num_threads() == 2

