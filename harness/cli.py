"""``batchbench`` command line (= ``python -m harness``). Thin: parse, call the library, print.

Every bad input ends with exit code 2 and one line on stderr naming the field; a point that
fails at run time is recorded with its status and the sweep goes on.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
import threading
from typing import Sequence

from pathlib import Path

from harness import __version__
from harness.errors import SpecError
from harness.outputs import output_path, write_output
from harness.store import Store

EXPORT_FORMATS = ("csv", "json", "parquet")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) with a suggestion for a mistyped
    flag, exit code 2, and no abbreviations: ``--batch-size 8`` is not taken for
    ``--batch-sizes`` in silence."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"batchbench: error: {message}{self._suggestion(message)}\n")

    def _suggestion(self, message: str) -> str:
        import difflib

        if not message.startswith("unrecognized arguments:"):
            return ""
        known = set(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    known |= set(parser._option_string_actions)
        for token in message.split(":", 1)[1].split():
            if token.startswith("--"):
                close = difflib.get_close_matches(token.split("=", 1)[0], sorted(known), n=1, cutoff=0.6)
                if close:
                    return f" (did you mean {close[0]}?)"
        return ""


def _spec_flags(parser: argparse.ArgumentParser, names, *, grouped: bool = True) -> dict:
    """Add the flags of these spec fields, with their help from ``spec.sweep.FLAG_HELP``, in
    its groups; returns the groups by title."""
    from harness.spec.sweep import FLAG_GROUPS, FLAG_HELP, flag

    groups = {title: parser.add_argument_group(title) for title in FLAG_GROUPS} if grouped else {}
    for name in names:
        title, text = FLAG_HELP[name]
        target = groups[title] if grouped else parser
        extra = {"action": "store_const", "const": True, "default": None} if name == "stop_at_target" else {}
        target.add_argument(flag(name), help=text, **extra)
    return groups


def _parser() -> _Parser:
    from harness.spec.sweep import FIELDS

    parser = _Parser(prog="batchbench", description="Benchmark and profile mini-batch gradient descent.")
    parser.add_argument("--version", action="version", version=f"batchbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run a sweep and store its points", description="Run a sweep: every dataset size x batch size x device x repeat, phase-timed, stored point by point.")
    run.add_argument("spec_file", nargs="?", metavar="SPEC.toml", help="spec file; flags override its keys")
    groups = _spec_flags(run, FIELDS)
    groups["axes"].add_argument("--nproc", help="shorthand for --world-sizes N")
    out = groups["output"]
    out.add_argument("--store", help="SQLite store [results/batchbench.sqlite]")
    out.add_argument("--resume", action="store_true", help="continue the latest run of the same spec in the store")
    out.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    out.add_argument("--report", metavar="PATH", help="where to write the HTML report [reports/<run id>.html]")
    out.add_argument("--no-report", action="store_true", help="do not write the HTML report")

    report = sub.add_parser("report", help="write the self-contained HTML report of stored runs")
    report.add_argument("--store", default="results/batchbench.sqlite", help="SQLite store [results/batchbench.sqlite]")
    report.add_argument("--run", action="append", dest="runs", metavar="ID", help="run to report (repeatable) [the latest]")
    report.add_argument("--output", "-o", help="HTML file [reports/<run id>.html]")
    report.add_argument("--compare", nargs=2, metavar=("A", "B"), help="before/after: two run ids of --store, or store.sqlite[:RUN] paths")
    report.add_argument("--title", default=None, help="page title")

    analyze = sub.add_parser("analyze", help="steps-to-target, critical batch size and recommendations for a stored sweep")
    analyze.add_argument("--store", default="results/batchbench.sqlite", help="SQLite store [results/batchbench.sqlite]")
    analyze.add_argument("--run", action="append", dest="runs", metavar="ID", help="run to analyze (repeatable) [the latest]")
    analyze.add_argument("--json", action="store_true", help="print JSON instead of tables")

    fit = sub.add_parser("fit", help="memory against batch size, and the largest batch that fits",
                         description="Probe a few batch sizes, fit peak memory = fixed + per_sample x B, and predict the largest batch under the memory limit; on CUDA also find it by probing.")
    fit.add_argument("spec_file", nargs="?", metavar="SPEC.toml", help="spec file (data set, model, optimizer); flags override it")
    _spec_flags(fit, ("dataset", "target_column", "model", "hidden", "optimizer", "momentum", "threads"), grouped=False)
    fit.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N [cpu]")
    fit.add_argument("--batch-sizes", default="64..2048", help="probe batch sizes (may exceed the data set: probes sample with replacement) [64..2048]")
    fit.add_argument("--memory-limit", help="e.g. 8GiB [the device's capacity: GPU memory, or physical RAM]")
    fit.add_argument("--margin", default="0.1", help="share of the limit kept free [0.1]")
    fit.add_argument("--verify", action="store_true", default=None, help="also find the limit by OOM probing (default on CUDA only)")
    fit.add_argument("--json", action="store_true", help="print JSON")
    fit.add_argument("--quiet", action="store_true", help="no progress lines")

    merge = sub.add_parser("merge", help="combine stores (shards of a sweep, or machines) without duplicating points")
    merge.add_argument("stores", nargs="+", metavar="STORE", help="stores to read")
    merge.add_argument("-o", "--output", required=True, help="store to write (created, or added to)")

    export = sub.add_parser("export", help="write a stored table as CSV, JSON or Parquet")
    export.add_argument("--store", default="results/batchbench.sqlite", help="SQLite store [results/batchbench.sqlite]")
    export.add_argument("--table", default="points", help="points, checks, steps, samples or runs [points]")
    export.add_argument("--format", default="csv", help="csv, json or parquet [csv]")
    export.add_argument("--run", action="append", dest="runs", metavar="ID", help="only this run (repeatable) [all runs]")
    export.add_argument("-o", "--output", help="file to write [stdout]")
    return parser


REPEATABLE = {"--run"}
"""Options that may be given more than once; any other given twice is an error (not "last wins")."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    interrupted: list[bool] = []

    def on_interrupt(signum, frame):  # noted here too, in case a library swallows the exception
        interrupted.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        _refuse_repeated_flags(argv)
        code = COMMANDS[args.command](args)
    except SpecError as exc:
        print(f"batchbench: error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:  # a damaged store, found while reading it
        field = "--store" if getattr(args, "store", None) else "-o"
        print(f"batchbench: error: {field}: cannot read {getattr(args, 'store', None) or args.output}: {' '.join(str(exc).split())} "
              "(damaged? `sqlite3 FILE .recover` may save what is left)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        interrupted.append(True)
        code = 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        print("batchbench: interrupted; finished points are stored (rerun with --resume to continue)", file=sys.stderr)
        return 130
    return code


def _refuse_repeated_flags(argv: list[str]) -> None:
    seen: set[str] = set()
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        if not name.startswith("-") or len(name) < 2 or name[1:2].isdigit() or name in REPEATABLE:
            continue
        if name in seen:
            raise SpecError(name, "given twice; give it once (or write the values as one comma list)")
        seen.add(name)


def _run(args: argparse.Namespace) -> int:
    from harness.parallel.collectives import external_world
    from harness.plan import plan
    from harness.spec import FIELDS, build_spec, load_toml
    from harness.store import DEFAULT_STORE
    from harness.sweep import run_sweep

    file_values = load_toml(args.spec_file) if args.spec_file else {}
    flags = {name: getattr(args, name) for name in FIELDS}  # every spec field is a flag of `run`
    if args.nproc is not None:
        if args.world_sizes is not None:
            raise SpecError("--nproc", "give --nproc or --world-sizes, not both")
        flags["world_sizes"] = args.nproc
    launched = external_world()
    if launched is not None:  # started by torchrun: this process is one rank of every point
        given = flags.get("world_sizes") or file_values.get("world_sizes")
        if given is not None and str(given).strip() not in (str(launched[1]), f"[{launched[1]}]"):
            raise SpecError("--world-sizes", f"the launcher started {launched[1]} ranks; leave --world-sizes out or give {launched[1]}")
        flags["world_sizes"] = str(launched[1])
        file_values.pop("world_sizes", None)
    if args.report and not args.no_report:
        output_path(args.report, "--report")
    the_plan = plan(build_spec(file_values, flags))  # every input check happens here, before the store is touched
    store_path = args.store or DEFAULT_STORE
    if launched is not None:
        return _run_as_rank(the_plan, store_path, args)
    say = lambda line: print(f"batchbench: {line}", file=sys.stderr)  # noqa: E731
    with Store(store_path) as store:
        if store.migrated:
            say(f"migrated {store.path} from an older batchbench ({'; '.join(store.migrated)})")
        run_id = run_sweep(the_plan, store, resume=args.resume, progress=None if not args.quiet else False, say=say)
        points = store.load("points", [run_id])
    if not args.quiet:
        from harness.console import points_table

        print(points_table(points))
    failed = int((points["status"] != "ok").sum())
    note = f", {failed} not ok (see the status column)" if failed else ""
    print(f"run {run_id}: {len(points)} points in {store.path}{note}", file=sys.stderr)
    if not args.no_report:
        from harness import report

        with Store.open_existing(store.path) as reader:
            html_text = report.render(report.load(reader, [run_id]))
        print(f"report: {write_output(args.report or f'reports/{run_id}.html', html_text, '--report')}")
    if len(points) and not (points["status"] == "ok").any():
        say(f"every point failed ({', '.join(sorted(set(points['status'])))}); the errors are in the status and error columns")
        return 1
    return 0


def _run_as_rank(the_plan, store_path: str, args: argparse.Namespace) -> int:
    """Under an external launcher: the same sweep on every rank; rank 0 writes the store."""
    from harness.parallel.launch import ExternalRanks
    from harness.sweep import run_sweep

    ranks = ExternalRanks(the_plan.points[0].device)
    store = Store(store_path) if ranks.writes else None
    try:
        run_id = run_sweep(the_plan, store, resume=args.resume, progress=not args.quiet, ranks=ranks)
    finally:
        if store is not None:
            store.close()
        ranks.close()
    if ranks.writes:
        print(f"run {run_id}: stored in {store_path} by rank 0", file=sys.stderr)
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from harness.console import analysis_json, analysis_text
    from harness.analysis.convergence import analyze

    with Store.open_existing(args.store) as store:
        runs = store.select_runs(args.runs)
        points, checks = store.load("points", runs), store.load("checks", runs)
    groups = analyze(points, checks)
    print(analysis_json(groups) if args.json else analysis_text(groups, points))
    return 0


def _fit(args: argparse.Namespace) -> int:
    import json

    from harness.analysis.memory import parse_bytes
    from harness.capacity import fit_capacity
    from harness.console import capacity_text
    from harness.plan import plan
    from harness.spec import build_spec, load_toml
    from harness.spec.expand import resolve_batch_sizes
    from harness.spec.parse import parse_batch_tokens, parse_float

    tokens = parse_batch_tokens(args.batch_sizes)
    if any("full" in t for t in tokens):
        raise SpecError("--batch-sizes", "probes have no 'full'; give sizes or ranges like 64..4096")
    probe_sizes = resolve_batch_sizes(tokens, 2**40, 2**40)
    if len(probe_sizes) < 2:
        raise SpecError("--batch-sizes", "the fit needs at least two probe batch sizes, e.g. 64..2048")
    limit = parse_bytes(args.memory_limit) if args.memory_limit else None
    margin = parse_float("margin", args.margin, 0.0, 1.0, low_open=False)
    file_values = load_toml(args.spec_file) if args.spec_file else {}
    flags = {name: getattr(args, name) for name in ("dataset", "target_column", "model", "hidden", "optimizer", "momentum", "threads")}
    flags.update({"devices": args.device, "batch_sizes": "1", "steps": "2", "noise_samples": "0", "sample_interval": "0.02",
                  "lr_policy": "constant", "repeats": "1", "target_loss": None, "target": None, "target_accuracy": None})
    for key in ("batch_sizes", "dataset_sizes", "devices", "steps", "epochs", "repeats", "lr_policy", "target", "target_loss", "target_accuracy", "stop_at_target", "sampling"):
        file_values.pop(key, None)
    spec = build_spec(file_values, flags)
    the_plan = plan(spec)
    say = (lambda _: None) if args.quiet or args.json else (lambda line: print(f"  probe {line}", file=sys.stderr))
    result = fit_capacity(the_plan, probe_sizes, limit_bytes=limit, margin=margin, verify=args.verify, progress=say)
    print(json.dumps(result.as_json(), indent=1) if args.json else capacity_text(result, spec))
    return 0


def _report(args: argparse.Namespace) -> int:
    from harness import report

    if args.output:
        output_path(args.output, "-o")
    if args.compare:
        sides = [_compare_side(args.store, ref) for ref in args.compare]
        html_text = report.render_compare(sides[0][0], sides[1][0], sides[0][1], sides[1][1])
        name = args.output or "reports/compare.html"
    else:
        with Store.open_existing(args.store) as store:
            data = report.load(store, args.runs)
        if data.runs.empty:
            raise SpecError("--store", f"{args.store} holds no run yet")
        html_text = report.render(data, args.title or "batchbench report")
        name = args.output or f"reports/{data.runs['run_id'].iloc[-1]}.html"
    print(f"report: {write_output(name, html_text, '-o')}")
    return 0


def _compare_side(default_store: str, ref: str):
    """``RUN`` (in --store), ``path/to/store`` (its latest run) or ``path/to/store:RUN``; a
    path is read as written, whatever its suffix."""
    from harness import report

    store_path, run = default_store, ref
    head, sep, tail = ref.rpartition(":")
    if Path(ref).is_file():
        store_path, run = ref, None
    elif sep and Path(head).is_file():
        store_path, run = head, tail or None
    elif "/" in ref or Path(ref).suffix in (".sqlite", ".db"):
        raise SpecError("--compare", f"no store at {ref}; give RUN, STORE or STORE:RUN")
    with Store.open_existing(store_path) as store:
        data = report.load(store, [run] if run else None)
    return data, f"{data.runs['run_id'].iloc[-1] if len(data.runs) else ref}"


def _merge(args: argparse.Namespace) -> int:
    from harness.merge import merge_into

    sources = [Store.open_existing(path, field="STORE") for path in args.stores]  # all checked before writing
    with Store(args.output, field="-o") as out:
        for source in sources:
            with source:
                if source.path.resolve() == out.path.resolve():  # a store holds itself already
                    added, present = 0, len(source.load("points"))
                else:
                    added, present = merge_into(out, source)
            print(f"{source.path}: {added} points added, {present} already present", file=sys.stderr)
    print(f"merged into {args.output}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from harness.records import TABLES

    if args.table not in TABLES:
        raise SpecError("--table", f"{args.table!r} is not a table; use {', '.join(TABLES)}")
    if args.format not in EXPORT_FORMATS:
        raise SpecError("--format", f"{args.format!r} is not a format; use {', '.join(EXPORT_FORMATS)}")
    if args.output:
        output_path(args.output, "-o")
    with Store.open_existing(args.store) as store:
        frame = store.load(args.table, store.select_runs(args.runs) if args.runs else None)
    if args.format == "csv":
        payload: str | bytes = frame.to_csv(index=False)
    elif args.format == "json":
        payload = frame.to_json(orient="records", indent=1) + "\n"
    else:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise SpecError("--format", "parquet needs pyarrow: pip install 'batchbench[parquet]'") from None
        import io

        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        payload = buffer.getvalue()
    if args.output:
        write_output(args.output, payload, "-o")
        print(f"wrote {len(frame)} rows of {args.table} to {args.output}", file=sys.stderr)
    elif isinstance(payload, bytes):
        sys.stdout.buffer.write(payload)
    else:
        sys.stdout.write(payload)
    return 0


COMMANDS = {"run": _run, "analyze": _analyze, "fit": _fit, "report": _report, "merge": _merge, "export": _export}
