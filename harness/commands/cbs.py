"""``batchbench cbs``: the critical batch size as training proceeds (branches from checkpoints of
a base run, Merrill et al. 2025), the batch-size ramp it implies, and a run that checks the ramp."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from harness.commands.flags import DEFAULT_STORE, executor_flags, executor_of, kept_inputs, sweep_flags, sweep_spec
from harness.commands.report import write_run_report
from harness.commands.text import layout, number, seconds, to_json
from harness.config.axes import FIELDS, taken_by
from harness.config.values import parse_float, parse_int
from harness.errors import SpecError
from harness.outputs import output_path, write_output

NAME = "cbs"
HELP = "measure the critical batch size through training and the batch-size ramp it implies"
DESCRIPTION = ("A base run at one batch size B0 (--batch-sizes) with checkpoints spaced geometrically in samples; from each, "
               "branches at 2x, 4x, ... B0 train the same samples; the critical batch size there is the largest batch whose "
               "loss keeps within --tolerance of the smaller ones. Then a batch-size ramp from that curve, verified against "
               "constant B0 and constant final batch. Every run is a stored point.")

def add_arguments(parser: argparse.ArgumentParser) -> None:
    groups = sweep_flags(parser, names=taken_by(NAME))
    group = parser.add_argument_group("critical batch size")
    group.add_argument("--checkpoints", default="10", help="checkpoints of the base run, spaced geometrically in samples [10]")
    group.add_argument("--branch-samples", help="samples each branch trains [one pass over the training set]")
    group.add_argument("--tolerance", default="0.05", help="a branch keeps up while its loss is within this share of the smaller ones' [0.05]")
    group.add_argument("--rates", default="2", help="learning rates a branch tries: the rule's (SGD: lr x k; Adam: lr x sqrt k) and halvings [2]")
    group.add_argument("--largest-batch", help="the largest branch batch [the training set]")
    groups["output"].add_argument("--json", action="store_true", help="print the curve, the ramp and the verification as JSON")
    groups["output"].add_argument("--ramp-out", metavar="FILE", help="write the measured ramp as a small JSON file, for harness.ramp.load "
                                  "(a batch sampler and a learning-rate multiplier for your own loop)")
    groups["output"].add_argument("--quiet", action="store_true", help="no line per checkpoint")
    groups["output"].add_argument("--resume", action="store_true", help="continue the latest cbs of the same flags in the store: its "
                                  "stored points are read back, not trained again")
    executor_flags(parser)


def main(args: argparse.Namespace) -> int:
    from harness.drivers.cbs import CbsSettings, measure
    from harness.drivers.plan import plan
    from harness.ramp import of_run
    from harness.store.sqlite import Store

    settings = CbsSettings(
        checkpoints=parse_int("checkpoints", args.checkpoints, 2, 100), tolerance=parse_float("tolerance", args.tolerance, 0.0, 10.0),
        branch_samples=None if args.branch_samples is None else parse_int("branch_samples", args.branch_samples, 1),
        rates=parse_int("rates", args.rates, 1, 8), largest=None if args.largest_batch is None else parse_int("largest_batch", args.largest_batch, 1),
    )
    spec, executor = sweep_spec(args, FIELDS), executor_of(args)
    if len(spec.batch_sizes) != 1 or not isinstance(spec.batch_sizes[0], int):
        raise SpecError("--batch-sizes", "cbs takes one base batch size B0 (e.g. --batch-sizes 8): the branches double it")
    if len(spec.devices) != 1 or spec.devices[0] == "auto":
        raise SpecError("--devices", "cbs runs on one device: give it, e.g. --devices cpu")
    if spec.lr_schedule != "constant" or spec.warmup_steps:
        raise SpecError("--lr-schedule" if spec.lr_schedule != "constant" else "--warmup-steps",
                        "cbs compares branches at constant learning rates (a schedule would change the rate they compare); leave it out")
    if spec.dataset_sizes and len(spec.dataset_sizes) != 1:
        raise SpecError("--dataset-sizes", "cbs runs at one dataset size")
    the_plan = plan(dataclasses.replace(spec, target=None, lr_policy="constant", repeats=1, world_sizes=(1,)))
    own = the_plan.own_recipe
    if own is not None and own.scheduler is not None:
        raise SpecError("--model", f"{spec.model} steps a {own.scheduler}: cbs compares branches at constant learning rates (each at its "
                                   f"optimizer's rule); give it a module without a scheduler, or compare batch sizes with `batchbench run`")
    if len({p.dataset_size for p in the_plan.points}) > 1:  # no --dataset-sizes: the data set's own size
        the_plan = dataclasses.replace(the_plan, points=tuple(p for p in the_plan.points if p.dataset_size == max(q.dataset_size for q in the_plan.points)))
    keep = kept_inputs(args.store, args.spec_file, the_plan.spec)
    if args.report and not args.no_report:
        output_path(args.report, "--report", keep)
    if args.ramp_out:
        output_path(args.ramp_out, "--ramp-out", keep)
    tell = lambda line: print(f"batchbench: {line}", file=sys.stderr)  # noqa: E731
    say = (lambda line: None) if args.quiet else tell
    with Store(args.store or DEFAULT_STORE) as store:
        result = measure(the_plan, store, settings, say, executor, resume=args.resume, note=tell)
    ramp = of_run(result.measured, the_plan.points[0], own.optimizer if own is not None else the_plan.points[0].optimizer)
    print(to_json({**result.as_dict(), **ramp.settings()}) if args.json else cbs_text(result.measured, result.run_id))
    if args.ramp_out:
        path = write_output(args.ramp_out, to_json(ramp.as_dict()) + "\n", "--ramp-out", keep)
        print(f"ramp file: {path}", file=sys.stderr if args.json else sys.stdout)
    if not args.no_report:
        path = write_run_report(store.path, result.run_id, args.report, title="batchbench cbs", keep=keep)
        print(f"report: {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cbs_text(m, run_id: str | None = None) -> str:
    """The curve, the ramp and its verification as tables (``cbs`` and ``analyze``), ending
    with the verdict the report opens with."""
    from harness.analysis.cbs import verdict

    rows = [["samples seen", "check loss", "critical batch", "fell behind", "B_simple"]]
    noise, losses = dict(m.noise_scale), dict(m.checkpoint_losses)
    for c in m.curve:
        rows.append([f"{c.samples:,}", number(losses.get(c.samples)), f"{c.batch_size}{'+' if c.lower_bound else ''}",
                     "-" if c.fell_behind is None else str(c.fell_behind), number(noise.get(c.samples))])
    ramp = " -> ".join(f"{s.batch_size} from {s.start_samples:,}" for s in m.stages)
    verification = [["run", "batches", "steps", "final loss", "steps to base loss", "training to base loss"]]
    for v in m.verification:
        verification.append([v.name, ",".join(map(str, dict.fromkeys(v.batches))), f"{v.steps:,}", number(v.final_loss),
                             "-" if v.steps_to_base_loss is None else f"{v.steps_to_base_loss:,}", seconds(v.train_s_to_base_loss)])
    corr = "-" if m.rank_correlation is None else f"{m.rank_correlation:.2f}"
    return "\n".join([
        layout(rows), "",
        f"critical batch size against samples seen: rank correlation {corr} ('+': every branch kept up, a lower bound; "
        f"tolerance {m.tolerance:g})",
        f"ramp: {ramp}", "", layout(verification), "",
        f"branch compute: {m.branch_share:.1f}x the base run's samples" + (f"; run {run_id}" if run_id else ""), "",
        verdict(m),
    ])
