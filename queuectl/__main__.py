"""`queuectl` and `python -m queuectl`. A plain `enqueue` takes a fast path that loads neither asyncio nor typer."""

from __future__ import annotations

import sys


def main() -> None:
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
