"""``batchbench merge``: join stores (the shards of a sweep, or several machines' runs) without
losing a run or duplicating a point."""

from __future__ import annotations

import argparse
import sys

NAME = "merge"
HELP = "combine stores (shards of a sweep, or machines) without duplicating points"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stores", nargs="+", metavar="STORE", help="stores to read")
    parser.add_argument("-o", "--output", required=True, help="store to write (created, or added to)")


def main(args: argparse.Namespace) -> int:
    from harness.outputs import store_output_path
    from harness.store.merge import merge_into
    from harness.store.sqlite import Store

    store_output_path(args.output, "-o")  # a file, never standard output, a device or another store's journal
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
