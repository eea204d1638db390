"""Terminal output: the table a sweep ends with. Formatting only; numbers come from the store."""

from __future__ import annotations

import math

import pandas as pd

from harness.analysis.keys import group_label, short_labels, shown_columns
from harness.analysis.recommend import recommend
from harness.store.schema import display

LEADING_COLUMNS = (("dataset_size", "size"), ("batch_size", "batch"), ("device", "device"))
MEASURED_COLUMNS = (("samples_per_s", "samples/s"), ("data_s", "data ms"), ("derivative_s", "deriv ms"), ("update_s", "update ms"),
                    ("loss_check_s", "check ms"), ("final_eval_loss", "eval loss"), ("status", "status"), ("flags", "flags"))


def _cell(value, column: str) -> str:
    if isinstance(value, float) and value.is_integer() and column not in dict(MEASURED_COLUMNS):
        value = int(value)
    return display(column, value) or "-"


def varying_columns(points) -> list[tuple[str, str]]:
    """The configuration columns (``analysis.keys.shown_columns``) in which these points differ."""
    leading = {c for c, _ in LEADING_COLUMNS}
    return [(c, t) for c, t in shown_columns() if c not in leading and c in points and points[c].astype(str).nunique() > 1]


def points_table(points) -> str:
    """Per point: dataset size, batch size, device and every configuration column that varies,
    samples/s, per-step ms of each phase (loss check: ms per check), final eval loss, status and
    trust flags."""
    if len(points) == 0:
        return "(no points)"
    config = varying_columns(points)
    shown = [*LEADING_COLUMNS, *config, *MEASURED_COLUMNS]
    inner = ("batch_size", "world_size", "repeat")
    order = ["dataset_size", "device", *(c for c, _ in config if c not in inner), *(c for c in inner if c in points)]
    ordered = points.sort_values(order, kind="stable")
    rows = [[title for _, title in shown]]
    rows += [[_cell(record.get(c), c) for c, _ in shown] for record in ordered.to_dict("records")]
    numeric = {i for i, (c, _) in enumerate(shown) if c in points and pd.api.types.is_numeric_dtype(points[c]) and c != "flags"}
    return layout(rows, numeric)


def _num(value, fmt: str = "{:,.4g}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def analysis_text(groups, points) -> str:
    """``batchbench analyze``: per group, a row per batch size, the critical-batch fit, the
    noise scale and the best batch sizes, each with its number."""
    if not groups:
        failed = "" if len(points) == 0 else f" ({len(points)} points, none ok)"
        return f"nothing to analyze{failed}"
    has_target = points[["target_loss", "target_accuracy"]].notna().any().any()
    out = []
    for group in groups:
        key = group.key
        out.append(group_label(key))
        if group.target:
            out.append(f"  target: {group.target}")
        rows = [["batch", "lr", "steps→target [95% CI]", "samples→target", "time→target s", "compute→target s", "samples/s", "eval loss"]]
        for r in group.table.to_dict("records"):
            ci = f" [{_num(r['steps_ci_low'], '{:.0f}')}, {_num(r['steps_ci_high'], '{:.0f}')}]" if r["steps_ci_low"] is not None else ""
            reached = "" if r["reached"] == r["repeats"] else f" ({r['reached']}/{r['repeats']} reached)"
            rows.append([
                str(r["batch_size"]), _num(r["lr"], "{:.4g}"), _num(r["steps_to_target"], "{:.0f}") + ci + reached,
                _num(r["samples_to_target"], "{:,.0f}"), _num(r["time_to_target_s"], "{:.3f}"),
                _num(r["compute_to_target_s"], "{:.3f}"), _num(r["samples_per_s"], "{:,.0f}"), _num(r["final_eval_loss"], "{:.4f}"),
            ])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for n, row in enumerate(rows):
            out.append("  " + "  ".join(c.rjust(w) if i != 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
            if n == 0:
                out.append("  " + "  ".join("-" * w for w in widths))
        if not has_target:
            out.append("  no target set: use --target-loss, --target-accuracy or --target rel:F for steps-to-target and the fit")
        elif group.fit is None:
            out.append("  fit: needs steps-to-target at two or more batch sizes")
        else:
            f = group.fit
            out.append(
                f"  fit S(B) = S_min (1 + B_crit/B): B_crit = {f.b_crit:,.4g}, S_min = {f.s_min:,.4g} steps, "
                f"E_min = {f.e_min:,.4g} samples, RMS log error {f.rms_log_error:.3f} ({len(f.batch_sizes)} batch sizes)"
            )
        if group.coarse_checks:
            out.append(f"  warning: {coarse_text(group)}")
        if group.noise_start is not None or group.noise_at_target is not None:
            out.append(f"  noise scale B_simple: {_num(group.noise_start)} at step 0, {_num(group.noise_at_target)} at target")
        table = group.table.set_index("batch_size")
        best = []
        for label, batch, column, fmt in (
            ("time-to-target", group.best_batch_by_time, "time_to_target_s", "{:.3f} s"),
            ("compute-to-target", group.best_batch_by_compute, "compute_to_target_s", "{:.3f} s"),
            ("throughput", group.best_batch_by_throughput, "samples_per_s", "{:,.0f} samples/s"),
        ):
            if batch is not None:
                best.append(f"by {label} {batch} ({fmt.format(table.loc[batch, column])})")
        if best:
            out.append("  best batch size: " + ", ".join(best))
        advice = recommend(group)
        if advice is not None:
            out.append("  recommended: " + advice.sentence())
        out.append("")
    return "\n".join(out).rstrip()


def coarse_text(group) -> str:
    """Why steps-to-target of this group mean little, and what to do."""
    return (f"the loss checks are coarse against steps-to-target: the check before the target came a median "
            f"{100 * group.check_resolution:.0f}% of the steps earlier, so steps-to-target (and B_crit) mostly measure the check "
            f"schedule; run with --check-every log:40 (checks a constant ratio apart) or a smaller interval")


def recommendations_text(groups) -> str:
    """What ``batchbench run`` ends with: per group (device x dataset size x ...), the batch
    size that reaches the target soonest, or why there is none."""
    lines = []
    for group, label in zip(groups, short_labels(groups)):
        advice = recommend(group)
        lines.append(f"{label}: " + (advice.sentence() if advice is not None else "no batch size reached the target; see `batchbench analyze`"))
    return "\n".join(lines)


def runs_summary(runs, points) -> list[dict]:
    """Per stored run, oldest first: id, kind (sweep or tune), start and end, points (ok of all)
    and what it swept, for ``batchbench runs``."""
    import json

    out = []
    for run in runs.to_dict("records"):
        mine = points[points["run_id"] == run["run_id"]] if len(points) else points
        spec = json.loads(run.get("spec_json") or "{}")
        values = lambda column: sorted({v for v in mine[column].dropna().tolist()}) if len(mine) and column in mine else []  # noqa: E731
        out.append({
            "run_id": run["run_id"],
            "kind": "tune" if str(run.get("spec_hash") or "").startswith("tune:") else "sweep",
            "started_at": run["started_at"],
            "finished_at": run["finished_at"],
            "points": int(len(mine)),
            "ok": int((mine["status"] == "ok").sum()) if len(mine) else 0,
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


def layout(rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """Rows of text cells as aligned columns under a ruled header; columns in ``right`` are
    right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    return "\n".join(lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:])


def _interval(ratio, low, high) -> str:
    """``1.02x [0.97, 1.08]``; the ratio alone where no interval could be formed."""
    if ratio is None or (isinstance(ratio, float) and math.isnan(ratio)):
        return "-"
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return f"{ratio:.3g}x"
    return f"{ratio:.3g}x [{low:.3g}, {high:.3g}]"


def comparison_text(comparison, label_a: str, label_b: str) -> str:
    """``batchbench compare``: per matched point, throughput and training time to target of A
    and B, the ratio B / A with its 95% interval, and the verdict; then the counts."""
    from harness.analysis.compare import SAME, varying_keys

    f = comparison.frame
    head = (f"A = {label_a} · B = {label_b} · {len(f)} matched points ({comparison.only_a} only in A, {comparison.only_b} only in B) · "
            f"ratios B/A at the median step, with 95% intervals; a change counts when its interval excludes 1 and it is at least {comparison.threshold:.3g}x")
    if f.empty:
        return head + "\nNo point of A has the configuration of a point of B (every axis must agree: " + ", ".join(comparison.keys) + "); --match chooses the keys."
    keys = [k for k in ("dataset_size", "device", "batch_size") if k in f] + [k for k in varying_keys(comparison) if k not in ("dataset_size", "device", "batch_size")]
    titles = {"dataset_size": "size", "batch_size": "batch", "model_name": "model"}
    rows = [[titles.get(k, k) for k in keys] + ["samples/s A", "samples/s B", "throughput B/A", "verdict", "to target A", "to target B", "to target B/A", "verdict"]]
    for r in f.to_dict("records"):
        rows.append([str(r[k]) for k in keys] + [
            display("samples_per_s", r["samples_per_s_a"]), display("samples_per_s", r["samples_per_s_b"]),
            _interval(r["throughput_ratio"], r["throughput_low"], r["throughput_high"]), r["throughput_verdict"] or "-",
            _seconds(r["compute_to_target_s_a"]), _seconds(r["compute_to_target_s_b"]),
            _interval(r["time_to_target_ratio"], r["time_to_target_low"], r["time_to_target_high"]), r["time_to_target_verdict"] or "-",
        ])
    numeric = {i for i, k in enumerate(keys) if k in ("dataset_size", "batch_size")} | {len(keys), len(keys) + 1, len(keys) + 4, len(keys) + 5}
    counts = comparison.counts()
    ttt = f["time_to_target_verdict"]
    summary = (f"throughput: B is slower at {counts['slower']}, faster at {counts['faster']}, no significant change at {counts[SAME]} of {len(f)} points; "
               f"time to target: slower at {int((ttt == 'slower').sum())}, faster at {int((ttt == 'faster').sum())}, "
               f"no significant change at {int((ttt == SAME).sum())} ({int(ttt.isna().sum())} without a target reached on both sides)")
    return "\n".join([head, layout(rows, numeric), summary])


def _seconds(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"


def analysis_json(groups) -> str:
    import json

    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        return value

    payload = []
    for g in groups:
        payload.append(
            {
                "group": {k: clean(v) for k, v in g.key.items()},
                "batch_sizes": [{k: clean(v) for k, v in row.items()} for row in g.table.to_dict("records")],
                "fit": None if g.fit is None else {"b_crit": g.fit.b_crit, "s_min": g.fit.s_min, "e_min": g.fit.e_min, "rms_log_error": g.fit.rms_log_error},
                "best_batch_size": {"time_to_target": g.best_batch_by_time, "compute_to_target": g.best_batch_by_compute, "throughput": g.best_batch_by_throughput},
                "noise_scale": {"start": g.noise_start, "at_target": g.noise_at_target},
                "target": g.target,
                "check_resolution": g.check_resolution,
                "coarse_checks": g.coarse_checks,
                "recommendation": None if recommend(g) is None else recommend(g).as_dict(),
            }
        )
    return json.dumps(payload, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v))


def format_bytes(value) -> str:
    if value is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:,.2f} {unit}"
    return f"{value:,.0f} B"


def capacity_text(result, spec) -> str:
    """``batchbench fit``: the probes, the fitted line, the predicted (and probed) largest batch."""
    lines = [f"memory of {spec.model} on {spec.dataset}, {result.device}: limit {format_bytes(result.limit_bytes)}, margin {result.margin:.0%}"]
    for batch, status, peak in result.probes:
        lines.append(f"  B={batch:<8} {status:<6} {result.metric} {format_bytes(peak)}")
    if result.fit is None:
        lines.append("  no fit: fewer than two probes ran")
    else:
        f = result.fit
        lines.append(f"  peak = {format_bytes(f.fixed_bytes)} + {format_bytes(f.per_sample_bytes)} x B  (RMS error {format_bytes(f.rms_error_bytes)})")
    predicted = f"{result.max_batch_size:,}" if result.max_batch_size else "none (memory does not grow with B, or B = 1 does not fit)"
    lines.append(f"  largest batch that fits (predicted): {predicted}")
    if result.probed_max_batch_size is not None:
        lines.append(f"  largest batch that ran (probed):     {result.probed_max_batch_size:,}")
    if result.prediction_error is not None:
        lines.append(f"  prediction before the margin: {result.predicted_no_margin:,} ({result.prediction_error:+.1%} against the probe)")
    return "\n".join(lines)


def overhead_text(results, point, target: float) -> str:
    """``batchbench overhead``: per batch size the median ratio of harness to plain samples/s
    and its interquartile range against ``target``; with ``--attribute`` (``Attribution``
    results) also the parts and what a timed step costs."""
    attributed = hasattr(results[0], "versus_plain")
    overall = [r.versus_plain() if attributed else r for r in results]
    plural = "s" if point.threads > 1 else ""
    lines = [f"harness beside a plain loop on {point.device} ({point.threads} thread{plural}): {point.dataset} {point.train_size:,} rows, "
             f"{point.model} {','.join(map(str, point.hidden))}, {point.steps} steps a round ({point.burn_in_steps} burn-in), "
             f"{len(overall[0].ratios)} interleaved rounds in one process; median samples/s ratio (interquartile range)"]
    header = ["batch", "harness/plain"] + (["no monitor", "no timed steps", "all timed", "timed step", "assumed", "marks' share"] if attributed else [])
    rows = [header]
    for result, versus in zip(results, overall):
        low, high = versus.ratio_iqr
        row = [f"{result.batch_size:,}", f"{versus.ratio:.3f} ({low:.3f}-{high:.3f}){'' if versus.ratio >= target else ' below target'}"]
        if attributed:
            row += [f"{result.versus_plain(name).ratio:.3f}" for name in ("no_monitor", "untimed", "all_timed")]
            row += [f"{result.timed_step_cost_s * 1e6:.1f} us", f"{result.timed_step_assumed_s * 1e6:.1f} us", f"{result.marks_share:.2%}"]
        rows.append(row)
    lines += [layout(rows, right=set(range(len(header)))), f"target: harness/plain >= {target} at every batch size"]
    if attributed:
        lines.append("no monitor: without the sampler thread. no timed steps: also no timed step after the burn-in (the loop's own cost). "
                     "all timed: every step timed. timed step: what timing a step (its 5 marks and its loss read) costs inside the loop, from "
                     "all timed against no timed steps. assumed: what the harness took its marks to cost when it chose which steps to time. "
                     "marks' share: of the harness's measured window, at the in-loop cost.")
    return "\n".join(lines)
