"""Data-parallel points on torch.distributed: one process per rank, DistributedDataParallel.

Two ways in, one way through ``run_point``:

- ``launch``: the sweep process starts a point's ranks through ``torch.distributed.run``
  (torchrun ``--standalone``: one machine), gloo on the CPU and nccl on CUDA with one GPU per
  rank. Each rank (``_worker``) trains its slice of every global batch, writes its numbers to a
  file and exits; the sweep process, the store's only writer, ``combine``s them: rank 0's
  curve and phase times, the batch loss averaged over ranks, the median and the slowest
  rank's phase times, and the exposed communication ``comm_s``.
- ``ExternalRanks``: a launcher such as ``torchrun --nnodes ...`` started ``batchbench run``
  once per rank; every rank runs the same sweep (``harness.drivers.sweep.run_sweep``) and trains each
  point together, and rank 0 gathers the results and alone writes the store.

A rank that fails exits non-zero (or reports its failure), and the point is recorded with that
rank's status and message; collectives time out after ``BATCHBENCH_DIST_TIMEOUT_S`` (300 s).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from harness.workload import datasets
from harness.workload import models
from harness.workload.workload import Workload
from harness.run.collectives import TIMEOUT_ENV, external_world, timeout_s
from harness.store.schema import Status
from harness.run.measurement import STEP_PHASES, Measurement, PointResult
from harness.run.engine import run_point
from harness.config.points import PointSpec

__all__ = ["ExternalRanks", "TIMEOUT_ENV", "combine", "launch"]


def launch(point: PointSpec) -> PointResult:
    """Run a point of ``point.world_size`` ranks and combine their results."""
    with tempfile.TemporaryDirectory(prefix="batchbench-ddp-") as tmp:
        spec_path = Path(tmp) / "point.json"
        spec_path.write_text(point.to_json())
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={point.world_size}",
                   "--module", "harness.parallel.launch", str(spec_path), tmp]
        env = {**os.environ, "OMP_NUM_THREADS": str(point.threads)}
        limit_s = timeout_s() * 3 + 60
        try:
            proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=limit_s)
            stderr, code = proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            stderr, code = f"ranks did not finish within {limit_s:.0f} s: {exc}", -1
        ranks = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("rank*.json"))]
    return combine(point, ranks, code, stderr)


def combine(point: PointSpec, ranks: list[dict], code: int, stderr: str) -> PointResult:
    """One point from the ranks' results (any order; ``_payload``'s): rank 0's measurement, its
    batch losses the ranks' mean, and its phase medians the ranks' median (with the slowest
    rank's). A failure gives the same row as a failed single-process point: the declared
    columns, what only an ok point has left null (and no steps)."""
    ranks = sorted(ranks, key=lambda r: r["rank"])
    measured = [Measurement.from_json(r["measurement"]) for r in ranks]
    failed = [r for r in ranks if r["status"] != Status.OK]
    if len(ranks) != point.world_size or failed or code != 0:
        if failed:  # the rank that failed first, not the ones its exit cut off
            primary = next((r for r in failed if not _lost_peer(r["error"] or "")), failed[0])
            status, error = Status(primary["status"]), f"rank {primary['rank']}: {primary['error']}"
        else:
            tail = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
            status, error = Status.ERROR, f"ranks exited with code {code} ({len(ranks)} of {point.world_size} reported): {tail[0][:300]}"
        lead = dataclasses.replace(measured[0], phases=Measurement().phases, timed=()) if ranks else Measurement()
        return PointResult(point, lead, status, error, ranks[0]["traceback"] if ranks else None)
    losses = {step: float(np.mean([m.batch_loss[step] for m in measured])) for step in measured[0].batch_loss
              if all(m.batch_loss.get(step) is not None for m in measured)}
    settled: dict[str, Any] = {}
    for key in (*(f"{p}_s" for p in STEP_PHASES), "step_wall_s", "comm_s"):
        values = [r["row"][key] for r in ranks if r["row"][key] is not None]
        if values:
            settled[key] = float(np.median(values))
            if key in ("derivative_s", "step_wall_s"):
                settled[f"{key}_max_rank"] = float(max(values))
    if settled.get("comm_s") is not None:
        settled["comm_s"] = max(0.0, settled["comm_s"])
    lead = dataclasses.replace(measured[0], batch_loss={**measured[0].batch_loss, **losses})
    return PointResult(point, lead, Status.OK, None, ranks[0]["traceback"], tuple(ranks[0]["flags"]), settled)


def _lost_peer(message: str) -> bool:
    """An error that only says another rank went away (gloo/NCCL connection loss, timeout)."""
    text = message.lower()
    return any(key in text for key in ("connection closed", "connection reset", "gloo", "nccl", "timed out", "timeout", "broken pipe"))


def _payload(rank: int, outcome: PointResult) -> dict[str, Any]:
    """What a rank sends back: its measurement (raw) and its row (its own medians)."""
    measurement = outcome.measurement if rank == 0 else dataclasses.replace(outcome.measurement, readings=())
    return {"rank": rank, "status": str(outcome.status), "error": outcome.error, "traceback": outcome.traceback, "flags": list(outcome.flags),
            "measurement": measurement.to_json(), "row": outcome.row}


def _init(backend: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s()))


class ExternalRanks:
    """This process is one rank of every point, as started by an external launcher. Passed to
    ``run_sweep``: ``share`` hands rank 0's run id and finished points to every rank, ``run``
    trains a point together and returns the combined result on rank 0 (None elsewhere)."""

    def __init__(self, device: str):
        import torch

        self.rank, self.world, self.local = external_world()
        self.cuda = device.startswith("cuda")
        if self.cuda:
            torch.cuda.set_device(self.local)
        _init("nccl" if self.cuda else "gloo")

    @property
    def writes(self) -> bool:
        return self.rank == 0

    def share(self, header: tuple[str, set[str]] | None) -> tuple[str, set[str]]:
        import torch.distributed as dist

        box = [None if header is None else (header[0], sorted(header[1]))]
        dist.broadcast_object_list(box, src=0)
        run_id, done = box[0]
        return run_id, set(done)

    def run(self, point: PointSpec, workload: Workload) -> PointResult | None:
        import torch.distributed as dist

        if self.cuda:
            point = dataclasses.replace(point, device=f"cuda:{self.local}")
        outcome = run_point(point, workload, rank=None if point.skip_reason else (self.rank, self.world))
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, _payload(self.rank, outcome))
        if self.rank != 0:
            return None
        return outcome if point.skip_reason else combine(point, gathered, 0, "")

    def close(self) -> None:
        import torch.distributed as dist

        dist.destroy_process_group()


def _worker(spec_path: str, out_dir: str) -> int:
    """One rank of a launched point: train with DDP, write ``rank<R>.json``, exit 1 if it failed."""
    import torch
    import torch.distributed as dist

    point = PointSpec.from_json(Path(spec_path).read_text())
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if point.device.startswith("cuda"):
        point = dataclasses.replace(point, device=f"cuda:{local}")
        torch.cuda.set_device(local)
    _init(point.backend)
    try:
        split = datasets.load_split(point.dataset, point.dataset_size, data_seed=point.data_seed, target_column=point.target_column,
                                    check_set=point.check_set, holdout_fraction=point.holdout_fraction)
        outcome = run_point(point, Workload.of(point, split, models.resolve(point.model)), rank=(rank, world))
    except Exception as exc:  # data or plug-in trouble in this rank
        outcome = PointResult(point, Measurement(), Status.ERROR, f"{type(exc).__name__}: {exc}")
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(_payload(rank, outcome), default=float))
    ok = outcome.status == Status.OK
    if ok:
        dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2]))
