"""The power-scheduling commands from the command line: queue, pause/resume, cancel, wait, cron, webhook, and the
new enqueue options. Bad input gets one line on stderr, a documented exit code, and changes nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl.models import Outcome
from queuectl.store.sqlite import SQLiteStore
from tests.engine_helpers import Engines, kill_processes_of_home
from tests.helpers import Result, run_cli, run_proc


def ok(*args: str, input: str | None = None) -> Result:
    result = run_cli(*args, input=input)
    assert result.code == 0, result
    return result


def refused(code: int, *args: str, contains: str = "") -> Result:
    result = run_cli(*args)
    assert result.code == code, result
    assert result.out == "", result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("queuectl: error: "), result
    assert contains in lines[0], result
    return result


def snapshot(home: Path) -> dict[str, Any]:
    """Everything a refused command must leave as it was."""
    return {"jobs": ok("list", "--json", "--limit", "1000").json(), "queues": ok("queue", "list", "--json").json(),
            "crons": ok("cron", "list", "--json").json(), "webhooks": ok("webhook", "list", "--json").json()}


@pytest.fixture
def seeded(home: Path) -> dict[str, Any]:
    ok("enqueue", "--id", "a", "--queue", "batch", "--tag", "nightly", "--", "true")
    ok("enqueue", "--id", "b", "--after", "a", "--unique-key", "report", "--", "true")
    ok("cron", "add", "tick", "*/5 * * * *", "--", "date")
    ok("webhook", "add", "http://127.0.0.1:9/x", "--events", "dead")
    return snapshot(home)


# ---- bad input: each one line, an exit code, nothing changed --------------------------------------------------

BAD = [
    (1, ["queue", "set", "nosuch", "--concurrency", "2"], "no queue 'nosuch'"),
    (2, ["queue", "set", "batch", "--concurrency", "-1"], "--concurrency"),
    (2, ["queue", "set", "batch"], "--concurrency"),
    (1, ["pause", "nosuch"], "no queue 'nosuch'"),
    (2, ["pause", "batch", "--all"], "not both"),
    (2, ["cron", "add", "bad", "*/5 25 * * *", "--", "date"], "hour field '25'"),
    (2, ["cron", "add", "bad", "* * *", "--", "date"], "5 fields"),
    (2, ["cron", "add", "bad", "61 * * * *", "--", "date"], "minute field '61'"),
    (1, ["cron", "add", "tick", "* * * * *", "--", "date"], "already exists"),
    (2, ["cron", "add", "bad name", "* * * * *", "--", "date"], "cron name"),
    (2, ["cron", "add", "onlyname"], "SCHEDULE"),
    (1, ["cron", "remove", "nosuch"], "no cron entry 'nosuch'"),
    (1, ["cron", "pause", "nosuch"], "no cron entry 'nosuch'"),
    (1, ["wait", "nosuch"], "no job 'nosuch'"),
    (1, ["cancel", "nosuch"], "no job 'nosuch'"),
    (1, ["cancel", "a", "nosuch"], "no job 'nosuch'"),
    (2, ["webhook", "add", "ftp://example.com/x"], "http"),
    (2, ["webhook", "add", "http://127.0.0.1/x", "--events", "exploded"], "exploded"),
    (1, ["webhook", "remove", "99"], "no webhook 99"),
    (2, ["enqueue", "--env", "NOEQUALS", "--", "true"], "KEY=VALUE"),
    (2, ["enqueue", "--env", "1BAD=x", "--", "true"], "environment variable name"),
    (1, ["enqueue", "--after", "nosuch", "--", "true"], "'nosuch'"),
    (2, ["enqueue", "--after", ",", "--", "true"], "--after takes job ids"),
    (2, ["enqueue", "--id", "self", "--after", "self", "--", "true"], "cycle"),
    (1, ["enqueue", "--unique-key", "report", "--", "true"], "job 'b'"),
    (2, ["enqueue", "--unique-key", "report", "--if-exists", "maybe", "--", "true"], "--if-exists"),
    (2, ["enqueue", "--queue", "bad name", "--", "true"], "queue name"),
    (2, ["enqueue", "--tag", "", "--", "true"], "tag"),
    (2, ["list", "--tag", "bad tag"], "tag"),
    (2, ["wait", "a", "--timeout", "soon"], "--timeout"),
    (2, ["config", "set", "on-failure", "echo {nope}"], "nope"),
]


@pytest.mark.parametrize(("code", "argv", "contains"), BAD, ids=[" ".join(a) for _, a, _ in BAD])
def test_bad_input_is_one_line_an_exit_code_and_changes_nothing(
    seeded: dict[str, Any], home: Path, code: int, argv: list[str], contains: str
) -> None:
    refused(code, *argv, contains=contains)
    assert snapshot(home) == seeded


def test_cancel_of_a_completed_job_is_refused_and_changes_nothing(home: Path) -> None:
    ok("enqueue", "--id", "done", "--", "true")
    ok("enqueue", "--id", "other", "--", "true")
    finish(home, "done")
    before = snapshot(home)
    refused(1, "cancel", "other", "done", contains="'done' is completed")
    assert snapshot(home) == before  # "other" was not cancelled either


def test_a_replace_that_would_make_a_cycle_is_refused(home: Path) -> None:
    ok("enqueue", "--id", "x", "--", "true")
    ok("enqueue", "--id", "y", "--after", "x", "--", "true")
    ok("enqueue", "--id", "z", "--after", "y", "--", "true")
    before = snapshot(home)
    refused(1, "enqueue", "--replace", "--id", "x", "--after", "z", "--", "true", contains="cycle")
    assert snapshot(home) == before


def test_deleting_a_job_others_wait_for_is_refused(home: Path) -> None:
    ok("enqueue", "--id", "x", "--", "true")
    ok("enqueue", "--id", "y", "--after", "x", "--", "true")
    refused(1, "delete", "x", contains="'y' runs after it")
    assert [j["id"] for j in ok("list", "--json").json()] == ["y", "x"]


def finish(home: Path, job_id: str) -> None:
    import asyncio

    async def go() -> None:
        async with SQLiteStore(home / "queue.db") as store:
            (claim,) = [c for c in await store.claim_due("t", now=time.time() + 1, limit=100) if c.job.id == job_id]
            now = time.time()
            assert await store.complete(claim, "t", Outcome(exit_code=0, started_at=now, finished_at=now))

    asyncio.run(go())


# ---- what works -------------------------------------------------------------------------------------------------


def test_enqueue_options_round_trip_through_inspect_and_list(home: Path) -> None:
    ok("enqueue", "--id", "base", "--", "true")
    ok("enqueue", "--id", "j", "--queue", "gpu", "--tag", "a", "--tag", "b", "-e", "K=V=W", "--env", "E=",
       "--after", "base", "--unique-key", "k1", "--", "echo hi")
    data = ok("inspect", "j", "--json").json()
    assert (data["queue"], data["tags"], data["env"], data["after"], data["unique_key"], data["state"]) == (
        "gpu", ["a", "b"], {"K": "V=W", "E": ""}, ["base"], "k1", "waiting")
    assert [j["id"] for j in ok("list", "--tag", "b", "--json").json()] == ["j"]
    assert [j["id"] for j in ok("list", "--queue", "gpu", "--json").json()] == ["j"]
    assert ok("list", "--tag", "zzz", "--json").json() == []
    queues = {q["name"]: q for q in ok("queue", "list", "--json").json()}
    assert set(queues) == {"default", "gpu"}
    assert ok("enqueue", "--unique-key", "k1", "--if-exists", "ignore", "--", "true").out == "j\n"
    text = ok("inspect", "j").out
    assert "gpu" in text and "k1" in text and "K=V=W" in text


def test_unique_key_is_free_again_once_its_job_finished(home: Path) -> None:
    ok("enqueue", "--id", "first", "--unique-key", "nightly", "--", "true")
    finish(home, "first")
    assert ok("enqueue", "--id", "second", "--unique-key", "nightly", "--", "true").out == "second\n"


def test_queue_add_set_pause_resume_and_list(home: Path) -> None:
    assert ok("queue", "add", "io", "--concurrency", "3").out == "queue io added\n"
    assert ok("queue", "add", "io").out == "queue io exists already\n"
    ok("queue", "set", "io", "--concurrency", "1")
    assert ok("pause", "io").out == "paused: io\n"
    assert ok("pause", "io").out == "nothing to do: already paused\n"
    queues = {q["name"]: q for q in ok("queue", "list", "--json").json()}
    assert queues["io"] == {"name": "io", "concurrency": 1, "paused": True, "runnable": 0, "running": 0}
    assert ok("pause", "--all").out == "paused: default\n"
    assert ok("resume", "--all").out == "resumed: default, io\n"
    assert "io" in ok("queue", "list").out


def test_cron_add_list_pause_resume_remove(home: Path) -> None:
    out = ok("cron", "add", "backup", "0 3 * * *", "--queue", "io", "--timeout", "10m", "--max-retries", "1",
             "--env", "DEST=/tmp", "--catch-up", "--", "tar", "czf", "/tmp/b.tgz", "/etc/hostname").out
    assert out.startswith("cron backup added: next run ")
    (entry,) = ok("cron", "list", "--json").json()
    assert (entry["schedule"], entry["queue"], entry["timeout_s"], entry["max_retries"], entry["env"],
            entry["catch_up"], entry["command"]) == (
        "0 3 * * *", "io", 600.0, 1, {"DEST": "/tmp"}, True, "tar czf /tmp/b.tgz /etc/hostname")
    ok("cron", "pause", "backup")
    assert ok("cron", "list", "--json").json()[0]["paused"] is True
    ok("cron", "resume", "backup")
    assert ok("cron", "list", "--json").json()[0]["paused"] is False
    ok("cron", "remove", "backup")
    assert ok("cron", "list").out == "no cron entries\n"


def test_webhook_list_hides_the_secret(home: Path) -> None:
    ok("webhook", "add", "https://example.com/h", "--events", "dead,failed", "--secret", "topsecret")
    listed = ok("webhook", "list", "--json").json()
    assert listed == [{"id": 1, "url": "https://example.com/h", "events": ["dead", "failed"], "signed": True}]
    assert "topsecret" not in ok("webhook", "list").out


# ---- wait and enqueue --wait, as real processes ------------------------------------------------------------------


@pytest.fixture
def engine(home: Path, tmp_path: Path) -> Any:
    with Engines(home, tmp_path) as started:
        started.start(workers=4)
        yield started
    kill_processes_of_home(home)


def test_wait_exit_codes_completed_dead_and_timeout(home: Path, engine: Engines) -> None:
    run_proc("config", "set", "max-retries", "0", home=home)
    run_proc("enqueue", "--id", "good", "--", "sleep 0.2", home=home)
    run_proc("enqueue", "--id", "bad", "--", "exit 4", home=home)
    run_proc("enqueue", "--id", "slow", "--", "sleep 30", home=home)
    good = run_proc("wait", "good", home=home, timeout_s=30)
    assert (good.code, good.out) == (0, "good completed\n")
    both = run_proc("wait", "good", "bad", home=home, timeout_s=30)
    assert (both.code, both.out) == (1, "good completed\nbad dead\n")
    started = time.monotonic()
    slow = run_proc("wait", "slow", "--timeout", "0.5", home=home, timeout_s=30)
    assert slow.code == 124 and "timed out" in slow.err and len(slow.err.splitlines()) == 1
    assert time.monotonic() - started < 5
    run_proc("cancel", "slow", home=home)
    cancelled = run_proc("wait", "slow", "--quiet", home=home, timeout_s=30)
    assert (cancelled.code, cancelled.out) == (1, "")


def test_enqueue_wait_and_follow(home: Path, engine: Engines) -> None:
    followed = run_proc("enqueue", "--follow", "--", "echo one; sleep 0.2; echo two", home=home, timeout_s=30)
    assert followed.code == 0
    job_id, *output = followed.out.splitlines()
    assert output == ["one", "two"]
    assert json.loads(run_proc("inspect", job_id, "--json", home=home).out)["state"] == "completed"
    run_proc("config", "set", "max-retries", "0", home=home)
    failed = run_proc("enqueue", "--wait", "--", "exit 3", home=home, timeout_s=30)
    assert failed.code == 1 and len(failed.out.splitlines()) == 1
