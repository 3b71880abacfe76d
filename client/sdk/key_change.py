"""A key change on the device side: its pending shares, where they are kept, and its errors.

A key change (refresh, reshare, import) and a keygen pause every local party
before it releases its certificate signature (``tss.certificate``; keygen's
is ChillDKG's CertEq signature); the SDK then saves the new shares, as a
:class:`PendingChange`, through the caller's :class:`KeyStore`, next to the
old ones. Only then do the signatures leave.
The change is settled later in one of two ways:

- committed: the complete certificate (from the ceremony, or fetched from the
  host on resume) verifies against the pending change's session id,
  transcript and seats' host keys (keygen: ChillDKG's ``certeq_verify`` over
  the saved DKG transcript); the store promotes the new shares;
- discarded: the host holds no such epoch and can no longer commit one (its
  deadline passed); the store drops the new shares and the old epoch stays.

The public part of a pending change (``to_json``) holds no secret; the shares
and identities are the store's to protect.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from client.errors import InvalidInput, sdk_boundary
from client.sdk.party import PartyIdentity
from tss.certificate import SIGNATURE_BYTES, verify_certificate
from tss.dkg.chilldkg import SessionParams, certeq_verify
from tss.group import group_of

if TYPE_CHECKING:  # client.sdk.wallet imports this module
    from client.sdk.wallet import Wallet

__all__ = [
    # Types
    "PendingChange",
    "KeyStore",
    "MemoryKeyStore",
]


@sdk_boundary
@dataclass
class PendingChange:
    """A key change whose new shares were saved before this client's parties agreed.

    Attributes:
        kind: "refresh", "reshare", "import" or "keygen".
        wallet: the wallet as it will be at the new epoch, with the new local shares.
        devices: the new local parties' identities, by new index.
        session_id, transcript: what the certificate signs (32 bytes each; a
            keygen's transcript is ChillDKG's DKG transcript, ``eq_input``).
        hostpubkeys: every seat's 33-byte host public key, in certificate order.
        deadline_unix: after this the host can no longer commit the change
            without its certificate (the ceremony's expiry).
        certificate: the complete certificate, once this client has it.
    """

    kind: str
    wallet: Wallet
    devices: dict[int, PartyIdentity] = field(repr=False)
    session_id: bytes
    transcript: bytes
    hostpubkeys: tuple[bytes, ...]
    deadline_unix: int
    certificate: bytes = b""

    @property
    def epoch(self) -> int:
        return self.wallet.epoch

    def verify(self, certificate: bytes) -> None:
        """Check that ``certificate`` completes this key change.

        Raises:
            FaultyParticipantError: the first seat whose signature does not verify.
            InvalidInput: not 64 bytes per seat.
        """
        if self.kind == "keygen":
            group = group_of(self.wallet.scheme)
            params = SessionParams(self.hostpubkeys, self.wallet.threshold, group)
            certeq_verify(params, self.transcript, certificate)
            return
        verify_certificate(self.hostpubkeys, self.session_id, self.transcript, certificate)

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.deadline_unix

    def to_json(self) -> dict[str, Any]:
        """The public record (no share, no identity)."""
        return {
            "kind": self.kind,
            "epoch": self.epoch,
            "session_id": self.session_id.hex(),
            "transcript": self.transcript.hex(),
            "hostpubkeys": [k.hex() for k in self.hostpubkeys],
            "deadline_unix": self.deadline_unix,
            "certificate": self.certificate.hex(),
        }

    @staticmethod
    def from_json(
        data: dict[str, Any], wallet: Wallet, devices: dict[int, PartyIdentity]
    ) -> PendingChange:
        """Rebuild a pending change from its public record and its saved shares.

        Raises:
            InvalidInput: a malformed record, or one of another epoch than ``wallet``.
        """
        try:
            change = PendingChange(
                kind=str(data["kind"]),
                wallet=wallet,
                devices=devices,
                session_id=bytes.fromhex(data["session_id"]),
                transcript=bytes.fromhex(data["transcript"]),
                hostpubkeys=tuple(bytes.fromhex(k) for k in data["hostpubkeys"]),
                deadline_unix=int(data["deadline_unix"]),
                certificate=bytes.fromhex(data.get("certificate", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput("malformed pending key change record") from e
        if int(data["epoch"]) != wallet.epoch or len(change.certificate) not in (
            0,
            SIGNATURE_BYTES * len(change.hostpubkeys),
        ):
            raise InvalidInput("the pending key change record does not fit its shares")
        return change


class KeyStore(Protocol):
    """Where a device keeps its shares across a key change (e.g. ``client.cli.state``).

    Every method must be durable when it returns, and must never lose the
    committed epoch's shares: a failure leaves the previous state.
    """

    def save(self, wallet: Wallet, devices: dict[int, PartyIdentity]) -> None:
        """Keep a new wallet that no key change made (a keygen) as committed."""

    def save_pending(self, change: PendingChange) -> None:
        """Keep the new shares beside the committed ones (before the parties agree)."""

    def commit(self, change: PendingChange) -> None:
        """Make the pending shares the committed ones (the certificate verified)."""

    def discard(self, change: PendingChange) -> None:
        """Drop the pending shares (the key change failed); the committed ones stay."""


@sdk_boundary
@dataclass
class MemoryKeyStore:
    """A key store in this process's memory: for callers that persist wallets themselves."""

    pending: dict[str, PendingChange] = field(default_factory=dict)
    committed: dict[str, Wallet] = field(default_factory=dict)

    def save(self, wallet: Wallet, devices: dict[int, PartyIdentity]) -> None:
        self.committed[wallet.wallet_id] = wallet

    def save_pending(self, change: PendingChange) -> None:
        self.pending[change.wallet.wallet_id] = change

    def commit(self, change: PendingChange) -> None:
        self.pending.pop(change.wallet.wallet_id, None)
        self.committed[change.wallet.wallet_id] = change.wallet

    def discard(self, change: PendingChange) -> None:
        self.pending.pop(change.wallet.wallet_id, None)
