"""``batchbench runs``: the runs of a store, oldest first: kind, start, points and what they swept."""

from __future__ import annotations

import argparse

from harness.commands.flags import store_flag
from harness.commands.text import layout, to_json
from harness.store.schema import Status, spec_of

NAME = "runs"
HELP = "list the runs in a store: when, what, how many points"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    store_flag(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def main(args: argparse.Namespace) -> int:
    from harness.store.sqlite import Store

    with Store.open_existing(args.store) as store:
        summary = runs_summary(store.load("runs"), store.load("points"))
    print(to_json(summary) if args.json else runs_table(summary))
    return 0


KINDS = ("tune", "cbs")
"""Run kinds other than a sweep, named by their ``spec_hash``'s prefix (``tune:...``);
``overhead`` stores no run."""


def run_kind(spec_hash) -> str:
    """``sweep``, or the command that wrote the run (its hash carries the command's prefix)."""
    prefix = str(spec_hash or "").partition(":")
    return prefix[0] if prefix[1] and prefix[0] in KINDS else "sweep"


def runs_summary(runs, points) -> list[dict]:
    """Per stored run: id, kind (sweep, tune or cbs), start and end, points (ok of all) and what it swept."""
    out = []
    for run_row in runs.to_dict("records"):
        mine = points[points["run_id"] == run_row["run_id"]] if len(points) else points
        spec = spec_of(run_row.get("spec_json"))

        def values(column: str) -> list:
            return sorted(set(mine[column].dropna().tolist())) if len(mine) and column in mine else []

        out.append({
            "run_id": run_row["run_id"],
            "kind": run_kind(run_row.get("spec_hash")),
            "started_at": run_row["started_at"],
            "finished_at": run_row["finished_at"] if isinstance(run_row["finished_at"], str) else None,  # null while unfinished
            "points": int(len(mine)),
            "ok": int((mine["status"] == Status.OK).sum()) if len(mine) else 0,
            "dataset": spec.get("dataset"),
            "model": spec.get("model"),
            "devices": values("device"),
            "batch_sizes": [int(b) for b in values("batch_size")],
            "dataset_sizes": [int(n) for n in values("dataset_size")],
        })
    return out


def runs_table(summary: list[dict]) -> str:
    if not summary:
        return "(no runs)"
    rows = [["run", "kind", "started", "points", "data set", "model", "devices", "batch sizes", "dataset sizes"]]
    for r in summary:
        batches = r["batch_sizes"]
        span = "-" if not batches else (f"{batches[0]}..{batches[-1]} ({len(batches)})" if len(batches) > 2 else ",".join(map(str, batches)))
        rows.append([r["run_id"], r["kind"] + ("" if r["finished_at"] else " (unfinished)"), str(r["started_at"])[:19].replace("T", " "),
                     f"{r['ok']}/{r['points']} ok", str(r["dataset"]), str(r["model"]), ",".join(r["devices"]) or "-", span,
                     ",".join(map(str, r["dataset_sizes"])) or "-"])
    return layout(rows)
