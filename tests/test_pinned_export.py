"""What a user's scripts read changes only on purpose (a CHANGELOG line, and a re-pin): the
export of a seeded sweep (its points, checks and runs) and the export of a store 0.6.0 wrote
(every table, CSV and JSON; since 0.7.0 with the three columns of where a point ran).

The seeded sweep's clock readings (times, memory, utilisation, timestamps, the machine) are
masked; everything else (columns, their order, ids, statuses, step counts, losses) must come out
as pinned. Losses are compared to 6 significant digits, so a CPU with other vector units passes;
on the machine that pinned them they match byte for byte. The stored one is byte for byte.
Re-pin (on purpose, with a CHANGELOG line) with ``BATCHBENCH_PIN=1``."""

import csv
import io
import json
import os
import sqlite3

import pytest

from conftest import ROOT
from harness.store.sqlite import Store

PINNED = ROOT / "tests" / "data" / "export-0.6.0"
FLAGS = ("--devices", "cpu", "--threads", "1", "--dataset", "blobs", "--dataset-sizes", "200", "--batch-sizes", "4,16", "--steps", "30",
         "--check-every", "10", "--repeats", "2")
CLOCK = {"run_id", "wall_s", "samples_per_s", "steps_per_s", "data_s", "derivative_s", "update_s", "loss_check_s", "data_total_s",
         "derivative_total_s", "update_total_s", "loss_check_total_s", "step_wall_s", "time_to_target_s", "compute_to_target_s",
         "peak_rss_bytes", "cpu_util_mean_pct", "step_wall_iqr_s", "check_peak_rss_bytes", "achieved_tflops", "refine_s", "compute_s",
         "started_at", "finished_at", "env_json", "device_name", "noise_scale_total_s", "gpu_util_mean_pct", "comm_s",
         "step_wall_ci_pct", "timed_steps", "host"}
"""Columns that read a clock, the machine or the moment (and how many steps were timed, which
follows from a mark's cost against a step's): masked where they hold a value."""
TABLES = ("points", "checks", "runs")


def _masked_csv(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    masked = [[("<clock>" if cell and name in CLOCK else cell) for name, cell in zip(header, row)] for row in body]
    return [header, *masked]


def _same_cell(got: str, want: str) -> bool:
    if got == want:
        return True
    try:
        a, b = float(got), float(want)
    except ValueError:
        return False
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def _pin_or_compare(name: str, got: str) -> None:
    path = PINNED / name
    if os.environ.get("BATCHBENCH_PIN"):
        path.write_text(got)
        return
    assert got == path.read_text(), f"{name} is not the pinned export"


def _export(cli, store, table: str, fmt: str) -> str:
    code, out, err = cli("export", "--store", store, "--table", table, "--format", fmt)
    assert code == 0, err
    return out


@pytest.mark.slow
def test_a_seeded_sweep_exports_as_pinned(tmp_path, cli):
    store = tmp_path / "sweep.sqlite"
    code, _, err = cli("run", *FLAGS, "--quiet", "--no-report", "--store", store)
    assert code == 0, err
    for table in TABLES:
        got = _masked_csv(_export(cli, store, table, "csv"))
        if os.environ.get("BATCHBENCH_PIN"):
            with (PINNED / f"sweep-{table}.csv").open("w", newline="") as handle:
                csv.writer(handle, lineterminator="\n").writerows(got)
            continue
        want = list(csv.reader((PINNED / f"sweep-{table}.csv").open(newline="")))
        assert got[0] == want[0], f"{table}: the columns are not the pinned ones"
        assert len(got) == len(want), f"{table}: {len(got) - 1} rows, pinned {len(want) - 1}"
        for at, (row, pinned) in enumerate(zip(got[1:], want[1:])):
            wrong = [f"{name}={a!r} (pinned {b!r})" for name, a, b in zip(want[0], row, pinned) if not _same_cell(a, b)]
            assert not wrong, f"{table} row {at}: {', '.join(wrong)}"


def test_a_0_6_0_store_exports_byte_for_byte_as_pinned(tmp_path, cli):
    """A store 0.6.0 wrote for the flags above, every table as CSV and JSON."""
    path = tmp_path / "store.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript((PINNED / "store.sql").read_text())
    with Store.open_existing(path) as store:
        tables = [t for t in ("points", "checks", "steps", "samples", "runs") if len(store.load(t))]
    assert set(tables) >= set(TABLES)
    for table in tables:
        for fmt in ("csv", "json"):
            _pin_or_compare(f"store-{table}.{fmt}", _export(cli, path, table, fmt))
    json.loads((PINNED / "store-points.json").read_text())  # the pinned JSON is JSON
