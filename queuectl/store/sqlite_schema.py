"""The SQLite schema as numbered migrations, and opening a connection the way every caller must.

PRAGMA user_version holds the number of migrations applied. Never edit a released migration: add one.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from queuectl.errors import StoreError

#: Seconds a writer waits for the lock before "database is locked" (SQLite's busy handler retries meanwhile).
BUSY_TIMEOUT_S = 30.0


def is_locked(exc: sqlite3.Error) -> bool:
    """SQLite gave up waiting for another connection's lock (after BUSY_TIMEOUT_S)."""
    text = str(exc)
    return "locked" in text or "busy" in text


def locked_error(path: Path) -> StoreError:
    return StoreError(f"database {path} stayed locked by another process for {BUSY_TIMEOUT_S:.0f} s; try again")

MIGRATIONS: list[list[str]] = [
    # 1: jobs, attempts, per-state counters kept by triggers, config, engines.
    [
        """CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            command TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            runs INTEGER NOT NULL DEFAULT 0,
            max_retries INTEGER,
            priority INTEGER NOT NULL DEFAULT 0,
            run_at REAL NOT NULL,
            timeout_s REAL,
            cwd TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            exit_code INTEGER,
            last_error TEXT,
            engine_id TEXT
        )""",
        # Claiming walks this in order and stops at the first due row.
        """CREATE INDEX jobs_claim ON jobs(priority DESC, run_at, seq)
           WHERE state IN ('pending', 'failed')""",
        # The scheduler's window: runnable jobs by due time.
        "CREATE INDEX jobs_due ON jobs(run_at, seq) WHERE state IN ('pending', 'failed')",
        "CREATE INDEX jobs_state ON jobs(state, seq)",
        """CREATE TABLE attempts (
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            status TEXT NOT NULL,
            engine_id TEXT,
            started_at REAL NOT NULL,
            finished_at REAL,
            exit_code INTEGER,
            timed_out INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            output_tail TEXT,
            log_path TEXT,
            PRIMARY KEY (job_id, number)
        ) WITHOUT ROWID""",
        "CREATE TABLE state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
        """INSERT INTO state_counts(state, n) VALUES
           ('pending', 0), ('processing', 0), ('completed', 0), ('failed', 0), ('dead', 0)""",
        """CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
             UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
           END""",
        """CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
             UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
           END""",
        """CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
             UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
             UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
           END""",
        "CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
        """CREATE TABLE engines (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            workers INTEGER NOT NULL,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL,
            stop_requested INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID""",
    ],
    # 2: stats, `top`, the dashboard and /metrics read the attempts that finished in a time window. The index
    # covers status and started_at too, so that counting and run times read the index only (3x quicker than
    # finished_at alone, measured on a million attempts); job_id and number come with it (the primary key).
    [
        "CREATE INDEX attempts_finished ON attempts(finished_at, status, started_at)",
    ],
    # 3: named queues, dependencies, cancellation, unique keys, environment, tags, cron entries, webhooks.
    [
        "ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default'",
        "ALTER TABLE jobs ADD COLUMN unique_key TEXT",
        "ALTER TABLE jobs ADD COLUMN env TEXT",  # JSON object
        "ALTER TABLE jobs ADD COLUMN tags TEXT",  # JSON array; job_tags is what --tag searches
        "ALTER TABLE jobs ADD COLUMN after TEXT",  # JSON array; job_deps is what the engine follows
        "ALTER TABLE jobs ADD COLUMN deps_left INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN blocked_by TEXT",
        "ALTER TABLE jobs ADD COLUMN cron TEXT",
        "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
        "INSERT INTO state_counts(state, n) VALUES ('waiting', 0), ('cancelled', 0)",
        # A claim restricted to some queues (paused or limited ones, or `run --queue`) walks each queue's own
        # runnable jobs in claim order instead of skipping another queue's backlog.
        """CREATE INDEX jobs_claim_queue ON jobs(queue, priority DESC, run_at, seq)
           WHERE state IN ('pending', 'failed')""",
        # The database itself refuses a second active job with the same key, whichever process enqueues it.
        """CREATE UNIQUE INDEX jobs_unique ON jobs(unique_key)
           WHERE unique_key IS NOT NULL AND state IN ('pending', 'waiting', 'failed', 'processing')""",
        "CREATE INDEX jobs_blocked ON jobs(blocked_by) WHERE blocked_by IS NOT NULL",
        "CREATE INDEX jobs_cancel ON jobs(engine_id) WHERE cancel_requested = 1",
        # dep_id first: a finished job finds its dependants by index, O(its dependants), not a scan.
        """CREATE TABLE job_deps (
            dep_id TEXT NOT NULL,
            job_seq INTEGER NOT NULL REFERENCES jobs(seq) ON DELETE CASCADE,
            PRIMARY KEY (dep_id, job_seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX job_deps_job ON job_deps(job_seq)",
        """CREATE TABLE job_tags (
            tag TEXT NOT NULL,
            job_seq INTEGER NOT NULL REFERENCES jobs(seq) ON DELETE CASCADE,
            PRIMARY KEY (tag, job_seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX job_tags_job ON job_tags(job_seq)",
        """CREATE TABLE queues (
            name TEXT PRIMARY KEY,
            concurrency INTEGER NOT NULL DEFAULT 0,
            paused INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID""",
        "INSERT INTO queues(name) VALUES ('default')",
        """CREATE TABLE crons (
            name TEXT PRIMARY KEY,
            schedule TEXT NOT NULL,
            command TEXT NOT NULL,
            cwd TEXT NOT NULL,
            queue TEXT NOT NULL DEFAULT 'default',
            priority INTEGER NOT NULL DEFAULT 0,
            max_retries INTEGER,
            timeout_s REAL,
            env TEXT,
            paused INTEGER NOT NULL DEFAULT 0,
            catch_up INTEGER NOT NULL DEFAULT 0,
            next_run_at REAL NOT NULL,
            last_run_at REAL,
            last_job_id TEXT,
            created_at REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE webhooks (
            id INTEGER PRIMARY KEY,
            url TEXT NOT NULL,
            events TEXT NOT NULL,
            secret TEXT,
            created_at REAL NOT NULL
        )""",
    ],
    # 4: the database refuses a job state or an attempt status queuectl does not know, as PostgreSQL's CHECK
    # constraints do: a row so written (by hand, by another program) could be neither listed nor counted. Rows
    # written before are left as they are. A job's state is checked by its per-state counter: a state without a
    # counter row changed nothing (a separate trigger with a NOT IN list cost 3-4 us per write; this, nothing
    # measurable). (A state added later needs its counter row; a status, a migration replacing these triggers.)
    [
        "DROP TRIGGER jobs_count_insert",
        """CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
             UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
             SELECT RAISE(ABORT, 'queuectl: unknown job state') WHERE changes() = 0;
           END""",
        "DROP TRIGGER jobs_count_update",
        """CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
             UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
             UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
             SELECT RAISE(ABORT, 'queuectl: unknown job state') WHERE changes() = 0;
           END""",
        *(f"""CREATE TRIGGER attempts_known_status_{name} BEFORE {event} ON attempts
              WHEN NEW.status NOT IN ('succeeded', 'failed', 'timed_out', 'interrupted', 'cancelled')
              BEGIN SELECT RAISE(ABORT, 'queuectl: unknown attempt status'); END"""
          for name, event in (("insert", "INSERT"), ("update", "UPDATE OF status"))),
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating it 0600 if missing) in autocommit mode; every write transaction says BEGIN IMMEDIATE
    so that the busy handler, not an instant SQLITE_BUSY, meets a concurrent writer."""
    try:
        # Create it 0600 if missing. Never open and close an existing database: closing any descriptor of the
        # file drops every POSIX lock this process holds on it (another connection's too), and another process
        # could then checkpoint and delete the WAL under that connection.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot open database {path}: {exc.strerror or exc}") from None
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        # One statement, one snapshot (another process may be migrating this file right now). Refuse a foreign
        # database before switching it to WAL: refusing must leave it as it was.
        version, tables = conn.execute(
            "SELECT (SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_master)").fetchone()
        if version == 0 and tables:
            conn.close()
            raise StoreError(f"{path} is a SQLite database but not a queuectl one")
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:  # SQLite does not run the busy handler for this switch: wait for the lock here
                if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
                    break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError("database is locked")
            time.sleep(0.005)
        # NORMAL in WAL mode: a commit survives a crash of the process (kill -9); only an OS crash or power
        # loss can roll back the last transactions. FULL would fsync every state change.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.OperationalError as exc:  # locked, I/O error...: not a verdict on the file's contents
        conn.close()
        raise StoreError(f"cannot open database {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path} is not a queuectl database ({exc})") from None
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations this database lacks, in one transaction; refuse a newer schema."""
    version = schema_version(conn)
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database {path} has schema version {version}, newer than this queuectl knows ({SCHEMA_VERSION}); "
            "upgrade queuectl"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)  # another process may have migrated while we waited for the lock
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StoreError(f"{path} is a SQLite database but not a queuectl one")
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
