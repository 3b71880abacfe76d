"""The host's ciphertext store: wallets, their key epochs, sealed server shares, backups.

The host is untrusted (docs/architecture.md): it keeps what the enclave and the clients
hand it and never interprets the blobs. The enclave binds wallet id, share
index, scheme and epoch into each sealed share's associated data, so a host that
swapped or rolled back a blob is caught there; this store's job is to never
*lose* a usable share (docs/architecture.md, "Storage").

Model (one schema, two dialects: ``host.migrations.sqlite`` / ``.postgres``):

- ``wallets``: what is fixed for a wallet's life (scheme, public key: 33-byte
  compressed secp256k1, 32-byte for ed25519,
  the owner's registered key) and ``current_epoch``, the epoch in use (NULL
  until keygen is committed).
- ``epochs``: one row per key epoch: its keyring (threshold and the ordered
  party list, as JSON) and the state of its whole share set: ``pending``
  (being written by a keygen, refresh or reshare), ``committed`` (the current
  epoch; at most one per wallet) or ``retired`` (superseded, kept until
  pruned). The state lives here, not on each share, because a share set
  changes state as a unit; per-share states could be left half-committed.
- ``sealed_shares``: (wallet_id, share_index, epoch) -> scheme, KMS-encrypted
  data key, AES-GCM ciphertext, exactly as the enclave's ``SealedShare``.
- ``backups``: (wallet_id, backup_id) -> party id, the epoch of the backed-up
  share, and the client-encrypted blob.
- ``enclave_identities``: the enclave's sealed party identity, append-only;
  the newest row is handed back to ``Enclave.Provision`` at start-up.

Epoch lifecycle (each step one transaction):

1. ``create_wallet`` writes the wallet and its first epoch (0 for keygen; an
   import starts at its reshare's epoch, ``NewWallet.epoch``) as *pending*,
   with the first shares; ``commit_epoch`` makes it current. Until then the
   wallet has no usable share, and ``abort_epoch`` of that epoch removes the
   wallet altogether.
2. A refresh or reshare calls ``begin_epoch(w, current + 1, keyring)`` (no
   keyring: a refresh keeps the current one), ``put_pending_share`` for each
   new share, then ``commit_epoch``, which in one transaction retires the old
   epoch and makes the new one current. The new keyring (threshold, parties)
   takes effect with it.
3. ``abort_epoch`` deletes only a pending epoch: the current share stays
   usable. Retired shares stay readable with ``get_share`` until
   ``prune_retired``: the old share must survive until every party has
   committed the new one (``ack_epoch`` records who has).

Key changes (refresh, reshare, import; ``tss.certificate``): the pending epoch
records what the change's certificate must complete (``KeyChange``) and a
deadline; it is committed only with its certificate (the caller verifies it),
and never after the deadline. ``abort_expired`` discards a pending epoch whose
deadline passed: nobody can hold a certificate the host would still accept, so
every party goes back to the current epoch. The epoch row and its first shares
are written in one transaction (``begin_epoch``, ``create_wallet``).

No write ever replaces a stored share: writing other bytes where a share is
stored raises ``StoreConflictError`` and changes nothing; writing the same
bytes again is a no-op, so retries are safe.

Thread safety: every ``Store`` method may be called from any thread, at the
same time (the asyncio host calls them through ``asyncio.to_thread``, and a
ceremony's reads on the event loop itself where ``inline_reads`` says they
are cheap). Each
call borrows one connection from a small pool for exactly one transaction;
writes lock the wallet (``SELECT ... FOR UPDATE`` on PostgreSQL, SQLite's
single writer lock), so concurrent epoch changes of one wallet serialise.

Errors: everything raised is a ``StoreError``; driver errors are translated
once, through each backend's table, by ``map_driver_errors``. Messages never
carry blob contents.

Layout: this module holds the ``Store`` logic and re-exports
the public names of ``host.store_errors`` (errors), ``host.store_records``
(records) and ``host.store_backend`` (pool, transactions, error mapping);
``host.sqlite_store`` and ``host.postgres_store`` are the two backends, and
``host.stores.open_store`` opens one by URL.
"""

from __future__ import annotations

import abc
import hmac
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Final

from host.migrations import Migration
from host.store_backend import ConnectionPool, ErrorTable, Row, Transaction, map_driver_errors
from host.store_errors import (
    BackupNotFoundError,
    EpochError,
    MigrationError,
    NotFoundError,
    QuotaExceededError,
    ShareNotFoundError,
    StoreConflictError,
    StoreCorruptionError,
    StoreError,
    StoreInputError,
    StoreUnavailableError,
    WalletNotFoundError,
)
from host.store_records import (
    EPOCH_STATES,
    MAX_BLOB_BYTES,
    MAX_EPOCH,
    MAX_PARTIES,
    MAX_SHARE_INDEX,
    SCHEMES,
    Backup,
    BackupBlob,
    BackupInfo,
    BackupQuota,
    EncryptedDataKey,
    EpochRecord,
    EpochState,
    KeyChange,
    Keyring,
    NewWallet,
    OwnerKey,
    Party,
    PublicKey,
    Scheme,
    SealedCiphertext,
    SealedShare,
    StaticKey,
    StoredBackup,
    StoredShare,
    Wallet,
    check_id,
    check_uint,
    decode_parties,
    encode_parties,
)

__all__ = [
    # Functions
    "map_driver_errors",
    # Exceptions
    "StoreError",
    "StoreInputError",
    "NotFoundError",
    "WalletNotFoundError",
    "ShareNotFoundError",
    "BackupNotFoundError",
    "StoreConflictError",
    "QuotaExceededError",
    "EpochError",
    "StoreUnavailableError",
    "StoreCorruptionError",
    "MigrationError",
    # Types
    "Store",
    "Clock",
    "Scheme",
    "SCHEMES",
    "EpochState",
    "PublicKey",
    "StaticKey",
    "OwnerKey",
    "EncryptedDataKey",
    "SealedCiphertext",
    "BackupBlob",
    "Party",
    "Keyring",
    "KeyChange",
    "EpochRecord",
    "NewWallet",
    "Wallet",
    "SealedShare",
    "StoredShare",
    "Backup",
    "StoredBackup",
    "BackupInfo",
    "BackupQuota",
    # Backend support
    "ConnectionPool",
    "ErrorTable",
    "Row",
    "Transaction",
]

Clock = Callable[[], int]
"""Returns the time as Unix milliseconds (a parameter, so tests control it)."""


################################################################################
### The store
################################################################################


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_WALLET_SELECT: Final = """
    SELECT w.wallet_id, w.scheme, w.public_key, w.owner_key, w.current_epoch,
           w.created_at_ms, w.updated_at_ms, k.threshold, k.parties,
           (SELECT p.epoch FROM epochs p WHERE p.wallet_id = w.wallet_id AND p.state = 'pending')
    FROM wallets w
    JOIN epochs k ON k.wallet_id = w.wallet_id AND k.epoch = COALESCE(
        w.current_epoch,
        (SELECT MIN(f.epoch) FROM epochs f WHERE f.wallet_id = w.wallet_id)
    )
"""

_SHARE_SELECT: Final = """
    SELECT s.wallet_id, s.share_index, s.scheme, s.epoch, s.encrypted_data_key, s.ciphertext,
           e.state, s.created_at_ms, e.certificate
    FROM sealed_shares s
    JOIN epochs e ON e.wallet_id = s.wallet_id AND e.epoch = s.epoch
"""

_BACKUP_SELECT: Final = """
    SELECT wallet_id, backup_id, party_id, epoch, blob, created_at_ms FROM backups
"""
# The same without the blob: length() is the blob's size in bytes in SQLite and
# PostgreSQL alike, and neither reads a blob's content to answer it.
_DEFAULT_BACKUP_QUOTA: Final = BackupQuota()
_BACKUP_INFO_SELECT: Final = """
    SELECT wallet_id, backup_id, party_id, epoch, length(blob), created_at_ms FROM backups
"""

_CREATE_SCHEMA_MIGRATIONS: Final = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER NOT NULL PRIMARY KEY,
        name TEXT NOT NULL,
        checksum TEXT NOT NULL,
        applied_at_ms BIGINT NOT NULL
    )
"""


@dataclass(frozen=True)
class _WalletHead:
    scheme: str
    current_epoch: int | None


@dataclass(frozen=True)
class _PendingEpoch:
    epoch: int
    keyring: Keyring
    certified: bool  # a key change: commits only with its certificate
    deadline_at_ms: int | None


def _check_certificate(data: object) -> None:
    if not isinstance(data, bytes) or len(data) % 64 or len(data) > 64 * MAX_PARTIES:
        raise StoreInputError("a certificate is 64-byte signatures, one per seat")


def _wallet_from_row(row: Row) -> Wallet:
    wallet_id, scheme, public_key, owner_key, current, created, updated = row[:7]
    threshold, parties, pending = row[7:]
    try:
        return Wallet(
            wallet_id=wallet_id,
            scheme=scheme,
            public_key=PublicKey(public_key),
            owner_key=OwnerKey(owner_key),
            keyring=Keyring(threshold, decode_parties(parties)),
            current_epoch=current,
            pending_epoch=pending,
            created_at_ms=created,
            updated_at_ms=updated,
        )
    except StoreInputError as exc:
        raise StoreCorruptionError("stored wallet record is malformed") from exc


def _share_from_row(row: Row) -> StoredShare:
    wallet_id, share_index, scheme, epoch, data_key, ciphertext, state, created, cert = row
    try:
        share = SealedShare(
            wallet_id,
            share_index,
            scheme,
            epoch,
            EncryptedDataKey(data_key),
            SealedCiphertext(ciphertext),
        )
    except StoreInputError as exc:
        raise StoreCorruptionError("stored share record is malformed") from exc
    if state not in EPOCH_STATES:
        raise StoreCorruptionError("stored epoch state is unknown")
    return StoredShare(share, state, created, bytes(cert or b""))


def _backup_from_row(row: Row) -> StoredBackup:
    wallet_id, backup_id, party_id, epoch, blob, created = row
    try:
        backup = Backup(wallet_id, backup_id, party_id, epoch, BackupBlob(blob))
    except StoreInputError as exc:
        raise StoreCorruptionError("stored backup record is malformed") from exc
    return StoredBackup(backup, created)


def _expect_one_row_changed(changed: int, what: str) -> None:
    # Self-check: the wallet is locked, so the rows read
    # just before cannot have moved; anything else means a broken invariant.
    if changed != 1:
        raise StoreCorruptionError(f"{what} changed {changed} rows, expected 1")


class Store(abc.ABC):
    """The ciphertext store interface and its logic, shared by both SQL backends.

    Backends supply transactions (``_transaction``), their migrations, the row
    lock clause and a migration lock. See the module docstring for the model,
    the epoch lifecycle and thread safety.
    """

    _FOR_UPDATE: ClassVar[str] = ""
    """Appended to the wallet-locking SELECT (" FOR UPDATE" on PostgreSQL)."""

    inline_reads: ClassVar[bool] = False
    """Whether a read costs so little (tens of microseconds, no network) that the
    host runs it on its event loop rather than hand it to a thread."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or _now_ms

    # --- backend hooks ---------------------------------------------------------

    @abc.abstractmethod
    def _transaction(self, *, write: bool) -> AbstractContextManager[Transaction]:
        """One transaction: committed when the block exits normally, else rolled back."""

    @property
    @abc.abstractmethod
    def _migrations(self) -> Sequence[Migration]:
        """This dialect's migrations, versions 1..n."""

    def _lock_migrations(self, tx: Transaction) -> None:  # noqa: B027 - optional hook
        """Serialise migrations across processes, for the rest of ``tx``."""

    def _schema_transaction(self) -> AbstractContextManager[Transaction]:
        """The transaction migrations run in (a backend may need other settings)."""
        return self._transaction(write=True)

    @abc.abstractmethod
    def close(self) -> None:
        """Close the store's connections; later calls raise ``StoreError``."""

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- schema ----------------------------------------------------------------

    def migrate(self) -> tuple[int, ...]:
        """Apply the migrations this database lacks, in one transaction.

        Idempotent: a second call applies nothing. Safe when several hosts start
        together (the backend's migration lock serialises them).

        Returns:
            The versions applied by this call, in order (empty if none).

        Raises:
            MigrationError: the database has a version this code does not know,
                or an applied migration's checksum differs from this code's.
        """
        known = {m.version: m for m in self._migrations}
        with self._schema_transaction() as tx:
            self._lock_migrations(tx)
            tx.run(_CREATE_SCHEMA_MIGRATIONS)
            applied = {
                row[0]: row[1] for row in tx.all("SELECT version, checksum FROM schema_migrations")
            }
            newer = sorted(set(applied) - set(known))
            if newer:
                raise MigrationError(
                    f"database schema version {newer[-1]} is newer than this code "
                    f"(knows up to {max(known, default=0)})"
                )
            edited = sorted(v for v, checksum in applied.items() if known[v].checksum != checksum)
            if edited:
                raise MigrationError(f"applied migration {edited[0]} differs from this code's")
            missing = [known[v] for v in sorted(known) if v not in applied]
            for migration in missing:
                for statement in migration.statements:
                    tx.run(statement)
                tx.run(
                    "INSERT INTO schema_migrations (version, name, checksum, applied_at_ms)"
                    " VALUES (?, ?, ?, ?)",
                    (migration.version, migration.name, migration.checksum, self._clock()),
                )
        return tuple(m.version for m in missing)

    def schema_version(self) -> int:
        """The highest applied migration version (0 for an empty database)."""
        with self._transaction(write=True) as tx:
            self._lock_migrations(tx)  # the table may be being created right now
            tx.run(_CREATE_SCHEMA_MIGRATIONS)
            row = tx.one("SELECT MAX(version) FROM schema_migrations")
        return 0 if row is None or row[0] is None else int(row[0])

    # --- wallets and epochs ------------------------------------------------------

    def create_wallet(
        self,
        wallet: NewWallet,
        shares: Sequence[SealedShare] = (),
        *,
        key_change: KeyChange | None = None,
        deadline_at_ms: int | None = None,
    ) -> Wallet:
        """Register a wallet with its first epoch (``wallet.epoch``, 0 for keygen) pending.

        The wallet has no usable share until ``commit_epoch(wallet_id, wallet.epoch)``.
        More shares of that epoch may follow through ``put_pending_share``.

        Arguments:
            wallet: the wallet and its first epoch's keyring.
            shares: sealed shares of this wallet at that epoch, distinct share indexes.
            key_change: an import's key change (its commit then needs the certificate).
            deadline_at_ms: abort the epoch (and the wallet) after this (``abort_expired``).

        Returns:
            The stored wallet (current_epoch None, pending_epoch ``wallet.epoch``).

        Raises:
            StoreInputError: a share of another wallet, epoch, scheme, or an
                index outside the keyring; repeated indexes.
            StoreConflictError: a wallet with this id exists.
        """
        if not isinstance(wallet, NewWallet):
            raise StoreInputError("wallet must be a NewWallet")
        shares = tuple(shares)
        for share in shares:
            self._check_share_fits(share, wallet.scheme, wallet.keyring)
            if share.wallet_id != wallet.wallet_id or share.epoch != wallet.epoch:
                raise StoreInputError(
                    f"create_wallet takes epoch-{wallet.epoch} shares of the same wallet"
                )
        if len({s.share_index for s in shares}) != len(shares):
            raise StoreInputError("share indexes must be distinct")
        now = self._clock()
        with self._transaction(write=True) as tx:
            if tx.one("SELECT 1 FROM wallets WHERE wallet_id = ?", (wallet.wallet_id,)) is not None:
                raise StoreConflictError(f"wallet {wallet.wallet_id} exists")
            tx.run(
                "INSERT INTO wallets (wallet_id, scheme, public_key, owner_key, current_epoch,"
                " created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, NULL, ?, ?)",
                (
                    wallet.wallet_id,
                    wallet.scheme,
                    wallet.public_key,
                    wallet.owner_key,
                    now,
                    now,
                ),
            )
            self._insert_epoch(
                tx, wallet.wallet_id, wallet.epoch, wallet.keyring, now, key_change, deadline_at_ms
            )
            for share in shares:
                self._insert_share(tx, share, now)
            return self._read_wallet(tx, wallet.wallet_id)

    def begin_epoch(
        self,
        wallet_id: str,
        epoch: int,
        keyring: Keyring | None = None,
        *,
        shares: Sequence[SealedShare] = (),
        key_change: KeyChange | None = None,
        deadline_at_ms: int | None = None,
    ) -> None:
        """Open the next epoch, pending, for a refresh or reshare, with its first shares.

        One transaction: the epoch never exists without the shares given here.
        Idempotent: beginning the pending epoch again with the same keyring does
        nothing (but store the shares, as ``put_pending_share``).

        Arguments:
            wallet_id: the wallet.
            epoch: must be current_epoch + 1.
            keyring: the new epoch's keyring (a reshare); None keeps the current
                one (a refresh).
            shares: sealed shares of that epoch.
            key_change: what the certificate that commits the epoch must complete.
            deadline_at_ms: abort the epoch after this (``abort_expired``).

        Raises:
            WalletNotFoundError: no such wallet.
            EpochError: keygen is not committed yet, or ``epoch`` is not the next one.
            StoreConflictError: the epoch is already pending with another keyring
                (another ceremony is writing it).
        """
        check_id("wallet id", wallet_id)
        check_uint("epoch", epoch, MAX_EPOCH)
        if keyring is not None and not isinstance(keyring, Keyring):
            raise StoreInputError("keyring must be a Keyring or None")
        now = self._clock()
        with self._transaction(write=True) as tx:
            head = self._lock_wallet(tx, wallet_id)
            if head.current_epoch is None:
                raise EpochError(f"wallet {wallet_id} has no committed epoch yet")
            if epoch != head.current_epoch + 1:
                raise EpochError(
                    f"epoch {epoch} is not the next epoch of wallet {wallet_id} "
                    f"(current {head.current_epoch})"
                )
            if keyring is None:
                keyring = self._read_keyring(tx, wallet_id, head.current_epoch)
            pending = self._read_pending(tx, wallet_id)
            if pending is not None:
                if pending.epoch != epoch or pending.keyring != keyring:
                    raise StoreConflictError(
                        f"epoch {pending.epoch} of wallet {wallet_id} is pending with another "
                        "keyring"
                    )
            else:
                self._insert_epoch(tx, wallet_id, epoch, keyring, now, key_change, deadline_at_ms)
            for share in shares:
                if share.wallet_id != wallet_id or share.epoch != epoch:
                    raise StoreInputError("begin_epoch takes shares of that wallet and epoch")
                self._put_share(tx, share, head.scheme, keyring, now)

    def put_pending_share(self, share: SealedShare) -> None:
        """Store one sealed share into its wallet's pending epoch.

        Writing the same bytes again is a no-op (safe retries); a stored share
        is never replaced.

        Arguments:
            share: the sealed share; its epoch must be the pending one (0 while
                keygen is uncommitted, else current_epoch + 1 after ``begin_epoch``).

        Raises:
            WalletNotFoundError: no such wallet.
            EpochError: ``share.epoch`` is not the wallet's pending epoch.
            StoreInputError: the scheme differs from the wallet's, or the share
                index is outside the epoch's keyring.
            StoreConflictError: other bytes are stored at this (wallet, index,
                epoch); nothing changed.
        """
        if not isinstance(share, SealedShare):
            raise StoreInputError("share must be a SealedShare")
        now = self._clock()
        with self._transaction(write=True) as tx:
            head = self._lock_wallet(tx, share.wallet_id)
            pending = self._read_pending(tx, share.wallet_id)
            if pending is None or pending.epoch != share.epoch:
                raise EpochError(self._not_pending_reason(share.wallet_id, share.epoch, head))
            self._put_share(tx, share, head.scheme, pending.keyring, now)

    def _put_share(
        self, tx: Transaction, share: SealedShare, scheme: str, keyring: Keyring, now: int
    ) -> None:
        """Insert a share of a pending epoch; the same bytes again are a no-op."""
        self._check_share_fits(share, scheme, keyring)
        row = tx.one(
            _SHARE_SELECT + " WHERE s.wallet_id = ? AND s.share_index = ? AND s.epoch = ?",
            (share.wallet_id, share.share_index, share.epoch),
        )
        if row is not None:
            if _share_from_row(row).share.same_bytes(share):
                return
            raise StoreConflictError(
                f"another share is stored at index {share.share_index}, epoch {share.epoch}"
                f" of wallet {share.wallet_id}"
            )
        self._insert_share(tx, share, now)

    def commit_epoch(self, wallet_id: str, epoch: int, certificate: bytes = b"") -> Wallet:
        """Make the pending ``epoch`` current and retire the previous one, atomically.

        The new epoch's keyring (threshold, parties) takes effect in the same
        transaction. Retired shares stay readable until ``prune_retired``.

        Arguments:
            wallet_id: the wallet.
            epoch: the pending epoch.
            certificate: a key change's complete certificate, already verified
                by the caller against the epoch's ``KeyChange`` (required then).

        Returns:
            The wallet after the commit.

        Raises:
            WalletNotFoundError: no such wallet.
            EpochError: ``epoch`` is not pending (never begun, aborted, or
                already committed: of two concurrent commits exactly one
                succeeds), it holds no share (committing it would leave the
                wallet without a usable share), it is a key change and no
                certificate is given, or its deadline has passed.
        """
        check_id("wallet id", wallet_id)
        check_uint("epoch", epoch, MAX_EPOCH)
        _check_certificate(certificate)
        now = self._clock()
        with self._transaction(write=True) as tx:
            head = self._lock_wallet(tx, wallet_id)
            pending = self._read_pending(tx, wallet_id)
            if pending is None or pending.epoch != epoch:
                raise EpochError(self._not_pending_reason(wallet_id, epoch, head))
            if pending.certified and not certificate:
                raise EpochError(
                    f"epoch {epoch} of wallet {wallet_id} commits only with its certificate"
                )
            if pending.deadline_at_ms is not None and now > pending.deadline_at_ms:
                raise EpochError(
                    f"epoch {epoch} of wallet {wallet_id} passed its deadline uncommitted"
                )
            count = tx.one(
                "SELECT COUNT(*) FROM sealed_shares WHERE wallet_id = ? AND epoch = ?",
                (wallet_id, epoch),
            )
            if count is None or count[0] == 0:
                raise EpochError(f"epoch {epoch} of wallet {wallet_id} holds no share")
            # Retire first: the partial unique index allows one committed epoch.
            if head.current_epoch is not None:
                changed = tx.run(
                    "UPDATE epochs SET state = 'retired'"
                    " WHERE wallet_id = ? AND epoch = ? AND state = 'committed'",
                    (wallet_id, head.current_epoch),
                )
                _expect_one_row_changed(changed, "retiring the current epoch")
            changed = tx.run(
                "UPDATE epochs SET state = 'committed', committed_at_ms = ?, certificate = ?,"
                " deadline_at_ms = NULL WHERE wallet_id = ? AND epoch = ? AND state = 'pending'",
                (now, certificate or None, wallet_id, epoch),
            )
            _expect_one_row_changed(changed, "committing the pending epoch")
            changed = tx.run(
                "UPDATE wallets SET current_epoch = ?, updated_at_ms = ? WHERE wallet_id = ?",
                (epoch, now, wallet_id),
            )
            _expect_one_row_changed(changed, "moving the wallet's current epoch")
            return self._read_wallet(tx, wallet_id)

    def abort_epoch(self, wallet_id: str, epoch: int) -> bool:
        """Discard a pending epoch and its shares; the current epoch stays usable.

        Aborting a wallet's first epoch (keygen's 0 or an import's, never
        committed) removes the wallet, with its backups, so the id can be used again.

        Arguments:
            wallet_id: the wallet.
            epoch: the pending epoch to discard.

        Returns:
            True if something was discarded; False if no such epoch exists
            (already aborted, or never begun).

        Raises:
            WalletNotFoundError: no such wallet.
            EpochError: ``epoch`` is committed or retired.
        """
        check_id("wallet id", wallet_id)
        check_uint("epoch", epoch, MAX_EPOCH)
        with self._transaction(write=True) as tx:
            head = self._lock_wallet(tx, wallet_id)
            row = tx.one(
                "SELECT state FROM epochs WHERE wallet_id = ? AND epoch = ?", (wallet_id, epoch)
            )
            if row is None:
                return False
            if row[0] != "pending":
                raise EpochError(f"epoch {epoch} of wallet {wallet_id} is {row[0]}, not pending")
            self._delete_pending(tx, wallet_id, epoch, head)
            return True

    @staticmethod
    def _delete_pending(tx: Transaction, wallet_id: str, epoch: int, head: _WalletHead) -> None:
        # A wallet whose first epoch never committed goes with it (its id is free again).
        if head.current_epoch is None:
            changed = tx.run("DELETE FROM wallets WHERE wallet_id = ?", (wallet_id,))
        else:
            changed = tx.run(
                "DELETE FROM epochs WHERE wallet_id = ? AND epoch = ?", (wallet_id, epoch)
            )
        _expect_one_row_changed(changed, "aborting the pending epoch")

    def extend_pending(self, wallet_id: str, epoch: int, deadline_at_ms: int) -> None:
        """Give the pending ``epoch`` a new deadline, unless it was aborted or its deadline passed.

        The host calls this just before it forwards the enclave's agreement (its
        certificate signature): until then no certificate can exist, so the
        epoch is opened with a short deadline, and only this extension, made
        while the epoch is still pending and in time, lets a certificate be
        waited for. Of an extension and an abort of the same epoch exactly one
        wins (one transaction each, under the wallet's lock).

        Raises:
            WalletNotFoundError: no such wallet (a keygen aborted meanwhile).
            EpochError: ``epoch`` is not pending (aborted meanwhile) or its
                deadline has passed: the agreement must not be released.
        """
        check_id("wallet id", wallet_id)
        check_uint("epoch", epoch, MAX_EPOCH)
        check_uint("deadline", deadline_at_ms, MAX_EPOCH)
        now = self._clock()
        with self._transaction(write=True) as tx:
            head = self._lock_wallet(tx, wallet_id)
            pending = self._read_pending(tx, wallet_id)
            if pending is None or pending.epoch != epoch:
                raise EpochError(self._not_pending_reason(wallet_id, epoch, head))
            if pending.deadline_at_ms is not None and now > pending.deadline_at_ms:
                raise EpochError(f"epoch {epoch} of wallet {wallet_id} passed its deadline")
            tx.run(
                "UPDATE epochs SET deadline_at_ms = ?"
                " WHERE wallet_id = ? AND epoch = ? AND state = 'pending'",
                (deadline_at_ms, wallet_id, epoch),
            )

    def abort_expired(self, wallet_id: str) -> int | None:
        """Abort the wallet's pending epoch if its deadline has passed (see ``abort_epoch``).

        Returns:
            The aborted epoch, or None (nothing pending, or still within its deadline).

        Raises:
            WalletNotFoundError: no such wallet.
        """
        check_id("wallet id", wallet_id)
        now = self._clock()
        with self._transaction(write=True) as tx:
            head = self._lock_wallet(tx, wallet_id)
            pending = self._read_pending(tx, wallet_id)
            if pending is None or pending.deadline_at_ms is None or now <= pending.deadline_at_ms:
                return None
            self._delete_pending(tx, wallet_id, pending.epoch, head)
            return pending.epoch

    def abort_all_expired(self, limit: int = 100) -> list[tuple[str, int]]:
        """Abort up to ``limit`` pending epochs whose deadline has passed, of any wallets.

        Returns:
            (wallet id, epoch) of each epoch aborted.
        """
        check_uint("limit", limit, 10_000)
        now = self._clock()
        with self._transaction(write=False) as tx:
            rows = tx.all(
                "SELECT wallet_id FROM epochs WHERE state = 'pending'"
                " AND deadline_at_ms IS NOT NULL AND deadline_at_ms < ? ORDER BY wallet_id"
                " LIMIT ?",
                (now, limit),
            )
        aborted = []
        for (wallet_id,) in rows:
            try:
                epoch = self.abort_expired(wallet_id)
            except WalletNotFoundError:  # removed meanwhile
                continue
            if epoch is not None:
                aborted.append((wallet_id, epoch))
        return aborted

    def list_epochs(self, wallet_id: str) -> list[EpochRecord]:
        """Every stored epoch of the wallet, oldest first, with who acknowledged it.

        Raises:
            WalletNotFoundError: no such wallet.
        """
        check_id("wallet id", wallet_id)
        with self._transaction(write=False) as tx:
            self._read_wallet(tx, wallet_id)
            rows = tx.all(
                "SELECT epoch, state, threshold, parties, session_id, transcript, host_pubkeys,"
                " certificate, deadline_at_ms FROM epochs WHERE wallet_id = ? ORDER BY epoch",
                (wallet_id,),
            )
            acks = tx.all(
                "SELECT epoch, position FROM epoch_acks WHERE wallet_id = ?", (wallet_id,)
            )
        acked: dict[int, set[int]] = {}
        for epoch, position in acks:
            acked.setdefault(epoch, set()).add(position)
        out = []
        for epoch, state, threshold, parties, sid, transcript, keys, cert, deadline in rows:
            if state not in EPOCH_STATES:
                raise StoreCorruptionError("stored epoch state is unknown")
            try:
                keyring = Keyring(threshold, decode_parties(parties))
            except StoreInputError as exc:
                raise StoreCorruptionError("stored keyring is malformed") from exc
            out.append(
                EpochRecord(
                    epoch,
                    state,
                    keyring,
                    KeyChange.decode(sid, transcript, keys),
                    bytes(cert or b""),
                    deadline,
                    frozenset(acked.get(epoch, ())),
                )
            )
        return out

    def ack_epoch(self, wallet_id: str, epoch: int, position: int, signature: bytes) -> None:
        """Record that the party at certificate ``position`` uses the committed ``epoch``.

        The caller verified ``signature`` (the party's host key). Acknowledging
        again is a no-op.

        Raises:
            WalletNotFoundError: no such wallet.
            EpochError: the epoch is not a committed key change, or ``position``
                is not one of its seats.
        """
        check_id("wallet id", wallet_id)
        check_uint("epoch", epoch, MAX_EPOCH)
        check_uint("position", position, MAX_PARTIES - 1)
        if not isinstance(signature, bytes) or len(signature) != 64:
            raise StoreInputError("an acknowledgment is one 64-byte signature")
        now = self._clock()
        with self._transaction(write=True) as tx:
            self._lock_wallet(tx, wallet_id)
            row = tx.one(
                "SELECT state, host_pubkeys FROM epochs WHERE wallet_id = ? AND epoch = ?",
                (wallet_id, epoch),
            )
            if row is None or row[0] == "pending" or row[1] is None:
                raise EpochError(f"epoch {epoch} of wallet {wallet_id} is no committed key change")
            if position >= len(row[1]) // 33:
                raise EpochError(f"position {position} is no seat of epoch {epoch}")
            if tx.one(
                "SELECT 1 FROM epoch_acks WHERE wallet_id = ? AND epoch = ? AND position = ?",
                (wallet_id, epoch, position),
            ):
                return
            tx.run(
                "INSERT INTO epoch_acks (wallet_id, epoch, position, signature, created_at_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (wallet_id, epoch, position, signature, now),
            )

    def shares_at(self, wallet_id: str, epoch: int) -> list[StoredShare]:
        """Every share of a committed or retired ``epoch``, by share index (empty if none).

        Raises:
            WalletNotFoundError: no such wallet.
        """
        return self.wallet_and_shares(wallet_id, epoch)[1]

    def wallet_and_shares(self, wallet_id: str, epoch: int) -> tuple[Wallet, list[StoredShare]]:
        """The wallet and its shares of ``epoch`` (as ``shares_at``), read in one transaction:
        what a ceremony reads, in one round trip.

        Raises:
            WalletNotFoundError: no such wallet.
        """
        check_id("wallet id", wallet_id)
        check_uint("epoch", epoch, MAX_EPOCH)
        with self._transaction(write=False) as tx:
            wallet = self._read_wallet(tx, wallet_id)
            rows = tx.all(
                _SHARE_SELECT + " WHERE s.wallet_id = ? AND s.epoch = ? AND e.state <> 'pending'"
                " ORDER BY s.share_index",
                (wallet_id, epoch),
            )
        return wallet, [_share_from_row(row) for row in rows]

    def drop_retired(self, wallet_id: str, epoch: int) -> bool:
        """Delete one retired epoch and its shares (the owner retired it).

        Returns:
            True if it was deleted; False if no such epoch is stored.

        Raises:
            WalletNotFoundError: no such wallet.
            EpochError: the epoch is pending or committed.
        """
        check_id("wallet id", wallet_id)
        check_uint("epoch", epoch, MAX_EPOCH)
        with self._transaction(write=True) as tx:
            self._lock_wallet(tx, wallet_id)
            row = tx.one(
                "SELECT state FROM epochs WHERE wallet_id = ? AND epoch = ?", (wallet_id, epoch)
            )
            if row is None:
                return False
            if row[0] != "retired":
                raise EpochError(f"epoch {epoch} of wallet {wallet_id} is {row[0]}, not retired")
            changed = tx.run(
                "DELETE FROM epochs WHERE wallet_id = ? AND epoch = ?", (wallet_id, epoch)
            )
            _expect_one_row_changed(changed, "dropping a retired epoch")
            return True

    def prune_retired(self, wallet_id: str, keep_epochs: int = 1) -> int:
        """Delete retired epochs and their shares, keeping the newest ``keep_epochs``.

        Call it once every party has committed the current epoch; the current
        and pending epochs are never touched.

        Arguments:
            wallet_id: the wallet.
            keep_epochs: how many of the most recent retired epochs to keep (>= 0).

        Returns:
            The number of epochs deleted.

        Raises:
            WalletNotFoundError: no such wallet.
        """
        check_id("wallet id", wallet_id)
        check_uint("keep_epochs", keep_epochs, MAX_EPOCH)
        with self._transaction(write=True) as tx:
            self._lock_wallet(tx, wallet_id)
            retired = [
                row[0]
                for row in tx.all(
                    "SELECT epoch FROM epochs WHERE wallet_id = ? AND state = 'retired'"
                    " ORDER BY epoch DESC",
                    (wallet_id,),
                )
            ]
            doomed = retired[keep_epochs:]
            for epoch in doomed:
                changed = tx.run(
                    "DELETE FROM epochs WHERE wallet_id = ? AND epoch = ? AND state = 'retired'",
                    (wallet_id, epoch),
                )
                _expect_one_row_changed(changed, "pruning a retired epoch")
            return len(doomed)

    def get_wallet(self, wallet_id: str) -> Wallet:
        """The wallet ``wallet_id``.

        Raises:
            WalletNotFoundError: no such wallet.
        """
        check_id("wallet id", wallet_id)
        with self._transaction(write=False) as tx:
            return self._read_wallet(tx, wallet_id)

    def list_wallets(self, *, after: str | None = None, limit: int = 100) -> list[Wallet]:
        """Wallets in wallet-id byte order, one page at a time.

        Arguments:
            after: return only ids greater than this (the last id of the previous page).
            limit: page size, 1-1000.
        """
        if after is not None:
            check_id("after", after)
        if type(limit) is not int or not 1 <= limit <= 1000:
            raise StoreInputError("limit must be an integer in [1, 1000]")
        with self._transaction(write=False) as tx:
            if after is None:
                rows = tx.all(_WALLET_SELECT + " ORDER BY w.wallet_id LIMIT ?", (limit,))
            else:
                rows = tx.all(
                    _WALLET_SELECT + " WHERE w.wallet_id > ? ORDER BY w.wallet_id LIMIT ?",
                    (after, limit),
                )
        return [_wallet_from_row(row) for row in rows]

    # --- shares ------------------------------------------------------------------

    def get_current_share(self, wallet_id: str, share_index: int) -> StoredShare:
        """The share at ``share_index`` of the wallet's current (committed) epoch.

        Raises:
            WalletNotFoundError: no such wallet.
            ShareNotFoundError: keygen is not committed, or no share at that index.
        """
        check_id("wallet id", wallet_id)
        check_uint("share index", share_index, MAX_SHARE_INDEX)
        with self._transaction(write=False) as tx:
            row = tx.one(
                _SHARE_SELECT
                + " WHERE s.wallet_id = ? AND s.share_index = ? AND e.state = 'committed'",
                (wallet_id, share_index),
            )
            if row is None:
                self._read_wallet(tx, wallet_id)  # raises WalletNotFoundError
                raise ShareNotFoundError(
                    f"wallet {wallet_id} has no current share at index {share_index}"
                )
        return _share_from_row(row)

    def current_shares(self, wallet_id: str) -> list[StoredShare]:
        """Every share of the wallet's current epoch, by share index (empty before keygen commits).

        Raises:
            WalletNotFoundError: no such wallet.
        """
        check_id("wallet id", wallet_id)
        with self._transaction(write=False) as tx:
            self._read_wallet(tx, wallet_id)
            rows = tx.all(
                _SHARE_SELECT
                + " WHERE s.wallet_id = ? AND e.state = 'committed' ORDER BY s.share_index",
                (wallet_id,),
            )
        return [_share_from_row(row) for row in rows]

    def get_share(self, wallet_id: str, share_index: int, epoch: int) -> StoredShare:
        """The share at (``share_index``, ``epoch``), whatever its state.

        Raises:
            WalletNotFoundError: no such wallet.
            ShareNotFoundError: no share there (never written, aborted or pruned).
        """
        check_id("wallet id", wallet_id)
        check_uint("share index", share_index, MAX_SHARE_INDEX)
        check_uint("epoch", epoch, MAX_EPOCH)
        with self._transaction(write=False) as tx:
            row = tx.one(
                _SHARE_SELECT + " WHERE s.wallet_id = ? AND s.share_index = ? AND s.epoch = ?",
                (wallet_id, share_index, epoch),
            )
            if row is None:
                self._read_wallet(tx, wallet_id)
                raise ShareNotFoundError(
                    f"wallet {wallet_id} has no share at index {share_index}, epoch {epoch}"
                )
        return _share_from_row(row)

    # --- backups -------------------------------------------------------------------

    def put_backup(self, backup: Backup, quota: BackupQuota = _DEFAULT_BACKUP_QUOTA) -> None:
        """Store a client-encrypted backup share.

        Writing the same backup again is a no-op; a stored backup is never replaced.

        Arguments:
            backup: the record.
            quota: most backups and blob bytes the wallet may keep.

        Raises:
            WalletNotFoundError: no such wallet.
            StoreConflictError: another backup is stored under this id; nothing changed.
            QuotaExceededError: the wallet would pass its backup count or bytes.
        """
        if not isinstance(backup, Backup):
            raise StoreInputError("backup must be a Backup")
        now = self._clock()
        with self._transaction(write=True) as tx:
            self._lock_wallet(tx, backup.wallet_id)
            row = tx.one(
                _BACKUP_SELECT + " WHERE wallet_id = ? AND backup_id = ?",
                (backup.wallet_id, backup.backup_id),
            )
            if row is not None:
                stored = _backup_from_row(row).backup
                same = hmac.compare_digest(stored.blob, backup.blob)
                if same and (stored.party_id, stored.epoch) == (backup.party_id, backup.epoch):
                    return
                raise StoreConflictError(
                    f"another backup is stored as {backup.backup_id} of wallet {backup.wallet_id}"
                )
            count, total = tx.one(
                "SELECT COUNT(*), COALESCE(SUM(length(blob)), 0) FROM backups WHERE wallet_id = ?",
                (backup.wallet_id,),
            ) or (0, 0)
            if count + 1 > quota.max_count:
                raise QuotaExceededError(
                    f"wallet {backup.wallet_id} backup count quota {quota.max_count} reached"
                )
            if total + len(backup.blob) > quota.max_bytes:
                raise QuotaExceededError(
                    f"wallet {backup.wallet_id} backup byte quota {quota.max_bytes} would be passed"
                )
            tx.run(
                "INSERT INTO backups (wallet_id, backup_id, party_id, epoch, blob, created_at_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    backup.wallet_id,
                    backup.backup_id,
                    backup.party_id,
                    backup.epoch,
                    backup.blob,
                    now,
                ),
            )

    def get_backup(self, wallet_id: str, backup_id: str) -> StoredBackup:
        """The backup ``backup_id`` of the wallet.

        Raises:
            WalletNotFoundError: no such wallet.
            BackupNotFoundError: no such backup.
        """
        check_id("wallet id", wallet_id)
        check_id("backup id", backup_id)
        with self._transaction(write=False) as tx:
            row = tx.one(
                _BACKUP_SELECT + " WHERE wallet_id = ? AND backup_id = ?", (wallet_id, backup_id)
            )
            if row is None:
                self._read_wallet(tx, wallet_id)
                raise BackupNotFoundError(f"wallet {wallet_id} has no backup {backup_id}")
        return _backup_from_row(row)

    def list_backups(self, wallet_id: str) -> list[BackupInfo]:
        """Every backup of the wallet, by backup id, without the blobs (none is read).

        Raises:
            WalletNotFoundError: no such wallet.
        """
        check_id("wallet id", wallet_id)
        with self._transaction(write=False) as tx:
            self._read_wallet(tx, wallet_id)
            rows = tx.all(
                _BACKUP_INFO_SELECT + " WHERE wallet_id = ? ORDER BY backup_id", (wallet_id,)
            )
        try:
            return [
                BackupInfo(str(w), str(b), str(p), int(e), int(size), int(created))
                for w, b, p, e, size, created in rows
            ]
        except (TypeError, ValueError) as exc:
            raise StoreCorruptionError("stored backup record is malformed") from exc

    # --- the enclave's sealed identity ------------------------------------------------

    def latest_enclave_identity(self) -> bytes | None:
        """The newest sealed enclave identity, or None before the first Provision.

        The blob is sealed by the enclave (opaque to the host); the host hands
        it back to ``Enclave.Provision`` at every start.
        """
        with self._transaction(write=False) as tx:
            row = tx.one("SELECT sealed_identity FROM enclave_identities ORDER BY id DESC LIMIT 1")
        return None if row is None else bytes(row[0])

    def put_enclave_identity(self, sealed_identity: bytes) -> bool:
        """Record the enclave's sealed identity, as returned by ``Enclave.Provision``.

        Append-only: a blob equal to the newest is a no-op; another blob becomes
        the newest, and the older ones stay (an identity is never overwritten).

        Arguments:
            sealed_identity: the sealed blob (1 byte to 8 MiB).

        Returns:
            True if a new row was written.

        Raises:
            StoreInputError: the blob is empty or too large.
        """
        size = len(sealed_identity) if isinstance(sealed_identity, bytes) else 0
        if not 1 <= size <= MAX_BLOB_BYTES:
            raise StoreInputError("sealed identity must be 1 byte to 8 MiB")
        now = self._clock()
        with self._transaction(write=True) as tx:
            row = tx.one("SELECT sealed_identity FROM enclave_identities ORDER BY id DESC LIMIT 1")
            if row is not None and hmac.compare_digest(bytes(row[0]), sealed_identity):
                return False
            tx.run(
                "INSERT INTO enclave_identities (sealed_identity, created_at_ms) VALUES (?, ?)",
                (sealed_identity, now),
            )
        return True

    # --- helpers (inside a transaction) ------------------------------------------------

    def _lock_wallet(self, tx: Transaction, wallet_id: str) -> _WalletHead:
        check_id("wallet id", wallet_id)
        row = tx.one(
            "SELECT scheme, current_epoch FROM wallets WHERE wallet_id = ?" + self._FOR_UPDATE,
            (wallet_id,),
        )
        if row is None:
            raise WalletNotFoundError(f"no wallet {wallet_id}")
        return _WalletHead(row[0], row[1])

    def _read_wallet(self, tx: Transaction, wallet_id: str) -> Wallet:
        row = tx.one(_WALLET_SELECT + " WHERE w.wallet_id = ?", (wallet_id,))
        if row is None:
            raise WalletNotFoundError(f"no wallet {wallet_id}")
        return _wallet_from_row(row)

    @staticmethod
    def _read_keyring(tx: Transaction, wallet_id: str, epoch: int) -> Keyring:
        row = tx.one(
            "SELECT threshold, parties FROM epochs WHERE wallet_id = ? AND epoch = ?",
            (wallet_id, epoch),
        )
        if row is None:
            raise StoreCorruptionError(f"wallet {wallet_id} lacks its epoch {epoch}")
        try:
            return Keyring(row[0], decode_parties(row[1]))
        except StoreInputError as exc:
            raise StoreCorruptionError("stored keyring is malformed") from exc

    @staticmethod
    def _read_pending(tx: Transaction, wallet_id: str) -> _PendingEpoch | None:
        row = tx.one(
            "SELECT epoch, threshold, parties, session_id IS NOT NULL, deadline_at_ms FROM epochs"
            " WHERE wallet_id = ? AND state = 'pending'",
            (wallet_id,),
        )
        if row is None:
            return None
        try:
            keyring = Keyring(row[1], decode_parties(row[2]))
        except StoreInputError as exc:
            raise StoreCorruptionError("stored keyring is malformed") from exc
        return _PendingEpoch(row[0], keyring, bool(row[3]), row[4])

    @staticmethod
    def _not_pending_reason(wallet_id: str, epoch: int, head: _WalletHead) -> str:
        current = head.current_epoch
        if current is not None and epoch <= current:
            return f"epoch {epoch} of wallet {wallet_id} is not pending (current {current})"
        if current is not None and epoch == current + 1:
            return f"epoch {epoch} of wallet {wallet_id} is not pending (begin_epoch first)"
        if current is None:
            return f"epoch {epoch} of wallet {wallet_id} is not its pending first epoch"
        return f"epoch {epoch} of wallet {wallet_id} is not pending (the next is {current + 1})"

    @staticmethod
    def _check_share_fits(share: SealedShare, scheme: str, keyring: Keyring) -> None:
        if not isinstance(share, SealedShare):
            raise StoreInputError("shares must be SealedShare")
        if share.scheme != scheme:
            raise StoreInputError(f"share scheme {share.scheme} differs from the wallet's {scheme}")
        if share.share_index >= len(keyring.parties):
            raise StoreInputError(
                f"share index {share.share_index} is outside the epoch's "
                f"{len(keyring.parties)} parties"
            )

    @staticmethod
    def _insert_epoch(
        tx: Transaction,
        wallet_id: str,
        epoch: int,
        keyring: Keyring,
        now: int,
        key_change: KeyChange | None = None,
        deadline_at_ms: int | None = None,
    ) -> None:
        if key_change is not None and not isinstance(key_change, KeyChange):
            raise StoreInputError("key_change must be a KeyChange or None")
        if deadline_at_ms is not None:
            check_uint("deadline", deadline_at_ms, MAX_EPOCH)
        kc = key_change
        tx.run(
            "INSERT INTO epochs (wallet_id, epoch, threshold, parties, state, created_at_ms,"
            " committed_at_ms, session_id, transcript, host_pubkeys, deadline_at_ms)"
            " VALUES (?, ?, ?, ?, 'pending', ?, NULL, ?, ?, ?, ?)",
            (
                wallet_id, epoch, keyring.threshold, encode_parties(keyring.parties), now,
                None if kc is None else kc.session_id,
                None if kc is None else kc.transcript,
                None if kc is None else kc.encode_keys(),
                deadline_at_ms,
            ),
        )  # fmt: skip

    @staticmethod
    def _insert_share(tx: Transaction, share: SealedShare, now: int) -> None:
        tx.run(
            "INSERT INTO sealed_shares (wallet_id, share_index, epoch, scheme, encrypted_data_key,"
            " ciphertext, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                share.wallet_id,
                share.share_index,
                share.epoch,
                share.scheme,
                share.encrypted_data_key,
                share.ciphertext,
                now,
            ),
        )
