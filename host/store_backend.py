"""What the SQL backends share: driver error translation, a connection pool, transactions.

``host.store.Store`` holds the logic and speaks to a database only through the
``Transaction`` protocol, with ``?`` placeholders in both dialects.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, Protocol, TypeVar

from host.store_errors import StoreError, StoreInputError, StoreUnavailableError

__all__ = ["map_driver_errors", "ErrorTable", "Row", "Transaction", "ConnectionPool"]

ErrorTable = Sequence[tuple[type[Exception], type[StoreError]]]
"""(driver exception class, store error class) pairs; the first match wins."""

Row = tuple[Any, ...]


@contextmanager
def map_driver_errors(table: ErrorTable) -> Iterator[None]:
    """Translate driver exceptions raised in the block to store errors, once (httpx style).

    Arguments:
        table: the backend's (driver class, store class) pairs, most specific first.

    Raises:
        StoreError: a subclass chosen by ``table``; the driver's exception is the
            ``__cause__``. The message names the driver's class only: driver
            texts carry the database's host and port ("connection to server at
            ...") and PostgreSQL's DETAIL lines quote row values, and store
            messages reach the host's callers.
    """
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        for driver_class, store_class in table:
            if isinstance(exc, driver_class):
                raise store_class(f"database error ({type(exc).__name__})") from exc
        raise


class Transaction(Protocol):
    """One open database transaction; SQL uses ``?`` placeholders in both dialects."""

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        """Execute and return the first row, or None."""

    def all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Execute and return every row."""

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Execute and return the number of rows changed."""


C = TypeVar("C")


class ConnectionPool(Generic[C]):
    """A thread-safe pool: each borrower has a connection to itself for one transaction.

    At most ``max_connections`` are open at once; a borrower waits up to
    ``acquire_timeout`` seconds for one. A connection goes back to the pool
    only if ``reusable`` says it is idle and healthy; otherwise it is closed.
    """

    def __init__(
        self,
        connect: Callable[[], C],
        *,
        reusable: Callable[[C], bool],
        dispose: Callable[[C], None],
        max_connections: int,
        acquire_timeout: float,
    ) -> None:
        if max_connections < 1:
            raise StoreInputError("max_connections must be at least 1")
        self._connect = connect
        self._reusable = reusable
        self._dispose = dispose
        self._acquire_timeout = acquire_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._idle: list[C] = []
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[C]:
        """Borrow a connection (new or idle) for the duration of the block.

        Raises:
            StoreUnavailableError: none became free within the timeout.
            StoreError: the pool is closed.
        """
        if not self._slots.acquire(timeout=self._acquire_timeout):
            raise StoreUnavailableError(
                f"no database connection became free within {self._acquire_timeout} s"
            )
        try:
            conn = self._take()
            try:
                yield conn
            finally:
                self._give_back(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close idle connections now and borrowed ones when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._safe_dispose(conn)

    def _take(self) -> C:
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, conn: C) -> None:
        with self._lock:
            if not self._closed and self._reusable(conn):
                self._idle.append(conn)
                return
        self._safe_dispose(conn)

    def _safe_dispose(self, conn: C) -> None:
        with contextlib.suppress(Exception):
            self._dispose(conn)
