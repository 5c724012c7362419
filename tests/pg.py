"""PostgreSQL for the tests: a fresh schema per test, or a visible skip when no server is reachable."""

from __future__ import annotations

import pytest

from queuectl.store import Store


async def fresh_postgres_store(url: str) -> Store:
    try:
        from queuectl.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        pytest.skip(f"PostgreSQL store not available: {exc}")
    return await PostgresStore.for_tests(url)  # type: ignore[no-any-return,unused-ignore]
