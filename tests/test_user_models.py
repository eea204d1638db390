"""Models as users have them: a LightningModule's own recipe, a Hugging Face output object.
Skipped only where the package is missing (CI installs the test extra, which has both)."""

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

USER_MODELS = Path(__file__).resolve().parent / "user_models.py"


def model(name: str) -> str:
    return f"{USER_MODELS}:{name}"


def _points(store) -> pd.DataFrame:
    with sqlite3.connect(store) as conn:
        return pd.read_sql("SELECT * FROM points", conn)


def _lightning_installed() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in ("lightning", "pytorch_lightning"))


lightning_only = pytest.mark.skipif(not _lightning_installed(), reason="needs lightning or pytorch-lightning (the test extra)")


@lightning_only
def test_a_lightning_module_trains_with_its_own_optimizer_and_schedule(cli, tmp_path):
    store = tmp_path / "l.sqlite"
    code, _, err = cli("run", "--devices", "cpu", "--dataset-sizes", "400", "--batch-sizes", "16,64", "--steps", "60",
                       "--model", model("lightning_mlp"), "--noise-samples", "64", "--store", store, "--no-report", "--quiet")
    assert code == 0, err
    points = _points(store)
    assert (points["status"] == "ok").all()
    assert set(points["optimizer"]) == {"adamw"} and set(points["lr"]) == {0.01} and set(points["weight_decay"]) == {0.02}
    assert set(points["betas"]) == {"0.9,0.95"} and set(points["lr_schedule"]) == {"CosineAnnealingLR/step"}
    assert (points["final_eval_loss"] < 1.5).all() and points["noise_scale"].notna().all()  # from 2.3 (ten classes)


@lightning_only
def test_a_flag_that_contradicts_the_lightning_recipe_is_one_line(cli, tmp_path):
    code, _, err = cli("run", "--devices", "cpu", "--model", model("lightning_mlp"), "--lr-schedule", "cosine", "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1 and "--lr-schedule" in err and "LightningModule" in err


@lightning_only
def test_the_lightning_schedule_steps_every_update():
    from harness.drivers.sweep import run_flags

    (result,) = run_flags(dataset_sizes=300, batch_sizes=32, steps=60, devices="cpu", model=model("lightning_mlp"), check_every=30)
    assert result.row["status"] == "ok"
    # after 60 cosine steps with T_max=60 the rate is at its floor: the last checks barely move
    losses = [c["eval_loss"] for c in result.checks]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["hf_gpt2", "hf_gpt2_with_loss"])
def test_a_hugging_face_output_object_trains_checks_and_scores(cli, tmp_path, name):
    pytest.importorskip("transformers")
    store = tmp_path / "g.sqlite"
    code, _, err = cli("run", "--devices", "cpu", "--dataset", "text", "--dataset-sizes", "256", "--batch-sizes", "16", "--steps", "40",
                       "--optimizer", "adamw", "--lr", "0.003", "--model", model(name), "--check-every", "10", "--noise-samples", "32",
                       "--store", store, "--no-report", "--quiet")
    assert code == 0, err
    (point,) = _points(store).to_dict("records")
    assert point["status"] == "ok", point["error"]
    with sqlite3.connect(store) as conn:
        checks = pd.read_sql("SELECT step, eval_loss, eval_acc FROM checks ORDER BY step", conn)
    assert checks["eval_loss"].iloc[-1] < checks["eval_loss"].iloc[0] - 0.5  # a falling loss
    if name == "hf_gpt2":
        assert checks["eval_acc"].notna().all()  # accuracy read from the output's logits


@lightning_only
def test_lightning_accuracy_and_recipe_are_the_modules_own(cli, tmp_path):
    """Accuracy comes from the module's own forward (inside its training_step), and the answer
    and the report describe the recipe the points recorded: AdamW with weight decay, the
    OneCycleLR's peak rate, never the spec's sgd/constant defaults."""
    store, report = tmp_path / "o.sqlite", tmp_path / "o.html"
    code, out, err = cli("run", "--devices", "cpu", "--dataset-sizes", "400", "--batch-sizes", "16,64", "--steps", "150",
                         "--model", model("lightning_onecycle"), "--store", store, "--report", report)
    assert code == 0, err
    points = _points(store)
    assert set(points["lr"]) == {0.003} and set(points["lr_schedule"]) == {"OneCycleLR/step"}  # the peak (max_lr), not its 0.00012 start
    assert points["final_eval_acc"].notna().all() and (points["final_eval_acc"] > 0.5).all()
    answer = [line for line in out.splitlines() if "batch size" in line][-1]
    recipe = "peak lr 0.003 with its OneCycleLR stepped every step"
    assert "adamw (weight decay 0.05" in answer and recipe in answer, answer  # (OneCycleLR cycles Adam's beta1: recorded as it started)
    assert "constant" not in answer and "sgd" not in answer
    import re

    page = re.sub(r"base64,[A-Za-z0-9+/=]+", "", report.read_text())  # the words, not the figures' bytes
    assert recipe in page and "lr policy constant" not in page and "sgd" not in page


@lightning_only
def test_tune_searches_batch_sizes_with_the_modules_own_recipe(cli, tmp_path):
    """AdamW + a per-step cosine: tune trains every trial with the module's optimizer and
    scheduler, its rates times sqrt(B / --base-batch-size)."""
    store = tmp_path / "t.sqlite"
    code, out, err = cli("tune", "--devices", "cpu", "--dataset-sizes", "400", "--batch-sizes", "8..128", "--steps", "120", "--target-loss", "0.6",
                         "--model", model("lightning_mlp"), "--base-batch-size", "16", "--store", store, "--no-report")
    assert code == 0, err
    points = _points(store)
    assert set(points["optimizer"]) == {"adamw"} and set(points["lr_schedule"]) == {"CosineAnnealingLR/step"}
    for row in points.to_dict("records"):
        assert row["lr_scale"] == pytest.approx((row["batch_size"] / 16) ** 0.5) or (row["batch_size"] == 16 and row["lr_scale"] is None)
        assert row["lr"] == pytest.approx(0.01 * (row["lr_scale"] or 1.0))
    assert set(points["lr_policy"]) == {"sqrt"} and "scaled with the batch size by the sqrt rule (adamw (weight decay 0.02, betas 0.9,0.95)" in out, out
    code, runs, _ = cli("runs", "--store", store)
    assert " tune " in runs


@lightning_only
@pytest.mark.parametrize("command", ["tune", "cbs"])
def test_a_fixed_length_or_any_schedule_is_refused_by_name(cli, tmp_path, command):
    flags = ["--target-loss", "0.5"] if command == "tune" else []
    code, _, err = cli(command, "--devices", "cpu", "--dataset-sizes", "400", "--batch-sizes", "16", "--steps", "50", *flags,
                       "--model", model("lightning_onecycle"), "--store", tmp_path / "s.sqlite", "--no-report")
    assert code == 2 and err.count("\n") == 1 and "OneCycleLR" in err and "--lr-policy" not in err, err


@lightning_only
def test_cbs_branches_move_the_modules_own_rate_by_its_rule(cli, tmp_path):
    store = tmp_path / "c.sqlite"
    code, out, err = cli("cbs", "--devices", "cpu", "--dataset-sizes", "400", "--batch-sizes", "16", "--epochs", "4", "--checkpoints", "2",
                         "--largest-batch", "64", "--rates", "1", "--model", model("lightning_plain"), "--store", store, "--no-report")
    assert code == 0, err
    points = _points(store)
    branches = points[points["role"] == "branch"]
    assert len(branches) and list(branches["lr"]) == pytest.approx(list(0.05 * branches["branch_factor"]))  # SGD: linear in k
    code, runs, _ = cli("runs", "--store", store)
    assert " cbs " in runs


def test_a_gpt2_from_a_config_gets_exact_steps_measured_winners_and_a_coherent_answer(cli, tmp_path):
    """The GPT-2 trial, smaller: a check on the holdout costs many steps, so auto checks are few;
    still every point that reached the target knows its step to 5% (refined after the sweep),
    the winner's step time was measured past its burn-in, and the sentence calls slower only
    batch sizes outside its tied set."""
    import re

    pytest.importorskip("transformers")
    store = tmp_path / "g.sqlite"
    code, out, err = cli("run", "--devices", "cpu", "--dataset", "text", "--dataset-sizes", "1024", "--batch-sizes", "4,16,64", "--steps", "80",
                         "--optimizer", "adamw", "--lr", "0.003", "--model", model("hf_gpt2"), "--store", store, "--no-report")
    assert code == 0, err
    points = _points(store)
    reached = points[points["steps_to_target"].notna()]
    assert len(reached) >= 2 and (reached["refine_steps"] > 0).any()  # checks were too costly to be fine: some crossings were refined
    for row in reached.to_dict("records"):
        assert row["steps_to_target"] - row["steps_to_target_low"] <= max(1, 0.05 * row["steps_to_target"]), row
    code, analyzed, _ = cli("analyze", "--store", store, "--json")
    (group,) = json.loads(analyzed)
    advice = group["recommendation"]
    winner = points[points["batch_size"] == advice["batch_size"]].iloc[0]
    assert winner["timed_steps"] >= 1 and "burn_in_only" not in str(winner["flags"])
    sentence = advice["sentence"]
    assert sentence in out
    for slower in re.findall(r"faster than B=(\d+)", sentence):
        assert int(slower) not in advice["tied"], sentence
    if len(advice["tied"]) > 2:
        assert "are equally fast to the target within noise" in sentence
