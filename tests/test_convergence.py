"""Convergence science on seeded CPU workloads: deterministic step counts, not wall clock."""

import numpy as np
import pandas as pd
import pytest

from conftest import plugin
from harness.analysis.convergence import best_trials, fit_critical_batch
from harness.measures.noise_scale import GradientMoments, b_simple
from harness.drivers.plan import plan_flags
from harness.run.engine import run_point
from harness.config.points import expand
from harness.config.policies import DataInfo
from harness.config.spec import build_spec
from harness.store.sqlite import Store
from harness.drivers.sweep import run_flags


def _points(**flags):
    return run_flags(**{"devices": "cpu", "burn_in_steps": 0, **flags})


def test_tuned_steps_to_target_follow_the_critical_batch_shape():
    """Shallue et al.: with the learning rate tuned per batch size, steps-to-target fall as
    1/B for small batches (perfect scaling) and flatten for large ones (McCandlish's
    S = S_min (1 + B_crit / B))."""
    grid = ",".join(f"{2 ** (k / 2):.5g}" for k in range(-9, 1))  # 0.044 .. 1, factor sqrt(2)
    results = _points(
        dataset="linreg", model="linear", dataset_sizes=1000, batch_sizes="1..128", steps=1000, check_every=1,
        lr_policy="tuned", lr_grid=grid, target_loss=0.013, stop_at_target="true",
    )
    points = pd.DataFrame([r.row for r in results])
    best = best_trials(points[points["status"] == "ok"]).sort_values("batch_size")
    steps = best["steps_to_target"].to_numpy(dtype=float)
    samples = best["samples_to_target"].to_numpy(dtype=float)
    assert list(best["batch_size"]) == [1, 2, 4, 8, 16, 32, 64, 128] and np.isfinite(steps).all()
    ratios = steps[1:] / steps[:-1]
    assert (ratios <= 1.10).all(), ratios  # steps never rise by more than 10%
    assert (samples[1:] / samples[:-1] >= 0.90).all()  # samples never fall by more than 10%
    assert ratios[0] <= 0.6  # smallest batches: doubling B about halves the steps
    assert ratios[-1] >= 0.85  # largest: barely changes
    fit = fit_critical_batch(best["batch_size"], steps)
    assert fit.rms_log_error <= 0.15
    assert 1 < fit.b_crit < 128 and fit.e_min == pytest.approx(fit.b_crit * fit.s_min)
    # the best learning rate is inside the grid, not at its edge, for every batch size
    assert best["lr"].max() < 1.0 and best["lr"].min() > 0.045


def test_full_batch_shuffle_repeats_are_identical_and_replacement_repeats_are_not():
    common = dict(dataset="blobs", dataset_sizes=250, batch_sizes="full", steps=30, check_every=5, repeats=3)
    shuffled = _points(sampling="shuffle", **common)
    curves = np.array([[c["eval_loss"] for c in r.checks] for r in shuffled])
    assert {r.row["seed"] for r in shuffled} == {0, 1, 2}
    assert np.abs(curves - curves[0]).max() < 1e-6
    replaced = _points(sampling="replacement", **common)
    curves = np.array([[c["eval_loss"] for c in r.checks] for r in replaced])
    assert np.abs(curves - curves[0]).max() > 1e-4


def _exact_noise_scale_at_zero(split):
    """Per-example gradients of the MSE at w = 0, b = 0 over the whole training set:
    g_i = -2 y_i [x_i, 1]."""
    X = split.X_train.double().numpy()
    y = split.y_train.double().numpy()
    grads = -2 * y[:, None] * np.c_[X, np.ones(len(y))]
    mean = grads.mean(0)
    trace = ((grads - mean) ** 2).sum(1).mean()
    return trace / (mean @ mean)


@pytest.mark.parametrize("model,tolerance", [("zero_linear", 0.10)])
def test_noise_scale_at_step_0_matches_the_exact_value(model, tolerance):
    flags = dict(dataset="linreg", model=plugin(model), dataset_sizes=5000, batch_sizes=8, steps=10, noise_samples=1024)
    p = plan_flags(**flags, devices="cpu")
    (run,) = p.points
    split = p.split(run)
    result = run_point(run, p.workload(run))
    exact = _exact_noise_scale_at_zero(split)
    estimate = result.checks[0]["noise_scale"]
    assert run.noise_samples == 1024 < run.train_size == 4000
    assert estimate == pytest.approx(exact, rel=tolerance)
    assert result.checks[0]["noise_scale_s"] > 0 and result.row["noise_scale_total_s"] > 0
    assert result.row["noise_scale"] == result.checks[-1]["noise_scale"]


def test_noise_scale_leaves_training_untouched_and_falls_back_without_vmap():
    base = dict(dataset="blobs", dataset_sizes=400, batch_sizes=16, steps=40, check_every=10)
    off, on = _points(**base, noise_samples=0)[0], _points(**base, noise_samples=256)[0]
    assert [c["train_loss"] for c in off.checks] == [c["train_loss"] for c in on.checks]
    assert off.checks[0]["noise_scale"] is None and on.checks[0]["noise_scale"] > 0
    (bn,) = _points(**base, model=plugin("with_batchnorm"), noise_samples=256)
    assert bn.status == "ok" and bn.checks[0]["noise_scale"] is not None


def test_b_simple_needs_the_without_replacement_correction():
    # Sampling the whole population (n = N) the mean gradient is exact: no correction.
    assert b_simple(GradientMoments(100, 100, 4.0, 8.0, "x")) == pytest.approx(2.0)
    # With n < N the noise in the mean is removed from |G|^2.
    assert b_simple(GradientMoments(10, 100, 4.0, 8.0, "x")) == pytest.approx(8.0 / (4.0 - 0.09 * 8.0))
    assert b_simple(GradientMoments(10, 100, 0.5, 8.0, "x")) is None  # the signal is lost in the noise


def test_fit_recovers_a_known_hyperbola():
    B = np.array([1, 2, 4, 8, 16, 32, 64, 128])
    fit = fit_critical_batch(B, 40 * (1 + 12 / B))
    assert fit.b_crit == pytest.approx(12, rel=1e-3) and fit.s_min == pytest.approx(40, rel=1e-3) and fit.rms_log_error < 1e-6
    assert fit_critical_batch([4], [10]) is None


def test_lr_policies_scale_from_the_base_batch_size():
    def lrs(policy, **extra):
        spec = build_spec(cli_values={"lr_policy": policy, "lr": "0.1", "base_batch_size": "4", "batch_sizes": "1,4,16", "dataset_sizes": "100", **extra})
        return {(r.batch_size, r.lr) for r in expand(spec, DataInfo(100, None), ["cpu"])}

    assert lrs("constant") == {(1, 0.1), (4, 0.1), (16, 0.1)}
    assert lrs("linear") == {(1, 0.025), (4, 0.1), (16, 0.4)}
    assert {(b, round(lr, 6)) for b, lr in lrs("sqrt")} == {(1, 0.05), (4, 0.1), (16, 0.2)}
    assert len(lrs("tuned", lr_grid="0.01,0.1")) == 6


def test_lr_warmup_ramps_the_learning_rate():
    flags = dict(dataset="linreg", model=plugin("zero_linear"), dataset_sizes=200, batch_sizes="full", steps=3, check_every=1, lr=0.1)
    cold = _points(**flags)[0]
    warm = _points(**flags, warmup_steps=100)[0]
    # with warm-up the first steps move 1/100, 2/100 of the way: the loss barely falls
    assert warm.checks[1]["eval_loss"] > cold.checks[1]["eval_loss"]
    assert warm.row["lr_warmup_steps"] == 100


def test_relative_target_and_analyze_from_the_store(tmp_path, cli):
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", "--dataset", "linreg", "--model", "linear", "--dataset-sizes", "400", "--batch-sizes", "2,8,32,full",
                       "--steps", "150", "--check-every", "5", "--target", "rel:0.05", "--noise-samples", "128", "--repeats", "2", "--devices", "cpu", "--quiet", "--store", store)
    assert code == 0, err
    with Store(store) as s:
        points = s.load("points")
    assert points["target_rel"].eq(0.05).all() and points["target_loss"].notna().all()
    assert points["target_loss"].nunique() == 1  # one L_ref and one L_0 (shared initial weights) per dataset size
    assert points["steps_to_target"].notna().sum() >= 6
    code, out, _ = cli("analyze", "--store", store)
    assert code == 0
    assert "fit S(B) = S_min (1 + B_crit/B): B_crit =" in out and "other bests: by wall time to the target check" in out
    assert "noise scale B_simple:" in out and "[" in out  # repeats give confidence intervals
    code, out, _ = cli("analyze", "--store", store, "--json")
    import json

    (group,) = json.loads(out)
    assert group["fit"]["b_crit"] > 0 and len(group["batch_sizes"]) == 4


def test_accuracy_target_and_bad_target_input(cli, tmp_path):
    (result,) = _points(dataset="blobs", dataset_sizes=500, batch_sizes=16, steps=200, check_every=10, target_accuracy=0.6, stop_at_target="true")
    hit = result.row["steps_to_target"]  # refined between the checks at 10 and 20; the point then runs on for its step time
    assert hit is not None and result.row["steps_to_target_low"] == hit and hit < result.row["steps"] < 200
    assert result.row["timed_steps"] >= 20
    assert result.checks[-1]["eval_acc"] >= 0.6 and result.row["samples_per_s"] is not None
    store = tmp_path / "s.sqlite"
    for args, field in ((["--target", "rel:2"], "--target"), (["--target-loss", "0.1", "--target", "rel:0.1"], "--target"),
                        (["--stop-at-target"], "--stop-at-target"), (["--dataset", "linreg", "--target-accuracy", "0.9"], "--target-accuracy"),
                        (["--lr-policy", "cosine"], "--lr-policy"), (["--sampling", "shuffle,bootstrap"], "--sampling")):
        code, _, err = cli("run", "--store", store, "--quiet", *args)
        assert code == 2 and field in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not store.exists()


def test_a_batch_size_between_two_tied_ones_is_tied_too():
    """Training time against batch size has one valley: a slower reading between two tied batch
    sizes is a load spike on that point, so the tied set has no holes."""
    from harness.analysis.uncertainty import tied

    def t(s, spread=0.05):
        return {"train_s": s, "train_low_s": s * (1 - spread), "train_high_s": s * (1 + spread)}

    times = {4: t(1.02), 8: t(1.6), 16: t(1.0), 32: t(1.04), 64: t(2.0), 128: t(3.0)}
    assert tied(times) == (16, [4, 8, 16, 32])
    assert tied({8: t(1.0), 16: t(2.0)}) == (8, [8])


def test_a_best_without_an_interval_is_tied_with_itself():
    from harness.analysis.uncertainty import tied

    nan = float("nan")
    assert tied({8: {"train_s": 1.0, "train_low_s": nan, "train_high_s": nan}, 16: {"train_s": 2.0, "train_low_s": 1.9, "train_high_s": 2.1}}) == (8, [8])
