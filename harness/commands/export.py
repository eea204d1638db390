"""``batchbench export``: a stored table as CSV, JSON or Parquet, to a file or stdout; or the
stored points as TensorBoard runs or MLflow runs (``--format tensorboard|mlflow``, ``-o`` the
folder or tracking URI)."""

from __future__ import annotations

import argparse
import sys

from harness.commands.flags import runs_flag, store_flag
from harness.errors import SpecError
from harness.outputs import STDOUT, is_stdout, output_path, write_output

NAME = "export"
HELP = "write a stored table as CSV, JSON or Parquet, or the points to TensorBoard or MLflow"
FORMATS = ("csv", "json", "parquet")
LOGS = ("tensorboard", "mlflow")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    store_flag(parser)
    parser.add_argument("--table", default="points", help="points, checks, steps, samples or runs [points]")
    parser.add_argument("--format", default="csv", help="csv, json or parquet; or tensorboard or mlflow (the points, with -o the "
                                                        "folder or tracking URI) [csv]")
    runs_flag(parser, default="all runs")
    parser.add_argument("-o", "--output", help="file to write; - is standard output [stdout]")


def main(args: argparse.Namespace) -> int:
    from harness.store.schema import TABLES
    from harness.store.sqlite import Store

    if args.table not in TABLES:
        raise SpecError("--table", f"{args.table!r} is not a table; use {', '.join(TABLES)}")
    if args.format in LOGS:
        return _export_logs(args)
    if args.format not in FORMATS:
        raise SpecError("--format", f"{args.format!r} is not a format; use {', '.join(FORMATS + LOGS)}")
    keep, target, example = [(args.store, "the store it reads")], args.output or STDOUT, f"{args.table}.{args.format}"
    output_path(target, "-o", keep, example=example, stdout=True)
    with Store.open_existing(args.store) as store:
        frame = store.load(args.table, store.select_runs(args.runs) if args.runs else None)
    payload = encode(frame, args.format)
    write_output(target, payload, "-o", keep, example=example, stdout=True)
    if not is_stdout(target):
        print(f"wrote {len(frame)} rows of {args.table} to {target}", file=sys.stderr)
    return 0


def encode(frame, fmt: str) -> str | bytes:
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=1) + "\n"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise SpecError("--format", "parquet needs pyarrow: pip install 'batchbench[parquet]'") from None
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _export_logs(args: argparse.Namespace) -> int:
    """Every stored point (of ``--run``, or all runs) as a TensorBoard or MLflow run."""
    from harness.store.logs import open_logs, parse_logs
    from harness.store.sqlite import Store

    (target,) = parse_logs([args.format + (f":{args.output}" if args.output else "")], flag="--format")
    with Store.open_existing(args.store) as store:
        runs = store.select_runs(args.runs) if args.runs else None
        points, checks = store.load("points", runs), store.load("checks", runs)
    by_point = {pid: rows.sort_values("step").to_dict("records") for pid, rows in checks.groupby("point_id")} if len(checks) else {}
    count = 0
    for run_id, rows in points.groupby("run_id", sort=False):
        (log,) = open_logs([target], str(run_id))
        for row in rows.to_dict("records"):
            log.point(row, by_point.get(row["point_id"], []))
            count += 1
    print(f"wrote {count} points to {target.kind} at {target.where}", file=sys.stderr)
    return 0
