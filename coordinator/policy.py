"""Who may ask for what: the coordinator's one authorisation decision (docs/coordinator.md).

Today an enrolled device may create wallets, and sign, renew its ECDSA pair
setup, refresh and export (with the owner's approval) the wallets its party
belongs to. Per-wallet approvals and
transaction policies replace :meth:`Policy.authorize` later, and travel to
the enclave inside the signed request so that the coordinator key alone no
longer suffices.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardkeep.v1 import ceremony_pb2, coordinator_pb2

__all__ = ["Denied", "Policy", "WalletRecord"]


class Denied(Exception):
    """The device may not run this ceremony (the reason is named)."""


@dataclass
class WalletRecord:
    """What the coordinator keeps of a wallet: its keyring and who may use it (no shares).

    ``devices``: enrolled device key -> the party index it holds; ``owner_key``:
    the owner's 32-byte Ed25519 public key, which approves exports.
    """

    wallet_id: str
    scheme: ceremony_pb2.Scheme
    threshold: int
    parties: list[ceremony_pb2.Party]
    server_index: int
    public_key: bytes
    epoch: int
    devices: dict[bytes, int]
    owner_key: bytes


class Policy:
    """The default policy: wallets are their devices' own."""

    def authorize(
        self,
        device_key: bytes,
        ask: coordinator_pb2.CeremonyAsk,
        wallet: WalletRecord | None,
    ) -> None:
        """Allow the ask or raise :class:`Denied`.

        Arguments:
            device_key: the enrolled device's Ed25519 public key.
            ask: what it asks for.
            wallet: the wallet a signature is asked for (None for a keygen).
        """
        if ask.kind == ceremony_pb2.CEREMONY_KIND_KEYGEN:
            return
        if wallet is None or device_key not in wallet.devices:
            raise Denied("this device is not a party of the wallet")
