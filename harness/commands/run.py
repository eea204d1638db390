"""``batchbench run``: a sweep, every point phase-timed and stored on its own; then the table of
points, the recommendation and the HTML report."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from harness.analysis.keys import short_labels, shown_columns
from harness.commands.flags import DEFAULT_STORE, executor_flags, executor_of, kept_inputs, sweep_flags
from harness.commands.report import write_run_report
from harness.commands.text import layout
from harness.config.execution import Executor
from harness.config.axes import FIELDS
from harness.errors import SpecError
from harness.config.values import parse_int
from harness.store.logs import LogTarget, parse_logs
from harness.outputs import output_path, write_output
from harness.store.schema import display, FAILED, Status

if TYPE_CHECKING:
    import pandas as pd

NAME = "run"
HELP = "run a sweep and store its points"
DESCRIPTION = "Run a sweep: every dataset size x batch size x device x repeat, phase-timed, stored point by point."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    groups = sweep_flags(parser)
    groups["axes"].add_argument("--nproc", help="shorthand for --world-sizes N")
    groups["output"].add_argument("--resume", action="store_true", help="continue the latest run of the same spec in the store")
    groups["output"].add_argument("--quiet", action="store_true", help="no progress bars, no table: only the answer (and failures)")
    groups["output"].add_argument("--log", action="append", metavar="KIND[:WHERE]",
                                  help="also write each point to tensorboard[:DIR] (default runs/) or mlflow[:URI] (default "
                                       "sqlite:///mlflow.db); repeat for both")
    groups["output"].add_argument("--runs", default="1", help="run the whole sweep this many times, each in its own process, into the store "
                                                                "(what `compare` needs to tell a change from the noise between runs) [1]")
    executor_flags(parser)


@dataclass(frozen=True)
class Request:
    """``batchbench run`` as a call: the sweep's flags as given and what the output flags say.
    ``request_of`` reads the Namespace into it, once; ``sweep_command`` does the rest."""

    spec_file: str | None = None
    flags: Mapping[str, Any] = field(default_factory=dict)
    """Each axis's flag as given (None: not given); ``--nproc`` is ``world_sizes`` here."""
    store: str = DEFAULT_STORE
    resume: bool = False
    quiet: bool = False
    logs: tuple[LogTarget, ...] = ()
    runs: int = 1
    executor: Executor = Executor()
    report: str | None = None
    """Where the HTML report goes (None: ``reports/<run id>.html``)."""
    no_report: bool = False


def request_of(args: argparse.Namespace) -> Request:
    """The Namespace, read once, each value parsed (a bad one is a ``SpecError`` naming its flag)."""
    flags = {name: getattr(args, name, None) for name in FIELDS}
    if args.nproc is not None:
        if flags["world_sizes"] is not None:
            raise SpecError("--nproc", "give --nproc or --world-sizes, not both")
        flags["world_sizes"] = str(parse_int("nproc", args.nproc, 1))
    return Request(spec_file=args.spec_file, flags=flags, store=args.store or DEFAULT_STORE, resume=args.resume, quiet=args.quiet,
                   logs=parse_logs(args.log), runs=parse_int("runs", args.runs, 1, 1000),
                   executor=executor_of(args), report=args.report, no_report=args.no_report)


def main(args: argparse.Namespace) -> int:
    return sweep_command(request_of(args))


def sweep_command(request: Request) -> int:
    """Plan the sweep (every input check, before the store is touched), then run it here, in
    ``--runs`` processes, or as this process's rank under a launcher."""
    from harness.config.spec import build_spec, load_toml
    from harness.drivers.plan import plan
    from harness.run.collectives import external_world

    file_values = load_toml(request.spec_file) if request.spec_file else {}
    flags = dict(request.flags)
    launched = external_world()
    if launched is not None:  # started by torchrun: this process is one rank of every point
        given = flags["world_sizes"] or file_values.get("world_sizes")
        if given is not None and str(given).strip() not in (str(launched[1]), f"[{launched[1]}]"):
            raise SpecError("--world-sizes", f"the launcher started {launched[1]} ranks; leave --world-sizes out or give {launched[1]}")
        flags["world_sizes"] = str(launched[1])
        file_values.pop("world_sizes", None)
    if request.runs > 1 and (request.resume or launched is not None):
        raise SpecError("--runs", "starts new runs, each in its own process: leave out --resume, and do not start it under a launcher")
    the_plan = plan(build_spec(file_values, flags))
    keep = kept_inputs(request.store, request.spec_file, the_plan.spec)
    if request.report and not request.no_report:
        output_path(request.report, "--report", keep)
    if launched is not None:
        return _run_as_rank(the_plan, request)
    if request.runs > 1:
        return _run_in_processes(request, keep)
    return _run_here(the_plan, request, keep)


def _run_here(the_plan, request: Request, keep: list) -> int:
    from harness.drivers.sweep import run_sweep
    from harness.store.sqlite import Store

    say = lambda line: print(f"batchbench: {line}", file=sys.stderr)  # noqa: E731
    with Store(request.store) as store:
        if store.migrated:
            say(f"migrated {store.path} from an older batchbench ({'; '.join(store.migrated)})")
        if request.resume:
            the_plan = as_written(the_plan, store, say)
        run_id = run_sweep(the_plan, store, resume=request.resume, progress=None if not request.quiet else False, say=say, logs=request.logs,
                           executor=request.executor)
        points, checks = store.load("points", [run_id]), store.load("checks", [run_id])
    if not request.quiet:
        print(points_table(points) + "\n")
    if points[["target_loss", "target_accuracy"]].notna().any().any():
        print(recommendations_text(points, checks))
    failed = int((points["status"] != Status.OK).sum())
    note = f", {failed} not ok (see the status column)" if failed else ""
    print(f"run {run_id}: {len(points)} points in {store.path}{note}", file=sys.stderr)
    if not request.no_report:
        print(f"report: {write_run_report(store.path, run_id, request.report, keep=keep)}")
    for line in failure_summary(points):
        say(line)
    if len(points) and not (points["status"] == Status.OK).any():
        say(f"every point failed ({', '.join(sorted(set(points['status'])))})")
        return 1
    return 0


def as_written(the_plan, store, say):
    """The plan to resume: this one, or, where the store holds a run of these flags as an older
    batchbench read them (a default changed since: ``compat.earlier_meanings``), that one, so
    the run continues with the points it was started with."""
    from harness.config.compat import earlier_meanings
    from harness.drivers.plan import plan

    if store.find_run(the_plan.sweep_hash, *the_plan.old_hashes) is not None:
        return the_plan
    for spec, why in earlier_meanings(the_plan.spec):
        older = plan(spec)
        if store.find_run(older.sweep_hash, *older.old_hashes) is not None:
            say(f"resuming as the run was written: {why}")
            return older
    return the_plan


def failure_summary(points) -> list[str]:
    """The failed points grouped by their reason, most frequent first: ``3 points: error:
    RuntimeError: Given groups=1 ...``."""
    failed = points[points["status"].isin(FAILED)]
    if failed.empty:
        return []
    counts = failed.groupby(["status", "error"], dropna=False).size().sort_values(ascending=False)
    return [f"{n} point{'s' if n > 1 else ''}: {status}: {error}" for (status, error), n in counts.items()]


def _child(process) -> int:
    """A run's process to its end. A stop of this one (Ctrl-C, SIGTERM, SIGHUP) stops it the
    same way and waits while it stores its point in flight: nothing commits after we exit.
    Ctrl-C at a terminal reaches the child itself; it gets SIGINT from here only if it is still
    running a few seconds later (``kill -INT`` of this process alone)."""
    import signal
    import subprocess

    try:
        return process.wait()
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        if signum == signal.SIGINT:
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt as again:  # a second stop: passed on at once
                signum = getattr(again, "signum", signal.SIGINT)
        if process.poll() is None:
            process.send_signal(signum)
        _wait_through_stops(process)
        raise


def _wait_through_stops(process) -> None:
    """Wait for the child to end; each further stop that arrives meanwhile is passed on to it."""
    import signal

    while True:
        try:
            process.wait()
            return
        except KeyboardInterrupt as again:
            if process.poll() is None:
                process.send_signal(getattr(again, "signum", signal.SIGINT))


def _run_in_processes(request: Request, keep: list) -> int:
    """The sweep ``runs`` times, each in a fresh process, one after the other, into one store:
    each run is one measurement of what varies between processes, which repeats inside one run
    cannot show."""
    import subprocess

    from harness.store.sqlite import Store

    runs, store_path = request.runs, request.store
    command = [sys.executable, "-m", "harness", "run", *child_flags(request)]
    with Store(store_path) as store:
        before = set(store.run_ids())
    for n in range(runs):
        print(f"batchbench: run {n + 1} of {runs} (its own process)", file=sys.stderr, flush=True)
        code = _child(subprocess.Popen(command))
        if code not in (0, 1):
            return code
    with Store.open_existing(store_path) as store:
        new = [r for r in store.run_ids() if r not in before]
        points = store.load("points", new)
    print(f"{len(new)} runs in {store_path}: {', '.join(new)}; `batchbench compare` pools the runs of a store", file=sys.stderr)
    if not request.no_report:
        from harness import report

        with Store.open_existing(store_path) as reader:
            page = report.render(report.load(reader, new))
        print(f"report: {write_output(request.report or f'reports/{new[-1]}.html', page, '--report', keep)}")
    return 0 if (points["status"] == Status.OK).any() else 1


def child_flags(request: Request) -> list[str]:
    """The flags that make a child process run the same sweep: the spec file, every axis given,
    the store; quiet, without a report."""
    from harness.config.axes import AXES

    flags = [request.spec_file] if request.spec_file else []
    for axis in AXES:
        value = request.flags.get(axis.name)
        if value is not None:
            flags += [axis.flag] if axis.flag_kind == "switch" else [axis.flag, str(value)]
    executor = request.executor
    if executor.kind != "local":
        flags += ["--executor", "ray" + (f":{executor.address}" if executor.address else ""), "--retries", str(executor.retries)]
        flags += ["--cpus-per-point", str(executor.cpus_per_point)] if executor.cpus_per_point else []
    return [*flags, "--store", str(request.store), "--quiet", "--no-report"]


def _run_as_rank(the_plan, request: Request) -> int:
    """Under an external launcher: the same sweep on every rank; rank 0 writes the store."""
    from harness.drivers.sweep import run_sweep
    from harness.parallel.launch import ExternalRanks
    from harness.store.sqlite import Store

    ranks = ExternalRanks(the_plan.points[0].device)
    store = Store(request.store) if ranks.writes else None
    try:
        run_id = run_sweep(the_plan, store, resume=request.resume, progress=not request.quiet, ranks=ranks)
    finally:
        if store is not None:
            store.close()
        ranks.close()
    if ranks.writes:
        print(f"run {run_id}: stored in {request.store} by rank 0", file=sys.stderr)
    return 0


def recommendations_text(points, checks) -> str:
    """Per group (device x dataset size x ...), the batch size that reaches the target soonest,
    or why there is none."""
    from harness.analysis.convergence import analyze
    from harness.analysis.recommend import no_answer, recommend

    groups = analyze(points, checks)
    lines = []
    for group, label in zip(groups, short_labels(groups)):
        advice = recommend(group)
        lines.append(f"{label}: " + (advice.sentence() if advice is not None else no_answer(group)))
    return "\n".join(lines)


LEADING_COLUMNS = (("dataset_size", "size"), ("batch_size", "batch"), ("device", "device"))
MEASURED_COLUMNS = (("samples_per_s", "samples/s"), ("data_s", "data ms"), ("derivative_s", "deriv ms"), ("update_s", "update ms"),
                    ("loss_check_s", "check ms"), ("final_eval_loss", "eval loss"), ("status", "status"), ("flags", "flags"))


def varying_columns(points: pd.DataFrame) -> list[tuple[str, str]]:
    """The configuration columns (``analysis.keys.shown_columns``) in which these points differ."""
    leading = {c for c, _ in LEADING_COLUMNS}
    return [(c, t) for c, t in shown_columns() if c not in leading and c in points and points[c].astype(str).nunique() > 1]


def points_table(points: pd.DataFrame) -> str:
    """Per point: dataset size, batch size, device and every configuration column that varies,
    samples/s, per-step ms of each phase (loss check: ms per check), final eval loss, status and
    trust flags."""
    import pandas as pd

    if len(points) == 0:
        return "(no points)"
    config = varying_columns(points)
    shown = [*LEADING_COLUMNS, *config, *MEASURED_COLUMNS]
    inner = ("batch_size", "world_size", "repeat")
    order = ["dataset_size", "device", *(c for c, _ in config if c not in inner), *(c for c in inner if c in points)]
    measured = dict(MEASURED_COLUMNS)

    def cell(value, column: str) -> str:
        if isinstance(value, float) and value.is_integer() and column not in measured:
            value = int(value)
        return display(column, value) or "-"

    rows = [[title for _, title in shown]]
    rows += [[cell(record.get(c), c) for c, _ in shown] for record in points.sort_values(order, kind="stable").to_dict("records")]
    numeric = {i for i, (c, _) in enumerate(shown) if c in points and pd.api.types.is_numeric_dtype(points[c])}
    return layout(rows, numeric)
