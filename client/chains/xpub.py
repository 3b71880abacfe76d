"""BIP-32 extended public keys of a wallet, for watch-only wallets.

BIP-32 "Serialization format"::

    version (4) || depth (1) || parent fingerprint (4) || child number (4)
    || chain code (32) || public key (33)          then Base58Check

with ``version`` 0x0488B21E (``xpub``, mainnet) or 0x043587CF (``tpub``,
testnets), a key's fingerprint the first 4 bytes of HASH160 (RIPEMD-160 of
SHA-256) of its compressed key, and depth 0, fingerprint 0 and child number 0
for the master key. The wallet's key with the chain code its shares carry is
the master (``tss.bip32``): a watch-only wallet that derives ``xpub/0/i``
finds the keys the wallet signs for with ``--path 0/i``, and a PSBT names them
with the master's fingerprint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Literal

from Crypto.Hash import RIPEMD160

from client.errors import sdk_boundary
from client.sdk.wallet import Wallet
from shardkeep.chains.base58 import encode as b58encode
from tss.bip32 import derive_public
from tss.errors import InputError

__all__ = [
    # Functions
    "extended_public_key",
    "fingerprint",
    "serialize_xpub",
    "wallet_chain_code",
    "wallet_xpub",
    # Constants
    "XPUB_VERSIONS",
]

Network = Literal["mainnet", "testnet", "signet", "regtest"]
XPUB_VERSIONS: Final[dict[str, bytes]] = {
    "mainnet": bytes.fromhex("0488b21e"),
    "testnet": bytes.fromhex("043587cf"),
    "signet": bytes.fromhex("043587cf"),
    "regtest": bytes.fromhex("043587cf"),
}


@sdk_boundary
def fingerprint(public_key: bytes) -> bytes:
    """The 4-byte BIP-32 fingerprint of a 33-byte compressed key: HASH160's first bytes."""
    sha = hashlib.sha256(public_key).digest()
    return RIPEMD160.new(sha).digest()[:4]


@sdk_boundary
def serialize_xpub(
    network: Network,
    depth: int,
    parent_fingerprint: bytes,
    child_number: int,
    chain_code: bytes,
    public_key: bytes,
) -> str:
    """Base58Check of a BIP-32 extended public key.

    Raises:
        InputError: a field out of its range or of the wrong length.
    """
    if not 0 <= depth <= 255 or not 0 <= child_number < 1 << 32:
        raise InputError("depth is one byte and the child number four")
    if len(parent_fingerprint) != 4 or len(chain_code) != 32 or len(public_key) != 33:
        raise InputError("a fingerprint is 4 bytes, a chain code 32, a public key 33")
    payload = (
        XPUB_VERSIONS[network] + bytes([depth]) + parent_fingerprint
        + child_number.to_bytes(4, "big") + chain_code + public_key
    )  # fmt: skip
    checksum = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    return b58encode(payload + checksum)


@sdk_boundary
def wallet_chain_code(wallet: Wallet) -> bytes:
    """The wallet's BIP-32 chain code, from a share it holds.

    Raises:
        InputError: the wallet holds no share here.
    """
    share = next(iter(wallet.shares.values()), None)
    if share is None:
        raise InputError("the wallet holds no key share (its chain code is needed)")
    return bytes(share.chain_code)


@sdk_boundary
def extended_public_key(
    public_key: bytes,
    chain_code: bytes,
    network: Network,
    derivation_path: Sequence[int] = (),
    *,
    depth: int = 0,
) -> str:
    """The extended public key at a non-hardened path below a key at ``depth``.

    Arguments:
        public_key, chain_code: the 33-byte key and 32-byte chain code.
        network: selects ``xpub`` (mainnet) or ``tpub``.
        derivation_path: the indices below it (empty: the key itself, which
            must then be a master key, depth 0).
        depth: the key's own depth (0 for a master key).

    Raises:
        InputError: a hardened index, a non-master key without a path (its
            parent fingerprint is unknown), or bad lengths.
    """
    if not derivation_path:
        if depth:
            raise InputError("a key below the master needs its parent to be serialised")
        return serialize_xpub(network, 0, b"\x00" * 4, 0, chain_code, public_key)
    parent = derive_public(public_key, chain_code, derivation_path[:-1])
    child = derive_public(parent.public_key, parent.chain_code, derivation_path[-1:])
    return serialize_xpub(
        network, depth + len(derivation_path), fingerprint(parent.public_key),
        derivation_path[-1], child.chain_code, child.public_key,
    )  # fmt: skip


@sdk_boundary
def wallet_xpub(wallet: Wallet, network: Network, derivation_path: Sequence[int] = ()) -> str:
    """The extended public key of the wallet (the master), or of its child at a path.

    Raises:
        InputError: a hardened index, or no share to read the chain code from.
    """
    return extended_public_key(
        wallet.public_key, wallet_chain_code(wallet), network, derivation_path
    )
