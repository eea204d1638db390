"""Where a sweep's points run: here, one after another (``Local``, the default), or as Ray tasks
spread over every core, GPU and node of a cluster (``OnRay``, ``--executor ray[:ADDRESS]``).

Either way a point is one ``run_point`` (its ranks launched, where it is data-parallel) and its
result comes back to the sweep's process, the store's only writer, which commits each point as
it arrives. Point ids, the store and ``--resume`` do not depend on the executor; each point
records where it ran (``host``), the executor, and how many other points ran on its node while
it was measured (``co_running``).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any, Callable, Iterator

from harness.config.points import PointSpec
from harness.config.execution import Executor
from harness.errors import SpecError
from harness.parallel.launch import ExternalRanks, launch
from harness.run.engine import run_point
from harness.run.guard import one_line
from harness.run.measurement import Measurement, PointResult
from harness.run.snapshot import Snapshot
from harness.store.schema import FAILED, Status
from harness.workload import models
from harness.workload.datasets import Split
from harness.workload.workload import Workload

RAY_EXTRA = "batchbench[ray]"

Call = tuple[PointSpec, dict[str, Any]]
"""A point to run, with ``run_point``'s options for it: ``start`` (the snapshot it continues
from), ``prune``, ``measure_after_target``, ``timeout_s``; and ``keep`` (True: return the
snapshots it kept at its checks: ``batchbench cbs``'s base run and ramp)."""


def _run_call(point: PointSpec, workload: Workload, options: dict[str, Any]) -> tuple[PointResult, list[Snapshot]]:
    options = dict(options)
    snapshots: list[Snapshot] = []
    if options.pop("keep", False):
        options["snapshots"] = snapshots
    if point.world_size > 1 and not point.skip_reason:  # its ranks, launched from here (a sweep's point: no other options)
        return launch(point), snapshots
    return run_point(point, workload, **options), snapshots


HOST = socket.gethostname()


def run_one(point: PointSpec, workload: Workload, progress: Callable[[int, int], None] | None = None,
            timeout_s: float | None = None) -> PointResult:
    """One point in this process, or its ranks launched when it is data-parallel."""
    if point.world_size > 1 and not point.skip_reason:
        return launch(point)
    return run_point(point, workload, progress=progress, timeout_s=timeout_s)


class PointsInterrupted(KeyboardInterrupt):
    """Ctrl-C while points ran on Ray: ``results`` are the points in flight (status
    ``interrupted``), for the sweep to store before it stops."""

    def __init__(self, results: list[PointResult]):
        super().__init__(Status.INTERRUPTED.value)
        self.results = results


class Local:
    """The points one after another in this process (under ``torchrun``: this rank's part of
    each, ``ranks``)."""

    name = "local"

    def __init__(self, ranks: ExternalRanks | None = None, show: bool = False, timeout_s: float | None = None):
        self.ranks, self.show, self.timeout_s = ranks, show, timeout_s

    def __enter__(self) -> Local:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def results(self, todo: list[PointSpec], workload: Callable[[PointSpec], Workload],
                note: Callable[[str], None]) -> Iterator[PointResult | None]:
        """Each point's result as it finishes (None on a rank that does not write); ``note``
        tells the sweep's bar what is running."""
        for point in todo:
            note(f"{point.dataset_size}x B={point.batch_size} {point.device} r{point.repeat}")
            with StepBar(point, self.show) as steps:
                result = (self.ranks.run(point, workload(point)) if self.ranks is not None
                          else run_one(point, workload(point), steps.update, self.timeout_s))
            yield None if result is None else result.settle(host=HOST, executor=self.name, co_running=0)

    def later(self) -> list[dict[str, Any]]:
        """Columns of stored points that changed once later points ran (none here)."""
        return []

    def stop(self) -> list[PointResult]:
        """The points in flight after Ctrl-C between points: none here."""
        return []

    def calls(self, calls: list[Call], workload: Callable[[PointSpec], Workload]) -> Iterator[tuple[int, PointResult, list[Snapshot]]]:
        """Each call (a point, continued from a snapshot or keeping them), in order, as
        (its index, its result, the snapshots it kept)."""
        for index, (point, options) in enumerate(calls):
            result, snapshots = _run_call(point, workload(point), options)
            yield index, result.settle(host=HOST, executor=self.name, co_running=0), snapshots


class OnRay:
    """Each point a Ray task, asking for what it needs: a CUDA point its ranks' GPUs, a CPU point
    ``cpus_per_point`` cores. Ray decides where each runs; results come back here as they finish."""

    name = "ray"

    def __init__(self, executor: Executor, say: Callable[[str], None] = lambda line: None, timeout_s: float | None = None):
        self.executor, self.say, self.timeout_s, self.owned = executor, say, timeout_s, False
        self.spans: dict[str, tuple[str, float, float]] = {}
        """point id -> (host, start, end) of every point that came back."""
        self.told: dict[str, int] = {}
        self.pending: dict[Any, tuple[int, PointSpec]] = {}
        """The tasks in flight (Ray's references), with their calls' index and point."""

    def __enter__(self) -> OnRay:
        ray = import_ray()
        if not ray.is_initialized():
            address = "local" if self.executor.address is None else self.executor.address
            self.say("starting a Ray instance for this sweep" if address == "local" else f"joining the Ray cluster at {address}")
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            self.owned = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.owned:
            import_ray().shutdown()

    def results(self, todo: list[PointSpec], workload: Callable[[PointSpec], Workload],
                note: Callable[[str], None]) -> Iterator[PointResult | None]:
        failed, in_flight = 0, len(todo)
        options = {} if self.timeout_s is None else {"timeout_s": self.timeout_s}  # --point-timeout, in the worker
        for _, result, _ in self.calls([(point, options) for point in todo], workload):
            in_flight -= 1
            failed += result.status in FAILED
            nodes = len({host for host, _, _ in self.spans.values()})
            note(f"{in_flight} in flight, {failed} failed, {nodes} node{'s' if nodes != 1 else ''} so far")
            yield result

    def calls(self, calls: list[Call], workload: Callable[[PointSpec], Workload]) -> Iterator[tuple[int, PointResult, list[Snapshot]]]:
        """Every call at once, a task each; (its index, its result, the snapshots it kept) as
        each comes back. Ctrl-C stops waiting for those in flight (``PointsInterrupted``)."""
        ray = import_ray()
        _ship_plugins()
        task = ray.remote(_point_task)
        splits: dict[int, Any] = {}
        pending = self.pending = {}
        cpus = self.executor.cpus_per_point or _smallest_node_cpus(ray)
        for index, (point, call_options) in enumerate(calls):
            load = workload(point)
            if point.dataset_size not in splits:  # each data set once into the object store, shared by its points
                splits[point.dataset_size] = ray.put(load.split)
            gpus = point.world_size if point.device.startswith("cuda") else 0
            options = {"num_cpus": 1 if gpus else cpus, "num_gpus": gpus, "max_retries": self.executor.retries, "retry_exceptions": False}
            pending[task.options(**options).remote(point, splits[point.dataset_size], load.factory, call_options)] = (index, point)
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                index, point = pending.pop(ref)
                yield index, *self._arrived(ray, ref, point)
        except KeyboardInterrupt:
            raise PointsInterrupted(self.stop()) from None

    def stop(self) -> list[PointResult]:
        """The points in flight at Ctrl-C, as ``interrupted`` for the caller to store
        (``--resume`` runs them again). Their tasks are not cancelled here: they end with this
        process, which owns them (``ray.cancel`` of a task whose reply is on its way trips a
        check in Ray 2.60's core worker and aborts the process)."""
        stopped = [PointResult(point, Measurement(), Status.INTERRUPTED, "interrupted (Ctrl-C) while on Ray") for _, point in self.pending.values()]
        self.pending = {}
        return stopped

    def _arrived(self, ray, ref, point: PointSpec) -> tuple[PointResult, list[Snapshot]]:
        try:
            result, snapshots, host, start, end = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the task itself raised (a plug-in that cannot be imported on the worker, say)
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            return PointResult(point, Measurement(), Status.ERROR, f"on a Ray worker: {one_line(cause)}", traceback=str(exc),
                               settled={"executor": self.name}), []
        except ray.exceptions.RayError as exc:  # its worker or node died past --retries (user errors are the point's status)
            reason = " ".join(str(exc).split())[:300]
            return PointResult(point, Measurement(), Status.LOST, f"lost after {self.executor.retries} retries: {type(exc).__name__}: {reason}",
                               settled={"executor": self.name}), []
        self.spans[point.point_id] = (host, start, end)
        co = self._co_running(point.point_id)
        self.told[point.point_id] = co
        return result.settle(host=host, executor=self.name, co_running=co), snapshots

    def _co_running(self, point_id: str) -> int:
        host, start, end = self.spans[point_id]
        return sum(1 for other, (h, s, e) in self.spans.items() if other != point_id and h == host and s < end and start < e)

    def later(self) -> list[dict[str, Any]]:
        """``co_running`` of stored points that grew as points that ran beside them came back."""
        now = {point_id: self._co_running(point_id) for point_id in self.spans}
        return [{"point_id": point_id, "co_running": co} for point_id, co in now.items() if co != self.told.get(point_id)]


def _point_task(point: PointSpec, split: Split, factory: models.Factory,
                options: dict[str, Any]) -> tuple[PointResult, list[Snapshot], str, float, float]:
    """A Ray task: one call (``Call``) on this worker, with where and when it ran."""
    import ray

    began = time.time()
    result, snapshots = _run_call(point, Workload.of(point, split, factory), options)
    node = ray.get_runtime_context().get_node_id()
    return result, snapshots, f"{socket.gethostname()}/{node[:8]}", began, time.time()


def import_ray():
    try:
        import ray
    except ImportError:
        raise SpecError("--executor", f"ray is not installed; pip install '{RAY_EXTRA}'") from None  # checked at parse time too
    return ray


def _smallest_node_cpus(ray) -> int:
    alive = [n for n in ray.nodes() if n.get("Alive")]
    return max(1, int(min((n["Resources"].get("CPU", 1) for n in alive), default=os.cpu_count() or 1)))


def _ship_plugins() -> None:
    """Plug-in modules loaded from files (``file.py:callable``), and the modules beside them that
    they imported (not installed packages, not batchbench), travel with the tasks, by value: a
    worker on another node has no such files to import."""
    from pathlib import Path

    from ray import cloudpickle

    plugins = [m for name, m in list(sys.modules.items()) if name.startswith("batchbench_plugin_") and getattr(m, "__file__", None)]
    folders = {Path(m.__file__).resolve().parent for m in plugins}
    installed = {Path(p).resolve() for p in {sys.prefix, sys.base_prefix, *(x for x in sys.path if "-packages" in x)}}
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if not where or name.startswith("harness") or "." in name:
            continue
        path = Path(where).resolve()
        beside = any(folder in path.parents for folder in folders)
        if (name.startswith("batchbench_plugin_") or beside) and not any(root in path.parents for root in installed):
            cloudpickle.register_pickle_by_value(module)


class StepBar:
    """A point's own bar (steps, with an ETA), shown only on a terminal and only once the point
    has run for ``DELAY_S``: short points never show one. Updated at the loss checks, between
    steps and outside every timed window, so it costs the loop nothing."""

    DELAY_S = 3.0

    def __init__(self, point: PointSpec, show: bool):
        self.point, self.show, self.bar = point, show, None

    def __enter__(self) -> StepBar:
        if self.show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.point.steps, delay=self.DELAY_S, leave=False, unit="step", desc=f"  B={self.point.batch_size}",
                            file=sys.stderr)
        return self

    def update(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()


def executor_for(executor: Executor, ranks: ExternalRanks | None = None, show: bool = False, timeout_s: float | None = None,
                 say: Callable[[str], None] = lambda line: None) -> Local | OnRay:
    if executor.kind == "ray":
        if ranks is not None:
            raise SpecError("--executor", "ray runs the ranks of a data-parallel point itself; do not start batchbench under torchrun with it")
        return OnRay(executor, say, timeout_s)
    return Local(ranks, show, timeout_s)

