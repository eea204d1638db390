"""The sampler counts the whole process tree: DataLoader workers' CPU time and memory are the
point's too. The children here burn a fixed amount of CPU time (``time.thread_time``), so the
assertions hold however loaded the machine is: a loaded machine stretches the wall time, not
the CPU seconds."""

import multiprocessing
import os
import time

import numpy as np
import pytest
import torch

from harness.run.sampler import Descendants, ProcessSource, children_listed

BURN_S = 0.002
"""CPU seconds each item burns in ``__getitem__`` (a stand-in for decoding and augmentation)."""


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def burn_then_wait(seconds: float, done) -> None:
    burn(seconds)
    done.wait(30)


class BurningRows(torch.utils.data.Dataset):
    """256 rows of 8 features, 2 classes; each item costs ``BURN_S`` of CPU."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.x = torch.tensor(rng.normal(size=(256, 8)), dtype=torch.float32)
        self.y = (self.x[:, 0] > 0).long()
        self.classes = [0, 1]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        burn(BURN_S)
        return self.x[i], int(self.y[i])


def _fork():
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


@pytest.mark.parametrize("lists", [True, False], ids=["proc-lists", "psutil-scan"])
def test_live_children_are_found_and_read_while_they_run_and_dropped_once_gone(lists):
    """Found through the kernel's lists of children, or (where it keeps none: macOS) psutil's scan."""
    ctx = _fork()
    done = ctx.Event()
    children = [ctx.Process(target=burn_then_wait, args=(0.3, done)) for _ in range(2)]
    tree = Descendants(os.getpid())
    tree._listed = tree._listed and lists
    try:
        for child in children:
            child.start()
        import psutil

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(sum(psutil.Process(c.pid).cpu_times()[:2]) for c in children) < 0.55:
            time.sleep(0.02)
        tree.refresh()
        assert {c.pid for c in children} <= set(tree._kept)
        assert tree.cpu_s() >= 0.5  # both children's own time, read while they live
        assert tree.private_bytes() > 0
    finally:
        done.set()
        for child in children:
            child.join(30)
    tree.refresh()
    assert tree.cpu_s() < 0.5 and not {c.pid for c in children} & set(tree._kept)  # a read of an ended child drops it


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"), reason="no /proc children lists here")
def test_children_listed_finds_grandchildren():
    ctx = _fork()
    done = ctx.Event()
    child = ctx.Process(target=_parent_of_one, args=(done,))
    child.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(children_listed(child.pid)) < 1:
            time.sleep(0.02)
        found = children_listed(os.getpid())
        assert child.pid in found and set(children_listed(child.pid)) <= set(found) and len(found) >= 2
    finally:
        done.set()
        child.join(30)


def _parent_of_one(done) -> None:
    grandchild = multiprocessing.get_context("fork").Process(target=done.wait, args=(30,))
    grandchild.start()
    grandchild.join(30)


def test_cpu_of_children_is_counted_whether_they_still_run_or_have_exited():
    """Two children burn 0.4 s of CPU each while this process sleeps: the tree's CPU grows by
    their 0.8 s, this process's own by next to nothing; a child that exited between two
    readings is neither lost nor counted twice."""
    source = ProcessSource()
    own_before, tree_before = sum(os.times()[:2]), source.cpu_s()
    ctx = _fork()
    children = [ctx.Process(target=burn, args=(0.4,)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    own, tree = sum(os.times()[:2]) - own_before, source.cpu_s() - tree_before
    assert own < 0.3 < 0.75 <= tree < 1.2


def test_sample_reports_cpu_percent_of_the_tree():
    source = ProcessSource()
    time.sleep(0.02)
    source.sample()
    start = time.perf_counter()
    ctx = _fork()
    child = ctx.Process(target=burn, args=(0.3,))
    child.start()
    child.join(60)
    reading = source.sample()
    wall = time.perf_counter() - start
    assert reading["cpu_pct"] is not None and reading["cpu_pct"] * wall / 100 >= 0.27
    assert reading["rss_bytes"] > 10 * 2**20


def _cpu_seconds(samples) -> float:
    """The CPU seconds the samples of one point account for: each reading's CPU % over the time
    since the reading before it."""
    rows = samples.sort_values("t_s")
    total, last = 0.0, None
    for t, pct in zip(rows["t_s"], rows["cpu_pct"]):
        if pct is not None and not np.isnan(pct) and last is not None:
            total += pct / 100 * (t - last)
        if pct is not None and not np.isnan(pct) or last is None:
            last = t
    return total


def test_a_point_read_through_loader_workers_counts_their_cpu():
    """The same point with 0 and 2 DataLoader workers: with workers the items are made in the
    workers, and the CPU the samples account for still holds what the items cost."""
    from harness.api import run_tables

    steps, batch = 40, 16
    tables = run_tables("linear", BurningRows(), tables=("points", "samples"), devices="cpu", dataset_sizes=256, batch_sizes=batch,
                        steps=steps, workers="0,2", sample_interval="50ms", check_every=20, progress=False)
    points, samples = tables["points"], tables["samples"]
    assert (points["status"] == "ok").all(), points[["status", "error"]]
    made = (steps - 2 * 2) * batch * BURN_S  # the items consumed, less those the workers may have prefetched before sampling began
    for record in points.to_dict("records"):
        used = _cpu_seconds(samples[samples["point_id"] == record["point_id"]])
        assert used >= 0.7 * made, (record["workers"], used, made)
        assert record["cpu_util_mean_pct"] > 0
