"""Fast failure: a paused database or a lost relay backend fails calls within seconds.

The attacks (or accidents): a PostgreSQL pause stalled every host request for
its whole length (no store timeout); after a Redis restart a signature hung for
its full 60 s deadline. A TCP proxy that stops forwarding stands in for a
paused server: the kernel still accepts and acknowledges, nothing answers.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

from host.postgres_store import PostgresStore
from host.store import StoreUnavailableError, WalletNotFoundError
from relay.errors import RelayError, RoomNotFoundError
from relay.redis_backend import RedisBackend
from tests.relay_harness import delete_keys, relay, run, unique_prefix
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def postgres_schema(postgres_dsn: str) -> Iterator[tuple[str, str]]:
    """A fresh schema: (dsn, schema)."""
    schema = f"test_fast_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield postgres_dsn, schema
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def through(dsn: str, port: int, schema: str) -> str:
    """``dsn`` sent to 127.0.0.1:``port``, in ``schema``."""
    parts = urlsplit(dsn)
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}127.0.0.1:{port}"
    query = f"options={quote(f'-csearch_path={schema}')}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def test_paused_postgresql_fails_store_calls_within_seconds(
    postgres_schema: tuple[str, str],
) -> None:
    """The attack: PostgreSQL paused (SIGSTOP, or a network that drops packets)
    stalled every request for as long as the pause. Now a statement that gets
    no answer fails as unavailable after 2 x statement_timeout + 1 s, and a
    new connection after connect_timeout; the store serves again once the
    server answers."""
    dsn, schema = postgres_schema
    upstream = urlsplit(dsn)
    with TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432) as proxy:
        store = PostgresStore(
            through(dsn, proxy.port, schema), statement_timeout=1.0, connect_timeout=2
        )
        try:
            store.migrate()
            with pytest.raises(WalletNotFoundError):
                store.get_wallet("w-1")  # warm: one pooled connection
            proxy.pause()
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as caught:
                store.get_wallet("w-1")  # on the pooled connection: the watchdog
            assert time.monotonic() - started < 6
            assert "127.0.0.1" not in str(caught.value)
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                store.get_wallet("w-1")  # a new connection: connect_timeout
            assert time.monotonic() - started < 6
            proxy.resume()
            with pytest.raises(WalletNotFoundError):
                store.get_wallet("w-1")
        finally:
            proxy.resume()
            store.close()


def test_postgresql_statement_timeout_is_set_on_every_connection(
    postgres_schema: tuple[str, str],
) -> None:
    dsn, schema = postgres_schema
    separator = "&" if "?" in dsn else "?"
    store = PostgresStore(
        f"{dsn}{separator}options={quote(f'-csearch_path={schema}')}", statement_timeout=1.5
    )
    try:
        store.migrate()
        conn = store._connect()
        try:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("1500ms",)
            assert conn.execute("SHOW search_path").fetchone() == (schema,)  # kept
        finally:
            conn.close()
    finally:
        store.close()


def test_redis_restart_fails_open_streams_within_seconds(redis_url: str) -> None:
    """The attack: after a Redis restart (every room lost) a signature hung for
    its full deadline, its stream waiting on a room that no longer existed.
    Now the relay notices the room is gone at its next empty read (at most
    ``max_block_s``) and ends the stream with NOT_FOUND."""
    prefix = unique_prefix()

    async def body() -> None:
        async with relay(RedisBackend.from_url(redis_url, prefix=prefix)) as client:
            room = await client.create_room(["a", "b"], ttl_ms=120_000)
            async with client.join(room.room_id, "b", room.join_tokens["b"]) as b:
                # Redis loses the room (a restart without persistence, a flush).
                delete_keys(redis_url, prefix)
                started = time.monotonic()
                with pytest.raises(RoomNotFoundError):
                    await asyncio.wait_for(b.receive(), 15)
                assert time.monotonic() - started < 7  # max_block_s (5 s) and slack

    try:
        run(body)
    finally:
        delete_keys(redis_url, prefix)


def test_paused_redis_fails_relay_calls_within_seconds(redis_url: str) -> None:
    """Redis that stops answering: calls fail UNAVAILABLE within the client's
    socket timeout (5 s), never hang."""
    prefix = unique_prefix()
    parts = urlsplit(redis_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        url = urlunsplit((parts.scheme, f"127.0.0.1:{proxy.port}", parts.path, "", ""))

        async def body() -> None:
            async with relay(RedisBackend.from_url(url, prefix=prefix)) as client:
                await client.create_room(["a", "b"])
                proxy.pause()
                started = time.monotonic()
                with pytest.raises(RelayError, match="UNAVAILABLE"):
                    await client.create_room(["a", "b"])
                assert time.monotonic() - started < 8
                proxy.resume()

        try:
            run(body)
        finally:
            proxy.resume()
            delete_keys(redis_url, prefix)
