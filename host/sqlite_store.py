"""The embedded SQLite backend of the ciphertext store (the default).

One database file in WAL mode (readers never block the writer), foreign keys on
(they are off by default per connection), ``synchronous=FULL`` (a committed
epoch survives power loss, not just a crash of the process) and a busy timeout.
Write transactions start with ``BEGIN IMMEDIATE``, taking SQLite's single write
lock up front: that serialises epoch changes and avoids the deadlock of two
readers both upgrading to writers, which the busy timeout cannot resolve.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from host.migrations import Migration
from host.migrations.sqlite import MIGRATIONS
from host.store import (
    Clock,
    ConnectionPool,
    ErrorTable,
    MigrationError,
    Row,
    Store,
    StoreConflictError,
    StoreError,
    StoreUnavailableError,
    Transaction,
    map_driver_errors,
)

__all__ = ["SQLiteStore", "SQLITE_ERRORS"]

SQLITE_ERRORS: Final[ErrorTable] = (
    # UNIQUE, CHECK, FOREIGN KEY, and RAISE(ABORT) in triggers.
    (sqlite3.IntegrityError, StoreConflictError),
    # "database is locked" after the busy timeout, "unable to open database file".
    (sqlite3.OperationalError, StoreUnavailableError),
    (sqlite3.Error, StoreError),
)

_MIN_SQLITE: Final = (3, 37, 0)  # STRICT tables
_WAL_RETRY_SECONDS: Final = 0.01


class _SQLiteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        row: Row | None = self._conn.execute(sql, tuple(params)).fetchone()
        return row

    def all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        rows: list[Row] = self._conn.execute(sql, tuple(params)).fetchall()
        return rows

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount


def _dispose(conn: sqlite3.Connection) -> None:
    conn.close()


def _reusable(conn: sqlite3.Connection) -> bool:
    return not conn.in_transaction


class SQLiteStore(Store):
    """The store in one SQLite file. Thread-safe (see ``host.store``)."""

    # A read is a local file read in WAL mode (no waiting on writers): about
    # 40 µs for a wallet or its shares, less than a thread hand-off.
    inline_reads = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        max_connections: int = 8,
        busy_timeout: float = 5.0,
    ) -> None:
        """Open (lazily: connections are made on first use) the store in one SQLite file.

        Arguments:
            path: the database file (created if missing; its directory must exist).
            clock: Unix milliseconds for timestamps (default: the system clock).
            max_connections: bound on open connections.
            busy_timeout: seconds to wait for SQLite's write lock or a free connection.

        Raises:
            StoreError: the linked SQLite is older than 3.37.
        """
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is older than 3.37 (STRICT tables)")
        super().__init__(clock=clock)
        self._path = Path(path)
        self._busy_timeout = busy_timeout
        self._pool: ConnectionPool[sqlite3.Connection] = ConnectionPool(
            self._connect,
            reusable=_reusable,
            dispose=_dispose,
            max_connections=max_connections,
            acquire_timeout=busy_timeout,
        )

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self._path)!r})"

    @property
    def _migrations(self) -> Sequence[Migration]:
        return MIGRATIONS

    def close(self) -> None:
        """Close the store's connections; later calls raise ``StoreError``."""
        self._pool.close()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit BEGIN, the store issues its own.
        # check_same_thread=False: a pooled connection serves one thread at a
        # time, but not always the same one.
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Put the file in WAL mode (it stays so), waiting up to the busy timeout.

        Switching a new file to WAL takes an exclusive lock. When connections
        opened together all switch it, SQLite answers SQLITE_BUSY at once instead
        of calling the busy handler (it would deadlock a reader that waits to
        upgrade), so the wait happens here.
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.OperationalError as e:
                busy = e.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(_WAL_RETRY_SECONDS)
        if str(mode).lower() != "wal":
            raise StoreUnavailableError(f"SQLite refused WAL mode (got {mode})")

    @contextmanager
    def _schema_transaction(self) -> Iterator[Transaction]:
        """A write transaction with foreign keys off, checked before it commits.

        SQLite's procedure for schema changes it cannot ALTER (a table rebuilt:
        new table, copy, drop, rename; "Making Other Kinds Of Table Schema
        Changes" in its manual): with foreign keys on, dropping the old table
        would cascade its deletion into the tables that reference it. The
        pragma is a no-op inside a transaction, so it is set before BEGIN, and
        ``foreign_key_check`` must find nothing before COMMIT.
        """
        with map_driver_errors(SQLITE_ERRORS), self._pool.connection() as conn:
            conn.execute("PRAGMA foreign_keys = OFF")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _SQLiteTransaction(conn)
                    violations = conn.execute("PRAGMA foreign_key_check").fetchall()
                    if violations:
                        raise MigrationError(
                            f"a migration broke {len(violations)} foreign key reference(s)"
                        )
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                conn.execute("PRAGMA foreign_keys = ON")

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Transaction]:
        with map_driver_errors(SQLITE_ERRORS), self._pool.connection() as conn:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
            try:
                yield _SQLiteTransaction(conn)
            except BaseException:
                # If ROLLBACK itself fails the connection stays in a
                # transaction, and the pool closes it instead of reusing it.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
