"""``batchbench report``: the self-contained HTML report of stored runs, or (``--compare A B``)
the before/after page of two runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.flags import runs_flag, store_flag
from harness.errors import SpecError, StoreError
from harness.outputs import output_path, write_output

NAME = "report"
HELP = "write the self-contained HTML report of stored runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    store_flag(parser)
    runs_flag(parser)
    parser.add_argument("--output", "-o", help="HTML file [reports/<run id>.html]")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="before/after: two run ids of --store, or store.sqlite[:RUN] paths")
    parser.add_argument("--title", default=None, help="page title")


def main(args: argparse.Namespace) -> int:
    from harness import report
    from harness.store.sqlite import Store, load_ref, run_ref

    keep = [(args.store, "the store it reads")] + [(run_ref(args.store, ref)[0], "a store it compares") for ref in args.compare or ()]
    if args.output:
        output_path(args.output, "-o", keep)
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
    print(f"report: {write_output(name, html_text, '-o', keep)}")
    return 0


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
                                     f"(`batchbench report --run {run_id}` tries again)") from None
