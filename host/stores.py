"""Open the host's store by URL: SQLite for one host, PostgreSQL for several.

Kept apart from ``host.store`` so the store logic does not import its own
backends (each backend imports the logic it implements).
"""

from __future__ import annotations

import os
from pathlib import Path

from host.postgres_store import PostgresStore
from host.sqlite_store import SQLiteStore
from host.store import Clock, Store
from host.store_errors import StoreInputError

__all__ = ["open_store"]


def open_store(
    url: str | os.PathLike[str],
    *,
    clock: Clock | None = None,
    max_connections: int = 8,
    migrate: bool = True,
) -> Store:
    """Open the store named by ``url`` and bring its schema up to date.

    Arguments:
        url: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, a
            filesystem path (SQLite), or a libpq URL ``postgresql://...`` /
            ``postgres://...`` (its ``options`` may set ``search_path``).
        clock: Unix milliseconds for the records' timestamps (default: the system clock).
        max_connections: the pool's bound on open connections.
        migrate: apply missing migrations now (``Store.migrate``).

    Returns:
        A ``SQLiteStore`` or ``PostgresStore``.

    Raises:
        StoreInputError: an unknown URL scheme, or an in-memory SQLite database
            (each pooled connection would see its own).
        StoreUnavailableError: the database cannot be opened.
        MigrationError: see ``Store.migrate``.
    """
    if isinstance(url, os.PathLike):
        path: Path | None = Path(url)
    elif url.startswith("sqlite:///"):
        if url in ("sqlite:///", "sqlite:///:memory:"):
            raise StoreInputError("the SQLite store needs a file path (pooled connections)")
        path = Path(url.removeprefix("sqlite:///"))
    elif url.startswith(("postgresql://", "postgres://")):
        path = None
    else:
        raise StoreInputError("store URL must be sqlite:///PATH, a path, or postgresql://...")
    store: Store
    if path is None:
        store = PostgresStore(str(url), clock=clock, max_connections=max_connections)
    else:
        store = SQLiteStore(path, clock=clock, max_connections=max_connections)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store
