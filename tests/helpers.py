"""Shared test helpers: run the CLI in-process or as a real process, and poll for a state under a deadline.

Stable interface (other test modules import these):

- ``run_cli(*args, input=None) -> Result``: ``queuectl.cli.main(list(args))`` in this process, stdout/stderr captured.
- ``run_proc(*args, home, input=None, env=None, timeout_s=60) -> Result``: ``python -m queuectl ...`` as a subprocess.
- ``Result``: a named tuple ``(code, out, err)``, so ``code, out, err = run_cli(...)`` works, and ``.json()``.
- ``wait_until(predicate, timeout_s, interval_s=0.02)``: poll a sync predicate; returns its first truthy value,
  raises AssertionError at the deadline.
- ``async_wait_until(predicate, timeout_s, interval_s=0.02)``: the same from a coroutine; the predicate may be
  sync or return an awaitable.
- ``out_of_files()``: a context manager that takes every file this process may still open, and gives them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")

#: The repository root: subprocesses run `python -m queuectl` with this on their path.
ROOT = Path(__file__).resolve().parent.parent


class Result(NamedTuple):
    """What one CLI run produced."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as one JSON document (fails the test if stdout holds anything else)."""
        try:
            return json.loads(self.out)
        except json.JSONDecodeError as exc:  # pragma: no cover - only on failure
            raise AssertionError(f"stdout is not one JSON document ({exc}):\n{self.out}\nstderr:\n{self.err}") from None

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


class _TextBuffer(io.TextIOWrapper):
    """A text stream over bytes, like a real sys.stdout: `.buffer` exists and `.getvalue()` reads it all."""

    def __init__(self, initial: str = "") -> None:
        super().__init__(io.BytesIO(initial.encode("utf-8")), encoding="utf-8", newline=None)

    def isatty(self) -> bool:
        return False

    def getvalue(self) -> str:
        self.flush()
        raw = self.buffer
        assert isinstance(raw, io.BytesIO)
        return raw.getvalue().decode("utf-8", "replace")


def run_cli(*args: str, input: str | None = None) -> Result:
    """Run `queuectl ARGS...` in this process through queuectl.cli.main; stdin is `input` (or empty)."""
    from queuectl.cli import main

    stdout, stderr, stdin = _TextBuffer(), _TextBuffer(), _TextBuffer(input or "")
    old_stdin = sys.stdin
    sys.stdin = stdin
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(list(args))
    finally:
        sys.stdin = old_stdin
    return Result(code, stdout.getvalue(), stderr.getvalue())


def proc_env(home: Path | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a queuectl subprocess: ours without QUEUECTL_*, plus QUEUECTL_HOME and `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full.get("PYTHONPATH", "")) if p)
    if home is not None:
        full["QUEUECTL_HOME"] = str(home)
    full.update(env or {})
    return full


def proc_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "queuectl", *args]


def run_proc(
    *args: str,
    home: Path | None,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
    cwd: Path | None = None,
) -> Result:
    """Run `python -m queuectl ARGS...` as a real process with QUEUECTL_HOME=home (unset if home is None)."""
    done = subprocess.run(
        proc_argv(*args),
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        env=proc_env(home, env),
        timeout=timeout_s,
        cwd=cwd,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def wait_until(predicate: Callable[[], T], timeout_s: float, interval_s: float = 0.02, what: str = "") -> T:
    """Poll `predicate` until it returns something truthy (returned); AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate!r}; last: {value!r}")
        time.sleep(interval_s)


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]], timeout_s: float, interval_s: float = 0.02, what: str = ""
) -> T:
    """wait_until for coroutines: the predicate may be a plain function or return an awaitable."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate!r}; last: {value!r}")
        await asyncio.sleep(interval_s)


@contextlib.contextmanager
def out_of_files() -> Iterator[None]:
    """Every file this process may still open, taken (under a soft limit of at most 4096), then given back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 4096), hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
