"""What a user reads to compare configurations: loader settings swept as axes and kept apart,
plug-ins imported as Python imports them, a Dataset's wrong item named in one line, the Python
API's answer."""

from __future__ import annotations

import json
import sqlite3

SMALL = ("--devices", "cpu", "--dataset-sizes", "200", "--batch-sizes", "16", "--steps", "12", "--target", "none", "--quiet", "--no-report")


def test_loader_settings_are_swept_in_one_run_and_never_pooled(cli, tmp_path):
    """``--workers 0,1 --prefetch-factor 2,4``: one point per setting that changes anything
    (without workers nothing prefetches: one point), each its own configuration in analyze and
    the report."""
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", *SMALL, "--loader", "dataloader", "--workers", "0,1", "--prefetch-factor", "2,4", "--store", store)
    assert code == 0, err
    with sqlite3.connect(store) as conn:
        rows = conn.execute("SELECT workers, prefetch_factor, status FROM points ORDER BY workers, prefetch_factor").fetchall()
    assert rows == [(0, None, "ok"), (1, 2, "ok"), (1, 4, "ok")]
    code, out, err = cli("analyze", "--store", store, "--json")
    assert code == 0, err
    groups = [(g["group"]["workers"], g["group"]["prefetch_factor"]) for g in json.loads(out)]
    assert sorted(groups, key=str) == sorted([(0, None), (1, 2), (1, 4)], key=str)
    code, out, err = cli("analyze", "--store", store)
    assert code == 0, err
    assert "workers 1" in out and "prefetch 4" in out


def test_a_plugin_file_imports_the_module_beside_it_however_batchbench_started(cli, tmp_path, monkeypatch):
    """``--model plug/short.py:make`` where short.py does ``from bb_sibling_net import Net``: the
    folder of the file is searched, as ``python plug/short.py`` would (the console script does
    not put the working folder on the path the way ``python -m harness`` does)."""
    import sys

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "bb_sibling_net.py").write_text(
        "import torch\n\ndef Net(n_features, n_outputs):\n    return torch.nn.Linear(n_features, n_outputs)\n")
    (tmp_path / "plug" / "short.py").write_text("from bb_sibling_net import Net\n\ndef make(n_features, n_outputs):\n    return Net(n_features, n_outputs)\n")
    (tmp_path / "bb_module_net.py").write_text("import torch\n\ndef make(n_features, n_outputs):\n    return torch.nn.Linear(n_features, n_outputs)\n")
    try:
        for model in ("plug/short.py:make", "bb_module_net:make"):
            code, _, err = cli("run", *SMALL, "--model", model, "--store", tmp_path / f"{model[:4]}.sqlite")
            assert code == 0, f"{model}: {err}"
    finally:
        for name in ("bb_sibling_net", "bb_module_net"):
            sys.modules.pop(name, None)


def test_a_dataset_that_returns_a_pil_image_is_one_line_naming_it(cli, tmp_path, monkeypatch):
    """The forgotten ``ToTensor``: one line naming the dataset and what its items hold, exit 2."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bb_pil_data.py").write_text(
        "import numpy as np\nfrom PIL import Image\nimport torch\n\n"
        "class Images(torch.utils.data.Dataset):\n"
        "    def __len__(self):\n        return 64\n"
        "    def __getitem__(self, i):\n        return Image.fromarray(np.full((8, 8), i % 255, dtype=np.uint8)), i % 2\n\n"
        "def make():\n    return Images()\n")
    code, out, err = cli("run", *SMALL, "--dataset", "bb_pil_data.py:make", "--store", tmp_path / "s.sqlite")
    assert code == 2 and err.count("\n") == 1, err
    assert "bb_pil_data.py:make: item 0's input is a PIL.Image.Image" in err and "ToTensor" in err


def test_the_python_api_gives_the_answer_with_the_points():
    """``harness.sweep`` returns the points, their checks and the recommendation for each
    configuration: the same answer ``batchbench analyze`` prints."""
    import numpy as np

    import harness

    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 8)).astype("float32")
    y = (X[:, 0] > 0).astype("int64")
    result = harness.sweep(model="linear", data=(X, y), batch_sizes=[8, 32], dataset_sizes=[256], steps=60, devices=["cpu"],
                           target_loss=0.5, lr=0.5, progress=False)
    assert len(result.points) == 2 and set(result.points["batch_size"]) == {8, 32}
    assert len(result.answers) == 1 and result.answers[0].configuration.startswith("arrays:")
    answer = result.answers[0]
    assert result.batch_size == answer.recommendation.batch_size in (8, 32)
    assert str(answer).endswith(answer.recommendation.sentence()) and answer.recommendation.sentence() in str(result)
    assert not result.checks.empty


def test_the_sweep_bar_names_the_point_that_runs_while_it_runs():
    """What the bar shows while a point trains is that point, not the one before it."""
    from harness.drivers.plan import plan_flags
    from harness.drivers.sweep import SweepOptions, _run_points

    class Bar:
        shown = ""

        def set_postfix_str(self, text, refresh=True):
            self.pending = text
            if refresh:
                self.shown = text

        def update(self, n):
            self.shown = getattr(self, "pending", self.shown)

    class Executor:
        def results(self, todo, workload, note):
            for point in todo:
                note(f"B={point.batch_size}")
                seen.append((f"B={point.batch_size}", bar.shown))
                yield None

        def later(self):
            return []

    seen: list = []
    bar = Bar()
    the_plan = plan_flags(dataset="blobs", dataset_sizes=200, batch_sizes="4,16", steps=10, devices="cpu", target="none")
    _run_points(the_plan, list(the_plan.points), Executor(), (None, "r", []), SweepOptions(), bar)
    assert seen == [("B=4", "B=4"), ("B=16", "B=16")]
