"""`queuectl enqueue` without typer or asyncio: ~3x quicker to start, for scripts that enqueue job by job.

It only takes the plain happy path (an existing, current database; `enqueue JSON` or `enqueue [flags] -- CMD`)
and returns None for anything else (help, --file, --replace, any error but one), which the full CLI then handles,
with its own messages. The exception: a lock held past the busy timeout is reported here, in the full CLI's words,
since the full CLI would only wait as long again. It writes through the same sqlite_tx.enqueue the SQLite store uses.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

from queuectl import jobspec, paths, wakeup
from queuectl.errors import QueueCtlError, report
from queuectl.store import sqlite_schema, sqlite_tx

_FLAGS = {"--id": "id", "--priority": "priority", "--delay": "delay", "--run-at": "run_at",
          "--timeout": "timeout", "--max-retries": "max_retries"}


def _parse(argv: list[str]) -> tuple[Path, list[str], dict[str, str], bool] | None:
    home = None
    if argv[0] == "--home":
        home, argv = Path(argv[1]).expanduser(), argv[2:]
    args = argv[1:]  # after "enqueue"
    flags: dict[str, str] = {}
    while args and args[0] in _FLAGS and len(args) >= 2:
        flags[_FLAGS[args[0]]] = args[1]
        args = args[2:]
    command_given = bool(args) and args[0] == "--"
    if command_given:
        args = args[1:]
        if not args:
            return None
    elif len(args) != 1 or args[0].startswith("-"):
        return None
    return home or paths.default_home(), args, flags, command_given


def try_enqueue(argv: list[str]) -> int | None:
    try:
        return _try_enqueue(argv)
    except Exception:  # anything unexpected: the full CLI does it again and reports properly
        return None


def _try_enqueue(argv: list[str]) -> int | None:
    if os.environ.get("QUEUECTL_DATABASE_URL"):
        return None
    parsed = _parse(argv)
    if parsed is None:
        return None
    home, args, flags, command_given = parsed
    db = home / paths.DB_NAME
    if not db.is_file():
        return None
    try:
        job = jobspec.from_mapping(jobspec.mapping_from_args(args, flags, command_given=command_given))
        conn = sqlite_schema.connect(db)
    except QueueCtlError:
        return None
    try:
        if sqlite_schema.schema_version(conn) != sqlite_schema.SCHEMA_VERSION:
            return None
        sqlite_tx.enqueue(conn, [job], time.time(), False)
    except sqlite3.OperationalError as exc:
        if sqlite_schema.is_locked(exc):  # after the busy timeout: the full CLI would only wait as long again
            error = sqlite_schema.locked_error(db)
            return report(str(error), error.exit_code)
        return None
    except (QueueCtlError, sqlite3.Error):
        return None
    finally:
        conn.close()
    wakeup.wake_engines(home)
    sys.stdout.write(job.id + "\n")
    return 0
