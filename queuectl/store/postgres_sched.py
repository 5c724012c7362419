"""PostgreSQL operations beyond one plain queue: enqueue with dependencies and unique keys, claims from paused or
limited queues, what a job's end does to its dependants, and (PostgresSched, a base of PostgresStore) named queues,
cancellation, cron entries and webhooks.

The functions take a connection inside the caller's transaction, so that a dependant's state never disagrees with
its dependency's. Race rules (READ COMMITTED):

- enqueue locks the jobs it runs after FOR SHARE: a dependency's end (an UPDATE of its row) waits for the enqueue to
  commit and its follow-up statement then sees the new dependant, or the enqueue sees the end;
- claimers of a limited queue lock its `queues` row FOR UPDATE, then count its running jobs in a later statement,
  which sees every claim committed before the lock was granted;
- cron_tick takes due entries FOR UPDATE SKIP LOCKED and re-checks next_run_at, so a due time is ticked once; the
  job id is cron.plan's deterministic one and inserted with ON CONFLICT DO NOTHING besides.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Sequence

import psycopg
from psycopg.abc import Params
from psycopg.rows import DictRow

from queuectl import cron
from queuectl.errors import ConflictError, NotFoundError
from queuectl.jobspec import NewJob
from queuectl.models import CronEntry, CronTick, JobState, QueueInfo, Webhook
from queuectl.store import postgres_schema as schema
from queuectl.store import rules
from queuectl.store.base import Store
from queuectl.store.postgres_schema import Query

Conn = psycopg.AsyncConnection[DictRow]

#: States in which a job holds its unique key (models.ACTIVE_STATES).
ACTIVE = "('pending', 'waiting', 'failed', 'processing')"
_CANCELLED_BY_USER = "cancelled by `queuectl cancel`"


async def _all(conn: Conn, query: Query, params: Params | None = None) -> list[DictRow]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def wake(conn: Conn, channel: str) -> None:
    """Wake every engine at commit (NOTIFY) and change the change token, as a job becoming pending does."""
    await conn.execute(
        "WITH bump AS (UPDATE counters SET changes = changes + 1 WHERE slot = pg_backend_pid() %% %(slots)s) "
        "SELECT pg_notify(%(channel)s, '')", {"slots": schema.COUNTER_SLOTS, "channel": channel})


async def lock_states(conn: Conn, ids: Sequence[str]) -> dict[str, str]:
    """States of the given jobs that exist, each row locked until the end of the transaction."""
    rows = await _all(conn, "SELECT id, state FROM jobs WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (list(ids),))
    return {r["id"]: r["state"] for r in rows}


# ---- enqueue ----------------------------------------------------------------------------------------------------


def _json(value: object) -> str | None:
    return json.dumps(value) if value else None


async def _insert(conn: Conn, jobs: Sequence[NewJob], now: float, states: Sequence[str],
                  deps_left: Sequence[int]) -> dict[str, int]:
    """Insert the rows (skipping an id that exists or a unique key an active job holds). Returns id -> seq."""
    if not jobs:
        return {}
    rows = await _all(conn, schema.ENQUEUE, {
        "now": now, "ids": [j.id for j in jobs], "commands": [j.command for j in jobs],
        "max_retries": [j.max_retries for j in jobs], "priorities": [j.priority for j in jobs],
        "run_ats": [j.run_at for j in jobs], "timeouts": [j.timeout_s for j in jobs], "cwds": [j.cwd for j in jobs],
        "queues": [j.queue for j in jobs], "keys": [j.unique_key for j in jobs],
        "envs": [_json(dict(j.env)) for j in jobs], "tags": [_json(list(j.tags)) for j in jobs],
        "afters": [_json(list(j.after)) for j in jobs], "states": list(states), "deps_left": list(deps_left),
        "crons": [j.cron for j in jobs],
    })
    return {r["id"]: int(r["seq"]) for r in rows}


def first_duplicate(ids: Sequence[str]) -> str:
    seen: set[str] = set()
    for job_id in ids:
        if job_id in seen:
            return job_id
        seen.add(job_id)
    return "?"


def _id_taken(ids: Sequence[str], inserted: Collection[str]) -> ConflictError:
    taken = next((i for i in ids if i not in inserted), None) or first_duplicate(ids)
    return ConflictError(f"job {taken!r} already exists (use --replace to overwrite it)")


def _key_taken(key: str, holder: str, state: str) -> ConflictError:
    return ConflictError(f"job {holder!r} with unique key {key!r} is still {state} "
                         "(--if-exists ignore returns its id instead)")


async def enqueue(conn: Conn, jobs: Sequence[NewJob], now: float, replace: bool, if_exists: str) -> list[str]:
    """Store.enqueue, in one transaction on conn."""
    ids = [j.id for j in jobs]
    if not ids:
        return []
    async with conn.transaction():
        if replace:
            await _delete_for_replace(conn, jobs)
        if all(j.queue == "default" and not (j.after or j.unique_key or j.tags) for j in jobs):
            inserted = await _insert(conn, jobs, now, ["pending"] * len(jobs), [0] * len(jobs))  # one statement
            if len(inserted) < len(jobs):
                raise _id_taken(ids, inserted)
            return ids
        return await _enqueue_rich(conn, jobs, now, if_exists)


async def _enqueue_rich(conn: Conn, jobs: Sequence[NewJob], now: float, if_exists: str) -> list[str]:
    deps = sorted({d for j in jobs for d in j.after})
    dep_states = {r["id"]: r["state"] for r in await _all(
        conn, "SELECT id, state FROM jobs WHERE id = ANY(%s) ORDER BY id FOR SHARE", (deps,))} if deps else {}
    keys = sorted({j.unique_key for j in jobs if j.unique_key is not None})
    holders: dict[str, tuple[str, str]] = {r["unique_key"]: (r["id"], r["state"]) for r in await _all(
        conn, f"SELECT id, state, unique_key FROM jobs WHERE unique_key = ANY(%s) AND state IN {ACTIVE}",
        (keys,))} if keys else {}
    result: list[str] = []
    new: list[NewJob] = []
    states: list[str] = []
    lefts: list[int] = []
    batch: dict[str, str] = {}  # the jobs of this batch so far (a job may run after an earlier one)
    for job in jobs:
        if job.unique_key is not None and job.unique_key in holders:
            if if_exists == "ignore":
                result.append(holders[job.unique_key][0])
                continue
            raise _key_taken(job.unique_key, *holders[job.unique_key])
        known = {d: s for d in job.after if (s := batch.get(d, dep_states.get(d))) is not None}
        left = rules.deps_left(job.id, job.after, known)
        state = "waiting" if left else "pending"
        if job.unique_key is not None:
            holders[job.unique_key] = (job.id, state)
        batch[job.id] = state
        new.append(job)
        states.append(state)
        lefts.append(left)
        result.append(job.id)
    inserted = await _insert(conn, new, now, states, lefts)
    for job in new:
        if job.id in inserted:
            continue
        # Skipped: its id exists, or another engine's job took its unique key since we looked.
        holder = None
        if job.unique_key is not None:
            found = await _all(conn, f"SELECT id, state FROM jobs WHERE unique_key = %s AND state IN {ACTIVE} "
                               "AND id <> %s", (job.unique_key, job.id))
            holder = found[0] if found else None
        if holder is None:
            raise _id_taken([j.id for j in new], inserted)
        assert job.unique_key is not None
        if if_exists != "ignore" or any(job.id in other.after for other in new):
            raise _key_taken(job.unique_key, holder["id"], holder["state"])
        result[result.index(job.id)] = holder["id"]
    pairs = [(d, inserted[j.id]) for j in new if j.id in inserted for d in j.after]
    if pairs:
        await conn.execute("INSERT INTO job_deps (dep_id, job_seq) SELECT * FROM unnest(%s::text[], %s::bigint[])",
                           ([d for d, _ in pairs], [s for _, s in pairs]))
    await conn.execute("INSERT INTO queues (name) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                       (list(dict.fromkeys(j.queue for j in new)),))
    return result


async def _delete_for_replace(conn: Conn, jobs: Sequence[NewJob]) -> None:
    existing = await lock_states(conn, [j.id for j in jobs])
    busy = [i for i in existing if existing[i] == JobState.PROCESSING]
    if busy:
        raise ConflictError(f"job {busy[0]!r} is running and cannot be replaced")
    for job in jobs:
        if job.id in existing and job.after and await _reaches(conn, job.after, job.id):
            raise ConflictError(f"job {job.id!r} cannot run after {', '.join(job.after)}: they already run after "
                                f"it (a dependency cycle)")
    if existing:
        await conn.execute("DELETE FROM jobs WHERE id = ANY(%s)", (list(existing),))


async def _reaches(conn: Conn, start: Sequence[str], target: str) -> bool:
    """Whether `target` is among the jobs that `start` run after, directly or through others."""
    rows = await _all(conn, """
        WITH RECURSIVE up (id) AS (
            SELECT unnest(%(start)s::text[])
            UNION
            SELECT d.dep_id FROM up JOIN jobs j ON j.id = up.id JOIN job_deps d ON d.job_seq = j.seq)
        SELECT EXISTS (SELECT 1 FROM up WHERE id = %(target)s) AS found""", {"start": list(start), "target": target})
    return bool(rows[0]["found"])


# ---- claiming from paused or limited queues -----------------------------------------------------------------------


async def claim_restricted(
    conn: Conn, engine_id: str, now: float, limit: int, queues: Collection[str] | None
) -> list[DictRow]:
    """Claim from the queues this engine may start jobs from now: not paused, below their concurrency (counted
    over every engine), among `queues` if given. One transaction."""
    async with conn.transaction():
        if queues is None:
            rows = await _all(conn, "SELECT name, concurrency, paused FROM queues")
            names = [r["name"] for r in rows]
        else:
            names = list(dict.fromkeys(queues))
            rows = await _all(conn, "SELECT name, concurrency, paused FROM queues WHERE name = ANY(%s)", (names,))
        info = {r["name"]: (int(r["concurrency"]), bool(r["paused"])) for r in rows}
        limited = sorted(n for n in names if n in info and not info[n][1] and info[n][0] > 0)
        running: dict[str, int] = {}
        if limited:
            # Claimers of a limited queue take turns (the lock is held to commit); the count, a later statement,
            # sees every claim committed before the lock was granted.
            rows = await _all(conn, "SELECT name, concurrency, paused FROM queues WHERE name = ANY(%s) "
                              "ORDER BY name FOR UPDATE", (limited,))
            info.update({r["name"]: (int(r["concurrency"]), bool(r["paused"])) for r in rows})
            running = {r["queue"]: int(r["n"]) for r in await _all(
                conn, "SELECT queue, count(*) AS n FROM jobs WHERE state = 'processing' AND queue = ANY(%s) "
                "GROUP BY queue", (limited,))}
        served: list[str] = []
        rooms: list[int] = []
        for name in names:
            concurrency, paused = info.get(name, (0, False))
            if paused:
                continue
            room = limit if concurrency <= 0 else min(limit, concurrency - running.get(name, 0))
            if room > 0:
                served.append(name)
                rooms.append(room)
        if not served:
            return []
        return await _all(conn, schema.CLAIM_QUEUES, {"engine": engine_id, "now": now, "limit": limit,
                                                      "names": served, "rooms": rooms})


# ---- dependants -------------------------------------------------------------------------------------------------


async def follow_end(conn: Conn, job_id: str, state: str, now: float) -> None:
    """What a job's end (or cancellation) does to the jobs waiting on it."""
    if state == JobState.COMPLETED:
        await promote(conn, job_id, now)
    elif state in (JobState.DEAD, JobState.CANCELLED):
        await cancel_dependants(conn, job_id, state, now)


async def promote(conn: Conn, dep_id: str, now: float) -> None:
    """dep_id completed: one dependency fewer for each waiting dependant; those with none left become pending."""
    await conn.execute(
        """UPDATE jobs SET deps_left = deps_left - 1,
                  state = CASE WHEN deps_left <= 1 THEN 'pending' ELSE state END,
                  run_at = CASE WHEN deps_left <= 1 THEN greatest(run_at, %(now)s) ELSE run_at END,
                  updated_at = CASE WHEN deps_left <= 1 THEN %(now)s ELSE updated_at END
            WHERE seq IN (SELECT job_seq FROM job_deps WHERE dep_id = %(dep)s) AND state = 'waiting'""",
        {"now": now, "dep": dep_id})


async def cancel_dependants(conn: Conn, root_id: str, ended: str, now: float) -> list[str]:
    """root_id ended dead or cancelled: every job waiting on it, directly or through others, is cancelled and
    remembers root_id (blocked_by), so that retrying root_id brings them back. One statement per level."""
    cancelled: list[str] = []
    frontier = [root_id]
    while frontier:
        rows = await _all(conn, """
            UPDATE jobs SET state = 'cancelled', blocked_by = %(root)s, finished_at = %(now)s, updated_at = %(now)s,
                   last_error = 'not run: it runs after ' || %(root)s
                                || CASE WHEN d.dep_id = %(root)s THEN '' ELSE ' through ' || d.dep_id END
                                || ', which ended ' || %(ended)s
              FROM job_deps d
             WHERE d.job_seq = jobs.seq AND d.dep_id = ANY(%(frontier)s) AND jobs.state = 'waiting'
            RETURNING jobs.id""", {"root": root_id, "now": now, "ended": str(ended), "frontier": frontier})
        frontier = [r["id"] for r in rows]
        cancelled += frontier
    return cancelled


async def revive_dependants(conn: Conn, root_ids: Sequence[str], now: float) -> list[str]:
    """root_ids are runnable again (dlq retry): the jobs they cancelled wait again for what has not completed.
    A dependency that was deleted meanwhile counts as done."""
    if not root_ids:
        return []
    rows = await _all(conn, """
        UPDATE jobs SET state = CASE WHEN l.n > 0 THEN 'waiting' ELSE 'pending' END, deps_left = l.n,
               blocked_by = NULL, last_error = NULL, finished_at = NULL, run_at = greatest(jobs.run_at, %(now)s),
               updated_at = %(now)s
          FROM (SELECT b.seq, (SELECT count(*) FROM job_deps d JOIN jobs x ON x.id = d.dep_id
                                WHERE d.job_seq = b.seq AND x.state <> 'completed') AS n
                  FROM jobs b WHERE b.blocked_by = ANY(%(roots)s) AND b.state = 'cancelled') l
         WHERE jobs.seq = l.seq
        RETURNING jobs.id""", {"roots": list(root_ids), "now": now})
    return [r["id"] for r in rows]


async def waiting_dependant(conn: Conn, ids: Sequence[str]) -> tuple[str, str] | None:
    """(one of ids, a job waiting on it), if any: what refuses a delete."""
    rows = await _all(conn, """SELECT d.dep_id, j.id FROM job_deps d JOIN jobs j ON j.seq = d.job_seq
                               WHERE d.dep_id = ANY(%s) AND j.state = 'waiting' LIMIT 1""", (list(ids),))
    return (rows[0]["dep_id"], rows[0]["id"]) if rows else None


# ---- queues, cancellation, cron entries, webhooks ------------------------------------------------------------------


class PostgresSched(Store):
    """The Store methods of this module, for PostgresStore (which provides the connections)."""

    _channel: str

    def _conn(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        raise NotImplementedError

    async def _rows(self, query: Query, params: Params | None = None) -> list[DictRow]:
        raise NotImplementedError

    async def _exec(self, query: Query, params: Params | None = None) -> int:
        raise NotImplementedError

    async def queues(self, *, count_runnable: bool = True) -> list[QueueInfo]:
        runnable = ("""(SELECT count(*) FROM jobs j WHERE j.queue = q.name AND j.state IN ('pending', 'failed'))"""
                    if count_runnable else "NULL")
        rows = await self._rows(f"""
            SELECT q.name, q.concurrency, q.paused, {runnable} AS runnable,
                   (SELECT count(*) FROM jobs j WHERE j.queue = q.name AND j.state = 'processing') AS running
              FROM queues q ORDER BY q.name COLLATE "C" """)
        return [QueueInfo.from_row(r) for r in rows]

    async def queue_add(self, name: str, *, concurrency: int = 0) -> bool:
        return await self._exec("INSERT INTO queues (name, concurrency) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                                (name, concurrency)) > 0

    async def queue_set(self, name: str, *, concurrency: int) -> None:
        async with self._conn() as conn, conn.transaction():
            rows = await _all(conn, "UPDATE queues SET concurrency = %s WHERE name = %s RETURNING name",
                              (concurrency, name))
            if not rows:
                raise await _no_queue(conn, name)
            await wake(conn, self._channel)

    async def set_paused(self, names: Sequence[str] | None, *, paused: bool) -> list[str]:
        async with self._conn() as conn, conn.transaction():
            if names is None:
                rows = await _all(conn, "SELECT name, paused FROM queues ORDER BY name FOR UPDATE")
            else:
                rows = await _all(conn, "SELECT name, paused FROM queues WHERE name = ANY(%s) ORDER BY name "
                                  "FOR UPDATE", (list(names),))
                known = {r["name"] for r in rows}
                unknown = next((n for n in names if n not in known), None)
                if unknown is not None:
                    raise await _no_queue(conn, unknown)
            changed = sorted(r["name"] for r in rows if bool(r["paused"]) != paused)
            if changed:
                await conn.execute("UPDATE queues SET paused = %s WHERE name = ANY(%s)", (paused, changed))
                await wake(conn, self._channel)
        return changed

    async def has_work(self, *, now: float, served: Collection[str] | None) -> bool:
        rows = await self._rows("""
            SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('pending', 'failed')
                              AND (state = 'failed' OR run_at <= %(now)s)
                              AND queue IN (SELECT name FROM queues WHERE NOT paused
                                               AND (%(served)s::text[] IS NULL OR name = ANY(%(served)s::text[]))))
                   AS work""", {"now": now, "served": None if served is None else list(served)})
        return bool(rows[0]["work"])

    async def cancel(self, job_ids: Sequence[str], *, now: float) -> tuple[list[str], list[str]]:
        ids = list(job_ids)
        async with self._conn() as conn, conn.transaction():
            done, running = rules.split_cancellable(ids, await lock_states(conn, ids))
            if done:
                await conn.execute("""UPDATE jobs SET state = 'cancelled', finished_at = %(now)s, updated_at = %(now)s,
                                             last_error = %(why)s WHERE id = ANY(%(ids)s)""",
                                   {"now": now, "why": _CANCELLED_BY_USER, "ids": done})
                for job_id in done:
                    await cancel_dependants(conn, job_id, JobState.CANCELLED, now)
            if running:
                await conn.execute("UPDATE jobs SET cancel_requested = true, last_error = %s WHERE id = ANY(%s)",
                                   (_CANCELLED_BY_USER, running))
            if ids:
                await wake(conn, self._channel)
        return done, running

    async def cancel_requests(self, engine_id: str) -> list[str]:
        rows = await self._rows("SELECT id FROM jobs WHERE engine_id = %s AND cancel_requested AND "
                                "state = 'processing' ORDER BY seq", (engine_id,))
        return [r["id"] for r in rows]

    async def job_states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        rows = await self._rows("SELECT id, state FROM jobs WHERE id = ANY(%s)", (list(job_ids),))
        return {r["id"]: JobState(r["state"]) for r in rows}

    async def cron_add(self, entry: CronEntry) -> None:
        e = entry
        async with self._conn() as conn, conn.transaction():
            rows = await _all(conn, """
                INSERT INTO crons (name, schedule, command, cwd, queue, priority, max_retries, timeout_s, env, paused,
                                   catch_up, next_run_at, created_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s)
                ON CONFLICT (name) DO NOTHING RETURNING name""",
                (e.name, e.schedule, e.command, e.cwd, e.queue, e.priority, e.max_retries, e.timeout_s,
                 _json(dict(e.env)), e.paused, e.catch_up, e.next_run_at, e.created_at))
            if not rows:
                raise ConflictError(f"cron entry {e.name!r} already exists (remove it first)")
            await conn.execute("INSERT INTO queues (name) VALUES (%s) ON CONFLICT DO NOTHING", (e.queue,))
            await wake(conn, self._channel)

    async def crons(self) -> list[CronEntry]:
        return [CronEntry.from_row(r) for r in await self._rows('SELECT * FROM crons ORDER BY name COLLATE "C"')]

    async def cron_remove(self, name: str) -> None:
        if await self._exec("DELETE FROM crons WHERE name = %s", (name,)) == 0:
            raise NotFoundError(f"no cron entry {name!r}")

    async def cron_set_paused(self, name: str, *, paused: bool, now: float) -> None:
        async with self._conn() as conn, conn.transaction():
            rows = await _all(conn, "SELECT schedule, paused, next_run_at FROM crons WHERE name = %s FOR UPDATE",
                              (name,))
            if not rows:
                raise NotFoundError(f"no cron entry {name!r}")
            row = rows[0]
            # Resuming starts from now: the runs skipped while paused are not made up.
            next_run_at = cron.next_run(row["schedule"], now) if not paused and row["paused"] else row["next_run_at"]
            await conn.execute("UPDATE crons SET paused = %s, next_run_at = %s WHERE name = %s",
                               (paused, next_run_at, name))
            await wake(conn, self._channel)

    async def cron_tick(self, *, now: float) -> CronTick:
        enqueued: list[str] = []
        unreadable: dict[str, str] = {}
        async with self._conn() as conn, conn.transaction():
            due = await _all(conn, "SELECT * FROM crons WHERE NOT paused AND next_run_at <= %s ORDER BY name "
                             "FOR UPDATE SKIP LOCKED", (now,))
            for row in due:
                plan, why = cron.plan_row(row, now)
                if why is not None:
                    unreadable[row["name"]] = why
                if plan.job is not None and await _insert(conn, [plan.job], now, ["pending"], [0]):
                    enqueued.append(plan.job.id)
                    await conn.execute("INSERT INTO queues (name) VALUES (%s) ON CONFLICT DO NOTHING",
                                       (plan.job.queue,))
                await conn.execute(
                    """UPDATE crons SET next_run_at = %s, last_run_at = coalesce(%s, last_run_at),
                              last_job_id = coalesce(%s, last_job_id) WHERE name = %s""",
                    (plan.next_run_at, None if plan.job is None else now, None if plan.job is None else plan.job.id,
                     row["name"]))
            rows = await _all(conn, "SELECT min(next_run_at) AS nxt FROM crons WHERE NOT paused")
        nxt = rows[0]["nxt"]
        return CronTick(enqueued, None if nxt is None else float(nxt), unreadable)

    async def webhook_add(self, url: str, *, events: Sequence[str], secret: str | None, now: float) -> int:
        rows = await self._rows("INSERT INTO webhooks (url, events, secret, created_at) VALUES (%s, %s, %s, %s) "
                                "RETURNING id", (url, ",".join(events), secret, now))
        return int(rows[0]["id"])

    async def webhooks(self) -> list[Webhook]:
        return [Webhook.from_row(r) for r in await self._rows("SELECT * FROM webhooks ORDER BY id")]

    async def webhook_remove(self, webhook_id: int) -> None:
        if await self._exec("DELETE FROM webhooks WHERE id = %s", (webhook_id,)) == 0:
            raise NotFoundError(f"no webhook {webhook_id}")


async def _no_queue(conn: Conn, name: str) -> NotFoundError:
    known = sorted(r["name"] for r in await _all(conn, "SELECT name FROM queues"))
    return NotFoundError(f"no queue {name!r}; queues are: {', '.join(known)} "
                         "(a queue exists once a job is enqueued to it, or after `queuectl queue add`)")
