"""EIP-191 personal messages and EIP-712 typed data signed by an ECDSA wallet.

The digests come from ``shardkeep.chains.eth_messages`` (the enclave computes
the same); this module signs them through a ``WalletClient`` and returns the
65-byte ``r || s || v`` signature wallets and contracts expect (``v`` = 27 +
the parity of R's y, as ``personal_sign`` and ``eth_signTypedData_v4`` return
it), checked to recover to the signing key's address before it is handed out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coincurve import PublicKey

from client.chains.ethereum import address_of, checksum_address, wallet_public_key
from client.errors import sdk_boundary
from client.sdk.approvals import Approver
from client.sdk.party import PartyIdentity, Progress
from client.sdk.wallet import SignedPayload, Wallet, WalletClient
from shardkeep.chains.eth_messages import TypedData, personal_message_digest
from tss.curve import N
from tss.errors import InputError, InternalError
from tss.signing import RecoverableSignature, SigningOptions

__all__ = [
    # Functions
    "message_signature",
    "sign_personal_message",
    "sign_typed_data",
    # Types
    "MessageSignature",
]


@dataclass(frozen=True)
class MessageSignature:
    """A signature of an Ethereum message digest.

    Attributes:
        digest: the 32-byte digest signed.
        signature: 65 bytes ``r || s || v`` with ``v`` 27 or 28.
        address: the EIP-55 address the signature recovers to.
    """

    digest: bytes
    signature: bytes
    address: str


@sdk_boundary
def message_signature(
    digest: bytes, signature: RecoverableSignature, public_key: bytes
) -> MessageSignature:
    """Check ``signature`` of ``digest`` by ``public_key`` and spell it as ``r || s || v``.

    Arguments:
        digest: the 32-byte digest that was signed.
        signature: 64-byte r || s (low s) with its recovery id.
        public_key: the 33-byte key that signed.

    Raises:
        InputError: r or s out of range or a high s, a recovery id a ``v`` cannot
            carry (R.x >= n, probability about 2^-128: sign again), or a signature
            that does not recover to ``public_key``.
    """
    sig = signature.signature
    if len(sig) != 64 or signature.recovery_id not in (0, 1, 2, 3):
        raise InputError("a recoverable signature is 64 bytes and a recovery id 0-3")
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if not (0 < r < N and 0 < s <= N // 2):
        raise InputError("r must be in [1, n) and s in [1, n/2] (EIP-2)")
    if signature.recovery_id & 2:
        raise InputError("R.x >= n: v cannot carry this signature; sign again")
    try:
        recovered = PublicKey.from_signature_and_message(
            signature.to_bytes65(), digest, hasher=None
        )
    except ValueError as e:
        raise InputError("the signature does not recover to any key") from e
    if recovered.format() != PublicKey(public_key).format():
        raise InputError("the signature is not by this key over this digest")
    return MessageSignature(
        digest=digest,
        signature=sig + bytes([27 + signature.recovery_id]),
        address=checksum_address(address_of(public_key)),
    )


async def _sign_digest(
    client: WalletClient,
    wallet: Wallet,
    digest: bytes,
    devices: Mapping[int, PartyIdentity],
    derivation_path: Sequence[int],
    with_server: bool,
    progress: Progress | None,
    approvers: Sequence[Approver],
    payload: SignedPayload,
) -> MessageSignature:
    public_key = wallet_public_key(wallet, derivation_path)
    signature = await client.sign(
        wallet, digest, devices,
        options=SigningOptions(derivation_path=tuple(derivation_path)),
        with_server=with_server, progress=progress, approvers=approvers, payload=payload,
    )  # fmt: skip
    if not isinstance(signature, RecoverableSignature):
        raise InternalError("an ECDSA wallet returned no recovery id")
    try:
        return message_signature(digest, signature, public_key)
    except InputError as e:
        raise InternalError(f"the wallet's signature is unusable: {e}") from e


@sdk_boundary
async def sign_personal_message(
    client: WalletClient,
    wallet: Wallet,
    message: bytes,
    devices: Mapping[int, PartyIdentity],
    *,
    derivation_path: Sequence[int] = (),
    with_server: bool = True,
    progress: Progress | None = None,
    approvers: Sequence[Approver] = (),
) -> MessageSignature:
    """Sign an EIP-191 personal message (``personal_sign``) with an ECDSA wallet.

    Arguments:
        client, wallet, devices, with_server, progress: as ``WalletClient.sign``.
        message: the message's bytes (a text's UTF-8); the server share gets
            it too and computes the digest itself.
        derivation_path: non-hardened BIP-32 indices of the signing key.
        approvers: for a wallet with a policy set, who approves.

    Raises:
        InputError: not an ECDSA wallet, or a bad path.
        WalletError: the ceremony failed.
    """
    return await _sign_digest(
        client, wallet, personal_message_digest(message), devices, derivation_path,
        with_server, progress, approvers, SignedPayload(eth_personal_message=message),
    )  # fmt: skip


@sdk_boundary
async def sign_typed_data(
    client: WalletClient,
    wallet: Wallet,
    typed_data: TypedData,
    devices: Mapping[int, PartyIdentity],
    *,
    derivation_path: Sequence[int] = (),
    with_server: bool = True,
    progress: Progress | None = None,
    approvers: Sequence[Approver] = (),
) -> MessageSignature:
    """Sign EIP-712 typed data (``eth_signTypedData_v4``) with an ECDSA wallet.

    Arguments:
        typed_data: from ``shardkeep.chains.eth_messages.load_typed_data``.
        The rest: as ``sign_personal_message``.

    Raises:
        TypedDataError: a value the typed data's types refuse (before any ceremony).
        InputError: not an ECDSA wallet, or a bad path.
        WalletError: the ceremony failed.
    """
    digest = typed_data.digest()
    document = json.dumps(
        {
            "types": {
                name: [{"name": m.name, "type": m.type} for m in members]
                for name, members in typed_data.types.items()
            },
            "primaryType": typed_data.primary_type,
            "domain": typed_data.domain,
            "message": typed_data.message,
        }
    ).encode()  # the server share reads it back and must reach the same digest
    return await _sign_digest(
        client, wallet, digest, devices, derivation_path, with_server, progress, approvers,
        SignedPayload(eth_typed_data=document),
    )  # fmt: skip
