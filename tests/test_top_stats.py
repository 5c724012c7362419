"""`queuectl stats` and `queuectl top`: the store's stats and search over real SQLite files, the pure summary and
layout, the CLI in-process and as real processes (with a pseudo-terminal for top's live mode), and a real engine."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from queuectl import top
from queuectl.api import Queue, Status
from queuectl.jobspec import NewJob
from queuectl.models import Counts, EngineInfo, Job, JobState
from queuectl.stats import FailureRow, StatsRow, percentile, stats_dict, stats_text, summarize
from queuectl.store import sqlite_schema
from queuectl.store.sqlite import SQLiteStore
from tests.dashboard_helpers import store_attempt
from tests.engine_helpers import Engines, enqueue
from tests.helpers import proc_argv, proc_env, run_cli, run_proc, wait_until

NOW = time.time()
BASE = NOW - 300  # the scenario's attempts happen in the last 5 minutes


@pytest.fixture(autouse=True)
def _fresh_now() -> None:
    """The commands under test read the wall clock: "the last 5 minutes" must be the test's, not the import's
    (a long suite once ran this module more than 10 minutes after importing it)."""
    global NOW, BASE
    NOW = time.time()
    BASE = NOW - 300


def new_job(job_id: str, command: str, run_at: float, **extra: object) -> NewJob:
    return NewJob(id=job_id, command=command, run_at=run_at, cwd="/tmp", **extra)  # type: ignore[arg-type]


async def build_scenario(store: SQLiteStore) -> None:
    """Six attempts in the last 5 minutes (3 succeeded, 2 failed, 1 timed out; one job buried) and one old one."""
    await store.enqueue([
        new_job("old", "echo old", NOW - 7300),
        new_job("ok1", "echo one", BASE - 1),
        new_job("ok2", "echo two", BASE + 7),
        new_job("flaky", "sh flaky.sh", BASE + 20),
        new_job("doomed", "exit 7", BASE + 40, max_retries=0),
        new_job("slow", "sleep 100", BASE + 50),
    ], now=NOW - 7400)
    assert await store_attempt(store, "old", started_at=NOW - 7250, finished_at=NOW - 7200)
    assert await store_attempt(store, "ok1", started_at=BASE, finished_at=BASE + 2)
    assert await store_attempt(store, "ok2", started_at=BASE + 10, finished_at=BASE + 10.5)
    assert await store_attempt(store, "flaky", exit_code=3, started_at=BASE + 20, finished_at=BASE + 21,
                               retry_at=BASE + 30)
    assert await store_attempt(store, "flaky", started_at=BASE + 31, finished_at=BASE + 32)
    assert await store_attempt(store, "doomed", exit_code=7, started_at=BASE + 40, finished_at=BASE + 41, bury=True)
    assert await store_attempt(store, "slow", exit_code=None, timed_out=True, started_at=BASE + 50,
                               finished_at=BASE + 60, retry_at=NOW + 1000)


@pytest.fixture
async def scenario(home: Path) -> Path:
    home.mkdir(parents=True)  # noqa: ASYNC240 - set-up
    async with SQLiteStore(home / "queue.db") as store:
        await build_scenario(store)
    return home


# ---- the store ---------------------------------------------------------------------------------------------------


async def test_store_stats_counts_the_window_only(scenario: Path) -> None:
    async with SQLiteStore(scenario / "queue.db") as store:
        row = await store.stats(since=NOW - 3600, until=NOW + 1, samples=100, bucket_s=60, top=5)
        assert row.attempts == {"succeeded": 3, "failed": 2, "timed_out": 1}
        assert row.buried == 1
        assert row.run_max_s == pytest.approx(10.0)
        assert row.run_sum_s == pytest.approx(2 + 0.5 + 1 + 1 + 1 + 10)
        assert sorted(row.run_samples) == pytest.approx([0.5, 1, 1, 1, 2, 10])
        # queue waits of the attempts that finished their job: ok1 1 s, ok2 3 s, flaky (retry due +30, run +31)
        # 1 s, doomed 0 s; slow is still failed (waiting for its retry): its due time is the retry's.
        assert sorted(row.wait_samples) == pytest.approx([0, 1, 1, 3])
        assert row.top_failing == [("exit 7", 1), ("sh flaky.sh", 1), ("sleep 100", 1)]
        assert [(f.job_id, f.attempt, f.status) for f in row.recent_failures] == [
            ("slow", 1, "timed_out"), ("doomed", 1, "failed"), ("flaky", 1, "failed")]
        assert row.recent_failures[1] == FailureRow(job_id="doomed", attempt=1, finished_at=BASE + 41,
                                                    status="failed", exit_code=7, error="exit code 7",
                                                    command="exit 7")
        assert sum(ok for _, ok, _ in row.series) == 3 and sum(bad for _, _, bad in row.series) == 3
        assert all(start >= row.since and (start - row.since) % 60 == pytest.approx(0) for start, _, _ in row.series)

        # Samples are bounded (the newest first); the counts stay exact.
        small = await store.stats(since=NOW - 3600, until=NOW + 1, samples=2)
        assert small.run_samples == pytest.approx([10.0, 1.0])  # slow, then doomed
        assert small.attempts == row.attempts and small.top_failing == [] and small.series == []

        # The window is [since, until): the old attempt only with a longer window; nothing in an empty one.
        day = await store.stats(since=NOW - 86400, until=NOW + 1)
        assert day.attempts["succeeded"] == 4
        empty = await store.stats(since=NOW - 30, until=NOW)
        assert empty.attempts == {} and empty.buried == 0 and empty.run_max_s is None


async def test_store_stats_survives_deleted_jobs(scenario: Path) -> None:
    async with Queue(scenario) as q:
        await q.delete(["doomed"])  # its attempts go with it (ON DELETE CASCADE)
        row = await q.stats_row(since=NOW - 3600, until=NOW + 1, top=5)
    assert row.attempts == {"succeeded": 3, "failed": 1, "timed_out": 1}
    assert row.buried == 0


def test_summary_rates_and_percentiles() -> None:
    row = StatsRow(since=0.0, until=600.0, attempts={"succeeded": 30, "failed": 6, "timed_out": 4, "interrupted": 2},
                   buried=3, run_sum_s=80.0, run_max_s=9.0, run_samples=[float(i) for i in range(1, 21)],
                   wait_samples=[0.5, 0.1, 0.2], top_failing=[("x", 10)], recent_failures=[], series=[])
    s = summarize(row)
    assert (s.completed, s.failed, s.timed_out, s.dead, s.retries, s.interrupted) == (30, 6, 4, 3, 7, 2)
    assert s.success_rate == pytest.approx(0.75)
    assert s.throughput_per_min == pytest.approx(3.0)
    assert (s.run_p50_s, s.run_p95_s, s.run_max_s) == (10.0, 19.0, 9.0)
    assert s.run_mean_s == pytest.approx(2.0)
    assert (s.wait_p50_s, s.wait_p95_s) == (0.2, 0.5)
    assert s.sampled  # 20 samples of 40 attempts
    assert percentile([], 50) is None and percentile([3.0], 99) == 3.0
    empty = summarize(StatsRow(since=0.0, until=60.0, attempts={}, buried=0, run_sum_s=0.0, run_max_s=None,
                               run_samples=[], wait_samples=[], top_failing=[], recent_failures=[], series=[]))
    assert empty.success_rate is None and empty.run_p50_s is None and not empty.sampled
    assert all(len(line) <= 80 for line in stats_text(empty))
    assert stats_dict(empty)["success_rate"] is None


async def test_search_jobs_filters_and_keyset_pages(home: Path) -> None:
    home.mkdir(parents=True)  # noqa: ASYNC240 - set-up
    async with SQLiteStore(home / "queue.db") as store:
        await store.enqueue([new_job(f"job-{i:03d}", f"echo {'needle' if i % 10 == 0 else 'hay'} {i}", NOW + 3600)
                             for i in range(120)], now=NOW)
        await store.enqueue([new_job("abc-1", "true", NOW - 10)], now=NOW)
        assert await store_attempt(store, "abc-1", started_at=NOW - 5, finished_at=NOW - 4)

        newest = await store.search_jobs(limit=10)
        assert [j.id for j in newest][:2] == ["abc-1", "job-119"] and len(newest) == 10
        older = await store.search_jobs(limit=10, below_seq=newest[-1].seq)
        assert older[0].seq == newest[-1].seq - 1 and len(older) == 10
        newer = await store.search_jobs(limit=5, above_seq=older[0].seq, newest_first=False)
        assert [j.seq for j in newer] == [older[0].seq + k for k in range(1, 6)]

        done = await store.search_jobs(state=JobState.COMPLETED)
        assert [j.id for j in done] == ["abc-1"]
        needles = await store.search_jobs(text="needle", limit=100)
        assert [j.id for j in needles] == [f"job-{i:03d}" for i in range(110, -1, -10)]
        assert [j.id for j in await store.search_jobs(text="abc")] == ["abc-1"]  # an id prefix
        assert [j.id for j in await store.search_jobs(text="job-00")][:3] == ["job-009", "job-008", "job-007"]
        assert await store.search_jobs(text="needle", state=JobState.COMPLETED) == []
        window = await store.search_jobs(text="needle", above_seq=100, below_seq=112)
        assert [j.id for j in window] == ["job-110", "job-100"]
        assert await store.search_jobs(text="%") == []  # plain text, no LIKE patterns


async def test_search_and_stats_validate_arguments(home: Path) -> None:
    from queuectl.errors import ValidationError

    async with Queue(home) as q:
        for kwargs in ({"limit": 0}, {"limit": 1001}, {"below_seq": -1}, {"text": "x" * 1001}):
            with pytest.raises(ValidationError):
                await q.search_jobs(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await q.stats(0)
        with pytest.raises(ValidationError):
            await q.stats_row(since=10, until=5)


async def test_migration_2_adds_the_attempts_index_to_a_version_1_database(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    conn = sqlite_schema.connect(db)
    for statement in sqlite_schema.MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO jobs(id, command, state, run_at, cwd, created_at, updated_at) "
                 "VALUES ('j', 'true', 'completed', 1, '/', 1, 1)")
    conn.close()
    async with SQLiteStore(db) as store:
        assert (await store.get("j")).state == JobState.COMPLETED
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.SCHEMA_VERSION >= 2
    index = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'attempts_finished'").fetchone()
    conn.close()
    assert index is not None and "finished_at" in index[0]
    assert not any("attempts_finished" in s for s in sqlite_schema.MIGRATIONS[0])


# ---- queuectl stats ------------------------------------------------------------------------------------------------


def test_stats_cli_json_and_text(scenario: Path) -> None:
    result = run_cli("stats", "--since", "1h", "--json")
    assert result.code == 0, result
    data = result.json()
    assert (data["completed"], data["failed"], data["timed_out"], data["dead"], data["retries"]) == (3, 2, 1, 1, 2)
    assert data["success_rate"] == 0.5
    assert data["throughput_per_min"] == pytest.approx(3 / 60, abs=1e-3)
    assert data["run_time_s"] == {"p50": 1.0, "p95": 10.0, "max": 10.0, "mean": pytest.approx(15.5 / 6)}
    assert data["queue_wait_s"] == {"p50": 1.0, "p95": 3.0}
    assert data["top_failing"][0] == {"command": "exit 7", "failures": 1}
    assert data["recent_failures"][0]["job_id"] == "slow" and data["recent_failures"][0]["status"] == "timed_out"
    assert data["since"].endswith("Z") and data["window_s"] == 3600

    text = run_cli("stats")
    assert text.code == 0 and text.err == ""
    assert "completed 3  failed 2  timed out 1  dead 1" in text.out
    assert "success rate 50.0%" in text.out and "busiest commands by failures:" in text.out
    assert all(len(line) <= 80 for line in text.lines)

    narrow = run_cli("stats", "--since", "2m", "--json").json()  # the scenario's attempts are 4-5 minutes old
    assert narrow["completed"] == 0 and narrow["success_rate"] is None and narrow["run_time_s"]["p50"] is None


@pytest.mark.parametrize("since", ["bogus", "0", "-5m", "1y"])
def test_stats_cli_refuses_a_bad_window(home: Path, since: str) -> None:
    result = run_cli("stats", "--since", since)
    assert result.code == 2, result
    assert result.err.startswith("queuectl: error:") and result.err.count("\n") == 1


def test_stats_as_a_real_process(scenario: Path) -> None:
    result = run_proc("stats", "--json", home=scenario)
    assert result.code == 0, result
    assert result.json()["dead"] == 1


# ---- queuectl top: layout ------------------------------------------------------------------------------------------


def frame(*, running: int = 3, engines: int = 2, failures: int = 5, now: float = NOW) -> top.Frame:
    long_command = "python3 -m some.module --with 'a very long argument list' " * 6 + "ünïcødé <script>"
    jobs = [Job(id=f"job-with-a-long-id-{i:04d}", command=long_command, state=JobState.PROCESSING, attempts=0,
                runs=1, max_retries=None, priority=0, run_at=now - 100, timeout_s=None, cwd="/", seq=i,
                created_at=now - 100, updated_at=now - 90, started_at=now - 90 + i, engine_id=f"engine-{i % 2}")
            for i in range(running)]
    status = Status(
        counts=Counts(by_state={JobState.PENDING: 1_234_567, JobState.PROCESSING: running,
                                JobState.COMPLETED: 98_765_432, JobState.FAILED: 12, JobState.DEAD: 3_456},
                      oldest_pending_age_s=12.5),
        engines=[EngineInfo(id=f"engine-{k}-host.example.com-123456-abcd", host="host", pid=100 + k, workers=16,
                            started_at=now - 3600, heartbeat_at=now - 2) for k in range(engines)],
        running=jobs)
    row = StatsRow(since=now - top.WINDOW_S, until=now, attempts={"succeeded": 1500, "failed": 40, "timed_out": 2},
                   buried=5, run_sum_s=100.0, run_max_s=4.0, run_samples=[], wait_samples=[], top_failing=[],
                   recent_failures=[FailureRow(job_id=f"failing-job-{k}", attempt=k + 1, finished_at=now - k,
                                               status="failed", exit_code=1, error="exit code 1: " + "x" * 100,
                                               command=long_command) for k in range(failures)],
                   series=[(now - top.WINDOW_S + 60 * k, 150 + k, k) for k in range(10)])
    return top.Frame(now=now, home="~/.local/share/queuectl", status=status, stats=summarize(row))


def test_top_layout_fits_80_columns() -> None:
    lines = [top.plain(line) for line in top.render(frame(), width=80)]
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    text = "\n".join(lines)
    for needle in ("queuectl top", "PENDING", "1,234,567", "98,765,432", "TOTAL", "engines alive 2",
                   "oldest due job waiting 12.5s", "0/16 busy", "RUNNING (3)", "job-with-a-long-id-…", "1m30s",
                   "NEWEST FAILURES", "failing-job-0 #1", "last 10 min", "minutes ago", "completed 1,500",
                   "  completed    150"):
        assert needle in text, needle
    assert "<script>" not in text  # cut off before it: the command is long; nothing breaks the layout


def test_top_layout_shrinks_to_the_terminal() -> None:
    lines = top.render(frame(running=40), width=60, height=24)
    assert len(lines) <= 24 and all(len(top.plain(line)) <= 60 for line in lines)
    assert any("... and" in top.plain(line) and "more" in top.plain(line) for line in lines)
    empty = [top.plain(line) for line in top.render(frame(running=0, engines=0, failures=0))]
    assert "  nothing running" in empty and any("no engine running" in line for line in empty)
    assert "  none" in empty
    styled = top.styled(top.render(frame(), width=80)[3])
    assert "\x1b[32;1m" in styled and _strip_ansi(styled) == top.plain(top.render(frame(), width=80)[3])
    no_stats = [top.plain(line) for line in top.render(top.Frame(now=NOW, home="/h", status=frame().status,
                                                                 stats=None))]
    assert any("not available" in line for line in no_stats)


# ---- queuectl top: the command -------------------------------------------------------------------------------------


def test_top_once_prints_plain_text_when_not_a_tty(scenario: Path) -> None:
    result = run_proc("top", "--once", home=scenario)
    assert result.code == 0, result
    assert "\x1b" not in result.out
    assert all(len(line) <= 80 for line in result.lines)
    assert "PENDING" in result.out and "NEWEST FAILURES" in result.out and "slow #1" in result.out
    assert "completed 3" in result.out


def test_top_prints_frames_until_interrupted_when_piped(scenario: Path) -> None:
    proc = subprocess.Popen(proc_argv("top", "--interval", "200ms"), env=proc_env(scenario),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 20
        while seen.count(b"queuectl top") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                seen += os.read(proc.stdout.fileno(), 65536)
        assert seen.count(b"queuectl top") >= 2 and b"\x1b" not in seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("interval", ["10ms", "soon"])
def test_top_refuses_a_bad_interval(home: Path, interval: str) -> None:
    result = run_cli("top", "--interval", interval)
    assert result.code == 2 and "--interval" in result.err


def test_top_redraws_in_place_on_a_terminal_and_restores_it_on_ctrl_c(scenario: Path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = proc_env(scenario, {"TERM": "xterm-256color"})
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(proc_argv("top", "--interval", "200ms"), env=env, stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""

    def pump() -> bytes:
        nonlocal seen
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            with contextlib.suppress(OSError):  # the child closed the terminal
                seen += os.read(master, 65536)
        return seen

    try:
        wait_until(lambda: pump().count(top.HOME.encode()) >= 3, timeout_s=20, what="three frames")
        assert seen.startswith(top.ENTER_SCREEN.encode())
        frames = seen.split(top.HOME.encode())
        assert b"queuectl top" in frames[1] and b"\x1b[32" in frames[1]  # colored: completed counts in green
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        pump()
        pump()
        assert top.LEAVE_SCREEN.encode() in seen
        for part in frames[1].split(b"\r\n"):
            visible = _strip_ansi(part.decode("utf-8", "replace")).rstrip("\r")
            assert len(visible) <= 80, visible
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_top_shows_a_running_job_of_a_real_engine(home: Path, tmp_path: Path) -> None:
    with Engines(home, tmp_path) as engines:
        engines.start(workers=2)
        job_id = enqueue(home, "sleep 30 # top-sees-me")
        result = wait_until(lambda: (r := run_proc("top", "--once", home=home)).code == 0 and job_id in r.out and r,
                            timeout_s=30, what="top to show the running job")
        assert result
        assert "engines alive 1" in result.out and "RUNNING (1)" in result.out and "top-sees-me" in result.out
        assert "1/2 busy" in result.out


async def test_top_run_draws_one_frame_through_the_api(scenario: Path) -> None:
    import io

    out = io.StringIO()
    async with Queue(scenario) as q:
        await asyncio.wait_for(top.run(q, interval_s=1.0, once=True, out=out, tty=False, color=False), 20)
    assert "queuectl top" in out.getvalue() and "\x1b" not in out.getvalue()

