"""Shared by the torture scenarios: the figures each one reports, reading the SQLite file directly (integrity check,
snapshots), small file systems that can be filled or made read-only, and the runs file every job appends to.

Nothing here mocks anything: file systems are real tmpfs mounts, databases are real SQLite files, processes are real.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine_helpers import EngineProc

#: scenario -> figures, filled by the tests through the `figures` fixture, printed at the end of the session.
FIGURES: dict[str, dict[str, Any]] = {}

#: Words that must never reach a user: a Python traceback, or the CLI's last-resort "internal error" line.
FORBIDDEN = ("Traceback (most recent call last)", "internal error")


def forbidden_in(text: str) -> list[str]:
    return [word for word in FORBIDDEN if word in text]


def runs_of(path: Path) -> Counter[str]:
    """How many times each job id was written to a runs file."""
    try:
        return Counter(path.read_text().split())
    except FileNotFoundError:
        return Counter()


# ---- reading the database file directly ---------------------------------------------------------------------------


def readonly(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def integrity(db: Path) -> str:
    """`PRAGMA integrity_check` of the database (WAL included): "ok" when sound."""
    with contextlib.closing(readonly(db)) as conn:
        return "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall())


def counters_match(db: Path) -> bool:
    """The per-state counters kept by triggers agree with the rows."""
    with contextlib.closing(readonly(db)) as conn:
        kept = {r["state"]: r["n"] for r in conn.execute("SELECT state, n FROM state_counts") if r["n"]}
        real = {r["state"]: r["n"] for r in conn.execute("SELECT state, count(*) AS n FROM jobs GROUP BY state")}
    return kept == real


def table_rows(db: Path, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the given tables, in a stable order: a snapshot to compare before and after."""
    with contextlib.closing(readonly(db)) as conn:
        return {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2")] for t in tables}


def file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def db_files_digest(db: Path) -> dict[str, Any]:
    """The database file byte for byte, and how many bytes its WAL holds (an absent or empty WAL holds no change:
    a reader may create an empty one)."""
    wal = Path(f"{db}-wal")
    return {"db": file_digest(db), "wal bytes": wal.stat().st_size if wal.exists() else 0}


# ---- file systems ------------------------------------------------------------------------------------------------


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def small_fs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of the given size mounted at path (skips the test, saying why, where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    done = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root / CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield path
    finally:
        _mount("-o", "remount,rw", str(path))
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


def remount(path: Path, mode: str) -> None:
    done = _mount("-o", f"remount,{mode}", str(path))
    assert done.returncode == 0, done.stderr


def fill(path: Path, chunk: int = 1 << 16) -> int:
    """Write zeros to path until the file system says ENOSPC; returns the bytes written."""
    written = 0
    block = b"\0" * chunk
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n = f.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if chunk > 512:  # fill the last bytes too
                    block = block[: len(block) // 8]
                    chunk = len(block)
                    continue
                return written
            written += n or 0


# ---- processes -------------------------------------------------------------------------------------------------


def vm_kib(pid: int, field: str) -> int:
    """A VmRSS / VmHWM line of /proc/<pid>/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def engine_logs_clean(engines: list[EngineProc]) -> list[str]:
    """Lines of the engines' logs (stderr and stdout) that show a traceback or an internal error."""
    bad = []
    for engine in engines:
        for text in (engine.log(), engine.stdout()):
            bad += [line for line in text.splitlines() if forbidden_in(line) or line.startswith("  File ")]
    return bad


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 2)
