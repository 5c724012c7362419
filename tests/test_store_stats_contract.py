"""The watching half of the Store contract: Store.stats and Store.search_jobs (queuectl/store/base.py).

Like tests/test_store_contract.py, only the Store interface is used (no SQL), through the `store` fixture, so every
test runs against SQLite and against PostgreSQL with the same expected numbers: the backends must agree. Every time
is passed explicitly. The last test runs `queuectl stats --json` as a subprocess against each backend.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl import jobspec
from queuectl.models import Claim, JobState, Outcome
from queuectl.paths import DB_NAME
from queuectl.store import Store
from queuectl.store.sqlite import SQLiteStore
from tests.helpers import run_proc
from tests.pg import postgres_url, reserve_schema, skip_unless_reachable, url_with_schema

NOW = time.time()
APPROX = 1e-3  # backends may store times with microsecond precision


def job(job_id: str, command: str, *, run_at: float, max_retries: int | None = None) -> Any:
    spec: dict[str, Any] = {"id": job_id, "command": command, "run_at": run_at, "cwd": "/tmp"}
    if max_retries is not None:
        spec["max_retries"] = max_retries
    return jobspec.from_mapping(spec, now=NOW)


def ran(started: float, finished: float, exit_code: int | None = 0, *, timed_out: bool = False) -> Outcome:
    error = None if exit_code == 0 else ("timed out" if timed_out else f"exit code {exit_code}")
    return Outcome(exit_code=exit_code, timed_out=timed_out, error=error, started_at=started, finished_at=finished)


async def start(store: Store, job_id: str, command: str, *, at: float, max_retries: int | None = None) -> Claim:
    """Enqueue a job due at `at` and claim it then (the only due job at that moment)."""
    await store.enqueue([job(job_id, command, run_at=at, max_retries=max_retries)], now=at)
    claims = await store.claim_due("e1", now=at, limit=1)
    assert [c.job.id for c in claims] == [job_id]
    return claims[0]


async def populate(store: Store, a: float) -> None:
    """Attempts finishing at known times after `a` (offsets in seconds):

    ok1 succeeded 1..3 (due 0), ok2 succeeded 10..17 (due 8), flaky failed 20..21 then failed again 31..32 and was
    buried (due 30 by then), slow timed out 40..45, int interrupted 50..58, zed failed 60..61, apple failed 62..63,
    late succeeded 98..100 (due 100: started "before" it was due, a queue wait of 0).
    """
    c = await start(store, "ok1", "echo ok1", at=a)
    assert await store.complete(c, "e1", ran(a + 1, a + 3))
    await store.enqueue([job("ok2", "echo ok2", run_at=a + 8)], now=a + 8)
    c = (await store.claim_due("e1", now=a + 10, limit=1))[0]
    assert await store.complete(c, "e1", ran(a + 10, a + 17))
    c = await start(store, "flaky", "false flaky", at=a + 20, max_retries=1)
    assert await store.schedule_retry(c, "e1", ran(a + 20, a + 21, 1), retry_at=a + 30)
    c = (await store.claim_due("e1", now=a + 30, limit=1))[0]
    assert c.job.id == "flaky" and c.attempt == 2
    assert await store.bury(c, "e1", ran(a + 31, a + 32, 1))
    c = await start(store, "slow", "sleep 9", at=a + 40)
    assert await store.schedule_retry(c, "e1", ran(a + 40, a + 45, None, timed_out=True), retry_at=a + 1000)
    c = await start(store, "zed", "Zed exit 3", at=a + 60)
    assert await store.schedule_retry(c, "e1", ran(a + 60, a + 61, 3), retry_at=a + 1000)
    c = await start(store, "apple", "apple exit 4", at=a + 62)
    assert await store.schedule_retry(c, "e1", ran(a + 62, a + 63, 4), retry_at=a + 1000)
    c = await start(store, "late", "echo late", at=a + 100)
    assert await store.complete(c, "e1", ran(a + 98, a + 100))
    c = await start(store, "int", "echo int", at=a + 50)
    assert await store.release(c, "e1", now=a + 58, reason="stopped")


def approx_list(values: list[float]) -> Any:
    return pytest.approx(values, abs=APPROX)


# ---- stats ---------------------------------------------------------------------------------------------------------


async def test_stats_counts_per_outcome_in_the_window(store: Store) -> None:
    a = NOW
    await populate(store, a)
    row = await store.stats(since=a, until=a + 100)  # `late` finished at the end: not in [since, until)
    assert row.since == a and row.until == a + 100
    assert row.attempts == {"succeeded": 2, "failed": 4, "timed_out": 1, "interrupted": 1}
    assert row.buried == 1  # flaky's second attempt; its first was a retry
    assert row.run_sum_s == pytest.approx(2 + 7 + 1 + 1 + 5 + 1 + 1, abs=APPROX)  # interrupted left out
    assert row.run_max_s == pytest.approx(7, abs=APPROX)  # not the interrupted attempt's 8 s
    # Nothing asked for, nothing read.
    assert (row.run_samples, row.wait_samples, row.top_failing, row.recent_failures, row.series) == ([], [], [], [],
                                                                                                      [])

    row = await store.stats(since=a, until=a + 101)
    assert row.attempts == {"succeeded": 3, "failed": 4, "timed_out": 1, "interrupted": 1}

    # The start is inclusive, the end exclusive: [a + 21, a + 45) holds flaky's two attempts only.
    row = await store.stats(since=a + 21, until=a + 45)
    assert row.attempts == {"failed": 2}
    assert row.buried == 1
    assert row.run_sum_s == pytest.approx(2, abs=APPROX)
    row = await store.stats(since=a + 33, until=a + 46)
    assert row.attempts == {"timed_out": 1} and row.buried == 0
    row = await store.stats(since=a + 50, until=a + 59)
    assert row.attempts == {"interrupted": 1}
    assert row.run_sum_s == 0 and row.run_max_s is None

    row = await store.stats(since=a + 200, until=a + 300, samples=10, bucket_s=10, top=5)
    assert row.attempts == {} and row.buried == 0 and row.run_sum_s == 0 and row.run_max_s is None
    assert (row.run_samples, row.wait_samples, row.top_failing, row.recent_failures, row.series) == ([], [], [], [],
                                                                                                      [])


async def test_stats_empty_store(store: Store) -> None:
    row = await store.stats(since=NOW - 3600, until=NOW, samples=100, bucket_s=60, top=5)
    assert row.attempts == {} and row.buried == 0 and row.run_max_s is None and row.series == []


async def test_stats_samples_newest_first(store: Store) -> None:
    a = NOW
    await populate(store, a)
    row = await store.stats(since=a, until=a + 100, samples=100)
    # Run times of the non-interrupted attempts, newest first: apple, zed, slow, flaky #2, flaky #1, ok2, ok1.
    assert row.run_samples == approx_list([1, 1, 5, 1, 1, 7, 2])
    # Queue waits only of attempts that finished their job (completed or dead): flaky #2, ok2, ok1.
    assert row.wait_samples == approx_list([1, 2, 1])

    row = await store.stats(since=a, until=a + 101, samples=3)
    assert row.run_samples == approx_list([2, 1, 1])  # late, apple, zed
    assert row.wait_samples == approx_list([0, 1, 2])  # late started 2 s before it was due: 0, not -2


async def test_stats_buckets(store: Store) -> None:
    a = NOW
    await populate(store, a)
    row = await store.stats(since=a, until=a + 100, bucket_s=10)
    # Bucket k holds [a + 10k, a + 10k + 10): ok2 finished at +17 is in bucket 1 (the index is truncated, not
    # rounded). The interrupted attempt's bucket is there with no successes nor failures.
    assert [(pytest.approx(start, abs=APPROX), ok, bad) for start, ok, bad in row.series] == [
        (a, 1, 0), (a + 10, 1, 0), (a + 20, 0, 1), (a + 30, 0, 1), (a + 40, 0, 1), (a + 50, 0, 0), (a + 60, 0, 2)]
    row = await store.stats(since=a, until=a + 101, bucket_s=60)
    assert [(pytest.approx(start, abs=APPROX), ok, bad) for start, ok, bad in row.series] == [
        (a, 2, 3), (a + 60, 1, 2)]
    row = await store.stats(since=a + 15, until=a + 35, bucket_s=7.5)
    assert [(pytest.approx(start, abs=APPROX), ok, bad) for start, ok, bad in row.series] == [
        (a + 15, 1, 1), (a + 30, 0, 1)]


async def test_stats_busiest_failing_commands_and_recent_failures(store: Store) -> None:
    a = NOW
    await populate(store, a)
    row = await store.stats(since=a, until=a + 100, top=10)
    # Most failures first; ties by the command's bytes ('Z' < 'a' < 's'), whatever the database's collation.
    assert row.top_failing == [("false flaky", 2), ("Zed exit 3", 1), ("apple exit 4", 1), ("sleep 9", 1)]
    assert [(f.job_id, f.attempt, f.status, f.exit_code, f.command) for f in row.recent_failures] == [
        ("apple", 1, "failed", 4, "apple exit 4"), ("zed", 1, "failed", 3, "Zed exit 3"),
        ("slow", 1, "timed_out", None, "sleep 9"), ("flaky", 2, "failed", 1, "false flaky"),
        ("flaky", 1, "failed", 1, "false flaky")]
    assert row.recent_failures[0].finished_at == pytest.approx(a + 63, abs=APPROX)
    assert row.recent_failures[0].error == "exit code 4"
    assert row.recent_failures[2].error == "timed out"

    row = await store.stats(since=a, until=a + 100, top=2)
    assert row.top_failing == [("false flaky", 2), ("Zed exit 3", 1)]
    assert [f.job_id for f in row.recent_failures] == ["apple", "zed"]
    row = await store.stats(since=a + 30, until=a + 50, top=5)
    assert row.top_failing == [("false flaky", 1), ("sleep 9", 1)]
    assert [(f.job_id, f.attempt) for f in row.recent_failures] == [("slow", 1), ("flaky", 2)]


# ---- search_jobs ---------------------------------------------------------------------------------------------------

SEARCHABLE = [
    ("alpha-1", "echo hello"),
    ("beta-1", "echo alpha beta"),
    ("Alpha-2", "echo upper"),
    ("x-alpha", "echo x"),
    ("alpha-3", "grep -c ALPHA"),
    ("pct_1", "echo 100%"),
    ("pct-2", "echo 100 percent"),
    ("gamma", "printf 'alpha'"),
]


async def enqueue_searchable(store: Store) -> dict[str, int]:
    """The SEARCHABLE jobs, one enqueue each (seq in list order); returns their seqs."""
    for job_id, command in SEARCHABLE:
        await store.enqueue([job(job_id, command, run_at=NOW)], now=NOW)
    return {j.id: j.seq for j in await store.list_jobs(limit=100)}


async def ids(store: Store, **kwargs: Any) -> list[str]:
    return [j.id for j in await store.search_jobs(**kwargs)]


async def test_search_everything_newest_first(store: Store) -> None:
    seqs = await enqueue_searchable(store)
    assert await ids(store) == [i for i, _ in reversed(SEARCHABLE)]
    assert await ids(store, newest_first=False) == [i for i, _ in SEARCHABLE]
    jobs = await store.search_jobs(limit=3)
    assert [j.seq for j in jobs] == sorted((seqs[i] for i, _ in SEARCHABLE), reverse=True)[:3]
    assert jobs[0] == await store.get("gamma")  # whole jobs, as get() returns them


async def test_search_by_id_prefix_or_command_text(store: Store) -> None:
    await enqueue_searchable(store)
    # alpha-1, alpha-3 by id prefix; beta-1, gamma by command; not x-alpha (inside the id), not Alpha-2 / ALPHA (case).
    assert await ids(store, text="alpha") == ["gamma", "alpha-3", "beta-1", "alpha-1"]
    assert await ids(store, text="alpha", newest_first=False) == ["alpha-1", "beta-1", "alpha-3", "gamma"]
    assert await ids(store, text="Alpha") == ["Alpha-2"]
    assert await ids(store, text="alpha-1") == ["alpha-1"]
    assert await ids(store, text="ALPHA") == ["alpha-3"]
    # The text is matched literally: no LIKE wildcards.
    assert await ids(store, text="%") == ["pct_1"]
    assert await ids(store, text="pct_") == ["pct_1"]
    assert await ids(store, text="_") == []
    assert await ids(store, text="nothing like it") == []
    assert await ids(store, text="") == [i for i, _ in reversed(SEARCHABLE)]  # empty text: no filter


async def test_search_by_state(store: Store) -> None:
    await enqueue_searchable(store)
    claims = await store.claim_due("e1", now=NOW, limit=3)
    assert [c.job.id for c in claims] == ["alpha-1", "beta-1", "Alpha-2"]
    assert await store.complete(claims[0], "e1", ran(NOW, NOW + 1))
    assert await store.bury(claims[1], "e1", ran(NOW, NOW + 1, 2))
    assert await ids(store, state=JobState.COMPLETED) == ["alpha-1"]
    assert await ids(store, state=JobState.DEAD) == ["beta-1"]
    assert await ids(store, state=JobState.PROCESSING) == ["Alpha-2"]
    assert await ids(store, state=JobState.FAILED) == []
    assert await ids(store, state=JobState.PENDING, limit=2) == ["gamma", "pct-2"]
    assert await ids(store, state=JobState.PENDING, text="alpha") == ["gamma", "alpha-3"]
    assert await ids(store, state=JobState.DEAD, text="alpha") == ["beta-1"]
    assert await ids(store, state=JobState.DEAD, text="gamma") == []


async def test_search_keyset_paging(store: Store) -> None:
    seqs = await enqueue_searchable(store)
    order = [i for i, _ in reversed(SEARCHABLE)]
    # Older pages with below_seq, from the last row of the previous page.
    pages: list[list[str]] = []
    below: int | None = None
    while True:
        page = await store.search_jobs(below_seq=below, limit=3)
        if not page:
            break
        pages.append([j.id for j in page])
        below = page[-1].seq
    assert pages == [order[0:3], order[3:6], order[6:8]]
    # Newer pages with above_seq, oldest first.
    assert await ids(store, above_seq=seqs["alpha-1"], newest_first=False, limit=2) == ["beta-1", "Alpha-2"]
    assert await ids(store, above_seq=seqs["pct_1"], newest_first=False) == ["pct-2", "gamma"]
    assert await ids(store, above_seq=seqs["gamma"]) == []
    # Both bounds: a seq range; with a text, the search reads only that range.
    assert await ids(store, above_seq=seqs["alpha-1"], below_seq=seqs["pct_1"]) == [
        "alpha-3", "x-alpha", "Alpha-2", "beta-1"]
    assert await ids(store, text="alpha", above_seq=seqs["alpha-1"], below_seq=seqs["gamma"]) == [
        "alpha-3", "beta-1"]
    assert await ids(store, text="alpha", above_seq=seqs["beta-1"], newest_first=False, limit=1) == ["alpha-3"]
    assert await ids(store, text="alpha", below_seq=seqs["alpha-1"]) == []


# ---- `queuectl stats --json` against each backend, end to end ------------------------------------------------------


async def fill(s: Store, a: float) -> None:
    async with s:
        await populate(s, a)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_cli_stats_json(backend: str, home: Path) -> None:
    a = time.time() - 600  # the whole scenario finished within the last hour
    env: dict[str, str] = {}
    s: Store
    if backend == "sqlite":
        home.mkdir(parents=True, exist_ok=True)
        s = SQLiteStore(home / DB_NAME)
    else:
        from queuectl.store.postgres import PostgresStore

        base = postgres_url()
        skip_unless_reachable(base)
        url = url_with_schema(base, reserve_schema(base))
        env["QUEUECTL_DATABASE_URL"] = url
        s = PostgresStore(url)
    asyncio.run(fill(s, a))
    result = run_proc("stats", "--json", "--since", "1h", home=home, env=env)
    assert result.code == 0, result.err
    doc = result.json()
    assert {k: doc[k] for k in ("completed", "failed", "timed_out", "dead", "retries", "interrupted", "sampled")} == {
        "completed": 3, "failed": 4, "timed_out": 1, "dead": 1, "retries": 4, "interrupted": 1, "sampled": False}
    assert doc["window_s"] == pytest.approx(3600, abs=5)
    assert doc["success_rate"] == pytest.approx(3 / 8, abs=1e-3)
    assert doc["run_time_s"]["max"] == pytest.approx(7, abs=APPROX)
    assert doc["run_time_s"]["mean"] == pytest.approx(20 / 8, abs=APPROX)
    assert doc["run_time_s"]["p50"] == pytest.approx(1, abs=APPROX)
    assert doc["queue_wait_s"]["p95"] == pytest.approx(2, abs=APPROX)
    assert doc["top_failing"] == [{"command": "false flaky", "failures": 2}, {"command": "Zed exit 3", "failures": 1},
                                  {"command": "apple exit 4", "failures": 1}, {"command": "sleep 9", "failures": 1}]
    assert [(f["job_id"], f["attempt"], f["status"], f["command"]) for f in doc["recent_failures"]] == [
        ("apple", 1, "failed", "apple exit 4"), ("zed", 1, "failed", "Zed exit 3"),
        ("slow", 1, "timed_out", "sleep 9"), ("flaky", 2, "failed", "false flaky"),
        ("flaky", 1, "failed", "false flaky")]
