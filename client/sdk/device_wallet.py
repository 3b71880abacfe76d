"""A wallet as a device holds it, and what a device's ceremonies raise."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from client.errors import WalletError, sdk_boundary
from shardkeep.policyset import PolicySet
from shardkeep.v1 import ceremony_pb2
from tss.certificate import PendingKeyChange
from tss.keyshare import KeyShare, Scheme

__all__ = ["CoordinatorRefused", "DeviceKeyChangeInterrupted", "DeviceWallet", "SaveNewWallet"]


class CoordinatorRefused(WalletError):
    """The coordinator refused, or handed back something this device did not ask for."""

    error_code = "coordinator_refused"


class DeviceKeyChangeInterrupted(WalletError):
    """A refresh or reshare failed after this device saved its new share as pending.

    :meth:`Device.resume` settles it (the new wallet, or the old one); until
    then the old wallet signs. ``certificate``: the complete certificate, if
    this device's party got every signature; ``deadline_unix``: after it, a
    change the host does not hold can no longer be stored.
    """

    error_code = "device_key_change_interrupted"

    def __init__(
        self, message: str, pending: DeviceWallet, certificate: bytes, deadline_unix: int
    ) -> None:
        super().__init__(message)
        self.pending = pending
        self.certificate = certificate
        self.deadline_unix = deadline_unix


@sdk_boundary
@dataclass
class DeviceWallet:
    """A wallet as a device holds it: the public keyring and its own share."""

    wallet_id: str
    scheme: Scheme
    threshold: int
    parties: list[ceremony_pb2.Party]
    index: int
    public_key: bytes
    epoch: int
    share: KeyShare = field(repr=False)
    # After a refresh: what the epoch acknowledgment signs (public; None otherwise).
    key_change: PendingKeyChange | None = field(default=None, repr=False)
    # Registered at keygen: the server share acts for the wallet only with its approvals.
    policy_set: PolicySet | None = field(default=None, repr=False)

    @property
    def server_index(self) -> int:
        """The server party's index: a coordinator's keygen lists it last."""
        return len(self.parties) - 1

    def server_setup_id(self) -> bytes | None:
        """ECDSA: the id of this share's usable DKLs23 setup with the server party, or None."""
        setup = self.share.ecdsa
        server = self.server_index
        if setup is None or server not in setup.held or setup.is_burned(server):
            return None
        return setup.peer(server).setup_id


SaveNewWallet = Callable[["DeviceWallet"], Awaitable[None]]
