"""What every benchmark shares: result rows with their targets, temp homes, subprocess commands, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from queuectl import jobspec, paths
from queuectl.api import Queue
from queuectl.jobspec import NewJob
from queuectl.store import sqlite_schema

PYTHON = sys.executable
#: The installed console script beside the interpreter (the venv's bin/), else `python -m queuectl`.
_SCRIPT = Path(PYTHON).with_name("queuectl")
QUEUECTL: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [PYTHON, "-m", "queuectl"]
QUEUECTL_M: list[str] = [PYTHON, "-m", "queuectl"]


@dataclasses.dataclass(frozen=True)
class Target:
    """`value op bound`, on the measured value (kind "value") or on measured / baseline (kind "ratio")."""

    op: str  # "<=" or ">="
    bound: float
    kind: str = "ratio"

    def met(self, value: float, ratio: float | None) -> bool:
        x = ratio if self.kind == "ratio" else value
        if x is None:
            return False
        return x <= self.bound if self.op == "<=" else x >= self.bound

    def text(self, unit: str) -> str:
        if self.kind == "ratio":
            return f"ratio {self.op} {self.bound:g}x"
        return f"{self.op} {self.bound:,.6g} {unit}"


@dataclasses.dataclass
class Row:
    """One line of the table. Without a target the row is informational."""

    bench: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value, self.ratio)

    def as_dict(self) -> dict[str, object]:
        return {
            "bench": self.bench, "metric": self.metric, "value": self.value, "unit": self.unit,
            "baseline": self.baseline, "baseline_label": self.baseline_label, "ratio": self.ratio,
            "target": self.target.text(self.unit) if self.target else None, "passed": self.passed,
            "note": self.note,
        }


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): a value that was actually observed."""
    ordered = sorted(xs)
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))
    return ordered[int(rank) - 1]


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"queuectl-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def clean_env() -> dict[str, str]:
    """The environment for queuectl subprocesses: no QUEUECTL_* from the caller's shell (every command gets --home)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}


def qc(home: Path, *args: str, module: bool = False) -> list[str]:
    """A queuectl command line against `home`."""
    return [*(QUEUECTL_M if module else QUEUECTL), "--home", str(home), *args]


def create_home(home: Path) -> Path:
    """A data directory with a migrated, empty database (as the first `queuectl` command would leave it)."""
    paths.ensure_home(home)
    conn = sqlite_schema.connect(home / paths.DB_NAME)
    try:
        sqlite_schema.migrate(conn, home / paths.DB_NAME)
    finally:
        conn.close()
    return home


def enqueue(home: Path, jobs: Sequence[NewJob]) -> None:
    """Through the library API, as another shell would (the store's enqueue, then a wake-up to the engines)."""

    async def go() -> None:
        async with Queue(home) as q:
            await q.enqueue(jobs)

    asyncio.run(go())


def job(job_id: str, command: str, *, run_at: float | None = None, cwd: Path) -> NewJob:
    spec: dict[str, object] = {"id": job_id, "command": command}
    if run_at is not None:
        spec["run_at"] = run_at
    return jobspec.from_mapping(spec, cwd=str(cwd))


def insert_jobs(home: Path, n: int, *, command: str, run_at: float, prefix: str, chunk: int = 50_000) -> None:
    """Bulk set-up through the store's own enqueue (one transaction per chunk): the rows the CLI would write."""

    async def go() -> None:
        async with Queue(home) as q:
            for start in range(0, n, chunk):
                await q.enqueue([NewJob(id=f"{prefix}{i}", command=command, run_at=run_at, cwd=str(home))
                                 for i in range(start, min(n, start + chunk))])

    asyncio.run(go())


def db_rows(home: Path, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
    conn = sqlite_schema.connect(home / paths.DB_NAME)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(poll_s)


@contextlib.contextmanager
def engine_process(home: Path, *args: str, ready_timeout_s: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """`queuectl run` as a subprocess (JSON log in home/engine.log), yielded once it has started; stopped with
    SIGTERM (a graceful stop) on the way out."""
    log_path = home / "engine.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(qc(home, "run", "--log-format", "json", *args), stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, env=clean_env())
    try:
        wait_until(lambda: b'"engine_started"' in log_path.read_bytes() or proc.poll() is not None,
                   ready_timeout_s, "the engine to start")
        if proc.returncode is not None:
            raise RuntimeError(f"engine exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


RESULTS = Path(__file__).parent / "results"


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def print_table(rows: list[Row]) -> None:
    header = ("benchmark", "metric", "measured", "baseline", "ratio", "target", "result")
    lines = [header]
    for r in rows:
        verdict = "info" if r.passed is None else ("PASS" if r.passed else "MISS")
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        baseline = "-" if r.baseline is None else f"{_fmt(r.baseline)} {r.unit} ({r.baseline_label})"
        lines.append((r.bench, r.metric, f"{_fmt(r.value)} {r.unit}", baseline, ratio,
                      r.target.text(r.unit) if r.target else "-", verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def finish_report(rows: list[Row], report: dict[str, Any], failed: list[str], filename: str) -> int:
    """Print the table and the verdict, write the JSON report under results/; exit status 1 if a benchmark failed
    to run (a MISS is a finding, not an error)."""
    report["load_avg_at_end"] = os.getloadavg()
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / filename).write_text(json.dumps(report, indent=2) + "\n")
    misses = [r for r in rows if r.passed is False]
    print(f"\n{sum(r.passed is True for r in rows)} pass, {len(misses)} miss, {len(failed)} failed to run"
          f"{': ' + ', '.join(failed) if failed else ''}; results in {RESULTS / filename}")
    return 1 if failed else 0
