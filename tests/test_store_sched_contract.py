"""The Store contract for power scheduling (queuectl/store/base.py): named queues (pause, concurrency), dependencies
(`after`), unique keys, cancellation, tags and env, cron entries and webhooks. Every backend must pass this file.

Like tests/test_store_contract.py: only the Store interface, through the `store` fixture (SQLite and PostgreSQL),
with every time passed explicitly. Not tested here: a negative concurrency, which the API and the CLI refuse before
the store is asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from queuectl import cron, jobspec
from queuectl.errors import ConflictError, NotFoundError
from queuectl.models import AttemptStatus, CronEntry, Finished, JobState
from queuectl.store import Store
from tests.test_store_contract import (
    NOW,
    by_state,
    claim_one,
    engine,
    expect,
    outcome,
    scan_by_state,
    second_instance,
    snapshot,
    t,
)


def job(job_id: str, *, queue: str | None = None, after: Sequence[str] = (), unique_key: str | None = None,
        tags: Sequence[str] = (), env: dict[str, str] | None = None, priority: int = 0,
        run_at: float | None = None, max_retries: int | None = None) -> Any:
    """A validated NewJob with the scheduling fields, built the way every caller builds one."""
    spec: dict[str, Any] = {"id": job_id, "command": f"echo {job_id}", "priority": priority, "cwd": "/tmp",
                            "run_at": NOW if run_at is None else run_at}
    if queue is not None:
        spec["queue"] = queue
    if after:
        spec["after"] = list(after)
    if unique_key is not None:
        spec["unique_key"] = unique_key
    if tags:
        spec["tags"] = list(tags)
    if env is not None:
        spec["env"] = env
    if max_retries is not None:
        spec["max_retries"] = max_retries
    return jobspec.from_mapping(spec, now=NOW)


async def state_of(store: Store, job_id: str) -> JobState:
    return (await store.get(job_id)).state


async def run_to(store: Store, job_id: str, end: str, *, engine_id: str = "e1", now: float = NOW) -> None:
    """Claim job_id (it must be the only one due) and end its attempt: complete, bury or retry."""
    claim = await claim_one(store, engine_id, now)
    assert claim.job.id == job_id, claim
    if end == "complete":
        assert await store.complete(claim, engine_id, outcome(0, started=now))
    elif end == "bury":
        assert await store.bury(claim, engine_id, outcome(1, started=now, error="exit code 1"))
    else:
        assert await store.schedule_retry(claim, engine_id, outcome(1, started=now), retry_at=now + 1000)


async def counters_agree(store: Store) -> None:
    assert await by_state(store) == await scan_by_state(store)


def entry(name: str = "tick", *, schedule: str = "* * * * *", next_run_at: float = NOW - 5, paused: bool = False,
          catch_up: bool = False, queue: str = "default") -> CronEntry:
    return CronEntry(name=name, schedule=schedule, command=f"echo {name}", cwd="/tmp", queue=queue,
                     env={"FROM_CRON": "1"}, paused=paused, catch_up=catch_up, next_run_at=next_run_at,
                     created_at=NOW - 100)


# ---- queues ---------------------------------------------------------------------------------------------------


async def test_enqueue_into_a_named_queue_registers_it_with_counts(store: Store) -> None:
    assert [q.name for q in await store.queues()] == ["default"]
    await store.enqueue([job("m1", queue="mail"), job("m2", queue="mail"), job("d1")], now=NOW)
    await store.enqueue([job("r1", queue="reports", run_at=NOW + 60)], now=NOW)
    claim = await claim_one(store)  # by enqueue order: m1
    assert claim.job.id == "m1" and claim.job.queue == "mail"
    info = {q.name: q for q in await store.queues()}
    assert sorted(info) == ["default", "mail", "reports"]
    assert (info["mail"].runnable, info["mail"].running) == (1, 1)
    assert (info["reports"].runnable, info["reports"].running) == (1, 0)  # due later still counts
    assert (info["default"].runnable, info["default"].running) == (1, 0)
    assert all(q.concurrency == 0 and not q.paused for q in info.values())
    assert (await store.get("m2")).queue == "mail" and (await store.get("d1")).queue == "default"


async def test_queue_add_and_set(store: Store) -> None:
    assert await store.queue_add("batch", concurrency=3)
    assert not await store.queue_add("batch", concurrency=9)  # existed: nothing changes
    assert {q.name: q.concurrency for q in await store.queues()} == {"batch": 3, "default": 0}
    await store.queue_set("batch", concurrency=1)
    await store.queue_set("default", concurrency=4)
    assert {q.name: q.concurrency for q in await store.queues()} == {"batch": 1, "default": 4}


async def test_queue_set_on_unknown_queue_is_not_found_and_changes_nothing(store: Store) -> None:
    await store.queue_add("batch", concurrency=2)
    before = await store.queues()
    with pytest.raises(NotFoundError) as err:
        await store.queue_set("nope", concurrency=5)
    assert "nope" in str(err.value)
    assert await store.queues() == before


async def test_set_paused_returns_what_changed_and_unknown_changes_nothing(store: Store) -> None:
    await store.queue_add("a")
    await store.queue_add("b")
    assert await store.set_paused(["a"], paused=True) == ["a"]
    assert await store.set_paused(["a"], paused=True) == []  # already paused
    with pytest.raises(NotFoundError):
        await store.set_paused(["b", "nope"], paused=True)
    assert {q.name: q.paused for q in await store.queues()} == {"a": True, "b": False, "default": False}
    assert await store.set_paused(None, paused=True) == ["b", "default"]
    assert await store.set_paused(None, paused=False) == ["a", "b", "default"]


async def test_paused_queue_is_not_claimed_and_resumed_is(store: Store) -> None:
    await store.enqueue([job("p1", queue="slow", priority=9), job("d1"), job("p2", queue="slow")], now=NOW)
    await store.set_paused(["slow"], paused=True)
    claims = await store.claim_due("e1", now=NOW, limit=10)
    assert [c.job.id for c in claims] == ["d1"]
    assert await store.claim_due("e1", now=NOW, limit=10) == []
    assert await store.set_paused(["slow"], paused=False) == ["slow"]
    claims = await store.claim_due("e2", now=NOW, limit=10)
    assert [c.job.id for c in claims] == ["p1", "p2"]
    await counters_agree(store)


async def test_queue_concurrency_is_honoured_across_engines(store: Store) -> None:
    await store.queue_add("lim", concurrency=2)
    await store.enqueue([job(f"l{i}", queue="lim", priority=5) for i in range(5)] + [job("d1"), job("d2")], now=NOW)
    first = await store.claim_due("e1", now=NOW, limit=3)
    assert [c.job.id for c in first] == ["l0", "l1", "d1"]  # claim order, the limited queue capped at 2
    second = await store.claim_due("e2", now=NOW, limit=3)
    assert [c.job.id for c in second] == ["d2"]  # lim is full whichever engine asks
    assert await store.claim_due("e2", now=NOW, limit=3) == []
    done = next(c for c in first if c.job.id == "l0")
    assert await store.complete(done, "e1", outcome(0))
    again = await store.claim_due("e2", now=NOW + 2, limit=3)
    assert [c.job.id for c in again] == ["l2"]
    info = {q.name: q for q in await store.queues()}
    assert (info["lim"].running, info["lim"].runnable) == (2, 2)
    await store.queue_set("lim", concurrency=0)  # no limit of its own any more
    assert [c.job.id for c in await store.claim_due("e1", now=NOW + 2, limit=5)] == ["l3", "l4"]


async def test_queue_concurrency_holds_for_concurrent_claims_from_two_stores(store: Store) -> None:
    other = await second_instance(store)
    try:
        await store.queue_add("lim", concurrency=3)
        await store.enqueue([job(f"l{i:02d}", queue="lim") for i in range(40)]
                            + [job(f"d{i:02d}") for i in range(20)], now=NOW)
        calls = [(store if n % 2 else other).claim_due(f"e{n % 2}", now=NOW, limit=4) for n in range(24)]
        results = await asyncio.gather(*calls)
    finally:
        await other.close()
    ids = [c.job.id for claims in results for c in claims]
    assert len(ids) == len(set(ids))
    assert sorted(i for i in ids if i.startswith("l")) == ["l00", "l01", "l02"]
    assert sorted(i for i in ids if i.startswith("d")) == [f"d{i:02d}" for i in range(20)]
    assert sum(1 for j in await store.running() if j.queue == "lim") == 3


async def test_claim_due_with_queues_serves_only_those(store: Store) -> None:
    await store.enqueue([job("a1", queue="a", priority=9), job("b1", queue="b"), job("d1"), job("a2", queue="a")],
                        now=NOW)
    claims = await store.claim_due("e1", now=NOW, limit=10, queues=["b", "default"])
    assert [c.job.id for c in claims] == ["b1", "d1"]
    assert await store.claim_due("e1", now=NOW, limit=10, queues=["b"]) == []
    assert await store.claim_due("e1", now=NOW, limit=10, queues=["unknown"]) == []
    await store.set_paused(["a"], paused=True)
    assert await store.claim_due("e1", now=NOW, limit=10, queues=["a"]) == []
    await store.set_paused(["a"], paused=False)
    assert [c.job.id for c in await store.claim_due("e1", now=NOW, limit=1, queues=["a"])] == ["a1"]


async def test_has_work(store: Store) -> None:
    assert not await store.has_work(now=NOW, served=None)
    await store.enqueue([job("later", run_at=NOW + 60)], now=NOW)
    assert not await store.has_work(now=NOW, served=None)  # pending but not due
    await store.enqueue([job("m1", queue="mail")], now=NOW)
    assert await store.has_work(now=NOW, served=None)
    assert await store.has_work(now=NOW, served=["mail"])
    assert not await store.has_work(now=NOW, served=["default"])
    await store.set_paused(["mail"], paused=True)
    assert not await store.has_work(now=NOW, served=None)
    await store.set_paused(["mail"], paused=False)
    await run_to(store, "m1", "retry")  # failed, a retry scheduled later: still work to wait for
    assert await store.has_work(now=NOW, served=["mail"])
    assert not await store.has_work(now=NOW, served=["default"])


# ---- dependencies ---------------------------------------------------------------------------------------------


async def test_after_an_unknown_job_is_not_found_and_nothing_is_inserted(store: Store) -> None:
    await store.enqueue([job("a")], now=NOW)
    before = await snapshot(store)
    with pytest.raises(NotFoundError) as err:
        await store.enqueue([job("x"), job("b", after=["a", "ghost"])], now=NOW)
    assert "ghost" in str(err.value)
    assert await snapshot(store) == before


async def test_after_a_dead_job_is_conflict(store: Store) -> None:
    await store.enqueue([job("a", max_retries=0)], now=NOW)
    await run_to(store, "a", "bury")
    before = await snapshot(store)
    with pytest.raises(ConflictError) as err:
        await store.enqueue([job("b", after=["a"])], now=NOW)
    assert "'a'" in str(err.value) and "dead" in str(err.value)
    assert await snapshot(store) == before


async def test_fan_in_waits_for_all_three(store: Store) -> None:
    await store.enqueue([job("a"), job("b"), job("c")], now=NOW)
    await store.enqueue([job("d", after=["a", "b", "c"])], now=NOW)
    got = await store.get("d")
    assert (got.state, got.deps_left, got.after) == (JobState.WAITING, 3, ("a", "b", "c"))
    assert await by_state(store) == expect(pending=3, waiting=1)
    claims = await store.claim_due("e1", now=NOW, limit=10)
    assert [c.job.id for c in claims] == ["a", "b", "c"]  # never the waiting one
    for n, claim in enumerate(claims):
        assert await store.complete(claim, "e1", outcome(0, started=NOW + n))
        got = await store.get("d")
        if n < 2:
            assert (got.state, got.deps_left) == (JobState.WAITING, 2 - n)
    assert got.state == JobState.PENDING and got.deps_left == 0
    assert got.run_at >= NOW + 2  # due once its last dependency finished
    assert [c.job.id for c in await store.claim_due("e1", now=NOW + 10, limit=5)] == ["d"]
    await counters_agree(store)


async def test_chain_runs_in_order(store: Store) -> None:
    await store.enqueue([job("a"), job("b", after=["a"]), job("c", after=["b"])], now=NOW)  # one batch
    assert [await state_of(store, i) for i in "abc"] == [JobState.PENDING, JobState.WAITING, JobState.WAITING]
    await run_to(store, "a", "complete")
    assert [await state_of(store, i) for i in "bc"] == [JobState.PENDING, JobState.WAITING]
    await run_to(store, "b", "complete", now=NOW + 10)  # due when a finished (NOW + 1.5)
    assert await state_of(store, "c") == JobState.PENDING
    await run_to(store, "c", "complete", now=NOW + 20)
    await counters_agree(store)


async def test_after_a_completed_job_is_pending_at_once(store: Store) -> None:
    await store.enqueue([job("a")], now=NOW)
    await run_to(store, "a", "complete")
    await store.enqueue([job("b", after=["a"])], now=NOW + 5)
    got = await store.get("b")
    assert (got.state, got.deps_left) == (JobState.PENDING, 0)


async def test_dead_dependency_cancels_dependants_transitively_and_retry_brings_them_back(store: Store) -> None:
    await store.enqueue([job("a", max_retries=0), job("other", run_at=NOW + 12)], now=NOW)
    await store.enqueue([job("b", after=["a"]), job("c", after=["b"]), job("d", after=["other", "c"])], now=NOW)
    await run_to(store, "a", "bury")
    for dependant in "bcd":
        got = await store.get(dependant)
        assert got.state == JobState.CANCELLED, dependant
        assert got.blocked_by == "a"
        assert got.last_error is not None and "a" in got.last_error.split("after ")[1]
        assert got.finished_at is not None
    assert await state_of(store, "other") == JobState.PENDING  # not a dependant
    assert await by_state(store) == expect(pending=1, dead=1, cancelled=3)
    await counters_agree(store)

    assert await store.retry_dead(["a"], now=NOW + 10) == ["a"]
    assert await state_of(store, "a") == JobState.PENDING
    for dependant, left in (("b", 1), ("c", 1), ("d", 2)):
        got = await store.get(dependant)
        assert (got.state, got.deps_left, got.blocked_by, got.finished_at) == (JobState.WAITING, left, None, None)
    await counters_agree(store)
    # ... and they run once their dependencies complete.
    await run_to(store, "a", "complete", now=NOW + 11)
    assert await state_of(store, "b") == JobState.PENDING
    claims = await store.claim_due("e1", now=NOW + 30, limit=5)
    assert sorted(c.job.id for c in claims) == ["b", "other"]
    for c in claims:
        assert await store.complete(c, "e1", outcome(0, started=NOW + 30))
    assert await state_of(store, "c") == JobState.PENDING
    await run_to(store, "c", "complete", now=NOW + 40)
    assert await state_of(store, "d") == JobState.PENDING


async def test_retry_all_dead_revives_their_dependants(store: Store) -> None:
    await store.enqueue([job("a", max_retries=0), job("b", after=["a"])], now=NOW)
    await run_to(store, "a", "bury")
    assert await store.retry_dead(None, now=NOW + 1) == ["a"]
    assert await state_of(store, "b") == JobState.WAITING


async def test_delete_of_a_job_with_waiting_dependants_is_refused(store: Store) -> None:
    await store.enqueue([job("a"), job("b", after=["a"]), job("x")], now=NOW)
    before = await snapshot(store)
    with pytest.raises(ConflictError) as err:
        await store.delete(["x", "a"])
    assert "'a'" in str(err.value) and "'b'" in str(err.value)
    assert await snapshot(store) == before
    assert await store.delete(["b"]) == {"b": 0}  # the dependant may go; then its dependency may too
    assert await store.delete(["a", "x"]) == {"a": 0, "x": 0}


async def test_replace_that_would_make_a_cycle_is_refused(store: Store) -> None:
    await store.enqueue([job("a"), job("b", after=["a"]), job("c", after=["b"])], now=NOW)
    before = await snapshot(store)
    with pytest.raises(ConflictError) as err:
        await store.enqueue([job("a", after=["c"])], now=NOW + 1, replace=True)
    assert "cycle" in str(err.value)
    assert await snapshot(store) == before
    # A replace that adds no cycle is fine, and the dependants keep waiting on the new job.
    await store.enqueue([job("z"), job("a", after=["z"])], now=NOW + 2, replace=True)
    assert await state_of(store, "a") == JobState.WAITING
    await run_to(store, "z", "complete", now=NOW + 3)
    await run_to(store, "a", "complete", now=NOW + 10)
    assert await state_of(store, "b") == JobState.PENDING


# ---- unique keys --------------------------------------------------------------------------------------------------


async def test_unique_key_held_by_an_active_job_is_conflict_naming_it(store: Store) -> None:
    await store.enqueue([job("u1", unique_key="nightly")], now=NOW)
    before = await snapshot(store)
    with pytest.raises(ConflictError) as err:
        await store.enqueue([job("other"), job("u2", unique_key="nightly")], now=NOW)
    assert "u1" in str(err.value) and "nightly" in str(err.value)
    assert await snapshot(store) == before
    with pytest.raises(ConflictError):  # two in one batch
        await store.enqueue([job("v1", unique_key="k"), job("v2", unique_key="k")], now=NOW)
    assert await snapshot(store) == before


async def test_unique_key_if_exists_ignore_returns_the_holder(store: Store) -> None:
    await store.enqueue([job("u1", unique_key="nightly")], now=NOW)
    ids = await store.enqueue([job("new"), job("u2", unique_key="nightly")], now=NOW, if_exists="ignore")
    assert ids == ["new", "u1"]
    with pytest.raises(NotFoundError):
        await store.get("u2")
    ids = await store.enqueue([job("v1", unique_key="k"), job("v2", unique_key="k")], now=NOW, if_exists="ignore")
    assert ids == ["v1", "v1"]
    assert await by_state(store) == expect(pending=3)


async def test_unique_key_is_free_again_once_the_holder_ends(store: Store) -> None:
    await store.enqueue([job("u1", unique_key="nightly")], now=NOW)
    claim = await claim_one(store)
    with pytest.raises(ConflictError):  # processing still holds it
        await store.enqueue([job("u2", unique_key="nightly")], now=NOW)
    assert await store.schedule_retry(claim, "e1", outcome(1), retry_at=NOW + 5)
    with pytest.raises(ConflictError):  # failed (a retry is due) still holds it
        await store.enqueue([job("u2", unique_key="nightly")], now=NOW)
    claim = await claim_one(store, now=NOW + 5)
    assert await store.complete(claim, "e1", outcome(0, started=NOW + 5))
    assert await store.enqueue([job("u2", unique_key="nightly")], now=NOW + 10) == ["u2"]
    assert (await store.get("u2")).unique_key == "nightly"


# ---- cancel -------------------------------------------------------------------------------------------------------


async def test_cancel_pending_waiting_and_failed_jobs_at_once(store: Store) -> None:
    await store.enqueue([job("f"), job("p"), job("w", after=["p"]), job("w2", after=["w"]), job("x")], now=NOW)
    await run_to(store, "f", "retry")
    assert await store.cancel(["p", "f"], now=NOW + 1) == (["p", "f"], [])
    for job_id in ("p", "f"):
        got = await store.get(job_id)
        assert got.state == JobState.CANCELLED and got.finished_at == t(1)
        assert got.last_error is not None and "cancel" in got.last_error
    for job_id in ("w", "w2"):  # its dependants, transitively
        got = await store.get(job_id)
        assert got.state == JobState.CANCELLED and got.blocked_by == "p"
    assert await store.cancel(["x"], now=NOW + 1) == (["x"], [])
    assert await by_state(store) == expect(cancelled=5)
    await counters_agree(store)
    assert await store.claim_due("e1", now=NOW + 2000, limit=10) == []


async def test_cancel_a_waiting_job(store: Store) -> None:
    await store.enqueue([job("a"), job("w", after=["a"])], now=NOW)
    assert await store.cancel(["w"], now=NOW) == (["w"], [])
    assert await state_of(store, "w") == JobState.CANCELLED
    await run_to(store, "a", "complete")
    assert await state_of(store, "w") == JobState.CANCELLED  # stays cancelled


async def test_cancel_of_a_finished_or_unknown_job_changes_nothing(store: Store) -> None:
    await store.enqueue([job("done"), job("p")], now=NOW)
    await run_to(store, "done", "complete")
    before = await snapshot(store)
    with pytest.raises(ConflictError) as err:
        await store.cancel(["p", "done"], now=NOW)
    assert "done" in str(err.value)
    with pytest.raises(NotFoundError):
        await store.cancel(["p", "ghost"], now=NOW)
    assert await snapshot(store) == before
    assert await state_of(store, "p") == JobState.PENDING


@pytest.mark.parametrize("end", ["bury_cancelled", "schedule_retry"])
async def test_cancel_of_a_running_job_is_flagged_for_its_engine(store: Store, end: str) -> None:
    await store.enqueue([job("r"), job("w", after=["r"])], now=NOW)
    claim = await claim_one(store, "e1")
    assert await store.cancel(["r"], now=NOW + 1) == ([], ["r"])
    got = await store.get("r")
    assert got.state == JobState.PROCESSING and got.cancel_requested
    assert await store.cancel_requests("e1") == ["r"]
    assert await store.cancel_requests("e2") == []
    if end == "bury_cancelled":
        assert await store.bury_cancelled(claim, "e1", outcome(-15, started=NOW, error="cancelled"))
    else:  # the engine did not see the flag in time: the failure does not get a retry
        assert await store.schedule_retry(claim, "e1", outcome(1, started=NOW), retry_at=NOW + 5)
    got = await store.get("r")
    assert got.state == JobState.CANCELLED and got.finished_at is not None
    assert [a.status for a in await store.attempts("r")] == [AttemptStatus.CANCELLED]
    assert await state_of(store, "w") == JobState.CANCELLED
    assert await store.cancel_requests("e1") == []
    assert await store.claim_due("e1", now=NOW + 100, limit=5) == []
    await counters_agree(store)


async def test_one_record_round_moves_each_jobs_dependants_and_honours_cancel_requests(store: Store) -> None:
    await store.enqueue([job("a", priority=4), job("b", priority=3), job("c", priority=2), job("d", priority=1),
                         job("wa", after=["a"]), job("wab", after=["a", "b"]), job("wc", after=["c"]),
                         job("wd", after=["d"])], now=NOW)
    a, b, c, d = await store.claim_due("e1", now=NOW, limit=4)
    assert [x.job.id for x in (a, b, c, d)] == ["a", "b", "c", "d"]
    assert await store.cancel(["d"], now=NOW + 1) == ([], ["d"])
    oks, claims = await store.record("e1", [
        Finished(claim=a, outcome=outcome(0, started=NOW), state=JobState.COMPLETED),
        Finished(claim=b, outcome=outcome(0, started=NOW), state=JobState.COMPLETED),
        Finished(claim=c, outcome=outcome(1, started=NOW, error="exit code 1"), state=JobState.DEAD),
        # the engine did not see d's cancel request in time: its failure gets no retry
        Finished(claim=d, outcome=outcome(1, started=NOW), state=JobState.FAILED, retry_at=NOW + 5),
    ], now=NOW + 2, claim_limit=10)
    assert oks == [True, True, True, True]
    assert [x.job.id for x in claims] == ["wa", "wab"]  # both ran after jobs that completed in this round
    states = {x: await state_of(store, x) for x in ("a", "b", "c", "d", "wc", "wd")}
    assert states == {"a": JobState.COMPLETED, "b": JobState.COMPLETED, "c": JobState.DEAD,
                      "d": JobState.CANCELLED, "wc": JobState.CANCELLED, "wd": JobState.CANCELLED}
    assert (await store.get("wc")).blocked_by == "c" and (await store.get("wd")).blocked_by == "d"
    assert [x.status for x in await store.attempts("d")] == [AttemptStatus.CANCELLED]
    assert [x.status for x in await store.attempts("c")] == [AttemptStatus.FAILED]
    await counters_agree(store)


async def test_release_of_a_cancel_requested_job_ends_it_cancelled(store: Store) -> None:
    await store.enqueue([job("r"), job("w", after=["r"])], now=NOW)
    claim = await claim_one(store, "e1")
    await store.cancel(["r"], now=NOW)
    assert await store.release(claim, "e1", now=NOW + 1, reason="engine stopping")
    assert await state_of(store, "r") == JobState.CANCELLED
    assert await state_of(store, "w") == JobState.CANCELLED
    assert await store.claim_due("e1", now=NOW + 2, limit=5) == []
    await counters_agree(store)


async def test_recover_of_a_cancel_requested_job_ends_it_cancelled(store: Store) -> None:
    await store.register_engine(engine("gone"))
    await store.enqueue([job("r"), job("s")], now=NOW)
    claims = await store.claim_due("gone", now=NOW, limit=2)
    assert len(claims) == 2
    await store.cancel(["r"], now=NOW)
    assert sorted(await store.recover(now=NOW + 1, stale_before=NOW - 1, dead_engine_ids=["gone"])) == ["r", "s"]
    assert await state_of(store, "r") == JobState.CANCELLED
    assert await state_of(store, "s") == JobState.PENDING
    await counters_agree(store)


async def test_a_retried_dead_job_forgets_an_old_cancel_request(store: Store) -> None:
    await store.enqueue([job("r", max_retries=0)], now=NOW)
    claim = await claim_one(store, "e1")
    await store.cancel(["r"], now=NOW)
    assert await store.bury(claim, "e1", outcome(1))  # it failed for good before the engine saw the flag
    assert await state_of(store, "r") == JobState.DEAD
    await store.retry_dead(["r"], now=NOW + 5)
    claim = await claim_one(store, "e2", now=NOW + 5)
    assert not claim.job.cancel_requested
    assert await store.cancel_requests("e2") == []


async def test_job_states(store: Store) -> None:
    await store.enqueue([job("a"), job("b", after=["a"])], now=NOW)
    assert await store.job_states(["a", "b", "ghost"]) == {"a": JobState.PENDING, "b": JobState.WAITING}


# ---- tags, env, listing ----------------------------------------------------------------------------------------------


async def test_env_tags_and_after_round_trip(store: Store) -> None:
    await store.enqueue([job("a"), job("b")], now=NOW)
    await store.enqueue([job("j", env={"MODE": "fast", "EMPTY": ""}, tags=["nightly", "db"], after=["b", "a"],
                             queue="etl", unique_key="j-key")], now=NOW)
    got = await store.get("j")
    assert dict(got.env) == {"MODE": "fast", "EMPTY": ""}
    assert got.tags == ("nightly", "db")
    assert got.after == ("b", "a")
    assert (got.queue, got.unique_key, got.deps_left, got.cron, got.cancel_requested) == ("etl", "j-key", 2, None,
                                                                                          False)
    plain = await store.get("a")
    assert (dict(plain.env), plain.tags, plain.after, plain.queue) == ({}, (), (), "default")


async def test_list_jobs_by_tag_and_queue(store: Store) -> None:
    await store.enqueue([job("t1", tags=["red"]), job("t2", tags=["red", "blue"], queue="q"),
                         job("t3", tags=["blue"]), job("t4", queue="q"), job("t5")], now=NOW)
    assert [j.id for j in await store.list_jobs(tag="red")] == ["t2", "t1"]
    assert [j.id for j in await store.list_jobs(tag="blue", oldest_first=True)] == ["t2", "t3"]
    assert [j.id for j in await store.list_jobs(queue="q")] == ["t4", "t2"]
    assert [j.id for j in await store.list_jobs(queue="q", tag="blue")] == ["t2"]
    assert await store.list_jobs(tag="green") == []
    await run_to(store, "t1", "complete")
    assert [j.id for j in await store.list_jobs(tag="red", state=JobState.PENDING)] == ["t2"]
    assert [j.id for j in await store.list_jobs(tag="red", limit=1, offset=1)] == ["t1"]


# ---- cron entries ---------------------------------------------------------------------------------------------------


async def test_cron_add_list_and_duplicate(store: Store) -> None:
    await store.cron_add(entry("b-tick", queue="cronq"))
    await store.cron_add(entry("a-tick"))
    got = await store.crons()
    assert [e.name for e in got] == ["a-tick", "b-tick"]
    assert got[1] == entry("b-tick", queue="cronq")
    assert "cronq" in [q.name for q in await store.queues()]
    with pytest.raises(ConflictError):
        await store.cron_add(entry("a-tick", schedule="0 * * * *"))
    assert await store.crons() == got


async def test_cron_tick_enqueues_one_job_per_due_time_and_advances(store: Store) -> None:
    e = entry(next_run_at=NOW - 5)
    await store.cron_add(e)
    ids, nxt, _ = await store.cron_tick(now=NOW)
    expected_id = cron.job_id("tick", NOW - 5)
    assert ids == [expected_id]
    assert nxt == cron.next_run(e.schedule, NOW) and nxt > NOW
    got = await store.get(expected_id)
    assert (got.command, got.cron, got.state, dict(got.env)) == ("echo tick", "tick", JobState.PENDING,
                                                                 {"FROM_CRON": "1"})
    assert await store.cron_tick(now=NOW) == ([], nxt, {})  # ticked again: nothing due
    (after,) = await store.crons()
    assert after.next_run_at == nxt and after.last_run_at == t() and after.last_job_id == expected_id
    assert await by_state(store) == expect(pending=1)


async def test_cron_tick_with_nothing_due(store: Store) -> None:
    assert await store.cron_tick(now=NOW) == ([], None, {})
    await store.cron_add(entry(next_run_at=NOW + 30))
    assert await store.cron_tick(now=NOW) == ([], NOW + 30, {})
    assert await by_state(store) == expect()


async def test_concurrent_ticks_from_two_stores_enqueue_once(store: Store) -> None:
    await store.cron_add(entry("one", next_run_at=NOW - 1))
    await store.cron_add(entry("two", next_run_at=NOW - 2))
    other = await second_instance(store)
    try:
        results = await asyncio.gather(*((store if n % 2 else other).cron_tick(now=NOW) for n in range(6)))
    finally:
        await other.close()
    ids = [i for got, _, _ in results for i in got]
    assert sorted(ids) == sorted([cron.job_id("one", NOW - 1), cron.job_id("two", NOW - 2)])
    assert await by_state(store) == expect(pending=2)


async def test_cron_tick_skips_missed_runs_unless_catch_up(store: Store) -> None:
    await store.cron_add(entry("skip", next_run_at=NOW - 3600))
    await store.cron_add(entry("catch", next_run_at=NOW - 3600, catch_up=True))
    ids, _, _ = await store.cron_tick(now=NOW)
    assert ids == [cron.job_id("catch", NOW - 3600)]
    for e in await store.crons():
        assert e.next_run_at > NOW  # both advanced past now
    assert await store.cron_tick(now=NOW) == ([], min(e.next_run_at for e in await store.crons()), {})


async def test_cron_tick_puts_off_an_entry_it_cannot_read_and_runs_the_others(store: Store) -> None:
    """A schedule written by a newer queuectl (or a hand-edited row) stopped every entry's tick before."""
    await store.cron_add(entry("odd", schedule="@every 5m"))
    await store.cron_add(entry("tick"))
    enqueued, nxt, unreadable = await store.cron_tick(now=NOW)
    assert enqueued == [cron.job_id("tick", NOW - 5)]
    assert list(unreadable) == ["odd"] and "'@every 5m': unknown macro" in unreadable["odd"]
    crons = {e.name: e for e in await store.crons()}
    assert crons["odd"].next_run_at == t(cron.UNREADABLE_RETRY_S)  # tried again then, not at every tick
    assert (crons["odd"].last_run_at, crons["odd"].last_job_id, crons["odd"].schedule) == (None, None, "@every 5m")
    assert nxt == min(crons["tick"].next_run_at, NOW + cron.UNREADABLE_RETRY_S)
    assert await store.cron_tick(now=NOW) == ([], nxt, {})


async def test_paused_cron_entry_is_not_ticked_and_resume_moves_it_after_now(store: Store) -> None:
    await store.cron_add(entry("p", next_run_at=NOW - 5, paused=True))
    assert await store.cron_tick(now=NOW) == ([], None, {})
    assert await by_state(store) == expect()
    await store.cron_set_paused("p", paused=False, now=NOW + 1000)
    (e,) = await store.crons()
    assert not e.paused and e.next_run_at == cron.next_run(e.schedule, NOW + 1000) and e.next_run_at > NOW + 1000
    assert await store.cron_tick(now=NOW + 1000) == ([], e.next_run_at, {})
    await store.cron_set_paused("p", paused=True, now=NOW + 2000)
    (paused,) = await store.crons()
    assert paused.paused and paused.next_run_at == e.next_run_at
    with pytest.raises(NotFoundError):
        await store.cron_set_paused("ghost", paused=True, now=NOW)


async def test_cron_remove(store: Store) -> None:
    await store.cron_add(entry("gone", next_run_at=NOW - 5))
    (job_id,), _, _ = await store.cron_tick(now=NOW)
    await store.cron_remove("gone")
    assert await store.crons() == []
    assert await state_of(store, job_id) == JobState.PENDING  # the jobs it made stay
    with pytest.raises(NotFoundError):
        await store.cron_remove("gone")


# ---- webhooks -----------------------------------------------------------------------------------------------------


async def test_webhooks_add_list_remove(store: Store) -> None:
    first = await store.webhook_add("https://example.com/a", events=["dead", "failed"], secret="s3", now=NOW)
    second = await store.webhook_add("https://example.com/b", events=["completed"], secret=None, now=NOW + 1)
    assert first != second
    hooks = await store.webhooks()
    assert [(h.id, h.url, h.events, h.secret) for h in hooks] == [
        (first, "https://example.com/a", ("dead", "failed"), "s3"),
        (second, "https://example.com/b", ("completed",), None)]
    assert hooks[1].created_at == t(1)
    await store.webhook_remove(first)
    assert [h.id for h in await store.webhooks()] == [second]
    with pytest.raises(NotFoundError):
        await store.webhook_remove(first)


# ---- two engines at once ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("if_exists", ["error", "ignore"])
async def test_concurrent_enqueues_with_one_unique_key_make_one_job(store: Store, if_exists: str) -> None:
    other = await second_instance(store)
    try:
        for round_ in range(5):
            calls = [(store if n % 2 else other).enqueue([job(f"r{round_}-{n}", unique_key=f"key{round_}")], now=NOW,
                                                         if_exists=if_exists) for n in range(4)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            made = [r for r in results if isinstance(r, list)]
            if if_exists == "error":
                assert len(made) == 1, results
                assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, list)), results
            else:
                assert len(made) == 4 and len({r[0] for r in made}) == 1, results  # everyone gets the one id
    finally:
        await other.close()
    assert await by_state(store) == expect(pending=5)


async def test_a_dependant_enqueued_while_its_dependency_completes_is_never_stranded(store: Store) -> None:
    other = await second_instance(store)
    try:
        for n in range(15):
            await store.enqueue([job(f"dep{n}")], now=NOW)
            claim = await claim_one(store)
            await asyncio.gather(other.enqueue([job(f"w{n}", after=[f"dep{n}"])], now=NOW),
                                 store.complete(claim, "e1", outcome(0)))
            got = await store.get(f"w{n}")
            assert (got.state, got.deps_left) == (JobState.PENDING, 0), got
            assert await store.claim_due("e1", now=NOW + 10, limit=5) != []
    finally:
        await other.close()


async def test_queue_and_cron_changes_change_the_token_for_other_connections(store: Store) -> None:
    other = await second_instance(store)
    try:
        await store.enqueue([job("r")], now=NOW)
        claim = await claim_one(store)
        await store.cron_add(entry("c"))
        changes = [
            lambda: other.set_paused(["default"], paused=True),
            lambda: other.set_paused(["default"], paused=False),
            lambda: other.queue_set("default", concurrency=3),
            lambda: other.cancel(["r"], now=NOW),
            lambda: other.cron_add(entry("d")),
            lambda: other.cron_set_paused("c", paused=True, now=NOW),
        ]
        for change in changes:
            token = await store.change_token()
            await change()
            assert await store.change_token() != token, change
        assert await store.cancel_requests("e1") == [claim.job.id]
    finally:
        await other.close()


async def test_queue_cancel_and_cron_changes_wake_subscribers(store: Store) -> None:
    from queuectl.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        pytest.skip("SQLite pushes no changes (engines on one machine are woken by the API's datagram)")
    other = await second_instance(store)
    woken = asyncio.Event()
    try:
        await other.enqueue([job("r", max_retries=0), job("p")], now=NOW)
        claim = await claim_one(other)
        assert await other.bury(claim, "e1", outcome(1))
        claim = await claim_one(other)  # p, running
        await other.set_paused(["default"], paused=True)
        await other.cron_add(entry("c", paused=True))
        await store.subscribe(woken.set)
        changes = [
            lambda: other.set_paused(["default"], paused=False),
            lambda: other.queue_set("default", concurrency=2),
            lambda: other.cancel(["p"], now=NOW),
            lambda: other.retry_dead(["r"], now=NOW),
            lambda: other.cron_add(entry("d")),
            lambda: other.cron_set_paused("c", paused=False, now=NOW),
        ]
        for change in changes:
            woken.clear()
            await change()
            await asyncio.wait_for(woken.wait(), timeout=10)
    finally:
        await other.close()
