"""Shared fixtures. Every test gets its own data directory under tmp_path and no QUEUECTL_* from the developer
(QUEUECTL_TEST_* settings for the test run itself are kept)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from queuectl.store import Store
from queuectl.store.sqlite import SQLiteStore
from tests.engine_helpers import Engines


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("QUEUECTL_") and not name.startswith("QUEUECTL_TEST_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data directory, also exported as QUEUECTL_HOME for CLI calls and subprocesses."""
    path = tmp_path / "home"
    monkeypatch.setenv("QUEUECTL_HOME", str(path))
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """Where jobs run and leave their traces."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def engines(home: Path, tmp_path: Path) -> Iterator[Engines]:
    """Real `queuectl run` subprocesses on this test's home, all stopped at teardown."""
    with Engines(home, tmp_path) as started:
        yield started


def _postgres_url() -> str:
    return os.environ.get("QUEUECTL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each backend in turn: the contract every Store must meet."""
    if request.param == "sqlite":
        s: Store = SQLiteStore(tmp_path / "queue.db")
    else:
        from tests.pg import fresh_postgres_store

        s = await fresh_postgres_store(_postgres_url())
    await s.open()
    try:
        yield s
    finally:
        await s.close()
