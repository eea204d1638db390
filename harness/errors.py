"""Errors users see. Each is one line naming the field at fault (a flag, a file, a table) and what
to do; the CLI prints it as ``batchbench: error: FIELD: message`` and exits with its kind's code:

====  ==========================================================================================
0     done
1     done, but the answer is no: every point failed, ``compare --fail-above`` found a
      regression, ``tune`` found no batch size that reaches the target, or a run could not
      finish (``RunError``: what ran is stored)
2     ``SpecError``: bad input, found before anything ran; no store or file was touched
3     ``StoreError``: a store or an output file could not be read or written (locked by another
      process, disk full, damaged, no permission); what was committed before is kept; or a
      library could not be loaded for lack of memory (``ulimit -v``): nothing ran
130   interrupted (Ctrl-C); finished points are stored, ``--resume`` continues; 143 (SIGTERM)
      and 129 (SIGHUP) are the same stop
====  ==========================================================================================
"""


class UserError(Exception):
    """A failure batchbench explains in one line; ``exit_code`` says which kind."""

    exit_code = 1

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class SpecError(UserError, ValueError):
    """Bad user input, found before anything runs: the message names the field and what is allowed."""

    exit_code = 2


class StoreError(UserError):
    """A store or output file that cannot be read or written as asked; nothing committed is lost."""

    exit_code = 3


class RunError(UserError):
    """Work that started and could not give its answer; what ran is stored."""

    exit_code = 1


class OutOfMemory(UserError):
    """A library that could not be loaded for lack of memory (an address-space limit, ``ulimit -v``):
    the machine's shortage, like a full disk, so the code of a store or file that cannot be written."""

    exit_code = 3


class Stopped(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP as the CLI raises it: one stop whatever the signal (Slurm,
    Kubernetes and Ray end work with SIGTERM), taken everywhere Ctrl-C is."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def users_own(exc: BaseException) -> bool:
    """Whether a user's code (a plug-in's import or factory) raised ``exc`` of its own accord: any
    ``Exception``, ``sys.exit()``, ``GeneratorExit``, and a ``KeyboardInterrupt`` that no signal
    caused (the CLI raises ``Stopped`` for those; elsewhere an interrupt is taken as a stop)."""
    if isinstance(exc, KeyboardInterrupt):
        import signal

        return not isinstance(exc, Stopped) and signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    return isinstance(exc, (Exception, SystemExit, GeneratorExit))


def users_failure(exc: BaseException) -> str:
    """What a user's code raised, in words: ``ValueError: bad`` or ``sys.exit(0)``."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return " ".join(f"{type(exc).__name__}: {exc}".split()).rstrip(": ")
