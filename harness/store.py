"""SQLite store of runs and points (default ``results/batchbench.sqlite``).

WAL mode and one transaction per finished point: a sweep killed at any moment loses only the
point in flight, and ``--resume`` finds the points already committed. A unique index on
``(run_id, point_id)`` makes "each point exactly once" a property of the database, not only of
the runner. ``load()`` gives pandas DataFrames for export and reports.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from harness.errors import SpecError
from harness.records import RENAMED, TABLES, PointResult

DEFAULT_STORE = "results/batchbench.sqlite"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _records(frame) -> list[dict[str, Any]]:
    """DataFrame rows as plain Python values, NaN as None (SQLite NULL)."""
    import math

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


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


class Store:
    """One SQLite file. Open it with ``Store(path)`` (created if missing) or
    ``Store.open_existing(path)`` for reading."""

    def __init__(self, path: str | Path = DEFAULT_STORE):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self._create()

    @classmethod
    def open_existing(cls, path: str | Path) -> "Store":
        if not Path(path).is_file():
            raise SpecError("--store", f"no store at {path}; run `batchbench run --store {path}` first")
        try:
            return cls(path)
        except sqlite3.DatabaseError as exc:
            raise SpecError("--store", f"{path} is not a batchbench store: {exc}") from None

    def _create(self) -> None:
        with self.conn:
            for table, columns in TABLES.items():
                body = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
                self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
                have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
                for old, new in RENAMED.get(table, {}).items():  # a store from batchbench 0.1: rename in place
                    if old in have and new not in have:
                        self.conn.execute(f'ALTER TABLE {table} RENAME COLUMN "{old}" TO "{new}"')
                        have = (have - {old}) | {new}
                for name, kind in columns.items():  # a store from an older batchbench gains new columns
                    if name not in have:
                        self.conn.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {kind.replace(" PRIMARY KEY", "")}')
            self.conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS points_once ON points (run_id, point_id)")
            for table in ("checks", "steps", "samples"):
                self.conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_point ON {table} (run_id, point_id)")

    # ------------------------------------------------------------ writing

    def start_run(self, spec_json: str, spec_hash: str, env: dict[str, Any], *, resume: bool) -> tuple[str, set[str]]:
        """A run id and the point ids it already holds. With ``resume``, the latest run of the
        same spec continues; otherwise (or when there is none) a new run starts."""
        if resume:
            row = self.conn.execute(
                "SELECT run_id FROM runs WHERE spec_hash = ? ORDER BY started_at DESC, rowid DESC LIMIT 1", (spec_hash,)
            ).fetchone()
            if row is not None:
                done = {r[0] for r in self.conn.execute("SELECT point_id FROM points WHERE run_id = ?", (row[0],))}
                return row[0], done
        run_id = new_run_id()
        with self.conn:
            self.conn.execute(
                "INSERT INTO runs (run_id, started_at, finished_at, spec_json, env_json, spec_hash) VALUES (?, ?, NULL, ?, ?, ?)",
                (run_id, _now(), spec_json, json.dumps(env, sort_keys=True), spec_hash),
            )
        return run_id, set()

    def add_point(self, run_id: str, result: PointResult) -> None:
        """Commit a finished point with its checks and steps, all or nothing."""
        point_id = result.point["point_id"]
        with self.conn:
            self._insert("points", [{**result.point, "run_id": run_id}])
            self._insert("checks", [{**row, "run_id": run_id, "point_id": point_id} for row in result.checks])
            self._insert("steps", [{**row, "run_id": run_id, "point_id": point_id} for row in result.steps])
            self._insert("samples", [{**row, "run_id": run_id, "point_id": point_id} for row in result.samples])

    def update_points(self, run_id: str, updates: Iterable[dict[str, Any]]) -> None:
        """Set columns of stored points (keyed by ``point_id``), in one transaction: used for
        results known only once the whole sweep is in, such as a relative target."""
        with self.conn:
            for row in updates:
                columns = [c for c in row if c != "point_id"]
                unknown = set(columns) - set(TABLES["points"])
                if unknown:
                    raise KeyError(f"points has no column(s) {sorted(unknown)}")
                assignments = ", ".join(f'"{c}" = ?' for c in columns)
                self.conn.execute(
                    f"UPDATE points SET {assignments} WHERE run_id = ? AND point_id = ?",
                    [row[c] for c in columns] + [run_id, row["point_id"]],
                )

    def finish_run(self, run_id: str) -> None:
        with self.conn:
            self.conn.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?", (_now(), run_id))

    def _insert(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        columns = list(TABLES[table])
        unknown = set().union(*rows) - set(columns)
        if unknown:
            raise KeyError(f"{table} has no column(s) {sorted(unknown)}")
        sql = f"INSERT INTO {table} ({', '.join(chr(34) + c + chr(34) for c in columns)}) VALUES ({', '.join('?' for _ in columns)})"
        self.conn.executemany(sql, [tuple(row.get(c) for c in columns) for row in rows])

    def merge_from(self, other: "Store") -> tuple[int, int]:
        """Copy ``other``'s runs and points in, each point once: runs of the same sweep (its
        shards, or the same store twice) join into one run, keyed on the spec without its shard.
        Returns (points added, points already present)."""
        added = skipped = 0
        targets = {self._sweep_key(spec): run_id for run_id, spec in self.conn.execute("SELECT run_id, spec_json FROM runs")}
        for run in other.load("runs").to_dict("records"):
            key = self._sweep_key(run["spec_json"])
            target = targets.get(key)
            with self.conn:
                if target is None:
                    target = targets[key] = run["run_id"]
                    spec = json.loads(run["spec_json"] or "{}")
                    spec.pop("shard", None)
                    self._insert("runs", [{**run, "spec_json": json.dumps(spec, sort_keys=True)}])
                have = {r[0] for r in self.conn.execute("SELECT point_id FROM points WHERE run_id = ?", (target,))}
                points = other.load("points", [run["run_id"]])
                for table in ("checks", "steps", "samples"):
                    rows = other.load(table, [run["run_id"]])
                    rows = rows[~rows["point_id"].isin(have)]
                    self._insert(table, [{**r, "run_id": target} for r in _records(rows)])
                new = points[~points["point_id"].isin(have)]
                self._insert("points", [{**r, "run_id": target} for r in _records(new)])
            added += len(new)
            skipped += len(points) - len(new)
        return added, skipped

    @staticmethod
    def _sweep_key(spec_json: str | None) -> str:
        spec = json.loads(spec_json or "{}")
        spec.pop("shard", None)
        return json.dumps(spec, sort_keys=True)

    # ------------------------------------------------------------ reading

    def run_ids(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT run_id FROM runs ORDER BY started_at, rowid")]

    def select_runs(self, run_ids: Iterable[str] | None = None) -> list[str]:
        """The given runs, each checked to exist (``--run``), or the latest one."""
        known = self.run_ids()
        if not run_ids:
            return known[-1:]
        run_ids = list(run_ids)
        missing = [r for r in run_ids if r not in known]
        if missing:
            raise SpecError("--run", f"no run {missing[0]} in {self.path}; runs: {', '.join(known[-5:]) or 'none'}")
        return run_ids

    def load(self, table: str, run_ids: Iterable[str] | None = None):
        """A table as a DataFrame (all runs, or the given ones), columns in contract order."""
        import pandas as pd

        if table not in TABLES:
            raise SpecError("--table", f"{table!r} is not a table; use {', '.join(TABLES)}")
        columns = ", ".join(f'"{c}"' for c in TABLES[table])
        sql, params = f"SELECT {columns} FROM {table}", []
        if run_ids is not None:
            run_ids = list(run_ids)
            sql += f" WHERE run_id IN ({', '.join('?' for _ in run_ids)})"
            params = run_ids
        return pd.read_sql_query(sql + " ORDER BY rowid", self.conn, params=params)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
