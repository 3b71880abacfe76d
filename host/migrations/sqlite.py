"""Schema migrations for the embedded SQLite store (SQLite >= 3.37 for STRICT tables).

The schema matches ``host.migrations.postgres`` table for table and column for
column; only the type names differ (BLOB/INTEGER here, BYTEA/BIGINT there).
See ``host.store`` for what each table means.
"""

from __future__ import annotations

from typing import Final

from host.migrations import Migration, check_sequence

__all__ = ["MIGRATIONS"]

_INIT: Final = (
    # One row per wallet: what never changes across epochs, plus the epoch in
    # use. current_epoch is NULL until keygen's epoch 0 is committed; the
    # foreign key makes it name an existing epoch row.
    """
    CREATE TABLE wallets (
        wallet_id TEXT NOT NULL PRIMARY KEY,
        scheme TEXT NOT NULL CHECK (scheme IN ('bip340', 'ecdsa-secp256k1')),
        public_key BLOB NOT NULL CHECK (length(public_key) = 33),
        owner_key BLOB NOT NULL,
        current_epoch INTEGER CHECK (current_epoch >= 0),
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        FOREIGN KEY (wallet_id, current_epoch) REFERENCES epochs (wallet_id, epoch)
    ) STRICT
    """,
    # One row per key epoch of a wallet: its keyring (threshold, parties as
    # JSON) and the state of its whole share set. Keygen makes epoch 0; every
    # refresh or reshare makes the next one.
    """
    CREATE TABLE epochs (
        wallet_id TEXT NOT NULL REFERENCES wallets (wallet_id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL CHECK (epoch >= 0),
        threshold INTEGER NOT NULL CHECK (threshold >= 1),
        parties TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'committed', 'retired')),
        created_at_ms INTEGER NOT NULL,
        committed_at_ms INTEGER,
        PRIMARY KEY (wallet_id, epoch)
    ) STRICT
    """,
    # At most one pending and at most one committed epoch per wallet, enforced
    # by the database as well as by the store's checks.
    "CREATE UNIQUE INDEX epochs_one_pending ON epochs (wallet_id) WHERE state = 'pending'",
    "CREATE UNIQUE INDEX epochs_one_committed ON epochs (wallet_id) WHERE state = 'committed'",
    # Sealed server shares, opaque to the host. Deleting an epoch (abort,
    # prune) deletes its shares.
    """
    CREATE TABLE sealed_shares (
        wallet_id TEXT NOT NULL,
        share_index INTEGER NOT NULL CHECK (share_index >= 0),
        epoch INTEGER NOT NULL,
        scheme TEXT NOT NULL CHECK (scheme IN ('bip340', 'ecdsa-secp256k1')),
        encrypted_data_key BLOB NOT NULL CHECK (length(encrypted_data_key) > 0),
        ciphertext BLOB NOT NULL CHECK (length(ciphertext) > 0),
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (wallet_id, share_index, epoch),
        FOREIGN KEY (wallet_id, epoch) REFERENCES epochs (wallet_id, epoch) ON DELETE CASCADE
    ) STRICT
    """,
    "CREATE INDEX sealed_shares_by_epoch ON sealed_shares (wallet_id, epoch)",
    # Backup shares, encrypted by the client before they reach the host.
    """
    CREATE TABLE backups (
        wallet_id TEXT NOT NULL REFERENCES wallets (wallet_id) ON DELETE CASCADE,
        backup_id TEXT NOT NULL,
        party_id TEXT NOT NULL,
        epoch INTEGER NOT NULL CHECK (epoch >= 0),
        blob BLOB NOT NULL CHECK (length(blob) > 0),
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (wallet_id, backup_id)
    ) STRICT
    """,
)

# The enclave's sealed party identity (its static keys, sealed by the enclave),
# handed back to Enclave.Provision at every start. Append-only: a different blob
# gets a new row and the newest is used, so an identity is never overwritten
# (losing it would change the enclave's party id in every keyring).
_ENCLAVE_IDENTITIES: Final = (
    """
    CREATE TABLE enclave_identities (
        id INTEGER NOT NULL PRIMARY KEY,
        sealed_identity BLOB NOT NULL CHECK (length(sealed_identity) > 0),
        created_at_ms INTEGER NOT NULL
    ) STRICT
    """,
)

# Key changes (refresh, reshare, import) are committed only with their
# certificate (host.store, "Key changes"): a pending epoch records what the
# certificate must complete and its deadline; a committed one its certificate.
# Parties acknowledge a committed epoch (signed by their host key), after which
# the older retired epochs may be pruned.
_KEY_CHANGES: Final = (
    "ALTER TABLE epochs ADD COLUMN session_id BLOB",
    "ALTER TABLE epochs ADD COLUMN transcript BLOB",
    "ALTER TABLE epochs ADD COLUMN host_pubkeys BLOB",
    "ALTER TABLE epochs ADD COLUMN certificate BLOB",
    "ALTER TABLE epochs ADD COLUMN deadline_at_ms INTEGER",
    """
    CREATE TABLE epoch_acks (
        wallet_id TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        position INTEGER NOT NULL CHECK (position >= 0),
        signature BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (wallet_id, epoch, position),
        FOREIGN KEY (wallet_id, epoch) REFERENCES epochs (wallet_id, epoch) ON DELETE CASCADE
    ) STRICT
    """,
)

# Ed25519 wallets: a third scheme, with a 32-byte (RFC 8032) public key. SQLite
# cannot alter a CHECK constraint, so both tables are rebuilt as its manual
# prescribes ("Making Other Kinds Of Table Schema Changes": new table, copy,
# drop, rename; the store runs migrations with foreign keys off and checks
# them before committing, ``SQLiteStore._schema_transaction``). Column order
# and every other constraint are those of migrations 1-3.
_ED25519: Final = (
    """
    CREATE TABLE wallets_new (
        wallet_id TEXT NOT NULL PRIMARY KEY,
        scheme TEXT NOT NULL CHECK (scheme IN ('bip340', 'ecdsa-secp256k1', 'ed25519')),
        public_key BLOB NOT NULL CHECK (
            length(public_key) = CASE scheme WHEN 'ed25519' THEN 32 ELSE 33 END
        ),
        owner_key BLOB NOT NULL,
        current_epoch INTEGER CHECK (current_epoch >= 0),
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        FOREIGN KEY (wallet_id, current_epoch) REFERENCES epochs (wallet_id, epoch)
    ) STRICT
    """,
    "INSERT INTO wallets_new SELECT * FROM wallets",
    "DROP TABLE wallets",
    "ALTER TABLE wallets_new RENAME TO wallets",
    """
    CREATE TABLE sealed_shares_new (
        wallet_id TEXT NOT NULL,
        share_index INTEGER NOT NULL CHECK (share_index >= 0),
        epoch INTEGER NOT NULL,
        scheme TEXT NOT NULL CHECK (scheme IN ('bip340', 'ecdsa-secp256k1', 'ed25519')),
        encrypted_data_key BLOB NOT NULL CHECK (length(encrypted_data_key) > 0),
        ciphertext BLOB NOT NULL CHECK (length(ciphertext) > 0),
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (wallet_id, share_index, epoch),
        FOREIGN KEY (wallet_id, epoch) REFERENCES epochs (wallet_id, epoch) ON DELETE CASCADE
    ) STRICT
    """,
    "INSERT INTO sealed_shares_new SELECT * FROM sealed_shares",
    "DROP TABLE sealed_shares",
    "ALTER TABLE sealed_shares_new RENAME TO sealed_shares",
    "CREATE INDEX sealed_shares_by_epoch ON sealed_shares (wallet_id, epoch)",
)

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "init", _INIT),
    Migration(2, "enclave_identities", _ENCLAVE_IDENTITIES),
    Migration(3, "key_changes", _KEY_CHANGES),
    Migration(4, "ed25519", _ED25519),
)
check_sequence(MIGRATIONS)
