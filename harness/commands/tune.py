"""``batchbench tune``: the batch size (and its learning rate from ``--lr-grid``) that reaches the
target soonest on this machine, by an adaptive search whose every trial is a stored point."""

from __future__ import annotations

import argparse
import sys

from harness.commands.flags import DEFAULT_STORE, executor_flags, executor_of, kept_inputs, sweep_flags, sweep_spec
from harness.commands.report import write_run_report
from harness.commands.text import to_json
from harness.config.axes import FIELDS, taken_by
from harness.outputs import output_path

NAME = "tune"
HELP = "search the batch size and learning rate with the least time to target"
DESCRIPTION = ("Adaptive search for the batch size (and its learning rate from --lr-grid) that reaches the target soonest "
               "on this machine: starts near the gradient noise scale, stops each trial at the target or once it cannot win. "
               "Every trial is a stored point (status pruned when stopped early).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    output = sweep_flags(parser, names=taken_by(NAME))["output"]
    output.add_argument("--json", action="store_true",
                        help="print the answer as JSON (batch_size, lr, time_to_target_s, steps_to_target, trials, samples_processed, ...)")
    output.add_argument("--quiet", action="store_true", help="no line per trial")
    output.add_argument("--resume", action="store_true",
                        help="continue the latest tune of the same flags in the store: its stored trials are read back, not trained again")
    executor_flags(parser)


def main(args: argparse.Namespace) -> int:
    from harness.analysis.keys import group_label
    from harness.drivers.plan import plan
    from harness.drivers.tune.runner import tune, tune_spec
    from harness.store.sqlite import Store

    executor = executor_of(args)
    the_plan = plan(tune_spec(sweep_spec(args, FIELDS)), decided=("lr_policy",))
    keep = kept_inputs(args.store, args.spec_file, the_plan.spec)
    if args.report and not args.no_report:
        output_path(args.report, "--report", keep)
    tell = lambda line: print(f"batchbench: {line}", file=sys.stderr)  # noqa: E731
    say = (lambda line: None) if args.quiet else tell
    with Store(args.store or DEFAULT_STORE) as store:
        run_id, results = tune(the_plan, store, say=say, executor=executor, resume=args.resume, note=tell)
    if args.json:
        groups = [r.as_dict() for r in results]
        print(to_json({"run_id": run_id, "store": str(store.path), **groups[0], "groups": groups}))
    else:
        for r in results:
            label = group_label({"dataset": the_plan.spec.dataset, "dataset_size": r.key["dataset_size"], "device": r.key["device"]})
            print(f"{label}: {r.sentence()}")
        print(f"run {run_id} in {store.path}: `batchbench analyze --run {run_id}` shows every trial", file=sys.stderr)
    if not args.no_report:
        path = write_run_report(store.path, run_id, args.report, title="batchbench tune", keep=keep)
        print(f"report: {path}", file=sys.stderr if args.json else sys.stdout)
    return 0 if all(r.advice is not None for r in results) else 1
