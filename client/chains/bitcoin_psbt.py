"""Signing the Taproot key-path inputs of a PSBT with a bip340 wallet.

An input is the wallet's when its ``PSBT_IN_TAP_INTERNAL_KEY`` is the
wallet's x-only key, or a non-hardened BIP-32 child of it that the input's
``PSBT_IN_TAP_BIP32_DERIVATION`` names under the wallet's fingerprint (as a
watch-only wallet built from ``wallet xpub`` writes it). Such an input must
spend the output that internal key makes (with ``PSBT_IN_TAP_MERKLE_ROOT``
when present): anything else is refused before any ceremony, since signing
it would authorise a spend the PSBT misdescribes. Inputs already signed or
finalised, and inputs of other keys, are left as they are and reported.

Each signature is a FROST ceremony over the input's BIP-341 sighash
(``Psbt.key_path_sighash``), verified under the output key before it is
written as ``PSBT_IN_TAP_KEY_SIG`` (with the sighash type byte unless it is
SIGHASH_DEFAULT).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from client.chains.xpub import fingerprint, wallet_chain_code
from client.errors import sdk_boundary
from client.sdk.approvals import Approver
from client.sdk.party import PartyIdentity, Progress
from client.sdk.wallet import SignedPayload, Wallet, WalletClient
from shardkeep.chains.bip341 import SIGHASH_DEFAULT, p2tr_script
from shardkeep.chains.psbt import Psbt, PsbtError, TaprootInput
from tss.bip32 import HARDENED, derive_public
from tss.curve import schnorr_verify
from tss.errors import InputError, InternalError
from tss.signing import SigningOptions
from tss.taproot import taproot_output_key

__all__ = [
    # Functions
    "wallet_inputs",
    "sign_psbt",
    # Types
    "SignedPsbt",
    "WalletInput",
]


@dataclass(frozen=True)
class WalletInput:
    """An input this wallet can sign: where its internal key is and what it spends to.

    Attributes:
        index: the input's index.
        derivation_path: the internal key's non-hardened path below the wallet's key.
        merkle_root: the script tree root, or None (key path only).
        output_key: the 32-byte x-only key the signature must verify under.
    """

    index: int
    derivation_path: tuple[int, ...]
    merkle_root: bytes | None
    output_key: bytes


@dataclass(frozen=True)
class SignedPsbt:
    """The PSBT with this wallet's key-path signatures, and what was not signed.

    Attributes:
        psbt: the PSBT, signatures added.
        signed: indices of the inputs signed now.
        skipped: index -> why it was left (another key, already signed, final).
    """

    psbt: Psbt
    signed: tuple[int, ...]
    skipped: dict[int, str]


def _path_of(wallet: Wallet, info: TaprootInput) -> tuple[int, ...] | None:
    """The internal key's path below the wallet's key, or None when it is not the wallet's."""
    internal = info.internal_key
    if internal is None:
        return None
    if internal == wallet.public_key[1:]:
        return ()
    origin = info.derivations.get(internal)
    if origin is None or origin.fingerprint != fingerprint(wallet.public_key):
        return None
    if any(index >= HARDENED for index in origin.path):
        return None  # a hardened step: not a child of this threshold key
    child = derive_public(wallet.public_key, wallet_chain_code(wallet), origin.path)
    return origin.path if child.public_key[1:] == internal else None


@sdk_boundary
def wallet_inputs(wallet: Wallet, psbt: Psbt) -> tuple[list[WalletInput], dict[int, str]]:
    """The inputs this wallet signs, and why the others are left.

    Raises:
        InputError: not a bip340 wallet.
        PsbtError: an input of this wallet that does not spend the output its
            internal key makes, or whose sighash type is undefined.
    """
    if wallet.scheme != "bip340":
        raise InputError("PSBT key-path inputs need a bip340 wallet")
    mine: list[WalletInput] = []
    skipped: dict[int, str] = {}
    for index in range(len(psbt.inputs)):
        info = psbt.taproot_input(index)
        if info.finalized:
            skipped[index] = "already final"
            continue
        path = _path_of(wallet, info)
        if path is None:
            skipped[index] = "not a key-path input of this wallet"
            continue
        if info.key_signature is not None:
            skipped[index] = "already signed"
            continue
        assert info.internal_key is not None  # _path_of found it
        output_key = taproot_output_key(info.internal_key, info.merkle_root).output_key
        if psbt.spent_output(index).script_pubkey != p2tr_script(output_key):
            raise PsbtError(f"input {index}: its internal key does not make the output it spends")
        mine.append(WalletInput(index, path, info.merkle_root, output_key))
    return mine, skipped


@sdk_boundary
async def sign_psbt(
    client: WalletClient,
    wallet: Wallet,
    psbt: Psbt,
    devices: Mapping[int, PartyIdentity],
    *,
    with_server: bool = True,
    progress: Progress | None = None,
    approvers: Sequence[Approver] = (),
) -> SignedPsbt:
    """Sign every key-path input of this wallet in ``psbt`` (one ceremony per input).

    Arguments:
        client, wallet, devices, with_server, progress: as ``WalletClient.sign``.
        psbt: the PSBT (``shardkeep.chains.psbt.parse_psbt``); the server share
            gets it too, parses it and computes each input's sighash itself.
        approvers: for a wallet with a policy set, who approves each input.

    Raises:
        PsbtError: no input is this wallet's, an input of this wallet is
            inconsistent, or a spent output is unknown (every input's is needed).
        WalletError: a ceremony failed (inputs signed before it are not returned).
        InternalError: a signature does not verify (never expected).
    """
    mine, skipped = wallet_inputs(wallet, psbt)
    if not mine:
        raise PsbtError("no input of this PSBT is a key-path spend of this wallet")
    psbt.spent_outputs()  # every input's is needed: refuse before the first ceremony
    unsigned = psbt.serialize()  # what the server share parses: no signature added yet
    for item in mine:
        sighash = psbt.key_path_sighash(item.index)  # shared hashes computed once
        options = SigningOptions(
            derivation_path=item.derivation_path, taproot=True,
            taproot_merkle_root=item.merkle_root,
        )  # fmt: skip
        signature = await client.sign(
            wallet, sighash, devices, options=options, with_server=with_server, progress=progress,
            approvers=approvers, payload=SignedPayload(psbt=unsigned, psbt_input=item.index),
        )  # fmt: skip
        if not isinstance(signature, bytes) or not schnorr_verify(
            sighash, item.output_key, signature
        ):
            raise InternalError(f"input {item.index}: the signature does not verify")
        hash_type = psbt.taproot_input(item.index).sighash_type
        if hash_type != SIGHASH_DEFAULT:
            signature += bytes([hash_type])
        psbt = psbt.with_key_signature(item.index, signature)
    return SignedPsbt(psbt, tuple(item.index for item in mine), skipped)
