"""``python -m harness`` and the ``batchbench`` program: a stop signal that arrives while the CLI
is still importing ends the process quietly with the stop's code (nothing has started, so there
is nothing to keep); from then on ``harness.cli.main`` takes stops as Ctrl-C."""

import signal


def _stopped_early(signum, frame):
    raise SystemExit(128 + signum)


def program() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's SIGHUP, a background job's SIGINT: still ignored
            signal.signal(signum, _stopped_early)
    from harness.cli import console

    console()


if __name__ == "__main__":
    program()
