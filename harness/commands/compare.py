"""``batchbench compare``: before/after, point by point: is B faster, slower or not significantly
different from A? For CI gates, ``--fail-above`` exits 1 on a significant regression."""

from __future__ import annotations

import argparse
import sys

from harness.commands.flags import DEFAULT_STORE
from harness.commands.text import layout, missing, seconds
from harness.errors import SpecError
from harness.outputs import output_path, write_output
from harness.store.schema import display

NAME = "compare"
HELP = "before/after: is B faster, slower or not significantly different from A, point by point"
DESCRIPTION = ("Match the points of two sides on their whole configuration and give, per configuration, the ratio B/A of throughput and "
               "of training time to the target with a 95%% interval over the runs of each side, and a verdict (none with fewer than two runs "
               "a side: one run cannot show what moves between runs). A and B: run ids in --store (RUN or RUN,RUN), a store (every run "
               "in it) or STORE:RUN[,RUN]. `batchbench run --runs 3` stores three runs of a sweep.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="the baseline: RUN[,RUN], STORE (all its runs) or STORE:RUN[,RUN]")
    parser.add_argument("b", metavar="B", help="the contender: RUN[,RUN], STORE (all its runs) or STORE:RUN[,RUN]")
    parser.add_argument("--store", default=DEFAULT_STORE, help=f"store that holds bare run ids [{DEFAULT_STORE}]")
    parser.add_argument("--match", metavar="KEYS", help="comma list of the configuration keys to match on, e.g. batch_size,device,dataset_size; "
                                                         "an unknown key lists them all [every one]")
    parser.add_argument("--threshold", default="1.1", help="smallest change a verdict reports, as a factor [1.1]")
    parser.add_argument("--fail-above", metavar="F", help="exit 1 when B is significantly slower than A by more than F at any point "
                                                          "(throughput or time to target), e.g. 1.1")
    parser.add_argument("--html", metavar="PATH", help="also write the HTML before/after page")
    parser.add_argument("--json", action="store_true", help="print the matched points as JSON")


def main(args: argparse.Namespace) -> int:
    from harness.analysis.compare import MATCH_KEYS, compare
    from harness.store.sqlite import load_ref, run_ref

    match = None
    if args.match:
        match = tuple(k.strip() for k in args.match.split(",") if k.strip())
        unknown = [k for k in match if k not in MATCH_KEYS]
        if unknown or not match:
            raise SpecError("--match", f"{', '.join(unknown) or 'nothing'} is not a configuration key; use a comma list of {', '.join(MATCH_KEYS)}")
    threshold = factor(args.threshold, "--threshold")
    fail_above = factor(args.fail_above, "--fail-above") if args.fail_above else None
    keep = [(run_ref(args.store, ref, field)[0], f"the store of {field}") for ref, field in ((args.a, "A"), (args.b, "B"))]
    if args.html:
        output_path(args.html, "--html", keep)
    (side_a, label_a), (side_b, label_b) = (load_ref(args.store, ref, field, ("points",)) for ref, field in ((args.a, "A"), (args.b, "B")))
    empty = [field for field, side in (("A", side_a), ("B", side_b)) if _no_ok_point(field, side["points"])]
    result = compare(side_a["points"], side_b["points"], match=match, threshold=threshold)
    print(result.frame.to_json(orient="records", indent=1) if args.json else comparison_text(result, label_a, label_b))
    if args.html:
        from harness import report

        page = report.render_compare(result, label_a, label_b)
        print(f"report: {write_output(args.html, page, '--html', keep)}", file=sys.stderr if args.json else sys.stdout)
    if fail_above is not None and "B" in empty:
        print("batchbench: B has no ok point to hold to --fail-above: the gate fails", file=sys.stderr)
        return 1
    if fail_above is not None:
        worse = result.regressions(fail_above)
        if len(worse):
            print(f"batchbench: {len(worse)} point(s) significantly slower than {fail_above:g}x (--fail-above)", file=sys.stderr)
            return 1
    return 0


def _no_ok_point(field: str, points) -> bool:
    """Says so on stderr where a side has no ok point (all failed, or none there): nothing of it can match."""
    from harness.store.schema import Status

    if len(points) and (points["status"] == Status.OK).any():
        return False
    counts = points["status"].fillna("no status").value_counts() if len(points) else None
    detail = "no points" if counts is None else ", ".join(f"{n} {status}" for status, n in counts.items())
    print(f"batchbench: {field} has no ok point ({detail}): none of its points can be compared", file=sys.stderr)
    return True


def factor(text: str, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 1:
        raise SpecError(field, f"{text!r} is not a factor; use a number of at least 1, e.g. 1.1")
    return value


def interval(ratio, low, high) -> str:
    """``1.02x [0.97, 1.08]``; the ratio alone where no interval could be formed."""
    if missing(ratio):
        return "-"
    if missing(low):
        return f"{ratio:.3g}x"
    return f"{ratio:.3g}x [{low:.3g}, {high:.3g}]"


def comparison_text(comparison, label_a: str, label_b: str) -> str:
    """Per matched configuration, the runs of each side, throughput and training time to target of
    A and B, the ratio B / A with its 95% interval, and the verdict; then the counts, and what a
    configuration without a verdict needs."""
    from harness.analysis.compare import MIN_RUNS, SAME, UNDETERMINED, varying_keys

    f = comparison.frame
    head = (f"A = {label_a} · B = {label_b} · {len(f)} matched configurations ({comparison.only_a} only in A, {comparison.only_b} only in B) · "
            f"ratios B/A of the runs' median step times with 95% intervals over the runs of each side; a change counts when its interval "
            f"excludes 1 and it is at least {comparison.threshold:.3g}x")
    if f.empty:
        return head + "\nNo point of A has the configuration of a point of B (every axis must agree: " + ", ".join(comparison.keys) + "); --match chooses the keys."
    leading = ("dataset_size", "device", "batch_size")
    keys = [k for k in leading if k in f] + [k for k in varying_keys(comparison) if k not in leading]
    titles = {"dataset_size": "size", "batch_size": "batch", "model_name": "model"}
    rows = [[titles.get(k, k) for k in keys] + ["runs", "samples/s A", "samples/s B", "throughput B/A", "verdict", "to target A", "to target B",
                                                 "to target B/A", "verdict"]]
    for r in f.to_dict("records"):
        rows.append([str(r[k]) for k in keys] + [
            f"{r['runs_a']}/{r['runs_b']}", display("samples_per_s", r["samples_per_s_a"]), display("samples_per_s", r["samples_per_s_b"]),
            interval(r["throughput_ratio"], r["throughput_low"], r["throughput_high"]), r["throughput_verdict"] or "-",
            seconds(r["train_s_a"]), seconds(r["train_s_b"]),
            interval(r["time_to_target_ratio"], r["time_to_target_low"], r["time_to_target_high"]), r["time_to_target_verdict"] or "-",
        ])
    numeric = {i for i, k in enumerate(keys) if k in ("dataset_size", "batch_size")} | {len(keys) + 1, len(keys) + 2, len(keys) + 5, len(keys) + 6}
    counts, ttt = comparison.counts(), f["time_to_target_verdict"]
    summary = (f"throughput: B is slower at {counts['slower']}, faster at {counts['faster']}, no significant change at {counts[SAME]} of {len(f)} configurations; "
               f"time to target: slower at {int((ttt == 'slower').sum())}, faster at {int((ttt == 'faster').sum())}, "
               f"no significant change at {int((ttt == SAME).sum())}")
    lines = [head, layout(rows, numeric), summary]
    if counts[UNDETERMINED]:
        lines.append(f"{counts[UNDETERMINED]} configuration(s) cannot be told: fewer than {MIN_RUNS} runs a side, and one run cannot show what moves "
                     f"between runs (identical runs have differed by up to 1.6x on a busy machine). Store {comparison.runs_needed()} runs a side "
                     f"(`batchbench run SPEC --runs {comparison.runs_needed()} --store STORE`) and compare the stores; --fail-above does not fire on these.")
    return "\n".join(lines)
