"""The flags of every ``batchbench`` command (``harness.cli`` says what each command does).

The ``run`` and ``tune`` flags are built from ``spec.sweep.FLAG_HELP``, so a spec field and
its flag cannot drift apart; usage errors are one line with a suggestion, exit code 2.
"""

from __future__ import annotations

import argparse

from harness import __version__


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) with a suggestion for a mistyped
    flag, exit code 2, and no abbreviations: ``--batch-size 8`` is not taken for
    ``--batch-sizes`` in silence."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"batchbench: error: {message}{self._suggestion(message)}\n")

    def _suggestion(self, message: str) -> str:
        import difflib

        if not message.startswith("unrecognized arguments:"):
            return ""
        known = set(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    known |= set(parser._option_string_actions)
        for token in message.split(":", 1)[1].split():
            if token.startswith("--"):
                close = difflib.get_close_matches(token.split("=", 1)[0], sorted(known), n=1, cutoff=0.6)
                if close:
                    return f" (did you mean {close[0]}?)"
        return ""


def _spec_flags(parser: argparse.ArgumentParser, names, *, grouped: bool = True) -> dict:
    """Add the flags of these spec fields, with their help from ``spec.sweep.FLAG_HELP``, in
    its groups; returns the groups by title."""
    from harness.config.axes import BY_NAME, GROUPS

    groups = {title: parser.add_argument_group(title) for title in GROUPS} if grouped else {}
    for name in names:
        axis = BY_NAME[name]
        target = groups[axis.group] if grouped else parser
        extra = {"action": "store_const", "const": True, "default": None} if axis.flag_kind == "switch" else {}
        target.add_argument(axis.flag, help=axis.help_text().replace("%", "%%"), **extra)  # argparse formats help with %
    return groups


def _sweep_command(sub, name: str, **texts) -> _Parser:
    """A command that runs points (``run``, ``tune``): a spec file, every spec flag in its
    group, and where the store and the report go. ``.groups`` and ``.output`` take the rest."""
    from harness.config.axes import FIELDS

    command = sub.add_parser(name, **texts)
    command.add_argument("spec_file", nargs="?", metavar="SPEC.toml", help="spec file; flags override its keys")
    command.groups = _spec_flags(command, FIELDS)
    command.output = command.groups["output"]
    command.output.add_argument("--store", help="SQLite store [results/batchbench.sqlite]")
    command.output.add_argument("--report", metavar="PATH", help="where to write the HTML report [reports/<run id>.html]")
    command.output.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    return command


def parser() -> _Parser:
    parser = _Parser(prog="batchbench", description="Benchmark and profile mini-batch gradient descent.")
    parser.add_argument("--version", action="version", version=f"batchbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = _sweep_command(sub, "run", help="run a sweep and store its points",
                         description="Run a sweep: every dataset size x batch size x device x repeat, phase-timed, stored point by point.")
    run.groups["axes"].add_argument("--nproc", help="shorthand for --world-sizes N")
    run.output.add_argument("--resume", action="store_true", help="continue the latest run of the same spec in the store")
    run.output.add_argument("--quiet", action="store_true", help="no progress bar, no table")

    tune = _sweep_command(sub, "tune", help="search the batch size and learning rate with the least time to target",
                          description="Adaptive search for the batch size (and its learning rate from --lr-grid) that reaches the target soonest "
                                      "on this machine: starts near the gradient noise scale, stops each trial at the target or once it cannot win. "
                                      "Every trial is a stored point (status pruned when stopped early).")
    tune.output.add_argument("--json", action="store_true", help="print the answer as JSON (batch_size, lr, time_to_target_s, steps_to_target, trials, samples_processed, ...)")
    tune.output.add_argument("--quiet", action="store_true", help="no line per trial")

    report = sub.add_parser("report", help="write the self-contained HTML report of stored runs")
    report.add_argument("--store", default="results/batchbench.sqlite", help="SQLite store [results/batchbench.sqlite]")
    report.add_argument("--run", action="extend", nargs="+", dest="runs", metavar="ID", help="runs to report: --run A B or --run A --run B [the latest]")
    report.add_argument("--output", "-o", help="HTML file [reports/<run id>.html]")
    report.add_argument("--compare", nargs=2, metavar=("A", "B"), help="before/after: two run ids of --store, or store.sqlite[:RUN] paths")
    report.add_argument("--title", default=None, help="page title")

    compare = sub.add_parser("compare", help="before/after: is B faster, slower or not significantly different from A, point by point",
                             description="Match the points of two runs on their whole configuration and give, per point, the ratio B/A of throughput and "
                                         "of training time to the target with a 95%% interval from the per-step samples, and a verdict. "
                                         "A and B: run ids in --store, a store (its latest run) or STORE:RUN.")
    compare.add_argument("a", metavar="A", help="the baseline: RUN, STORE or STORE:RUN")
    compare.add_argument("b", metavar="B", help="the contender: RUN, STORE or STORE:RUN")
    compare.add_argument("--store", default="results/batchbench.sqlite", help="store that holds bare run ids [results/batchbench.sqlite]")
    compare.add_argument("--match", metavar="KEYS", help="comma list of the configuration keys to match on, e.g. batch_size,device,dataset_size; an unknown key lists them all [every one]")
    compare.add_argument("--threshold", default="1.1", help="smallest change a verdict reports, as a factor [1.1]")
    compare.add_argument("--fail-above", metavar="F", help="exit 1 when B is significantly slower than A by more than F at any point (throughput or time to target), e.g. 1.1")
    compare.add_argument("--html", metavar="PATH", help="also write the HTML before/after page")
    compare.add_argument("--json", action="store_true", help="print the matched points as JSON")

    analyze = sub.add_parser("analyze", help="steps-to-target, critical batch size and recommendations for a stored sweep")
    analyze.add_argument("--store", default="results/batchbench.sqlite", help="SQLite store [results/batchbench.sqlite]")
    analyze.add_argument("--run", action="extend", nargs="+", dest="runs", metavar="ID", help="runs to analyze: --run A B or --run A --run B [the latest]")
    analyze.add_argument("--json", action="store_true", help="print JSON instead of tables")

    fit = sub.add_parser("fit", help="memory against batch size, and the largest batch that fits",
                         description="Probe a few batch sizes, fit peak memory = fixed + per_sample x B, and predict the largest batch under the memory limit; on CUDA also find it by probing.")
    fit.add_argument("spec_file", nargs="?", metavar="SPEC.toml", help="spec file (data set, model, optimizer); flags override it")
    _spec_flags(fit, ("dataset", "target_column", "model", "hidden", "optimizer", "momentum", "threads"), grouped=False)
    fit.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N [cpu]")
    fit.add_argument("--batch-sizes", default="64..2048", help="probe batch sizes (may exceed the data set: probes sample with replacement) [64..2048]")
    fit.add_argument("--memory-limit", help="e.g. 8GiB [the device's capacity: GPU memory, or physical RAM]")
    fit.add_argument("--margin", default="0.1", help="share of the limit kept free [0.1]")
    fit.add_argument("--verify", action="store_true", default=None, help="also find the limit by OOM probing (default on CUDA only)")
    fit.add_argument("--json", action="store_true", help="print JSON")
    fit.add_argument("--quiet", action="store_true", help="no progress lines")

    overhead = sub.add_parser("overhead", help="what batchbench costs on this machine: its points beside a plain PyTorch loop doing the same work",
                              description="Interleave harness points with a hand-written loop doing the same work (a small MLP, the training set on the device, "
                                          "one thread, loss checks at the same steps, the time between steps left out on both sides) in one process, and report "
                                          "the median ratio of their samples/s per batch size: 1.0 costs nothing, the target is 0.98. Pin the process for steady "
                                          "numbers (taskset -c 1 batchbench overhead).")
    overhead.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N [cpu]")
    overhead.add_argument("--batch-sizes", default="1,32,256", help="comma list or power-of-two range like 32..512 [1,32,256]")
    overhead.add_argument("--rounds", default="21", help="interleaved rounds per batch size, after one discarded [21]")
    overhead.add_argument("--steps", help="training steps a round [600 on the CPU, 2000 on a GPU]")
    overhead.add_argument("--attribute", action="store_true",
                          help="also price the parts: the monitor thread, the loop alone (no timed steps), every step timed, and what a timed step costs in the loop")
    overhead.add_argument("--json", action="store_true", help="print JSON")
    overhead.add_argument("--quiet", action="store_true", help="no progress lines")

    merge = sub.add_parser("merge", help="combine stores (shards of a sweep, or machines) without duplicating points")
    merge.add_argument("stores", nargs="+", metavar="STORE", help="stores to read")
    merge.add_argument("-o", "--output", required=True, help="store to write (created, or added to)")

    runs = sub.add_parser("runs", help="list the runs in a store: when, what, how many points")
    runs.add_argument("--store", default="results/batchbench.sqlite", help="SQLite store [results/batchbench.sqlite]")
    runs.add_argument("--json", action="store_true", help="print JSON")

    asv = sub.add_parser("asv", help="set up asv in your repository to track your training step across commits",
                         description="asv integration. `batchbench asv init [SPEC.toml]` writes asv.conf.json and benchmarks/batchbench_training.py "
                                     "into the git repository you are in; then `asv run`, `asv continuous`, `asv publish` track the spec's points across commits.")
    asv_sub = asv.add_subparsers(dest="asv_command", metavar="ACTION", parser_class=_Parser)
    asv_sub.required = True
    asv_init = asv_sub.add_parser("init", help="write asv.conf.json and a benchmarks/ suite for the spec's points",
                                  description="Write asv.conf.json (environments see this Python's packages; nothing is installed from an index) "
                                              "and benchmarks/batchbench_training.py (one asv parameter set per point of the spec; track_ metrics: "
                                              "phase medians, samples/s, steps and time to target, peak memory). Without SPEC, batchbench.toml "
                                              "is used, or written as a starting point.")
    asv_init.add_argument("spec_file", nargs="?", metavar="SPEC.toml", help="the spec to track, inside the repository [batchbench.toml]")
    asv_init.add_argument("--force", action="store_true", help="replace asv.conf.json and the suite if they exist")

    export = sub.add_parser("export", help="write a stored table as CSV, JSON or Parquet")
    export.add_argument("--store", default="results/batchbench.sqlite", help="SQLite store [results/batchbench.sqlite]")
    export.add_argument("--table", default="points", help="points, checks, steps, samples or runs [points]")
    export.add_argument("--format", default="csv", help="csv, json or parquet [csv]")
    export.add_argument("--run", action="extend", nargs="+", dest="runs", metavar="ID", help="only these runs: --run A B or --run A --run B [all runs]")
    export.add_argument("-o", "--output", help="file to write [stdout]")
    return parser
