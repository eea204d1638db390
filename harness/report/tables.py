"""The report's HTML tables: the Summary (environment, swept axes, recommendations) and the
sortable table of points. Values are formatted by ``store.schema.display``, as in the terminal."""

from __future__ import annotations

import base64
import html
import json

import pandas as pd

from harness.analysis.keys import shown_columns
from harness.analysis.recipe import describe
from harness.analysis.recommend import recommend

from harness.store.schema import Status, display


TABLE_COLUMNS = [
    ("dataset_size", "N"), ("batch_size", "batch"), ("device", "device"), ("repeat", "rep"), ("lr", "lr"), ("sampling", "sampling"),
    ("status", "status"), ("samples_per_s", "samples/s"), ("data_s", "data ms"), ("derivative_s", "deriv ms"), ("update_s", "update ms"),
    ("loss_check_s", "check ms"), ("step_wall_s", "step ms"), ("steps_to_target", "steps→target"), ("time_to_target_s", "time→target s"),
    ("final_train_loss", "train loss"), ("final_eval_loss", "eval loss"), ("final_eval_acc", "eval acc"), ("peak_rss_bytes", "peak RSS MiB"),
    ("peak_device_mem_bytes", "peak dev MiB"), ("flags", "flags"), ("error", "error"),
]


def fmt(column: str, value) -> str:
    """A cell: the value as ``store.schema.display`` writes it, escaped for HTML."""
    return html.escape(display(column, value))


def points_table(points: pd.DataFrame) -> str:
    fixed = {c for c, _ in TABLE_COLUMNS}
    varying = [(c, t) for c, t in shown_columns() if c not in fixed and c in points and points[c].astype(str).nunique() > 1]
    at = [c for c, _ in TABLE_COLUMNS].index("device") + 1
    columns = TABLE_COLUMNS[:at] + varying + TABLE_COLUMNS[at:]
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    rows = []
    ordered = points.sort_values(["dataset_size", "device", *(c for c, _ in varying), "batch_size", "lr", "repeat"], kind="stable")
    for record in ordered.to_dict("records"):
        cells = "".join(f"<td data-v=\"{html.escape(str(record.get(c)))}\">{fmt(c, record.get(c))}</td>" for c, _ in columns)
        rows.append(f"<tr class=\"{'' if record.get('status') == Status.OK else 'bad'}\">{cells}</tr>")
    csv = base64.b64encode(points.to_csv(index=False).encode()).decode()
    return (f"<p><a download=\"points.csv\" href=\"data:text/csv;base64,{csv}\">Download all {len(points)} points as CSV</a> "
            f"(every column of the <code>points</code> table). Click a header to sort.</p>"
            f"<div class=\"scroll\"><table id=\"points\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _values(column: pd.Series) -> str:
    """The distinct values of a column, sorted, nulls left out (rows added by hand may have them)."""
    values = sorted(column.dropna().unique())
    return ", ".join(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in values) or "none"


def _tied(group) -> str:
    others = [b for b in group.tied if b != group.best_batch]
    return f"<br><small>tied within noise: {', '.join(map(str, group.tied))}</small>" if others else ""


def _lr(group) -> str:
    """The learning rate the best batch size ran at (tuned: the grid's best there)."""
    if group.best_batch is None:
        return ""
    lr = group.table.set_index("batch_size").loc[group.best_batch, "lr"]
    return f"<br><small>at lr {lr:.4g}</small>"


def _recipe(points: pd.DataFrame, run_id: str, spec: dict) -> str:
    """The recipe a run's points recorded (a LightningModule's own, a plug-in's), and how the
    rate moves across batch sizes; the spec's words only where the run has no point yet."""
    mine = points[points["run_id"] == run_id] if len(points) and "run_id" in points else points
    if not len(mine):
        return f"{spec.get('optimizer')}, lr policy {spec.get('lr_policy', 'constant')}"
    policies = ", ".join(sorted(set(mine["lr_policy"].dropna().astype(str)))) or "constant"
    across = {"constant": "the same rate at every batch size", "tuned": "the rate tuned per batch size"}.get(policies, f"the rate scaled by the {policies} rule")
    return f"{describe(mine.to_dict('records'))}; {across}"


def summary_html(data, ok: pd.DataFrame, groups, target_note: bool = True) -> str:
    """Environment, swept axes and, per device and dataset size, the recommendations (``data``:
    the ``ReportData`` being rendered)."""
    points = data.points
    parts = []
    for record in data.runs.to_dict("records"):
        env = json.loads(record["env_json"] or "{}")
        spec = json.loads(record["spec_json"] or "{}")
        devices = ", ".join(f"{d} ({name})" for d, name in (env.get("devices") or {}).items())
        parts.append(
            "<dl class=\"env\">"
            f"<dt>run</dt><dd>{html.escape(record['run_id'])}, started {html.escape(str(record['started_at']))}</dd>"
            f"<dt>workload</dt><dd>{html.escape(str(spec.get('model')))} on {html.escape(str(spec.get('dataset')))}, {html.escape(_recipe(points, record['run_id'], spec))}, "
            f"sampling {html.escape(', '.join(spec.get('sampling') or []) if isinstance(spec.get('sampling'), list) else str(spec.get('sampling')))}</dd>"
            f"<dt>machine</dt><dd>{html.escape(str(env.get('cpu_model')))}, {env.get('cpu_count')} CPUs; devices: {html.escape(devices)}</dd>"
            f"<dt>software</dt><dd>torch {html.escape(str(env.get('torch_version')))}, Python {html.escape(str(env.get('python')))}, "
            f"batchbench {html.escape(str(env.get('batchbench_version')))}, {env.get('threads')} thread(s)"
            + (f", code at {html.escape(str(env.get('git_commit'))[:12])}" if env.get("git_commit") else "") + "</dd></dl>"
        )
    statuses = points["status"].value_counts().to_dict() if len(points) else {}
    swept = (f"<p>{len(points)} points: batch sizes {_values(points['batch_size'])}; "
             f"dataset sizes {_values(points['dataset_size'])}; "
             f"devices {html.escape(_values(points['device']))}; statuses "
             + ", ".join(f"{k} {v}" for k, v in statuses.items()) + ".</p>") if len(points) else "<p>This run has no points.</p>"
    from harness.analysis.keys import short_labels

    labels = short_labels(groups)
    rec_rows = []
    for g, label in zip(groups, labels):
        table = g.table.set_index("batch_size")

        def cell(batch, column, fmt):
            return f"<b>{batch}</b> ({fmt.format(table.loc[batch, column])})" if batch is not None else "—"

        rec_rows.append(
            f"<tr><td>{html.escape(label)}</td>"
            f"<td>{cell(g.best_batch, 'train_s', '{:.3g} s of training to target')}{_lr(g)}{_tied(g)}</td>"
            f"<td>{cell(g.best_batch_by_throughput, 'samples_per_s', '{:,.0f} samples/s')}</td>"
            f"<td>{f'<b>{g.fit.b_crit_text()}</b> (S_min {g.fit.s_min:.3g} steps, RMS log err {g.fit.rms_log_error:.2f})' if g.fit else '— (needs four batch sizes that reached the target)'}</td></tr>"
        )
    rec = ("<table class=\"rec\"><thead><tr><th>configuration</th><th>best by time-to-target</th><th>best by throughput</th>"
           "<th>critical batch size</th></tr></thead><tbody>" + "".join(rec_rows) + "</tbody></table>") if rec_rows else ""
    note = ""
    if len(points) and ok.empty:
        note = "<p class=\"warn\">No point finished with status ok; the figures are empty. See the errors in the table of points.</p>"
    elif target_note and len(ok) and ok["steps_to_target"].isna().all():
        note = "<p class=\"note\">No target was reached, so time-to-target and the critical batch size are empty (set --target-loss, --target-accuracy or --target rel:F).</p>"
    answers = []
    for g, label in zip(groups, labels):
        advice = recommend(g)
        if advice is not None:
            answers.append(f"<p class=\"answer\"><b>{html.escape(label)}:</b> {html.escape(advice.sentence())}</p>")
    return "".join(answers) + "".join(parts) + swept + note + rec
