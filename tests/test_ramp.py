"""`harness.ramp`: the ramp `batchbench cbs` measured, trained in a user's own loop and in a
LightningModule, reaches the loss cbs's verification reported for it, in its steps."""

import contextlib
import importlib.util
import io
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import harness.ramp
from conftest import ROOT
from harness.errors import SpecError
from harness.run.batches import batch_indices

EXAMPLE = ROOT / "examples" / "ramp_loop.py"


def _example():
    spec = importlib.util.spec_from_file_location("ramp_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


loop = _example()


def _lightning():
    try:
        import lightning.pytorch as pl
    except ImportError:
        pl = pytest.importorskip("pytorch_lightning")
    return pl


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A tiny seeded cbs run (4 Gaussian classes in 16 dimensions, 1024 samples, the example's
    MLP, SGD with momentum 0.9): its --json output and its --ramp-out file, with the data file.
    Its ramp is 8 from 0 -> 32 from 8 -> 128 from 192: the second stage's 6 steps read samples
    8..200, and the third reads again from 192, as cbs's chain of points does."""
    from harness.cli import main

    folder = tmp_path_factory.mktemp("ramp")
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(4, 16))
    y = rng.integers(0, 4, size=1024)
    X = centers[y] + rng.normal(scale=3.0, size=(1024, 16))
    np.savez(folder / "data.npz", X=((X - X.mean(0)) / X.std(0)).astype(np.float32), y=y)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["cbs", "--dataset", str(folder / "data.npz"), "--model", f"{EXAMPLE}:make_model", "--devices", "cpu", "--check-set", "train",
                     "--batch-sizes", "8", "--lr", "0.05", "--momentum", "0.9", "--epochs", "4", "--checkpoints", "4", "--largest-batch", "128", "--rates", "1",
                     "--json", "--ramp-out", str(folder / "ramp.json"), "--store", str(folder / "s.sqlite"), "--no-report", "--quiet"])
    assert code == 0
    (folder / "cbs.json").write_text(out.getvalue())
    return folder


def test_the_ramp_file_and_the_json_output_give_the_same_ramp(measured):
    answer = json.loads((measured / "cbs.json").read_text())
    ramp, from_json = harness.ramp.load(measured / "ramp.json"), harness.ramp.load(measured / "cbs.json")
    assert ramp == from_json
    verified = next(v for v in answer["verification"] if v["name"] == "ramp")
    assert [s.batch_size for s in ramp.stages] == [8, 32, 128] and ramp.steps == ramp.steps_measured == verified["steps"] and ramp.loss == verified["final_loss"]
    assert (ramp.seed, ramp.init_seed, ramp.sampling, ramp.train_size, ramp.optimizer) == (0, 0, "shuffle", 1024, "sgd")
    sampler = ramp.sampler(1024)
    assert len(sampler) == ramp.steps and list(dict.fromkeys(len(b) for b in sampler)) == verified["batches"]


def test_a_plain_loop_on_the_ramp_reaches_the_loss_cbs_verified(measured):
    ramp = harness.ramp.load(measured / "ramp.json")
    X, y = loop.load_npz(measured / "data.npz")
    model = loop.train(ramp, X, y, momentum=0.9)
    loss = loop.check_loss(model, X, y)
    assert len(ramp.sampler(len(X))) == ramp.steps_measured
    print(f"plain loop: {loss:.8g} after {ramp.steps} steps; cbs's ramp: {ramp.loss:.8g}")
    assert loss == pytest.approx(ramp.loss, rel=0.02)


def _lit_module(pl, net, lr: float, data):
    class LitRamp(pl.LightningModule):
        """A user's module: its own DataLoader (shuffled, batch 32), which the callback puts on the ramp."""

        def __init__(self):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=lr, momentum=0.9)

        def train_dataloader(self):
            return DataLoader(data, batch_size=32, shuffle=True)

    return LitRamp()


def test_a_lightning_module_on_the_ramp_reaches_the_loss_cbs_verified(measured):
    pl = _lightning()
    ramp = harness.ramp.load(measured / "ramp.json")
    X, y = loop.load_npz(measured / "data.npz")
    torch.manual_seed(ramp.init_seed)
    module = _lit_module(pl, loop.make_model(X.shape[1], int(y.max()) + 1), ramp.lr0, TensorDataset(X, y))
    trainer = pl.Trainer(accelerator="cpu", devices=1, callbacks=[ramp.lightning_callback()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and the like
        trainer.fit(module)
    loss = loop.check_loss(module.net, X, y)
    print(f"Lightning: {loss:.8g} after {trainer.global_step} steps; cbs's ramp: {ramp.loss:.8g}")
    assert trainer.global_step == ramp.steps and loss == pytest.approx(ramp.loss, rel=0.02)
    assert "train_dataloader" not in vars(module)  # the module is as it was


def test_each_stage_reads_the_data_order_from_where_it_starts():
    """Stages at 0 (B=8), 8 (B=64) and 20 (B=32), 100 samples: 1, round(12/64) -> 1 and
    round(80/32) = round(2.5) -> 2 steps, as cbs gives them; the third re-reads from sample 20."""
    ramp = harness.ramp.Ramp(stages=(harness.ramp.Stage(0, 8, 0.1), harness.ramp.Stage(8, 64, 0.8),
                                     harness.ramp.Stage(20, 32, 0.4)), b0=8, lr0=0.1, samples=100, seed=3)
    assert [(s.batch_size, s.steps, s.first_step) for s in ramp.schedule()] == [(8, 1, 0), (64, 1, 1), (32, 2, 2)]
    stream = torch.cat([next(batch_indices(50, 400, 3))])  # the run's order: seeded permutations of the 50 rows
    assert list(ramp.sampler(50)) == [stream[0:8].tolist(), stream[8:72].tolist(), stream[20:52].tolist(), stream[52:84].tolist()]
    assert [ramp.lr_lambda()(step) for step in range(6)] == pytest.approx([1, 8, 4, 4, 4, 4])
    assert [(s.batch_size, s.steps) for s in ramp.schedule(steps=7)] == [(8, 1), (64, 1), (32, 5)]
    assert [(s.batch_size, s.steps) for s in ramp.schedule(steps=2)] == [(8, 1), (64, 1)]
    assert [(s.batch_size, s.steps) for s in ramp.schedule(samples=16)] == [(8, 1), (64, 1)]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=ramp.lr0)
    scheduler, rates = torch.optim.lr_scheduler.LambdaLR(optimizer, ramp.lr_lambda()), []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.1, 0.8, 0.4, 0.4])


@pytest.mark.parametrize("change, field", [pytest.param(change, field, id=field) for change, field in [
    (lambda r: r.pop("lr0"), "lr0"),
    (lambda r: r["ramp"][1].update(batch_size="64"), "ramp[1].batch_size"),
    (lambda r: r["ramp"][1].update(start_samples=0), "ramp[1].start_samples"),
    (lambda r: r["ramp"][0].update(lr=-1), "ramp[0].lr"),
    (lambda r: r.update(ramp=[]), "ramp"),
    (lambda r: r.update(sampling="sorted"), "sampling"),
    (lambda r: r.update(seed=1.5), "seed"),
    (lambda r: r.update(format="batchbench-ramp/9"), "format"),
]])
def test_a_malformed_ramp_file_is_one_line_naming_the_field(tmp_path, change, field):
    raw = {"b0": 8, "lr0": 0.1, "base_samples": 100, "ramp": [{"start_samples": 0, "batch_size": 8, "lr": 0.1},
                                                              {"start_samples": 8, "batch_size": 64, "lr": 0.8}]}
    change(raw)
    path = tmp_path / "ramp.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(SpecError) as caught:
        harness.ramp.load(path)
    assert str(caught.value).startswith(f"{path}: {field}: ") and "\n" not in str(caught.value)


def test_a_file_that_is_not_json_is_one_line(tmp_path):
    path = tmp_path / "ramp.json"
    path.write_text("ramp: 8 from 0")
    with pytest.raises(SpecError, match="not JSON") as caught:
        harness.ramp.load(path)
    assert "\n" not in str(caught.value)


def test_ramp_out_over_the_store_is_refused_before_anything_runs(cli, tmp_path):
    store = tmp_path / "s.sqlite"
    store.write_bytes(b"")
    code, _, err = cli("cbs", "--devices", "cpu", "--batch-sizes", "8", "--ramp-out", store, "--store", store, "--no-report")
    assert code == 2 and "--ramp-out" in err and err.count("\n") == 1


def test_harness_ramp_imports_without_lightning():
    code = ("import sys; sys.modules['lightning'] = sys.modules['pytorch_lightning'] = None; import harness; "
            "assert harness.ramp.load and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
