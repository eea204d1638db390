"""Before and after: the points two runs have in common, their throughput and time-to-target
ratios, as a figure and a table on one page."""

from __future__ import annotations

import html

import pandas as pd

from harness.report.page import ReportData, Section, html_page
from harness.report.plot import Figure, log2_axis, png, pyplot
from harness.report.tables import fmt


COMPARE_KEYS = ["dataset", "dataset_size", "batch_size", "device", "model", "optimizer", "lr", "sampling", "repeat", "world_size"]


def compare_frame(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per common point: throughput and time-to-target of A and B and their ratios (B / A)."""
    cols = ["samples_per_s", "time_to_target_s", "derivative_s"]
    merged = a[COMPARE_KEYS + cols].merge(b[COMPARE_KEYS + cols], on=COMPARE_KEYS, suffixes=("_a", "_b"))
    for col in cols:
        merged[f"{col}_ratio"] = merged[f"{col}_b"] / merged[f"{col}_a"]
    return merged


def render_compare(a: ReportData, b: ReportData, label_a: str, label_b: str) -> str:
    frame = compare_frame(a.points, b.points)
    section = Section("Before and after")
    if frame.empty:
        section.notes.append("The two runs have no point in common (same data set, size, batch size, device, model, optimizer, lr, sampling and repeat).")
    else:
        plt, _ = pyplot()
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        for device, g in frame.groupby("device"):
            g = g.groupby("batch_size", as_index=False)[["samples_per_s_ratio", "time_to_target_s_ratio"]].median()
            ax.plot(g["batch_size"], g["samples_per_s_ratio"], "o-", label=f"{device}: throughput B/A")
            if g["time_to_target_s_ratio"].notna().any():
                ax.plot(g["batch_size"], g["time_to_target_s_ratio"], "s--", label=f"{device}: time to target B/A")
        ax.axhline(1.0, color="grey", lw=1)
        log2_axis(ax, frame["batch_size"])
        ax.set(xlabel="batch size (log₂)", ylabel="ratio B / A")
        ax.legend(fontsize=8)
        section.figures.append(Figure("Ratios per batch size", f"Throughput and time-to-target of {label_b} over {label_a} per common point (median over repeats); above 1 B is faster in throughput, below 1 it reaches the target sooner.",
                                      "Line chart of the ratio of throughput and of time-to-target between two runs against batch size.", png(fig)))
        head = "".join(f"<th>{h}</th>" for h in ["N", "batch", "device", "lr", "rep", "samples/s A", "samples/s B", "ratio", "time→target A", "time→target B", "ratio"])
        rows = "".join(
            f"<tr><td>{r['dataset_size']}</td><td>{r['batch_size']}</td><td>{html.escape(str(r['device']))}</td><td>{r['lr']:.4g}</td><td>{r['repeat']}</td>"
            f"<td>{fmt('samples_per_s', r['samples_per_s_a'])}</td><td>{fmt('samples_per_s', r['samples_per_s_b'])}</td><td>{fmt('x', r['samples_per_s_ratio'])}</td>"
            f"<td>{fmt('x', r['time_to_target_s_a'])}</td><td>{fmt('x', r['time_to_target_s_b'])}</td><td>{fmt('x', r['time_to_target_s_ratio'])}</td></tr>"
            for r in frame.to_dict("records")
        )
        section.html = f"<div class=\"scroll\"><table id=\"points\"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
    return html_page("batchbench: before and after", f"A = {label_a} · B = {label_b} · {len(frame)} common points", [section])
