"""Storage backends behind one interface (base.Store), chosen by URL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from queuectl.errors import ValidationError

if TYPE_CHECKING:
    from queuectl.store.base import Store


def __getattr__(name: str) -> Any:
    # Store is loaded on first use: the enqueue fast path imports store.sqlite_tx without the models.
    if name == "Store":
        from queuectl.store.base import Store

        return Store
    raise AttributeError(name)


def open_store(home: Path, database_url: str | None = None) -> Store:
    """The SQLite file in the data directory, or the backend a database URL names (imported lazily)."""
    if not database_url:
        from queuectl.paths import DB_NAME
        from queuectl.store.sqlite import SQLiteStore

        return SQLiteStore(home / DB_NAME)
    if database_url.startswith(("postgresql://", "postgres://")):
        try:
            from queuectl.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ValidationError(f"PostgreSQL support is not available: {exc}") from None
        return PostgresStore(database_url)  # type: ignore[no-any-return,unused-ignore]
    if database_url.startswith("sqlite:///"):
        from queuectl.store.sqlite import SQLiteStore

        return SQLiteStore(Path(database_url.removeprefix("sqlite://")))
    raise ValidationError(f"unsupported database URL {database_url!r}: use postgresql://... or sqlite:///path")


__all__ = ["Store", "open_store"]
