"""Bad input, fuzzed: Hypothesis generates job JSON, JSON Lines batches, arguments for every command, config values
and engine options, and runs `queuectl` in this process the way the installed entry point does (queuectl/__main__.py:
the enqueue fast path first, then the full CLI), with stdout, stderr and stdin captured.

What must hold for every input: no traceback and no "internal error" line, exit code 0, 1 or 2, and after every
refused input (non-zero exit) the queue exactly as it was (every row of jobs, attempts, config and the counters).
After every accepted input the queue stays readable (`list`, `status`, `inspect`), and a stored config value is one
the engine accepts. Reproducible: derandomized, no example database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import queuectl.__main__
from queuectl import config
from queuectl.models import Outcome
from queuectl.store.sqlite import SQLiteStore
from tests.helpers import Result, _TextBuffer, run_cli
from tests.torture.support import forbidden_in, table_rows

TABLES = ("jobs", "attempts", "config", "state_counts")
#: QUEUECTL_FUZZ_SURVEY=1: note every broken rule instead of failing at the first (to list them all), print them.
SURVEY = bool(os.environ.get("QUEUECTL_FUZZ_SURVEY"))
SURVEYED: list[str] = []
FUZZ = settings(
    derandomize=True, database=None, deadline=None, print_blob=False,
    # No shrinking: a failure is reported as found (reproducible: derandomized), and the session stays bounded.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much, HealthCheck.large_base_example],
)


# ---- running the CLI as its entry point does ------------------------------------------------------------------------


def run_entry(*args: str, input: str | None = None) -> Result:
    """`queuectl ARGS` through queuectl.__main__.main (fast path, then the full CLI), in this process."""
    stdout, stderr, stdin = _TextBuffer(), _TextBuffer(), _TextBuffer(input or "")
    old = sys.argv, sys.stdin
    sys.argv, sys.stdin = ["queuectl", *args], stdin
    code: Any = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                queuectl.__main__.main()
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv, sys.stdin = old
    return Result(code if isinstance(code, int) else 1, stdout.getvalue(), stderr.getvalue())


class Fuzzed:
    """One fuzzed home: runs commands against it and checks the rules after each."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.db = home / "queue.db"
        self.before = table_rows(self.db, *TABLES)
        self.tally = {"examples": 0, "accepted (exit 0)": 0, "refused (exit 1)": 0, "refused (exit 2)": 0,
                      "tracebacks or internal errors": 0}

    def run(self, args: list[str], input: str | None = None, *, check_readable: Callable[[Result], None] | None = None
            ) -> Result:
        result = run_entry("--home", str(self.home), *args, input=input)
        self.tally["examples"] += 1
        try:
            self._check(result, args, input, check_readable)
        except AssertionError as exc:
            if not SURVEY:
                raise
            SURVEYED.append(f"{args!r} input={input!r:.200}: {str(exc)[:400]}")
            self.before = table_rows(self.db, *TABLES)
        return result

    def _check(self, result: Result, args: list[str], input: str | None,
               check_readable: Callable[[Result], None] | None) -> None:
        if forbidden_in(result.err) or forbidden_in(result.out):
            self.tally["tracebacks or internal errors"] += 1
        assert not forbidden_in(result.err), (args, input, result.err)
        assert result.code in (0, 1, 2), (args, input, result)
        if result.code == 0:
            self.tally["accepted (exit 0)"] += 1
            if check_readable is not None:
                check_readable(result)
            self.before = table_rows(self.db, *TABLES)
        else:
            self.tally[f"refused (exit {result.code})"] += 1
            assert result.err.startswith("queuectl: error: ") and result.err.count("\n") == 1, (args, result)
            assert table_rows(self.db, *TABLES) == self.before, ("a refused command changed the queue", args, input)

    def readable(self, result: Result) -> None:
        """After an accepted change: the queue can still be listed, counted and each new job inspected."""
        for args in (["list", "--json", "--limit", "100000"], ["status", "--json"], ["dlq", "list"]):
            shown = run_cli("--home", str(self.home), *args)
            assert shown.code == 0 and not forbidden_in(shown.err), (args, shown)
        for job_id in result.out.split()[:3]:
            shown = run_cli("--home", str(self.home), "inspect", job_id, "--json")
            assert shown.code == 0, (job_id, shown)


def _build(home: Path, with_retry_pending: bool) -> None:
    """Jobs in every state (a processing one held by an engine id that is not registered), a stored config value."""
    lines = "".join(f'{{"id":"j-{name}","command":"echo {name}"}}\n' for name in ("running", "done", "dead", "failed"))
    assert run_cli("--home", str(home), "enqueue", "--file", "-", input=lines).code == 0

    async def transitions() -> None:
        async with SQLiteStore(home / "queue.db") as store:
            claims = {c.job.id: c for c in await store.claim_due("eng-1", now=time.time(), limit=10)}
            now = time.time()
            failed = Outcome(exit_code=1, error="exit code 1", started_at=now - 1, finished_at=now)
            await store.complete(claims["j-done"], "eng-1", Outcome(exit_code=0, started_at=now - 1, finished_at=now))
            await store.bury(claims["j-dead"], "eng-1", failed)
            if with_retry_pending:
                await store.schedule_retry(claims["j-failed"], "eng-1", failed, retry_at=now + 3600)
            else:
                await store.bury(claims["j-failed"], "eng-1", failed)
                await store.complete(claims["j-running"], "eng-1",
                                     Outcome(exit_code=0, started_at=now - 1, finished_at=now))

    asyncio.run(transitions())
    assert run_cli("--home", str(home), "enqueue", "--delay", "1d", "--id", "j-later", "--", "echo later").code == 0
    assert run_cli("--home", str(home), "config", "set", "max-retries", "4").code == 0


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz-templates")
    found = {"queue": root / "queue", "engine": root / "engine"}
    _build(found["queue"], with_retry_pending=True)
    _build(found["engine"], with_retry_pending=False)  # nothing an engine would run: `run --until-idle` ends at once
    return found


@pytest.fixture
def fuzzed(templates: dict[str, Path], tmp_path: Path, request: pytest.FixtureRequest) -> Fuzzed:
    kind = "engine" if "engine" in request.node.name else "queue"
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    shutil.copy2(templates[kind] / "queue.db", home / "queue.db")
    return Fuzzed(home)


# ---- strategies -------------------------------------------------------------------------------------------------

BIG = 2**70
#: What a shell passes for bytes that are not UTF-8 (a Latin-1 file name): os.fsdecode's lone surrogates. And any
#: text with JSON's unpaired \uD800-\uDFFF escapes (st.text leaves surrogates out).
shell_bytes = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b).map(os.fsdecode)
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
scalars = (st.none() | st.booleans() | st.integers(-BIG, BIG) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=20) | any_text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
durations = st.from_regex(r"\A\s?-?\d{1,25}(\.\d{1,6})?\s?(ms|s|m|h|d|w|x|)?\s?\Z") | st.sampled_from(
    ["0", "0s", "1e9", "1e999", "NaN", "inf", "-1", "", " ", "30s", "5m", "2h", "7d", "99999999999999999999w"])
numbers = st.integers(-BIG, BIG).map(str) | st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.sampled_from(
    ["0", "1", "-1", "1.5", "1e3", "1_000", " 3 ", "0x10", "", "3.0", "١٢"])
times = st.datetimes().map(lambda d: d.isoformat()) | st.sampled_from(
    ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "2026-01-31T12:00:00Z",
     "2026-13-01", "yesterday", "1e20"]) | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-BIG, BIG)
job_ids = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,20}\Z") | st.text(max_size=20) | st.sampled_from(
    ["j-done", "j-running", "j-dead", ".", "..", "a/b", "a#1", "x" * 129])
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": job_ids | json_values,
    "command": st.text(max_size=40) | any_text | st.just("true") | json_values | st.just("x" * (1 << 20)),
    "priority": st.integers(-BIG, BIG) | numbers | json_values,
    "max_retries": st.integers(-BIG, BIG) | numbers | json_values,
    "run_at": times | json_values,
    "delay": durations | st.floats(allow_nan=True, allow_infinity=True) | json_values,
    "timeout": durations | st.floats(allow_nan=True, allow_infinity=True) | json_values,
    "timeout_s": durations | st.integers(-BIG, BIG) | json_values,
    "cwd": st.sampled_from(["/", "/tmp", "relative", "", "/nonexistent/dir"]) | st.text(max_size=10) | json_values,
    "state": st.sampled_from(["pending", "dead", "PENDING"]) | json_values,
    "attempts": st.integers(-2, 2) | json_values,
    "created_at": json_values,
    "updated_at": json_values,
}
#: Jobs that are nearly right: a plausible command, each other field plausible or at its limits.
NEARLY: dict[str, st.SearchStrategy[Any]] = {
    "id": st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,20}\Z") | st.sampled_from(["j-done", "j-running"]),
    "priority": st.integers(-2, 1_000_001) | st.integers(-BIG, BIG),
    "max_retries": st.integers(-2, 1001) | st.integers(-BIG, BIG),
    "run_at": times,
    "delay": durations | st.floats(0, 1e20) | st.integers(-1, 10**18),
    "timeout": durations | st.floats(0, 1e308) | st.integers(-1, 10**18),
    "cwd": st.sampled_from(["/", "/tmp", "/nonexistent/dir", "relative"]),
    "state": st.just("pending"),
    "attempts": st.just(0),
}
nearly_valid_jobs = st.fixed_dictionaries(
    {"command": st.sampled_from(["true", "echo hi", "exit 3", "sleep 1"]) | st.text(min_size=1, max_size=20)},
    optional=NEARLY)
job_objects = nearly_valid_jobs | st.fixed_dictionaries({}, optional=FIELDS) | st.fixed_dictionaries(
    {"command": st.just("true")}, optional={k: v for k, v in FIELDS.items() if k != "command"}) | st.dictionaries(
    st.text(max_size=10), json_values, max_size=4)
job_texts = nearly_valid_jobs.map(json.dumps) | job_objects.map(json.dumps) | st.text(max_size=40) | st.sampled_from(
    ["[" * 5000, "{" * 5000, '{"command": "true"', "null", "[]", '"true"', "{}", "\x00", '{"command":"a\\u0000b"}'])


# ---- properties -------------------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=200)
@given(text=job_texts)
@example(text='{"command": "true", "run_at": "9999-12-31T23:59:59-12:00"}')
@example(text='{"command": "true", "delay": "99999999999999d"}')
@example(text='{"command": "true", "timeout": 1e308}')
def test_fuzzed_job_json(fuzzed: Fuzzed, figures: dict[str, Any], text: str) -> None:
    figures.update(fuzzed.tally)
    fuzzed.run(["enqueue", text], check_readable=fuzzed.readable)
    figures.update(fuzzed.tally)


@settings(FUZZ, max_examples=100)
@given(lines=st.lists(job_texts | st.just(""), min_size=1, max_size=6),
       flags=st.lists(st.tuples(st.sampled_from(["--priority", "--delay", "--run-at", "--timeout", "--max-retries",
                                                 "--id", "--replace"]), numbers | durations), max_size=2))
def test_fuzzed_json_lines_batch(fuzzed: Fuzzed, figures: dict[str, Any], lines: list[str],
                                 flags: list[tuple[str, str]]) -> None:
    extra = [word for flag, value in flags for word in ([flag] if flag == "--replace" else [flag, value])]
    fuzzed.run(["enqueue", "--file", "-", *extra], input="\n".join(lines) + "\n", check_readable=fuzzed.readable)
    figures.update(fuzzed.tally)


#: Every command (long-running ones bounded: `top --once`; `logs` without -f; `run` has its own property below),
#: with the options it takes.
COMMANDS: dict[tuple[str, ...], list[str]] = {
    (): ["--help", "--version", "nonsense"],
    ("enqueue",): ["--id", "--priority", "--delay", "--run-at", "--timeout", "--max-retries", "--replace", "--"],
    ("status",): ["--json"],
    ("list",): ["--state", "--limit", "--offset", "--oldest-first", "--json"],
    ("inspect",): ["--json"],
    ("logs",): ["--attempt"],
    ("dlq", "list"): ["--limit", "--json"],
    ("dlq", "retry"): ["--all"],
    ("dlq", "purge"): ["--older-than"],
    ("delete",): [],
    ("purge",): ["--state", "--older-than"],
    ("config", "list"): ["--json"],
    ("config", "get"): [],
    ("config", "set"): [],
    ("config", "unset"): [],
    ("worker", "stop"): ["--wait", "--timeout"],
    ("stats",): ["--since", "--json"],
    ("top", "--once"): ["--interval"],
}
words = (st.sampled_from(["j-done", "j-dead", "j-failed", "j-running", "j-later", "completed", "dead", "pending",
                          "failed", "processing", "max-retries", "backoff-base", "-", "--", "--help", "-h", ""])
         | numbers | durations | st.text(max_size=12) | shell_bytes)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A command path, then up to 4 parts: an option with a value, an option alone, or a bare word."""
    path = draw(st.sampled_from(sorted(COMMANDS)))
    options = COMMANDS[path]
    rest: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 2)) if options else 2
        if kind == 0:
            rest += [draw(st.sampled_from(options)), draw(words)]
        elif kind == 1:
            rest.append(draw(st.sampled_from(options)))
        else:
            rest.append(draw(words))
    # No --home/--database-url (a fuzzed path elsewhere), no following a log (-f runs until the job ends).
    return [*path, *(w for w in rest if not w.startswith(("--home", "--database", "--follow", "-f")))]


@settings(FUZZ, max_examples=300)
@given(argv=command_lines())
@example(argv=["list", "--limit", "99999999999999999999999"])
@example(argv=["list", "--offset", "99999999999999999999999"])
@example(argv=["dlq", "list", "--limit", "-1"])
@example(argv=["logs", "j-done", "--attempt", "99999999999999999999999"])
@example(argv=["worker", "stop", "--wait", "--timeout", "1e999"])
def test_fuzzed_arguments_for_every_command(fuzzed: Fuzzed, figures: dict[str, Any], argv: list[str]) -> None:
    fuzzed.run(argv)
    figures.update(fuzzed.tally)


config_keys = st.sampled_from([*config.KEYS, *(k.replace("-", "_") for k in config.KEYS),
                               *(k.upper() for k in config.KEYS)]) | st.text(max_size=12)
config_values = numbers | durations | st.text(max_size=15) | shell_bytes | st.from_regex(
    r"\A\s?\d{1,22}(\.\d{1,4})?\s?(b|k|kb|kib|m|mb|mib|g|gb|gib|t|KiB|MiB|GiB)?\s?\Z") | st.sampled_from(
    ["none", "off", "0", "1000", "1001", "0.5", "1", "100MiB", "1e999GiB", "nan", "-0"])


@settings(FUZZ, max_examples=200)
@given(key=config_keys, value=config_values)
@example(key="backoff-max", value="99999999999999999999w")
@example(key="log-max-bytes", value="1e308GiB")
@example(key="kill-grace", value="1e308")
def test_fuzzed_config_values(fuzzed: Fuzzed, figures: dict[str, Any], key: str, value: str) -> None:
    def engine_accepts(_: Result) -> None:
        for args in (["config", "list", "--json"], ["config", "get", key], ["status"]):
            shown = run_cli("--home", str(fuzzed.home), *args)
            assert shown.code == 0 and not forbidden_in(shown.err), (args, shown)
        stored = {r[0]: r[1] for r in table_rows(fuzzed.db, "config")["config"]}
        config.resolve(stored, environ={})  # what the engine does at every decision: must not raise

    fuzzed.run(["config", "set", key, value], check_readable=engine_accepts)
    figures.update(fuzzed.tally)


def _as_int(word: str) -> int | None:
    try:
        return int(word)
    except ValueError:
        return None


engine_options = st.tuples(
    st.lists(st.one_of(
        st.tuples(st.sampled_from(["--workers", "-w"]), st.integers(1, 4).map(str) | st.integers(-BIG, 0).map(str)
                  | st.text(max_size=4)),
        st.tuples(st.just("--grace"), durations),
        st.tuples(st.just("--log-format"), st.sampled_from(["text", "json", "text", "json", "xml", ""])
                  | st.text(max_size=5)),
    ), max_size=3),
    st.lists(st.sampled_from(["--grace", "--workers", "--nonsense", "-"]) | st.text(max_size=6), max_size=1),
).map(lambda both: [word for part in both[0] for word in part] + both[1])


@settings(FUZZ, max_examples=40)
@given(argv=st.tuples(st.sampled_from([("run",), ("worker", "start")]), engine_options))
def test_fuzzed_engine_options(fuzzed: Fuzzed, figures: dict[str, Any], argv: tuple[tuple[str, ...], list[str]]
                               ) -> None:
    """`run` / `worker start` with fuzzed options, always with --until-idle, on a queue with nothing to run: either
    refused, or an engine that starts, finds nothing due and exits 0. (--workers is at most 4 by construction.)"""
    path, rest = argv
    if path == ("worker", "start"):
        rest = ["--count" if w in ("--workers", "-w") else w for w in rest]
    rest = [w for w in rest if _as_int(w) is None or _as_int(w) <= 4]  # type: ignore[operator]
    fuzzed.run([*path, *rest, "--until-idle"])
    figures.update(fuzzed.tally)


def teardown_module() -> None:
    if SURVEYED:
        print(f"\n{len(SURVEYED)} broken rule(s) found by the survey:", *SURVEYED, sep="\n")
