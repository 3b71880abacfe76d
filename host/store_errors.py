"""The ciphertext store's errors (``host.store`` re-exports them).

The host may not import ``tss`` (docs/architecture.md, "Components"), so the store has its own root,
``StoreError``. Driver errors become these through each backend's table
(``host.store_backend.map_driver_errors``). Messages never carry blob contents.
"""

from __future__ import annotations

__all__ = [
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
]


class StoreError(Exception):
    """Root of the store's errors (the host may not import ``tss.errors``)."""


class StoreInputError(StoreError, ValueError):
    """The caller broke a precondition: a malformed id, length, threshold or index."""


class NotFoundError(StoreError, LookupError):
    """The requested record does not exist."""


class WalletNotFoundError(NotFoundError):
    """No wallet with this id."""


class ShareNotFoundError(NotFoundError):
    """No share at this (wallet, share index, epoch), or no current one."""


class BackupNotFoundError(NotFoundError):
    """No backup with this (wallet, backup id)."""


class StoreConflictError(StoreError):
    """The write contradicts what is stored (other bytes, an existing wallet); nothing changed."""


class QuotaExceededError(StoreError):
    """The write would pass a quota (a wallet's backup count or bytes); nothing changed."""


class EpochError(StoreError):
    """The operation breaks the epoch rules (wrong epoch, not pending, already committed)."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached or stayed locked; retrying later may succeed."""


class StoreCorruptionError(StoreError):
    """The database holds a record or state the store never writes."""


class MigrationError(StoreError):
    """The database schema is newer than this code, or an applied migration was edited."""
