"""What the commands share: the parser (one-line usage errors with a suggestion, no
abbreviations), the sweep flags built from ``config.axes`` (so a spec field and its flag cannot
drift apart), the store and run selectors, and the spec of ``run`` and ``tune``."""

from __future__ import annotations

import argparse
from pathlib import Path
import difflib
from typing import Sequence

from harness.config.axes import AXES, GROUPS, Axis
from harness.store.sqlite import DEFAULT_STORE



class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) with a suggestion for a mistyped
    flag, exit code 2, and no abbreviations: ``--batch-size 8`` is not taken for
    ``--batch-sizes`` in silence."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"batchbench: error: {message}{self._suggestion(message)}\n")

    def _suggestion(self, message: str) -> str:
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = set(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    known |= set(parser._option_string_actions)
        for token in message.split(":", 1)[1].split():
            if token.startswith("--"):
                given = token.split("=", 1)[0]
                if given in known:  # a flag of another command
                    return f" ({given} is a flag of another command, not of this one; see --help)"
                close = difflib.get_close_matches(given, sorted(known), n=1, cutoff=0.6)
                if close:
                    return f" (did you mean {close[0]}?)"
        return ""


def axis_flags(parser: argparse.ArgumentParser, names: Sequence[str], *, axes: Sequence[Axis] = AXES, grouped: bool = True) -> dict:
    """Add the flags of these axes, with their help, in their groups; returns the groups by title."""
    lookup = {a.name: a for a in axes}
    groups = {title: parser.add_argument_group(title) for title in GROUPS} if grouped else {}
    for name in names:
        axis = lookup[name]
        target = groups[axis.group] if grouped else parser
        extra = {"action": "store_const", "const": True, "default": None} if axis.flag_kind == "switch" else {}
        target.add_argument(axis.flag, help=axis.help_text().replace("%", "%%"), **extra)  # argparse formats help with %
    return groups


def sweep_flags(parser: argparse.ArgumentParser, axes: Sequence[Axis] = AXES, names: Sequence[str] | None = None) -> dict:
    """A command that runs points (``run``, ``tune``): a spec file, the axes' flags in their
    groups, and where the store and the report go. Returns the groups by title."""
    parser.add_argument("spec_file", nargs="?", metavar="SPEC.toml", help="spec file; flags override its keys")
    groups = axis_flags(parser, names if names is not None else [a.name for a in axes], axes=axes)
    output = groups["output"]
    output.add_argument("--store", help=f"SQLite store [{DEFAULT_STORE}]")
    output.add_argument("--report", metavar="PATH", help="where to write the HTML report [reports/<run id>.html]")
    output.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    return groups


def executor_flags(parser: argparse.ArgumentParser) -> None:
    """Where a command's points run: ``--executor``, ``--cpus-per-point``, ``--retries``."""
    group = parser.add_argument_group("where points run")
    group.add_argument("--executor", help="local (here, one after another), ray (a local Ray instance for the sweep: every core and GPU), "
                                          "ray:auto or ray:HOST:PORT (a running Ray cluster); needs batchbench[ray] [local]")
    group.add_argument("--cpus-per-point", help="ray: cores a CPU point asks for (lower it to run several CPU points at once on a node, "
                                                "timed side by side) [every core of a node]")
    group.add_argument("--retries", help="ray: runs of a point whose worker or node died before it is stored as lost [2]")


def executor_of(args: argparse.Namespace):
    """``executor_flags``'s values, parsed (a ``SpecError`` naming the flag)."""
    from harness.config.execution import parse_executor

    return parse_executor(args.executor, args.cpus_per_point, args.retries)


def store_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=DEFAULT_STORE, help=f"SQLite store [{DEFAULT_STORE}]")


def runs_flag(parser: argparse.ArgumentParser, default: str = "the latest") -> None:
    parser.add_argument("--run", action="extend", nargs="+", dest="runs", metavar="ID", help=f"runs: --run A B or --run A --run B [{default}]")


def sweep_spec(args: argparse.Namespace, names: Sequence[str], file_values: dict | None = None, axes: Sequence[Axis] = AXES):
    """The spec of a command that runs points: the spec file's keys, overridden by the flags."""
    from harness.config.spec import build_spec, load_toml

    if file_values is None:
        file_values = load_toml(args.spec_file) if getattr(args, "spec_file", None) else {}
    return build_spec(file_values, {name: getattr(args, name, None) for name in names}, axes=axes)


def one_device(value: str) -> str:
    """``--device`` of ``fit`` and ``overhead``: one device that is here (not a list, not
    ``auto``), as a one-line error naming ``--device``."""
    from harness.config.policies import resolve_devices
    from harness.config.values import parse_devices
    from harness.env import available_devices
    from harness.errors import SpecError

    here = available_devices()
    try:
        names = parse_devices(value)
        if len(names) == 1 and names[0] != "auto":
            return resolve_devices(names, here)[0]
    except SpecError:
        pass
    raise SpecError("--device", f"{value!r} is not one device of this machine; give one of {', '.join(here)}")


def explicit_batch_sizes(value: str, what: str) -> list[int]:
    """``--batch-sizes`` of ``fit`` and ``overhead``: sizes and power-of-two ranges, no ``full``
    (there is no training set to be full of)."""
    from harness.config.policies import resolve_batch_sizes
    from harness.config.values import FULL, BatchRange, parse_batch_sizes
    from harness.errors import SpecError

    tokens = parse_batch_sizes(value)
    if any(t == FULL or (isinstance(t, BatchRange) and t.high is None) for t in tokens):
        raise SpecError("--batch-sizes", f"{what} have no 'full'; give sizes or ranges like 64..4096")
    return resolve_batch_sizes(tokens, 2**40, 2**40)


def kept_inputs(store: str | None, spec_file: str | None, spec) -> list[tuple[str | None, str]]:
    """The files a command that runs points reads, which no output of it may be: the store (and
    the files SQLite and the sweep lock keep beside it, though it is not there yet), the spec
    file and the data file (or a data pipeline's or plug-in model's ``.py``). The store itself is
    checked first: a file a store can be written to, not another store's journal, a device or a
    path under a file (one line, before anything runs)."""
    from harness.outputs import store_output_path
    from harness.store.sqlite import Store

    def source(name: str) -> str | None:
        target = name.rpartition(":")[0] if ":" in name and not Path(name).exists() else name
        return target if Path(target).is_file() else None

    path = store or DEFAULT_STORE
    store_output_path(path, "--store", example="results.sqlite")
    beside = [(f"{path}{suffix}", f"the store's {what}") for suffix, what in (("-wal", "write-ahead log"), ("-shm", "shared memory"), ("-journal", "journal"))]
    return [(path, "the store"), *beside, (str(Store.lock_path(path)), "the store's sweep lock file"), (spec_file, "the spec file"),
            (source(spec.dataset), "the data file"), (source(spec.model), "the model's file")]
