"""Power scheduling through a real engine: named queues and their concurrency, pause/resume, dependencies, cancel,
cron entries, finish hooks and webhooks. Real SQLite files, real processes, bounded waits."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from queuectl import cron, paths
from queuectl.api import Queue
from queuectl.models import AttemptStatus, Job, JobState
from tests.engine_helpers import (
    Engines,
    attempts,
    await_states,
    await_until,
    cli,
    cli_ok,
    engine_in_process,
    enqueue,
    job,
    kill_processes_of_home,
    read_pids,
    run_until_idle,
    wait_for_pids,
    wait_for_states,
    wait_pids_gone,
)
from tests.test_engine import add, configure, lines

COMPLETED, CANCELLED, DEAD, PENDING, WAITING, PROCESSING = (
    JobState.COMPLETED, JobState.CANCELLED, JobState.DEAD, JobState.PENDING, JobState.WAITING, JobState.PROCESSING)


@pytest.fixture(autouse=True)
def _no_stray_jobs(home: Path) -> Iterator[None]:
    yield
    kill_processes_of_home(home)


async def get(home: Path, job_id: str) -> Job:
    async with Queue(home) as q:
        return await q.get(job_id)


def spans(path: Path) -> list[tuple[float, float]]:
    """(start, end) pairs written by jobs running `stamp`."""
    return [(float(a), float(b)) for a, b in (line.split() for line in lines(path))]


def stamp(path: Path, seconds: float) -> str:
    """A command that records when it ran: "start end" on one line."""
    return f"s=$(date +%s.%N); sleep {seconds}; echo \"$s $(date +%s.%N)\" >> {path}"


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


# ---- queues -------------------------------------------------------------------------------------------------------


async def test_queue_concurrency_caps_its_jobs_while_other_queues_use_the_free_workers(home: Path, work: Path) -> None:
    async with Queue(home) as q:
        for n in range(4):
            await add(q, f"s{n}", stamp(work / "serial", 0.2), work, queue="serial")
            await add(q, f"w{n}", stamp(work / "wide", 0.2), work)
        await q.queue_set("serial", concurrency=1)
    await run_until_idle(home, workers=4, timeout=30)
    assert max_overlap(spans(work / "serial")) == 1
    assert len(spans(work / "serial")) == 4
    assert max_overlap(spans(work / "wide")) >= 2  # the default queue had the other workers


async def test_concurrency_holds_across_two_engines(home: Path, work: Path) -> None:
    async with Queue(home) as q:
        for n in range(6):
            await add(q, f"j{n}", stamp(work / "spans", 0.15), work, queue="gpu")
        await q.queue_set("gpu", concurrency=2)
    await asyncio.gather(run_until_idle(home, workers=3, timeout=30), run_until_idle(home, workers=3, timeout=30))
    assert len(spans(work / "spans")) == 6
    assert max_overlap(spans(work / "spans")) <= 2


async def test_engine_serves_only_the_queues_it_is_given(home: Path, work: Path) -> None:
    async with Queue(home) as q:
        await add(q, "a", "true", work, queue="a")
        await add(q, "b", "true", work, queue="b")
    await run_until_idle(home, timeout=20, queues=("a",))
    assert (await get(home, "a")).state == COMPLETED
    assert (await get(home, "b")).state == PENDING  # until-idle ended: nothing it serves was left


def test_paused_queue_starts_nothing_survives_a_restart_and_resume_from_another_shell_runs_it(
    home: Path, work: Path, engines: Engines
) -> None:
    cli_ok(home, "pause")
    held = enqueue(home, "true", id="held", cwd=work)
    # An until-idle engine finds nothing it may start and exits, leaving the job.
    assert cli(home, "run", "--until-idle", timeout=30).returncode == 0
    assert job(home, held).state == PENDING
    status = cli_ok(home, "status")
    assert "default (paused)" in status
    engine = engines.start(workers=2)
    started = time.monotonic()
    assert "resumed: default" in cli_ok(home, "resume")
    wait_for_states(home, {held: COMPLETED}, timeout=10)
    assert time.monotonic() - started < 5
    assert engine.returncode is None


async def test_pausing_lets_running_jobs_finish(home: Path, work: Path) -> None:
    async with engine_in_process(home, workers=2) as (_, q, _log):
        await add(q, "long", f"sleep 0.5; echo done > {work}/out", work)
        await await_states(q, {"long": PROCESSING})
        await q.set_paused(None, paused=True)
        await add(q, "later", "true", work)
        await await_states(q, {"long": COMPLETED})
        assert (await q.get("later")).state == PENDING
        assert (work / "out").read_text() == "done\n"
        await q.set_paused(None, paused=False)
        await await_states(q, {"later": COMPLETED}, timeout=5)


# ---- dependencies -----------------------------------------------------------------------------------------------


async def test_job_runs_after_all_its_dependencies_completed(home: Path, work: Path) -> None:
    async with Queue(home) as q:
        await add(q, "a", stamp(work / "a", 0.3), work)
        await add(q, "b", stamp(work / "b", 0.1), work)
        await add(q, "c", stamp(work / "c", 0.0), work, after=["a", "b"])
        assert (await q.get("c")).state == WAITING
    await run_until_idle(home, workers=3, timeout=20)
    (a_span,), (b_span,), (c_span,) = spans(work / "a"), spans(work / "b"), spans(work / "c")
    assert c_span[0] >= max(a_span[1], b_span[1])
    assert (await get(home, "c")).state == COMPLETED


async def test_dependant_of_a_completed_job_is_picked_up_at_once(home: Path, work: Path) -> None:
    async with engine_in_process(home, workers=2) as (_, q, _log):
        await add(q, "first", "true", work)
        await add(q, "second", "true", work, after=["first"])
        done = await await_states(q, {"second": COMPLETED}, timeout=10)
        history = await q.store.attempts("first")
        latency = done["second"].started_at - history[-1].finished_at  # type: ignore[operator]
        assert 0 <= latency < 0.05, f"dependant started {latency * 1000:.1f} ms after its dependency ended"


async def test_dead_dependency_cancels_its_dependants_and_dlq_retry_brings_them_back(home: Path, work: Path) -> None:
    await configure(home, max_retries="0")
    async with Queue(home) as q:
        await add(q, "fetch", f"test -e {work}/ready", work)
        await add(q, "build", "true", work, after=["fetch"])
        await add(q, "ship", "true", work, after=["build"])
    await run_until_idle(home, timeout=20)
    build, ship = (await get(home, "build")), (await get(home, "ship"))
    assert (await get(home, "fetch")).state == DEAD
    assert (build.state, ship.state) == (CANCELLED, CANCELLED)
    assert build.last_error is not None and "fetch" in build.last_error and "dead" in build.last_error
    assert ship.last_error is not None and "fetch" in ship.last_error and "build" in ship.last_error
    assert build.runs == ship.runs == 0
    (work / "ready").touch()
    cli_ok(home, "dlq", "retry", "fetch")
    assert (await get(home, "build")).state == WAITING
    await run_until_idle(home, timeout=20)
    assert [(await get(home, i)).state for i in ("fetch", "build", "ship")] == [COMPLETED] * 3


async def test_fan_in_of_many_dependencies_runs_once_when_the_last_completes(home: Path, work: Path) -> None:
    async with Queue(home) as q:
        parts = [await add(q, f"part{n}", f"echo {n} >> {work}/parts", work) for n in range(20)]
        await add(q, "join", f"wc -l < {work}/parts > {work}/joined", work, after=parts)
    await run_until_idle(home, workers=4, timeout=30)
    assert (work / "joined").read_text().strip() == "20"


# ---- cancel -------------------------------------------------------------------------------------------------------


def test_cancel_of_a_running_job_kills_its_whole_tree_and_does_not_retry(
    home: Path, work: Path, engines: Engines
) -> None:
    engines.start(workers=2)
    job_id = enqueue(home, f"sh -c 'sleep 300 & echo $! >> {work}/pids; sleep 300 & echo $! >> {work}/pids; wait'",
                     id="tree", cwd=work, max_retries=5)
    pids = wait_for_pids(work / "pids", 2)
    started = time.monotonic()
    out = cli_ok(home, "cancel", job_id)
    assert "tree cancelling" in out
    wait_for_states(home, {job_id: CANCELLED}, timeout=10)
    took = time.monotonic() - started
    wait_pids_gone(pids)
    cancelled = job(home, job_id)
    assert cancelled.attempts == 1 and cancelled.runs == 1  # not retried
    assert [a.status for a in attempts(home, job_id)] == [AttemptStatus.CANCELLED]
    assert took < 3, f"cancel took {took:.2f}s"
    assert read_pids(work / "pids") == pids


async def test_cancel_of_waiting_and_pending_jobs_is_immediate_and_cascades(home: Path, work: Path) -> None:
    async with Queue(home) as q:
        await add(q, "later", "true", work, delay="1h")
        await add(q, "after", "true", work, after=["later"])
        done, running = await q.cancel(["later"])
        assert (done, running) == (["later"], [])
        assert (await q.get("after")).state == CANCELLED
    await run_until_idle(home, timeout=10)
    assert (await get(home, "later")).runs == 0


# ---- cron -----------------------------------------------------------------------------------------------------------


def test_cron_entry_enqueues_one_job_per_due_time_on_two_engines(home: Path, work: Path, engines: Engines) -> None:
    engines.start(workers=2)
    engines.start(workers=2)
    cli_ok(home, "cron", "add", "tick", "* * * * * *", "--", f"echo $QUEUECTL_JOB_ID >> {work}/ticks")
    deadline = time.monotonic() + 15
    while len(lines(work / "ticks")) < 4:
        assert time.monotonic() < deadline, f"ticks so far: {lines(work / 'ticks')}"
        time.sleep(0.05)
    cli_ok(home, "cron", "pause", "tick")
    ids = lines(work / "ticks")
    assert len(ids) == len(set(ids)), f"a due time ran twice: {ids}"
    made = json.loads(cli_ok(home, "list", "--json", "--limit", "100"))
    from_cron = [j for j in made if j["cron"] == "tick"]
    assert len(from_cron) == len({j["id"] for j in from_cron}) >= 4
    seconds = sorted(j["id"].split("@")[1] for j in from_cron)
    assert len(seconds) == len(set(seconds))  # one job per due second
    listed = cli_ok(home, "cron", "list")
    assert "tick" in listed and "paused" in listed


async def test_cron_skips_missed_runs_unless_catch_up(home: Path, work: Path) -> None:
    now = time.time()
    async with Queue(home) as q:
        for name, catch_up in (("skip", False), ("catch", True)):
            entry = cron.make_entry(name, "0 * * * *", f"echo {name} >> {work}/ran", cwd=str(work), now=now,
                                    catch_up=catch_up)
            # As if no engine ran for three hours: due times passed long ago.
            await q.cron_add(dataclasses.replace(entry, next_run_at=now - 3 * 3600))
    await run_until_idle(home, timeout=20)
    assert lines(work / "ran") == ["catch"]
    async with Queue(home) as q:
        entries = {e.name: e for e in await q.crons()}
    assert all(e.next_run_at > now for e in entries.values())
    assert entries["skip"].last_job_id is None


async def test_a_cron_entry_the_engine_cannot_read_is_logged_and_the_others_run(home: Path, work: Path) -> None:
    """Before, one such entry stopped every entry's tick, and nothing said so."""
    now = time.time()
    async with Queue(home) as q:
        good = cron.make_entry("good", "* * * * * *", f"echo good >> {work}/ran", cwd=str(work), now=now)
        await q.cron_add(good)
        # As a newer queuectl, with a schedule syntax this one lacks, would store it.
        await q.cron_add(dataclasses.replace(good, name="newer", schedule="@every 5m",
                                             command=f"echo newer >> {work}/ran"))
    async with engine_in_process(home, workers=1) as (_engine, _q, log):
        await await_until(lambda: len(lines(work / "ran")) >= 2, timeout=20, what="two runs of the good entry")
    assert set(lines(work / "ran")) == {"good"}
    said = [line for line in log.getvalue().splitlines() if "cron entry newer cannot be run" in line]
    assert len(said) == 1 and "'@every 5m': unknown macro" in said[0], log.getvalue()


# ---- hooks and webhooks -----------------------------------------------------------------------------------------


async def test_finish_hooks_run_with_the_jobs_facts(home: Path, work: Path) -> None:
    await configure(home, max_retries="1", backoff_base="1.01",
                    on_failure=f'echo "failure {{id}} {{attempt}} {{error}}" >> {work}/hooks',
                    on_dead=f"echo dead {{id}} >> {work}/hooks", on_success=f"echo success {{id}} >> {work}/hooks")
    async with Queue(home) as q:
        await add(q, "ok", "true", work)
        await add(q, "bad", "exit 3", work)
    await run_until_idle(home, timeout=20)
    await await_until(lambda: len(lines(work / "hooks")) == 3, timeout=10, what="three hook lines")
    assert sorted(lines(work / "hooks")) == ["dead bad", "failure bad 1 exit code 3", "success ok"]


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_gets_a_signed_post_when_a_job_dies(home: Path, work: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        assert "webhook 1 added" in cli_ok(home, "webhook", "add", url, "--events", "dead", "--secret", "s3cret")
        cli_ok(home, "config", "set", "max-retries", "0")
        enqueue(home, "exit 9", id="doomed", cwd=work)
        enqueue(home, "true", id="fine", cwd=work)
        assert cli(home, "run", "--until-idle", timeout=60).returncode == 0
        deadline = time.monotonic() + 10
        while not server.received:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "no webhook arrived"
            time.sleep(0.02)
        (headers, body), *more = server.received  # type: ignore[attr-defined]
        assert not more
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Queuectl-Signature"], expected)
        event = json.loads(body)
        assert event["event"] == "dead" and event["job"]["id"] == "doomed" and event["job"]["exit_code"] == 9
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---- retention --------------------------------------------------------------------------------------------------


async def test_deleting_a_job_removes_each_of_its_logs_and_no_other_jobs(home: Path, work: Path) -> None:
    """Logs are removed by name (job id, attempt number, hook): a job that ran twice and whose on-dead hook ran has
    three, and a job whose id starts with the same characters keeps its own."""
    await configure(home, max_retries="1", backoff_base="1.01", on_dead="echo hook ran")
    async with Queue(home) as q:
        await add(q, "j", "echo out; exit 1", work)
        await add(q, "j1", "echo other", work)
    await run_until_idle(home, timeout=30)
    logs = home / "logs"
    assert {p.name for p in logs.iterdir()} == {"j#1.log", "j#2.log", "j#2.on-dead.log", "j1#1.log"}
    async with Queue(home) as q:
        assert await q.delete(["j"]) == ["j"]
    assert {p.name for p in logs.iterdir()} == {"j1#1.log"}


@pytest.mark.parametrize("jobs", [3, 20_000], ids=["by name", "a mass delete: one scan"])
def test_remove_logs_removes_each_log_of_the_jobs_given_and_no_other(tmp_path: Path, jobs: int) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    mine = ["j0#1.log", "j0#2.log", "j0#2.on-dead.log", "j1#1.on-success.log"]
    others = ["j0x#1.log", f"j{jobs}#1.log", "notes.txt"]
    for name in mine + others:
        (logs / name).write_text("x")
    paths.remove_logs(tmp_path, {"j0": 2} | {f"j{i}": 1 for i in range(1, jobs)})
    assert sorted(p.name for p in logs.iterdir()) == sorted(others)


async def test_engine_deletes_finished_jobs_past_their_retention_with_their_logs(home: Path, work: Path) -> None:
    await configure(home, max_retries="0", retain_completed="1s", retain_dead="1h")
    async with Queue(home) as q:
        await add(q, "old-ok", "echo out", work)
        await add(q, "old-bad", "exit 1", work)
    await run_until_idle(home, timeout=20)
    log = home / "logs" / "old-ok#1.log"
    assert log.exists()
    async with engine_in_process(home, retention_interval_s=0.2) as (_, q, logged):
        await await_until(lambda: not log.exists(), timeout=10, what="the completed job's log to be deleted")
        await add(q, "fresh", "true", work)
        await await_states(q, {"fresh": COMPLETED})
        states = {j.id: j.state for j in await q.list_jobs()}
        assert "old-ok" not in states  # completed more than 1 s ago
        assert states["old-bad"] == DEAD  # dead jobs are kept for an hour
        assert "retention: deleted 1 completed job(s)" in logged.getvalue()
