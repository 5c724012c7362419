"""`queuectl` and `python -m queuectl`. A plain `enqueue` takes a fast path that loads neither asyncio nor typer."""

from __future__ import annotations

import os
import sys


def _fill_closed_stdio() -> None:
    """A stdin, stdout or stderr closed by the caller (`queuectl run 2>&-`) gets /dev/null. Else the next file
    opened takes its number, and what is written to "stderr" lands in it (a job's output pipe, say); and Python's
    sys.stderr is None, which the engine's log did not expect: it failed to start, in silence."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def _lenient_stdout() -> None:
    """An output that cannot show every character (PYTHONIOENCODING=ascii, a Latin-1 locale) gets `\\xe9` for what
    it cannot show, as stderr always does, instead of failing the command halfway through its output."""
    if sys.stdout.errors == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")


def main() -> None:
    _fill_closed_stdio()
    _lenient_stdout()
    argv = sys.argv[1:]
    if argv[:1] == ["enqueue"] or (len(argv) > 2 and argv[0] == "--home" and argv[2] == "enqueue"):
        from queuectl.fastpath import try_enqueue

        code = try_enqueue(argv)
        if code is not None:
            sys.exit(code)
    from queuectl.cli import main as cli_main

    sys.exit(cli_main(argv))


if __name__ == "__main__":
    main()
