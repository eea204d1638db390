"""``batchbench merge``: join stores without losing a run or duplicating a point.

Runs are identified by their run id and points by (run id, point id), so merging the same store
twice adds nothing, and two machines' runs of one spec stay two runs (``analyze --run A --run
B`` then treats their points as repeats of one configuration). The shards of one sweep
(``--shard I/N``) are the exception: they are parts of one run, so they join into one run
whose spec is the sweep's without the shard. Each source store is merged in one transaction:
all of it or nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from harness.store.sqlite import Store

DETAIL_TABLES = ("checks", "steps", "samples")


def merge_into(out: Store, source: Store) -> tuple[int, int]:
    """Copy ``source``'s runs and points into ``out``; returns (points added, already present).
    The source is read whole first, so ``out``'s write lock is held only while writing (a
    sweep into ``out`` waits seconds, not the length of the read)."""
    added = present = 0
    frames = {table: source.load(table) for table in ("runs", "points", *DETAIL_TABLES)}
    with out.conn:
        out.conn.execute("BEGIN IMMEDIATE")  # what is known is read under the write lock: a concurrent merge waits, then sees our runs
        known = set(out.run_ids())
        shard_runs = dict(out.conn.execute("SELECT spec_hash, run_id FROM runs WHERE spec_hash LIKE 'shards:%'").fetchall())
        for run in _records(frames["runs"]):
            target = run["run_id"]
            if target not in known:
                spec = _spec(run.get("spec_json"))
                if spec.get("shard"):  # a part of a sharded sweep: one run for all its shards
                    spec.pop("shard")
                    key = "shards:" + hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
                    if key in shard_runs:
                        target = shard_runs[key]
                    else:
                        out.insert("runs", [{**run, "spec_json": json.dumps(spec, sort_keys=True), "spec_hash": key}])
                        shard_runs[key] = target
                else:
                    out.insert("runs", [run])
                known.add(target)
            else:
                _finish(out, target, run.get("finished_at"))
            have = {r[0] for r in out.conn.execute("SELECT point_id FROM points WHERE run_id = ?", (target,))}
            points = frames["points"][frames["points"]["run_id"] == run["run_id"]]
            new = points[~points["point_id"].isin(have)]
            ids = set(new["point_id"])
            for table in DETAIL_TABLES:
                rows = frames[table]
                mine = rows[(rows["run_id"] == run["run_id"]) & rows["point_id"].isin(ids)] if len(rows) else rows
                out.insert(table, [{**r, "run_id": target} for r in _records(mine)])
            out.insert("points", [{**r, "run_id": target} for r in _records(new)])
            added += len(new)
            present += len(points) - len(new)
    return added, present


def _finish(out: Store, run_id: str, finished_at: Any) -> None:
    """A run met again (a later copy of it): finished if this copy finished it."""
    if finished_at is not None:
        out.conn.execute("UPDATE runs SET finished_at = ? WHERE run_id = ? AND finished_at IS NULL", (finished_at, run_id))


def _spec(text: Any) -> dict[str, Any]:
    try:
        spec = json.loads(text) if isinstance(text, str) else {}
    except json.JSONDecodeError:
        return {}
    return spec if isinstance(spec, dict) else {}


def _records(frame) -> list[dict[str, Any]]:
    """DataFrame rows as plain Python values, NaN as None (SQLite NULL)."""
    out = []
    for row in frame.to_dict("records"):
        clean = {}
        for key, value in row.items():
            if hasattr(value, "item"):
                value = value.item()
            if isinstance(value, float) and math.isnan(value):
                value = None
            clean[key] = value
        out.append(clean)
    return out
