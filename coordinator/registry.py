"""The coordinator's registry in one SQLite file: enrollment codes, devices, wallets, seen calls.

What it keeps, and why it must outlive a restart:

- **enrollment codes**, by SHA-256 only, with whether they were used: a
  used code stays used when the coordinator restarts with the same codes
  file (codes are added, never reset);
- **enrolled devices** (Ed25519 public keys) and the account each enrolled
  into (a code may name one; else the device is an account of its own): a
  restart does not lock devices out;
- **wallets** (:class:`coordinator.policy.WalletRecord`: public keyring,
  epoch, owner key, which device holds which party; no share);
- **seen device calls** (device key, nonce, when) within twice the freshness
  window (``shardkeep.device_auth``): a call recorded before a restart is
  refused as a replay after it.

Who can roll it back, and what then: whoever operates the coordinator's disk.
Restoring an older copy re-opens the codes used since (if the codes file
still lists them), forgets devices enrolled and wallets created since (their
devices must enroll again; the wallets' shares are safe on the devices and
in the enclave, but this coordinator no longer serves them until they are
registered again), and forgets the epoch of a later refresh (the device then
refuses the stale requests, and the enclave refuses the old epoch once it
was pruned). Seen calls older than the window need no keeping: their
timestamps are refused as stale. Losing the file is the same as restoring
an empty one. Writes are committed (``synchronous=FULL``) before the
coordinator answers.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, cast

from google.protobuf.message import DecodeError

from coordinator.policy import WalletRecord
from shardkeep.v1 import ceremony_pb2

__all__ = ["Registry", "RegistryError"]

MEMORY: Final = ":memory:"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS enrollment_codes (
    code_sha256 BLOB PRIMARY KEY,
    used_at_ms INTEGER,
    account TEXT
);
CREATE TABLE IF NOT EXISTS devices (
    device_key BLOB PRIMARY KEY,
    enrolled_at_ms INTEGER NOT NULL,
    account TEXT
);
CREATE TABLE IF NOT EXISTS wallets (
    wallet_id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_calls (
    device_key BLOB NOT NULL,
    nonce BLOB NOT NULL,
    seen_at_ms INTEGER NOT NULL,
    PRIMARY KEY (device_key, nonce)
);
"""


class RegistryError(Exception):
    """The registry file cannot be opened, or holds a record that is not one (named)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _code_hash(code: str) -> bytes:
    return hashlib.sha256(code.encode()).digest()


class Registry:
    """The coordinator's durable state (see the module docstring).

    Arguments:
        path: the SQLite file (created if missing), or ``":memory:"`` (tests).
    """

    def __init__(self, path: Path | str = MEMORY) -> None:
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._add_missing_columns()
        except sqlite3.Error as e:
            raise RegistryError(f"cannot open the coordinator registry {path}: {e}") from e

    def close(self) -> None:
        self._db.close()

    def _add_missing_columns(self) -> None:
        """A registry written before accounts existed gets the columns (NULL: own account)."""
        for table in ("enrollment_codes", "devices"):
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if "account" not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN account TEXT")

    # --- enrollment ------------------------------------------------------------------

    def add_codes(self, codes: Iterable[str | tuple[str, str]]) -> None:
        """Register one-time enrollment codes; codes already known keep their state.

        A ``(code, account)`` pair enrolls its device into that account (e.g.
        a user's recovery of a lost device); a bare code into an account of
        the device's own.
        """
        rows = [
            (_code_hash(c), None) if isinstance(c, str) else (_code_hash(c[0]), c[1]) for c in codes
        ]
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO enrollment_codes (code_sha256, account) VALUES (?, ?)",
                rows,
            )

    def enroll(self, code: str, device_key: bytes) -> bool:
        """Use ``code`` to enroll ``device_key``, atomically; False if the code is unknown or used.

        A lookup by the code's SHA-256 reveals nothing about other codes through its timing.
        """
        now = _now_ms()
        with self._db:
            used = self._db.execute(
                "UPDATE enrollment_codes SET used_at_ms = ? "
                "WHERE code_sha256 = ? AND used_at_ms IS NULL",
                (now, _code_hash(code)),
            )
            if used.rowcount != 1:
                return False
            (account,) = self._db.execute(
                "SELECT account FROM enrollment_codes WHERE code_sha256 = ?", (_code_hash(code),)
            ).fetchone()
            self._db.execute(
                "INSERT OR IGNORE INTO devices (device_key, enrolled_at_ms, account) "
                "VALUES (?, ?, ?)",
                (bytes(device_key), now, account),
            )
        return True

    def account_of(self, device_key: bytes) -> str | None:
        """The account an enrolled device belongs to (None: not enrolled)."""
        row = self._db.execute(
            "SELECT account FROM devices WHERE device_key = ?", (bytes(device_key),)
        ).fetchone()
        if row is None:
            return None
        return str(row[0]) if row[0] is not None else "device:" + bytes(device_key).hex()

    def enrolled(self, device_key: bytes) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM devices WHERE device_key = ?", (bytes(device_key),)
        ).fetchone()
        return row is not None

    # --- wallets ---------------------------------------------------------------------

    def save_wallet(self, record: WalletRecord) -> None:
        """Store (or replace) a wallet's record."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO wallets (wallet_id, record) VALUES (?, ?)",
                (record.wallet_id, json.dumps(_record_to_json(record))),
            )

    def wallet(self, wallet_id: str) -> WalletRecord | None:
        """The wallet's record, or None.

        Raises:
            RegistryError: the stored record is malformed.
        """
        row = self._db.execute(
            "SELECT record FROM wallets WHERE wallet_id = ?", (wallet_id,)
        ).fetchone()
        return None if row is None else _record_from_json(wallet_id, row[0])

    # --- seen device calls (shardkeep.device_auth.SeenNonces) ------------------------

    def remember(self, device_key: bytes, nonce: bytes, now_ms: int, forget_before_ms: int) -> bool:
        """Record a call's nonce; False if it was seen already. Forgets older nonces."""
        with self._db:
            self._db.execute("DELETE FROM seen_calls WHERE seen_at_ms < ?", (forget_before_ms,))
            added = self._db.execute(
                "INSERT OR IGNORE INTO seen_calls (device_key, nonce, seen_at_ms) VALUES (?, ?, ?)",
                (bytes(device_key), bytes(nonce), now_ms),
            )
        return added.rowcount == 1


def _record_to_json(record: WalletRecord) -> dict[str, Any]:
    return {
        "scheme": int(record.scheme),
        "threshold": record.threshold,
        "parties": [p.SerializeToString().hex() for p in record.parties],
        "server_index": record.server_index,
        "public_key": record.public_key.hex(),
        "epoch": record.epoch,
        "devices": {key.hex(): index for key, index in record.devices.items()},
        "owner_key": record.owner_key.hex(),
        "account": record.account,
    }


def _record_from_json(wallet_id: str, text: str) -> WalletRecord:
    try:
        data = json.loads(text)
        return WalletRecord(
            wallet_id=wallet_id,
            scheme=_scheme(int(data["scheme"])),
            threshold=int(data["threshold"]),
            parties=[ceremony_pb2.Party.FromString(bytes.fromhex(p)) for p in data["parties"]],
            server_index=int(data["server_index"]),
            public_key=bytes.fromhex(data["public_key"]),
            epoch=int(data["epoch"]),
            devices={bytes.fromhex(k): int(i) for k, i in data["devices"].items()},
            owner_key=bytes.fromhex(data["owner_key"]),
            account=str(data.get("account", "")),
        )
    except (ValueError, KeyError, TypeError, AttributeError, DecodeError) as e:
        raise RegistryError(f"the registry's record of wallet {wallet_id!r} is malformed") from e


def _scheme(value: int) -> ceremony_pb2.Scheme:
    ceremony_pb2.Scheme.Name(value)  # ValueError for a number that is no scheme
    return cast(ceremony_pb2.Scheme, value)
