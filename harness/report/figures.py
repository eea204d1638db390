"""The report's figures, one builder a question: throughput, data-parallel scaling, phases,
convergence, steps and time to target, memory and utilisation. DataFrames in, ``Figure``s out
(None or [] where the data do not allow one); each with a caption that says how to read it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.store.schema import PHASES, Status
from harness.analysis import convergence
from harness.analysis.memory import fit_memory
from harness.analysis.recommend import recommend
from harness.report.plot import PHASE_COLORS, Figure, lines, log2_axis, log_axis, log_y, palette, png, pyplot, series_label, symlog_x


def throughput_figure(ok: pd.DataFrame) -> Figure | None:
    if ok["samples_per_s"].notna().sum() == 0:
        return None
    plt, sns = pyplot()
    data = ok.assign(series=series_label(ok))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    lines(ax, data, ("batch_size", "samples_per_s"), "series", palette(data["series"].unique(), "deep"), marker="o")
    log2_axis(ax, data["batch_size"])
    log_y(ax)
    ax.set(xlabel="batch size (log₂)", ylabel="samples / s (log)")
    ax.legend(title=None, fontsize=8)
    repeats = int(ok["repeat"].max()) + 1
    band = f" The band spans the {repeats} repeats." if repeats > 1 else ""
    return Figure(
        "Throughput against batch size",
        "Samples per second over the measured window (loss checks excluded) at each batch size; a line that flattens marks where a larger batch stops buying speed." + band,
        "Line chart of training throughput in samples per second against batch size on log axes, one line per device and dataset size.",
        png(fig),
    )


def flops_figure(ok: pd.DataFrame) -> Figure | None:
    """MFU against batch size where the device's peak is known, else achieved TFLOPS."""
    if "achieved_tflops" not in ok or ok["achieved_tflops"].notna().sum() == 0:
        return None
    plt, _ = pyplot()
    use_mfu = ok["mfu"].notna().any()
    column = "mfu" if use_mfu else "achieved_tflops"
    data = ok.dropna(subset=[column]).assign(series=series_label(ok))
    if use_mfu:
        data = data.assign(mfu=100 * data["mfu"])
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    lines(ax, data, ("batch_size", column), "series", palette(data["series"].unique(), "deep"), marker="o")
    log2_axis(ax, data["batch_size"])
    log_y(ax)
    ax.set(xlabel="batch size (log₂)", ylabel="MFU, % of the dense peak (log)" if use_mfu else "achieved TFLOPS (log)")
    ax.legend(title=None, fontsize=8)
    what = ("model FLOPs utilisation: the step's counted FLOPs (matmuls and convolutions, forward and backward) per second over the device's dense peak at the point's precision"
            if use_mfu else "achieved TFLOPS: the step's counted FLOPs (matmuls and convolutions, forward and backward) per second; no peak is known for this device, so no MFU (give --peak-tflops)")
    return Figure("How much of the hardware each batch size uses",
                  f"At each batch size, {what}. Small batches leave the device idle between kernels; the curve shows how far each batch size is from what the hardware can do.",
                  "Line chart of model FLOPs utilisation (or achieved TFLOPS) against batch size, one line per configuration.", png(fig))


def scaling_figure(ok: pd.DataFrame) -> Figure | None:
    if "world_size" not in ok or ok["world_size"].fillna(1).max() <= 1:
        return None
    table = convergence.scaling_efficiency(ok)
    if table.empty or table["efficiency"].notna().sum() == 0:
        return None
    plt, _ = pyplot()
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
                  "Line charts of scaling efficiency and of exposed communication share against the number of data-parallel ranks.", png(fig))


def phase_figures(ok: pd.DataFrame) -> list[Figure]:
    cols = [f"{p}_s" for p in PHASES[:3]]
    if ok[cols].notna().sum().sum() == 0:
        return []
    plt, _ = pyplot()
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
                               "100% stacked bars of the share of step time spent in data, derivative, update and loss check, per batch size.", png(fig)))
        else:
            figs.append(Figure("Time per step by phase", "Median time of each phase per step, stacked (loss_check amortised over the steps between checks); data and derivative grow with the batch, update does not.",
                               "Stacked bars of per-step milliseconds in the data, derivative, update and loss-check phases against batch size.", png(fig)))
    return figs


def convergence_figures(ok: pd.DataFrame, checks: pd.DataFrame) -> list[Figure]:
    if checks.empty or checks["eval_loss"].notna().sum() == 0:
        return []
    plt, sns = pyplot()
    meta = ok[["point_id", "batch_size", "dataset_size", "device", "repeat"]]
    data = checks.merge(meta, on="point_id")
    if data.empty:
        return []
    # One panel per dataset size on the first device: the picture of small-noisy vs large-smooth.
    data = data[data["device"] == data["device"].iloc[0]]
    sizes = sorted(data["dataset_size"].unique())[-3:]
    data = data[data["dataset_size"].isin(sizes)]
    batches = sorted(data["batch_size"].unique())
    colors = palette(batches)
    figs = []
    for x, xlabel, what in (("step", "steps", "steps"), ("samples_seen", "samples seen", "samples seen"), ("wall_s", "wall time (s, loss checks included)", "wall time")):
        fig, axes = plt.subplots(1, len(sizes), figsize=(min(4.6 * len(sizes), 11), 3.8), squeeze=False, sharey=True)
        for ax, size in zip(axes[0], sizes):
            d = data[data["dataset_size"] == size]
            lines(ax, d, (x, "eval_loss"), "batch_size", colors, band=x != "wall_s", lw=1.1)
            ax.set(title=f"N={size}", xlabel=xlabel, ylabel="check-set loss")
            if x != "wall_s" and d[x].max() > 50 * max(d[x][d[x] > 0].min(), 1):
                symlog_x(ax, max(1, d[x][d[x] > 0].min()))
        if (data["eval_loss"] > 0).all() and data["eval_loss"].max() / max(data["eval_loss"].min(), 1e-12) > 20:
            log_y(axes[0][0])  # the panels share their y axis: once, after every panel is drawn
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colors[b], lw=1.5) for b in batches]  # every panel's batch sizes
        fig.legend(handles, [str(b) for b in batches], title="batch size", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        fig.tight_layout()
        figs.append(Figure(f"Check-set loss against {what}",
                           f"Loss on the check set against {what}, a line per batch size (bands span repeats): small batches are noisy and move fast per sample, large ones are smooth and fast per step.",
                           f"Line chart of check-set loss against {what}, one line per batch size, one panel per dataset size.", png(fig)))
    return figs


def group_names(groups) -> list[str]:
    """A legend label per group: what tells the groups apart (``workers 2``), or device and
    dataset size where nothing does."""
    from harness.analysis.keys import group_label

    keys = [k for k in (groups[0].key if groups else {}) if len({str(g.key.get(k)) for g in groups}) > 1]
    if not keys:
        return [f"{g.key.get('device')} · N={g.key.get('dataset_size')}" for g in groups]
    return [group_label({k: g.key[k] for k in keys}) for g in groups]


def headline_figure(groups) -> Figure | None:
    """Time to target as the product of its two factors, a panel each, the choice starred."""
    shown = [(g, recommend(g)) for g in groups]
    shown = [(g, r) for g, r in shown if r is not None]
    if not shown:
        return None
    plt, _ = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    batches = set()
    for (g, rec), label in zip(shown, group_names([g for g, _ in shown])):
        t = g.table.sort_values("batch_size")
        label = label if len(shown) > 1 else None
        color = None
        for ax, column in zip(axes, ("steps_to_target", "step_s", "train_s")):
            d = t.dropna(subset=[column])
            line = ax.plot(d["batch_size"], d[column], "o-", ms=4, lw=1.4, color=color, label=label)[0]
            color = line.get_color()
            if column == "train_s":  # the interval of each batch size, and the ones tied with the best
                ax.vlines(d["batch_size"], d["train_low_s"], d["train_high_s"], color=color, lw=1, alpha=0.6)
                tied = d[d["tied"]]
                ax.plot(tied["batch_size"], tied[column], "o", ms=9, mfc="none", color=color)
            mine = d[d["batch_size"] == rec.batch_size]
            ax.plot(mine["batch_size"], mine[column], "*", ms=14, color=color, markeredgecolor="black")
            batches |= set(d["batch_size"])
    for ax, title in zip(axes, ("steps to target (falls with B)", "seconds per step (rises with B)", "= seconds of training to target")):
        log_y(ax)
        log2_axis(ax, batches)
        ax.set(xlabel="batch size", title=title)
        ax.title.set_fontsize(10)
    if len(shown) > 1:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    return Figure("Which batch size: time to target = steps to target x time per step",
                  "Each panel on log axes, a line per device and dataset size: steps to target, the median step time, and their product with its interval (the checks before the target and the step time's uncertainty). The star is the recommended batch size; circled ones are tied with it within noise. Below the critical batch size doubling B nearly halves the steps; above it the steps hardly fall while each step costs more.",
                  "Three log-log charts against batch size: steps to target falling, seconds per step rising, and their product, time to target, with its minimum starred.", png(fig))


def search_figure(points: pd.DataFrame, checks: pd.DataFrame) -> Figure | None:
    """A ``batchbench tune`` run: every trial in the (batch size, learning rate) plane by how it
    ended, and the training time to target per batch size with the choice starred."""
    if len(points) == 0 or not (points["status"] == Status.PRUNED).any():
        return None
    plt, _ = pyplot()
    last = checks.sort_values("step").groupby("point_id").tail(1).set_index("point_id")["compute_s"] if len(checks) else pd.Series(dtype=float)
    trials = points.assign(stopped_s=points["point_id"].map(last))
    reached = trials[trials["steps_to_target"].notna() & (trials["status"] == Status.OK)]
    best = reached.loc[reached["compute_to_target_s"].idxmin()] if len(reached) else None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    styles = (("reached", "o", "#55A868"), ("missed", "s", "#8c8c8c"), ("pruned", "x", "#DD8452"), ("failed", "v", "#C44E52"))
    outcome = np.where(trials["steps_to_target"].notna() & (trials["status"] == Status.OK), "reached",
                       np.where(trials["status"] == Status.OK, "missed", np.where(trials["status"] == Status.PRUNED, "pruned", "failed")))
    for name, marker, color in styles:
        chosen = trials[outcome == name]
        if len(chosen):
            left.scatter(chosen["batch_size"], chosen["lr"], marker=marker, color=color, s=40, label=f"{name} ({len(chosen)})")
    per_batch = reached.groupby("batch_size")["compute_to_target_s"].min()
    right.plot(per_batch.index, per_batch.values, "o-", color="#55A868", label="best reached, per batch size")
    stopped = trials[outcome == "pruned"]
    if len(stopped):
        right.scatter(stopped["batch_size"], stopped["stopped_s"], marker="^", color="#DD8452", s=30, label="pruned (at least this long)")
    if best is not None:
        left.plot([best["batch_size"]], [best["lr"]], "*", ms=16, color="#55A868", markeredgecolor="black", label="chosen")
        right.plot([best["batch_size"]], [best["compute_to_target_s"]], "*", ms=16, color="#55A868", markeredgecolor="black")
    for ax in (left, right):
        log2_axis(ax, trials["batch_size"])
        ax.set(xlabel="batch size")
        ax.legend(fontsize=7)
    log_y(left)
    left.set(ylabel="learning rate (log)")
    log_y(right)
    right.set(ylabel="seconds of training (log)")
    fig.tight_layout()
    return Figure("The search: which trials ran and how they ended",
                  f"Left: every trial of the search ({len(trials)}), by outcome; pruned trials stopped once they could no longer beat the best time, missed ones ran their whole budget. "
                  "Right: the least training time to the target at each batch size tried, with pruned trials at the time they were stopped (their time to target is at least that); the star is the choice.",
                  "Scatter of trials over batch size and learning rate by outcome, and a chart of training time to target against batch size with the chosen batch size starred.", png(fig))


def target_figures(ok: pd.DataFrame, checks: pd.DataFrame, groups) -> tuple[list[Figure], list[str]]:
    figs, notes = [], []
    has_target = ok["steps_to_target"].notna().any()
    plt, sns = pyplot()
    if not has_target:
        notes.append("No point reached a target (or none was set): run with --target-loss, --target-accuracy or --target rel:F for steps- and time-to-target.")
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for g, label in zip(groups, group_names(groups)):
            t = g.table.dropna(subset=["steps_to_target"])
            if t.empty:
                continue
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
        tried = {b for g in groups for b in g.table["batch_size"]}
        for ax, ylabel in zip(axes, ("steps to target", "seconds to target")):
            log2_axis(ax, tried)
            log_y(ax)
            ax.set(xlabel="batch size (log₂)", ylabel=ylabel + " (log)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        figs.append(Figure("Steps and time to target",
                           "Left: steps to the target per batch size (best learning rate when tuned) with the fitted S_min·(1 + B_crit/B) and the perfect-scaling line; where the points leave the dotted line, doubling the batch stops halving the steps. Right: wall time (checks included) and compute time (checks excluded) to the target; its minimum is the batch size to train with.",
                           "Log-log charts of steps to target and of seconds to target against batch size, with the fitted critical-batch curve.", png(fig)))
    noise = checks.dropna(subset=["noise_scale"]) if "noise_scale" in checks else checks.iloc[:0]
    if noise.empty:
        notes.append("The gradient noise scale was not estimated: run with --noise-samples 1024 to record it at every loss check.")
    else:
        data = noise.merge(ok[["point_id", "batch_size"]], on="point_id")
        batches = sorted(data["batch_size"].unique())
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        lines(ax, data, ("step", "noise_scale"), "batch_size", palette(batches), band=False, lw=1.0)
        log_y(ax)
        ax.set(xlabel="step", ylabel="B_simple (log)")
        ax.legend(title="batch size", fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        figs.append(Figure("Gradient noise scale over training",
                           "B_simple = tr(Σ)/|G|² at each loss check: batches much smaller than it are noise-dominated and scale perfectly; it grows as training nears the optimum, so the useful batch size grows with it.",
                           "Line chart of the estimated gradient noise scale against training step, one line per batch size.", png(fig)))
    return figs, notes


def memory_figures(ok: pd.DataFrame, samples: pd.DataFrame, env: dict) -> tuple[list[Figure], list[str]]:
    figs, notes = [], []
    plt, sns = pyplot()
    column = "peak_device_mem_bytes" if ok["peak_device_mem_bytes"].notna().any() else "peak_rss_bytes"
    mem = ok.dropna(subset=[column])
    if mem.empty:
        notes.append("No peak memory was recorded for these points.")
    else:
        fig, ax = plt.subplots(figsize=(7.5, 4))
        for (device, size), g in mem.groupby(["device", "dataset_size"]):
            dev_col = "peak_device_mem_bytes" if g["peak_device_mem_bytes"].notna().any() else "peak_rss_bytes"
            g = g.dropna(subset=[dev_col]).sort_values("batch_size")
            what = "tensors" if dev_col == "peak_device_mem_bytes" else "RSS"
            pts = ax.plot(g["batch_size"], g[dev_col] / 2**20, "o", label=f"{device} · N={size} ({what})")[0]
            fit = fit_memory(g["batch_size"], g[dev_col])
            if fit is not None:
                grid = np.linspace(g["batch_size"].min(), g["batch_size"].max(), 50)
                ax.plot(grid, fit.predict(grid) / 2**20, "-", color=pts.get_color(), alpha=0.6)
            limit = device_limit(env, device)
            if limit and limit < 20 * g[dev_col].max():
                ax.axhline(limit / 2**20, color=pts.get_color(), linestyle="--", linewidth=1)
        log2_axis(ax, mem["batch_size"])
        ax.set(xlabel="batch size (log₂)", ylabel="peak memory (MiB)")
        ax.legend(fontsize=7)
        limits = ", ".join(f"{d}: {device_limit(env, d) / 2**30:.1f} GiB" for d in mem["device"].unique() if device_limit(env, d))
        figs.append(Figure("Peak memory against batch size",
                           f"Peak memory of a training step per point (live tensor bytes: the CUDA allocator's peak, or on the CPU an exactly counted step; loss checks excluded) with the fitted line peak = fixed + per-sample × B (its slope is what each extra sample costs); dashed lines mark the device limit when it is near the data ({limits or 'limit unknown'}). For the largest batch that fits, run batchbench fit, which probes.",
                           "Scatter of peak memory in MiB against batch size with a fitted straight line per device.", png(fig)))
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
                           "Time series of CPU and GPU utilisation across the sweep's points.", png(fig)))
    return figs, notes


def device_limit(env: dict, device: str) -> int | None:
    return (env.get("device_memory_bytes") or {}).get(device)


def cbs_figure(m) -> Figure | None:
    """``batchbench cbs``: the critical batch size at each checkpoint against samples seen, the
    noise scale B_simple on the same axes, and the ramp that was verified."""
    if m is None or not m.curve:
        return None
    plt, _ = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    xs = [c.samples for c in m.curve]
    ax.plot(xs, [c.batch_size for c in m.curve], marker="o", label="critical batch size (branches)")
    bounds = [c for c in m.curve if c.lower_bound]
    if bounds:
        ax.scatter([c.samples for c in bounds], [c.batch_size for c in bounds], marker="^", s=60, zorder=3, label="every branch kept up (lower bound)")
    if m.noise_scale:
        ax.plot([s for s, _ in m.noise_scale], [b for _, b in m.noise_scale], linestyle="--", marker=".", label="noise scale B_simple")
    if m.stages:
        end = max([*xs, m.base_samples])
        starts = [max(s.start_samples, 1) for s in m.stages] + [end]
        ax.step(starts, [s.batch_size for s in m.stages] + [m.stages[-1].batch_size], where="post", color="black", alpha=0.6, label="ramp")
    log_axis(ax, "x")
    log_axis(ax, "y", powers_of_two=True)
    ax.set(xlabel="samples seen by the base run (log)", ylabel="batch size (log₂)")
    ax.legend(fontsize=8)
    return Figure(
        "Critical batch size through training",
        f"At each checkpoint of the base run (B={m.b0}), branches at 2x, 4x, ... the batch trained the same samples; the critical "
        f"batch size is the largest whose loss stayed within {m.tolerance:.0%} of the smaller ones'. The dashed line is the gradient "
        "noise scale measured on the base run, which estimates the same quantity from one batch; the black steps are the ramp.",
        "Line chart of the measured critical batch size and the gradient noise scale against samples seen, both on log axes, with the batch-size ramp as steps.",
        png(fig),
    )
