"""Every bad input of issue 2: one line on stderr, the documented exit code (2 usage or validation, 1 an operation that
cannot be done: not found, conflict, unusable data directory or database), no traceback, nothing on stdout, and the
queue exactly as it was."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl.models import JobState, Outcome
from queuectl.store import sqlite_schema
from queuectl.store.sqlite import SQLiteStore
from tests.helpers import Result, proc_argv, proc_env, run_cli, run_proc

USAGE, FAILED = 2, 1


def assert_one_line_error(result: Result, code: int, *words: str) -> None:
    assert result.code == code, result
    assert result.out == "", result
    lines = result.err.splitlines()
    assert len(lines) == 1 and result.err.endswith("\n"), result.err
    assert lines[0].startswith("queuectl: error: "), result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0], (word, lines[0])


def snapshot(home: Path) -> dict[str, Any]:
    """Everything a user can see of the queue: `list --json`, and through the store every job (all fields), every
    attempt, the counters and the stored config."""
    listing = run_cli("--home", str(home), "list", "--json", "--limit", "1000")
    assert listing.code == 0, listing

    async def read() -> dict[str, Any]:
        async with SQLiteStore(home / "queue.db") as store:
            all_jobs = await store.list_jobs(limit=100_000)
            return {"jobs": all_jobs, "attempts": {j.id: await store.attempts(j.id) for j in all_jobs},
                    "counts": (await store.counts(now=0)).by_state, "config": await store.config_items()}

    return {"list": listing.json(), **asyncio.run(read())}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A queue with a job in each state (j-running held by an engine) and one config value set, built once."""
    home = tmp_path_factory.mktemp("template") / "home"
    lines = "".join(f'{{"id":"j-{name}","command":"echo {name}"}}\n' for name in ("running", "done", "dead", "failed"))
    assert run_cli("--home", str(home), "enqueue", "--file", "-", input=lines).code == 0

    async def transitions() -> None:
        async with SQLiteStore(home / "queue.db") as store:
            claims = {c.job.id: c for c in await store.claim_due("eng-1", now=time.time(), limit=10)}
            now = time.time()
            out = Outcome(exit_code=1, error="exit code 1", started_at=now - 1, finished_at=now)
            assert await store.complete(claims["j-done"], "eng-1", Outcome(exit_code=0, started_at=now - 1,
                                                                             finished_at=now))
            assert await store.bury(claims["j-dead"], "eng-1", out)
            assert await store.schedule_retry(claims["j-failed"], "eng-1", out, retry_at=now + 3600)

    asyncio.run(transitions())
    assert run_cli("--home", str(home), "enqueue", '{"id":"j-pending","command":"echo pending","priority":3}').code == 0
    assert run_cli("--home", str(home), "config", "set", "max-retries", "4").code == 0
    before = snapshot(home)
    assert {s: n for s, n in before["counts"].items() if n} == dict.fromkeys(
        (JobState.PENDING, JobState.PROCESSING, JobState.COMPLETED, JobState.FAILED, JobState.DEAD), 1)
    assert not (home / "queue.db-wal").exists() or (home / "queue.db-wal").stat().st_size == 0
    return home, before


@pytest.fixture
def queue(home: Path, template: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    """This test's own copy of the template queue (in QUEUECTL_HOME), and its snapshot."""
    source, before = template
    home.mkdir(mode=0o700)
    shutil.copy2(source / "queue.db", home / "queue.db")
    return {"home": home, "before": before}


def refused(queue: dict[str, Any], args: list[str], code: int, *words: str, input: str | None = None) -> None:
    assert_one_line_error(run_cli(*args, input=input), code, *words)
    assert snapshot(queue["home"]) == queue["before"]


# ---- the job itself ----------------------------------------------------------------------------------------------

ENQUEUE_REFUSED = {
    "malformed JSON": (['{"command": '], "JSON"),
    "malformed JSON, single quotes": (["{'command': 'x'}"], "JSON"),
    "JSON array": (['["echo", "hi"]'], "JSON object"),
    "JSON string": (['"echo hi"'], "JSON object"),
    "JSON number": (["42"], "JSON object"),
    "plain words without --": (["echo hi"], "JSON"),
    "no job at all": ([], "missing"),
    "nothing after --": (["--"], "command"),
    "missing command": (['{"id":"new"}'], "command"),
    "empty command": (['{"command":""}'], "command"),
    "blank command": (['{"command":"   "}'], "command"),
    "empty command after --": (["--", ""], "command"),
    "unknown field": (['{"command":"x","colour":"red"}'], "colour"),
    "command not a string": (['{"command":5}'], "command"),
    "command a list": (['{"command":["echo","hi"]}'], "command"),
    "id not a string": (['{"id":42,"command":"x"}'], "id"),
    "id with a slash": (['{"id":"a/b","command":"x"}'], "id"),
    "priority a string": (['{"command":"x","priority":"high"}'], "priority"),
    "priority a bool": (['{"command":"x","priority":true}'], "priority"),
    "priority negative": (['{"command":"x","priority":-1}'], "priority"),
    "priority a fraction": (['{"command":"x","priority":1.5}'], "priority"),
    "max_retries negative": (['{"command":"x","max_retries":-1}'], "max_retries"),
    "max_retries non-numeric": (['{"command":"x","max_retries":"lots"}'], "max_retries"),
    "max_retries a list": (['{"command":"x","max_retries":[1]}'], "max_retries"),
    "timeout negative": (['{"command":"x","timeout":-5}'], "timeout"),
    "timeout non-numeric": (['{"command":"x","timeout":"long"}'], "timeout"),
    "timeout zero": (['{"command":"x","timeout":0}'], "timeout"),
    "timeout an object": (['{"command":"x","timeout":{"s":1}}'], "timeout"),
    "timeout past 100 years": (['{"command":"x","timeout":1e300}'], "timeout"),
    "delay past 100 years": (['{"command":"x","delay":99999999999}'], "delay"),
    "run_at on the last day of 9999": (['{"command":"x","run_at":"9999-12-31T12:00:00Z"}'],
                                       "before 9999-12-31T00:00:00Z"),
    "delay negative": (['{"command":"x","delay":-5}'], "delay"),
    "delay non-numeric": (['{"command":"x","delay":"soon"}'], "delay"),
    "delay a bool": (['{"command":"x","delay":true}'], "delay"),
    "run_at unparseable": (['{"command":"x","run_at":"tomorrow"}'], "run_at"),
    "run_at impossible date": (['{"command":"x","run_at":"2027-02-30T00:00:00Z"}'], "run_at"),
    "run_at a list": (['{"command":"x","run_at":[2027,1,1]}'], "run_at"),
    "run_at and delay": (['{"command":"x","run_at":"2030-01-01T00:00:00Z","delay":5}'], "delay"),
    "flag priority negative": (["--priority", "-1", "--", "x"], "priority"),
    "flag priority non-numeric": (["--priority", "high", "--", "x"], "priority"),
    "flag max-retries negative": (["--max-retries", "-1", "--", "x"], "max_retries"),
    "flag max-retries non-numeric": (["--max-retries", "x", "--", "x"], "max_retries"),
    "flag timeout negative": (["--timeout", "-5", "--", "x"], "timeout"),
    "flag timeout non-numeric": (["--timeout", "long", "--", "x"], "timeout"),
    "flag timeout past 100 years": (["--timeout", "36526d", "--", "x"], "timeout"),
    "flag delay negative": (["--delay", "-5", "--", "x"], "delay"),
    "flag delay non-numeric": (["--delay", "soon", "--", "x"], "delay"),
    "flag run-at unparseable": (["--run-at", "next tuesday", "--", "x"], "run_at"),
    "flag id invalid": (["--id", "has space", "--", "x"], "id"),
    "unknown flag": (["--colour", "red", "--", "x"], "colour"),
    "file and argument": (["--file", "-", '{"command":"x"}'], "file"),
    # What a shell passes for bytes that are not UTF-8 (a Latin-1 file name): Python's lone surrogates U+DC80-DCFF.
    "command with a byte that is not UTF-8": (["--", "cat caf\udce9.txt"], "not valid UTF-8 text: byte 0xe9"),
    "command with an unpaired surrogate escape": (['{"command":"echo \\ud800"}'], "unpaired surrogate \\ud800"),
    "env value with a byte that is not UTF-8": (["--env", "A=\udcff", "--", "x"], "environment variable A"),
    "unique_key with an unpaired surrogate": (['{"command":"x","unique_key":"\\udc80"}'], "unique_key"),
    "cwd with a byte that is not UTF-8": (['{"command":"x","cwd":"/tmp/d\\udce9"}'], "cwd"),
    "cwd with a NUL byte": (['{"command":"x","cwd":"/tmp/a\\u0000b"}'], "cwd"),
    "id ending in a newline": (['{"id":"abc\\n","command":"x"}'], "job id"),
    "queue name ending in a newline": (['{"command":"x","queue":"q\\n"}'], "queue name"),
    "tag ending in a newline": (['{"command":"x","tags":["t\\n"]}'], "tag"),
    "env name ending in a newline": (['{"command":"x","env":{"A\\n":"1"}}'], "environment variable name"),
}


@pytest.mark.parametrize("case", list(ENQUEUE_REFUSED))
def test_bad_job_is_refused_as_usage_error(queue: dict[str, Any], case: str) -> None:
    args, word = ENQUEUE_REFUSED[case]
    refused(queue, ["enqueue", *args], USAGE, word)


def test_duplicate_id_without_replace_is_a_conflict(queue: dict[str, Any]) -> None:
    refused(queue, ["enqueue", '{"id":"j-pending","command":"other"}'], FAILED, "j-pending", "exists")
    refused(queue, ["enqueue", "--id", "j-done", "--", "other"], FAILED, "j-done")


def test_replace_of_a_running_job_is_a_conflict(queue: dict[str, Any]) -> None:
    refused(queue, ["enqueue", "--replace", '{"id":"j-running","command":"other"}'], FAILED, "j-running", "running")


# ---- JSON Lines batches ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "word"), [
    ('{"command": ', "JSON"),
    ("[1, 2]", "JSON object"),
    ('{"command": "x", "colour": "red"}', "colour"),
    ('{"command": ""}', "command"),
    ('{"command": "x", "priority": -1}', "priority"),
    ('{"command": "x", "run_at": "someday"}', "run_at"),
    ('{"id": "b1", "command": "again"}', "b1"),
])
def test_a_bad_line_refuses_the_whole_batch_naming_the_line(queue: dict[str, Any], tmp_path: Path, bad: str,
                                                            word: str) -> None:
    lines = ['{"id": "b1", "command": "x"}', "", '{"id": "b2", "command": "y"}', bad, '{"id": "b3", "command": "z"}']
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(lines) + "\n")
    refused(queue, ["enqueue", "--file", str(path)], USAGE, "line 4", word)
    refused(queue, ["enqueue", "--file", "-"], USAGE, "line 4", word, input=path.read_text())


def test_a_batch_line_whose_id_exists_refuses_the_batch_naming_that_id(queue: dict[str, Any]) -> None:
    lines = '{"id": "aaa-new", "command": "x"}\n{"id": "j-pending", "command": "y"}\n'
    refused(queue, ["enqueue", "--file", "-"], FAILED, "j-pending", input=lines)


def test_a_file_that_cannot_be_read_is_a_usage_error(queue: dict[str, Any], tmp_path: Path) -> None:
    refused(queue, ["enqueue", "--file", str(tmp_path / "missing.jsonl")], USAGE, "missing.jsonl")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    refused(queue, ["enqueue", "--file", str(binary)], USAGE)


# ---- reading, states and ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["list", "--state", "bogus"], ["list", "--state", ""], ["purge", "--state", "bogus"],
                                  ["purge", "--state", "pending"], ["purge", "--state", "processing"]])
def test_unknown_or_wrong_state_is_a_usage_error(queue: dict[str, Any], args: list[str]) -> None:
    refused(queue, args, USAGE, args[-1] or "state")


@pytest.mark.parametrize("args", [["list", "--limit", "0"], ["list", "--limit", "many"], ["list", "--offset", "-1"],
                                  ["purge", "--state", "completed", "--older-than", "a while"],
                                  ["dlq", "purge", "--older-than", "-1d"], ["dlq", "retry"],
                                  ["dlq", "retry", "j-dead", "--all"], ["purge"], ["inspect"], ["delete"],
                                  ["frobnicate"], ["list", "--colour"], ["config", "set", "max-retries"]])
def test_usage_errors(queue: dict[str, Any], args: list[str]) -> None:
    refused(queue, args, USAGE)


@pytest.mark.parametrize("args", [["inspect", "nope"], ["delete", "nope"], ["delete", "j-pending", "nope"],
                                  ["dlq", "retry", "nope"], ["dlq", "retry", "j-dead", "nope"]])
def test_unknown_job_id_is_not_found(queue: dict[str, Any], args: list[str]) -> None:
    refused(queue, args, FAILED, "nope")


@pytest.mark.parametrize("args", [["inspect", "a\udce9"], ["logs", "a\udce9"], ["delete", "a\udce9"],
                                  ["dlq", "retry", "a\udce9"], ["cancel", "a\udce9"],
                                  ["config", "set", "on-success", "echo \udce9"],
                                  ["webhook", "add", "http://127.0.0.1:9/\udce9"]])
def test_an_argument_that_is_not_utf8_is_one_usage_error(queue: dict[str, Any], args: list[str]) -> None:
    # Nothing stored can hold it (both stores keep UTF-8 text); it is shown as typed, the byte named.
    refused(queue, args, USAGE, "is not valid UTF-8 text: byte 0xe9", "\\xe9'")


def test_bytes_that_are_not_utf8_in_a_real_command_line_and_directory(queue: dict[str, Any], tmp_path: Path) -> None:
    latin1_dir = tmp_path / "caf\udce9"  # os.fsencode: b"caf\xe9", a directory name that is not UTF-8
    latin1_dir.mkdir()
    from_there = run_proc("enqueue", "--", "pwd", home=queue["home"], cwd=latin1_dir)
    assert_one_line_error(from_there, USAGE, "cwd (the directory the command runs in) is not valid UTF-8 text")
    argv = run_proc("enqueue", "--", os.fsdecode(b"cat caf\xe9.txt"), home=queue["home"])
    assert_one_line_error(argv, USAGE, "command is not valid UTF-8 text: byte 0xe9 at character 8")
    assert snapshot(queue["home"]) == queue["before"]


def test_enqueue_from_a_directory_removed_under_the_shell(queue: dict[str, Any], tmp_path: Path) -> None:
    """Before, such a job ran in / instead (where a relative `rm -r *` would have run too)."""
    def from_removed_dir(*args: str, input: str = "") -> Result:
        script = 'mkdir "$0/gone" && cd "$0/gone" && rmdir "$0/gone" && exec "$@"'
        done = subprocess.run(["sh", "-c", script, str(tmp_path), *proc_argv(*args)], input=input,
                              capture_output=True, text=True, env=proc_env(queue["home"]), timeout=60, check=False)
        return Result(done.returncode, done.stdout, done.stderr)

    for refused_args in (["enqueue", "--", "pwd"], ["cron", "add", "nightly", "0 3 * * *", "--", "pwd"]):
        assert_one_line_error(from_removed_dir(*refused_args), USAGE, "current directory", "give the job a cwd")
    batch = from_removed_dir("enqueue", "--file", "-", input='{"command":"pwd","cwd":"/tmp"}\n{"command":"pwd"}\n')
    assert_one_line_error(batch, USAGE, "line 2", "current directory")
    assert snapshot(queue["home"]) == queue["before"]
    given = from_removed_dir("enqueue", '{"id":"elsewhere","command":"pwd","cwd":"/tmp"}')
    assert (given.code, given.out) == (0, "elsewhere\n"), given


def test_delete_of_a_running_job_is_refused(queue: dict[str, Any]) -> None:
    refused(queue, ["delete", "j-pending", "j-running"], FAILED, "j-running")


def test_dlq_retry_of_a_job_that_is_not_dead_is_refused(queue: dict[str, Any]) -> None:
    refused(queue, ["dlq", "retry", "j-dead", "j-pending"], FAILED, "j-pending")


# ---- config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["config", "get", "nope"], ["config", "set", "nope", "1"],
                                  ["config", "unset", "nope"], ["config", "set", "max--retries", "1"]])
def test_unknown_config_key(queue: dict[str, Any], args: list[str]) -> None:
    refused(queue, args, USAGE, "unknown config key", "max-retries")


@pytest.mark.parametrize(("key", "value"), [("max-retries", "abc"), ("max-retries", "2.5"), ("max-retries", "-1"),
                                            ("backoff-base", "0"), ("backoff-base", "x"), ("backoff-max", "forever"),
                                            ("job-timeout", "-5s"), ("kill-grace", "soon"), ("retry-jitter", "2"),
                                            ("claim-ahead-below", "quick"), ("job-timeout", "1e300"),
                                            ("kill-grace", "40000d")])
def test_invalid_config_value(queue: dict[str, Any], key: str, value: str) -> None:
    refused(queue, ["config", "set", key, "--", value] if value.startswith("-") else ["config", "set", key, value],
            USAGE, key)


def test_a_negative_config_value_without_double_dash_is_still_one_usage_error(queue: dict[str, Any]) -> None:
    refused(queue, ["config", "set", "max-retries", "-1"], USAGE)


# ---- the data directory and the database -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["status"], ["list"], ["enqueue", '{"command":"x"}'], ["config", "list"]])
def test_a_home_that_cannot_be_created_is_refused(tmp_path: Path, args: list[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file")
    assert_one_line_error(run_cli("--home", str(blocker / "home"), *args), FAILED, str(blocker / "home"))
    assert_one_line_error(run_cli("--home", str(blocker), *args), FAILED, str(blocker))
    assert blocker.read_text() == "I am a file"


def test_a_home_that_cannot_be_created_is_refused_by_a_real_process(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for args in (["enqueue", "--", "true"], ["status"]):
        assert_one_line_error(run_proc(*args, home=blocker / "home"), FAILED, "data directory")


def _not_sqlite(db: Path) -> None:
    db.write_bytes(b"my shopping list: eggs, milk, bread\n" * 100)


def _foreign(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()


def _newer(db: Path) -> None:
    assert run_cli("status").code == 0
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {sqlite_schema.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


DATABASES = {"not sqlite": (_not_sqlite, "not a queuectl database"), "foreign": (_foreign, "not a queuectl"),
             "newer": (_newer, "newer")}


@pytest.mark.parametrize("kind", list(DATABASES))
@pytest.mark.parametrize("args", [["status"], ["list", "--json"], ["enqueue", '{"command":"x"}'],
                                  ["enqueue", "--", "true"], ["config", "set", "max-retries", "1"]])
def test_a_database_that_is_not_ours_is_refused(home: Path, kind: str, args: list[str]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    db = home / "queue.db"
    make, word = DATABASES[kind]
    make(db)
    content = db.read_bytes()
    assert_one_line_error(run_cli(*args), FAILED, word, str(db))
    if kind == "foreign":  # its bytes are checked in the real-process test below; here: its tables are untouched
        conn = sqlite3.connect(db)
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["recipes"]
        conn.close()
    else:
        assert db.read_bytes() == content


@pytest.mark.parametrize("kind", list(DATABASES))
def test_a_database_that_is_not_ours_gives_one_line_in_real_processes(home: Path, kind: str) -> None:
    """Several processes at once, through the fast path and the full CLI: every one prints exactly one line."""
    home.mkdir(parents=True, exist_ok=True)
    db = home / "queue.db"
    make, word = DATABASES[kind]
    make(db)
    content = db.read_bytes()
    argvs = [["enqueue", "--", "true"], ["status"], ["list"], ["enqueue", '{"command":"x"}']] * 2
    procs = [subprocess.Popen(proc_argv(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=proc_env(home), stdin=subprocess.DEVNULL) for argv in argvs]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append(Result(proc.returncode, out, err))
    for argv, result in zip(argvs, results, strict=True):
        assert result.code == FAILED, (argv, result)
        assert_one_line_error(result, FAILED, word)
    assert db.read_bytes() == content
