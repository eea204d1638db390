"""``batchbench analyze``: per configuration of a stored sweep, steps- and time-to-target per batch
size, the critical-batch fit, the noise scale, the best batch sizes and the recommendation."""

from __future__ import annotations

import argparse

from harness.analysis.keys import group_label
from harness.analysis.recommend import recommend
from harness.commands.flags import runs_flag, store_flag
from harness.commands.text import layout, missing, number, to_json

NAME = "analyze"
HELP = "steps-to-target, critical batch size and recommendations for a stored sweep"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    store_flag(parser)
    runs_flag(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def main(args: argparse.Namespace) -> int:
    from harness.analysis.convergence import analyze
    from harness.store.sqlite import Store

    with Store.open_existing(args.store) as store:
        runs = store.select_runs(args.runs)
        points, checks, stored = store.load("points", runs), store.load("checks", runs), store.load("runs", runs)
    from harness.analysis.cbs import measured, tolerance_of

    found = measured(points, checks, tolerance_of(stored))
    if found is not None:  # a cbs run: its curve and ramp, as `batchbench cbs` printed them
        from harness.commands.cbs import cbs_text

        print(to_json(found.as_dict()) if args.json else cbs_text(found))
        return 0
    groups = analyze(points, checks)
    print(analysis_json(groups) if args.json else analysis_text(groups, points))
    return 0


def analysis_text(groups, points) -> str:
    """Per group, a row per batch size, the critical-batch fit, the noise scale and the best
    batch sizes, each with its number."""
    if not groups:
        failed = "" if len(points) == 0 else f" ({len(points)} points, none ok)"
        return f"nothing to analyze{failed}"
    has_target = points[["target_loss", "target_accuracy"]].notna().any().any()
    out = []
    for group in groups:
        out.append(group_label(group.key))
        if group.target:
            out.append(f"  target: {group.target}")
        out.append(_table(group))
        out += [f"  {line}" for line in _findings(group, has_target)]
        out.append("")
    return "\n".join(out).rstrip()


def _table(group) -> str:
    rows = [["batch", "lr", "steps→target [checks, repeats]", "step ms", "training→target s [interval]", "", "time→target s", "samples/s", "eval loss"]]
    for r in group.table.to_dict("records"):
        span = f" [{number(r['steps_low'], '{:.0f}')}, {number(r['steps_high'], '{:.0f}')}]" if not missing(r["steps_low"]) else ""
        reached = "" if r["reached"] == r["repeats"] else f" ({r['reached']}/{r['repeats']} reached)"
        train = (f"{r['train_s']:.3g} [{r['train_low_s']:.3g}, {r['train_high_s']:.3g}]" if not missing(r["train_s"]) else "-")
        mark = "best" if r["batch_size"] == group.best_batch else "tied" if r["tied"] else ""
        rows.append([
            str(r["batch_size"]), number(r["lr"], "{:.4g}"), number(r["steps_to_target"], "{:.0f}") + span + reached,
            number(None if missing(r["step_s"]) else r["step_s"] * 1e3, "{:.3g}"), train, mark,
            number(r["time_to_target_s"], "{:.3f}"), number(r["samples_per_s"], "{:,.0f}"), number(r["final_eval_loss"], "{:.4f}"),
        ])
    return layout(rows, right={0, 1, 3, 6, 7, 8}, indent="  ")


def _findings(group, has_target: bool) -> list[str]:
    """The fit, warnings, the noise scale, the best batch sizes and the recommendation."""
    lines = []
    if not has_target:
        lines.append("no target set: use --target-loss, --target-accuracy or --target rel:F for steps-to-target and the fit")
    elif group.fit is None:
        lines.append("fit: needs steps-to-target at four or more batch sizes (two parameters through fewer points say nothing)")
    else:
        f = group.fit
        lines.append(f"fit S(B) = S_min (1 + B_crit/B): B_crit = {f.b_crit_text()}, S_min = {f.s_min:,.4g} steps, "
                     f"E_min = {f.e_min:,.4g} samples, RMS log error {f.rms_log_error:.3f} ({len(f.batch_sizes)} batch sizes)")
    if group.coarse_checks:
        lines.append(f"warning: {group.coarse_note()}")
    if group.noise_start is not None or group.noise_at_target is not None:
        lines.append(f"noise scale B_simple: {number(group.noise_start)} at step 0, {number(group.noise_at_target)} at target")
    table = group.table.set_index("batch_size")
    # The recommendation ranks by training time (steps x the median step); the wall clock to the
    # target check (first steps and checks included) and throughput are shown as what they are.
    best = [f"by {label} {batch} ({fmt.format(table.loc[batch, column])})" for label, batch, column, fmt in (
        ("wall time to the target check", group.best_batch_by_time, "time_to_target_s", "{:.3g} s"),
        ("throughput", group.best_batch_by_throughput, "samples_per_s", "{:,.0f} samples/s"),
    ) if batch is not None]
    if best:
        lines.append("other bests: " + ", ".join(best))
    advice = recommend(group)
    if advice is not None:
        lines.append("recommended: " + advice.sentence())
    return lines


def analysis_json(groups) -> str:
    def clean(value):
        return None if missing(value) else value

    payload = []
    for g in groups:
        advice = recommend(g)
        payload.append({
            "group": {k: clean(v) for k, v in g.key.items()},
            "batch_sizes": [{k: clean(v) for k, v in row.items()} for row in g.table.to_dict("records")],
            "fit": None if g.fit is None else {"b_crit": g.fit.b_crit, "b_crit_low": g.fit.b_crit_low, "b_crit_high": g.fit.b_crit_high,
                                               "s_min": g.fit.s_min, "e_min": g.fit.e_min, "rms_log_error": g.fit.rms_log_error},
            "best_batch_size": {"training_time": g.best_batch, "tied": list(g.tied), "time_to_target": g.best_batch_by_time, "compute_to_target": g.best_batch_by_compute, "throughput": g.best_batch_by_throughput},
            "noise_scale": {"start": g.noise_start, "at_target": g.noise_at_target},
            "target": g.target,
            "check_resolution": g.check_resolution,
            "coarse_checks": g.coarse_checks,
            "recommendation": None if advice is None else advice.as_dict(),
        })
    return to_json(payload)
