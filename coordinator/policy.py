"""Who may ask for what: the coordinator's one authorisation decision (docs/coordinator.md).

Today an enrolled device may create wallets, and sign, renew its ECDSA pair
setup, refresh, reshare and export (with the owner's approval) and back up
the wallets its party belongs to; a device of the account that created a
wallet may fetch its backups and claim a party of it (restoring a lost
device). Per-wallet approvals and
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
    the owner's 32-byte Ed25519 public key, which approves exports;
    ``account``: the account of the device that created it.
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
    account: str = ""


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

    def authorize_recovery(self, account: str | None, wallet: WalletRecord | None) -> None:
        """Allow a device of ``account`` to fetch the wallet's backups and claim its party,
        or raise :class:`Denied`: only devices of the account that created the wallet.

        The backups are ciphertext under the user's passcode; this keeps them
        from every other enrolled device, whose offline guessing they would
        otherwise face.
        """
        if wallet is None or not wallet.account or account != wallet.account:
            raise Denied("this device's account does not hold the wallet")
