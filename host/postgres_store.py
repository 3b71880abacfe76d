"""The PostgreSQL backend of the ciphertext store (production), on psycopg 3.

Each call runs one transaction (READ COMMITTED) on a pooled connection. Writes
lock the wallet row with ``SELECT ... FOR UPDATE`` first, so concurrent epoch
changes of one wallet serialise and each sees the other's committed result.
Migrations run in one transaction under a transaction-scoped advisory lock
keyed by the schema, so hosts starting together do not race to create tables.

Set the schema with the URL's ``options`` (``?options=-csearch_path%3Dname``);
the tests give each test its own schema that way.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Final

import psycopg
from psycopg import pq

from host.migrations import Migration
from host.migrations.postgres import MIGRATIONS
from host.store import (
    Clock,
    ConnectionPool,
    ErrorTable,
    Row,
    Store,
    StoreConflictError,
    StoreError,
    StoreUnavailableError,
    Transaction,
    map_driver_errors,
)

__all__ = ["PostgresStore", "POSTGRES_ERRORS"]

POSTGRES_ERRORS: Final[ErrorTable] = (
    # unique_violation, foreign_key_violation, check_violation (SQLSTATE class 23).
    (psycopg.IntegrityError, StoreConflictError),
    # Connection lost, server shutting down, serialization failure, deadlock, lock timeout.
    (psycopg.OperationalError, StoreUnavailableError),
    (psycopg.Error, StoreError),
)

# hashtextextended: a 64-bit advisory lock key per schema, so stores in
# different schemas of one database migrate independently.
_MIGRATION_LOCK: Final = (
    "SELECT pg_advisory_xact_lock("
    "hashtextextended('shardkeep.schema_migrations.' || COALESCE(current_schema(), ''), 0))"
)

_Connection = psycopg.Connection[tuple[Any, ...]]


@lru_cache(maxsize=256)
def _pyformat(sql: str) -> str:
    # The shared SQL uses "?" placeholders (SQLite's); psycopg wants "%s". The
    # store's SQL contains no literal "?" or "%".
    return sql.replace("?", "%s")


class _PostgresTransaction:
    def __init__(self, cursor: psycopg.Cursor[tuple[Any, ...]]) -> None:
        self._cursor = cursor

    def _execute(self, sql: str, params: Sequence[object]) -> None:
        if params:
            self._cursor.execute(_pyformat(sql), tuple(params))
        else:
            self._cursor.execute(sql)

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        self._execute(sql, params)
        return self._cursor.fetchone()

    def all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        self._execute(sql, params)
        return self._cursor.fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        self._execute(sql, params)
        return self._cursor.rowcount


def _dispose(conn: _Connection) -> None:
    conn.close()


def _reusable(conn: _Connection) -> bool:
    return not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE


class PostgresStore(Store):
    """The store in a PostgreSQL database. Thread-safe (see ``host.store``)."""

    _FOR_UPDATE = " FOR UPDATE"

    def __init__(
        self,
        dsn: str,
        *,
        clock: Clock | None = None,
        max_connections: int = 8,
        connect_timeout: int = 5,
        acquire_timeout: float = 10.0,
        statement_timeout: float = 5.0,
    ) -> None:
        """Open (lazily: connections are made on first use) the store in a PostgreSQL database.

        Arguments:
            dsn: a libpq URL or key=value string (it may carry a password: never
                printed, not even by ``repr``).
            clock: Unix milliseconds for timestamps (default: the system clock).
            max_connections: bound on open connections.
            connect_timeout: seconds to wait for the server when connecting.
            acquire_timeout: seconds to wait for a free pooled connection.
            statement_timeout: seconds one statement may take (PostgreSQL's
                ``statement_timeout``, which also bounds lock waits). A server
                that stops answering altogether (paused, or a network that
                drops packets) cannot enforce it, so a watchdog severs a
                transaction's connection after ``2 * statement_timeout + 1``
                seconds: the call fails as unavailable instead of stalling for
                as long as the server does.
        """
        super().__init__(clock=clock)
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._pool: ConnectionPool[_Connection] = ConnectionPool(
            self._connect,
            reusable=_reusable,
            dispose=_dispose,
            max_connections=max_connections,
            acquire_timeout=acquire_timeout,
        )

    def __repr__(self) -> str:
        return "PostgresStore(<dsn redacted>)"

    @property
    def _migrations(self) -> Sequence[Migration]:
        return MIGRATIONS

    def close(self) -> None:
        """Close the store's connections; later calls raise ``StoreError``."""
        self._pool.close()

    def _connect(self) -> _Connection:
        # autocommit: no implicit BEGIN; conn.transaction() issues BEGIN/COMMIT.
        conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout)
        # Set per session, not through the URL's ``options``, which may carry a search_path.
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false)",
            (str(int(self._statement_timeout * 1000)),),
        )
        return conn

    def _lock_migrations(self, tx: Transaction) -> None:
        tx.one(_MIGRATION_LOCK)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Transaction]:
        # READ COMMITTED is enough: every write first locks its wallet row, and
        # each later statement sees what the previous lock holder committed.
        with (
            map_driver_errors(POSTGRES_ERRORS),
            self._pool.connection() as conn,
            _watchdog(conn, 2 * self._statement_timeout + 1),
            conn.transaction(),
            conn.cursor() as cursor,
        ):
            yield _PostgresTransaction(cursor)


@contextmanager
def _watchdog(conn: _Connection, seconds: float) -> Iterator[None]:
    """Sever ``conn`` if the block runs longer than ``seconds``: the blocked
    driver call then fails at once (OperationalError, so StoreUnavailableError)
    and the pool discards the connection."""
    timer = threading.Timer(seconds, _sever, (conn,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _sever(conn: _Connection) -> None:
    # A duplicate of the connection's descriptor: shutdown() acts on the
    # socket both share, and closing the duplicate leaves libpq's own.
    with (
        contextlib.suppress(OSError, ValueError),
        socket.socket(fileno=os.dup(conn.fileno())) as sock,
    ):
        sock.shutdown(socket.SHUT_RDWR)
