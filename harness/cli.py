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

from harness import cli_probe as probe_commands
from harness.cli_args import parser as _parser
from harness.errors import SpecError
from harness.outputs import output_path, write_output
from harness.store.sqlite import Store, load_ref

EXPORT_FORMATS = ("csv", "json", "parquet")


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
    except Exception:  # a library wrapped the interrupt (an import's class body turns it into a RuntimeError)
        if not interrupted:
            raise
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


def _spec(args: argparse.Namespace):
    """The spec of ``run`` and ``tune``: the spec file's keys, overridden by the flags."""
    from harness.config.axes import FIELDS
    from harness.config.spec import build_spec, load_toml

    file_values = load_toml(args.spec_file) if args.spec_file else {}
    return build_spec(file_values, {name: getattr(args, name) for name in FIELDS})


def _tune(args: argparse.Namespace) -> int:
    import json

    from harness.drivers.plan import plan
    from harness.store.sqlite import DEFAULT_STORE
    from harness.drivers.tune.runner import tune, tune_spec

    if args.report and not args.no_report:
        output_path(args.report, "--report")
    if args.world_sizes is not None and args.world_sizes.strip() != "1":
        raise SpecError("--world-sizes", "tune runs single-process trials; give 1 or leave it out")
    the_plan = plan(tune_spec(_spec(args)))
    say = (lambda line: None) if args.quiet else (lambda line: print(f"batchbench: {line}", file=sys.stderr))
    with Store(args.store or DEFAULT_STORE) as store:
        run_id, results = tune(the_plan, store, say=say)
    if args.json:
        groups = [r.as_dict() for r in results]
        print(json.dumps({"run_id": run_id, "store": str(store.path), **groups[0], "groups": groups}, indent=1))
    else:
        from harness.analysis.keys import group_label

        for r in results:
            label = group_label({"dataset": the_plan.spec.dataset, "dataset_size": r.key["dataset_size"], "device": r.key["device"]})
            print(f"{label}: {r.sentence()}")
        print(f"run {run_id} in {store.path}: `batchbench analyze --run {run_id}` shows every trial", file=sys.stderr)
    if not args.no_report:
        from harness import report

        with Store.open_existing(store.path) as reader:
            html_text = report.render(report.load(reader, [run_id]), title="batchbench tune")
        path = write_output(args.report or f"reports/{run_id}.html", html_text, "--report")
        print(f"report: {path}", file=sys.stderr if args.json else sys.stdout)
    return 0 if all(r.choice.best is not None for r in results) else 1


def _run(args: argparse.Namespace) -> int:
    from harness.parallel.collectives import external_world
    from harness.drivers.plan import plan
    from harness.config.axes import FIELDS
    from harness.config.spec import build_spec, load_toml
    from harness.store.sqlite import DEFAULT_STORE
    from harness.drivers.sweep import run_sweep

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
        points, checks = store.load("points", [run_id]), store.load("checks", [run_id])
    if not args.quiet:
        from harness.analysis.convergence import analyze
        from harness.console import points_table, recommendations_text

        print(points_table(points))
        if points[["target_loss", "target_accuracy"]].notna().any().any():
            print("\n" + recommendations_text(analyze(points, checks)))
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
    from harness.drivers.sweep import run_sweep

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


def _report(args: argparse.Namespace) -> int:
    from harness import report

    if args.output:
        output_path(args.output, "-o")
    if args.compare:
        from harness.analysis.compare import compare

        (a, label_a), (b, label_b) = (load_ref(args.store, ref, "--compare", ("points", "steps")) for ref in args.compare)
        html_text = report.render_compare(compare(a["points"], a["steps"], b["points"], b["steps"]), label_a, label_b)
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


def _compare(args: argparse.Namespace) -> int:
    from harness.analysis.compare import MATCH_KEYS, compare
    from harness.console import comparison_text

    match = None
    if args.match:
        match = tuple(k.strip() for k in args.match.split(",") if k.strip())
        unknown = [k for k in match if k not in MATCH_KEYS]
        if unknown or not match:
            raise SpecError("--match", f"{', '.join(unknown) or 'nothing'} is not a configuration key; use a comma list of {', '.join(MATCH_KEYS)}")
    threshold = _factor(args.threshold, "--threshold")
    fail_above = _factor(args.fail_above, "--fail-above") if args.fail_above else None
    if args.html:
        output_path(args.html, "--html")
    tables = ("points", "steps")
    (side_a, label_a), (side_b, label_b) = (load_ref(args.store, ref, field, tables) for ref, field in ((args.a, "A"), (args.b, "B")))
    result = compare(side_a["points"], side_a["steps"], side_b["points"], side_b["steps"], match=match, threshold=threshold)
    if args.json:
        print(result.frame.to_json(orient="records", indent=1))
    else:
        print(comparison_text(result, label_a, label_b))
    if args.html:
        from harness import report

        page = report.render_compare(result, label_a, label_b)
        print(f"report: {write_output(args.html, page, '--html')}", file=sys.stderr if args.json else sys.stdout)
    if fail_above is not None:
        worse = result.regressions(fail_above)
        if len(worse):
            print(f"batchbench: {len(worse)} point(s) significantly slower than {fail_above:g}x (--fail-above)", file=sys.stderr)
            return 1
    return 0


def _factor(text: str, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 1:
        raise SpecError(field, f"{text!r} is not a factor; use a number of at least 1, e.g. 1.1")
    return value


def _merge(args: argparse.Namespace) -> int:
    from harness.store.merge import merge_into

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


def _runs(args: argparse.Namespace) -> int:
    import json

    from harness.console import runs_table, runs_summary

    with Store.open_existing(args.store) as store:
        summary = runs_summary(store.load("runs"), store.load("points"))
    print(json.dumps(summary, indent=1) if args.json else runs_table(summary))
    return 0


def _asv(args: argparse.Namespace) -> int:
    from harness.integrations.asv_init import init

    written = init(Path.cwd(), args.spec_file, force=args.force)
    for item in written:
        note = "wrote" if item.created else "kept (it exists; --force replaces it)"
        print(f"{item.path.relative_to(Path.cwd().resolve())}: {note}", file=sys.stderr)
    print("next: commit your model and spec, then\n"
          "  asv machine --yes        # once per machine\n"
          "  asv run --quick HEAD^!   # the latest commit; asv run A..B for a range, asv continuous A B to compare two\n"
          "  asv publish && asv preview\n"
          "(.asv/ holds environments and results: add it to .gitignore)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from harness.store.schema import TABLES

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


COMMANDS = {"run": _run, "tune": _tune, "runs": _runs, "compare": _compare, "asv": _asv, "analyze": _analyze, "fit": probe_commands.fit, "overhead": probe_commands.overhead, "report": _report, "merge": _merge, "export": _export}
