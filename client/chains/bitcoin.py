"""Signing a Taproot key-path spend with a bip340 wallet.

The signature hash is BIP-341's (``shardkeep.chains.bip341``, which the
enclave can compute too); this module finds the wallet's output key for a
derivation path and script tree root, signs through a ``WalletClient`` and
verifies the signature under the output key before handing out the witness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from client.errors import sdk_boundary
from client.sdk.party import PartyIdentity, Progress
from client.sdk.wallet import Wallet, WalletClient
from shardkeep.chains.bech32 import NETWORK_HRPS, segwit_address
from shardkeep.chains.bip341 import (
    SIGHASH_DEFAULT,
    key_path_sighash,
    key_path_witness,
    p2tr_script,
)
from shardkeep.chains.bitcoin_tx import Transaction, TxOut
from tss.bip32 import derive_public
from tss.curve import schnorr_verify
from tss.errors import InputError, InternalError
from tss.signing import SigningOptions
from tss.taproot import taproot_output_key

__all__ = [
    # Functions
    "key_path_address",
    "sign_key_path",
    "wallet_output_key",
    "wallet_p2tr_address",
]


@sdk_boundary
def wallet_output_key(
    wallet: Wallet,
    *,
    derivation_path: Sequence[int] = (),
    merkle_root: bytes | None = None,
) -> bytes:
    """The x-only Taproot output key a bip340 wallet signs for with these options.

    The internal key is the wallet's key, or its non-hardened BIP-32 child at
    ``derivation_path``; the output key is its BIP-341 tweak with ``merkle_root``
    (None: key path only), as ``tss.signing.signing_tweaks`` applies them.

    Raises:
        InputError: not a bip340 wallet, a hardened index, or a bad merkle root.
    """
    return taproot_output_key(_internal_key(wallet, derivation_path), merkle_root).output_key


@sdk_boundary
def key_path_address(internal_key: bytes, network: str = "mainnet") -> str:
    """The Bech32m address of a key-path-only Taproot output (BIP-86's) of an internal key.

    Arguments:
        internal_key: the 32-byte x-only internal key.
        network: "mainnet", "testnet", "signet" or "regtest" (the address's hrp).

    Raises:
        InputError: an unknown network, or a key not on the curve.
    """
    if network not in NETWORK_HRPS:
        raise InputError(f"unknown network {network!r}")
    return segwit_address(NETWORK_HRPS[network], 1, taproot_output_key(internal_key).output_key)


@sdk_boundary
def wallet_p2tr_address(
    wallet: Wallet, network: str = "mainnet", *, derivation_path: Sequence[int] = ()
) -> str:
    """The wallet's key-path-only Taproot address (BIP-86's output: no script tree).

    Arguments:
        network: "mainnet", "testnet", "signet" or "regtest" (the address's hrp).
        derivation_path: non-hardened BIP-32 indices of the internal key.

    Raises:
        InputError: not a bip340 wallet, an unknown network, or a bad path.
    """
    return key_path_address(_internal_key(wallet, derivation_path), network)


def _internal_key(wallet: Wallet, derivation_path: Sequence[int]) -> bytes:
    """The x-only internal key: the wallet's key, or its non-hardened BIP-32 child."""
    if wallet.scheme != "bip340":
        raise InputError("Taproot outputs need a bip340 wallet")
    internal = wallet.public_key
    if derivation_path:
        share = next(iter(wallet.shares.values()), None)
        if share is None:
            raise InputError("the wallet holds no key share (its chain code is needed)")
        internal = derive_public(wallet.public_key, share.chain_code, derivation_path).public_key
    return internal[1:]


@sdk_boundary
async def sign_key_path(
    client: WalletClient,
    wallet: Wallet,
    tx: Transaction,
    spent_outputs: Sequence[TxOut],
    input_index: int,
    devices: Mapping[int, PartyIdentity],
    *,
    hash_type: int = SIGHASH_DEFAULT,
    annex: bytes | None = None,
    merkle_root: bytes | None = None,
    derivation_path: Sequence[int] = (),
    with_server: bool = True,
    progress: Progress | None = None,
) -> tuple[bytes, ...]:
    """Sign a Taproot key-path spend of one input with a bip340 wallet.

    The spent output must be the wallet's own P2TR output for these options
    (checked before any ceremony), and the signature is verified under its
    output key before it is returned.

    Arguments:
        client, wallet, devices, with_server, progress: as ``WalletClient.sign``.
        tx, spent_outputs, input_index, hash_type, annex: as :func:`key_path_sighash`.
        merkle_root: the output's script tree root, or None for key path only.
        derivation_path: non-hardened BIP-32 indices of the internal key.

    Returns:
        The input's witness stack (:func:`key_path_witness`).

    Raises:
        InputError: bad arguments, or the spent output is not this wallet's.
        WalletError: the ceremony failed.
        InternalError: the signature does not verify (never expected).
    """
    output_key = wallet_output_key(wallet, derivation_path=derivation_path, merkle_root=merkle_root)
    if not 0 <= input_index < len(spent_outputs):
        raise InputError("input index out of range")
    if spent_outputs[input_index].script_pubkey != p2tr_script(output_key):
        raise InputError("the spent output is not this wallet's Taproot output")
    sighash = key_path_sighash(tx, spent_outputs, input_index, hash_type, annex=annex)
    options = SigningOptions(
        derivation_path=tuple(derivation_path), taproot=True, taproot_merkle_root=merkle_root
    )
    signature = await client.sign(
        wallet, sighash, devices, options=options, with_server=with_server, progress=progress
    )
    if not isinstance(signature, bytes) or not schnorr_verify(sighash, output_key, signature):
        raise InternalError("the key-path signature does not verify under the output key")
    return key_path_witness(signature, hash_type, annex)
