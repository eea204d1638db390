"""Terminal output: the table a sweep ends with. Formatting only; numbers come from the store."""

from __future__ import annotations

import math

COLUMNS = (
    ("dataset_size", "size", "{:d}"),
    ("batch_size", "batch", "{:d}"),
    ("device", "device", "{}"),
    ("repeat", "rep", "{:d}"),
    ("samples_per_s", "samples/s", "{:,.0f}"),
    ("data_s", "data ms", "{:.3f}"),
    ("derivative_s", "deriv ms", "{:.3f}"),
    ("update_s", "update ms", "{:.3f}"),
    ("loss_check_s", "check ms", "{:.2f}"),
    ("final_eval_loss", "eval loss", "{:.4f}"),
    ("status", "status", "{}"),
    ("flags", "flags", "{}"),
)
MS_COLUMNS = {"data_s", "derivative_s", "update_s", "loss_check_s"}


def _cell(value, fmt: str, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in MS_COLUMNS:
        value = value * 1e3
    if fmt == "{:d}":
        value = int(value)
    return fmt.format(value)


def points_table(points) -> str:
    """Per point: dataset size, batch size, device, samples/s, per-step ms of each phase
    (loss check: ms per check), final eval loss, status and trust flags."""
    if len(points) == 0:
        return "(no points)"
    shown = [c for c in COLUMNS if c[0] != "repeat" or points["repeat"].max() > 0]
    rows = [[title for _, title, _ in shown]]
    ordered = points.sort_values(["dataset_size", "device", "batch_size", "repeat"], kind="stable")
    for record in ordered.to_dict("records"):
        rows.append([_cell(record.get(col), fmt, col) for col, _, fmt in shown])
    widths = [max(len(r[i]) for r in rows) for i in range(len(shown))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if i in (2, len(shown) - 1, len(shown) - 2) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
