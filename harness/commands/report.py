"""``batchbench report``: the self-contained HTML report of stored runs, or (``--compare A B``)
the before/after page of two runs."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from harness.commands.flags import runs_flag, store_flag
from harness.errors import SpecError, StoreError
from harness.outputs import is_stdout, output_path, write_output

NAME = "report"
HELP = "write the self-contained HTML report of stored runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    store_flag(parser)
    runs_flag(parser, "the latest, pooled with the runs just before it that repeat it (run --runs N); the page lists the others")
    parser.add_argument("--output", "-o", help="HTML file; - is standard output [reports/<run id>.html]")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="before/after: two run ids of --store, or store.sqlite[:RUN] paths")
    parser.add_argument("--title", default=None, help="page title")


def main(args: argparse.Namespace) -> int:
    from harness import report
    from harness.store.sqlite import Store, load_ref, run_ref

    keep = [(args.store, "the store it reads")] + [(run_ref(args.store, ref)[0], "a store it compares") for ref in args.compare or ()]
    if args.output:
        output_path(args.output, "-o", keep, stdout=True)
    if args.compare:
        from harness.analysis.compare import compare

        (a, label_a), (b, label_b) = (load_ref(args.store, ref, "--compare", ("points",)) for ref in args.compare)
        html_text = report.render_compare(compare(a["points"], b["points"]), label_a, label_b)
        name = args.output or "reports/compare.html"
    else:
        with Store.open_existing(args.store) as store:
            data = report.load(store, args.runs)
        if data.runs.empty:
            raise SpecError("--store", f"{args.store} holds no run yet")
        html_text = report.render(data, args.title or "batchbench report")
        name = args.output or f"reports/{data.runs['run_id'].iloc[-1]}.html"
    written = write_output(name, html_text, "-o", keep, stdout=True)
    if not is_stdout(written):  # on standard output, the page is all there is
        print(f"report: {written}")
    if not args.compare and shown_line(data):
        print(f"batchbench: {shown_line(data)}", file=sys.stderr)
    return 0


def shown_line(data) -> str:
    """What the page shows where the store holds more than one run: the runs it pools, and how
    many others it lists (empty for a store of one run)."""
    from harness.report.tables import how_shown

    shown, others = list(data.runs["run_id"]), 0 if data.others is None else len(data.others)
    if len(shown) <= 1 and not others:
        return ""
    how = {"repeats": "pooled as repeats", "apart": "side by side", "mixed": "not repeats of one sweep: see the page's warning"}.get(how_shown(data.runs)[0])
    what = f"run {shown[0]}" if len(shown) == 1 else f"{len(shown)} runs, {how} ({', '.join(shown)})"
    rest = f"; it lists the store's {others} other run{'s' * (others > 1)}, each with the command that shows it" if others else ""
    return f"the report shows {what}{rest}"


def write_run_report(store_path: str | Path, run_id: str, path: str | None, title: str = "batchbench report", keep=()) -> Path:
    """The report of one run just stored (``run``, ``tune``): where ``--report`` says, or
    ``reports/<run id>.html``; never over the store or ``keep``'s files. Whatever fails here
    fails after the run was stored: one line saying so (exit 3), not a traceback."""
    from harness import report
    from harness.store.sqlite import Store

    try:
        with Store.open_existing(store_path) as reader:
            html_text = report.render(report.load(reader, [run_id]), title=title)
        return write_output(path or f"reports/{run_id}.html", html_text, "--report", [(store_path, "the store"), *keep])
    except Exception as exc:  # a full disk, too few file handles for the plots, ...: the run itself is safe
        detail = str(exc).split(": ", 1)[-1] if isinstance(exc, SpecError) else f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        raise StoreError("--report", f"run {run_id} is stored in {store_path}, but its report could not be written: {detail[:300]} "
                                     f"(`batchbench report --store {shlex.quote(str(store_path))} --run {run_id}` tries again)") from None
