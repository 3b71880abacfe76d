"""The wallets a host stores, through its paged ``ListWallets``.

The host is untrusted: a listing tells what it claims to hold, nothing more.
Each entry is checked for shape only (a 33-byte public key, a known scheme, a
threshold its parties can meet) and the paging must move forward, so a host
cannot keep a client looping on one page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import grpc

from client.errors import WalletError, sdk_boundary
from client.sdk.backups import HostTarget, host_stub
from shardkeep.lifecycle import SCHEMES
from shardkeep.v1 import host_pb2
from tss.keyshare import Scheme

__all__ = [
    # Functions
    "list_host_wallets",
    # Types
    "HostWallet",
]

_RPC_TIMEOUT_S: Final = 30.0
_PAGE_SIZE: Final = 100
_MAX_WALLETS: Final = 100_000


@dataclass(frozen=True)
class HostWallet:
    """A wallet as the host's ``ListWallets`` describes it.

    Attributes:
        wallet_id: the wallet's id.
        scheme: "bip340", "ecdsa-secp256k1" or "ed25519".
        threshold: parties needed to sign.
        party_ids: the keyring's party ids, in keyring order.
        public_key: the 33-byte compressed public key (ed25519: the 32-byte RFC 8032 key).
        epoch: the current key epoch.
    """

    wallet_id: str
    scheme: Scheme
    threshold: int
    party_ids: tuple[str, ...]
    public_key: bytes
    epoch: int


def _entry(message: host_pb2.Wallet) -> HostWallet:
    scheme = SCHEMES.get(message.scheme)
    parties = tuple(p.party_id for p in message.parties)
    if (
        scheme is None
        or len(message.public_key) != (32 if scheme == "ed25519" else 33)
        or not 1 <= message.threshold <= len(parties)
    ):
        raise WalletError(f"the host describes wallet {message.wallet_id!r} malformed")
    return HostWallet(
        wallet_id=message.wallet_id,
        scheme=scheme,
        threshold=message.threshold,
        party_ids=parties,
        public_key=bytes(message.public_key),
        epoch=message.epoch,
    )


@sdk_boundary
async def list_host_wallets(
    host: HostTarget,
    *,
    page_size: int = _PAGE_SIZE,
    metadata: tuple[tuple[str, str], ...] = (),
    max_wallets: int = _MAX_WALLETS,
) -> list[HostWallet]:
    """Every wallet the host stores with a committed key, in wallet-id byte order.

    Arguments:
        host: a channel to the host (its transport carries the API token), or a stub.
        page_size: wallets asked for per call (the host may cap it).
        metadata: extra call metadata (e.g. ``authorization`` on a bare channel).
        max_wallets: most wallets accepted (a host could page for ever).

    Returns:
        The wallets, each once.

    Raises:
        WalletError: the host refused a call (``code`` UNAUTHENTICATED: no or a
            bad API token), or described a wallet malformed, out of order or twice,
            or more than ``max_wallets``.
    """
    stub = host_stub(host)
    found: list[HostWallet] = []
    token = ""
    while True:
        request = host_pb2.ListWalletsRequest(page_size=page_size, page_token=token)
        try:
            reply = await stub.ListWallets(request, timeout=_RPC_TIMEOUT_S, metadata=metadata)
        except grpc.aio.AioRpcError as e:
            raise WalletError(f"ListWallets failed: {e.details()}", e.code()) from e
        for message in reply.wallets:
            entry = _entry(message)
            if found and entry.wallet_id.encode() <= found[-1].wallet_id.encode():
                raise WalletError("the host listed its wallets out of order")
            found.append(entry)
        if len(found) > max_wallets:
            raise WalletError(f"the host lists more than {max_wallets} wallets")
        if not reply.next_page_token:
            return found
        if reply.next_page_token.encode() <= token.encode() or (
            found and reply.next_page_token.encode() < found[-1].wallet_id.encode()
        ):
            raise WalletError("the host's page token does not move forward")
        token = reply.next_page_token
