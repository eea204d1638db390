"""SQLite store of runs and points (default ``results/batchbench.sqlite``).

WAL mode and one transaction per finished point: a sweep killed at any moment loses only the
point in flight, and ``--resume`` finds the points already committed. A unique index on
``(run_id, point_id)`` makes "each point exactly once" a property of the database, not only of
the runner. ``load()`` gives pandas DataFrames for export and reports.

Two ways to open one, and only the writing one changes anything:

- ``Store(path)`` (``run``, ``merge -o``): creates the store, or opens ours and migrates it from
  an older batchbench (``migrated`` says what changed). A file that holds anything else is
  refused before a byte of it changes.
- ``Store(path, readonly=True)`` (``export``, ``analyze``, ``report``): SQLite's ``mode=ro``;
  nothing is created, migrated or altered, a read-only file is read, and an older store is
  read through its old column names.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from harness.errors import SpecError, StoreError
from harness.config.compat import RENAMED, STORE_FORMAT
from harness.store import locks
from harness.store.schema import AGAIN, TABLES, Recorded

DEFAULT_STORE = "results/batchbench.sqlite"

BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another process's write lock (``merge -o`` into a store a sweep
writes, two sweeps into one store) before it is an error."""


@dataclass(frozen=True)
class Kept:
    """A point as stored (``Store.kept``): its ``points`` row and its ``checks`` rows."""

    row: dict[str, Any]
    checks: list[dict[str, Any]]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


class Store:
    """One SQLite file; ``field`` is how messages name it (``--store``, ``-o``, ``STORE``)."""

    def __init__(self, path: str | Path = DEFAULT_STORE, *, readonly: bool = False, field: str = "--store"):
        self.path, self.readonly, self.field = Path(path), readonly, field
        self.migrated: list[str] = []
        if self.path.is_dir():
            raise SpecError(field, f"{self.path} is a folder; give a store file, e.g. {self.path / 'batchbench.sqlite'}")
        if readonly or (self.path.is_file() and self.path.stat().st_size > 0):
            self.conn = _connect_readonly(self.path, field)
            self.columns = self._columns(being_created_ok=not readonly)
            if not readonly:  # ours: reopen to write (and migrate)
                self.conn.close()
        if not readonly:
            self._open_to_write()
            self.columns = self._columns()

    def _open_to_write(self) -> None:
        """Connect, switch to WAL and create what is missing. Several processes may do this to
        one new file at once: a step that finds the file locked mid-creation (SQLite answers
        some of these at once, without its busy wait) is tried again until ``BUSY_TIMEOUT_S``."""
        import time

        self._create_whole()
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self._create()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                    raise StoreError(self.field, f"cannot write a store at {trouble(self.path, exc)}") from None
                self.conn.close()
                time.sleep(0.05)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(self.field, f"cannot write a store at {self.path}: {exc}") from None

    def _create_whole(self) -> None:
        """A store that is not there yet is made whole under a name of its own beside it, then
        linked into place: a process stopped or killed while creating it leaves no store without
        tables (which every reader refuses). Another process that linked one first wins; where the
        file system has no hard links, the store is created in place as before."""
        if self.path.exists():
            return
        part = self.path.with_name(f".{self.path.name}.{os.getpid()}-{secrets.token_hex(3)}.new")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(part)
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self._create()
            finally:
                self.conn.close()
            os.link(part, self.path)
        except (sqlite3.Error, OSError):  # FileExistsError: another process created it first; or no hard links here
            pass
        finally:
            for leftover in (part, Path(f"{part}-wal"), Path(f"{part}-shm")):
                leftover.unlink(missing_ok=True)

    @classmethod
    def open_existing(cls, path: str | Path, field: str = "--store") -> "Store":
        """An existing store, read-only (the reading commands)."""
        return cls(path, readonly=True, field=field)

    def _columns(self, being_created_ok: bool = False) -> dict[str, list[str]]:
        """The columns each table has in this file; refuses a file that is not a store. With
        ``being_created_ok`` (a writer), a SQLite file holding none or only some of a store's
        tables is one another process is creating this instant: the writer goes on to create
        the rest (``CREATE TABLE IF NOT EXISTS`` under SQLite's write lock)."""
        have = {name: [row[1] for row in self.conn.execute(f'PRAGMA table_info("{name}")')]
                for (name,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if being_created_ok and set(have) <= set(TABLES) and "points" not in have:
            return have
        if not {"run_id", "point_id"} <= set(have.get("points", ())) or "run_id" not in have.get("runs", ()):
            what = "an empty file" if not have else f"tables: {', '.join(sorted(have))}"
            self.conn.close()
            raise SpecError(self.field, f"{self.path} is not a batchbench store ({what}); give a store written by `batchbench run`")
        layout = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if layout > STORE_FORMAT:
            self.conn.close()
            raise SpecError(self.field, f"{self.path} was written by a newer batchbench (store format {layout}, this one reads up to "
                                        f"{STORE_FORMAT}); upgrade batchbench to read it")
        return have

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
                        self.migrated.append(f"{table}.{old} -> {new}")
                added = [name for name in columns if name not in have]
                for name in added:  # a store from an older batchbench gains new columns
                    self.conn.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {columns[name].replace(" PRIMARY KEY", "")}')
                if added and len(added) < len(columns):
                    self.migrated.append(f"{table} +{len(added)} columns")
            if self.conn.execute("PRAGMA user_version").fetchone()[0] != STORE_FORMAT:  # written only when it changes: a store left as it was stays byte for byte
                self.conn.execute(f"PRAGMA user_version = {STORE_FORMAT}")
            self.conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS points_once ON points (run_id, point_id)")
            for table in ("checks", "steps", "samples"):
                self.conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_point ON {table} (run_id, point_id)")

    # ------------------------------------------------------------ writing

    def find_run(self, *spec_hashes: str) -> tuple[str, set[str], bool] | None:
        """The latest run of a sweep, by any of its hashes: (run id, its point ids, finished?)."""
        marks = ", ".join("?" for _ in spec_hashes)
        row = self.conn.execute(
            f"SELECT run_id, finished_at FROM runs WHERE spec_hash IN ({marks}) ORDER BY started_at DESC, rowid DESC LIMIT 1", spec_hashes
        ).fetchone()
        if row is None:
            return None
        done = {r[0] for r in self.conn.execute("SELECT point_id FROM points WHERE run_id = ? AND status NOT IN (?, ?)", (row[0], *AGAIN))}
        return row[0], done, row[1] is not None

    def kept(self, run_id: str) -> dict[str, Kept]:
        """The points of a run that ``--resume`` keeps (every status but those in ``AGAIN``), by
        point id, each with its checks in the order they were stored: what a command that
        decides its next point from the last ones (``tune``, ``cbs``) reads instead of training
        them again."""
        def rows(sql: str, *args: Any) -> list[dict[str, Any]]:
            cursor = self.conn.execute(sql, args)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, values)) for values in cursor]

        checks: dict[str, list[dict[str, Any]]] = {}
        for check in rows("SELECT * FROM checks WHERE run_id = ? ORDER BY rowid", run_id):
            checks.setdefault(check["point_id"], []).append(check)
        points = rows("SELECT * FROM points WHERE run_id = ? AND status NOT IN (?, ?) ORDER BY rowid", run_id, *AGAIN)
        return {row["point_id"]: Kept(row, checks.get(row["point_id"], [])) for row in points}

    def start_run(self, spec_json: str, spec_hash: str, env: dict[str, Any], *, resume: bool, old_hashes: tuple[str, ...] = ()) -> tuple[str, set[str]]:
        """A run id and the point ids it already holds. With ``resume``, the latest run of the
        same sweep continues (found by ``spec_hash`` or an ``old_hashes`` one, which it then
        takes on); otherwise (or when there is none) a new run starts."""
        found = self.find_run(spec_hash, *old_hashes) if resume else None
        if found is not None:
            with self.conn:
                self.conn.execute("UPDATE runs SET spec_hash = ? WHERE run_id = ?", (spec_hash, found[0]))
                for table in ("checks", "steps", "samples", "points"):  # an interrupted or lost point runs again, from its start
                    self.conn.execute(f"DELETE FROM {table} WHERE run_id = ? AND point_id IN "
                                      "(SELECT point_id FROM points WHERE run_id = ? AND status IN (?, ?))", (found[0], found[0], *AGAIN))
            return found[0], found[1]
        run_id = new_run_id()
        with self.conn:
            self.conn.execute(
                "INSERT INTO runs (run_id, started_at, finished_at, spec_json, env_json, spec_hash) VALUES (?, ?, NULL, ?, ?, ?)",
                (run_id, _now(), spec_json, json.dumps(env, sort_keys=True), spec_hash),
            )
        return run_id, set()

    def sweep_lock(self, spec_hash: str, *, resume: bool = True):
        """Held while this process writes the sweep ``spec_hash`` into the store (``store.locks``)."""
        return locks.sweep_lock(self.path, spec_hash, resume=resume, field=self.field)

    lock_path = staticmethod(locks.lock_path)

    def add_point(self, run_id: str, result: Recorded) -> None:
        """Commit a finished point with its checks and steps, all or nothing."""
        point_id = result.row["point_id"]
        with self.conn:
            self._insert("points", [{**result.row, "run_id": run_id}])
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
        """Mark the run finished, once: a ``--resume`` that found nothing to do keeps the time it finished."""
        with self.conn:
            self.conn.execute("UPDATE runs SET finished_at = ? WHERE run_id = ? AND finished_at IS NULL", (_now(), run_id))

    def insert(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        """Insert rows (inside the caller's transaction); an undeclared column is an error."""
        self._insert(table, rows)

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

    # ------------------------------------------------------------ reading

    def run_ids(self) -> list[str]:
        order = "started_at, rowid" if "started_at" in self.columns.get("runs", ()) else "rowid"  # a minimal store some program wrote
        return [r[0] for r in self.conn.execute(f"SELECT run_id FROM runs ORDER BY {order}")]

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
        """A table as a DataFrame (all runs, or the given ones), columns in contract order.
        A column this file lacks reads as null; one it has under a 0.1 name is read by it."""
        import pandas as pd

        if table not in TABLES:
            raise SpecError("--table", f"{table!r} is not a table; use {', '.join(TABLES)}")
        if table not in self.columns:
            return pd.DataFrame(columns=list(TABLES[table]))
        have = set(self.columns[table])
        old_names = {new: old for old, new in RENAMED.get(table, {}).items()}
        select = []
        for column in TABLES[table]:
            source = column if column in have else old_names.get(column) if old_names.get(column) in have else None
            select.append(f'"{source}" AS "{column}"' if source else f'NULL AS "{column}"')
        sql, params = f"SELECT {', '.join(select)} FROM {table}", []
        if run_ids is not None:
            run_ids = list(run_ids)
            sql += f" WHERE run_id IN ({', '.join('?' for _ in run_ids)})"
            params = run_ids
        try:
            frame = pd.read_sql_query(sql + " ORDER BY rowid", self.conn, params=params)
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
            raise StoreError(self.field, f"cannot read the {table} table of {trouble(self.path, exc)}") from None
        return self._numbers(frame, table)

    def _numbers(self, frame, table: str):
        """Numeric columns as numbers: a column SQLite handed back as objects (nulls, or text
        some other program wrote) is converted, and text where a number belongs is refused in
        one line naming the column (readers would fail on it far from here)."""
        import pandas as pd

        for column, kind in TABLES[table].items():
            if kind not in ("INTEGER", "REAL") or pd.api.types.is_numeric_dtype(frame[column]):
                continue
            values = frame[column]
            bad = values[values.notna() & ~values.map(lambda x: isinstance(x, (int, float)) and not isinstance(x, bool))]
            if len(bad):
                shown = repr(bad.iloc[0])[:40]
                raise StoreError(self.field, f"{self.path}: {table}.{column} holds {shown} where a number belongs ({len(bad)} row(s)); "
                                             "the store was changed by something other than batchbench")
            frame[column] = pd.to_numeric(values)
        return frame

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def trouble(path: Path | str, exc: Exception) -> str:
    """``PATH: what SQLite said (what to do)``: a locked or full store is not a damaged one."""
    detail = " ".join(str(exc).split(": ")[-1].split())
    text = detail.lower()
    if "locked" in text or "busy" in text:
        advice = f"another process holds its write lock (waited {BUSY_TIMEOUT_S:g} s); try again when it is done"
    elif "full" in text:
        advice = "free some space; what was committed is kept, and --resume continues"
    elif "readonly" in text or "permission" in text:
        advice = "this process may not write it"
    elif "i/o" in text:
        advice = "the disk or file system failed to read or write; what was committed is kept"
    elif "unable to open" in text and Path(path).is_dir():
        advice = "it is a folder; give a file name"
    elif _intact(path):
        advice = "SQLite's integrity check finds the file intact"
    else:
        advice = "SQLite's integrity check finds it damaged: `sqlite3 FILE .recover` may save what is left"
    return f"{path}: {detail} ({advice})"


def _is_sqlite(path: Path) -> bool:
    """The file starts as every SQLite database does."""
    try:
        with open(path, "rb") as handle:
            return handle.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _intact(path: Path | str) -> bool:
    """``PRAGMA integrity_check`` on a read-only connection says ok."""
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def _connect_readonly(path: Path, field: str) -> sqlite3.Connection:
    """``mode=ro``: SQLite never writes the file. A WAL store in a place this process cannot
    write (no ``-shm`` beside it) opens as ``immutable``, which needs no lock files."""
    if not path.is_file():
        raise SpecError(field, f"no store at {path}; `batchbench run` writes one")
    uri = path.resolve().as_uri()
    last: sqlite3.Error | None = None
    for mode in ("mode=ro", "immutable=1"):
        try:
            conn = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=30)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.DatabaseError as exc:  # not SQLite at all, or damaged: no second try helps
            if not isinstance(exc, sqlite3.OperationalError):
                if _is_sqlite(path):  # a store (or some SQLite file) SQLite cannot read: damaged, a store condition
                    raise StoreError(field, f"cannot use {trouble(path, exc)}") from None
                raise SpecError(field, f"{path} is not a batchbench store (not a SQLite file): {exc}") from None
            last = exc
    if not os.access(path, os.R_OK):
        raise SpecError(field, f"cannot read {path}: permission denied")
    raise SpecError(field, f"cannot open {path}: {last}")


def run_ref(default_store: str, ref: str, field: str = "--compare") -> tuple[str, list[str] | None]:
    """``RUN[,RUN...]`` (in --store), ``path/to/store`` (every run in it) or
    ``path/to/store:RUN[,RUN...]``, as (store path, run ids or None for all); a path is read as
    written, whatever its suffix."""
    store_path, runs = default_store, ref
    head, sep, tail = ref.rpartition(":")
    if Path(ref).is_file():
        return ref, None
    if sep and Path(head).is_file():
        store_path, runs = head, tail
    elif "/" in ref or Path(ref).suffix in (".sqlite", ".db"):
        raise SpecError(field, f"no store at {ref}; give RUN, STORE or STORE:RUN")
    return store_path, [r.strip() for r in runs.split(",") if r.strip()] or None


def load_ref(default_store: str, ref: str, field: str, tables: tuple[str, ...]):
    """The tables of the runs ``ref`` names (``run_ref``) and a label for them: one side of a
    comparison."""
    store_path, runs = run_ref(default_store, ref, field)
    with Store.open_existing(store_path) as store:
        try:
            runs = store.select_runs(runs) if runs else store.run_ids()
        except SpecError as exc:
            raise SpecError(field, str(exc).split(": ", 1)[1]) from None
        if not runs:
            raise SpecError(field, f"{store_path} holds no run yet")
        label = runs[0] if len(runs) == 1 else f"{Path(store_path).name} ({len(runs)} runs)"
        return {table: store.load(table, runs) for table in tables}, label
