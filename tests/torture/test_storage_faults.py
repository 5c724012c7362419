"""Storage faults on real file systems and real SQLite files: the disk fills up (a small tmpfs filled to the last
byte), the database becomes read-only (an immutable file; a file system remounted read-only), the file is damaged
(bytes overwritten in the middle of a copy), the file comes from a newer queuectl (PRAGMA user_version = 999).

What must hold: a clear one-line message (`queuectl: error: ...`) and exit 1, never a traceback; a running engine
waits out a full disk and recovers when space returns; nothing already stored is damaged, and a refused command
leaves the file exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from queuectl.models import JobState
from tests.engine_helpers import (
    Engines,
    cli,
    cli_ok,
    enqueue_many,
    jobs,
    wait_all_terminal,
    wait_for_states,
    wait_until,
)
from tests.torture.support import (
    counters_match,
    db_files_digest,
    engine_logs_clean,
    fill,
    forbidden_in,
    integrity,
    remount,
    runs_of,
    small_fs,
    table_rows,
)

PAGE = 4096


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str, engine: bool = False) -> str | None:
    """None if proc failed with exit 1 and one clear line (containing each of words); else what is wrong. For the
    engine (`run`), whose stderr is its log, the error is the last line and the lines before it are log lines."""
    lines = proc.stderr.splitlines()
    if proc.returncode != 1:
        return f"exit {proc.returncode}, stderr {proc.stderr[-500:]!r}"
    if forbidden_in(proc.stderr):
        return f"traceback or internal error: {proc.stderr[-2000:]}"
    if engine:
        lines = lines[-1:] if all(line[:4].isdigit() for line in lines[:-1]) else lines
    if len(lines) != 1 or not lines[0].startswith("queuectl: error: "):
        return f"not one error line: {proc.stderr[-1000:]!r}"
    missing = [w for w in words if w not in lines[0]]
    return f"{lines[0]!r} lacks {missing}" if missing else None


def _batch(prefix: str, n: int, runs: Path, size: int = 0) -> list[dict[str, Any]]:
    pad = f"; : {'x' * size}" if size else ""
    return [{"id": f"{prefix}-{i:03d}", "command": f"echo $QUEUECTL_JOB_ID >> {runs}{pad}"} for i in range(n)]


# ---- the disk fills up --------------------------------------------------------------------------------------------


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_fs(tmp_path / "disk", "16m") as path:
        yield path


@pytest.mark.timeout(180)
def test_disk_full_refuses_enqueue_clearly_engine_waits_and_recovers_nothing_stored_is_damaged(
    disk: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    home, work = disk / "home", tmp_path / "work"
    work.mkdir()
    runs, db, filler = work / "runs", disk / "home" / "queue.db", disk / "filler"
    enqueue_many(home, _batch("before", 30, runs), cwd=work)
    with Engines(home, tmp_path) as engines:
        engine = engines.start(workers=2)
        wait_all_terminal(home, [f"before-{i:03d}" for i in range(30)], timeout=60)
        stored = table_rows(db, "jobs", "attempts")
        # Running when the disk fills up, finishing while it is full: recording its result meets the full disk.
        go = work / "go"
        enqueue_many(home, [{"id": "running-while-full",
                             "command": f"echo $QUEUECTL_JOB_ID >> {runs}; while [ ! -f {go} ]; do sleep 0.05; done"}],
                     cwd=work)
        wait_for_states(home, {"running-while-full": JobState.PROCESSING}, timeout=30)
        # Due in a moment, when the disk is already full: the engine's claims meet the full disk.
        enqueue_many(home, [{**job, "delay": "1s"} for job in _batch("due-while-full", 10, runs)], cwd=work)
        filled = fill(filler)
        go.touch()
        t_full = time.monotonic()
        refused = {
            "enqueue -- CMD (fast path)": cli(home, "enqueue", "--id", "refused-1", "--", "true"),
            "enqueue JSON": cli(home, "enqueue", '{"id": "refused-2", "command": "true"}'),
            "enqueue --file (50 jobs)": cli(home, "enqueue", "--file", "-", cwd=work, input="".join(
                json.dumps(j) + "\n" for j in _batch("refused-batch", 50, runs, size=2000))),
            "config set": cli(home, "config", "set", "max-retries", "7"),
        }
        problems = {what: one_line_error(proc, "disk full") for what, proc in refused.items()}
        problems = {what: p for what, p in problems.items() if p}
        # The engine meets the full disk (claims, heartbeats), says so, and keeps running.
        engine.wait_log(r"store error \(\d+\): disk full", timeout=30)
        wait_until(lambda: engine.log().count("disk full") >= 2 or engine.returncode is not None, timeout=30,
                   what="the engine to retry its store writes")
        alive_while_full = engine.returncode is None
        full_s = round(time.monotonic() - t_full, 1)
        filler.unlink()
        accepted = cli(home, "enqueue", "--file", "-", cwd=work,
                       input="".join(json.dumps(j) + "\n" for j in _batch("after", 10, runs)))
        assert accepted.returncode == 0, accepted.stderr
        expected = ["running-while-full", *(f"{p}-{i:03d}" for p, n in (("before", 30), ("due-while-full", 10),
                                                                         ("after", 10)) for i in range(n))]
        found = wait_all_terminal(home, expected, timeout=90)
        recovered_s = round(time.monotonic() - t_full - full_s, 1)
        engine.send(signal.SIGTERM)
        code = engine.wait_exit(timeout=30)
        bad = engine_logs_clean([engine])
        full_errors = engine.log().count("disk full")
    after = table_rows(db, "jobs", "attempts")
    before_ids = {r[1] for r in stored["jobs"]}
    checked = integrity(db)
    ran = runs_of(runs)
    figures.update({
        "file system": "tmpfs 16 MiB, filled to the last byte", "bytes of filler": filled,
        "commands refused while full": len(refused), "refused without a clear 'disk full' line": len(problems),
        "engine store errors while full": full_errors, "engine alive while full": alive_while_full,
        "seconds full": full_s, "seconds to drain after space returned": recovered_s,
        "jobs lost": len(set(expected) - set(found)), "jobs not run exactly once": sum(ran[i] != 1 for i in expected),
        "integrity_check": checked, "tracebacks": len(bad),
    })
    assert not problems, problems
    assert alive_while_full, engine.log()[-3000:]
    assert code == 0, engine.log()[-3000:]
    assert all(found[i].state == JobState.COMPLETED for i in expected)
    assert all(ran[i] == 1 for i in expected), {i: ran[i] for i in expected if ran[i] != 1}
    assert not any(i.startswith("refused") for i in found)
    assert [r for r in after["jobs"] if r[1] in before_ids] == stored["jobs"], "a job stored before changed"
    assert [r for r in after["attempts"] if r[0] in before_ids] == stored["attempts"]
    assert checked == "ok"
    assert counters_match(db)
    assert not bad


@pytest.mark.timeout(120)
def test_engine_asked_to_stop_while_the_disk_is_full_stops(
    disk: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Waiting out a full disk must not make the engine deaf: SIGTERM stops it (nothing runs, so at once)."""
    home, work = disk / "home", tmp_path / "work"
    work.mkdir()
    enqueue_many(home, [{**job, "delay": "1s"} for job in _batch("due-while-full", 5, work / "runs")], cwd=work)
    with Engines(home, tmp_path) as engines:
        engine = engines.start(workers=2)
        fill(disk / "filler")
        engine.wait_log(r"store error \(\d+\): disk full", timeout=30)
        t0 = time.monotonic()
        engine.send(signal.SIGTERM)
        try:
            code: int | str = engine.wait_exit(timeout=10)
        except AssertionError:
            code = "still running 10 s after SIGTERM"
        took = round(time.monotonic() - t0, 1)
        bad = engine_logs_clean([engine])
    (disk / "filler").unlink()
    figures.update({"engine exit after SIGTERM while full": code, "seconds": took, "tracebacks": len(bad)})
    assert code == 0, engine.log()[-3000:]
    assert not bad
    assert integrity(disk / "home" / "queue.db") == "ok"
    assert all(j.state == JobState.PENDING for j in jobs(home).values())


@pytest.mark.timeout(120)
def test_disk_full_with_no_engine_running_refuses_enqueue_with_a_disk_full_message(
    disk: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """The database at rest (no engine: its -wal and -shm files are gone) on a full disk: opening it in WAL mode
    needs space already."""
    home, work = disk / "home", tmp_path / "work"
    work.mkdir()
    runs, db, filler = work / "runs", disk / "home" / "queue.db", disk / "filler"
    enqueue_many(home, _batch("stored", 20, runs), cwd=work)
    stored = table_rows(db, "jobs")
    fill(filler)
    refused = {
        "enqueue -- CMD": cli(home, "enqueue", "--id", "refused-1", "--", "true"),
        "enqueue --file": cli(home, "enqueue", "--file", "-", cwd=work,
                              input="".join(json.dumps(j) + "\n" for j in _batch("refused", 5, runs))),
    }
    reads = {"status": cli(home, "status"), "list": cli(home, "list", "--json")}
    problems = {what: one_line_error(proc, "disk full") for what, proc in refused.items()}
    problems = {what: p for what, p in problems.items() if p}
    read_problems = {what: (proc.returncode, proc.stderr[-300:]) for what, proc in reads.items()
                     if proc.returncode != 0 and one_line_error(proc) is not None}
    filler.unlink()
    accepted = cli(home, "enqueue", "--id", "after", "--", "true")
    figures.update({"commands refused": len(refused), "refused without a clear 'disk full' line": len(problems),
                    "messages": json.dumps({w: p.stderr.strip() for w, p in refused.items()}),
                    "reads that failed unclearly": len(read_problems)})
    assert accepted.returncode == 0, accepted.stderr
    assert table_rows(db, "jobs")["jobs"][: len(stored["jobs"])] == stored["jobs"]
    assert integrity(db) == "ok"
    assert not read_problems, read_problems
    assert not problems, problems


# ---- a template queue for the other faults ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A queue at rest with jobs in every terminal state, delayed jobs, a stored config value: built once."""
    root = tmp_path_factory.mktemp("fault-template")
    home, work = root / "home", root / "work"
    work.mkdir()
    cli_ok(home, "config", "set", "max-retries", "0")
    jobs_: list[dict[str, Any]] = [{"id": f"done-{i:03d}", "command": f"echo {i}"} for i in range(40)]
    jobs_ += [{"id": f"dead-{i:03d}", "command": "exit 3"} for i in range(10)]
    jobs_ += [{"id": f"later-{i:03d}", "command": "true", "delay": "1h", "priority": i % 3} for i in range(300)]
    enqueue_many(home, jobs_, cwd=work)
    done = cli(home, "run", "--workers", "4", "--until-idle", timeout=120)
    assert done.returncode == 0, done.stderr
    assert not Path(f"{home}/queue.db-wal").exists()
    return home


def _copy(template: Path, home: Path) -> Path:
    home.mkdir(mode=0o700, parents=True)
    shutil.copy2(template / "queue.db", home / "queue.db")
    (home / "logs").mkdir(mode=0o700)
    return home / "queue.db"


#: Every command a user might run on a broken database. Those that write must be refused.
WRITES = {
    "enqueue JSON": ["enqueue", '{"id": "new-1", "command": "true"}'],
    "enqueue -- CMD": ["enqueue", "--id", "new-2", "--", "true"],
    "enqueue --file": ["enqueue", "--file", "-"],
    "config set": ["config", "set", "max-retries", "5"],
    "dlq retry --all": ["dlq", "retry", "--all"],
    "delete": ["delete", "done-001"],
    "purge": ["purge", "--state", "completed"],
    "run --until-idle": ["run", "--until-idle"],
}
READS = {
    "status": ["status"],
    "list": ["list", "--json", "--limit", "1000"],
    "inspect": ["inspect", "dead-001", "--json"],
    "config list": ["config", "list"],
    "dlq list": ["dlq", "list"],
    "logs": ["logs", "done-001"],
    "worker stop": ["worker", "stop"],
    "stats": ["stats", "--json"],
}
BATCH_INPUT = '{"id": "new-3", "command": "true"}\n{"id": "new-4", "command": "true"}\n'


def _try_all(home: Path, db: Path, *words: str, reads_may_succeed: bool) -> dict[str, Any]:
    """Run every command on the broken database (four at a time). Writes must fail with one clear line (containing
    words); reads may succeed (if reads_may_succeed) or fail the same way. Never a traceback, and the file ends as
    it began (so no refused command changed it)."""
    before = db_files_digest(db)

    def attempt(what: str) -> tuple[str, int | str, str | None]:
        args = {**WRITES, **READS}[what]
        try:
            proc = cli(home, *args, input=BATCH_INPUT if "--file" in args else None, timeout=60)
        except subprocess.TimeoutExpired:
            return what, "hung", "did not end within 60 s"
        if what in READS and reads_may_succeed and proc.returncode == 0:
            return what, 0, (proc.stderr[-1000:] if forbidden_in(proc.stderr) else None)
        return what, proc.returncode, one_line_error(proc, *words, engine=args[0] == "run")

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, [*WRITES, *READS]))
    problems = {what: problem for what, _, problem in results if problem}
    if db_files_digest(db) != before:
        problems["the database file"] = "changed, though every write was refused"
    return {"problems": problems, "outcomes": {what: code for what, code, _ in results}}


# ---- read-only -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _immutable(db: Path) -> Iterator[None]:
    done = subprocess.run(["chattr", "+i", str(db)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True, check=False)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["immutable file (chattr +i)", "file system remounted read-only"])
def test_read_only_database_gives_a_clear_error_no_traceback_and_no_change(
    template: Path, tmp_path: Path, figures: dict[str, Any], how: str
) -> None:
    with contextlib.ExitStack() as stack:
        if how.startswith("immutable"):
            home = tmp_path / "home"
            db = _copy(template, home)
            stack.enter_context(_immutable(db))
        else:
            mount = stack.enter_context(small_fs(tmp_path / "ro", "16m"))
            home = mount / "home"
            db = _copy(template, home)
            remount(mount, "ro")
        digest = db_files_digest(db)
        result = _try_all(home, db, reads_may_succeed=True)
        unchanged = db_files_digest(db) == digest
    figures.update({"fault": how, "commands tried": len(result["outcomes"]),
                    "exit codes": json.dumps(result["outcomes"]), "unclear or wrong": len(result["problems"]),
                    "file unchanged": unchanged})
    assert not result["problems"], result["problems"]
    assert unchanged


# ---- a database from a newer queuectl -------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_database_from_a_newer_version_is_refused_clearly_and_left_alone(
    template: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    db = _copy(template, home)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version = 999")
        conn.commit()
    digest = db_files_digest(db)
    result = _try_all(home, db, "999", "newer", reads_may_succeed=False)
    unchanged = db_files_digest(db) == digest
    figures.update({"fault": "PRAGMA user_version = 999", "commands tried": len(result["outcomes"]),
                    "unclear or wrong": len(result["problems"]), "file unchanged": unchanged})
    assert not result["problems"], result["problems"]
    assert unchanged


# ---- a damaged file ------------------------------------------------------------------------------------------------


def _pages_of(db: Path, name: str) -> list[int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno", (name,))]


def _scribble(db: Path, first_page: int, last_page: int, seed: int) -> None:
    """Overwrite pages first_page..last_page (1-based) with random bytes."""
    rng = random.Random(seed)
    with open(db, "r+b") as f:
        f.seek((first_page - 1) * PAGE)
        f.write(rng.randbytes((last_page - first_page + 1) * PAGE))


@pytest.mark.timeout(240)
def test_damaged_database_gives_clear_errors_no_traceback_and_refused_writes_change_nothing(
    template: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Bytes overwritten in the middle of a copy: its middle half (indexes, attempts...), and whichever pages hold
    the counters, the config and the engines (so that every kind of write meets the damage, whatever the layout).
    Reads that do not touch the damage may succeed; every write is refused and leaves the file as it was."""
    home = tmp_path / "home"
    db = _copy(template, home)
    pages = db.stat().st_size // PAGE
    first, last = pages // 4 + 1, (3 * pages) // 4
    damaged = set(range(first, last + 1))
    for name in ("state_counts", "config", "engines"):
        damaged.update(_pages_of(db, name))
    for page in sorted(damaged):
        _scribble(db, page, page, seed=page)
    result = _try_all(home, db, "damaged", reads_may_succeed=True)
    figures.update({"fault": f"{len(damaged)} of {pages} pages overwritten with random bytes ({first}-{last} and "
                             f"{sorted(damaged - set(range(first, last + 1)))})",
                    "commands tried": len(result["outcomes"]), "exit codes": json.dumps(result["outcomes"]),
                    "unclear or wrong": len(result["problems"])})
    assert not result["problems"], result["problems"]


@pytest.mark.timeout(180)
def test_engine_meeting_a_damaged_page_while_running_stops_with_a_clear_error(
    template: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Damage only the claim index: the engine opens the file, registers, recovers, then its first claim reads the
    damaged page. It must say so and exit 1 (after its bounded retries), not retry for ever, and it must stop when
    asked to."""
    home = tmp_path / "home"
    db = _copy(template, home)
    with contextlib.closing(sqlite3.connect(db)) as conn:  # make the 300 delayed jobs due now
        conn.execute("UPDATE jobs SET run_at = 0 WHERE state = 'pending'")
        conn.commit()
    claim_pages = _pages_of(db, "jobs_claim")
    _scribble(db, claim_pages[0], claim_pages[0], seed=7)
    with Engines(home, tmp_path) as engines:
        engine = engines.start(workers=2)
        engine.wait_log(r"store error \(\d+\): .*damaged", timeout=30)
        t0 = time.monotonic()
        try:  # six failures in a row, retried with backoff (0.5 s doubling to 8 s), take ~24 s
            code: int | str = engine.wait_exit(timeout=40)
        except AssertionError:
            code = "still running after 40 s"
        gave_up_s = round(time.monotonic() - t0, 1)
        stopped_on_sigterm: bool | None = None
        if engine.returncode is None:
            engine.send(signal.SIGTERM)
            try:
                engine.wait_exit(timeout=5)
                stopped_on_sigterm = True
            except AssertionError:
                stopped_on_sigterm = False
        log = engine.log()
        bad = engine_logs_clean([engine])
    figures.update({"fault": f"page {claim_pages[0]} (the claim index) overwritten", "engine exit": code,
                    "seconds until it gave up": gave_up_s, "stopped on SIGTERM (if still running)": stopped_on_sigterm,
                    "store errors logged": log.count("store error"), "tracebacks": len(bad)})
    assert not bad
    assert code == 1, f"engine {code}; stopped on SIGTERM: {stopped_on_sigterm}\n{log[-3000:]}"
    assert "damaged" in log.splitlines()[-1]
    assert jobs(home)  # the file is still readable where it is not damaged
