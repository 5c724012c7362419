"""PostgreSQL for the tests: a fresh schema per test, or a visible skip when no server is reachable.

The server is $QUEUECTL_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test). A server that
cannot be reached skips the PostgreSQL tests with the reason (or fails them, with QUEUECTL_TEST_POSTGRES_REQUIRED=1,
for CI); a server that is reached but refuses us fails them: that is a set-up to fix, not an absence. Every schema
made here is dropped when the test session ends.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import time
from typing import Any

import pytest

from queuectl.store import Store

#: As in queuectl.store.postgres (not imported here: psycopg may be missing).
TEST_SCHEMA_PREFIX = "queuectl_test_"
_made: list[tuple[str, str]] = []
_unreachable: dict[str, str] = {}


def postgres_url() -> str:
    return os.environ.get("QUEUECTL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _probe(url: str) -> str | None:
    """Why the server cannot be reached (None if a TCP or Unix-socket connection to it opens). Asked once."""
    if url in _unreachable:
        return _unreachable[url] or None
    from psycopg.conninfo import conninfo_to_dict

    params: dict[str, Any] = conninfo_to_dict(url)
    host = str(params.get("host") or "/var/run/postgresql").split(",")[0]
    port = int(str(params.get("port") or 5432).split(",")[0])
    reason = ""
    try:
        if host.startswith("/"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(3)
                sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        reason = f"no PostgreSQL server reachable at {host}:{port} ({exc.strerror or exc}); set " \
                 "QUEUECTL_TEST_POSTGRES_URL to test against one"
    _unreachable[url] = reason
    return reason or None


def skip_unless_reachable(url: str) -> None:
    """Skip (or, with QUEUECTL_TEST_POSTGRES_REQUIRED=1, fail) when the PostgreSQL tests cannot run."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"PostgreSQL store not available (pip install .[postgres]): {exc}")
    reason = _probe(url)
    if reason is not None:
        if os.environ.get("QUEUECTL_TEST_POSTGRES_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def reserve_schema(url: str) -> str:
    """A new schema name (not created: opening a store creates it), dropped when the test session ends."""
    name = f"{TEST_SCHEMA_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
    _remember(url, name)
    return name


def url_with_schema(url: str, name: str) -> str:
    """The URL whose connections use schema `name` (libpq's options parameter), as a user would write it."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"


def _remember(url: str, name: str) -> None:
    if not _made:
        atexit.register(_drop_made)
    _made.append((url, name))


async def fresh_postgres_store(url: str) -> Store:
    skip_unless_reachable(url)
    from queuectl.store.postgres import PostgresStore

    store = await PostgresStore.for_tests(url)
    assert store.schema_name is not None
    _remember(url, store.schema_name)
    return store


def _drop_made() -> None:
    import psycopg
    from psycopg import sql

    for url, name in _made:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SET lock_timeout = '5s'")
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        except psycopg.Error:
            pass  # PostgresStore.for_tests drops leftovers older than a day
