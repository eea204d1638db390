"""The report's HTML tables: the Summary (environment, swept axes, recommendations) and the
sortable table of points. Values are formatted by ``store.schema.display``, as in the terminal."""

from __future__ import annotations

import base64
import html
import shlex

import pandas as pd

from harness.analysis.keys import shown_columns
from harness.analysis.recipe import describe
from harness.analysis.recommend import recommend

from harness.store.schema import Status, display, spec_of


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
    for body, records in _alike(data.runs, points):
        ids, started = [r["run_id"] for r in records], html.escape(str(records[-1]["started_at"]))
        parts.append("<dl class=\"env\">" + (f"<dt>run</dt><dd>{html.escape(ids[0])}, started {started}</dd>" if len(ids) == 1 else
                                              f"<dt>runs</dt><dd>{html.escape(', '.join(ids))}, the last started {started}</dd>") + body + "</dl>")
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
    return "".join(answers) + runs_html(data) + "".join(parts) + swept + note + rec


def _env_html(record: dict, points: pd.DataFrame) -> str:
    """A run's workload, machine and software, as the rows of a ``dl``."""
    env = spec_of(record["env_json"])
    spec = _spec(record)
    devices = ", ".join(f"{d} ({name})" for d, name in (env.get("devices") or {}).items())
    sampling = ", ".join(spec.get("sampling") or []) if isinstance(spec.get("sampling"), list) else str(spec.get("sampling"))
    return (f"<dt>workload</dt><dd>{html.escape(str(spec.get('model')))} on {html.escape(str(spec.get('dataset')))}, "
            f"{html.escape(_recipe(points, record['run_id'], spec))}, sampling {html.escape(sampling)}</dd>"
            f"<dt>machine</dt><dd>{html.escape(str(env.get('cpu_model')))}, {env.get('cpu_count')} CPUs; devices: {html.escape(devices)}</dd>"
            f"<dt>software</dt><dd>torch {html.escape(str(env.get('torch_version')))}, Python {html.escape(str(env.get('python')))}, "
            f"batchbench {html.escape(str(env.get('batchbench_version')))}, {env.get('threads')} thread(s)"
            + (f", code at {html.escape(str(env.get('git_commit'))[:12])}" if env.get("git_commit") else "") + "</dd>")


def _alike(runs: pd.DataFrame, points: pd.DataFrame) -> list[tuple[str, list[dict]]]:
    """The runs grouped by what the Summary says of each (workload, machine, software), in
    order: repeats, or runs that differ only in a setting it does not name, share one entry."""
    groups: dict[str, list[dict]] = {}
    for record in runs.to_dict("records"):
        groups.setdefault(_env_html(record, points), []).append(record)
    return list(groups.items())


KINDS = ("tune", "cbs")
"""Run kinds other than a sweep, named by the prefix of their ``spec_hash`` (``tune:...``)."""


def run_kind(spec_hash) -> str:
    """``sweep``, or the command that wrote the run (``tune``, ``cbs``)."""
    prefix = str(spec_hash or "").partition(":")
    return prefix[0] if prefix[1] and prefix[0] in KINDS else "sweep"


SAFE_TO_POOL = ("batch_sizes", "repeats", "seed", "data_seed", "sample_interval")
"""Spec fields two runs may differ in and still be repeats where their points agree: which
batch sizes were run, how many repeats, the seeds, the monitor's interval."""


def _spec(record: dict) -> dict:
    return spec_of(record.get("spec_json"))


def _text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def spec_differences(a: dict, b: dict) -> list[str]:
    """The spec fields in which ``a`` and ``b`` differ, in the spec's order."""
    return [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]


def _kept_apart() -> set[str]:
    """Spec fields the answers never pool across (each axis's group key)."""
    from harness.config.axes import AXES

    return {a.name for a in AXES if a.group_key}


def _command(store: str, *run_ids: str) -> str:
    return f"batchbench report --store {shlex.quote(store)} --run {' '.join(run_ids)}"


def how_shown(runs: pd.DataFrame) -> tuple[str, list[str], list[str]]:
    """How the runs a page shows relate: ``one`` run; ``repeats`` (the same spec and
    environment: pooled); ``apart`` (they differ only in what the answers keep apart: side by
    side); or ``mixed`` (other differences: pooled where the points agree). With the spec fields
    and the environment's keys that differ."""
    records = runs.to_dict("records")
    if len(records) <= 1:
        return "one", [], []
    specs, envs = [_spec(r) for r in records], [spec_of(r.get("env_json")) for r in records]
    differ = list(dict.fromkeys(k for spec in specs[1:] for k in spec_differences(specs[0], spec)))
    env_differ = list(dict.fromkeys(k for env in envs[1:] for k in spec_differences(envs[0], env)))
    if not env_differ and set(differ) <= set(SAFE_TO_POOL):
        return "repeats", differ, []
    return ("apart" if not env_differ and set(differ) <= _kept_apart() | set(SAFE_TO_POOL) else "mixed"), differ, env_differ


def shown_runs_html(runs: pd.DataFrame, store: str | None, alone: bool = False) -> str:
    """What the page shows: one run (said only where the store holds others: not ``alone``),
    runs pooled as repeats of one sweep, runs side by side, or runs of different sweeps pooled
    where their points agree (a warning)."""
    ids = list(runs["run_id"]) if len(runs) else []
    how, differ, env_differ = how_shown(runs)
    if how == "one":
        return f"<p class=\"note\">This page shows run <b>{html.escape(ids[0])}</b>.</p>" if ids and not alone else ""
    specs = [_spec(r) for r in runs.to_dict("records")]
    words = "; ".join(f"{k}: {' / '.join(dict.fromkeys(_text(s.get(k)) for s in specs))}" for k in differ[:4]) + ("; ..." if len(differ) > 4 else "")
    if how == "repeats":
        return (f"<p class=\"note\">This page pools <b>{len(ids)} runs</b> of the same sweep on the same machine and software as repeats "
                f"(as <code>batchbench run --runs {len(ids)}</code> writes them; listed below{f'; they differ only in {html.escape(words)}' if differ else ''}): "
                "every figure and table takes their points together.</p>")
    listed = html.escape(", ".join(ids))
    if how == "apart":
        return (f"<p class=\"note\">This page shows {len(ids)} runs side by side ({listed}): they differ in {html.escape(words)}, which the "
                f"answers, the throughput figure and the target figures keep apart (the phase, loss-curve and memory figures take them together).</p>")
    pooled = [k for k in differ if k not in _kept_apart()]
    what = ", ".join(pooled[:4]) + (f"{'; ' if pooled else ''}the machine or software ({', '.join(env_differ[:4])})" if env_differ else "")
    one = " or ".join(f"<code>{html.escape(_command(store, i))}</code>" for i in ids[:2]) if store else "--run ID"
    return (f"<p class=\"warn\">This page shows {len(ids)} runs that are not repeats of one sweep ({listed}): they differ in "
            f"{html.escape(words or what)}. Points that differ only in {html.escape(what)} are pooled as if they were repeats, so a figure "
            f"may mix them; show one run at a time ({one}, ...) or compare two with <code>batchbench report --compare A B</code>.</p>")


OTHERS_SHOWN = 20
"""At most this many of the store's other runs are listed (the latest); ``batchbench runs`` lists all."""


def runs_html(data) -> str:
    """Which runs the page shows, and the store's other runs with the command that shows each
    (the latest ``OTHERS_SHOWN``), so a store of several runs never hides the ones not shown."""
    others = data.others
    out = shown_runs_html(data.runs, data.store, alone=others is None or others.empty)
    if others is None or others.empty:
        return out
    store = data.store or "STORE"
    last = data.runs.to_dict("records")[-1] if len(data.runs) else {}
    listed = others.tail(OTHERS_SHOWN).iloc[::-1]
    rows = [f"<tr><td>{html.escape(r['run_id'])}</td><td>{run_kind(r.get('spec_hash'))}</td>"
            f"<td>{html.escape(str(r['started_at'])[:19].replace('T', ' '))}</td><td>{r.get('ok', 0)}/{r.get('points', 0)} ok</td>"
            f"<td>{html.escape(_differs(last, r))}</td><td><code>{html.escape(_command(store, r['run_id']))}</code></td></tr>"
            for r in listed.to_dict("records")]
    more = (f" (the latest {len(listed)} are listed; <code>batchbench runs --store {html.escape(shlex.quote(store))}</code> lists every run)"
            if len(others) > len(listed) else "")
    together = _side_by_side(data.runs, others)
    beside = (f" Side by side with the shown run{'s' * (len(data.runs) > 1)} (the answers and the throughput figure keep them apart): "
              f"<code>{html.escape(_command(store, *together))}</code>.") if together else ""
    return (out + f"<p class=\"note\">The store holds {len(others)} other run{'s' * (len(others) > 1)}, not shown here{more}. Show one with its command, "
            f"several together with <code>--run A B ...</code>, or two before and after with <code>--compare A B</code>.{beside}</p>"
            "<div class=\"scroll runs\"><table class=\"rec\" id=\"other-runs\"><thead><tr><th>run</th><th>kind</th><th>started</th><th>points</th>"
            "<th>differs from the shown run in</th><th>show it with</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


SIDE_BY_SIDE = 8
"""The most runs the page offers one command to show side by side."""


def _side_by_side(runs: pd.DataFrame, others: pd.DataFrame) -> list[str]:
    """The shown runs with the other sweeps of the same machine and software that differ from
    them only in what the figures keep apart (``--workers 0`` beside ``--workers 4``): the
    ids to show together, oldest first; [] where there are none."""
    if runs.empty or run_kind(runs["spec_hash"].iloc[-1]) != "sweep":
        return []
    last = runs.to_dict("records")[-1]
    apart, safe = _kept_apart(), set(SAFE_TO_POOL)
    fits = [r for r in others.to_dict("records") if run_kind(r.get("spec_hash")) == "sweep" and r.get("env_json") == last.get("env_json")
            and set(spec_differences(_spec(last), _spec(r))) & apart and set(spec_differences(_spec(last), _spec(r))) <= apart | safe]
    if not fits or len(fits) + len(runs) > SIDE_BY_SIDE:
        return []
    every = pd.concat([others[others["run_id"].isin([r["run_id"] for r in fits])], runs])  # a tie in the second: the shown runs last
    return list(every.sort_values("started_at", kind="stable")["run_id"])


def _differs(shown: dict, other: dict) -> str:
    """How another run differs from the shown one, in a few words: its kind, its spec, or its
    machine and software."""
    kind = run_kind(other.get("spec_hash"))
    if shown and kind != run_kind(shown.get("spec_hash")):
        return f"a {kind} run"
    here, spec = _spec(shown), _spec(other)
    differ = spec_differences(here, spec)
    if differ:
        return "; ".join(f"{k} {_text(spec.get(k))} (shown: {_text(here.get(k))})" for k in differ[:3]) + ("; ..." if len(differ) > 3 else "")
    envs = [spec_of(r.get("env_json")) for r in (shown, other)]
    changed = spec_differences(*envs)
    return f"the same sweep; other {', '.join(changed[:3])}" if changed else "the same sweep, run at another time"
