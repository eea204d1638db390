"""``--executor ray``: the points of a sweep as Ray tasks, committed by the sweep's process as
they come back. One local Ray instance (loopback only) serves this module; what it starts, it
ends through Ray's own shutdown."""

import os
import sqlite3

import pandas as pd
import pytest

from conftest import plugin

ray = pytest.importorskip("ray")

FLAGS = ("--devices", "cpu", "--threads", "1", "--dataset", "blobs", "--dataset-sizes", "400", "--batch-sizes", "4,16,64", "--steps", "60",
         "--no-report", "--quiet")


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    """A two-core Ray instance on 127.0.0.1, shared by this module's tests (starting one costs
    8-10 s here). Its workers see ``BATCHBENCH_TEST_DIE_ONCE``."""
    os.environ["BATCHBENCH_TEST_DIE_ONCE"] = str(tmp_path_factory.mktemp("ray") / "die-once")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"  # loopback only (conftest sets Ray's switch for it)
    yield os.environ["BATCHBENCH_TEST_DIE_ONCE"]
    ray.shutdown()
    del os.environ["BATCHBENCH_TEST_DIE_ONCE"]


def _points(path) -> pd.DataFrame:
    with sqlite3.connect(path) as conn:
        return pd.read_sql("SELECT * FROM points ORDER BY batch_size", conn)


def test_a_sweep_on_ray_stores_what_a_local_one_does(ray_instance, cli, tmp_path):
    local, on_ray = tmp_path / "local.sqlite", tmp_path / "ray.sqlite"
    assert cli("run", *FLAGS, "--store", local)[0] == 0
    code, out, err = cli("run", *FLAGS, "--executor", "ray", "--cpus-per-point", "1", "--store", on_ray)
    assert code == 0, err
    here, there = _points(local), _points(on_ray)
    assert list(there["point_id"]) == list(here["point_id"]) and there["point_id"].is_unique
    for column in ("steps_to_target", "final_eval_loss", "final_train_loss", "status"):
        assert list(there[column]) == list(here[column]), column
    assert set(here["executor"]) == {"local"} and set(here["co_running"]) == {0}
    assert set(there["executor"]) == {"ray"} and there["host"].str.contains("/").all()
    assert there["co_running"].max() >= 1 and "timed beside other points on their node" in out  # a core a point: side by side, and said


def test_a_point_whose_worker_dies_is_retried_and_stored_once(ray_instance, cli, tmp_path):
    store = tmp_path / "s.sqlite"
    open(ray_instance, "w").close()
    code, _, err = cli("run", *FLAGS, "--model", plugin("dies_once"), "--executor", "ray", "--store", store)
    assert code == 0, err
    points = _points(store)
    assert not os.path.exists(ray_instance)  # a worker died
    assert len(points) == 3 and points["point_id"].is_unique and set(points["status"]) == {"ok"}


def test_with_no_retries_a_dead_worker_leaves_its_point_lost_and_the_sweep_goes_on(ray_instance, cli, tmp_path):
    store = tmp_path / "s.sqlite"
    open(ray_instance, "w").close()
    code, _, err = cli("run", *FLAGS, "--model", plugin("dies_once"), "--executor", "ray", "--retries", "0", "--store", store)
    assert code == 0, err
    points = _points(store)
    lost = points[points["status"] == "lost"]
    assert len(points) == 3 and len(lost) == 1 and (points["status"] == "ok").sum() == 2
    assert "lost after 0 retries" in lost["error"].iloc[0] and "lost after 0 retries" in err  # told as it happened
    code, _, err = cli("run", *FLAGS, "--model", plugin("dies_once"), "--executor", "ray", "--retries", "0", "--resume", "--store", store)
    points = _points(store)
    assert code == 0 and len(points) == 3 and points["point_id"].is_unique and set(points["status"]) == {"ok"}, err  # --resume ran it again


def test_ray_flags_are_checked_before_anything_runs(cli, tmp_path):
    code, _, err = cli("run", *FLAGS, "--executor", "slurm", "--store", tmp_path / "s.sqlite")
    assert code == 2 and "--executor" in err and err.count("\n") == 1
    code, _, err = cli("run", *FLAGS, "--retries", "3", "--store", tmp_path / "s.sqlite")
    assert code == 2 and "--retries: applies to --executor ray" in err
    assert not (tmp_path / "s.sqlite").exists()


def test_a_driver_killed_mid_sweep_leaves_a_store_resume_completes_once(ray_instance, cli, tmp_path):
    """kill -9 of the sweep's process while its points run on the cluster, then ``--resume``:
    every point is in the store exactly once."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    store = tmp_path / "s.sqlite"
    flags = ["--devices", "cpu", "--threads", "1", "--dataset", "blobs", "--dataset-sizes", "400", "--batch-sizes", "1,2,4,8", "--steps", "1500",
             "--repeats", "2", "--no-report", "--quiet"]
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-m", "harness", "run", *flags, "--executor", f"ray:{address}", "--cpus-per-point", "1",
                               "--store", str(store)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        if store.exists():
            try:
                if len(_points(store)) >= 1:
                    break
            except Exception:  # the store is being created
                pass
        time.sleep(0.2)
    assert driver.poll() is None, "the sweep ended before it could be killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    before = len(_points(store))
    assert 1 <= before < 8
    code, _, err = cli("run", *flags, "--resume", "--executor", "ray", "--cpus-per-point", "1", "--store", store)
    assert code == 0, err
    points = _points(store)
    assert len(points) == 8 and points["point_id"].is_unique and set(points["status"]) == {"ok"}


def test_on_two_nodes_a_sweep_uses_both_and_stores_each_point_once(tmp_path):
    """A two-node cluster on this machine (Ray's own test utility, in a process of its own so
    that it does not meet this module's instance): the points land on both nodes."""
    import subprocess
    import sys

    from conftest import ROOT

    script = tmp_path / "two_nodes.py"
    script.write_text(TWO_NODES.format(store=tmp_path / "s.sqlite", flags=[f for f in FLAGS if f not in ("--quiet",)]))
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    points = _points(tmp_path / "s.sqlite")
    assert len(points) == 3 and points["point_id"].is_unique and set(points["status"]) == {"ok"}
    assert points["host"].nunique() == 2, list(points["host"])


TWO_NODES = """
import subprocess, sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1, "include_dashboard": False}})
cluster.add_node(num_cpus=1)
try:
    cluster.wait_for_nodes()
    command = [sys.executable, "-m", "harness", "run", *{flags}, "--executor", "ray:" + cluster.address, "--store", "{store}"]
    code = subprocess.run(command).returncode
finally:
    cluster.shutdown()
sys.exit(code)
"""


def test_the_python_api_runs_objects_on_ray_as_it_does_here(ray_instance):
    """A model and arrays handed over as objects travel to the workers with the tasks."""
    import numpy as np
    from torch import nn

    import harness

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype("float32")
    y = (X[:, 0] > 0).astype("int64")
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    flags = dict(batch_sizes="8,32", steps=40, devices="cpu", threads=1, target_loss=0.5)
    here = harness.benchmark(model, (X, y), **flags).sort_values("batch_size")
    there = harness.benchmark(model, (X, y), executor="ray", **flags).sort_values("batch_size")
    assert list(there["point_id"]) == list(here["point_id"])
    assert list(there["final_eval_loss"]) == list(here["final_eval_loss"]) and set(there["executor"]) == {"ray"}


def test_cbs_on_ray_gives_the_curve_and_ramp_it_gives_here(ray_instance, cli, tmp_path):
    """The branches of every checkpoint at once, the ramp beside its constant run: the same
    stored points, the same critical batch sizes and ramp as one after another here."""
    import json

    flags = ("cbs", "--dataset", "blobs", "--dataset-sizes", "2000", "--devices", "cpu", "--threads", "1", "--hidden", "32", "--batch-sizes", "8",
             "--lr", "0.1", "--epochs", "2", "--checkpoints", "3", "--largest-batch", "64", "--json", "--no-report")
    code, here, err = cli(*flags, "--store", tmp_path / "local.sqlite")
    assert code == 0, err
    code, there, err = cli(*flags, "--executor", "ray", "--cpus-per-point", "1", "--store", tmp_path / "ray.sqlite")
    assert code == 0, err
    here, there = json.loads(here), json.loads(there)
    assert [c["critical_batch_size"] for c in there["curve"]] == [c["critical_batch_size"] for c in here["curve"]]
    assert there["ramp"] == here["ramp"]
    local, on_ray = _points(tmp_path / "local.sqlite"), _points(tmp_path / "ray.sqlite")
    assert sorted(on_ray["point_id"]) == sorted(local["point_id"]) and set(on_ray["executor"]) == {"ray"}
    same = local.set_index("point_id").loc[on_ray["point_id"], "final_eval_loss"]
    assert list(on_ray["final_eval_loss"]) == list(same)


def test_tune_on_ray_gives_the_answer_it_gives_here(ray_instance, cli, tmp_path):
    """A round of rates at once per batch size and the finalists' repeats side by side: the same
    batch size, or one the other side's answer holds tied with it (step times are noisy)."""
    import json

    flags = ("tune", "--dataset", "linreg", "--dataset-sizes", "5120", "--model", "linear", "--lr-grid", "0.015625,0.03125,0.0625,0.125,0.25,0.5,1",
             "--batch-sizes", "8..4096", "--target-loss", "0.3", "--devices", "cpu", "--threads", "1", "--no-report", "--quiet", "--json")
    code, here, err = cli(*flags, "--store", tmp_path / "local.sqlite")
    assert code == 0, err
    code, there, err = cli(*flags, "--executor", "ray", "--store", tmp_path / "ray.sqlite")
    assert code == 0, err
    here, there = json.loads(here), json.loads(there)
    assert there["batch_size"] in [here["batch_size"], *here["tied"]] or here["batch_size"] in [there["batch_size"], *there["tied"]], (here, there)
    points = _points(tmp_path / "ray.sqlite")
    assert set(points["executor"]) == {"ray"} and points["point_id"].is_unique


def test_a_plugin_a_worker_cannot_import_is_that_points_error_not_a_hang(ray_instance, cli, tmp_path, monkeypatch):
    """``module:callable`` importable here but not on the workers (a path only this process
    has): each point is an ``error`` naming the import, said once per point; the sweep ends."""
    (tmp_path / "only_here_models.py").write_text("from torch import nn\n\ndef net(n_features, n_outputs):\n    return nn.Linear(n_features, n_outputs)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", *FLAGS, "--model", "only_here_models:net", "--executor", "ray", "--retries", "0", "--store", store)
    points = _points(store)
    assert code == 1 and set(points["status"]) == {"error"} and len(points) == 3, err
    assert points["error"].str.contains("only_here_models").all() and points["error"].str.startswith("on a Ray worker").all()


def test_ctrl_c_stores_the_points_in_flight_as_interrupted_and_resume_finishes(ray_instance, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    store = tmp_path / "s.sqlite"
    flags = ["--devices", "cpu", "--threads", "1", "--dataset", "blobs", "--dataset-sizes", "400", "--batch-sizes", "1,2,4,8", "--steps", "2000",
             "--no-report", "--quiet", "--executor", f"ray:{ray.get_runtime_context().gcs_address}", "--cpus-per-point", "1", "--store", str(store)]
    driver = subprocess.Popen([sys.executable, "-m", "harness", "run", *flags], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        try:
            if store.exists() and len(_points(store)) >= 1:
                break
        except Exception:  # the store is being created
            pass
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err
    points = _points(store)
    assert (points["status"] == "interrupted").sum() >= 1 and points["point_id"].is_unique, list(points["status"])
    done = subprocess.run([sys.executable, "-m", "harness", "run", *flags, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    points = _points(store)
    assert len(points) == 4 and points["point_id"].is_unique and set(points["status"]) == {"ok"}


def test_a_plugin_file_and_the_module_beside_it_that_it_imports_reach_the_workers(ray_instance, cli, tmp_path, monkeypatch):
    """``file.py:callable`` whose file imports a sibling module (found here through the path the
    user gave Python): both travel with the tasks, so the workers need neither file."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "widths_beside.py").write_text("WIDTH = 8\n")
    (folder / "net_file.py").write_text("import widths_beside\nfrom torch import nn\n\n"
                                        "def net(n_features, n_outputs):\n"
                                        "    return nn.Sequential(nn.Linear(n_features, widths_beside.WIDTH), nn.ReLU(), nn.Linear(widths_beside.WIDTH, n_outputs))\n")
    monkeypatch.syspath_prepend(str(folder))
    store = tmp_path / "s.sqlite"
    code, _, err = cli("run", *FLAGS, "--model", f"{folder / 'net_file.py'}:net", "--executor", "ray", "--store", store)
    assert code == 0, err
    points = _points(store)
    assert set(points["status"]) == {"ok"} and set(points["n_params"]) == {2 * 8 + 8 + 8 * 3 + 3}


def test_point_timeout_ends_a_point_on_a_ray_worker_too(ray_instance, cli, tmp_path):
    store = tmp_path / "s.sqlite"
    flags = [{"60": "2000", "4,16,64": "4"}.get(f, f) for f in FLAGS]  # one point of about 8 s
    code, _, err = cli("run", *flags, "--model", plugin("known_cost"), "--point-timeout", "2", "--executor", "ray", "--store", store)
    points = _points(store)
    assert code == 1 and list(points["status"]) == ["error"] and "timed out after 2 s" in points["error"].iloc[0], err
