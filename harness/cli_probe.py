"""The ``batchbench`` commands that probe this machine on one device rather than run a sweep:
``fit`` (how much memory a batch takes, the largest that fits) and ``overhead`` (what the
harness costs here). Thin like ``harness.cli``: parse, call the library, print."""

from __future__ import annotations

import argparse
import sys

from harness.errors import SpecError


def one_device(value: str) -> str:
    """``--device`` of ``fit`` and ``overhead``: one device that is here (not a list, not
    ``auto``), as a one-line error naming ``--device``."""
    from harness.env import available_devices
    from harness.config.policies import resolve_devices
    from harness.config.values import parse_devices

    here = available_devices()
    try:
        tokens = parse_devices(value)
        if len(tokens) == 1 and tokens[0] != "auto":
            return resolve_devices(tokens, here)[0]
    except SpecError:
        pass
    raise SpecError("--device", f"{value!r} is not one device of this machine; give one of {', '.join(here)}")


def explicit_batch_sizes(value: str, what: str) -> list[int]:
    """``--batch-sizes`` of ``fit`` and ``overhead``: sizes and power-of-two ranges, no
    ``full`` (there is no training set to be full of)."""
    from harness.config.policies import resolve_batch_sizes
    from harness.config.values import FULL, BatchRange, parse_batch_sizes

    tokens = parse_batch_sizes(value)
    if any(t == FULL or (isinstance(t, BatchRange) and t.high is None) for t in tokens):
        raise SpecError("--batch-sizes", f"{what} have no 'full'; give sizes or ranges like 64..4096")
    return resolve_batch_sizes(tokens, 2**40, 2**40)


def fit(args: argparse.Namespace) -> int:
    import json

    from harness.analysis.memory import parse_bytes
    from harness.drivers.capacity import fit_capacity
    from harness.console import capacity_text
    from harness.drivers.plan import plan
    from harness.config.spec import build_spec, load_toml
    from harness.config.values import parse_float

    probe_sizes = explicit_batch_sizes(args.batch_sizes, "probes")
    if len(probe_sizes) < 2:
        raise SpecError("--batch-sizes", "the fit needs at least two probe batch sizes, e.g. 64..2048")
    limit = parse_bytes(args.memory_limit) if args.memory_limit else None
    margin = parse_float("margin", args.margin, 0.0, 1.0, low_open=False)
    file_values = load_toml(args.spec_file) if args.spec_file else {}
    flags = {name: getattr(args, name) for name in ("dataset", "target_column", "model", "hidden", "optimizer", "momentum", "threads")}
    flags.update({"devices": one_device(args.device), "batch_sizes": "1", "steps": "2", "noise_samples": "0", "sample_interval": "0.02",
                  "lr_policy": "constant", "repeats": "1", "target_loss": None, "target": None, "target_accuracy": None})
    for key in ("batch_sizes", "dataset_sizes", "devices", "steps", "epochs", "repeats", "lr_policy", "target", "target_loss", "target_accuracy", "stop_at_target", "sampling"):
        file_values.pop(key, None)
    spec = build_spec(file_values, flags)
    the_plan = plan(spec)
    say = (lambda _: None) if args.quiet or args.json else (lambda line: print(f"  probe {line}", file=sys.stderr))
    result = fit_capacity(the_plan, probe_sizes, limit_bytes=limit, margin=margin, verify=args.verify, progress=say)
    print(json.dumps(result.as_json(), indent=1) if args.json else capacity_text(result, spec))
    return 0


def overhead(args: argparse.Namespace) -> int:
    import json

    from harness.console import overhead_text
    from harness.drivers.overhead import TARGET_RATIO, attribute, compare, default_steps, overhead_plan
    from harness.config.values import parse_int

    batch_sizes = explicit_batch_sizes(args.batch_sizes, "overhead points")
    device = one_device(args.device)
    rounds = parse_int("rounds", args.rounds, 1)
    steps = parse_int("steps", args.steps, 2) if args.steps is not None else default_steps(device)
    (point,) = overhead_plan(batch_sizes[0], steps=steps, device=device).points  # every other check, before anything runs
    run = attribute if args.attribute else compare
    results = []
    for batch_size in batch_sizes:
        def progress(done: int, batch_size=batch_size) -> None:
            if not (args.quiet or args.json):
                print(f"  B={batch_size}: round {done}/{rounds}" + (" (warm-up)" if done == 0 else ""), file=sys.stderr, flush=True)

        results.append(run(batch_size, rounds=rounds, progress=progress, steps=steps, device=device))
    if args.json:
        print(json.dumps([{"device": device, "steps": steps, **r.as_json()} for r in results], indent=1))
    else:
        print(overhead_text(results, point, TARGET_RATIO))
    return 0
