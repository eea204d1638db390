"""The HTML report: DataFrames from the store in, one self-contained HTML file out.

Inline CSS, figures as base64 PNG, the points as a CSV data URI, a few lines of inline script to
sort the table: nothing is fetched, so the file opens from disk and travels by mail. Built with
pandas, seaborn/matplotlib and a jinja2 template; never imports torch. Every figure has a
caption saying how to read it and an alt text; a section without data says so instead.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from harness import convergence
from harness.memory import fit_memory

PHASE_COLORS = {"data": "#4C72B0", "derivative": "#DD8452", "update": "#55A868", "loss_check": "#8172B3"}
SECTIONS = ("Summary", "Throughput", "Phase breakdown", "Convergence", "Time and steps to target", "Memory and utilisation", "Points")


@dataclass(frozen=True)
class Figure:
    title: str
    caption: str
    alt: str
    png_base64: str


@dataclass
class Section:
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    html: str = ""

    @property
    def anchor(self) -> str:
        return self.title.lower().replace(" ", "-")


@dataclass(frozen=True)
class ReportData:
    runs: pd.DataFrame
    points: pd.DataFrame
    checks: pd.DataFrame
    samples: pd.DataFrame


def load(store, run_ids: list[str] | None = None) -> ReportData:
    """The runs to report (default: the latest) and their points, checks and samples."""
    runs = store.select_runs(run_ids)
    return ReportData(store.load("runs", runs), store.load("points", runs), store.load("checks", runs), store.load("samples", runs))


# ---------------------------------------------------------------- figures


def _png(fig) -> str:
    for ax in fig.axes:  # minor tick labels are most of the layout time, and little help
        ax.minorticks_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    return plt, sns


def _log2_axis(ax, values) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted({int(v) for v in values if v and v > 0})
    if len(ticks) <= 14:
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks], rotation=45 if len(ticks) > 8 else 0)
    ax.minorticks_off()


def _label(points: pd.DataFrame) -> pd.Series:
    """Series label per point: device and dataset size, only what varies."""
    parts = []
    if points["device"].nunique() > 1:
        parts.append(points["device"].astype(str))
    if points["dataset_size"].nunique() > 1:
        parts.append("N=" + points["dataset_size"].astype(str))
    if points["sampling"].nunique() > 1:
        parts.append(points["sampling"].astype(str))
    if "world_size" in points and points["world_size"].fillna(1).nunique() > 1:
        parts.append(points["world_size"].fillna(1).astype(int).astype(str) + " ranks")
    if not parts:
        return pd.Series(points["device"].astype(str) + " · N=" + points["dataset_size"].astype(str), index=points.index)
    label = parts[0]
    for part in parts[1:]:
        label = label + " · " + part
    return label


def _lines(ax, data: pd.DataFrame, x: str, y: str, hue: str, colors: dict, *, band: bool = True, marker: str | None = None, lw: float = 1.3) -> None:
    """One line per ``hue`` value: the median over repeats at each x, with a band from the
    minimum to the maximum (plain pandas + matplotlib: seaborn's bootstrap is too slow here)."""
    for key, group in data.groupby(hue, sort=True):
        stats = group.groupby(x)[y].agg(["median", "min", "max"]).dropna()
        if stats.empty:
            continue
        color = colors.get(key)
        ax.plot(stats.index, stats["median"], marker=marker, color=color, lw=lw, label=str(key), markersize=4)
        if band and (stats["max"] > stats["min"]).any():
            ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, lw=0)


def _palette(values, name: str = "viridis") -> dict:
    import seaborn as sns

    values = sorted(values)
    return dict(zip(values, sns.color_palette(name, len(values))))


def throughput_figure(ok: pd.DataFrame) -> Figure | None:
    if ok["samples_per_s"].notna().sum() == 0:
        return None
    plt, sns = _plt()
    data = ok.assign(series=_label(ok))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    _lines(ax, data, "batch_size", "samples_per_s", "series", _palette(data["series"].unique(), "deep"), marker="o")
    _log2_axis(ax, data["batch_size"])
    ax.set_yscale("log")
    ax.set(xlabel="batch size (log₂)", ylabel="samples / s (log)")
    ax.legend(title=None, fontsize=8)
    repeats = int(ok["repeat"].max()) + 1
    band = f" The band spans the {repeats} repeats." if repeats > 1 else ""
    return Figure(
        "Throughput against batch size",
        "Samples per second over the measured window (loss checks excluded) at each batch size; a line that flattens marks where a larger batch stops buying speed." + band,
        "Line chart of training throughput in samples per second against batch size on log axes, one line per device and dataset size.",
        _png(fig),
    )


def scaling_figure(ok: pd.DataFrame) -> Figure | None:
    if "world_size" not in ok or ok["world_size"].fillna(1).max() <= 1:
        return None
    table = convergence.scaling_efficiency(ok)
    if table.empty or table["efficiency"].notna().sum() == 0:
        return None
    plt, _ = _plt()
    with_target = table["time_to_target_s"].notna().any()
    fig, axes = plt.subplots(1, 3 if with_target else 2, figsize=(14 if with_target else 10, 3.8))
    for (device, per_rank), g in table.groupby(["device", "per_rank_batch_size"]):
        g = g.sort_values("world_size")
        label = f"{device} · {int(per_rank)} per rank"
        axes[0].plot(g["world_size"], g["efficiency"], "o-", label=label)
        axes[1].plot(g["world_size"], g["comm_share"] * 100, "o-", label=label)
        if with_target:
            axes[2].plot(g["world_size"], g["time_to_target_s"], "o-", label=label)
    axes[0].axhline(1.0, color="grey", lw=1)
    axes[0].set(xlabel="world size (ranks)", ylabel="scaling efficiency")
    axes[1].set(xlabel="world size (ranks)", ylabel="exposed communication (% of step)")
    if with_target:
        axes[2].set(xlabel="world size (ranks)", ylabel="time to target (s)")
    for ax in axes:
        ax.set_xticks(sorted(table["world_size"].unique()))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return Figure("Data-parallel scaling",
                  "Left: throughput at N ranks over N times one process's at the same per-rank batch (1 is perfect scaling; a point appears where the sweep also ran that per-rank batch on one process). Middle: the all-reduce time the backward pass did not hide, as a share of the step; where it grows, adding ranks stops paying. Right, when a target was set: time to it against the number of ranks.",
                  "Line charts of scaling efficiency and of exposed communication share against the number of data-parallel ranks.", _png(fig))


def phase_figures(ok: pd.DataFrame) -> list[Figure]:
    cols = ["data_s", "derivative_s", "update_s"]
    if ok[cols].notna().sum().sum() == 0:
        return []
    plt, _ = _plt()
    ok = ok.assign(ranks=ok["world_size"].fillna(1).astype(int) if "world_size" in ok else 1)
    med = ok.groupby(["device", "dataset_size", "ranks", "batch_size"], as_index=False).agg(
        data=("data_s", "median"), derivative=("derivative_s", "median"), update=("update_s", "median"),
        loss_check_total=("loss_check_total_s", "median"), steps=("steps", "median"),
    )
    med["loss_check"] = (med["loss_check_total"] / med["steps"]).fillna(0)
    groups = list(med.groupby(["device", "dataset_size", "ranks"]))[:4]
    phases = list(PHASE_COLORS)
    figs = []
    for share in (False, True):
        fig, axes = plt.subplots(1, len(groups), figsize=(min(4.2 * len(groups), 11), 3.8), squeeze=False, sharey=share)
        for ax, ((device, size, ranks), g) in zip(axes[0], groups):
            g = g.sort_values("batch_size")
            values = g[phases].fillna(0).to_numpy(dtype=float) * 1e3
            if share:
                values = values / values.sum(axis=1, keepdims=True).clip(min=1e-12) * 100
            x = np.arange(len(g))
            bottom = np.zeros(len(g))
            for i, phase in enumerate(phases):
                ax.bar(x, values[:, i], bottom=bottom, color=PHASE_COLORS[phase], label=phase, width=0.8)
                bottom += values[:, i]
            ax.set_xticks(x)
            ax.set_xticklabels([str(int(b)) for b in g["batch_size"]], rotation=45 if len(g) > 8 else 0, fontsize=8)
            ax.set(title=f"{device} · N={size}" + (f" · {ranks} ranks" if ranks > 1 else ""), xlabel="batch size", ylabel="share of step (%)" if share else "ms per step")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.tight_layout()
        fig.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        if share:
            figs.append(Figure("Share of each phase", "The same phases as shares of the step: where the share of derivative grows, the batch is doing useful work; a large data or update share means overhead dominates at that batch size.",
                               "100% stacked bars of the share of step time spent in data, derivative, update and loss check, per batch size.", _png(fig)))
        else:
            figs.append(Figure("Time per step by phase", "Median time of each phase per step, stacked (loss_check amortised over the steps between checks); data and derivative grow with the batch, update does not.",
                               "Stacked bars of per-step milliseconds in the data, derivative, update and loss-check phases against batch size.", _png(fig)))
    return figs


def convergence_figures(ok: pd.DataFrame, checks: pd.DataFrame) -> list[Figure]:
    if checks.empty or checks["eval_loss"].notna().sum() == 0:
        return []
    plt, sns = _plt()
    meta = ok[["point_id", "batch_size", "dataset_size", "device", "repeat"]]
    data = checks.merge(meta, on="point_id")
    if data.empty:
        return []
    # One panel per dataset size on the first device: the picture of small-noisy vs large-smooth.
    data = data[data["device"] == data["device"].iloc[0]]
    sizes = sorted(data["dataset_size"].unique())[-3:]
    data = data[data["dataset_size"].isin(sizes)]
    batches = sorted(data["batch_size"].unique())
    palette = _palette(batches)
    figs = []
    for x, xlabel, what in (("step", "steps", "steps"), ("samples_seen", "samples seen", "samples seen"), ("wall_s", "wall time (s, loss checks included)", "wall time")):
        fig, axes = plt.subplots(1, len(sizes), figsize=(min(4.6 * len(sizes), 11), 3.8), squeeze=False, sharey=True)
        for ax, size in zip(axes[0], sizes):
            d = data[data["dataset_size"] == size]
            _lines(ax, d, x, "eval_loss", "batch_size", palette, band=x != "wall_s", lw=1.1)
            ax.set(title=f"N={size}", xlabel=xlabel, ylabel="check-set loss")
            if x != "wall_s" and d[x].max() > 50 * max(d[x][d[x] > 0].min(), 1):
                ax.set_xscale("symlog", linthresh=max(1, d[x][d[x] > 0].min()))
                ax.set_xlim(left=0)
            if (d["eval_loss"] > 0).all() and d["eval_loss"].max() / max(d["eval_loss"].min(), 1e-12) > 20:
                ax.set_yscale("log")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=palette[b], lw=1.5) for b in batches]  # every panel's batch sizes
        fig.legend(handles, [str(b) for b in batches], title="batch size", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        fig.tight_layout()
        figs.append(Figure(f"Check-set loss against {what}",
                           f"Loss on the check set against {what}, a line per batch size (bands span repeats): small batches are noisy and move fast per sample, large ones are smooth and fast per step.",
                           f"Line chart of check-set loss against {what}, one line per batch size, one panel per dataset size.", _png(fig)))
    return figs


def target_figures(ok: pd.DataFrame, checks: pd.DataFrame, groups) -> tuple[list[Figure], list[str]]:
    figs, notes = [], []
    has_target = ok["steps_to_target"].notna().any()
    plt, sns = _plt()
    if not has_target:
        notes.append("No point reached a target (or none was set): run with --target-loss, --target-accuracy or --target rel:F for steps- and time-to-target.")
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for g in groups:
            t = g.table.dropna(subset=["steps_to_target"])
            if t.empty:
                continue
            label = f"{g.key.get('device')} · N={g.key.get('dataset_size')}"
            line = axes[0].plot(t["batch_size"], t["steps_to_target"], "o-", label=label)[0]
            if g.fit is not None:
                grid = np.geomspace(t["batch_size"].min(), t["batch_size"].max(), 100)
                axes[0].plot(grid, g.fit.predict(grid), "--", color=line.get_color(), alpha=0.8,
                             label=f"fit: B_crit={g.fit.b_crit:.3g}, S_min={g.fit.s_min:.3g}")
            b0, s0 = t["batch_size"].iloc[0], t["steps_to_target"].iloc[0]
            axes[0].plot(t["batch_size"], s0 * b0 / t["batch_size"], ":", color="grey", label="perfect scaling" if g is groups[0] else None)
            tt = g.table.dropna(subset=["time_to_target_s"])
            axes[1].plot(tt["batch_size"], tt["time_to_target_s"], "o-", label=label + " (wall)", color=line.get_color())
            axes[1].plot(tt["batch_size"], tt["compute_to_target_s"], "s--", label=label + " (compute)", color=line.get_color(), alpha=0.6)
        for ax, ylabel in zip(axes, ("steps to target", "seconds to target")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set(xlabel="batch size (log₂)", ylabel=ylabel + " (log)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        figs.append(Figure("Steps and time to target",
                           "Left: steps to the target per batch size (best learning rate when tuned) with the fitted S_min·(1 + B_crit/B) and the perfect-scaling line; where the points leave the dotted line, doubling the batch stops halving the steps. Right: wall time (checks included) and compute time (checks excluded) to the target; its minimum is the batch size to train with.",
                           "Log-log charts of steps to target and of seconds to target against batch size, with the fitted critical-batch curve.", _png(fig)))
    noise = checks.dropna(subset=["noise_scale"]) if "noise_scale" in checks else checks.iloc[:0]
    if noise.empty:
        notes.append("The gradient noise scale was not estimated: run with --noise-samples 1024 to record it at every loss check.")
    else:
        data = noise.merge(ok[["point_id", "batch_size"]], on="point_id")
        batches = sorted(data["batch_size"].unique())
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        _lines(ax, data, "step", "noise_scale", "batch_size", _palette(batches), band=False, lw=1.0)
        ax.set_yscale("log")
        ax.set(xlabel="step", ylabel="B_simple (log)")
        ax.legend(title="batch size", fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        figs.append(Figure("Gradient noise scale over training",
                           "B_simple = tr(Σ)/|G|² at each loss check: batches much smaller than it are noise-dominated and scale perfectly; it grows as training nears the optimum, so the useful batch size grows with it.",
                           "Line chart of the estimated gradient noise scale against training step, one line per batch size.", _png(fig)))
    return figs, notes


def memory_figures(ok: pd.DataFrame, samples: pd.DataFrame, env: dict) -> tuple[list[Figure], list[str], dict]:
    figs, notes, fits = [], [], {}
    plt, sns = _plt()
    column = "peak_device_mem_bytes" if ok["peak_device_mem_bytes"].notna().any() else "peak_rss_bytes"
    mem = ok.dropna(subset=[column])
    if mem.empty:
        notes.append("No peak memory was recorded for these points.")
    else:
        fig, ax = plt.subplots(figsize=(7.5, 4))
        for (device, size), g in mem.groupby(["device", "dataset_size"]):
            dev_col = "peak_device_mem_bytes" if str(device).startswith("cuda") and g["peak_device_mem_bytes"].notna().any() else "peak_rss_bytes"
            g = g.dropna(subset=[dev_col]).sort_values("batch_size")
            pts = ax.plot(g["batch_size"], g[dev_col] / 2**20, "o", label=f"{device} · N={size} ({dev_col.replace('_bytes', '')})")[0]
            fit = fit_memory(g["batch_size"], g[dev_col])
            if fit is not None:
                fits[(device, size)] = (fit, dev_col)
                grid = np.linspace(g["batch_size"].min(), g["batch_size"].max(), 50)
                ax.plot(grid, fit.predict(grid) / 2**20, "-", color=pts.get_color(), alpha=0.6)
            limit = _device_limit(env, device)
            if limit and limit < 20 * g[dev_col].max():
                ax.axhline(limit / 2**20, color=pts.get_color(), linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="batch size (log₂)", ylabel="peak memory (MiB)")
        ax.legend(fontsize=7)
        limits = ", ".join(f"{d}: {_device_limit(env, d) / 2**30:.1f} GiB" for d in mem["device"].unique() if _device_limit(env, d))
        figs.append(Figure("Peak memory against batch size",
                           f"Peak memory per point with the fitted line peak = fixed + per-sample × B (its slope is what each extra sample costs); dashed lines mark the device limit when it is near the data ({limits or 'limit unknown'}).",
                           "Scatter of peak memory in MiB against batch size with a fitted straight line per device.", _png(fig)))
    if samples.empty or samples[["cpu_pct", "gpu_util_pct"]].notna().sum().sum() == 0:
        notes.append("No utilisation was sampled (--sample-interval 0).")
    else:
        order = ok[["point_id", "batch_size", "dataset_size", "device"]].reset_index(drop=True)
        offsets, cursor = {}, 0.0
        for record in order.to_dict("records"):
            span = samples.loc[samples["point_id"] == record["point_id"], "t_s"]
            offsets[record["point_id"]] = cursor
            cursor += (span.max() if len(span) else 0.0) + 0.05
        data = samples[samples["point_id"].isin(offsets)].copy()
        data["t"] = data["t_s"] + data["point_id"].map(offsets)
        data["cpu_pct"] = data["cpu_pct"].clip(upper=100.0 * (env.get("cpu_count") or 1))  # older stores: tick-sized intervals
        fig, ax = plt.subplots(figsize=(10, 3.4))
        ax.plot(data["t"], data["cpu_pct"], lw=0.8, label="process CPU %")
        if data["gpu_util_pct"].notna().any():
            ax.plot(data["t"], data["gpu_util_pct"], lw=0.8, label="GPU utilisation %")
        for record in order.to_dict("records")[:40]:
            ax.axvline(offsets[record["point_id"]], color="grey", lw=0.5, alpha=0.5)
        ax.set(xlabel="time across the sweep's points (s)", ylabel="%")
        ax.legend(fontsize=8, loc="upper right")
        figs.append(Figure("Utilisation over the sweep",
                           "Sampled process CPU (100% = one core) and GPU utilisation, point after point (grey lines mark where each point starts); a GPU line that dips inside points shows phases that leave it idle.",
                           "Time series of CPU and GPU utilisation across the sweep's points.", _png(fig)))
    return figs, notes, fits


def _device_limit(env: dict, device: str) -> int | None:
    return (env.get("device_memory_bytes") or {}).get(device)


# ---------------------------------------------------------------- tables and summary

TABLE_COLUMNS = [
    ("dataset_size", "N"), ("batch_size", "batch"), ("device", "device"), ("repeat", "rep"), ("lr", "lr"), ("sampling", "sampling"),
    ("status", "status"), ("samples_per_s", "samples/s"), ("data_s", "data ms"), ("derivative_s", "deriv ms"), ("update_s", "update ms"),
    ("loss_check_s", "check ms"), ("step_wall_s", "step ms"), ("steps_to_target", "steps→target"), ("time_to_target_s", "time→target s"),
    ("final_train_loss", "train loss"), ("final_eval_loss", "eval loss"), ("final_eval_acc", "eval acc"), ("peak_rss_bytes", "peak RSS MiB"),
    ("peak_device_mem_bytes", "peak dev MiB"), ("flags", "flags"), ("error", "error"),
]


def _fmt(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column.endswith("_bytes"):
        return f"{value / 2**20:,.1f}"
    if column in ("data_s", "derivative_s", "update_s", "loss_check_s", "step_wall_s"):
        return f"{value * 1e3:.3f}"
    if column == "samples_per_s":
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def points_table(points: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in TABLE_COLUMNS)
    rows = []
    ordered = points.sort_values(["dataset_size", "device", "batch_size", "lr", "repeat"], kind="stable")
    for record in ordered.to_dict("records"):
        cells = "".join(f"<td data-v=\"{html.escape(str(record.get(c)))}\">{_fmt(c, record.get(c))}</td>" for c, _ in TABLE_COLUMNS)
        rows.append(f"<tr class=\"{'' if record.get('status') == 'ok' else 'bad'}\">{cells}</tr>")
    csv = base64.b64encode(points.to_csv(index=False).encode()).decode()
    return (f"<p><a download=\"points.csv\" href=\"data:text/csv;base64,{csv}\">Download all {len(points)} points as CSV</a> "
            f"(every column of the <code>points</code> table). Click a header to sort.</p>"
            f"<div class=\"scroll\"><table id=\"points\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def summary_html(data: ReportData, ok: pd.DataFrame, groups, mem_fits: dict) -> str:
    points = data.points
    parts = []
    for record in data.runs.to_dict("records"):
        env = json.loads(record["env_json"] or "{}")
        spec = json.loads(record["spec_json"] or "{}")
        devices = ", ".join(f"{d} ({name})" for d, name in (env.get("devices") or {}).items())
        parts.append(
            "<dl class=\"env\">"
            f"<dt>run</dt><dd>{html.escape(record['run_id'])}, started {html.escape(str(record['started_at']))}</dd>"
            f"<dt>workload</dt><dd>{html.escape(str(spec.get('model')))} on {html.escape(str(spec.get('dataset')))}, {html.escape(str(spec.get('optimizer')))}, "
            f"lr policy {html.escape(str(spec.get('lr_policy', 'constant')))}, sampling {html.escape(', '.join(spec.get('sampling') or []) if isinstance(spec.get('sampling'), list) else str(spec.get('sampling')))}</dd>"
            f"<dt>machine</dt><dd>{html.escape(str(env.get('cpu_model')))}, {env.get('cpu_count')} CPUs; devices: {html.escape(devices)}</dd>"
            f"<dt>software</dt><dd>torch {html.escape(str(env.get('torch_version')))}, Python {html.escape(str(env.get('python')))}, "
            f"batchbench {html.escape(str(env.get('batchbench_version')))}, {env.get('threads')} thread(s)"
            + (f", code at {html.escape(str(env.get('git_commit'))[:12])}" if env.get("git_commit") else "") + "</dd></dl>"
        )
    statuses = points["status"].value_counts().to_dict() if len(points) else {}
    swept = (f"<p>{len(points)} points: batch sizes {', '.join(str(b) for b in sorted(points['batch_size'].unique()))}; "
             f"dataset sizes {', '.join(str(s) for s in sorted(points['dataset_size'].unique()))}; "
             f"devices {', '.join(sorted(points['device'].unique()))}; statuses "
             + ", ".join(f"{k} {v}" for k, v in statuses.items()) + ".</p>") if len(points) else "<p>This run has no points.</p>"
    rec_rows = []
    for g in groups:
        device, size = g.key.get("device"), g.key.get("dataset_size")
        table = g.table.set_index("batch_size")
        fit_info = mem_fits.get((device, size))
        limit = _device_limit(json.loads(data.runs["env_json"].iloc[-1] or "{}"), device) if len(data.runs) else None
        fits_b = fit_info[0].max_batch_size(limit) if fit_info and limit else None

        def cell(batch, column, fmt):
            return f"<b>{batch}</b> ({fmt.format(table.loc[batch, column])})" if batch is not None else "—"

        rec_rows.append(
            f"<tr><td>{html.escape(str(device))}</td><td>{size}</td>"
            f"<td>{cell(g.best_time, 'time_to_target_s', '{:.3g} s to target')}</td>"
            f"<td>{cell(g.best_throughput, 'samples_per_s', '{:,.0f} samples/s')}</td>"
            f"<td>{f'<b>{fits_b:,}</b> (predicted, {fit_info[0].per_sample_bytes / 1024:,.1f} KiB/sample)' if fits_b else '—'}</td>"
            f"<td>{f'<b>{g.fit.b_crit:.3g}</b> (S_min {g.fit.s_min:.3g} steps, RMS log err {g.fit.rms_log_error:.2f})' if g.fit else '—'}</td></tr>"
        )
    rec = ("<table class=\"rec\"><thead><tr><th>device</th><th>dataset size</th><th>best by time-to-target</th><th>best by throughput</th>"
           "<th>largest that fits</th><th>critical batch size</th></tr></thead><tbody>" + "".join(rec_rows) + "</tbody></table>") if rec_rows else ""
    note = ""
    if len(points) and ok.empty:
        note = "<p class=\"warn\">No point finished with status ok; the figures are empty. See the errors in the table of points.</p>"
    elif len(ok) and ok["steps_to_target"].isna().all():
        note = "<p class=\"note\">No target was reached, so time-to-target and the critical batch size are empty (set --target-loss, --target-accuracy or --target rel:F).</p>"
    return "".join(parts) + swept + note + rec


# ---------------------------------------------------------------- page

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d2330;background:#f6f7f9;line-height:1.45}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#c9cfdb;font-size:13px}
nav{padding:8px 28px;background:#e9ecf2;font-size:13px}nav a{margin-right:14px;color:#2b4c8c;text-decoration:none}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:14px 20px;margin:18px 0}
h2{font-size:18px;margin:4px 0 10px}figure{margin:14px 0}figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:13px;color:#4a5263;margin-top:4px}figcaption b{color:#1d2330}
.note{color:#4a5263;font-size:13px;background:#f3f5f8;border-left:3px solid #9aa7bd;padding:6px 10px}
.warn{color:#7a2e0e;background:#fff4ec;border-left:3px solid #e07b39;padding:6px 10px}
dl.env{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:13px;margin:0 0 10px}dt{color:#6a7285}dd{margin:0}
table{border-collapse:collapse;font-size:12px}th,td{border-bottom:1px solid #e6e8ee;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f0f2f6;cursor:pointer;position:sticky;top:0}table.rec td,table.rec th{text-align:left;white-space:normal}
tr.bad td{color:#9b2c2c}.scroll{max-height:520px;overflow:auto;border:1px solid #e6e8ee}
</style></head><body>
<header><h1>{{ title }}</h1><p>{{ subtitle }}</p></header>
<nav>{% for s in sections %}<a href="#{{ s.anchor }}">{{ s.title }}</a>{% endfor %}</nav>
<main>
{% for s in sections %}<section id="{{ s.anchor }}"><h2>{{ s.title }}</h2>
{{ s.html }}
{% for n in s.notes %}<p class="note">{{ n }}</p>{% endfor %}
{% for f in s.figures %}<figure><img alt="{{ f.alt }}" src="data:image/png;base64,{{ f.png_base64 }}"><figcaption><b>{{ f.title }}.</b> {{ f.caption }}</figcaption></figure>{% endfor %}
</section>{% endfor %}
</main>
<script>
document.querySelectorAll("table#points th").forEach(function (th, i) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], rows = Array.from(body.rows), asc = th.dataset.asc !== "1";
    rows.sort(function (a, b) {
      var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    th.dataset.asc = asc ? "1" : "0";
  });
});
</script>
</body></html>
"""


def render(data: ReportData, title: str = "batchbench report") -> str:
    """The report of the given runs as one HTML string."""
    import jinja2

    points = data.points
    ok = points[points["status"] == "ok"] if len(points) else points
    env = json.loads(data.runs["env_json"].iloc[-1] or "{}") if len(data.runs) else {}
    groups = convergence.analyze(points, data.checks) if len(points) else []
    names = list(SECTIONS)
    if "world_size" in points and points["world_size"].fillna(1).max() > 1:
        names.insert(names.index("Throughput") + 1, "Data-parallel scaling")
    sections = {name: Section(name) for name in names}

    def add(name: str, figs, empty: str) -> None:
        figs = [f for f in (figs if isinstance(figs, list) else [figs]) if f is not None]
        sections[name].figures += figs
        if not figs:
            sections[name].notes.append(empty)

    if len(ok):
        add("Throughput", throughput_figure(ok), "No throughput was measured (no point has measured steps).")
        scaling = scaling_figure(ok)
        if scaling is not None:
            sections["Data-parallel scaling"].figures.append(scaling)
        add("Phase breakdown", phase_figures(ok), "No phase times were measured.")
        add("Convergence", convergence_figures(ok, data.checks), "No loss checks were recorded.")
        figs, notes = target_figures(ok, data.checks, groups)
        sections["Time and steps to target"].figures += figs
        sections["Time and steps to target"].notes += notes
        figs, notes, mem_fits = memory_figures(ok, data.samples, env)
        sections["Memory and utilisation"].figures += figs
        sections["Memory and utilisation"].notes += notes
    else:
        mem_fits = {}
        for name in names[1:-1]:
            sections[name].notes.append("No point finished with status ok, so there is nothing to plot.")
    sections["Summary"].html = summary_html(data, ok, groups, mem_fits)
    sections["Points"].html = points_table(points) if len(points) else ""
    if not len(points):
        sections["Points"].notes.append("No points stored for this run.")
    runs = ", ".join(data.runs["run_id"]) if len(data.runs) else "no run"
    template = jinja2.Environment(autoescape=False).from_string(TEMPLATE)
    return template.render(title=html.escape(title), subtitle=html.escape(f"{runs} · {len(points)} points"), sections=list(sections.values()))


def write(data: ReportData, output: str | Path, title: str = "batchbench report") -> Path:
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data, title), encoding="utf-8")
    return path


# ---------------------------------------------------------------- before / after

COMPARE_KEYS = ["dataset", "dataset_size", "batch_size", "device", "model", "optimizer", "lr", "sampling", "repeat", "world_size"]


def compare_frame(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per common point: throughput and time-to-target of A and B and their ratios (B / A)."""
    cols = ["samples_per_s", "time_to_target_s", "derivative_s"]
    merged = a[COMPARE_KEYS + cols].merge(b[COMPARE_KEYS + cols], on=COMPARE_KEYS, suffixes=("_a", "_b"))
    for col in cols:
        merged[f"{col}_ratio"] = merged[f"{col}_b"] / merged[f"{col}_a"]
    return merged


def render_compare(a: ReportData, b: ReportData, label_a: str, label_b: str) -> str:
    import jinja2

    frame = compare_frame(a.points, b.points)
    section = Section("Before and after")
    if frame.empty:
        section.notes.append("The two runs have no point in common (same data set, size, batch size, device, model, optimizer, lr, sampling and repeat).")
    else:
        plt, _ = _plt()
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        for device, g in frame.groupby("device"):
            g = g.groupby("batch_size", as_index=False)[["samples_per_s_ratio", "time_to_target_s_ratio"]].median()
            ax.plot(g["batch_size"], g["samples_per_s_ratio"], "o-", label=f"{device}: throughput B/A")
            if g["time_to_target_s_ratio"].notna().any():
                ax.plot(g["batch_size"], g["time_to_target_s_ratio"], "s--", label=f"{device}: time to target B/A")
        ax.axhline(1.0, color="grey", lw=1)
        _log2_axis(ax, frame["batch_size"])
        ax.set(xlabel="batch size (log₂)", ylabel="ratio B / A")
        ax.legend(fontsize=8)
        section.figures.append(Figure("Ratios per batch size", f"Throughput and time-to-target of {label_b} over {label_a} per common point (median over repeats); above 1 B is faster in throughput, below 1 it reaches the target sooner.",
                                      "Line chart of the ratio of throughput and of time-to-target between two runs against batch size.", _png(fig)))
        head = "".join(f"<th>{h}</th>" for h in ["N", "batch", "device", "lr", "rep", "samples/s A", "samples/s B", "ratio", "time→target A", "time→target B", "ratio"])
        rows = "".join(
            f"<tr><td>{r['dataset_size']}</td><td>{r['batch_size']}</td><td>{html.escape(str(r['device']))}</td><td>{r['lr']:.4g}</td><td>{r['repeat']}</td>"
            f"<td>{_fmt('samples_per_s', r['samples_per_s_a'])}</td><td>{_fmt('samples_per_s', r['samples_per_s_b'])}</td><td>{_fmt('x', r['samples_per_s_ratio'])}</td>"
            f"<td>{_fmt('x', r['time_to_target_s_a'])}</td><td>{_fmt('x', r['time_to_target_s_b'])}</td><td>{_fmt('x', r['time_to_target_s_ratio'])}</td></tr>"
            for r in frame.to_dict("records")
        )
        section.html = f"<div class=\"scroll\"><table id=\"points\"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
    template = jinja2.Environment(autoescape=False).from_string(TEMPLATE)
    return template.render(title="batchbench: before and after", subtitle=html.escape(f"A = {label_a} · B = {label_b} · {len(frame)} common points"), sections=[section])
