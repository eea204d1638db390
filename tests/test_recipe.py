"""The training recipe users train with: AdamW with weight decay and betas, a learning-rate
schedule, gradient clipping and gradient accumulation, each recorded per point."""

import math
import sqlite3

import pandas as pd
import pytest
import torch

from conftest import plugin
from harness.drivers.sweep import run_flags
from harness.run.step import Recipe, derivative_of, lr_factor, update_of

RECIPE = {"optimizer": "adamw", "weight_decay": 0.05, "betas": "0.9,0.95", "eps": 1e-6, "warmup_steps": 4, "lr_schedule": "cosine",
          "lr_floor": 0.1, "grad_clip": 1.0}


def test_a_resnet_trains_with_the_whole_recipe_and_every_option_is_recorded(cli, tmp_path):
    store = tmp_path / "r.sqlite"
    code, _, err = cli("run", "--dataset", "cifar-like", "--dataset-sizes", "96", "--model", plugin("resnet18_quarter"), "--devices", "cpu",
                       "--batch-sizes", "8,32", "--steps", "12", "--lr", "0.003", "--optimizer", "adamw", "--weight-decay", "0.05",
                       "--betas", "0.9,0.95", "--eps", "1e-6", "--warmup-steps", "4", "--lr-schedule", "cosine", "--lr-floor", "0.1",
                       "--grad-clip", "1", "--micro-batch-size", "8", "--check-every", "6", "--store", store, "--no-report", "--quiet")
    assert code == 0, err
    with sqlite3.connect(store) as conn:
        points = pd.read_sql("SELECT * FROM points", conn).set_index("batch_size")
    assert (points["status"] == "ok").all()
    assert set(points["optimizer"]) == {"adamw"} and set(points["weight_decay"]) == {0.05} and set(points["betas"]) == {"0.9,0.95"}
    assert set(points["eps"]) == {1e-6} and set(points["lr_schedule"]) == {"cosine"} and set(points["lr_floor"]) == {0.1}
    assert set(points["grad_clip"]) == {1.0} and set(points["lr_warmup_steps"]) == {4}
    assert pd.isna(points.loc[8, "micro_batch_size"]) and points.loc[8, "accumulation_steps"] == 1  # M >= B: no accumulation
    assert points.loc[32, "micro_batch_size"] == 8 and points.loc[32, "accumulation_steps"] == 4


def _checks(**flags):
    (result,) = run_flags(dataset_sizes=300, batch_sizes=64, steps=30, devices="cpu", check_every=5, lr=0.2, momentum=0.9, **flags)
    assert result.row["status"] == "ok", result.row["error"]
    return [c["eval_loss"] for c in result.checks]


@pytest.mark.parametrize("micro", [16, 24])
def test_accumulation_gives_the_trajectory_of_the_whole_batch(micro):
    """Micro-batches of 16 (and of 24: 24 + 24 + 16) weighted by their share of the batch: the
    same gradients as the whole batch of 64, so the same losses at every check (an MLP: no batch
    norm, no dropout)."""
    whole, accumulated = _checks(), _checks(micro_batch_size=micro)
    assert len(whole) == len(accumulated) >= 6 and whole[-1] < whole[0]
    assert accumulated == pytest.approx(whole, rel=1e-4)


def test_batch_norm_breaks_the_equivalence_as_documented():
    """Batch statistics over 16 rows are not those over 64: accumulation changes the training."""
    whole = _checks(model=plugin("with_batchnorm"))
    accumulated = _checks(model=plugin("with_batchnorm"), micro_batch_size=16)
    assert accumulated != pytest.approx(whole, rel=1e-4)


def test_the_schedule_warms_up_then_decays_to_its_floor_at_the_last_step():
    steps, warm = 100, 10
    cosine = [lr_factor(s, warm, "cosine", steps, 0.1) for s in range(steps)]
    linear = [lr_factor(s, warm, "linear", steps, 0.0) for s in range(steps)]
    assert cosine[0] == pytest.approx(0.1) and cosine[warm - 1] == 1.0 and cosine[warm] == 1.0
    assert cosine[-1] == pytest.approx(0.1) and linear[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(cosine[warm:], cosine[warm + 1:]))
    mid = warm + (steps - warm - 1) // 2
    assert cosine[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (mid - warm) / (steps - warm - 1))))
    assert [lr_factor(s, 0, "constant", steps, 0.5) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]


def test_the_update_sets_each_steps_rate_and_clips_the_global_norm():
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    update = update_of(optimizer, recipe=Recipe(warmup_steps=2, schedule="linear", steps=4, floor=0.0, grad_clip=0.01))
    before = [p.detach().clone() for p in model.parameters()]
    loss = (model(torch.full((8, 4), 100.0)) ** 2).mean()  # a huge gradient
    loss.backward()
    update(0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)  # half-way through the warm-up
    moved = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert moved.item() == pytest.approx(0.25 * 0.01, rel=1e-4)  # lr x the clipped norm


def test_an_accumulated_batch_returns_the_batch_mean_loss():
    torch.manual_seed(0)
    model, xb, yb = torch.nn.Linear(3, 2), torch.randn(10, 3), torch.randint(0, 2, (10,))
    loss_fn = torch.nn.functional.cross_entropy
    assert derivative_of(model, loss_fn, micro_batch_size=4)(xb, yb).item() == pytest.approx(loss_fn(model(xb), yb).item(), rel=1e-6)


@pytest.mark.parametrize("flag, value, words", [
    ("--betas", "0.9", "--betas: '0.9' is not two numbers"),
    ("--betas", "0.9,1.5", "--betas"),
    ("--micro-batch-size", "0", "--micro-batch-size: '0' is not allowed"),
    ("--lr-schedule", "step", "--lr-schedule: 'step' is not one of constant, cosine, linear"),
    ("--grad-clip", "-1", "--grad-clip"),
    ("--optimizer", "lamb", "--optimizer: 'lamb' is not one of sgd, adam, adamw"),
])
def test_a_bad_recipe_value_is_one_line_naming_its_flag(cli, tmp_path, flag, value, words):
    code, _, err = cli("run", "--devices", "cpu", flag, value, "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1 and words in err


def test_micro_batch_auto_on_the_cpu_is_the_whole_batch():
    (result,) = run_flags(dataset_sizes=200, batch_sizes=32, steps=10, devices="cpu", micro_batch_size="auto")
    assert result.row["micro_batch_size"] is None and result.row["accumulation_steps"] == 1
