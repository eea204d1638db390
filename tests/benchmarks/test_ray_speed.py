"""``--executor ray`` against the local loop: the wall time of one 16-point CPU sweep (a core a
point, points of about 6 s) in a process of its own each, Ray's start-up included, with Ray's
start-up and per-task overhead measured apart. Timed only (``--benchmark-only``): it takes about
three minutes.

Target (reported, not enforced): on a 2-core machine the sweep under Ray takes at most 0.65x the
local wall time, start-up included."""

import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, plugin

TARGET = 0.65
FLAGS = ["--devices", "cpu", "--threads", "1", "--model", plugin("known_cost"), "--dataset", "blobs", "--dataset-sizes", "2000",
         "--batch-sizes", "4,8,16,32", "--repeats", "4", "--steps", "1400", "--target", "none", "--quiet", "--no-report"]


def _wall(tmp_path, name: str, *extra: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", "run", *FLAGS, *extra, "--store", str(tmp_path / f"{name}.sqlite")], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    return time.perf_counter() - start


def _ray_costs() -> tuple[float, float]:
    """Ray's start-up (a local instance) and the round trip of one empty task, in seconds."""
    code = ("import time, ray\nt = time.perf_counter()\nray.init(address='local', include_dashboard=False, log_to_driver=False)\n"
            "start = time.perf_counter() - t\nf = ray.remote(num_cpus=1)(lambda: None)\nray.get([f.remote() for _ in range(4)])\n"
            "t = time.perf_counter()\nfor _ in range(50):\n    ray.get(f.remote())\nprint(start, (time.perf_counter() - t) / 50)\nray.shutdown()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    start, per_task = map(float, done.stdout.split()[-2:])
    return start, per_task


def test_a_cpu_sweep_on_ray_against_the_local_loop(benchmark, verdict, tmp_path):
    pytest.importorskip("ray")
    if benchmark.disabled:
        pytest.skip("timed only (--benchmark-only): three minutes of sweeps")
    local = benchmark.pedantic(_wall, args=(tmp_path, "local"), rounds=1, iterations=1)
    on_ray = _wall(tmp_path, "ray", "--executor", "ray", "--cpus-per-point", "1")
    start, per_task = _ray_costs()
    benchmark.extra_info.update({"local_s": local, "ray_s": on_ray, "ray_start_s": start, "ray_task_s": per_task, "cores": os.cpu_count()})
    print(f"\n16-point CPU sweep: local {local:.1f} s, ray {on_ray:.1f} s (ratio {on_ray / local:.3f}); Ray start-up {start:.1f} s, "
          f"an empty task's round trip {per_task * 1e3:.2f} ms; {os.cpu_count()} cores")
    verdict("ray_over_local", on_ray / local, TARGET, higher_is_better=False)
