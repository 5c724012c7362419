"""Every queue-management command of the CLI, in-process through queuectl.cli.main (run_cli), and a few as real
processes (`python -m queuectl`, run_proc), including the enqueue fast path (queuectl/fastpath.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from queuectl.models import Claim, EngineInfo, Outcome
from queuectl.store.sqlite import SQLiteStore
from tests.helpers import Result, proc_env, run_cli, run_proc

T = TypeVar("T")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
TIME_FIELDS = ("run_at", "created_at", "updated_at", "started_at", "finished_at")


def ok(*args: str, input: str | None = None) -> Result:
    result = run_cli(*args, input=input)
    assert result.code == 0, result
    assert result.err == "", result
    return result


def jobs(*extra: str) -> list[dict[str, Any]]:
    data = ok("list", "--json", "--limit", "1000", *extra).json()
    assert isinstance(data, list)
    return data


def job(job_id: str) -> dict[str, Any]:
    data = ok("inspect", job_id, "--json").json()
    assert isinstance(data, dict)
    return data


def with_store(home: Path, fn: Callable[[SQLiteStore], Awaitable[T]]) -> T:
    """Do something through the Store API on the home's database (what an engine would do)."""

    home.mkdir(parents=True, exist_ok=True)

    async def go() -> T:
        async with SQLiteStore(home / "queue.db") as store:
            return await fn(store)

    return asyncio.run(go())


def outcome(exit_code: int | None, *, finished_ago_s: float = 0.0, tail: str = "", error: str | None = None) -> Outcome:
    end = time.time() - finished_ago_s
    return Outcome(exit_code=exit_code, error=error, output_tail=tail, started_at=end - 0.5, finished_at=end)


def move(home: Path, states: dict[str, str], *, finished_ago_s: float = 0.0) -> None:
    """Claim exactly the jobs named (they must be the only due ones) and take each to the state given:
    processing, completed, failed or dead."""

    async def go(store: SQLiteStore) -> None:
        claims = await store.claim_due("test-engine", now=time.time() + 1, limit=len(states) + 10)
        assert sorted(c.job.id for c in claims) == sorted(states), "only the named jobs may be due"
        for claim in claims:
            state = states[claim.job.id]
            if state == "completed":
                assert await store.complete(claim, "test-engine", outcome(0, finished_ago_s=finished_ago_s,
                                                                          tail="all good\n"))
            elif state == "failed":
                assert await store.schedule_retry(claim, "test-engine", outcome(3, error="exit code 3"),
                                                  retry_at=time.time() + 3600)
            elif state == "dead":
                assert await store.bury(claim, "test-engine", outcome(1, finished_ago_s=finished_ago_s,
                                                                      tail="it broke\n", error="exit code 1"))
            else:
                assert state == "processing"

    with_store(home, go)


def enqueue_lines(*lines: str) -> list[str]:
    return ok("enqueue", "--file", "-", input="\n".join(lines) + "\n").lines


def ids(listing: list[dict[str, Any]]) -> list[str]:
    return [j["id"] for j in listing]


# ---- help --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["enqueue"], ["status"], ["list"], ["inspect"], ["dlq"], ["dlq", "list"],
                                     ["dlq", "retry"], ["dlq", "purge"], ["delete"], ["purge"], ["config"],
                                     ["config", "list"], ["config", "get"], ["config", "set"], ["config", "unset"]])
def test_every_command_has_help(home: Path, command: list[str]) -> None:
    result = ok(*command, "--help")
    assert "Usage" in result.out
    assert not home.exists()  # help touches no data


def test_read_commands_have_json() -> None:
    for command in (["status"], ["list"], ["inspect"], ["dlq", "list"], ["config", "list"]):
        assert "--json" in ok(*command, "--help").out, command


# ---- enqueue -----------------------------------------------------------------------------------------------------


def test_enqueue_json_form_prints_the_id_and_stores_a_pending_job(home: Path) -> None:
    result = ok("enqueue", '{"id":"job1","command":"sleep 2"}')
    assert result.out == "job1\n"
    got = job("job1")
    assert (got["id"], got["command"], got["state"], got["attempts"], got["priority"]) == (
        "job1", "sleep 2", "pending", 0, 0)
    assert got["cwd"] == os.getcwd()
    assert got["attempts_history"] == []
    for field in ("run_at", "created_at", "updated_at"):
        assert ISO_UTC.match(got[field]), got[field]
    assert got["started_at"] is None and got["finished_at"] is None


def test_enqueue_json_form_takes_every_field(home: Path) -> None:
    ok("enqueue", '{"id":"a","command":"make","priority":7,"max_retries":5,"run_at":"2030-01-02T03:04:05Z",'
                  '"timeout":"5m"}')
    ok("enqueue", '{"id":"b","command":"make","delay":"2h","timeout":30}')
    a, b = job("a"), job("b")
    assert (a["priority"], a["max_retries"], a["max_retries_source"], a["timeout_s"], a["run_at"]) == (
        7, 5, "job", 300.0, "2030-01-02T03:04:05.000Z")
    assert b["timeout_s"] == 30.0
    due_in = _ts(b["run_at"]) - _ts(b["created_at"])
    assert due_in == pytest.approx(7200, abs=1)


def test_enqueue_without_an_id_generates_a_short_one(home: Path) -> None:
    first = ok("enqueue", '{"command":"true"}').out.strip()
    second = ok("enqueue", "--", "true").out.strip()
    assert first != second
    for generated in (first, second):
        assert re.fullmatch(r"[0-9a-f]{12}", generated), generated
    assert set(ids(jobs())) == {first, second}


def test_enqueue_flags_form_with_the_command_after_double_dash(home: Path) -> None:
    job_id = ok("enqueue", "--priority", "5", "--", "ffmpeg", "-i", "a.mp4", "b c.webm").out.strip()
    got = job(job_id)
    assert (got["command"], got["priority"]) == ("ffmpeg -i a.mp4 'b c.webm'", 5)


def test_enqueue_every_flag(home: Path) -> None:
    ok("enqueue", "--id", "f1", "--priority", "3", "--delay", "5m", "--timeout", "30s", "--max-retries", "2", "--",
       "echo", "hi")
    ok("enqueue", "--id", "f2", "--run-at", "2030-06-01T12:00:00Z", "--", "echo $HOME && ls")
    f1, f2 = job("f1"), job("f2")
    assert (f1["priority"], f1["timeout_s"], f1["max_retries"], f1["command"]) == (3, 30.0, 2, "echo hi")
    assert _ts(f1["run_at"]) - _ts(f1["created_at"]) == pytest.approx(300, abs=1)
    assert (f2["run_at"], f2["command"]) == ("2030-06-01T12:00:00.000Z", "echo $HOME && ls")


def test_enqueue_flags_override_json_fields(home: Path) -> None:
    ok("enqueue", "--priority", "9", "--id", "from-flag", '{"id":"from-json","command":"x","priority":1}')
    assert ids(jobs()) == ["from-flag"]
    assert job("from-flag")["priority"] == 9


def test_enqueue_file_of_json_lines(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"id":"l1","command":"echo 1"}\n\n{"id":"l2","command":"echo 2","priority":4}\n'
                    '{"command":"echo 3"}\n')
    result = ok("enqueue", "--file", str(path))
    assert result.lines[:2] == ["l1", "l2"] and len(result.lines) == 3
    assert sorted(ids(jobs())) == sorted(result.lines)
    assert job("l2")["priority"] == 4


def test_enqueue_file_from_stdin(home: Path) -> None:
    lines = [json.dumps({"id": f"s{i}", "command": f"echo {i}"}) for i in range(50)]
    result = ok("enqueue", "--file", "-", input="\n".join(lines) + "\n")
    assert result.lines == [f"s{i}" for i in range(50)]
    assert len(jobs()) == 50


def test_enqueue_file_is_one_transaction(home: Path) -> None:
    ok("enqueue", '{"id":"taken","command":"x"}')
    lines = [json.dumps({"id": f"n{i}", "command": "x"}) for i in range(10)] + ['{"id":"taken","command":"y"}']
    result = run_cli("enqueue", "--file", "-", input="\n".join(lines))
    assert result.code == 1 and "taken" in result.err
    assert ids(jobs()) == ["taken"]


def test_enqueue_file_with_flags_applies_them_to_every_job(home: Path) -> None:
    enqueue_lines('{"id":"a","command":"x"}')  # something else in the queue
    result = ok("enqueue", "--priority", "3", "--delay", "60", "--file", "-",
                input='{"id":"b","command":"x"}\n{"id":"c","command":"y","priority":1}\n')
    assert result.lines == ["b", "c"]
    for job_id in ("b", "c"):
        got = job(job_id)
        assert got["priority"] == 3
        assert _ts(got["run_at"]) - _ts(got["created_at"]) == pytest.approx(60, abs=1)


def test_enqueue_replace_overwrites_a_job_that_is_not_running(home: Path) -> None:
    ok("enqueue", '{"id":"r","command":"old","priority":1}')
    assert ok("enqueue", "--replace", '{"id":"r","command":"new","priority":2}').out == "r\n"
    got = job("r")
    assert (got["command"], got["priority"], got["state"]) == ("new", 2, "pending")
    move(home, {"r": "dead"})
    ok("enqueue", "--replace", "--id", "r", "--", "newer")
    got = job("r")
    assert (got["command"], got["state"], got["attempts"]) == ("newer", "pending", 0)
    assert len(jobs()) == 1


def test_enqueue_replace_with_a_file(home: Path) -> None:
    ok("enqueue", '{"id":"r1","command":"old"}')
    ok("enqueue", "--replace", "--file", "-", input='{"id":"r1","command":"new"}\n{"id":"r2","command":"x"}\n')
    assert job("r1")["command"] == "new"
    assert sorted(ids(jobs())) == ["r1", "r2"]


# ---- status and list ---------------------------------------------------------------------------------------------


def test_status_counts_jobs_per_state(home: Path) -> None:
    enqueue_lines('{"id":"d","command":"x"}', '{"id":"c","command":"x"}', '{"id":"p","command":"x"}')
    move(home, {"d": "dead", "c": "completed", "p": "processing"})
    enqueue_lines('{"id":"w1","command":"x"}', '{"id":"w2","command":"x","delay":"1h"}')
    data = ok("status", "--json").json()
    assert data["counts"] == {"pending": 2, "waiting": 0, "processing": 1, "completed": 1, "failed": 0, "dead": 1,
                              "cancelled": 0}
    assert data["total"] == 5
    assert data["oldest_pending_age_s"] is not None and 0 <= data["oldest_pending_age_s"] < 60
    assert data["engines"] == []
    text = ok("status").out
    for words in ("pending 2", "processing 1", "completed 1", "failed 0", "dead 1"):
        assert words in text


def test_status_shows_the_engines_and_what_they_run(home: Path) -> None:
    enqueue_lines('{"id":"busy","command":"sleep 100"}')

    async def engine_takes_it(store: SQLiteStore) -> None:
        now = time.time()
        await store.register_engine(EngineInfo(id="eng-7", host="somewhere", pid=4321, workers=3,
                                               started_at=now - 60, heartbeat_at=now))
        [claim] = await store.claim_due("eng-7", now=now, limit=1)
        assert claim.job.id == "busy"

    with_store(home, engine_takes_it)
    data = ok("status", "--json").json()
    [engine] = data["engines"]
    assert (engine["id"], engine["pid"], engine["workers"], engine["running"]) == ("eng-7", 4321, 3, ["busy"])
    assert data["counts"]["processing"] == 1
    text = ok("status").out
    assert "eng-7" in text and "busy" in text


def test_status_of_an_empty_queue(home: Path) -> None:
    data = ok("status", "--json").json()
    assert data["total"] == 0 and data["oldest_pending_age_s"] is None
    assert "pending 0" in ok("status").out


def test_list_is_newest_first_and_bounded_by_default(home: Path) -> None:
    enqueue_lines(*(json.dumps({"id": f"j{i:02d}", "command": "x"}) for i in range(60)))
    listing = ids(ok("list", "--json").json())
    assert listing == [f"j{i:02d}" for i in range(59, 9, -1)]  # 50, newest first
    assert ids(ok("list", "--json", "--limit", "3").json()) == ["j59", "j58", "j57"]
    assert ids(ok("list", "--json", "--limit", "2", "--oldest-first").json()) == ["j00", "j01"]


def test_list_filters_by_state(home: Path) -> None:
    enqueue_lines('{"id":"d1","command":"x"}', '{"id":"c1","command":"x"}')
    move(home, {"d1": "dead", "c1": "completed"})
    enqueue_lines('{"id":"p1","command":"x"}')
    assert ids(jobs("--state", "dead")) == ["d1"]
    assert ids(jobs("--state", "completed")) == ["c1"]
    assert ids(jobs("--state", "PENDING")) == ["p1"]
    assert jobs("--state", "failed") == []


def test_list_json_is_only_a_json_array_with_iso_times(home: Path) -> None:
    assert ok("list", "--json").out.strip() == "[]"
    ok("enqueue", '{"id":"j1","command":"x"}')
    raw = ok("list", "--json").out
    data = json.loads(raw)  # the whole of stdout is one JSON document
    assert isinstance(data, list) and len(data) == 1
    entry = data[0]
    assert {"id", "command", "state", "attempts", "max_retries", "priority", "run_at", "timeout_s", "cwd",
            "created_at", "updated_at", "started_at", "finished_at", "exit_code", "last_error"} <= set(entry)
    for field in TIME_FIELDS:
        assert entry[field] is None or ISO_UTC.match(entry[field]), (field, entry[field])


def test_list_text_shows_ids_and_full_states_in_80_columns(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `queuectl list | grep dead` sees: output to a pipe is laid out 80 columns wide."""
    monkeypatch.setenv("COLUMNS", "80")
    enqueue_lines('{"id":"job-dead","command":"python train.py --epochs 10 --learning-rate 0.01 --data /srv/d"}')
    move(home, {"job-dead": "dead"})
    enqueue_lines('{"id":"job-pending","command":"rsync -a /srv/data/ backup.example.com:/backups/data/"}')
    out = ok("list").out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    assert rows["job-pending"][1] == "pending", out
    assert rows["job-dead"][1] == "dead", out
    assert "rsync" in out and "python" in out


def test_list_text_of_an_empty_queue(home: Path) -> None:
    assert "no jobs" in ok("list").out


# ---- inspect -----------------------------------------------------------------------------------------------------


def test_inspect_shows_every_field_the_attempts_and_the_output_tail(home: Path) -> None:
    ok("enqueue", '{"id":"i1","command":"make test","max_retries":1,"timeout":"10s"}')
    move(home, {"i1": "failed"})

    async def retry_now_then_bury(store: SQLiteStore) -> None:
        [claim] = await store.claim_due("test-engine", now=time.time() + 7200, limit=1)
        assert await store.bury(claim, "test-engine", outcome(2, tail="last words\n", error="exit code 2"))

    with_store(home, retry_now_then_bury)
    text = ok("inspect", "i1").out
    for words in ("i1", "make test", "dead", os.getcwd(), "exit code 2", "last words", "#1", "#2"):
        assert words in text, words
    data = job("i1")
    assert (data["state"], data["attempts"], data["exit_code"], data["last_error"]) == ("dead", 2, 2, "exit code 2")
    assert (data["max_retries"], data["timeout_s"]) == (1, 10.0)
    history = data["attempts_history"]
    assert [(a["number"], a["status"], a["exit_code"]) for a in history] == [(1, "failed", 3), (2, "failed", 2)]
    assert history[1]["output_tail"] == "last words\n"
    assert history[1]["duration_s"] == pytest.approx(0.5, abs=0.01)
    for attempt in history:
        assert ISO_UTC.match(attempt["started_at"]) and ISO_UTC.match(attempt["finished_at"])
    for field in TIME_FIELDS:
        assert data[field] is None or ISO_UTC.match(data[field]), field


def test_inspect_and_status_show_control_characters_escaped_not_raw(home: Path) -> None:
    """Output and commands can carry terminal escape sequences (here: clear the screen, set the clipboard through
    OSC 52). `inspect` and `status` show them as \\xNN, so that reading a job cannot drive the terminal; tabs,
    newlines and carriage returns stay. `--json` and `logs` keep the bytes as they were."""
    hostile = "\x1b[2J\x1b]52;c;SGk=\x07"
    ok("enqueue", json.dumps({"id": "esc", "command": f"echo '{hostile}'"}))

    async def engine_takes_it(store: SQLiteStore) -> Claim:
        now = time.time()
        await store.register_engine(EngineInfo(id="eng-1", host="h", pid=4321, workers=1, started_at=now,
                                               heartbeat_at=now))
        [claim] = await store.claim_due("eng-1", now=now, limit=1)
        return claim

    claim = with_store(home, engine_takes_it)
    status = ok("status").out  # the job runs: status lists its command
    assert "\x1b" not in status and "\\x1b[2J" in status, status

    async def it_ends(store: SQLiteStore) -> None:
        assert await store.bury(claim, "eng-1", outcome(1, tail=f"before\t{hostile}after\r\n", error=f"exit {hostile}"))

    with_store(home, it_ends)
    text = ok("inspect", "esc").out
    assert "\x1b" not in text and "\x07" not in text
    # in the command, the last error, the attempt's error and the output tail
    assert text.count("\\x1b[2J\\x1b]52;c;SGk=\\x07") == 4, text
    assert "before\t" in text and "after\r\n" in text
    assert job("esc")["attempts_history"][0]["output_tail"] == f"before\t{hostile}after\r\n"


def test_engine_log_shows_a_command_s_control_characters_escaped(home: Path) -> None:
    """The engine's terminal is the one a hostile command would most like to reach: its `started` line escapes."""
    ok("enqueue", json.dumps({"id": "esc", "command": "true '\x1b]0;pwned\x07'"}))
    ran = run_proc("run", "--workers", "1", "--until-idle", home=home)
    assert ran.code == 0, ran.err
    log = ran.out + ran.err
    assert "esc started (attempt 1): true '\\x1b]0;pwned\\x07'" in log, log
    assert "\x1b" not in log and "\x07" not in log


def test_inspect_shows_the_configured_defaults_that_apply(home: Path) -> None:
    ok("enqueue", '{"id":"i2","command":"x"}')
    ok("config", "set", "max-retries", "6")
    ok("config", "set", "job-timeout", "90s")
    data = job("i2")
    assert (data["max_retries"], data["max_retries_source"], data["timeout_s"]) == (6, "config", 90.0)
    assert "max_retries 6, from config" in ok("inspect", "i2").out


# ---- the dead-letter queue ---------------------------------------------------------------------------------------


def test_dlq_list_shows_only_dead_jobs(home: Path) -> None:
    enqueue_lines('{"id":"d1","command":"x"}', '{"id":"d2","command":"x"}', '{"id":"c1","command":"x"}')
    move(home, {"d1": "dead", "d2": "dead", "c1": "completed"})
    enqueue_lines('{"id":"p1","command":"x"}')
    assert sorted(ids(ok("dlq", "list", "--json").json())) == ["d1", "d2"]
    text = ok("dlq", "list").out
    assert "d1" in text and "d2" in text and "c1" not in text and "p1" not in text


def test_dlq_retry_ids_resets_attempts_and_keeps_history(home: Path) -> None:
    enqueue_lines('{"id":"d1","command":"x"}', '{"id":"d2","command":"x"}')
    move(home, {"d1": "dead", "d2": "dead"})
    result = ok("dlq", "retry", "d1")
    assert "1 job" in result.out and "d1" in result.out
    got = job("d1")
    assert (got["state"], got["attempts"], got["finished_at"]) == ("pending", 0, None)
    assert len(got["attempts_history"]) == 1
    assert job("d2")["state"] == "dead"


def test_dlq_retry_all(home: Path) -> None:
    enqueue_lines('{"id":"d1","command":"x"}', '{"id":"d2","command":"x"}', '{"id":"c1","command":"x"}')
    move(home, {"d1": "dead", "d2": "dead", "c1": "completed"})
    assert "2 job" in ok("dlq", "retry", "--all").out
    assert sorted(ids(jobs("--state", "pending"))) == ["d1", "d2"]
    assert ids(jobs("--state", "completed")) == ["c1"]
    assert "0 job" in ok("dlq", "retry", "--all").out


def test_dlq_purge_deletes_dead_jobs_only(home: Path) -> None:
    enqueue_lines('{"id":"d1","command":"x"}', '{"id":"c1","command":"x"}')
    move(home, {"d1": "dead", "c1": "completed"})
    assert "1" in ok("dlq", "purge").out
    assert ids(jobs()) == ["c1"]


# ---- delete and purge --------------------------------------------------------------------------------------------


def test_delete_several_jobs_and_their_history(home: Path) -> None:
    enqueue_lines('{"id":"d1","command":"x"}')
    move(home, {"d1": "dead"})
    enqueue_lines('{"id":"p1","command":"x"}', '{"id":"keep","command":"x"}')
    (home / "logs").mkdir(parents=True, exist_ok=True)
    (home / "logs" / "d1#1.log").write_text("old output")
    (home / "logs" / "keep#1.log").write_text("kept")
    assert "deleted 2" in ok("delete", "d1", "p1").out
    assert ids(jobs()) == ["keep"]
    assert not (home / "logs" / "d1#1.log").exists()
    assert (home / "logs" / "keep#1.log").exists()
    ok("enqueue", '{"id":"d1","command":"again"}')
    assert job("d1")["attempts_history"] == []


def test_purge_by_state(home: Path) -> None:
    enqueue_lines('{"id":"c1","command":"x"}', '{"id":"c2","command":"x"}', '{"id":"d1","command":"x"}')
    move(home, {"c1": "completed", "c2": "completed", "d1": "dead"})
    enqueue_lines('{"id":"p1","command":"x"}')
    assert "purged 2 completed" in ok("purge", "--state", "completed").out
    assert sorted(ids(jobs())) == ["d1", "p1"]
    assert "purged 1 dead" in ok("purge", "--state", "dead").out
    assert ids(jobs()) == ["p1"]


def test_purge_older_than_keeps_recent_jobs(home: Path) -> None:
    enqueue_lines('{"id":"old","command":"x"}')
    move(home, {"old": "completed"}, finished_ago_s=8 * 86400)
    enqueue_lines('{"id":"new","command":"x"}')
    move(home, {"new": "completed"}, finished_ago_s=3600)
    assert "purged 1" in ok("purge", "--state", "completed", "--older-than", "7d").out
    assert ids(jobs()) == ["new"]


# ---- config ------------------------------------------------------------------------------------------------------


def test_config_list_shows_every_key_with_its_default(home: Path) -> None:
    data = ok("config", "list", "--json").json()
    assert {"max-retries", "backoff-base", "backoff-max", "job-timeout", "kill-grace"} <= set(data)
    assert data["max-retries"] == {"value": "3", "set": False, "source": "default"}
    assert data["backoff-base"]["value"] == "2"
    assert data["job-timeout"]["value"] == "none"
    assert data["kill-grace"]["value"] == "5s"
    text = ok("config", "list").out
    assert "max-retries" in text and "kill-grace" in text


def test_config_set_get_unset_with_either_spelling(home: Path) -> None:
    assert ok("config", "get", "max-retries").out == "3\n"
    assert "max-retries = 5" in ok("config", "set", "max_retries", "5").out
    assert ok("config", "get", "max-retries").out == "5\n"
    assert ok("config", "get", "max_retries").out == "5\n"
    assert ok("config", "list", "--json").json()["max-retries"] == {"value": "5", "set": True, "source": "set"}
    ok("config", "set", "backoff-max", "10m")
    assert ok("config", "get", "backoff_max").out == "10m\n"
    assert "3" in ok("config", "unset", "max-retries").out
    assert ok("config", "get", "max-retries").out == "3\n"
    assert ok("config", "list", "--json").json()["max-retries"]["set"] is False


def test_config_list_and_get_show_an_environment_override_as_the_value_in_force(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QUEUECTL_<KEY> overrides the stored value in the process it is set in. Before, `config list` (which says it
    shows the value in force) and `config get` showed the stored value or the default."""
    ok("config", "set", "max-retries", "5")
    monkeypatch.setenv("QUEUECTL_MAX_RETRIES", "7")
    monkeypatch.setenv("QUEUECTL_KILL_GRACE", "2s")
    data = ok("config", "list", "--json").json()
    assert data["max-retries"] == {"value": "7", "set": True, "source": "env"}  # set: stored, under the override
    assert data["kill-grace"] == {"value": "2s", "set": False, "source": "env"}
    assert ok("config", "get", "max-retries").out == "7\n"
    line = next(line for line in ok("config", "list").out.splitlines() if line.startswith("max-retries "))
    assert line.split()[:3] == ["max-retries", "7", "(QUEUECTL_MAX_RETRIES)"]
    monkeypatch.setenv("QUEUECTL_MAX_RETRIES", "lots")
    bad = run_cli("config", "list")
    assert (bad.code, bad.out) == (2, "")
    assert bad.err == "queuectl: error: QUEUECTL_MAX_RETRIES: max-retries must be a whole number >= 0; got 'lots'\n"


def test_an_output_that_cannot_show_a_character_gets_it_escaped(home: Path) -> None:
    """PYTHONIOENCODING=ascii or a Latin-1 locale: before, `list` failed halfway with 'internal error:
    UnicodeEncodeError' (and the input check blamed the job's text)."""
    ok("enqueue", "--id", "c", "--", "echo", "café ✓")
    shown = run_proc("list", home=home, env={"PYTHONIOENCODING": "ascii"})
    assert (shown.code, shown.err) == (0, ""), shown
    assert "echo 'caf\\xe9 \\u2713'" in shown.out


def test_config_list_columns_line_up_for_the_longest_key(home: Path) -> None:
    lines = ok("config", "list").out.splitlines()
    assert len({line.index("(") for line in lines}) == 1, lines  # each source column, "(default)", starts alike


def test_config_is_stored_in_the_database_for_every_process(home: Path) -> None:
    ok("config", "set", "kill-grace", "9s")
    result = run_proc("config", "get", "kill-grace", home=home)
    assert (result.code, result.out) == (0, "9s\n")


# ---- where data lives --------------------------------------------------------------------------------------------


def test_home_option_overrides_queuectl_home(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-home"
    ok("--home", str(other), "enqueue", '{"id":"there","command":"x"}')
    assert (other / "queue.db").is_file()
    assert ids(ok("--home", str(other), "list", "--json").json()) == ["there"]
    assert ids(jobs()) == []  # QUEUECTL_HOME's queue did not get it


def test_queuectl_home_is_used_when_set(home: Path) -> None:
    ok("enqueue", '{"id":"here","command":"x"}')
    assert (home / "queue.db").is_file()


def test_two_shells_on_one_home_see_the_same_queue(home: Path) -> None:
    assert run_proc("enqueue", '{"id":"from-proc","command":"x"}', home=home).code == 0
    ok("enqueue", '{"id":"from-cli","command":"x"}')
    result = run_proc("list", "--json", home=home)
    assert result.code == 0, result
    assert sorted(ids(result.json())) == ["from-cli", "from-proc"]


def test_xdg_data_home_is_the_default_without_queuectl_home(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    result = run_proc("enqueue", '{"id":"x1","command":"x"}', home=None, env={"XDG_DATA_HOME": str(xdg)})
    assert result.code == 0, result
    assert (xdg / "queuectl" / "queue.db").is_file()


def test_home_local_share_is_the_default_without_xdg(tmp_path: Path) -> None:
    fake_home = tmp_path / "user"
    fake_home.mkdir()
    env = {"HOME": str(fake_home), "XDG_DATA_HOME": ""}
    result = run_proc("status", home=None, env=env)
    assert result.code == 0, result
    assert (fake_home / ".local" / "share" / "queuectl" / "queue.db").is_file()


def test_home_option_wins_over_the_environment_in_a_real_process(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "flag-home"
    result = run_proc("--home", str(other), "enqueue", '{"id":"f","command":"x"}', home=home)
    assert result.code == 0, result
    assert (other / "queue.db").is_file() and not (home / "queue.db").exists()


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "queuectl"
    assert script.is_file()
    import subprocess

    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "enqueue" in done.stdout


# ---- the enqueue fast path ---------------------------------------------------------------------------------------


def _comparable(listing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs without the fields that differ between two runs a moment apart."""
    return [{k: v for k, v in j.items() if k not in ("created_at", "updated_at", "run_at")} for j in listing]


def test_the_fast_path_loads_neither_asyncio_nor_typer() -> None:
    """What makes it ~3x quicker to start; an import at the top of a module it uses would undo that in silence."""
    probe = "import sys, queuectl.fastpath; print(sorted({'asyncio', 'typer'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60,
                          env=proc_env(None))
    assert done.stdout == "[]\n", done.stdout


FAST_FORMS = [
    ['{"id":"j1","command":"sleep 2"}'],
    ['{"id":"j1","command":"make","priority":7,"max_retries":2,"timeout":"5m","run_at":"2030-01-01T00:00:00Z"}'],
    ["--id", "j1", "--priority", "5", "--", "ffmpeg", "-i", "a b.mp4", "out.webm"],
    ["--id", "j1", "--delay", "30s", "--timeout", "10", "--max-retries", "0", "--", "echo $HOME | wc -c"],
    ["--priority", "2", "--id", "j1", '{"command":"x","priority":1}'],
]


def test_plain_enqueue_takes_the_fast_path(home: Path) -> None:
    ok("status")  # the fast path needs an existing database
    result = run_proc("enqueue", "--", "echo", "fast", home=home, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.code == 0
    assert re.fullmatch(r"[0-9a-f]{12}\n", result.out)
    imported = result.err
    assert "queuectl.fastpath" in imported
    assert "typer" not in imported and "queuectl.cli" not in imported


def test_fast_path_reports_a_lock_held_past_the_busy_timeout_once(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, the fast path handed a lock timeout to the full CLI, which waited the busy timeout a second time
    (60 s for a 30 s timeout) before saying "stayed locked for 30 s"."""
    import sqlite3

    from queuectl import fastpath
    from queuectl.store import sqlite_schema

    ok("status")
    db = home / "queue.db"
    monkeypatch.setattr(sqlite_schema, "BUSY_TIMEOUT_S", 1.0)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process's long write, as far as SQLite can tell
    try:
        started = time.monotonic()
        code = fastpath.try_enqueue(["--home", str(home), "enqueue", '{"id":"j1","command":"true"}'])
        took_s = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 1  # answered here: None would send it through the full CLI and its own wait
    assert 1.0 <= took_s < 2.0
    err = capsys.readouterr().err
    assert err == f"queuectl: error: database {db} stayed locked by another process for 1 s; try again\n"
    assert err == f"queuectl: error: {sqlite_schema.locked_error(db)}\n"  # the full CLI's words for it
    assert jobs() == []


@pytest.mark.parametrize("form", FAST_FORMS)
def test_fast_path_and_full_cli_store_the_same_job(home: Path, tmp_path: Path, form: list[str]) -> None:
    ok("status")
    fast = run_proc("enqueue", *form, home=home)
    assert fast.code == 0 and fast.err == "", fast
    typer_home = tmp_path / "typer-home"
    full = ok("--home", str(typer_home), "enqueue", *form)
    assert fast.out == full.out == "j1\n"
    fast_jobs, full_jobs = jobs(), ok("--home", str(typer_home), "list", "--json").json()
    assert _comparable(fast_jobs) == _comparable(full_jobs)
    fast_job, full_job = fast_jobs[0], full_jobs[0]
    assert _ts(fast_job["run_at"]) - _ts(fast_job["created_at"]) == pytest.approx(
        _ts(full_job["run_at"]) - _ts(full_job["created_at"]), abs=0.5)


def test_fast_path_with_home_option(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    ok("--home", str(other), "status")
    result = run_proc("--home", str(other), "enqueue", "--id", "h1", "--", "true", home=home,
                      env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.code == 0 and result.out == "h1\n"
    assert "typer" not in result.err
    assert ids(ok("--home", str(other), "list", "--json").json()) == ["h1"]


@pytest.mark.parametrize("form", [
    ['{"id":"dup","command":"x"}'],
    ['{"command": '],
    ['{"command":"x","colour":"red"}'],
    ["--priority", "-1", "--", "x"],
    ["--delay", "soon", "--", "x"],
    ["--run-at", "tomorrow", "--", "x"],
    ["echo hi"],
    ["--", ""],
])
def test_fast_path_errors_are_reported_exactly_like_the_full_cli(home: Path, form: list[str]) -> None:
    ok("enqueue", '{"id":"dup","command":"x"}')
    before = jobs()
    fast = run_proc("enqueue", *form, home=home)
    full = run_cli("enqueue", *form)
    assert fast.code == full.code and fast.code in (1, 2)
    assert fast.err == full.err
    assert fast.err.startswith("queuectl: error: ") and fast.err.count("\n") == 1
    assert fast.out == full.out == ""
    assert jobs() == before


def test_first_enqueue_on_a_fresh_home_creates_it(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    result = run_proc("enqueue", "--id", "first", "--", "true", home=fresh)
    assert (result.code, result.out, result.err) == (0, "first\n", "")
    again = run_proc("enqueue", "--id", "second", "--", "true", home=fresh)
    assert (again.code, again.out) == (0, "second\n")
    listed = run_proc("list", "--json", home=fresh)
    assert sorted(ids(listed.json())) == ["first", "second"]


def _ts(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
