"""Many processes enqueuing into one fresh home at once: every one succeeds, every row arrives, and nobody sees
"database is locked" (writers queue on the busy timeout; BEGIN IMMEDIATE avoids upgrade deadlocks)."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.helpers import Result, proc_argv, proc_env, run_cli, run_proc

PROCESSES = 8


def _counts() -> dict[str, int]:
    result = run_cli("status", "--json")
    assert result.code == 0, result
    return result.json()["counts"]


def test_eight_processes_each_enqueuing_500_jobs_at_once(home: Path, tmp_path: Path) -> None:
    files = []
    for p in range(PROCESSES):
        path = tmp_path / f"batch-{p}.jsonl"
        path.write_text("".join(json.dumps({"id": f"p{p}-{i}", "command": f"echo {p} {i}"}) + "\n" for i in range(500)))
        files.append(path)
    # All start before any has created the database: they also race to create and migrate it.
    procs = [subprocess.Popen(proc_argv("enqueue", "--file", str(path)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=proc_env(home))
             for path in files]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(Result(proc.returncode, out, err))
    for p, result in enumerate(results):
        assert "locked" not in result.err, result.err
        assert result.code == 0 and result.err == "", result.err
        assert result.out.split() == [f"p{p}-{i}" for i in range(500)]
    assert _counts()["pending"] == PROCESSES * 500
    listing = run_cli("list", "--json", "--limit", "10000")
    assert len({j["id"] for j in listing.json()}) == PROCESSES * 500


def test_eight_shells_each_enqueuing_25_jobs_one_by_one(home: Path) -> None:
    """The way a script enqueues: one `queuectl enqueue` process per job, 8 such loops in parallel."""

    def loop(p: int) -> list[Result]:
        return [run_proc("enqueue", "--id", f"s{p}-{i}", "--", "echo", str(p), str(i), home=home, timeout_s=120)
                for i in range(25)]

    with ThreadPoolExecutor(PROCESSES) as pool:
        per_shell = list(pool.map(loop, range(PROCESSES)))
    for p, results in enumerate(per_shell):
        for i, result in enumerate(results):
            assert "locked" not in result.err, result.err
            assert (result.code, result.out, result.err) == (0, f"s{p}-{i}\n", ""), result
    assert _counts()["pending"] == PROCESSES * 25
