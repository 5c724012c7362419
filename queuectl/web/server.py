"""Serving the dashboard with uvicorn: standalone (`queuectl dashboard`) or inside an engine's event loop
(`queuectl run --dashboard`).

The socket is bound here, before uvicorn starts, so that a port in use is one clear error (uvicorn would log it
and call sys.exit). uvicorn's own signal handling is switched off: `queuectl dashboard` stops on SIGINT/SIGTERM
through its own handlers, and inside an engine the engine owns the signals and stops the server when it ends.
Standalone, the dashboard opens its own Queue; inside an engine it shares the engine's (see
engine_with_dashboard for why it must).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from queuectl.api import Queue
from queuectl.errors import QueueCtlError, ValidationError
from queuectl.web.app import SEARCH_WINDOW, create_app
from queuectl.web.security import TOKEN_ENV, Guard, check_bind, is_loopback

if TYPE_CHECKING:
    from queuectl.engine import Engine, Summary
    from queuectl.events import EventLog

DEFAULT_HOST = "127.0.0.1"


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: whoever runs it owns the signals and sets should_exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def token_from_env(token: str | None) -> str | None:
    """--token, else QUEUECTL_DASHBOARD_TOKEN; an empty value means none."""
    value = token if token is not None else os.environ.get(TOKEN_ENV)
    return value or None


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port), or one clear QueueCtlError."""
    if not 0 <= port <= 65535:
        raise ValidationError(f"port must be from 0 to 65535; got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise QueueCtlError(f"cannot listen on {host}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise QueueCtlError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


@dataclasses.dataclass
class Running:
    """A dashboard being served: its address, and how to stop it."""

    url: str
    server: _Server
    task: asyncio.Task[None]

    async def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self.task), timeout_s)
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


def start(queue: Queue, sock: socket.socket, *, token: str | None, cwd: str | None = None,
          live_interval_s: float = 1.0, search_window: int = SEARCH_WINDOW) -> Running:
    """Serve the dashboard over an open Queue on a listening socket, as a task of the running loop."""
    host = sock.getsockname()[0]
    guard = Guard(token=token, loopback=is_loopback(host), port=sock.getsockname()[1])
    app = create_app(queue, guard, cwd=cwd, live_interval_s=live_interval_s, search_window=search_window)
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, lifespan="off", http="h11", ws="none",
        proxy_headers=False, server_header=False, timeout_graceful_shutdown=1, timeout_keep_alive=15,
        limit_concurrency=200,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="dashboard")
    return Running(url=url_of(sock), server=server, task=task)


async def serve(home: Path, database_url: str | None, *, host: str, port: int, token: str | None,
                on_ready: Callable[[str], None]) -> None:
    """`queuectl dashboard`: serve until SIGINT or SIGTERM."""
    check_bind(host, token)
    sock = listen(host, port)
    async with Queue(home, database_url) as q:
        running = start(q, sock, token=token)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            on_ready(running.url)
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, running.task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await running.stop()
        if running.task.done() and not running.task.cancelled() and running.task.exception() is not None:
            raise QueueCtlError(f"the dashboard stopped: {running.task.exception()!r}")


async def engine_with_dashboard(q: Queue, engine: Engine, *, port: int, log: EventLog) -> Summary:
    """`queuectl run --dashboard`: the engine, and the dashboard on 127.0.0.1:port in the same event loop. The
    token, if any, comes from QUEUECTL_DASHBOARD_TOKEN. The engine owns the signals; the dashboard stops when the
    engine has stopped.

    The dashboard uses the engine's own Queue (one database connection for the process; its reads are small and
    queue up with the engine's writes in that connection's thread). It must not open a second SQLite connection
    here: opening one closes a descriptor of the database file (sqlite_schema.connect creates the file with
    os.open + os.close), which drops every POSIX lock this process holds on it, the engine's connection's included;
    another process closing its connection then checkpoints and deletes the WAL under the engine, whose later
    commits become invisible to everyone else. (Reported as a bug of sqlite_schema.connect, with a fix.)"""
    token = token_from_env(None)
    check_bind(DEFAULT_HOST, token)
    sock = listen(DEFAULT_HOST, port)
    running = start(q, sock, token=token)
    log.emit("dashboard", f"dashboard on {running.url}" + (" (token required)" if token else ""),
             url=running.url)

    def report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.emit("dashboard_error", f"the dashboard stopped: {task.exception()!r}; the engine goes on",
                     error=repr(task.exception()))

    running.task.add_done_callback(report)
    try:
        return await engine.run()
    finally:
        await running.stop()

