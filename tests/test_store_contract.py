"""The Store contract (queuectl/store/base.py): every backend must pass this file unchanged.

Only the Store interface is used here (no SQL), through the `store` fixture, which runs each test against SQLite and
against PostgreSQL (skipped visibly where that backend is not available). Every time is passed explicitly, so the
tests do not depend on the clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from queuectl import jobspec
from queuectl.errors import ConflictError, NotFoundError
from queuectl.models import AttemptStatus, Claim, EngineInfo, Finished, Job, JobState, Outcome
from queuectl.store import Store
from queuectl.store.sqlite import SQLiteStore

NOW = time.time()
APPROX = 1e-3  # backends may store times with microsecond (or millisecond) precision


def t(offset: float = 0.0) -> Any:
    """NOW + offset, compared loosely (for assertions)."""
    return pytest.approx(NOW + offset, abs=APPROX)


def job(job_id: str, *, command: str | None = None, priority: int = 0, run_at: float | None = None,
        max_retries: int | None = None, timeout: float | None = None, cwd: str = "/tmp") -> Any:
    """A validated NewJob, built the way every caller builds one."""
    spec: dict[str, Any] = {"id": job_id, "command": command or f"echo {job_id}", "priority": priority,
                            "run_at": NOW if run_at is None else run_at, "cwd": cwd}
    if max_retries is not None:
        spec["max_retries"] = max_retries
    if timeout is not None:
        spec["timeout"] = timeout
    return jobspec.from_mapping(spec, now=NOW)


def outcome(exit_code: int | None = 0, *, started: float = NOW, took: float = 1.5, timed_out: bool = False,
            error: str | None = None, tail: str = "", log_path: str | None = None) -> Outcome:
    return Outcome(exit_code=exit_code, timed_out=timed_out, error=error, output_tail=tail, log_path=log_path,
                   started_at=started, finished_at=started + took)


def engine(engine_id: str, *, heartbeat_at: float = NOW, workers: int = 2) -> EngineInfo:
    return EngineInfo(id=engine_id, host="testhost", pid=4242, workers=workers, started_at=NOW - 60,
                      heartbeat_at=heartbeat_at)


async def claim_one(store: Store, engine_id: str = "e1", now: float = NOW) -> Claim:
    claims = await store.claim_due(engine_id, now=now, limit=1)
    assert len(claims) == 1, claims
    return claims[0]


async def by_state(store: Store) -> dict[JobState, int]:
    counts = await store.counts(now=NOW)
    return {s: counts.by_state.get(s, 0) for s in JobState}


async def scan_by_state(store: Store) -> dict[JobState, int]:
    """The same numbers by listing every job: what the counters must agree with."""
    return {s: len(await store.list_jobs(state=s, limit=100_000)) for s in JobState}


def expect(**numbers: int) -> dict[JobState, int]:
    return {s: numbers.get(s.value, 0) for s in JobState}


async def snapshot(store: Store) -> tuple[list[Job], dict[JobState, int]]:
    return await store.list_jobs(limit=100_000), await by_state(store)


async def second_instance(store: Store) -> Store:
    """Another store on the same database (another process, in effect): SQLite by its path; a server backend by
    its URL and schema (PostgresStore(url, schema_name=...)); other backends skip."""
    other: Store
    if isinstance(store, SQLiteStore):
        other = SQLiteStore(store.path)
    elif isinstance(getattr(store, "url", None), str) and hasattr(store, "schema_name"):
        other = type(store)(store.url, schema_name=store.schema_name)  # type: ignore[attr-defined,call-arg]
    else:
        pytest.skip(f"a second {type(store).__name__} on the same database is not known to this test")
    await other.open()
    return other


# ---- enqueue ----------------------------------------------------------------------------------------------------


async def test_enqueue_stores_a_pending_job_with_every_field(store: Store) -> None:
    ids = await store.enqueue([job("j1", command="sleep 2", priority=7, run_at=NOW + 30, max_retries=4,
                                   timeout=12.5, cwd="/srv/work")], now=NOW)
    assert ids == ["j1"]
    got = await store.get("j1")
    assert (got.id, got.command, got.state, got.priority, got.max_retries, got.timeout_s, got.cwd) == (
        "j1", "sleep 2", JobState.PENDING, 7, 4, 12.5, "/srv/work")
    assert (got.attempts, got.runs) == (0, 0)
    assert got.run_at == t(30)
    assert got.created_at == t() and got.updated_at == t()
    assert (got.started_at, got.finished_at, got.exit_code, got.last_error, got.engine_id) == (
        None, None, None, None, None)
    assert await store.attempts("j1") == []


async def test_enqueue_keeps_defaults_as_none(store: Store) -> None:
    await store.enqueue([job("j1")], now=NOW)
    got = await store.get("j1")
    assert got.max_retries is None and got.timeout_s is None and got.priority == 0


async def test_enqueue_returns_ids_in_given_order(store: Store) -> None:
    names = ["zeta", "alpha", "mid", "b2", "b1"]
    assert await store.enqueue([job(n) for n in names], now=NOW) == names
    assert {j.id for j in await store.list_jobs()} == set(names)


async def test_enqueue_duplicate_id_is_conflict_naming_it_and_nothing_is_inserted(store: Store) -> None:
    await store.enqueue([job("zzz-existing", command="original")], now=NOW)
    before = await snapshot(store)
    with pytest.raises(ConflictError) as err:
        # The new id sorts first: the error must still name the id that exists, not the one that doesn't.
        await store.enqueue([job("aaa-new"), job("zzz-existing", command="other"), job("mmm-new")], now=NOW + 1)
    assert "zzz-existing" in str(err.value)
    assert "aaa-new" not in str(err.value)
    assert await snapshot(store) == before  # all or nothing: aaa-new and mmm-new were not inserted either
    assert (await store.get("zzz-existing")).command == "original"
    with pytest.raises(NotFoundError):
        await store.get("aaa-new")


async def test_enqueue_large_batch_is_one_transaction(store: Store) -> None:
    await store.enqueue([job("j1700")], now=NOW)
    batch = [job(f"j{i}") for i in range(2000)]  # j1700 clashes near the end, past any chunk boundary
    with pytest.raises(ConflictError):
        await store.enqueue(batch, now=NOW)
    assert await by_state(store) == expect(pending=1)
    batch = [job(f"k{i}") for i in range(2000)]
    await store.enqueue(batch, now=NOW)
    assert await by_state(store) == expect(pending=2001)


async def test_enqueue_replace_overwrites_a_pending_job(store: Store) -> None:
    await store.enqueue([job("j1", command="old", priority=1)], now=NOW)
    ids = await store.enqueue([job("j1", command="new", priority=9, run_at=NOW + 5), job("j2")], now=NOW + 10,
                              replace=True)
    assert ids == ["j1", "j2"]
    got = await store.get("j1")
    assert (got.command, got.priority, got.state) == ("new", 9, JobState.PENDING)
    assert got.run_at == t(5) and got.created_at == t(10)
    assert await by_state(store) == expect(pending=2)


@pytest.mark.parametrize("finish", ["complete", "schedule_retry", "bury"])
async def test_enqueue_replace_overwrites_a_finished_job_as_fresh(store: Store, finish: str) -> None:
    await store.enqueue([job("j1", command="old")], now=NOW)
    claim = await claim_one(store)
    if finish == "complete":
        assert await store.complete(claim, "e1", outcome(0))
    elif finish == "schedule_retry":
        assert await store.schedule_retry(claim, "e1", outcome(1), retry_at=NOW + 100)
    else:
        assert await store.bury(claim, "e1", outcome(1))
    await store.enqueue([job("j1", command="new")], now=NOW + 10, replace=True)
    got = await store.get("j1")
    assert (got.command, got.state, got.attempts, got.finished_at, got.exit_code) == (
        "new", JobState.PENDING, 0, None, None)
    assert await by_state(store) == expect(pending=1)
    fresh = await claim_one(store, now=NOW + 20)
    assert fresh.job.id == "j1" and fresh.job.command == "new"


async def test_enqueue_replace_of_a_processing_job_is_conflict_and_changes_nothing(store: Store) -> None:
    await store.enqueue([job("run"), job("other", command="keep")], now=NOW)
    claim = await claim_one(store)
    assert claim.job.id == "run"
    before = await snapshot(store)
    with pytest.raises(ConflictError) as err:
        await store.enqueue([job("other", command="changed"), job("run", command="changed"), job("new")],
                            now=NOW + 1, replace=True)
    assert "run" in str(err.value)
    assert await snapshot(store) == before
    assert (await store.get("other")).command == "keep"
    assert (await store.get("run")).state == JobState.PROCESSING


# ---- reading ----------------------------------------------------------------------------------------------------


async def test_get_unknown_job_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.get("nope")


async def test_list_jobs_newest_enqueued_first_with_limit_offset_and_state(store: Store) -> None:
    for i in range(5):  # separate transactions, enqueue order j0..j4; run_at deliberately in reverse
        await store.enqueue([job(f"j{i}", run_at=NOW - i)], now=NOW + i)
    assert [j.id for j in await store.list_jobs()] == ["j4", "j3", "j2", "j1", "j0"]
    assert [j.id for j in await store.list_jobs(oldest_first=True)] == ["j0", "j1", "j2", "j3", "j4"]
    assert [j.id for j in await store.list_jobs(limit=2)] == ["j4", "j3"]
    assert [j.id for j in await store.list_jobs(limit=2, offset=2)] == ["j2", "j1"]
    claim = await claim_one(store)
    assert claim.job.id == "j4"  # oldest run_at
    assert [j.id for j in await store.list_jobs(state=JobState.PROCESSING)] == ["j4"]
    assert [j.id for j in await store.list_jobs(state=JobState.PENDING, limit=10)] == ["j3", "j2", "j1", "j0"]
    assert await store.list_jobs(state=JobState.DEAD) == []


async def test_attempts_of_a_job_without_any_is_empty(store: Store) -> None:
    await store.enqueue([job("j1")], now=NOW)
    assert await store.attempts("j1") == []


# ---- claiming ---------------------------------------------------------------------------------------------------


async def test_claim_orders_by_priority_then_run_at_then_enqueue_order(store: Store) -> None:
    await store.enqueue([job("low-old", run_at=NOW - 30)], now=NOW)
    await store.enqueue([job("hi-late", priority=5, run_at=NOW - 10)], now=NOW)
    await store.enqueue([job("hi-early", priority=5, run_at=NOW - 20)], now=NOW)
    await store.enqueue([job("low-old-2", run_at=NOW - 30)], now=NOW)  # same priority and run_at: enqueued later
    await store.enqueue([job("top-future", priority=9, run_at=NOW + 60)], now=NOW)
    await store.enqueue([job("mid", priority=3, run_at=NOW)], now=NOW)
    claims = await store.claim_due("e1", now=NOW, limit=10)
    assert [c.job.id for c in claims] == ["hi-early", "hi-late", "mid", "low-old", "low-old-2"]


async def test_claim_takes_equal_jobs_in_enqueue_order_across_batches(store: Store) -> None:
    await store.enqueue([job(f"a{i:02d}") for i in range(10)], now=NOW)
    await store.enqueue([job(f"b{i:02d}") for i in range(10)], now=NOW)
    got = [c.job.id for c in await store.claim_due("e1", now=NOW, limit=20)]
    assert got == [f"a{i:02d}" for i in range(10)] + [f"b{i:02d}" for i in range(10)]


async def test_claim_marks_the_job_processing_for_that_engine(store: Store) -> None:
    await store.enqueue([job("j1")], now=NOW)
    claim = await claim_one(store, "engine-A", now=NOW + 3)
    assert claim.attempt == 1
    assert claim.job.state == JobState.PROCESSING and claim.job.engine_id == "engine-A"
    got = await store.get("j1")
    assert (got.state, got.engine_id, got.runs, got.attempts) == (JobState.PROCESSING, "engine-A", 1, 0)
    assert got.started_at == t(3)
    assert [j.id for j in await store.running()] == ["j1"]
    assert (await store.running())[0].engine_id == "engine-A"


async def test_claim_respects_run_at(store: Store) -> None:
    await store.enqueue([job("later", run_at=NOW + 10, priority=9)], now=NOW)
    assert await store.claim_due("e1", now=NOW, limit=5) == []
    assert await store.claim_due("e1", now=NOW + 9.9, limit=5) == []
    assert [c.job.id for c in await store.claim_due("e1", now=NOW + 10, limit=5)] == ["later"]


async def test_claim_respects_limit(store: Store) -> None:
    await store.enqueue([job(f"j{i}") for i in range(5)], now=NOW)
    sizes = [len(await store.claim_due("e1", now=NOW, limit=2)) for _ in range(4)]
    assert sizes == [2, 2, 1, 0]
    assert await by_state(store) == expect(processing=5)


async def test_claim_skips_processing_completed_and_dead_jobs(store: Store) -> None:
    await store.enqueue([job("done"), job("gone"), job("busy")], now=NOW)
    c_done, c_gone, _ = await store.claim_due("e1", now=NOW, limit=3)
    assert await store.complete(c_done, "e1", outcome(0))
    assert await store.bury(c_gone, "e1", outcome(1))
    assert await store.claim_due("e2", now=NOW + 1000, limit=10) == []


async def test_failed_job_is_claimed_again_at_its_retry_time_with_the_next_attempt_number(store: Store) -> None:
    await store.enqueue([job("j1")], now=NOW)
    claim = await claim_one(store)
    assert await store.schedule_retry(claim, "e1", outcome(3), retry_at=NOW + 8)
    assert await store.claim_due("e1", now=NOW + 7, limit=1) == []
    again = await claim_one(store, "e2", now=NOW + 8)
    assert again.job.id == "j1" and again.attempt == 2


async def test_concurrent_claims_on_one_store_never_share_a_job(store: Store) -> None:
    await store.enqueue([job(f"j{i:03d}") for i in range(120)], now=NOW)
    results = await asyncio.gather(*(store.claim_due(f"e{n % 4}", now=NOW, limit=7) for n in range(30)))
    ids = [c.job.id for claims in results for c in claims]
    assert len(ids) == 120 and len(set(ids)) == 120
    held = Counter(j.engine_id for j in await store.running())
    expected = Counter(f"e{n % 4}" for n, claims in enumerate(results) for _ in claims)
    assert held == expected


async def test_two_store_instances_claiming_at_once_never_share_a_job(store: Store) -> None:
    other = await second_instance(store)
    try:
        await store.enqueue([job(f"j{i:03d}") for i in range(300)], now=NOW)
        calls = [(store if n % 2 else other).claim_due("A" if n % 2 else "B", now=NOW, limit=5) for n in range(70)]
        results = await asyncio.gather(*calls)
    finally:
        await other.close()
    ids = [c.job.id for claims in results for c in claims]
    assert len(ids) == 300
    assert len(set(ids)) == 300, [i for i, n in Counter(ids).items() if n > 1]
    engines_seen = {c.job.engine_id for claims in results for c in claims}
    assert engines_seen == {"A", "B"}


# ---- finishing attempts ------------------------------------------------------------------------------------------


async def test_complete_records_a_succeeded_attempt(store: Store) -> None:
    await store.enqueue([job("j1")], now=NOW)
    claim = await claim_one(store, now=NOW + 1)
    done = outcome(0, started=NOW + 1, took=2.5, tail="hello\n", log_path="/logs/j1/1.log")
    assert await store.complete(claim, "e1", done) is True
    got = await store.get("j1")
    assert (got.state, got.attempts, got.runs, got.exit_code, got.last_error, got.engine_id) == (
        JobState.COMPLETED, 1, 1, 0, None, None)
    assert got.finished_at == t(3.5)
    [attempt] = await store.attempts("j1")
    assert (attempt.job_id, attempt.number, attempt.status, attempt.engine_id, attempt.exit_code,
            attempt.timed_out, attempt.error, attempt.output_tail, attempt.log_path) == (
        "j1", 1, AttemptStatus.SUCCEEDED, "e1", 0, False, None, "hello\n", "/logs/j1/1.log")
    assert attempt.started_at == t(1) and attempt.finished_at == t(3.5)
    assert attempt.duration_s == pytest.approx(2.5, abs=APPROX)


async def test_schedule_retry_records_a_failed_attempt_and_the_retry_time(store: Store) -> None:
    await store.enqueue([job("j1", max_retries=3)], now=NOW)
    claim = await claim_one(store)
    assert await store.schedule_retry(claim, "e1", outcome(3, error="exit code 3", tail="boom"),
                                      retry_at=NOW + 4) is True
    got = await store.get("j1")
    assert (got.state, got.attempts, got.exit_code, got.last_error, got.finished_at, got.engine_id) == (
        JobState.FAILED, 1, 3, "exit code 3", None, None)
    assert got.run_at == t(4)
    [attempt] = await store.attempts("j1")
    assert (attempt.number, attempt.status, attempt.exit_code, attempt.error, attempt.output_tail) == (
        1, AttemptStatus.FAILED, 3, "exit code 3", "boom")


async def test_a_timed_out_attempt_is_recorded_as_timed_out(store: Store) -> None:
    await store.enqueue([job("j1")], now=NOW)
    claim = await claim_one(store)
    assert await store.schedule_retry(claim, "e1", outcome(None, timed_out=True, error="timed out after 5s"),
                                      retry_at=NOW + 2)
    [attempt] = await store.attempts("j1")
    assert (attempt.status, attempt.timed_out, attempt.exit_code, attempt.error) == (
        AttemptStatus.TIMED_OUT, True, None, "timed out after 5s")


async def test_a_signal_exit_code_is_kept_negative(store: Store) -> None:
    await store.enqueue([job("j1")], now=NOW)
    claim = await claim_one(store)
    assert await store.bury(claim, "e1", outcome(-9, error="killed by SIGKILL"))
    assert (await store.get("j1")).exit_code == -9
    assert (await store.attempts("j1"))[0].exit_code == -9


async def test_bury_moves_the_job_to_dead_with_its_history(store: Store) -> None:
    await store.enqueue([job("j1", max_retries=1)], now=NOW)
    first = await claim_one(store)
    assert await store.schedule_retry(first, "e1", outcome(1, error="exit code 1"), retry_at=NOW + 2)
    second = await claim_one(store, now=NOW + 2)
    assert await store.bury(second, "e1", outcome(2, started=NOW + 2, error="exit code 2")) is True
    got = await store.get("j1")
    assert (got.state, got.attempts, got.runs, got.exit_code, got.last_error) == (
        JobState.DEAD, 2, 2, 2, "exit code 2")
    assert got.finished_at == t(3.5)
    history = await store.attempts("j1")
    assert [(a.number, a.status, a.exit_code) for a in history] == [
        (1, AttemptStatus.FAILED, 1), (2, AttemptStatus.FAILED, 2)]


async def test_release_gives_the_job_back_without_counting_the_attempt(store: Store) -> None:
    await store.enqueue([job("j1", run_at=NOW - 50)], now=NOW)
    claim = await claim_one(store)
    assert await store.release(claim, "e1", now=NOW + 5, reason="engine stopped fast") is True
    got = await store.get("j1")
    assert (got.state, got.attempts, got.engine_id) == (JobState.PENDING, 0, None)
    assert got.run_at == t(5)
    [attempt] = await store.attempts("j1")
    assert (attempt.number, attempt.status, attempt.error, attempt.engine_id) == (
        1, AttemptStatus.INTERRUPTED, "engine stopped fast", "e1")
    assert attempt.finished_at == t(5)
    again = await claim_one(store, "e2", now=NOW + 5)
    assert again.attempt == 2  # the interrupted run has number 1 for good


async def test_release_with_a_due_time_gives_the_job_back_for_later(store: Store) -> None:
    """An engine that could not start a command for want of files or processes gives the job back for later."""
    await store.enqueue([job("j1", run_at=NOW - 50)], now=NOW)
    claim = await claim_one(store)
    assert await store.release(claim, "e1", now=NOW + 1, reason="could not start", run_at=NOW + 4) is True
    got = await store.get("j1")
    assert (got.state, got.attempts, got.engine_id) == (JobState.PENDING, 0, None)
    assert got.run_at == t(4)
    assert await store.claim_due("e1", now=NOW + 3.9, limit=1) == []  # not before its due time
    again = await claim_one(store, "e1", now=NOW + 4)
    assert (again.attempt, again.job.attempts) == (2, 0)


@pytest.mark.parametrize("op", ["complete", "schedule_retry", "bury", "release"])
async def test_finishing_by_the_wrong_engine_returns_false_and_changes_nothing(store: Store, op: str) -> None:
    await store.enqueue([job("j1")], now=NOW)
    claim = await claim_one(store, "owner")
    before = await snapshot(store)
    assert await _finish(store, op, claim, "intruder") is False
    assert await snapshot(store) == before
    assert await store.attempts("j1") == []
    assert await _finish(store, op, claim, "owner") is True


@pytest.mark.parametrize("op", ["complete", "schedule_retry", "bury", "release"])
async def test_finishing_a_stale_attempt_returns_false(store: Store, op: str) -> None:
    await store.enqueue([job("j1")], now=NOW)
    stale = await claim_one(store, "e1")
    assert await store.release(stale, "e1", now=NOW + 1, reason="stop")
    current = await claim_one(store, "e1", now=NOW + 1)  # same engine, newer attempt
    assert current.attempt == 2
    before = await snapshot(store)
    assert await _finish(store, op, stale, "e1") is False
    assert await snapshot(store) == before
    assert [a.number for a in await store.attempts("j1")] == [1]
    assert await _finish(store, op, current, "e1") is True


async def test_finishing_twice_returns_false_the_second_time(store: Store) -> None:
    await store.enqueue([job("j1")], now=NOW)
    claim = await claim_one(store)
    assert await store.complete(claim, "e1", outcome(0)) is True
    assert await store.bury(claim, "e1", outcome(1)) is False
    assert (await store.get("j1")).state == JobState.COMPLETED
    assert len(await store.attempts("j1")) == 1


async def _finish(store: Store, op: str, claim: Claim, engine_id: str) -> bool:
    if op == "complete":
        return await store.complete(claim, engine_id, outcome(0))
    if op == "schedule_retry":
        return await store.schedule_retry(claim, engine_id, outcome(1), retry_at=NOW + 60)
    if op == "bury":
        return await store.bury(claim, engine_id, outcome(1))
    return await store.release(claim, engine_id, now=NOW + 2, reason="test")


async def test_record_ends_each_attempt_as_decided_then_claims_the_next_jobs(store: Store) -> None:
    await store.enqueue([job("ok", priority=9), job("retry", priority=8), job("dead", priority=7),
                         job("gone", priority=6), job("next1", priority=5), job("next2", priority=4),
                         job("later", priority=3)], now=NOW)
    ok, retry, dead, gone = await store.claim_due("e1", now=NOW, limit=4)
    assert [c.job.id for c in (ok, retry, dead, gone)] == ["ok", "retry", "dead", "gone"]
    oks, claims = await store.record("e1", [
        Finished(claim=ok, outcome=outcome(0), state=JobState.COMPLETED),
        Finished(claim=retry, outcome=outcome(1, error="exit code 1"), state=JobState.FAILED, retry_at=NOW + 60),
        Finished(claim=dead, outcome=outcome(1, error="exit code 1"), state=JobState.DEAD),
        Finished(claim=gone, outcome=outcome(None, error="cancelled"), state=JobState.CANCELLED),
    ], now=NOW + 2, claim_limit=2)
    assert oks == [True, True, True, True]
    assert [(c.job.id, c.attempt) for c in claims] == [("next1", 1), ("next2", 1)]
    states = {j.id: j.state for j in await store.list_jobs(limit=100)}
    assert states == {"ok": JobState.COMPLETED, "retry": JobState.FAILED, "dead": JobState.DEAD,
                      "gone": JobState.CANCELLED, "next1": JobState.PROCESSING, "next2": JobState.PROCESSING,
                      "later": JobState.PENDING}
    assert (await store.get("retry")).run_at == t(60)
    assert [a.status for a in await store.attempts("ok")] == [AttemptStatus.SUCCEEDED]
    assert [a.status for a in await store.attempts("gone")] == [AttemptStatus.CANCELLED]
    assert await by_state(store) == await scan_by_state(store)


async def test_record_of_a_claim_taken_over_is_false_and_the_others_are_recorded(store: Store) -> None:
    await store.enqueue([job("mine"), job("taken")], now=NOW)
    mine, taken = await store.claim_due("e1", now=NOW, limit=2)
    assert await store.release(taken, "e1", now=NOW + 1, reason="test")
    await claim_one(store, "e2", now=NOW + 1)  # another engine runs `taken` now
    oks, claims = await store.record("e1", [
        Finished(claim=mine, outcome=outcome(0), state=JobState.COMPLETED),
        Finished(claim=taken, outcome=outcome(0), state=JobState.COMPLETED),
    ], now=NOW + 2, claim_limit=5)
    assert oks == [True, False]
    assert claims == []  # nothing else is due
    assert (await store.get("mine")).state == JobState.COMPLETED
    taken_now = await store.get("taken")
    assert taken_now.state == JobState.PROCESSING and taken_now.engine_id == "e2"


async def test_record_with_nothing_to_claim_or_record_changes_nothing(store: Store) -> None:
    await store.enqueue([job("j1")], now=NOW)
    before = await snapshot(store)
    assert await store.record("e1", [], now=NOW, claim_limit=0) == ([], [])
    assert await snapshot(store) == before


# ---- the dead-letter queue ---------------------------------------------------------------------------------------


async def _dead(store: Store, *ids: str) -> None:
    await store.enqueue([job(i) for i in ids], now=NOW)
    claims = await store.claim_due("e1", now=NOW, limit=len(ids))
    assert {c.job.id for c in claims} == set(ids)
    for claim in claims:
        assert await store.bury(claim, "e1", outcome(1, error="exit code 1"))


async def test_retry_dead_resets_attempts_and_keeps_history(store: Store) -> None:
    await _dead(store, "d1", "d2")
    assert await store.retry_dead(["d1"], now=NOW + 50) == ["d1"]
    got = await store.get("d1")
    assert (got.state, got.attempts, got.finished_at) == (JobState.PENDING, 0, None)
    assert got.run_at == t(50)
    assert (await store.get("d2")).state == JobState.DEAD
    assert [a.status for a in await store.attempts("d1")] == [AttemptStatus.FAILED]
    claim = await claim_one(store, now=NOW + 50)
    assert claim.job.id == "d1" and claim.attempt == 2  # numbering goes on after the kept history
    assert await store.complete(claim, "e1", outcome(0, started=NOW + 50))
    assert [(a.number, a.status) for a in await store.attempts("d1")] == [
        (1, AttemptStatus.FAILED), (2, AttemptStatus.SUCCEEDED)]
    assert (await store.get("d1")).attempts == 1


async def test_retry_dead_all(store: Store) -> None:
    await _dead(store, "d1", "d2", "d3")
    await store.enqueue([job("p1")], now=NOW)
    assert sorted(await store.retry_dead(None, now=NOW + 1)) == ["d1", "d2", "d3"]
    assert await by_state(store) == expect(pending=4)
    assert await store.retry_dead(None, now=NOW + 2) == []


async def test_retry_dead_of_an_unknown_id_is_not_found_and_changes_nothing(store: Store) -> None:
    await _dead(store, "d1")
    before = await snapshot(store)
    with pytest.raises(NotFoundError) as err:
        await store.retry_dead(["d1", "ghost"], now=NOW + 1)
    assert "ghost" in str(err.value)
    assert await snapshot(store) == before


async def test_retry_dead_of_a_job_that_is_not_dead_is_conflict_and_changes_nothing(store: Store) -> None:
    await _dead(store, "d1")
    await store.enqueue([job("p1")], now=NOW)
    before = await snapshot(store)
    with pytest.raises(ConflictError) as err:
        await store.retry_dead(["d1", "p1"], now=NOW + 1)
    assert "p1" in str(err.value)
    assert await snapshot(store) == before


# ---- deleting ---------------------------------------------------------------------------------------------------


async def test_delete_removes_jobs_and_their_attempts(store: Store) -> None:
    await _dead(store, "d1")
    await store.enqueue([job("p1"), job("keep")], now=NOW)
    # Each with its last attempt number (the caller removes the attempts' logs by name), in the order given.
    assert await store.delete(["p1", "d1"]) == {"p1": 0, "d1": 1}
    for gone in ("d1", "p1"):
        with pytest.raises(NotFoundError):
            await store.get(gone)
    assert await by_state(store) == expect(pending=1)
    await store.enqueue([job("d1")], now=NOW + 1)  # the id is free again, with no history
    assert await store.attempts("d1") == []


async def test_delete_unknown_id_is_not_found_and_changes_nothing(store: Store) -> None:
    await store.enqueue([job("p1")], now=NOW)
    before = await snapshot(store)
    with pytest.raises(NotFoundError) as err:
        await store.delete(["p1", "ghost"])
    assert "ghost" in str(err.value)
    assert await snapshot(store) == before


async def test_delete_of_a_processing_job_is_conflict_and_changes_nothing(store: Store) -> None:
    await store.enqueue([job("run"), job("p1")], now=NOW)
    await claim_one(store)
    before = await snapshot(store)
    with pytest.raises(ConflictError) as err:
        await store.delete(["p1", "run"])
    assert "run" in str(err.value)
    assert await snapshot(store) == before


async def test_purge_deletes_only_the_given_terminal_state(store: Store) -> None:
    await _dead(store, "d1")
    await store.enqueue([job("c1"), job("c2"), job("p1")], now=NOW)
    for claim in await store.claim_due("e1", now=NOW, limit=2):
        assert await store.complete(claim, "e1", outcome(0))
    assert await store.purge(JobState.COMPLETED, finished_before=None) == {"c1": 1, "c2": 1}
    assert await by_state(store) == expect(pending=1, dead=1)
    assert await store.purge(JobState.COMPLETED, finished_before=None) == {}
    assert await store.purge(JobState.DEAD, finished_before=None) == {"d1": 1}
    assert await by_state(store) == expect(pending=1)


async def test_purge_older_than_keeps_recently_finished_jobs(store: Store) -> None:
    await store.enqueue([job("old"), job("new")], now=NOW)
    old, new = await store.claim_due("e1", now=NOW, limit=2)
    assert await store.complete(old, "e1", outcome(0, started=NOW - 1000, took=1))
    assert await store.complete(new, "e1", outcome(0, started=NOW, took=1))
    assert await store.purge(JobState.COMPLETED, finished_before=NOW - 500) == {"old": 1}
    assert [j.id for j in await store.list_jobs()] == ["new"]
    with pytest.raises(NotFoundError):
        await store.get("old")


async def test_purge_with_a_limit_deletes_the_oldest_enqueued_first_in_batches(store: Store) -> None:
    await store.enqueue([job(f"c{i}") for i in range(5)] + [job("young")], now=NOW)
    claims = await store.claim_due("e1", now=NOW, limit=6)
    for claim in claims:
        started = NOW if claim.job.id == "young" else NOW - 1000
        assert await store.complete(claim, "e1", outcome(0, started=started, took=1))
    batches = [list(await store.purge(JobState.COMPLETED, finished_before=NOW - 500, limit=2)) for _ in range(4)]
    assert batches == [["c0", "c1"], ["c2", "c3"], ["c4"], []]
    assert [j.id for j in await store.list_jobs()] == ["young"]


# ---- counting and scheduling ---------------------------------------------------------------------------------------


async def test_counts_stay_right_across_every_transition(store: Store) -> None:
    async def check(**numbers: int) -> None:
        assert await by_state(store) == expect(**numbers)
        assert await scan_by_state(store) == expect(**numbers)
        assert (await store.counts(now=NOW)).total == sum(numbers.values())

    await check()
    await store.enqueue([job(f"j{i}") for i in range(8)], now=NOW)
    await check(pending=8)
    c = await store.claim_due("e1", now=NOW, limit=6)
    await check(pending=2, processing=6)
    await store.complete(c[0], "e1", outcome(0))
    await store.schedule_retry(c[1], "e1", outcome(1), retry_at=NOW + 100)
    await store.bury(c[2], "e1", outcome(1))
    await store.release(c[3], "e1", now=NOW, reason="stop")
    await check(pending=3, processing=2, completed=1, failed=1, dead=1)
    await store.complete(c[3], "e1", outcome(0))  # stale: no change
    await check(pending=3, processing=2, completed=1, failed=1, dead=1)
    await store.recover(now=NOW, stale_before=NOW - 30, dead_engine_ids=["e1"])
    await check(pending=5, completed=1, failed=1, dead=1)
    await store.retry_dead(None, now=NOW)
    await check(pending=6, completed=1, failed=1)
    await store.enqueue([job(c[0].job.id, command="again")], now=NOW, replace=True)  # completed -> pending
    await check(pending=7, failed=1)
    await store.delete([c[1].job.id])
    await check(pending=7)
    with pytest.raises(ConflictError):
        await store.enqueue([job("new"), job("j7")], now=NOW)
    await check(pending=7)
    for claim in await store.claim_due("e2", now=NOW, limit=3):
        await store.complete(claim, "e2", outcome(0))
    await check(pending=4, completed=3)
    await store.purge(JobState.COMPLETED, finished_before=None)
    await check(pending=4)


async def test_counts_oldest_pending_age_is_of_the_oldest_due_job(store: Store) -> None:
    assert (await store.counts(now=NOW)).oldest_pending_age_s is None
    await store.enqueue([job("future", run_at=NOW + 100)], now=NOW)
    assert (await store.counts(now=NOW)).oldest_pending_age_s is None
    await store.enqueue([job("due-10", run_at=NOW - 10), job("due-40", run_at=NOW - 40)], now=NOW)
    assert (await store.counts(now=NOW)).oldest_pending_age_s == pytest.approx(40, abs=APPROX)
    await store.delete(["due-40"])
    assert (await store.counts(now=NOW)).oldest_pending_age_s == pytest.approx(10, abs=APPROX)
    await claim_one(store)  # due-10 is running: no longer waiting
    assert (await store.counts(now=NOW)).oldest_pending_age_s is None


async def test_next_due_lists_runnable_jobs_soonest_first(store: Store) -> None:
    await store.enqueue([job("in-30", run_at=NOW + 30), job("in-10", run_at=NOW + 10, priority=1),
                         job("past", run_at=NOW - 5), job("in-20", run_at=NOW + 20), job("run", run_at=NOW - 100)],
                        now=NOW)
    claim = await claim_one(store)
    assert claim.job.id == "run"
    got = await store.next_due(limit=10)
    assert [i for _, i in got] == ["past", "in-10", "in-20", "in-30"]
    assert [r for r, _ in got] == [t(-5), t(10), t(20), t(30)]
    assert [i for _, i in await store.next_due(limit=2)] == ["past", "in-10"]
    assert await store.schedule_retry(claim, "e1", outcome(1), retry_at=NOW + 15)  # failed jobs are due again
    assert [i for _, i in await store.next_due(limit=10)] == ["past", "in-10", "run", "in-20", "in-30"]


async def test_change_token_changes_when_another_connection_commits(store: Store) -> None:
    other = await second_instance(store)
    try:
        token = await store.change_token()
        assert await store.change_token() == token  # nothing happened
        await other.enqueue([job("j1")], now=NOW)
        assert await store.change_token() != token
    finally:
        await other.close()


# ---- config ---------------------------------------------------------------------------------------------------------


async def test_config_set_get_overwrite_and_unset(store: Store) -> None:
    assert await store.config_items() == {}
    await store.config_set("max-retries", "5")
    await store.config_set("backoff-base", "3")
    assert await store.config_items() == {"max-retries": "5", "backoff-base": "3"}
    await store.config_set("max-retries", "7")
    assert await store.config_items() == {"max-retries": "7", "backoff-base": "3"}
    assert await store.config_unset("max-retries") is True
    assert await store.config_unset("max-retries") is False
    assert await store.config_items() == {"backoff-base": "3"}


# ---- engines ---------------------------------------------------------------------------------------------------------


async def test_engine_register_heartbeat_stop_flag_and_deregister(store: Store) -> None:
    await store.register_engine(engine("A", workers=4))
    await store.register_engine(engine("B"))
    engines = {e.id: e for e in await store.engines()}
    assert set(engines) == {"A", "B"}
    a = engines["A"]
    assert (a.host, a.pid, a.workers, a.stop_requested) == ("testhost", 4242, 4, False)
    assert a.started_at == t(-60) and a.heartbeat_at == t()
    assert await store.heartbeat("A", now=NOW + 5) is False
    assert {e.id: e for e in await store.engines()}["A"].heartbeat_at == t(5)
    await store.request_stop(["A"])
    assert await store.heartbeat("A", now=NOW + 6) is True
    assert await store.heartbeat("B", now=NOW + 6) is False
    await store.deregister_engine("A")
    assert await store.heartbeat("A", now=NOW + 7) is None
    assert [e.id for e in await store.engines()] == ["B"]


async def test_registering_again_refreshes_the_row(store: Store) -> None:
    await store.register_engine(engine("A"))
    await store.request_stop(["A"])
    await store.register_engine(engine("A", heartbeat_at=NOW + 10, workers=8))
    [a] = await store.engines()
    assert (a.workers, a.stop_requested) == (8, False)
    assert a.heartbeat_at == t(10)


async def test_recover_gives_back_jobs_of_dead_stale_and_missing_engines(store: Store) -> None:
    await store.register_engine(engine("live", heartbeat_at=NOW))
    await store.register_engine(engine("stale", heartbeat_at=NOW - 120))
    await store.register_engine(engine("dead", heartbeat_at=NOW))
    # "ghost" never registered (or its row is gone): its job is an orphan too.
    await store.enqueue([job(f"of-{e}") for e in ("live", "stale", "dead", "ghost")], now=NOW)
    for e in ("live", "stale", "dead", "ghost"):
        claim = await claim_one(store, e, now=NOW + 1)
        assert claim.job.id == f"of-{e}"
    recovered = await store.recover(now=NOW + 10, stale_before=NOW - 30, dead_engine_ids=["dead"])
    assert sorted(recovered) == ["of-dead", "of-ghost", "of-stale"]
    assert [e.id for e in await store.engines()] == ["live"]
    live = await store.get("of-live")
    assert (live.state, live.engine_id) == (JobState.PROCESSING, "live")
    for e in ("stale", "dead", "ghost"):
        got = await store.get(f"of-{e}")
        assert (got.state, got.attempts, got.engine_id) == (JobState.PENDING, 0, None), e
        assert got.run_at == t(10)
        [attempt] = await store.attempts(f"of-{e}")
        assert (attempt.number, attempt.status, attempt.engine_id, attempt.exit_code) == (
            1, AttemptStatus.INTERRUPTED, e, None)
        assert attempt.started_at == t(1) and attempt.finished_at == t(10)
    assert await by_state(store) == expect(pending=3, processing=1)
    assert await store.recover(now=NOW + 11, stale_before=NOW - 30, dead_engine_ids=[]) == []


async def test_a_recovered_job_runs_again_and_its_old_engine_cannot_finish_it(store: Store) -> None:
    await store.register_engine(engine("old", heartbeat_at=NOW - 1000))
    await store.enqueue([job("j1", max_retries=0)], now=NOW)
    old_claim = await claim_one(store, "old")
    assert await store.recover(now=NOW + 1, stale_before=NOW - 30, dead_engine_ids=[]) == ["j1"]
    new_claim = await claim_one(store, "new", now=NOW + 1)
    assert new_claim.attempt == 2
    assert await store.complete(old_claim, "old", outcome(0)) is False
    assert await store.complete(new_claim, "new", outcome(0, started=NOW + 1)) is True
    got = await store.get("j1")
    assert (got.state, got.attempts, got.runs) == (JobState.COMPLETED, 1, 2)  # the interrupted run is not counted
    assert [(a.number, a.status) for a in await store.attempts("j1")] == [
        (1, AttemptStatus.INTERRUPTED), (2, AttemptStatus.SUCCEEDED)]


async def test_close_is_safe_twice_and_a_reopened_store_sees_the_data(store: Store) -> None:
    await store.enqueue([job("j1")], now=NOW)
    await store.close()
    await store.close()
    await store.open()
    assert (await store.get("j1")).id == "j1"
