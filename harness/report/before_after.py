"""The before/after page: ``analysis.compare``'s matched points as a figure of ratios with their
95% intervals and a table with the verdicts, the same numbers ``batchbench compare`` prints."""

from __future__ import annotations

import html

from harness.analysis.compare import MIN_RUNS, SAME, UNDETERMINED, Comparison, varying_keys
from harness.report.page import Section, html_page
from harness.report.plot import Figure, log2_axis, png, pyplot
from harness.report.tables import fmt


def _interval(ratio, low, high) -> str:
    if ratio is None or ratio != ratio:
        return "–"
    if low is None or low != low:
        return f"{ratio:.3g}×"
    return f"{ratio:.3g}× <small>[{low:.3g}, {high:.3g}]</small>"


def _figure(comparison: Comparison, label_a: str, label_b: str) -> Figure:
    frame = comparison.frame
    plt, _ = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    keys = [k for k in varying_keys(comparison) if k != "batch_size"]
    for n, (label, g) in enumerate(frame.groupby(keys, sort=False) if keys else [((), frame)]):
        name = ", ".join(f"{k}={v}" for k, v in zip(keys, label if isinstance(label, tuple) else (label,))) or "all"
        g = g.assign(b=g["batch_size"].astype(float)).sort_values("b")
        shift = 1.0 + 0.03 * (n - 0.5)  # side by side, so overlapping intervals stay visible
        for ax, column in zip(axes, ("throughput", "time_to_target")):
            has = g[f"{column}_ratio"].notna()
            if not has.any():
                continue
            y = g.loc[has, f"{column}_ratio"].astype(float)
            low = g.loc[has, f"{column}_low"].astype(float).fillna(y)
            high = g.loc[has, f"{column}_high"].astype(float).fillna(y)
            ax.errorbar(g.loc[has, "b"] * shift, y, yerr=[y - low, high - y], fmt="o-", capsize=3, label=name)
    for ax, title in zip(axes, ("throughput B / A (above 1: B faster)", "training time to target B / A (below 1: B faster)")):
        ax.axhline(1.0, color="grey", lw=1)
        for bound in (comparison.threshold, 1 / comparison.threshold):
            ax.axhline(bound, color="grey", lw=0.8, ls=":")
        log2_axis(ax, frame["batch_size"].astype(float))
        ax.set(xlabel="batch size (log₂)", title=title)
        ax.title.set_fontsize(9)
    if len(axes[0].get_legend_handles_labels()[0]) > 1:
        axes[0].legend(fontsize=7)
    return Figure(
        "Ratios with 95% intervals",
        f"{label_b} over {label_a}, per matched configuration: the ratio of the runs' median step times and its 95% interval (Welch, over the runs of each side; none with fewer than {MIN_RUNS} a side). "
        f"Dotted lines: the ±{comparison.threshold:.3g}× threshold; a verdict needs the interval clear of 1 and the ratio beyond it.",
        "Two panels of ratios with error bars against batch size: throughput and training time to target, B over A.", png(fig))


def render_compare(comparison: Comparison, label_a: str, label_b: str) -> str:
    frame = comparison.frame
    section = Section("Before and after")
    counts = comparison.counts()
    if frame.empty:
        section.notes.append("No point of A has the configuration of a point of B: every axis must agree ("
                             + ", ".join(comparison.keys) + "); `batchbench compare --match` chooses the keys.")
    else:
        section.notes.append(f"Throughput: B is slower at {counts['slower']}, faster at {counts['faster']} and shows no significant change at "
                             f"{counts[SAME]} of {len(frame)} matched configurations (threshold {comparison.threshold:.3g}×, 95% intervals over the runs of each side)"
                             + (f"; {counts[UNDETERMINED]} cannot be told with fewer than {MIN_RUNS} runs a side" if counts[UNDETERMINED] else "") + ".")
        section.figures.append(_figure(comparison, label_a, label_b))
        keys = ["dataset_size", "device", "batch_size"] + [k for k in varying_keys(comparison) if k not in ("dataset_size", "device", "batch_size")]
        titles = {"dataset_size": "N", "batch_size": "batch", "model_name": "model"}
        head = "".join(f"<th>{html.escape(titles.get(k, k))}</th>" for k in keys) + "".join(
            f"<th>{h}</th>" for h in ["runs A", "runs B", "samples/s A", "samples/s B", "throughput B/A", "verdict", "to target A (s)", "to target B (s)", "to target B/A", "verdict"])
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(r[k]))}</td>" for k in keys)
            + f"<td>{r['runs_a']}</td><td>{r['runs_b']}</td><td>{fmt('samples_per_s', r['samples_per_s_a'])}</td><td>{fmt('samples_per_s', r['samples_per_s_b'])}</td>"
            f"<td>{_interval(r['throughput_ratio'], r['throughput_low'], r['throughput_high'])}</td><td>{r['throughput_verdict'] or '–'}</td>"
            f"<td>{fmt('x', r['train_s_a'])}</td><td>{fmt('x', r['train_s_b'])}</td>"
            f"<td>{_interval(r['time_to_target_ratio'], r['time_to_target_low'], r['time_to_target_high'])}</td><td>{r['time_to_target_verdict'] or '–'}</td></tr>"
            for r in frame.to_dict("records")
        )
        section.html = f"<div class=\"scroll\"><table id=\"points\"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
    subtitle = f"A = {label_a} · B = {label_b} · {len(frame)} matched points ({comparison.only_a} only in A, {comparison.only_b} only in B)"
    return html_page("batchbench: before and after", subtitle, [section])
