"""``batchbench fit``: memory against batch size, and the largest batch that fits: a few probe
batch sizes, the line peak = fixed + per_sample x B through them, the prediction under the
memory limit, and (on CUDA, or with ``--verify``) the limit found by probing."""

from __future__ import annotations

import argparse
import sys

from harness.commands.flags import axis_flags, explicit_batch_sizes, one_device
from harness.commands.text import size, to_json
from harness.config.axes import taken_by
from harness.errors import SpecError

NAME = "fit"
HELP = "memory against batch size, and the largest batch that fits"
DESCRIPTION = ("Probe a few batch sizes, fit peak memory = fixed + per_sample x B, and predict the largest batch under the memory limit; "
               "on CUDA also find it by probing.")

IGNORED = ("batch_sizes", "dataset_sizes", "devices", "steps", "epochs", "repeats", "lr_policy", "target", "target_loss",
           "target_accuracy", "stop_at_target", "sampling")
"""Spec-file keys a fit leaves out: its probes choose them."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec_file", nargs="?", metavar="SPEC.toml", help="spec file (data set, model, optimizer); flags override it")
    axis_flags(parser, taken_by(NAME), grouped=False)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N [cpu]")
    parser.add_argument("--batch-sizes", default="64..2048", help="probe batch sizes (may exceed the data set: probes sample with replacement) [64..2048]")
    parser.add_argument("--memory-limit", help="e.g. 8GiB [the device's capacity: GPU memory, or physical RAM]")
    parser.add_argument("--margin", default="0.1", help="share of the limit kept free [0.1]")
    parser.add_argument("--verify", action="store_true", default=None, help="also find the limit by OOM probing (default on CUDA only)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def main(args: argparse.Namespace) -> int:
    from harness.analysis.memory import parse_bytes
    from harness.config.spec import build_spec, load_toml
    from harness.config.values import parse_float
    from harness.drivers.capacity import fit_capacity
    from harness.drivers.plan import plan

    probe_sizes = explicit_batch_sizes(args.batch_sizes, "probes")
    if len(probe_sizes) < 2:
        raise SpecError("--batch-sizes", "the fit needs at least two probe batch sizes, e.g. 64..2048")
    limit = parse_bytes(args.memory_limit) if args.memory_limit else None
    margin = parse_float("margin", args.margin, 0.0, 1.0, low_open=False)
    file_values = {k: v for k, v in (load_toml(args.spec_file) if args.spec_file else {}).items() if k not in IGNORED}
    flags = {name: getattr(args, name) for name in taken_by(NAME)}
    flags.update({"devices": one_device(args.device), "batch_sizes": "1", "steps": "2", "noise_samples": "0", "sample_interval": "0.02",
                  "lr_policy": "constant", "repeats": "1", "target": "none"})
    spec = build_spec(file_values, flags)
    say = (lambda _: None) if args.quiet or args.json else (lambda line: print(f"  probe {line}", file=sys.stderr))
    result = fit_capacity(plan(spec), probe_sizes, limit_bytes=limit, margin=margin, verify=args.verify, progress=say)
    print(to_json(result.as_json()) if args.json else capacity_text(result, spec))
    return 0


def capacity_text(result, spec) -> str:
    """The probes, the fitted line, the predicted (and probed) largest batch."""
    lines = [f"memory of {spec.model} on {spec.dataset}, {result.device}: limit {size(result.limit_bytes)}, margin {result.margin:.0%}"]
    lines += [f"  B={batch:<8} {status:<6} {result.metric} {size(peak)}" for batch, status, peak in result.probes]
    if result.fit is None:
        lines.append("  no fit: fewer than two probes ran")
    else:
        f = result.fit
        lines.append(f"  peak = {size(f.fixed_bytes)} + {size(f.per_sample_bytes)} x B  (RMS error {size(f.rms_error_bytes)})")
    if result.probed_max_batch_size is not None:
        lines.append(f"  largest batch that fits: {result.probed_max_batch_size:,} (probed)")
        if result.prediction_error is not None:
            lines.append(f"  the line predicted {result.predicted_no_margin:,} at the limit ({result.prediction_error:+.1%} against the probe)")
    else:
        predicted = f"{result.predicted_max_batch_size:,}" if result.predicted_max_batch_size else "none (memory does not grow with B, or B = 1 does not fit)"
        lines.append(f"  largest batch that fits (predicted, {result.margin:.0%} kept free): {predicted}; --verify finds it by probing")
    return "\n".join(lines)
