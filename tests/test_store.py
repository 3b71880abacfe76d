"""The host's ciphertext store (docs/architecture.md), every behaviour on SQLite and on PostgreSQL.

PostgreSQL tests use the real server (``postgres_dsn``: fails in CI, skips on a
laptop when it is down), each in its own schema, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from host.migrations import Migration, check_sequence
from host.migrations import postgres as pg_migrations
from host.migrations import sqlite as sqlite_migrations
from host.postgres_store import PostgresStore
from host.sqlite_store import SQLiteStore
from host.store import (
    Backup,
    BackupBlob,
    BackupInfo,
    BackupNotFoundError,
    BackupQuota,
    ConnectionPool,
    EncryptedDataKey,
    EpochError,
    Keyring,
    MigrationError,
    NewWallet,
    OwnerKey,
    Party,
    PublicKey,
    QuotaExceededError,
    Scheme,
    SealedCiphertext,
    SealedShare,
    ShareNotFoundError,
    StaticKey,
    Store,
    StoreConflictError,
    StoreCorruptionError,
    StoreError,
    StoreInputError,
    StoreUnavailableError,
    WalletNotFoundError,
    map_driver_errors,
)
from host.stores import open_store

################################################################################
### Fixtures: one backend per parameter, each test on a fresh database
################################################################################


@dataclass(frozen=True)
class Backend:
    """A fresh database: the store URL, and raw SQL access that bypasses the store."""

    name: str
    url: str
    execute: Callable[[str], None]
    query: Callable[[str], list[tuple[Any, ...]]]


def _sqlite_backend(path: Path) -> Backend:
    def connect() -> contextlib.closing[sqlite3.Connection]:
        return contextlib.closing(sqlite3.connect(path, isolation_level=None))

    def execute(sql: str) -> None:
        with connect() as conn:
            conn.execute(sql)

    def query(sql: str) -> list[tuple[Any, ...]]:
        with connect() as conn:
            return conn.execute(sql).fetchall()

    return Backend("sqlite", f"sqlite:///{path}", execute, query)


def _postgres_backend(url: str) -> Backend:
    def execute(sql: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)

    def query(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    return Backend("postgres", url, execute, query)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield _sqlite_backend(tmp_path / "store.db")
        return
    dsn: str = request.getfixturevalue("postgres_dsn")
    schema = f"test_store_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in dsn else "?"
    try:
        yield _postgres_backend(f"{dsn}{separator}options={quote(f'-csearch_path={schema}')}")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


class FakeClock:
    """Unix milliseconds that advance by one per reading (thread-safe in CPython)."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1_700_000_000_000)

    def __call__(self) -> int:
        return next(self._ticks)


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    with open_store(backend.url, clock=FakeClock()) as opened:
        yield opened


################################################################################
### Helpers
################################################################################

W = "wallet-1"


def make_keyring(threshold: int = 2, parties: int = 3, key_base: int = 1) -> Keyring:
    return Keyring(
        threshold,
        tuple(Party(f"party-{i}", StaticKey(bytes([key_base + i]) * 32)) for i in range(parties)),
    )


def make_wallet(
    wallet_id: str = W, scheme: Scheme = "bip340", keyring: Keyring | None = None
) -> NewWallet:
    return NewWallet(
        wallet_id=wallet_id,
        scheme=scheme,
        public_key=PublicKey(b"\x02" + bytes(range(32))),
        keyring=keyring or make_keyring(),
        owner_key=OwnerKey(b"\x03" + b"\x11" * 32),
    )


def make_share(
    wallet_id: str = W,
    index: int = 0,
    epoch: int = 0,
    tag: bytes = b"",
    scheme: Scheme = "bip340",
) -> SealedShare:
    marker = f"{wallet_id}/{index}/{epoch}".encode() + tag
    return SealedShare(
        wallet_id,
        index,
        scheme,
        epoch,
        EncryptedDataKey(b"kms-blob:" + marker),
        SealedCiphertext(b"nonce+ct+tag:" + marker),
    )


def committed_wallet(store: Store, wallet_id: str = W) -> None:
    """A wallet whose keygen (epoch 0, share index 0) is committed."""
    store.create_wallet(make_wallet(wallet_id), [make_share(wallet_id)])
    store.commit_epoch(wallet_id, 0)


def refresh(store: Store, epoch: int, wallet_id: str = W) -> None:
    store.begin_epoch(wallet_id, epoch)
    store.put_pending_share(make_share(wallet_id, epoch=epoch))
    store.commit_epoch(wallet_id, epoch)


def epoch_states(backend: Backend, wallet_id: str = W) -> list[tuple[int, str]]:
    return [
        (int(epoch), str(state))
        for epoch, state in backend.query(
            f"SELECT epoch, state FROM epochs WHERE wallet_id = '{wallet_id}' ORDER BY epoch"
        )
    ]


def run_concurrently(*calls: Callable[[], object]) -> list[str]:
    """Start ``calls`` together; the outcome of each: "ok" or its exception class name."""
    barrier = threading.Barrier(len(calls))

    def attempt(call: Callable[[], object]) -> str:
        barrier.wait()
        try:
            call()
        except StoreError as exc:
            return type(exc).__name__
        return "ok"

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(attempt, calls))


################################################################################
### Migrations
################################################################################


def test_migration_lists_are_well_formed() -> None:
    check_sequence(sqlite_migrations.MIGRATIONS)
    check_sequence(pg_migrations.MIGRATIONS)
    # Same versions and names: one schema in two dialects.
    assert [(m.version, m.name) for m in sqlite_migrations.MIGRATIONS] == [
        (m.version, m.name) for m in pg_migrations.MIGRATIONS
    ]
    with pytest.raises(ValueError, match="out of sequence"):
        check_sequence([Migration(2, "x", ("SELECT 1",))])


def test_migrations_are_idempotent(backend: Backend) -> None:
    latest = sqlite_migrations.MIGRATIONS[-1].version
    with open_store(backend.url, migrate=False) as first:
        assert first.schema_version() == 0
        assert first.migrate() == tuple(range(1, latest + 1))
        assert first.migrate() == ()
        committed_wallet(first)
    with open_store(backend.url) as second:  # migrates on open: nothing to do
        assert second.migrate() == ()
        assert second.schema_version() == latest
        assert second.get_wallet(W).current_epoch == 0
    rows = backend.query("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [(int(v), n) for v, n in rows] == [
        (m.version, m.name) for m in sqlite_migrations.MIGRATIONS
    ]


def test_hosts_starting_together_migrate_once(backend: Backend) -> None:
    def start() -> None:
        open_store(backend.url).close()

    assert run_concurrently(start, start, start) == ["ok", "ok", "ok"]
    assert len(backend.query("SELECT version FROM schema_migrations")) == len(
        sqlite_migrations.MIGRATIONS
    )


def test_failed_migration_changes_nothing(backend: Backend) -> None:
    broken = (Migration(1, "broken", ("CREATE TABLE half_done (x INTEGER)", "NOT SQL AT ALL")),)

    class BrokenSQLite(SQLiteStore):
        @property
        def _migrations(self) -> Sequence[Migration]:
            return broken

    class BrokenPostgres(PostgresStore):
        @property
        def _migrations(self) -> Sequence[Migration]:
            return broken

    if backend.name == "sqlite":
        opened: Store = BrokenSQLite(Path(backend.url.removeprefix("sqlite:///")))
    else:
        opened = BrokenPostgres(backend.url)
    with opened, pytest.raises(StoreError):
        opened.migrate()
    with pytest.raises(Exception, match="half_done"):  # rolled back with the failure
        backend.query("SELECT * FROM half_done")
    with open_store(backend.url, migrate=False) as fresh:
        assert fresh.schema_version() == 0
        assert fresh.migrate() == tuple(m.version for m in sqlite_migrations.MIGRATIONS)


def test_newer_schema_is_refused(backend: Backend) -> None:
    open_store(backend.url).close()
    backend.execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at_ms)"
        " VALUES (999, 'future', 'x', 0)"
    )
    with pytest.raises(MigrationError, match="999 is newer"):
        open_store(backend.url)


def test_edited_migration_is_refused(backend: Backend) -> None:
    open_store(backend.url).close()
    backend.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="migration 1 differs"):
        open_store(backend.url)


def _store_at(backend: Backend, version: int) -> Store:
    """A store of ``backend`` that knows only migrations 1..version."""

    class OldSQLite(SQLiteStore):
        @property
        def _migrations(self) -> Sequence[Migration]:
            return sqlite_migrations.MIGRATIONS[:version]

    class OldPostgres(PostgresStore):
        @property
        def _migrations(self) -> Sequence[Migration]:
            return pg_migrations.MIGRATIONS[:version]

    if backend.name == "sqlite":
        return OldSQLite(Path(backend.url.removeprefix("sqlite:///")), clock=FakeClock())
    return OldPostgres(backend.url, clock=FakeClock())


def test_the_ed25519_migration_keeps_every_row_and_reference(backend: Backend) -> None:
    """Migration 4 widens the scheme checks (SQLite rebuilds two tables): the wallets,
    epochs, shares, acknowledgments and backups of a version-3 database survive it,
    and the foreign keys still hold (a wallet's deletion still cascades)."""
    with _store_at(backend, 3) as old:
        assert old.migrate() == (1, 2, 3)
        committed_wallet(old)
        refresh(old, 1)
        old.put_backup(Backup(W, "b1", "party-1", 1, BackupBlob(b"sealed by client")))
        committed_wallet(old, "wallet-2")
        before = {
            table: sorted(backend.query(f"SELECT * FROM {table}"))
            for table in ("wallets", "epochs", "sealed_shares", "backups")
        }
    with open_store(backend.url, clock=FakeClock()) as migrated:
        assert migrated.schema_version() == 4
        for table, rows in before.items():
            assert sorted(backend.query(f"SELECT * FROM {table}")) == rows, table
        assert migrated.get_current_share(W, 0).share == make_share(epoch=1)
    # The rebuilt tables still reference, and are referenced, with their actions.
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        _execute_with_foreign_keys(
            backend, "INSERT INTO sealed_shares VALUES ('ghost', 0, 0, 'bip340', %s, %s, 0)"
        )
    _execute_with_foreign_keys(backend, "DELETE FROM wallets WHERE wallet_id = 'wallet-2'")
    assert backend.query("SELECT count(*) FROM epochs WHERE wallet_id = 'wallet-2'") == [(0,)]
    assert backend.query("SELECT count(*) FROM sealed_shares WHERE wallet_id = 'wallet-2'") == [
        (0,)
    ]


def _execute_with_foreign_keys(backend: Backend, sql: str) -> None:
    """Raw SQL with foreign keys enforced (``%s`` is a one-byte blob literal)."""
    sql = sql.replace("%s", _blob(backend, b"\x01"))
    if backend.name == "sqlite":
        path = backend.url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(sql)
        return
    backend.execute(sql)


def test_ed25519_wallets_take_a_32_byte_key(store: Store, backend: Backend) -> None:
    key = PublicKey(bytes(range(32)))
    wallet = replace(make_wallet(), scheme="ed25519", public_key=key)
    store.create_wallet(wallet, [make_share(scheme="ed25519")])
    committed = store.commit_epoch(W, 0)
    assert (committed.scheme, committed.public_key) == ("ed25519", key)
    assert store.get_current_share(W, 0).share.scheme == "ed25519"
    with pytest.raises(StoreInputError):  # an ed25519 share in a bip340 wallet
        store.create_wallet(make_wallet("wallet-2"), [make_share("wallet-2", scheme="ed25519")])
    with pytest.raises(StoreInputError):
        replace(make_wallet(), scheme="ed25519")  # 33 bytes
    with pytest.raises(StoreInputError):
        replace(make_wallet(), public_key=key)  # 32 bytes for bip340
    # The database's own checks agree with the store's.
    for scheme, size in (("ed25519", 33), ("bip340", 32), ("ed448", 57)):
        public_key, owner_key = _blob(backend, bytes([2]) * size), _blob(backend, b"")
        with pytest.raises(Exception, match=r"(?i)check"):
            backend.execute(
                "INSERT INTO wallets (wallet_id, scheme, public_key, owner_key, created_at_ms,"
                f" updated_at_ms) VALUES ('raw', '{scheme}', {public_key}, {owner_key}, 0, 0)"
            )


def _blob(backend: Backend, data: bytes) -> str:
    """A blob literal in the backend's dialect."""
    return f"x'{data.hex()}'" if backend.name == "sqlite" else f"'\\x{data.hex()}'::bytea"


################################################################################
### Create and commit
################################################################################


def test_create_then_commit_keygen(store: Store, backend: Backend) -> None:
    created = store.create_wallet(make_wallet(), [make_share(index=0), make_share(index=2)])
    assert (created.current_epoch, created.pending_epoch) == (None, 0)
    assert created.keyring == make_keyring()
    with pytest.raises(ShareNotFoundError):  # nothing usable before the commit
        store.get_current_share(W, 0)
    assert store.current_shares(W) == []
    assert store.get_share(W, 0, 0).state == "pending"

    wallet = store.commit_epoch(W, 0)
    assert (wallet.current_epoch, wallet.pending_epoch) == (0, None)
    assert wallet == store.get_wallet(W)
    assert wallet.wallet_id == W and wallet.scheme == "bip340"
    assert wallet.public_key == make_wallet().public_key
    assert wallet.owner_key == make_wallet().owner_key
    assert (wallet.threshold, wallet.parties) == (2, make_keyring().parties)
    assert wallet.created_at_ms < wallet.updated_at_ms

    current = store.get_current_share(W, 2)
    assert current.state == "committed"
    assert current.share == make_share(index=2)
    assert [s.share.share_index for s in store.current_shares(W)] == [0, 2]
    with pytest.raises(ShareNotFoundError):
        store.get_current_share(W, 1)
    assert epoch_states(backend) == [(0, "committed")]


def test_more_keygen_shares_may_follow_create(store: Store) -> None:
    store.create_wallet(make_wallet())
    with pytest.raises(EpochError, match="holds no share"):
        store.commit_epoch(W, 0)
    store.put_pending_share(make_share(index=1))
    store.commit_epoch(W, 0)
    assert store.get_current_share(W, 1).share == make_share(index=1)


def test_a_ceremony_reads_the_wallet_and_its_shares_together(store: Store) -> None:
    committed_wallet(store)
    refresh(store, 1)
    store.begin_epoch(W, 2)
    store.put_pending_share(make_share(epoch=2))
    wallet, shares = store.wallet_and_shares(W, 1)
    assert wallet == store.get_wallet(W)
    assert [s.share for s in shares] == [make_share(epoch=1)]
    assert store.wallet_and_shares(W, 0)[1] == store.shares_at(W, 0) != []  # retired, kept
    assert store.wallet_and_shares(W, 2)[1] == []  # pending: not for ceremonies
    with pytest.raises(WalletNotFoundError):
        store.wallet_and_shares("another-wallet", 0)


def test_duplicate_wallet_is_a_conflict(store: Store) -> None:
    committed_wallet(store)
    with pytest.raises(StoreConflictError, match="exists"):
        store.create_wallet(make_wallet(keyring=make_keyring(3, 5)), [make_share(tag=b"other")])
    assert store.get_wallet(W).keyring == make_keyring()
    assert store.get_current_share(W, 0).share == make_share()


def test_unknown_wallet(store: Store) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.get_wallet("nope"),
        lambda: store.begin_epoch("nope", 1),
        lambda: store.put_pending_share(make_share("nope")),
        lambda: store.commit_epoch("nope", 0),
        lambda: store.abort_epoch("nope", 0),
        lambda: store.prune_retired("nope"),
        lambda: store.get_current_share("nope", 0),
        lambda: store.current_shares("nope"),
        lambda: store.get_share("nope", 0, 0),
        lambda: store.put_backup(Backup("nope", "b", "p", 0, BackupBlob(b"x"))),
        lambda: store.get_backup("nope", "b"),
        lambda: store.list_backups("nope"),
    ]
    for call in calls:
        with pytest.raises(WalletNotFoundError):
            call()


def test_list_wallets_pages_in_id_order(store: Store) -> None:
    ids = ["b", "a", "C", "a.1", "z"]
    for wallet_id in ids:
        store.create_wallet(make_wallet(wallet_id))
    assert [w.wallet_id for w in store.list_wallets()] == sorted(ids)  # byte order
    first = store.list_wallets(limit=2)
    rest = store.list_wallets(after=first[-1].wallet_id, limit=10)
    assert [w.wallet_id for w in first + rest] == sorted(ids)
    assert store.list_wallets(after="z") == []


################################################################################
### Epoch rules
################################################################################


def test_epoch_rules(store: Store, backend: Backend) -> None:
    store.create_wallet(make_wallet(), [make_share()])
    with pytest.raises(EpochError, match="no committed epoch"):
        store.begin_epoch(W, 1)
    with pytest.raises(EpochError):  # only epoch 0 is pending
        store.put_pending_share(make_share(index=1, epoch=1))
    store.commit_epoch(W, 0)

    with pytest.raises(EpochError, match="not pending"):  # committed epochs are closed
        store.put_pending_share(make_share(index=1, epoch=0))
    with pytest.raises(EpochError, match="begin_epoch first"):
        store.put_pending_share(make_share(epoch=1))
    for wrong in (0, 2, 7):
        with pytest.raises(EpochError, match="not the next epoch"):
            store.begin_epoch(W, wrong)
    store.begin_epoch(W, 1)
    store.begin_epoch(W, 1)  # idempotent
    with pytest.raises(EpochError):
        store.put_pending_share(make_share(epoch=2))
    with pytest.raises(EpochError, match="holds no share"):
        store.commit_epoch(W, 1)
    store.put_pending_share(make_share(epoch=1))
    with pytest.raises(EpochError):
        store.commit_epoch(W, 2)
    assert store.get_wallet(W).pending_epoch == 1

    wallet = store.commit_epoch(W, 1)
    assert (wallet.current_epoch, wallet.pending_epoch) == (1, None)
    with pytest.raises(EpochError, match="not pending"):  # a second commit of the same epoch
        store.commit_epoch(W, 1)
    assert store.get_current_share(W, 0).share == make_share(epoch=1)
    # The old share is retired, not deleted.
    assert store.get_share(W, 0, 0).state == "retired"
    assert store.get_share(W, 0, 0).share == make_share(epoch=0)
    assert epoch_states(backend) == [(0, "retired"), (1, "committed")]


def test_pending_share_checks_scheme_and_index(store: Store) -> None:
    committed_wallet(store)
    store.begin_epoch(W, 1)
    with pytest.raises(StoreInputError, match="scheme"):
        store.put_pending_share(make_share(epoch=1, scheme="ecdsa-secp256k1"))
    with pytest.raises(StoreInputError, match="outside"):
        store.put_pending_share(make_share(index=3, epoch=1))  # 3 parties: indexes 0-2
    with pytest.raises(StoreInputError, match="epoch-0 shares of the same wallet"):
        store.create_wallet(make_wallet("w2"), [make_share("w2", epoch=1)])
    with pytest.raises(StoreInputError, match="distinct"):
        store.create_wallet(make_wallet("w2"), [make_share("w2"), make_share("w2", tag=b"x")])
    with pytest.raises(WalletNotFoundError):  # the rejected creates left nothing behind
        store.get_wallet("w2")


def test_abort_leaves_old_share_current(store: Store, backend: Backend) -> None:
    committed_wallet(store)
    store.begin_epoch(W, 1)
    store.put_pending_share(make_share(epoch=1))
    assert store.abort_epoch(W, 1) is True
    assert store.abort_epoch(W, 1) is False  # already gone

    wallet = store.get_wallet(W)
    assert (wallet.current_epoch, wallet.pending_epoch) == (0, None)
    assert store.get_current_share(W, 0).share == make_share()
    with pytest.raises(ShareNotFoundError):
        store.get_share(W, 0, 1)
    with pytest.raises(EpochError, match="committed, not pending"):
        store.abort_epoch(W, 0)
    assert epoch_states(backend) == [(0, "committed")]
    # A later refresh can use epoch 1 again, with new bytes.
    store.begin_epoch(W, 1)
    store.put_pending_share(make_share(epoch=1, tag=b"second try"))
    store.commit_epoch(W, 1)
    assert store.get_current_share(W, 0).share == make_share(epoch=1, tag=b"second try")


def test_abort_keygen_removes_the_wallet(store: Store, backend: Backend) -> None:
    store.create_wallet(make_wallet(), [make_share()])
    store.put_backup(Backup(W, "b1", "party-1", 0, BackupBlob(b"sealed by client")))
    assert store.abort_epoch(W, 0) is True
    with pytest.raises(WalletNotFoundError):
        store.get_wallet(W)
    for table in ("wallets", "epochs", "sealed_shares", "backups"):
        assert backend.query(f"SELECT COUNT(*) FROM {table}") == [(0,)]
    committed_wallet(store)  # the id is free again


def test_prune_retired_keeps_the_newest(store: Store, backend: Backend) -> None:
    committed_wallet(store)
    for epoch in (1, 2, 3):
        refresh(store, epoch)
    store.begin_epoch(W, 4)
    store.put_pending_share(make_share(epoch=4))
    with pytest.raises(StoreInputError):
        store.prune_retired(W, keep_epochs=-1)

    assert store.prune_retired(W, keep_epochs=1) == 2
    assert epoch_states(backend) == [(2, "retired"), (3, "committed"), (4, "pending")]
    for pruned in (0, 1):
        with pytest.raises(ShareNotFoundError):
            store.get_share(W, 0, pruned)
    assert store.get_share(W, 0, 2).state == "retired"
    assert store.prune_retired(W, keep_epochs=1) == 0
    assert store.prune_retired(W, keep_epochs=0) == 1
    assert epoch_states(backend) == [(3, "committed"), (4, "pending")]
    assert store.get_current_share(W, 0).share == make_share(epoch=3)
    assert backend.query("SELECT COUNT(*) FROM sealed_shares") == [(2,)]


################################################################################
### A stored share is never replaced
################################################################################


@pytest.mark.parametrize(
    "field",
    ["encrypted_data_key", "ciphertext"],
)
def test_conflicting_share_never_overwrites(store: Store, field: str) -> None:
    committed_wallet(store)
    store.begin_epoch(W, 1)
    original = make_share(epoch=1)
    store.put_pending_share(original)
    store.put_pending_share(make_share(epoch=1))  # the same bytes again: a no-op
    old = getattr(original, field)
    changed = SealedShare(
        **{**original.__dict__, field: old[:-1] + bytes([old[-1] ^ 1])},
    )
    with pytest.raises(StoreConflictError, match="another share"):
        store.put_pending_share(changed)
    assert store.get_share(W, 0, 1).share == original
    store.commit_epoch(W, 1)
    assert store.get_current_share(W, 0).share == original


def test_other_keyring_for_a_pending_epoch_is_a_conflict(store: Store) -> None:
    committed_wallet(store)
    store.begin_epoch(W, 1)  # a refresh holds epoch 1
    with pytest.raises(StoreConflictError, match="another keyring"):
        store.begin_epoch(W, 1, make_keyring(3, 4))  # a reshare cannot take it over
    assert store.get_wallet(W).pending_epoch == 1


################################################################################
### Concurrency and atomicity
################################################################################


def test_concurrent_commits_end_with_one_current_epoch(store: Store, backend: Backend) -> None:
    committed_wallet(store)
    for epoch in (1, 2, 3):
        store.begin_epoch(W, epoch)
        store.put_pending_share(make_share(epoch=epoch))
        outcomes = run_concurrently(
            lambda e=epoch: store.commit_epoch(W, e),  # type: ignore[misc]
            lambda e=epoch: store.commit_epoch(W, e),  # type: ignore[misc]
        )
        assert sorted(outcomes) == ["EpochError", "ok"]
        assert store.get_wallet(W).current_epoch == epoch
        committed = [e for e, state in epoch_states(backend) if state == "committed"]
        assert committed == [epoch]


def test_commit_racing_abort_leaves_a_usable_share(store: Store, backend: Backend) -> None:
    committed_wallet(store)
    for epoch in (1, 2, 3, 4):
        current = store.get_wallet(W).current_epoch
        assert current is not None
        store.begin_epoch(W, current + 1)
        store.put_pending_share(make_share(epoch=current + 1))
        outcomes = run_concurrently(
            lambda e=current + 1: store.commit_epoch(W, e),  # type: ignore[misc]
            lambda e=current + 1: store.abort_epoch(W, e),  # type: ignore[misc]
        )
        # Whichever runs second finds the epoch committed (abort refuses) or
        # gone (commit refuses): exactly one wins.
        assert sorted(outcomes) == ["EpochError", "ok"]
        after = store.get_wallet(W).current_epoch
        assert after == (current + 1 if outcomes[0] == "ok" else current)
        assert after is not None
        assert store.get_current_share(W, 0).share == make_share(epoch=after)
        assert [e for e, s in epoch_states(backend) if s == "committed"] == [after], epoch


def test_reshare_commit_is_atomic(store: Store, backend: Backend) -> None:
    committed_wallet(store)
    resharing = make_keyring(3, 5, key_base=50)
    store.begin_epoch(W, 1, resharing)
    store.put_pending_share(make_share(index=4, epoch=1))
    before = store.get_wallet(W)

    # Fail the last write of the commit (the wallet's epoch pointer), after the
    # epoch rows have already changed inside the transaction.
    if backend.name == "sqlite":
        backend.execute(
            "CREATE TRIGGER fail_commit BEFORE UPDATE OF current_epoch ON wallets"
            " WHEN NEW.current_epoch = 1 BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
        )
        drop = "DROP TRIGGER fail_commit"
    else:
        backend.execute(
            "CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'simulated failure' USING ERRCODE = 'check_violation'; END $$"
        )
        backend.execute(
            "CREATE TRIGGER fail_commit BEFORE UPDATE ON wallets FOR EACH ROW"
            " WHEN (NEW.current_epoch = 1) EXECUTE FUNCTION fail_commit()"
        )
        drop = "DROP TRIGGER fail_commit ON wallets"
    with pytest.raises(StoreConflictError) as caught:
        store.commit_epoch(W, 1)
    # The driver's error (the trigger's) is kept as the cause, out of the message.
    assert "simulated failure" in str(caught.value.__cause__)
    assert "simulated failure" not in str(caught.value)

    assert store.get_wallet(W) == before  # old threshold, parties, epoch; still pending
    assert store.get_current_share(W, 0).share == make_share()
    assert store.get_share(W, 4, 1).state == "pending"
    assert epoch_states(backend) == [(0, "committed"), (1, "pending")]

    backend.execute(drop)
    wallet = store.commit_epoch(W, 1)
    assert (wallet.current_epoch, wallet.keyring) == (1, resharing)
    assert wallet.public_key == before.public_key
    assert store.get_current_share(W, 4).share == make_share(index=4, epoch=1)
    with pytest.raises(ShareNotFoundError):  # index 0 has no share in the new keyring
        store.get_current_share(W, 0)
    assert store.get_share(W, 0, 0).state == "retired"


def test_many_threads_many_wallets(store: Store, backend: Backend) -> None:
    # The asyncio host calls the store from a thread pool: keygens, refreshes
    # and backups of several wallets interleave.
    def lifecycle(wallet_id: str) -> None:
        committed_wallet(store, wallet_id)
        for epoch in (1, 2, 3):
            refresh(store, epoch, wallet_id)
            store.put_backup(Backup(wallet_id, f"b{epoch}", "party-1", epoch, BackupBlob(b"x")))
        store.prune_retired(wallet_id, keep_epochs=1)

    wallet_ids = [f"wallet-{i}" for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lifecycle, wallet_ids))
    for wallet_id in wallet_ids:
        assert store.get_wallet(wallet_id).current_epoch == 3
        assert store.get_current_share(wallet_id, 0).share == make_share(wallet_id, epoch=3)
        assert epoch_states(backend, wallet_id) == [(2, "retired"), (3, "committed")]
        assert len(store.list_backups(wallet_id)) == 3


def test_database_enforces_one_committed_epoch(store: Store, backend: Backend) -> None:
    committed_wallet(store)
    store.begin_epoch(W, 1)
    with pytest.raises(Exception, match=r"(?i)unique"):
        backend.execute(f"UPDATE epochs SET state = 'committed' WHERE wallet_id = '{W}'")


################################################################################
### Backups
################################################################################


def test_backups(store: Store) -> None:
    committed_wallet(store)
    first = Backup(W, "device-1", "party-1", 0, BackupBlob(b"argon2id+aes-gcm blob"))
    second = Backup(W, "cloud-1", "party-2", 0, BackupBlob(b"passkey blob"))
    store.put_backup(first)
    store.put_backup(second)
    store.put_backup(first)  # the same again: a no-op
    assert store.get_backup(W, "device-1").backup == first
    # By backup id, without the blobs.
    listed = store.list_backups(W)
    assert [(b.backup_id, b.party_id, b.epoch, b.blob_bytes) for b in listed] == [
        ("cloud-1", "party-2", 0, len(second.blob)),
        ("device-1", "party-1", 0, len(first.blob)),
    ]
    assert all(isinstance(b, BackupInfo) and b.wallet_id == W for b in listed)
    for other in (
        Backup(W, "device-1", "party-1", 0, BackupBlob(b"other blob")),
        Backup(W, "device-1", "party-2", 0, first.blob),
        Backup(W, "device-1", "party-1", 1, first.blob),
    ):
        with pytest.raises(StoreConflictError):
            store.put_backup(other)
    assert store.get_backup(W, "device-1").backup == first
    with pytest.raises(BackupNotFoundError):
        store.get_backup(W, "missing")
    # Backups outlive refreshes and pruning: offline export may need them.
    refresh(store, 1)
    store.prune_retired(W, keep_epochs=0)
    assert len(store.list_backups(W)) == 2


def test_backup_quota_per_wallet(store: Store) -> None:
    committed_wallet(store)
    committed_wallet(store, "other-wallet")
    quota = BackupQuota(max_count=3, max_bytes=100)
    for i in range(3):
        store.put_backup(Backup(W, f"b{i}", "party-1", 0, BackupBlob(b"x" * 10)), quota)
    store.put_backup(Backup(W, "b0", "party-1", 0, BackupBlob(b"x" * 10)), quota)  # a no-op
    with pytest.raises(QuotaExceededError, match="backup count quota 3"):
        store.put_backup(Backup(W, "b3", "party-1", 0, BackupBlob(b"x")), quota)
    with pytest.raises(QuotaExceededError, match="backup byte quota 100"):
        store.put_backup(Backup("other-wallet", "big", "p", 0, BackupBlob(b"x" * 101)), quota)
    # The quota is per wallet: the other wallet still has all of its own.
    store.put_backup(Backup("other-wallet", "b", "p", 0, BackupBlob(b"x" * 100)), quota)
    assert [b.blob_bytes for b in store.list_backups(W)] == [10, 10, 10]


################################################################################
### Inputs, errors, URLs
################################################################################


@pytest.mark.parametrize(
    "build",
    [
        lambda: Party("", StaticKey(b"\x01" * 32)),
        lambda: Party("bad id!", StaticKey(b"\x01" * 32)),
        lambda: Party("p", StaticKey(b"\x01" * 31)),
        lambda: Keyring(0, make_keyring().parties),
        lambda: Keyring(4, make_keyring().parties),
        lambda: Keyring(True, make_keyring().parties),
        lambda: Keyring(1, ()),
        lambda: Keyring(1, (Party("p", StaticKey(b"\x01" * 32)),) * 2),
        lambda: Keyring(1, list(make_keyring().parties)),  # type: ignore[arg-type]
        lambda: NewWallet(W, "rsa", PublicKey(b"\x02" * 33), make_keyring()),  # type: ignore[arg-type]
        lambda: NewWallet(W, "bip340", PublicKey(b"\x02" * 32), make_keyring()),
        lambda: NewWallet(W, "bip340", PublicKey(b"\x04" * 33), make_keyring()),
        lambda: SealedShare(W, -1, "bip340", 0, EncryptedDataKey(b"k"), SealedCiphertext(b"c")),
        lambda: SealedShare(
            W, 1 << 32, "bip340", 0, EncryptedDataKey(b"k"), SealedCiphertext(b"c")
        ),
        lambda: SealedShare(
            W, 0, "bip340", 1 << 63, EncryptedDataKey(b"k"), SealedCiphertext(b"c")
        ),
        lambda: SealedShare(W, 0, "bip340", 0, EncryptedDataKey(b""), SealedCiphertext(b"c")),
        lambda: SealedShare(W, 0, "bip340", 0, EncryptedDataKey(b"k"), bytearray(b"c")),  # type: ignore[arg-type]
        lambda: Backup(W, "b", "p", 0, BackupBlob(b"")),
        lambda: Backup(W, "b" * 129, "p", 0, BackupBlob(b"x")),
    ],
    ids=[
        "empty-party-id",
        "party-id-alphabet",
        "static-key-length",
        "threshold-zero",
        "threshold-above-n",
        "threshold-bool",
        "no-parties",
        "duplicate-parties",
        "parties-not-tuple",
        "unknown-scheme",
        "public-key-length",
        "public-key-uncompressed",
        "negative-share-index",
        "share-index-above-uint32",
        "epoch-above-bigint",
        "empty-data-key",
        "ciphertext-not-bytes",
        "empty-backup",
        "backup-id-too-long",
    ],
)
def test_malformed_records_are_rejected(build: Callable[[], object]) -> None:
    with pytest.raises(StoreInputError):
        build()


def test_malformed_arguments_are_rejected(store: Store) -> None:
    committed_wallet(store)
    for call in (
        lambda: store.get_wallet("a b"),
        lambda: store.get_share(W, 0, -1),
        lambda: store.list_wallets(limit=0),
        lambda: store.begin_epoch(W, 1, keyring=object()),  # type: ignore[arg-type]
        lambda: store.put_pending_share(object()),  # type: ignore[arg-type]
    ):
        with pytest.raises(StoreInputError):
            call()


def test_reprs_carry_no_blobs() -> None:
    share = make_share(tag=b"SECRET-CANARY")
    backup = Backup(W, "b", "p", 0, BackupBlob(b"SECRET-CANARY"))
    assert "CANARY" not in repr(share) and "CANARY" not in repr(backup)
    dsn_store = PostgresStore("postgresql://u:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in repr(dsn_store)
    dsn_store.close()


def test_driver_errors_are_mapped_through_the_table() -> None:
    table = ((sqlite3.IntegrityError, StoreConflictError), (sqlite3.Error, StoreError))
    with (
        pytest.raises(StoreConflictError, match=r"database error \(IntegrityError\)") as caught,
        map_driver_errors(table),
    ):
        raise sqlite3.IntegrityError("UNIQUE constraint failed\nDETAIL: row values")
    assert "row values" not in str(caught.value) and "UNIQUE" not in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    with pytest.raises(KeyError), map_driver_errors(table):  # not a driver error: untouched
        raise KeyError("x")


def test_unreachable_databases_are_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError) as caught:
        open_store(f"sqlite:///{tmp_path}/missing-dir/store.db")
    assert str(tmp_path) not in str(caught.value)
    with pytest.raises(StoreUnavailableError) as caught:
        open_store("postgresql://postgres@127.0.0.1:1/test")
    # The driver's text names the server ("connection to server at ..."); ours does not.
    assert "127.0.0.1" not in str(caught.value) and ":1" not in str(caught.value)


def test_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///relative.db") as relative:
        assert isinstance(relative, SQLiteStore)
    assert (tmp_path / "relative.db").exists()
    with open_store(tmp_path / "by-path.db") as by_path:
        assert isinstance(by_path, SQLiteStore)
    for bad in ("mysql://x/y", "sqlite:///:memory:", "sqlite:///", "/no/scheme.db"):
        with pytest.raises(StoreInputError):
            open_store(bad)


def test_corrupt_rows_are_reported(store: Store, backend: Backend) -> None:
    committed_wallet(store)
    backend.execute(f"UPDATE epochs SET parties = '[{{\"party_id\": 1}}]' WHERE wallet_id = '{W}'")
    with pytest.raises(StoreCorruptionError):
        store.get_wallet(W)


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with open_store(path) as opened:
        committed_wallet(opened)
    backend = _sqlite_backend(path)
    assert backend.query("PRAGMA journal_mode") == [("wal",)]  # persistent in the file
    store = SQLiteStore(path, busy_timeout=2.5)
    with store._pool.connection() as conn:  # what every store connection gets
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (2500,)
    store.close()


def test_host_opening_a_file_another_writer_holds_waits_for_its_lock(tmp_path: Path) -> None:
    """SQLite answers a switch to WAL with SQLITE_BUSY at once (no busy handler) while
    another connection holds the write lock; hosts starting together on a new file
    meet exactly that. The store waits for the lock instead of failing to open."""
    path = tmp_path / "store.db"
    with contextlib.closing(
        sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    ) as writer:
        writer.execute("CREATE TABLE other_writer (x INTEGER)")  # a rollback-journal file
        writer.execute("BEGIN IMMEDIATE")
        released = threading.Timer(0.3, writer.execute, ("COMMIT",))
        released.start()
        try:
            with SQLiteStore(path, busy_timeout=5.0) as opened:
                opened.migrate()
                assert opened.schema_version() == sqlite_migrations.MIGRATIONS[-1].version
        finally:
            released.join()
    assert _sqlite_backend(path).query("PRAGMA journal_mode") == [("wal",)]


class FakeConnection:
    def __init__(self, number: int) -> None:
        self.number = number
        self.healthy = True
        self.closed = False


def test_connection_pool_reuses_bounds_and_disposes() -> None:
    made: list[FakeConnection] = []

    def connect() -> FakeConnection:
        made.append(FakeConnection(len(made)))
        return made[-1]

    def dispose(conn: FakeConnection) -> None:
        conn.closed = True

    pool = ConnectionPool(
        connect,
        reusable=lambda c: c.healthy,
        dispose=dispose,
        max_connections=2,
        acquire_timeout=0.05,
    )
    with pool.connection() as first:
        pass
    with pool.connection() as again:
        assert again is first  # idle connections are reused
    with pool.connection() as a, pool.connection() as b:
        assert a is not b
        with pytest.raises(StoreUnavailableError), pool.connection():  # bound reached
            pass
        b.healthy = False
    assert b.closed and not a.closed  # an unhealthy connection is not pooled
    with pool.connection() as borrowed:
        pool.close()
        assert a.closed is (a is not borrowed)  # idle ones close at once
    assert borrowed.closed  # borrowed ones when they come back
    with pytest.raises(StoreError, match="closed"), pool.connection():
        pass


def test_closed_store_refuses_calls(store: Store) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_wallets()
