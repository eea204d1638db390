"""Data-parallel points on torch.distributed: one process per rank, DistributedDataParallel.

The sweep process launches a point's ranks through ``torch.distributed.run`` (torchrun,
``--standalone``: one machine), gloo on the CPU and nccl on CUDA with one GPU per rank. Each
rank trains its slice of every global batch (``train._fetcher``), so the world's updates are the
single process's at the same global batch; each writes its own numbers to a file and exits, and
the sweep process -- the store's only writer -- combines them: rank 0's curve and phase times,
the batch loss averaged over ranks, the median and the slowest rank's phase times, and the
exposed communication ``comm_s`` (a synchronised backward minus a ``no_sync`` one).

A rank that fails exits non-zero, torchrun stops the others, and the point is recorded as
``error`` with that rank's message; collectives time out after ``BATCHBENCH_DIST_TIMEOUT_S``
(default 300 s) so no rank waits forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.records import PointResult
from harness.spec import RunSpec

TIMEOUT_ENV = "BATCHBENCH_DIST_TIMEOUT_S"


def launch(run: RunSpec) -> PointResult:
    """Run a point of ``run.world_size`` ranks and combine their results."""
    with tempfile.TemporaryDirectory(prefix="batchbench-ddp-") as tmp:
        spec_path = Path(tmp) / "run.json"
        spec_path.write_text(json.dumps(dataclasses.asdict(run)))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={run.world_size}",
                   "--module", "harness.distributed", str(spec_path), tmp]
        env = {**os.environ, "OMP_NUM_THREADS": str(run.threads)}
        timeout = float(os.environ.get(TIMEOUT_ENV, "300"))
        try:
            proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout * 3 + 60)
            stderr, code = proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            stderr, code = f"ranks did not finish within {timeout * 3 + 60:.0f} s: {exc}", -1
        ranks = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("rank*.json"))]
    return combine(run, ranks, code, stderr)


def combine(run: RunSpec, ranks: list[dict], code: int, stderr: str) -> PointResult:
    """One point from the ranks' results (rank 0 first)."""
    ranks = sorted(ranks, key=lambda r: r["rank"])
    failed = [r for r in ranks if r["point"]["status"] != "ok"]
    if len(ranks) != run.world_size or failed or code != 0:
        if failed:  # the rank that failed first, not the ones its exit cut off
            primary = next((r for r in failed if not _lost_peer(r["point"]["error"] or "")), failed[0])
            status, error = primary["point"]["status"], f"rank {primary['rank']}: {primary['point']['error']}"
        else:
            tail = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
            status, error = "error", f"ranks exited with code {code} ({len(ranks)} of {run.world_size} reported): {tail[0][:300]}"
        base = ranks[0]["point"] if ranks else {"point_id": run.point_id}
        point = {**base, "status": status, "error": error, "world_size": run.world_size, "backend": run.backend}
        for key in ("samples_per_s", "steps_per_s", "data_s", "derivative_s", "update_s", "step_wall_s"):
            point.pop(key, None)
        return PointResult(point=point, checks=ranks[0]["checks"] if ranks else [], steps=[])
    lead = ranks[0]
    point = dict(lead["point"])
    for key in ("data_s", "derivative_s", "update_s", "step_wall_s", "comm_s"):
        values = [r["point"].get(key) for r in ranks if r["point"].get(key) is not None]
        if values:
            point[key] = float(np.median(values))
            if key in ("derivative_s", "step_wall_s"):
                point[f"{key}_max_rank"] = float(max(values))
    if point.get("comm_s") is not None:
        point["comm_s"] = max(0.0, point["comm_s"])
    steps = lead["steps"]
    losses = np.array([[s["batch_loss"] for s in r["steps"]] for r in ranks], dtype=float)
    if losses.size:
        for row, mean in zip(steps, losses.mean(axis=0)):
            row["batch_loss"] = float(mean)
    return PointResult(point=point, checks=lead["checks"], steps=steps, samples=lead.get("samples", []))


def _lost_peer(message: str) -> bool:
    """An error that only says another rank went away (gloo/NCCL connection loss, timeout)."""
    text = message.lower()
    return any(key in text for key in ("connection closed", "connection reset", "gloo", "nccl", "timed out", "timeout", "broken pipe"))


def exposed_comm_s(ddp, xb, yb, loss_fn, device, repeats: int = 7) -> float:
    """Median extra time of a synchronised backward over a ``no_sync`` one: the all-reduce
    the backward pass failed to hide. Gradients are zeroed after; parameters never move."""
    from harness.clock import synchronize

    def timed(context) -> int:
        synchronize(device)
        start = time.perf_counter_ns()
        with context:
            loss_fn(ddp(xb), yb).backward()
        synchronize(device)
        return time.perf_counter_ns() - start

    synced, local = [], []
    for _ in range(repeats):
        local.append(timed(ddp.no_sync()))
        synced.append(timed(contextlib.nullcontext()))
    ddp.module.zero_grad(set_to_none=True)
    return (float(np.median(synced)) - float(np.median(local))) / 1e9


def external_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when a launcher such as ``torchrun --nnodes ...`` started
    this ``batchbench run`` as one of several ranks; None for a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def run_external(plan, store_path: str, *, resume: bool, progress: bool) -> str | None:
    """The sweep under an external launcher: every rank plans the same points and trains each
    together; rank 0 gathers the ranks' results and alone writes the store. Returns the run id
    on rank 0, None elsewhere."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from harness import env
    from harness.store import Store
    from harness.train import run_point

    rank, world, local = external_world()
    backend = "nccl" if plan.runs[0].device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "300"))))
    store, header = None, [None, None]
    if rank == 0:
        store = Store(store_path)
        run_id, done = store.start_run(plan.spec.to_json(), plan.spec.spec_hash, env.environment(list(plan.devices), plan.spec.threads), resume=resume)
        header = [run_id, sorted(done)]
    dist.broadcast_object_list(header, src=0)
    run_id, done = header[0], set(header[1])
    for run in (r for r in plan.runs if r.point_id not in done):
        if run.device.startswith("cuda"):
            run = dataclasses.replace(run, device=f"cuda:{local}")
        result = run_point(run, plan.splits[run.dataset_size], plan.factory, rank=None if run.skip_reason else (rank, world))
        payload = {"rank": rank, "point": result.point, "checks": result.checks, "steps": result.steps, "samples": result.samples if rank == 0 else []}
        gathered = [None] * world
        dist.all_gather_object(gathered, payload)
        if rank == 0:
            combined = result if run.skip_reason else combine(run, gathered, 0, "")
            store.add_point(run_id, combined)
            if progress:
                print(f"point {run.dataset_size}x B={run.batch_size} {run.device} r{run.repeat}: {combined.status}", file=sys.stderr)
    if rank == 0:
        store.finish_run(run_id)
        store.close()
    dist.destroy_process_group()
    return run_id if rank == 0 else None


def _worker(spec_path: str, out_dir: str) -> int:
    """One rank: train the point with DDP, write ``rank<R>.json``, exit 1 if it failed."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from harness import datasets, models
    from harness.train import run_point

    raw = json.loads(Path(spec_path).read_text())
    raw["hidden"] = tuple(raw["hidden"])
    run = RunSpec(**raw)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if run.device.startswith("cuda"):
        run = dataclasses.replace(run, device=f"cuda:{local}")
        torch.cuda.set_device(local)
    dist.init_process_group(run.backend, timeout=timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "300"))))
    try:
        data = datasets.load(run.dataset, run.dataset_size, data_seed=run.data_seed, target_column=run.target_column)
        split = datasets.split(data, run.check_set, run.holdout_fraction, data_seed=run.data_seed)
        result = run_point(run, split, models.resolve(run.model), rank=(rank, world))
    except Exception as exc:  # data or plug-in trouble in this rank
        result = PointResult(point={"point_id": run.point_id, "status": "error", "error": f"{type(exc).__name__}: {exc}"}, checks=[], steps=[])
    payload = {"rank": rank, "point": result.point, "checks": result.checks, "steps": result.steps, "samples": result.samples if rank == 0 else []}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(payload, default=float))
    ok = result.point["status"] == "ok"
    if ok:
        dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2]))
