"""``batchbench export``: a stored table as CSV, JSON or Parquet, to a file or stdout."""

from __future__ import annotations

import argparse
import sys

from harness.commands.flags import runs_flag, store_flag
from harness.errors import SpecError
from harness.outputs import output_path, write_output

NAME = "export"
HELP = "write a stored table as CSV, JSON or Parquet"
FORMATS = ("csv", "json", "parquet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    store_flag(parser)
    parser.add_argument("--table", default="points", help="points, checks, steps, samples or runs [points]")
    parser.add_argument("--format", default="csv", help="csv, json or parquet [csv]")
    runs_flag(parser, default="all runs")
    parser.add_argument("-o", "--output", help="file to write [stdout]")


def run(args: argparse.Namespace) -> int:
    from harness.store.schema import TABLES
    from harness.store.sqlite import Store

    if args.table not in TABLES:
        raise SpecError("--table", f"{args.table!r} is not a table; use {', '.join(TABLES)}")
    if args.format not in FORMATS:
        raise SpecError("--format", f"{args.format!r} is not a format; use {', '.join(FORMATS)}")
    if args.output:
        output_path(args.output, "-o")
    with Store.open_existing(args.store) as store:
        frame = store.load(args.table, store.select_runs(args.runs) if args.runs else None)
    payload = encode(frame, args.format)
    if args.output:
        write_output(args.output, payload, "-o")
        print(f"wrote {len(frame)} rows of {args.table} to {args.output}", file=sys.stderr)
    elif isinstance(payload, bytes):
        sys.stdout.buffer.write(payload)
    else:
        sys.stdout.write(payload)
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
