"""Helpers for the dashboard, /metrics, stats and top tests: real servers on real sockets, real HTTP, real SQLite.

- ``DashboardProc``: `python -m queuectl dashboard --port 0 ...` as a subprocess; ``.url`` once it listens.
- ``ThreadDashboard``: the app served by uvicorn on a free port in a thread of this process (its own event loop),
  for options the CLI does not expose (a small search window).
- ``http(method, url, ...) -> Reply``: one request with http.client; redirects are not followed, 4xx/5xx do
  not raise.
- ``snapshot(home)``: every job (all fields) with its attempts and the stored config, to show that a refused
  request changed nothing.
- ``store_attempt(...)``: record a finished attempt through the Store API, as an engine does (claim, then
  complete / schedule_retry / bury) with chosen times.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client as httpclient
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

from queuectl import output
from queuectl.api import Queue
from queuectl.models import Claim, Outcome
from queuectl.store.base import Store
from tests.helpers import proc_env

URL_LINE = re.compile(rb"dashboard on (http://\S+?/)")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Reply:
    def __init__(self, status: int, headers: httpclient.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:300]!r})"


def http(method: str, url: str, *, headers: Mapping[str, str] | None = None, body: bytes | None = None,
         form: Mapping[str, str] | None = None, timeout: float = 15.0) -> Reply:
    parts = urlsplit(url)
    all_headers = dict(headers or {})
    if form is not None:
        body = urlencode(form).encode()
        all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    conn = httpclient.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers=all_headers)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def get(url: str, **kwargs: Any) -> Reply:
    return http("GET", url, **kwargs)


def csrf_of(page: str) -> str:
    match = CSRF.search(page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def post_form(base: str, path: str, fields: Mapping[str, str], *, headers: Mapping[str, str] | None = None) -> Reply:
    """POST a form as the dashboard's own page would (same Origin)."""
    origin = base.rstrip("/")
    return http("POST", origin + path, form=fields, headers={"Origin": origin, **(headers or {})})


class SSE:
    """A server-sent events stream, read line by line under deadlines."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.conn = httpclient.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
        self.conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                          headers=dict(headers or {}))
        self.response = self.conn.getresponse()

    def next_data(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next `data:` payload (JSON)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.response.fp.readline()
            if not line:
                raise AssertionError("event stream ended")
            if line.startswith(b"data: "):
                return json.loads(line[6:])  # type: ignore[no-any-return]
        raise AssertionError(f"no event within {timeout}s")

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.next_data(timeout=max(0.1, deadline - time.monotonic()))
            if predicate(last):
                return last
        raise AssertionError(f"no matching event within {timeout}s; last: {last}")

    def close(self) -> None:
        self.conn.close()


class DashboardProc:
    """`queuectl dashboard --port 0 ARGS` as a real process; stopped (SIGTERM) on exit."""

    def __init__(self, home: Path, *args: str, env: Mapping[str, str] | None = None, port: int = 0,
                 wait: bool = True) -> None:
        self.home = home
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "queuectl", "dashboard", "--port", str(port), *args],
            env=proc_env(home, env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err)
        self.out = b""
        self.url = ""
        if wait:
            self.url = self.wait_url()

    def wait_url(self, timeout: float = 20.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while (match := URL_LINE.search(self.out)) is None:
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard exited {self.proc.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"dashboard not listening after {timeout}s: {self.out!r}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                self.out += os.read(self.proc.stdout.fileno(), 4096)
        return match.group(1).decode()

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError(f"dashboard did not stop within {timeout}s after SIGTERM") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with contextlib.suppress(AssertionError):
            self.stop()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()


class ThreadDashboard:
    """The dashboard app under uvicorn on 127.0.0.1:<free port>, in a thread with its own event loop."""

    def __init__(self, home: Path, *, token: str | None = None, **options: Any) -> None:
        from queuectl.web import server

        self.home = home
        self.sock = server.listen("127.0.0.1", 0)
        self.url = server.url_of(self.sock)
        self._token = token
        self._options = options
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="dashboard", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __exit__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from queuectl.web import server

        async with Queue(self.home) as q:
            running = server.start(q, self.sock, token=self._token, **self._options)
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            await running.stop()

    def __enter__(self) -> Self:
        self.thread.start()
        assert self._ready.wait(20), "dashboard thread did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(20)
        assert not self.thread.is_alive(), "dashboard thread did not stop"
        if self._error is not None:
            raise self._error


# ---- the database, through the library API -----------------------------------------------------------------------


async def snapshot_async(home: Path) -> dict[str, Any]:
    async with Queue(home) as q:
        jobs = await q.list_jobs(limit=1_000_000)
        return {
            "jobs": {j.id: output.job_dict(j) for j in jobs},
            "attempts": {j.id: [output.attempt_dict(a) for a in await q.store.attempts(j.id)] for j in jobs},
            "config": await q.store.config_items(),
        }


def snapshot(home: Path) -> dict[str, Any]:
    """Everything a request could change: every job, every attempt, the stored config."""
    return asyncio.run(snapshot_async(home))


@contextlib.contextmanager
def unchanged(home: Path) -> Iterator[None]:
    """Assert that the block changes nothing in the queue."""
    before = snapshot(home)
    yield
    assert snapshot(home) == before, "a refused request changed the queue"


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def store_attempt(store: Store, job_id: str, *, engine: str = "test-engine", exit_code: int | None = 0,
                        started_at: float, finished_at: float, timed_out: bool = False, retry_at: float | None = None,
                        bury: bool = False, tail: str = "", error: str | None = None) -> bool:
    """Claim `job_id` (it must be the only due job) and record an attempt with these times, as an engine would:
    complete (exit 0), schedule_retry (retry_at) or bury. The claim uses `started_at` as its now."""
    claims = await store.claim_due(engine, now=started_at, limit=1)
    assert [c.job.id for c in claims] == [job_id], f"expected to claim {job_id}, got {[c.job.id for c in claims]}"
    claim: Claim = claims[0]
    if error is None and (exit_code != 0 or timed_out):
        error = "timed out" if timed_out else f"exit code {exit_code}"
    outcome = Outcome(exit_code=exit_code, timed_out=timed_out, output_tail=tail, started_at=started_at,
                      finished_at=finished_at, error=error)
    if outcome.succeeded:
        return await store.complete(claim, engine, outcome)
    if bury:
        return await store.bury(claim, engine, outcome)
    assert retry_at is not None
    return await store.schedule_retry(claim, engine, outcome, retry_at=retry_at)
