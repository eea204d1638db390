"""``batchbench`` command line (= ``python -m harness``): dispatch to ``harness.commands``, one
module a command (its flags, its run, its text).

Every failure batchbench can explain is one line on stderr naming the field, with its kind's
exit code (``harness.errors``); a point that fails at run time is recorded with its status and
the sweep goes on; Ctrl-C keeps the finished points and exits 130, and SIGTERM and SIGHUP
stop it the same way (exit 143 and 129).
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import threading
from typing import Sequence

from harness.version import __version__
from harness.commands import analyze, asv, cbs, compare, export, fit, merge, overhead, report, run, runs, tune
from harness.commands.flags import Parser
from harness.errors import OutOfMemory, SpecError, Stopped, StoreError, UserError

COMMANDS = {module.NAME: module for module in (run, tune, cbs, analyze, compare, report, fit, overhead, merge, runs, export, asv)}

REPEATABLE = {"--run", "--log"}
"""Options that may be given more than once; any other given twice is an error (not "last wins")."""

INTERRUPTED = {
    "run": "finished points are stored, and the point in flight as interrupted (rerun with --resume to continue)",
    "tune": "finished trials are stored, and the trial in flight as interrupted (rerun with --resume to continue)",
    "cbs": "finished points are stored, and those in flight as interrupted (rerun with --resume to continue)",
    "merge": "each source store is merged whole or not at all; run the merge again to finish",
}
"""What Ctrl-C leaves behind, per command (the others write whole files or nothing)."""


STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that stop a command the way Ctrl-C does: the point in flight stored interrupted,
children ended, partial files removed; the exit code is 128 + the signal's number."""
STOP_CODES = tuple(128 + s for s in STOPS)


def parser() -> Parser:
    top = Parser(prog="batchbench", description="Benchmark and profile mini-batch gradient descent.")
    top.add_argument("--version", action="version", version=f"batchbench {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", None)))
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    interrupted: list[int] = []

    def on_stop(signum, frame):  # noted here too, in case a library swallows the exception
        interrupted.append(signum)
        raise Stopped(signum)

    ours = [s for s in STOPS if signal.getsignal(s) is not signal.SIG_IGN]  # a signal nohup (or a shell, for a background job) ignores stays ignored
    previous = {s: signal.signal(s, on_stop) for s in ours} if threading.current_thread() is threading.main_thread() else {}
    try:
        refuse_repeated_flags(argv)
        code = COMMANDS[args.command].main(args)
    except sqlite3.DatabaseError as exc:  # a store that SQLite cannot read or write, found while using it
        from harness.store.sqlite import trouble

        code = _say(StoreError(_store_field(args), f"cannot use {trouble(_store_path(args), exc)}"))
    except UserError as exc:
        code = _say(exc)
    except KeyboardInterrupt as stop:
        interrupted.append(getattr(stop, "signum", signal.SIGINT))
        code = 0
    except BrokenPipeError:  # the reader went away (`batchbench analyze --json | head`): what it read is all it wanted
        _quiet_stdout()
        code = 0
    except OSError as exc:  # a file the OS refused (a name too long, a path through a file): what and why, in one line
        if exc.filename is None:
            raise
        name = str(exc.filename)
        code = _say(StoreError(name if len(name) <= 80 else f"{name[:80]}... ({len(name):,} characters)", f"{exc.strerror or exc}"))
    except Exception as exc:  # a library wrapped the interrupt (an import's class body turns it into a RuntimeError),
        # or could not be imported for lack of memory (ulimit -v)
        short = None if interrupted else short_of_memory(exc)
        if short is None and not interrupted:
            raise
        code = _say(short) if short is not None else 0
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if interrupted:
        signum = interrupted[0]
        how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        print(f"batchbench: {how}; {INTERRUPTED.get(args.command, 'nothing partial was written')}", file=sys.stderr)
        return 128 + signum
    return code


def console() -> None:
    """The ``batchbench`` program: ``main``, then exit with its code. After a stop (130, 143, 129) the
    process ends at once, once its output is flushed: the store and every output file were
    closed whole before, and interpreter shutdown with native threads (torch, plotting) mid-way
    through their work can crash instead of exiting."""
    code = main()
    if code in STOP_CODES:
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (in-process tests)
        pass


def _say(exc: UserError) -> int:
    print(f"batchbench: error: {exc}", file=sys.stderr)
    return exc.exit_code


def short_of_memory(exc: Exception) -> OutOfMemory | None:
    """An import that failed for lack of memory, in one line: a MemoryError, or an ImportError or
    OSError that says so (a library's segment that could not be mapped, an allocation); else None."""
    import re

    text = " ".join(str(exc).split())
    lacking = isinstance(exc, MemoryError) or (isinstance(exc, (ImportError, OSError)) and re.search(
        r"cannot allocate memory|out of memory|not enough memory|failed to map segment", text, re.IGNORECASE) is not None)
    module = _importing(exc) if lacking else None
    if module is None:
        return None
    detail = re.sub(r"\S*/", "", text)[:300] or type(exc).__name__  # file names without their folders
    return OutOfMemory("memory", f"importing {module} failed for lack of memory ({detail}); raise the limit (ulimit -v)")


def _importing(exc: Exception) -> str | None:
    """The package whose import raised ``exc``: the first module outside batchbench whose body was
    running (its import), or an ImportError's own; None if no import was under way."""
    name, tb = None, exc.__traceback__
    while name is None and tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if tb.tb_frame.f_code.co_name == "<module>" and module != "__main__" and not module.startswith("harness"):
            name = module
        tb = tb.tb_next
    name = name or getattr(exc, "name", None)
    return name.partition(".")[0] if name else None


def _store_field(args) -> str:
    return "--store" if getattr(args, "store", None) else "-o"


def _store_path(args) -> str:
    return str(getattr(args, "store", None) or getattr(args, "output", None))


def refuse_repeated_flags(argv: list[str]) -> None:
    seen: set[str] = set()
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        if not name.startswith("-") or len(name) < 2 or name[1:2].isdigit() or name in REPEATABLE:
            continue
        if name in seen:
            raise SpecError(name, "given twice; give it once (or write the values as one comma list)")
        seen.add(name)
