"""``batchbench asv init``: set up asv in the user's repository to track their training step
across commits (``harness.integrations.asv_init`` writes the files)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "asv"
HELP = "set up asv in your repository to track your training step across commits"
DESCRIPTION = ("asv integration. `batchbench asv init [SPEC.toml]` writes asv.conf.json and benchmarks/batchbench_training.py "
               "into the git repository you are in; then `asv run`, `asv continuous`, `asv publish` track the spec's points across commits.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.commands.flags import Parser

    actions = parser.add_subparsers(dest="asv_command", metavar="ACTION", parser_class=Parser)
    actions.required = True
    init = actions.add_parser("init", help="write asv.conf.json and a benchmarks/ suite for the spec's points",
                              description="Write asv.conf.json (environments see this Python's packages; nothing is installed from an index) "
                                          "and benchmarks/batchbench_training.py (one asv parameter set per point of the spec; track_ metrics: "
                                          "phase medians, time per sample, steps and time to target, peak memory: each a cost, lower is better). Without SPEC, batchbench.toml "
                                          "is used, or written as a starting point.")
    init.add_argument("spec_file", nargs="?", metavar="SPEC.toml", help="the spec to track, inside the repository [batchbench.toml]")
    init.add_argument("--force", action="store_true", help="replace asv.conf.json and the suite if they exist")


def main(args: argparse.Namespace) -> int:
    from harness.integrations.asv_init import init

    written = init(Path.cwd(), args.spec_file, force=args.force)
    for item in written:
        note = "wrote" if item.created else "kept (it exists; --force replaces it)"
        print(f"{item.path.relative_to(Path.cwd().resolve())}: {note}", file=sys.stderr)
    print("next: commit your model and spec, then\n"
          "  asv machine --yes        # once per machine\n"
          "  asv run --quick HEAD^!   # the latest commit; asv run A..B for a range, asv continuous A B to compare two\n"
          "  asv publish && asv preview\n"
          "(.asv/ holds environments and results: add it to .gitignore)")
    return 0
