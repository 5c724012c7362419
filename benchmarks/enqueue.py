"""Issue 2's targets: bulk enqueue from JSON Lines, and one `queuectl enqueue` as a new process."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from benchmarks.common import PYTHON, Row, Target, clean_env, create_home, db_rows, median, qc, temp_dir

BULK_JOBS = 100_000
BULK_ROUNDS = 3
CLI_RUNS = 30

#: The floor for a bulk load: one Python process that parses the same file and inserts the same rows.
_BARE_BULK = """
import json, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA synchronous=NORMAL")
now = time.time()
with open(sys.argv[2]) as f:
    rows = [(o["id"], o["command"], now, "/", now, now) for o in map(json.loads, f)]
conn.execute("BEGIN IMMEDIATE")
conn.executemany("INSERT INTO jobs(id, command, state, run_at, cwd, created_at, updated_at) "
                 "VALUES (?, ?, 'pending', ?, ?, ?, ?)", rows)
conn.execute("COMMIT")
"""

#: The floor for one enqueue: open the same database with the same durability setting, insert one row.
_BARE_ONE = (
    "import sqlite3, sys, time, secrets; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
    "c.execute('PRAGMA synchronous=NORMAL'); t = time.time(); "
    "c.execute(\"INSERT INTO jobs(id, command, state, run_at, cwd, created_at, updated_at) "
    "VALUES (?, 'true', 'pending', ?, '/', ?, ?)\", (secrets.token_hex(6), t, t, t)); c.close()"
)


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=clean_env())
    return time.perf_counter() - start


def _count(home: Path) -> int:
    return int(db_rows(home, "SELECT count(*) FROM jobs")[0][0])


def bulk_enqueue() -> list[Row]:
    took, bare = [], []
    with temp_dir("bulk") as tmp:
        jobs_file = tmp / "jobs.jsonl"
        with jobs_file.open("w") as f:
            for i in range(BULK_JOBS):
                f.write(json.dumps({"id": f"job-{i:06d}", "command": f"echo job {i}"}) + "\n")
        for rnd in range(BULK_ROUNDS):
            home = tmp / f"home{rnd}"  # fresh: the CLI creates it
            took.append(_timed(qc(home, "enqueue", "--file", str(jobs_file))))
            if _count(home) != BULK_JOBS:
                raise RuntimeError(f"bulk enqueue stored {_count(home)} jobs, not {BULK_JOBS}")
            bare_home = create_home(tmp / f"bare{rnd}")
            bare.append(_timed([PYTHON, "-c", _BARE_BULK, str(bare_home / "queue.db"), str(jobs_file)]))
    rate, bare_rate = BULK_JOBS / median(took), BULK_JOBS / median(bare)
    return [
        Row("bulk_enqueue", f"{BULK_JOBS:,} jobs, `enqueue --file` (new process), median of {BULK_ROUNDS}", rate,
            "jobs/s", bare_rate, "bare python+sqlite3 bulk insert", Target(">=", 20_000, kind="value"),
            note=f"{median(took):.2f}s vs {median(bare):.2f}s"),
    ]


def cli_enqueue() -> list[Row]:
    with temp_dir("cli") as tmp:
        home = tmp / "home"
        job = '{"command":"true"}'
        commands = {
            "script": qc(home, "enqueue", job),
            "module": qc(home, "enqueue", job, module=True),
            "bare": [PYTHON, "-c", _BARE_ONE, str(home / "queue.db")],
            "status": qc(home, "status"),  # a command through typer: the CLI's start-up, for context
        }
        subprocess.run(commands["script"], check=True, stdout=subprocess.DEVNULL, env=clean_env())  # creates home
        for cmd in commands.values():  # warm the page cache
            _timed(cmd)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(CLI_RUNS):  # interleaved, so that load from elsewhere hits all three alike
            for name, cmd in commands.items():
                times[name].append(_timed(cmd))
        expected = 1 + (len(commands) - 1) * (1 + CLI_RUNS)  # all but status insert a row
        if _count(home) != expected:  # every run really inserted its row
            raise RuntimeError(f"expected {expected} rows after the runs, found {_count(home)}")
    bare = median(times["bare"]) * 1000
    label = "bare python -c sqlite3 insert"
    return [
        Row("cli_enqueue", f"`queuectl enqueue JSON` console script, median of {CLI_RUNS}",
            median(times["script"]) * 1000, "ms", bare, label, Target("<=", 3)),
        Row("cli_enqueue", f"`python -m queuectl enqueue JSON`, median of {CLI_RUNS}",
            median(times["module"]) * 1000, "ms", bare, label, Target("<=", 3)),
        Row("cli_enqueue", f"`queuectl status` console script (start-up through typer), median of {CLI_RUNS}",
            median(times["status"]) * 1000, "ms", bare, label),
    ]
