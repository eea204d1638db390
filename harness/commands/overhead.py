"""``batchbench overhead``: what batchbench costs on this machine: harness points beside a plain
PyTorch loop doing the same work, interleaved in one process; with ``--attribute``, the parts."""

from __future__ import annotations

import argparse
import sys

from harness.commands.flags import explicit_batch_sizes, one_device
from harness.commands.text import layout, to_json

NAME = "overhead"
HELP = "what batchbench costs on this machine: its points beside a plain PyTorch loop doing the same work"
DESCRIPTION = ("Interleave harness points with a hand-written loop doing the same work (a small MLP, the training set on the device, "
               "one thread, loss checks at the same steps, the time between steps left out on both sides) in one process, and report "
               "the median ratio of their samples/s per batch size: 1.0 costs nothing, the target is 0.98. Pin the process for steady "
               "numbers (taskset -c 1 batchbench overhead).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N [cpu]")
    parser.add_argument("--batch-sizes", default="1,32,256", help="comma list or power-of-two range like 32..512 [1,32,256]")
    parser.add_argument("--rounds", default="21", help="interleaved rounds per batch size, after one discarded [21]")
    parser.add_argument("--steps", help="training steps a round [600 on the CPU, 2000 on a GPU]")
    parser.add_argument("--attribute", action="store_true",
                        help="also price the parts: the sampler thread, the loop alone (no timed steps), every step timed, and what a timed step costs in the loop")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def main(args: argparse.Namespace) -> int:
    from harness.config.values import parse_int
    from harness.drivers.overhead import TARGET_RATIO, against_plain, attribute, default_steps, overhead_plan

    batch_sizes = explicit_batch_sizes(args.batch_sizes, "overhead points")
    device = one_device(args.device)
    rounds = parse_int("rounds", args.rounds, 1)
    steps = parse_int("steps", args.steps, 2) if args.steps is not None else default_steps(device)
    (point,) = overhead_plan(batch_sizes[0], steps=steps, device=device).points  # every other check, before anything runs
    measure = attribute if args.attribute else against_plain
    results = []
    for batch_size in batch_sizes:
        def progress(done: int, batch_size=batch_size) -> None:
            if not (args.quiet or args.json):
                print(f"  B={batch_size}: round {done}/{rounds}" + (" (warm-up)" if done == 0 else ""), file=sys.stderr, flush=True)

        results.append(measure(batch_size, rounds=rounds, progress=progress, steps=steps, device=device))
    if args.json:
        print(to_json([{"device": device, "steps": steps, **r.as_json()} for r in results]))
    else:
        print(overhead_text(results, point, TARGET_RATIO))
    return 0


def overhead_text(results, point, target: float) -> str:
    """Per batch size the median ratio of harness to plain samples/s and its interquartile range
    against ``target``; with ``--attribute`` (``Attribution`` results) also the parts and what a
    timed step costs."""
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
