"""Helpers for the engine tests: a real `queuectl run` subprocess, CLI calls, and bounded waits on the database.

Nothing here mocks anything: engines are `python -m queuectl run` processes (or `Engine` in-process), the database
is the SQLite file of a per-test home, and every wait polls under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from queuectl import procs
from queuectl.api import Queue
from queuectl.engine import Engine, EngineOptions, Summary
from queuectl.events import EventLog
from queuectl.models import Attempt, Job, JobState

T = TypeVar("T")

QUEUECTL = [sys.executable, "-m", "queuectl"]
#: "engine <id> started with N worker(s)" in text logs; {"event": "engine_started", "engine": ...} in JSON.
_STARTED_TEXT = re.compile(r"engine (\S+) started with \d+ worker")
_STARTED_JSON = re.compile(r'"event": "engine_started".*?"engine": "([^"]+)"')
TERMINAL = frozenset({JobState.COMPLETED, JobState.DEAD})


# ---- waiting ----------------------------------------------------------------------------------------------------


def wait_until(probe: Callable[[], T | None], *, timeout: float, interval: float = 0.05, what: str = "condition") -> T:
    """Call probe until it returns something truthy; fail after `timeout` seconds with `what` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


async def await_until(
    probe: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    """The async form of wait_until: probe may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last value: {value!r}")
        await asyncio.sleep(interval)


# ---- the CLI ------------------------------------------------------------------------------------------------------


def cli_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)
    env.update(extra or {})
    return env


def cli(
    home: Path, *args: str, input: str | None = None, cwd: Path | None = None, timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m queuectl ARGS` to the end (bounded by timeout) with QUEUECTL_HOME=home."""
    return subprocess.run(
        [*QUEUECTL, *args], env=cli_env(home, env), input=input, capture_output=True, text=True, timeout=timeout,
        cwd=cwd, check=False,
    )


def cli_bytes(home: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    """cli() for output that need not be text (job logs)."""
    return subprocess.run([*QUEUECTL, *args], env=cli_env(home), capture_output=True, timeout=timeout, check=False)


def cli_ok(home: Path, *args: str, **kwargs: Any) -> str:
    """Like cli(), but the command must exit 0; returns its stdout."""
    proc = cli(home, *args, **kwargs)
    assert proc.returncode == 0, f"queuectl {' '.join(args)} exited {proc.returncode}: {proc.stderr}{proc.stdout}"
    return proc.stdout


def enqueue(home: Path, command: str, *, cwd: Path | None = None, **flags: object) -> str:
    """Enqueue one job through the CLI (`enqueue --flag value -- COMMAND`); returns its id."""
    args: list[str] = []
    for name, value in flags.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return cli_ok(home, "enqueue", *args, "--", command, cwd=cwd).strip()


def enqueue_many(home: Path, jobs: Iterable[Mapping[str, Any]], *, cwd: Path | None = None) -> list[str]:
    """Enqueue many jobs in one transaction through `enqueue --file -` (JSON Lines on stdin)."""
    text = "".join(json.dumps(dict(job)) + "\n" for job in jobs)
    return cli_ok(home, "enqueue", "--file", "-", input=text, cwd=cwd).split()


def config_set(home: Path, key: str, value: str) -> None:
    """Store a config value through the library API (quicker than the CLI; it wakes running engines the same way).
    Tests about `config set` from another shell call the CLI instead."""

    async def go() -> None:
        async with Queue(home) as q:
            await q.config_set(key, value)

    asyncio.run(go())


# ---- reading the database through the library API -------------------------------------------------------------------


async def jobs_async(home: Path) -> dict[str, Job]:
    async with Queue(home) as q:
        return {j.id: j for j in await q.list_jobs(limit=1_000_000)}


def jobs(home: Path) -> dict[str, Job]:
    """Every job of the home's database, by id."""
    return asyncio.run(jobs_async(home))


def job(home: Path, job_id: str) -> Job:
    return jobs(home)[job_id]


async def attempts_async(home: Path, job_id: str) -> list[Attempt]:
    async with Queue(home) as q:
        return await q.store.attempts(job_id)


def attempts(home: Path, job_id: str) -> list[Attempt]:
    """Every recorded attempt of a job, oldest first."""
    return asyncio.run(attempts_async(home, job_id))


def _matches(state: JobState, wanted: JobState | Iterable[JobState]) -> bool:
    return state == wanted if isinstance(wanted, JobState) else state in set(wanted)


def wait_for_states(
    home: Path, wanted: Mapping[str, JobState | Iterable[JobState]], *, timeout: float = 20.0
) -> dict[str, Job]:
    """Poll until every listed job is in its wanted state (or one of them); returns every job."""

    def probe() -> dict[str, Job] | None:
        found = jobs(home)
        ok = all(i in found and _matches(found[i].state, s) for i, s in wanted.items())
        return found if ok else None

    try:
        return wait_until(probe, timeout=timeout, interval=0.05, what=f"job states {dict(wanted)}")
    except AssertionError:
        now = {i: (j.state.value, j.attempts, j.last_error) for i, j in jobs(home).items() if i in wanted}
        raise AssertionError(f"jobs did not reach {dict(wanted)} within {timeout:g}s; now: {now}") from None


def wait_all_terminal(home: Path, ids: Iterable[str], *, timeout: float = 30.0) -> dict[str, Job]:
    return wait_for_states(home, {i: TERMINAL for i in ids}, timeout=timeout)


# ---- processes ------------------------------------------------------------------------------------------------------


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, T, Z...), or "gone" when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "gone"
    return chr(stat[stat.rfind(b")") + 2])


def process_gone(pid: int) -> bool:
    """Whether a process has ended: no /proc entry, or a zombie (dead, only not reaped yet: in this container
    pid 1 does not reap orphans)."""
    return process_state(pid) in ("gone", "Z", "X")


def read_pids(path: Path) -> list[int]:
    try:
        return [int(word) for word in path.read_text().split()]
    except FileNotFoundError:
        return []


def wait_for_pids(path: Path, count: int, *, timeout: float = 10.0) -> list[int]:
    """Wait until a job has written `count` pids to path (one per line); returns them."""
    return wait_until(lambda: read_pids(path) if len(read_pids(path)) >= count else None, timeout=timeout,
                      what=f"{count} pids in {path}")


def wait_pids_gone(pids: Iterable[int], *, timeout: float = 5.0) -> None:
    pids = list(pids)
    wait_until(lambda: all(process_gone(p) for p in pids), timeout=timeout,
               what=f"processes {pids} to end (alive: {[p for p in pids if not process_gone(p)]})")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes_of_home(home: Path) -> list[int]:
    """Live processes whose environment (or a job shell's exports) says QUEUECTL_HOME=home: the jobs (and engines)
    a test started."""
    marker = f"QUEUECTL_HOME={home}".encode()
    found = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        if marker in procs.environ(entry.name) and not process_gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_processes_of_home(home: Path) -> list[int]:
    """SIGKILL whatever a test left running under its home (the job groups of a killed engine, say)."""
    pids = _processes_of_home(home)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


class EngineProc:
    """`python -m queuectl run ARGS` as a subprocess; its stderr (the engine log) goes to a file."""

    def __init__(self, home: Path, log_path: Path, args: list[str], *, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None, new_session: bool = False,
                 launcher: Sequence[str] = ()) -> None:
        self.home = home
        self.log_path = log_path
        self.args = args
        self.engine_id: str | None = None
        self.started_at = time.monotonic()
        with open(log_path, "wb") as err, open(log_path.with_suffix(".stdout"), "wb") as out:
            self.proc = subprocess.Popen(
                [*launcher, *QUEUECTL, "run", *args], env=cli_env(home, env), stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, cwd=cwd, start_new_session=new_session,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.log_path.with_suffix(".stdout").read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return self.log().splitlines()

    def wait_log(self, pattern: str, *, timeout: float = 20.0) -> re.Match[str]:
        """Wait until a line of the log matches the regular expression; fail early if the engine exits."""
        regex = re.compile(pattern)

        def probe() -> re.Match[str] | None:
            match = regex.search(self.log())
            if match is None and self.proc.poll() is not None:
                match = regex.search(self.log())
                if match is None:
                    raise AssertionError(f"engine exited ({self.proc.returncode}) before logging {pattern!r}:\n"
                                         f"{self.log()}")
            return match

        try:
            return wait_until(probe, timeout=timeout, what=f"engine log line {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nengine log:\n{self.log()}") from None

    def wait_started(self, *, timeout: float = 20.0) -> str:
        """Wait for "engine ID started" (text or JSON log); returns the engine id."""
        match = self.wait_log(f"{_STARTED_TEXT.pattern}|{_STARTED_JSON.pattern}", timeout=timeout)
        self.engine_id = match.group(1) or match.group(2)
        return self.engine_id

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, *, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"engine pid {self.pid} still running after {timeout:g}s:\n{self.log()}") from None

    def kill9(self) -> None:
        """SIGKILL the engine and reap it, as a shell would."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Engines:
    """Engines started by one test, all killed (with their jobs) at teardown whatever happened."""

    def __init__(self, home: Path, tmp_path: Path) -> None:
        self.home = home
        self.tmp_path = tmp_path
        self.started: list[EngineProc] = []

    def start(self, *args: str, workers: int | None = 1, wait: bool = True, cwd: Path | None = None,
              env: Mapping[str, str] | None = None, new_session: bool = False,
              launcher: Sequence[str] = ()) -> EngineProc:
        """Start `queuectl run [--workers N] ARGS`; by default wait for its "started" line. new_session: the engine
        leads its own session and process group, like a command started from an interactive shell. launcher: a
        command it is started under (`nohup`)."""
        argv = ([f"--workers={workers}"] if workers is not None else []) + list(args)
        log_path = self.tmp_path / f"engine-{len(self.started) + 1}.log"
        engine = EngineProc(self.home, log_path, argv, cwd=cwd, env=env, new_session=new_session, launcher=launcher)
        self.started.append(engine)
        if wait:
            engine.wait_started()
        return engine

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for engine in self.started:
            engine.cleanup()
        kill_processes_of_home(self.home)


# ---- following a stream -------------------------------------------------------------------------------------------


class Reader:
    """Collect a pipe's bytes without blocking the test: read with select() under a deadline."""

    def __init__(self, stream: io.BufferedReader | Any) -> None:
        self.fd = stream.fileno()
        self.data = b""
        self.eof = False

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            chunk = os.read(self.fd, 65536)
            if chunk:
                self.data += chunk
            else:
                self.eof = True

    def wait_for(self, needle: bytes, *, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            if self.eof:
                raise AssertionError(f"stream ended before {needle!r}; got {self.data!r}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {needle!r} within {timeout:g}s; got {self.data!r}")
            self.pump(min(remaining, 0.2))
        return self.data

    def read_to_eof(self, *, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"stream still open after {timeout:g}s; got {self.data!r}")
            self.pump(min(remaining, 0.2))
        return self.data


# ---- the engine in-process ----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def engine_in_process(
    home: Path, *, workers: int = 1, log_format: str = "text", stop_timeout: float = 20.0, **options: Any
) -> AsyncIterator[tuple[Engine, Queue, io.StringIO]]:
    """A long-running Engine on home's database in this event loop (no signal handlers). On exit: a graceful
    stop, bounded; a fast one if that does not end it."""
    log_stream = io.StringIO()
    async with Queue(home) as q:
        engine = Engine(q.store, EngineOptions(home=home, workers=workers, **options), EventLog(log_format, log_stream))
        task = asyncio.create_task(engine.run(handle_signals=False))
        try:
            await await_until(lambda: "started with" in log_stream.getvalue() or task.done(), timeout=10,
                              what="the engine to start")
            if task.done():
                task.result()
            yield engine, q, log_stream
        finally:
            if not task.done():
                logged = log_stream.getvalue()
                if " stopping: " not in logged and '"event": "stopping"' not in logged:  # a 2nd request = fast stop
                    engine.request_stop()
                try:
                    await asyncio.wait_for(asyncio.shield(task), stop_timeout)
                except TimeoutError:
                    engine.request_stop(fast=True)
                    await asyncio.wait_for(task, 10)
                    raise AssertionError(f"engine did not stop gracefully:\n{log_stream.getvalue()}") from None
            task.result()


async def run_until_idle(
    home: Path, *, workers: int = 1, timeout: float = 30.0, log_format: str = "text", **options: Any
) -> tuple[Summary, str]:
    """Run an in-process Engine with until_idle=True to the end; returns its summary and its log."""
    log_stream = io.StringIO()
    async with Queue(home) as q:
        engine = Engine(q.store, EngineOptions(home=home, workers=workers, until_idle=True, **options),
                        EventLog(log_format, log_stream))
        try:
            summary = await asyncio.wait_for(engine.run(handle_signals=False), timeout)
        except TimeoutError:
            raise AssertionError(f"engine not idle after {timeout:g}s:\n{log_stream.getvalue()}") from None
    return summary, log_stream.getvalue()


async def async_jobs(q: Queue) -> dict[str, Job]:
    return {j.id: j for j in await q.list_jobs(limit=1_000_000)}


async def await_states(
    q: Queue, wanted: Mapping[str, JobState | Iterable[JobState]], *, timeout: float = 20.0
) -> dict[str, Job]:
    async def probe() -> dict[str, Job] | None:
        found = await async_jobs(q)
        ok = all(i in found and _matches(found[i].state, s) for i, s in wanted.items())
        return found if ok else None

    try:
        return await await_until(probe, timeout=timeout, what=f"job states {dict(wanted)}")  # type: ignore[no-any-return]
    except AssertionError:
        now = {i: (j.state.value, j.attempts, j.last_error) for i, j in (await async_jobs(q)).items() if i in wanted}
        raise AssertionError(f"jobs did not reach {dict(wanted)} within {timeout:g}s; now: {now}") from None


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
