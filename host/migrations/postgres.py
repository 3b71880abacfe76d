"""Schema migrations for the PostgreSQL store (PostgreSQL >= 11).

The schema matches ``host.migrations.sqlite`` table for table and column for
column. Identifiers use the "C" collation so that ordering (and so
``list_wallets`` pagination) is byte order, as in SQLite. See ``host.store``
for what each table means.
"""

from __future__ import annotations

from typing import Final

from host.migrations import Migration, check_sequence

__all__ = ["MIGRATIONS"]

_INIT: Final = (
    """
    CREATE TABLE wallets (
        wallet_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        scheme TEXT NOT NULL CHECK (scheme IN ('bip340', 'ecdsa-secp256k1')),
        public_key BYTEA NOT NULL CHECK (octet_length(public_key) = 33),
        owner_key BYTEA NOT NULL,
        current_epoch BIGINT CHECK (current_epoch >= 0),
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE epochs (
        wallet_id TEXT COLLATE "C" NOT NULL REFERENCES wallets (wallet_id) ON DELETE CASCADE,
        epoch BIGINT NOT NULL CHECK (epoch >= 0),
        threshold INTEGER NOT NULL CHECK (threshold >= 1),
        parties TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'committed', 'retired')),
        created_at_ms BIGINT NOT NULL,
        committed_at_ms BIGINT,
        PRIMARY KEY (wallet_id, epoch)
    )
    """,
    # Added after epochs exists (PostgreSQL checks the referenced table at
    # creation): current_epoch names an existing epoch row.
    """
    ALTER TABLE wallets ADD CONSTRAINT wallets_current_epoch_fkey
        FOREIGN KEY (wallet_id, current_epoch) REFERENCES epochs (wallet_id, epoch)
    """,
    "CREATE UNIQUE INDEX epochs_one_pending ON epochs (wallet_id) WHERE state = 'pending'",
    "CREATE UNIQUE INDEX epochs_one_committed ON epochs (wallet_id) WHERE state = 'committed'",
    """
    CREATE TABLE sealed_shares (
        wallet_id TEXT COLLATE "C" NOT NULL,
        share_index BIGINT NOT NULL CHECK (share_index >= 0),
        epoch BIGINT NOT NULL,
        scheme TEXT NOT NULL CHECK (scheme IN ('bip340', 'ecdsa-secp256k1')),
        encrypted_data_key BYTEA NOT NULL CHECK (octet_length(encrypted_data_key) > 0),
        ciphertext BYTEA NOT NULL CHECK (octet_length(ciphertext) > 0),
        created_at_ms BIGINT NOT NULL,
        PRIMARY KEY (wallet_id, share_index, epoch),
        FOREIGN KEY (wallet_id, epoch) REFERENCES epochs (wallet_id, epoch) ON DELETE CASCADE
    )
    """,
    "CREATE INDEX sealed_shares_by_epoch ON sealed_shares (wallet_id, epoch)",
    """
    CREATE TABLE backups (
        wallet_id TEXT COLLATE "C" NOT NULL REFERENCES wallets (wallet_id) ON DELETE CASCADE,
        backup_id TEXT COLLATE "C" NOT NULL,
        party_id TEXT NOT NULL,
        epoch BIGINT NOT NULL CHECK (epoch >= 0),
        blob BYTEA NOT NULL CHECK (octet_length(blob) > 0),
        created_at_ms BIGINT NOT NULL,
        PRIMARY KEY (wallet_id, backup_id)
    )
    """,
)

# See host.migrations.sqlite: the enclave's sealed identity, append-only.
_ENCLAVE_IDENTITIES: Final = (
    """
    CREATE TABLE enclave_identities (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sealed_identity BYTEA NOT NULL CHECK (octet_length(sealed_identity) > 0),
        created_at_ms BIGINT NOT NULL
    )
    """,
)

# Key changes (refresh, reshare, import) are committed only with their
# certificate (host.store, "Key changes"): a pending epoch records what the
# certificate must complete and its deadline; a committed one its certificate.
# Parties acknowledge a committed epoch (signed by their host key), after which
# the older retired epochs may be pruned.
_KEY_CHANGES: Final = (
    "ALTER TABLE epochs ADD COLUMN session_id BYTEA",
    "ALTER TABLE epochs ADD COLUMN transcript BYTEA",
    "ALTER TABLE epochs ADD COLUMN host_pubkeys BYTEA",
    "ALTER TABLE epochs ADD COLUMN certificate BYTEA",
    "ALTER TABLE epochs ADD COLUMN deadline_at_ms BIGINT",
    """
    CREATE TABLE epoch_acks (
        wallet_id TEXT COLLATE "C" NOT NULL,
        epoch BIGINT NOT NULL,
        position BIGINT NOT NULL CHECK (position >= 0),
        signature BYTEA NOT NULL,
        created_at_ms BIGINT NOT NULL,
        PRIMARY KEY (wallet_id, epoch, position),
        FOREIGN KEY (wallet_id, epoch) REFERENCES epochs (wallet_id, epoch) ON DELETE CASCADE
    )
    """,
)

# Ed25519 wallets: a third scheme, with a 32-byte (RFC 8032) public key. The
# constraints replaced carry PostgreSQL's default names (<table>_<column>_check).
_ED25519: Final = (
    "ALTER TABLE wallets DROP CONSTRAINT wallets_scheme_check",
    """
    ALTER TABLE wallets ADD CONSTRAINT wallets_scheme_check
        CHECK (scheme IN ('bip340', 'ecdsa-secp256k1', 'ed25519'))
    """,
    "ALTER TABLE wallets DROP CONSTRAINT wallets_public_key_check",
    """
    ALTER TABLE wallets ADD CONSTRAINT wallets_public_key_check
        CHECK (octet_length(public_key) = CASE scheme WHEN 'ed25519' THEN 32 ELSE 33 END)
    """,
    "ALTER TABLE sealed_shares DROP CONSTRAINT sealed_shares_scheme_check",
    """
    ALTER TABLE sealed_shares ADD CONSTRAINT sealed_shares_scheme_check
        CHECK (scheme IN ('bip340', 'ecdsa-secp256k1', 'ed25519'))
    """,
)

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "init", _INIT),
    Migration(2, "enclave_identities", _ENCLAVE_IDENTITIES),
    Migration(3, "key_changes", _KEY_CHANGES),
    Migration(4, "ed25519", _ED25519),
)
check_sequence(MIGRATIONS)
