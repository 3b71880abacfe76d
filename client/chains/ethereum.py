"""EIP-1559 (type-2) Ethereum transactions signed by an ECDSA wallet.

EIP-1559 "Specification" (with EIP-2718 typed envelopes and EIP-2930 access lists)::

    payload      = [chain_id, nonce, max_priority_fee_per_gas, max_fee_per_gas,
                    gas_limit, destination, amount, data, access_list]
    signing hash = keccak256(0x02 || rlp(payload))
    raw signed   = 0x02 || rlp(payload + [signature_y_parity, signature_r, signature_s])
    access_list  = [[address (20 bytes), [storage_key (32 bytes), ...]], ...]

Integers are RLP's minimal big-endian byte strings (zero is the empty string),
``destination`` is 20 bytes or empty for a contract creation. The signature is
secp256k1 ECDSA over the signing hash with ``s <= n/2`` (EIP-2), and
``signature_y_parity`` is the parity of R's y, i.e. bit 0 of the recovery id;
a recovery id with bit 1 set (R.x >= n, probability about 2^-128) cannot be
expressed and is refused. The sender is the last 20 bytes of keccak256 of the
64-byte uncompressed public key (Yellow Paper, eq. 284); addresses print with
the EIP-55 mixed-case checksum.

Encoding uses ``rlp`` (the Ethereum Foundation's RLP codec) and Keccak-256
from ``pycryptodome`` (``hashlib``'s sha3_256 is the NIST padding, not Keccak).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import rlp  # type: ignore[import-untyped]  # no type information; used for encode only
from coincurve import PublicKey
from Crypto.Hash import keccak

from client.errors import sdk_boundary
from client.sdk.approvals import Approver
from client.sdk.party import PartyIdentity, Progress
from client.sdk.wallet import SignedPayload, Wallet, WalletClient
from tss.bip32 import derive_public
from tss.curve import N
from tss.errors import InputError, InternalError
from tss.signing import RecoverableSignature, SigningOptions

__all__ = [
    # Functions
    "keccak256",
    "address_of",
    "checksum_address",
    "attach_signature",
    "wallet_public_key",
    "wallet_address",
    "sign_transaction",
    # Types
    "AccessListEntry",
    "Eip1559Transaction",
    "SignedEip1559Transaction",
    # Constants
    "TRANSACTION_TYPE",
]

TRANSACTION_TYPE: Final = 0x02
"""EIP-1559's EIP-2718 transaction type."""

_UINT256: Final = 1 << 256
_UINT64: Final = 1 << 64


@sdk_boundary
def keccak256(data: bytes) -> bytes:
    """Keccak-256 (the original Keccak padding, as Ethereum uses it)."""
    return keccak.new(digest_bits=256, data=data).digest()


@sdk_boundary
def address_of(public_key: bytes) -> bytes:
    """The 20-byte Ethereum address of a secp256k1 public key.

    Arguments:
        public_key: 33-byte compressed or 65-byte uncompressed key.

    Raises:
        InputError: not a valid public key.
    """
    try:
        point = PublicKey(public_key)
    except (ValueError, TypeError) as e:
        raise InputError("not a valid secp256k1 public key") from e
    return keccak256(point.format(compressed=False)[1:])[-20:]


@sdk_boundary
def checksum_address(address: bytes) -> str:
    """The EIP-55 mixed-case checksum spelling of a 20-byte address ("0x" + 40 digits).

    Raises:
        InputError: not 20 bytes.
    """
    if len(address) != 20:
        raise InputError("an Ethereum address is 20 bytes")
    hex_address = address.hex()
    digest = keccak256(hex_address.encode("ascii")).hex()
    # EIP-55: uppercase a letter where the matching nibble of the hash is >= 8.
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c
        for i, c in enumerate(hex_address)
    )


def _uint(name: str, value: int, bound: int = _UINT256) -> None:
    if type(value) is not int or not 0 <= value < bound:
        raise InputError(f"{name} must be an integer in [0, 2^{bound.bit_length() - 1})")


@dataclass(frozen=True)
class AccessListEntry:
    """One EIP-2930 access list entry.

    Attributes:
        address: the 20-byte address.
        storage_keys: its 32-byte storage keys.
    """

    address: bytes
    storage_keys: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if len(self.address) != 20:
            raise InputError("an access list address is 20 bytes")
        if any(len(key) != 32 for key in self.storage_keys):
            raise InputError("an access list storage key is 32 bytes")


@sdk_boundary
@dataclass(frozen=True)
class Eip1559Transaction:
    """An unsigned EIP-1559 transaction.

    Attributes:
        chain_id: the EIP-155 chain id (1 for mainnet).
        nonce: the sender's nonce (below 2^64, EIP-2681).
        max_priority_fee_per_gas: the tip per gas, in wei.
        max_fee_per_gas: the fee cap per gas, in wei (at least the tip).
        gas: the gas limit (below 2^64).
        to: the 20-byte destination, or None to create a contract.
        value: the amount in wei.
        data: the call data (or init code).
        access_list: the EIP-2930 access list.
    """

    chain_id: int
    nonce: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas: int
    to: bytes | None
    value: int = 0
    data: bytes = b""
    access_list: tuple[AccessListEntry, ...] = ()

    def __post_init__(self) -> None:
        _uint("chain_id", self.chain_id)
        if self.chain_id == 0:
            raise InputError("chain_id must be positive")
        _uint("nonce", self.nonce, _UINT64)
        _uint("max_priority_fee_per_gas", self.max_priority_fee_per_gas)
        _uint("max_fee_per_gas", self.max_fee_per_gas)
        _uint("gas", self.gas, _UINT64)
        _uint("value", self.value)
        # EIP-1559: a transaction whose tip exceeds its fee cap is invalid.
        if self.max_priority_fee_per_gas > self.max_fee_per_gas:
            raise InputError("max_priority_fee_per_gas exceeds max_fee_per_gas")
        if self.to is not None and len(self.to) != 20:
            raise InputError("the destination is a 20-byte address (or None to create)")
        if not isinstance(self.data, bytes):
            raise InputError("data must be bytes")

    def payload(self) -> list[object]:
        """The nine payload fields, ready for RLP."""
        return [
            self.chain_id,
            self.nonce,
            self.max_priority_fee_per_gas,
            self.max_fee_per_gas,
            self.gas,
            self.to if self.to is not None else b"",
            self.value,
            self.data,
            [[entry.address, list(entry.storage_keys)] for entry in self.access_list],
        ]

    def signing_payload(self) -> bytes:
        """``0x02 || rlp(payload)``: the bytes whose Keccak-256 is signed."""
        return bytes([TRANSACTION_TYPE]) + bytes(rlp.encode(self.payload()))

    def signing_hash(self) -> bytes:
        """The 32-byte EIP-1559 signing hash, ``keccak256(0x02 || rlp(payload))``."""
        return keccak256(self.signing_payload())


@dataclass(frozen=True)
class SignedEip1559Transaction:
    """An EIP-1559 transaction with its signature.

    Attributes:
        transaction: the unsigned transaction.
        y_parity: 0 or 1, the parity of R's y.
        r, s: the ECDSA signature (``s <= n/2``).
        sender: the 20-byte address the signature recovers to.
    """

    transaction: Eip1559Transaction
    y_parity: int
    r: int
    s: int
    sender: bytes

    @property
    def raw(self) -> bytes:
        """``0x02 || rlp(payload + [y_parity, r, s])``, ready for ``eth_sendRawTransaction``."""
        fields = [*self.transaction.payload(), self.y_parity, self.r, self.s]
        return bytes([TRANSACTION_TYPE]) + bytes(rlp.encode(fields))

    @property
    def hash(self) -> bytes:
        """The transaction hash: keccak256 of the raw signed transaction."""
        return keccak256(self.raw)

    @property
    def sender_address(self) -> str:
        """The sender's EIP-55 checksum address."""
        return checksum_address(self.sender)


@sdk_boundary
def attach_signature(
    transaction: Eip1559Transaction, signature: RecoverableSignature, public_key: bytes
) -> SignedEip1559Transaction:
    """Attach an ECDSA signature of ``transaction.signing_hash()`` made by ``public_key``.

    Arguments:
        transaction: the unsigned transaction.
        signature: 64-byte r || s (low s) with its recovery id.
        public_key: the 33-byte key that signed.

    Returns:
        The signed transaction; its signature recovers to ``public_key``'s address.

    Raises:
        InputError: a high s, r or s out of range, a recovery id that a
            type-2 transaction cannot carry (R.x >= n), or a signature that
            does not recover to ``public_key`` over this transaction.
    """
    sig = signature.signature
    if len(sig) != 64 or signature.recovery_id not in (0, 1, 2, 3):
        raise InputError("a recoverable signature is 64 bytes and a recovery id 0-3")
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if not (0 < r < N and 0 < s <= N // 2):
        raise InputError("r must be in [1, n) and s in [1, n/2] (EIP-2)")
    if signature.recovery_id & 2:
        raise InputError("R.x >= n: the signature cannot be carried by a y_parity; sign again")
    digest = transaction.signing_hash()
    try:
        recovered = PublicKey.from_signature_and_message(
            signature.to_bytes65(), digest, hasher=None
        )
    except ValueError as e:
        raise InputError("the signature does not recover to any key") from e
    if recovered.format() != PublicKey(public_key).format():
        raise InputError("the signature is not by this key over this transaction")
    return SignedEip1559Transaction(
        transaction, signature.recovery_id & 1, r, s, address_of(recovered.format())
    )


@sdk_boundary
def wallet_public_key(wallet: Wallet, derivation_path: Sequence[int] = ()) -> bytes:
    """The 33-byte key an ECDSA wallet signs with: its own, or its BIP-32 child at the path.

    Raises:
        InputError: not an ECDSA wallet, a hardened index, or no share to
            read the chain code from.
    """
    if wallet.scheme != "ecdsa-secp256k1":
        raise InputError("Ethereum transactions need an ecdsa-secp256k1 wallet")
    if not derivation_path:
        return wallet.public_key
    share = next(iter(wallet.shares.values()), None)
    if share is None:
        raise InputError("the wallet holds no key share (its chain code is needed)")
    return derive_public(wallet.public_key, share.chain_code, derivation_path).public_key


@sdk_boundary
def wallet_address(wallet: Wallet, derivation_path: Sequence[int] = ()) -> str:
    """The EIP-55 address of an ECDSA wallet (or of its child key at ``derivation_path``)."""
    return checksum_address(address_of(wallet_public_key(wallet, derivation_path)))


@sdk_boundary
async def sign_transaction(
    client: WalletClient,
    wallet: Wallet,
    transaction: Eip1559Transaction,
    devices: Mapping[int, PartyIdentity],
    *,
    derivation_path: Sequence[int] = (),
    with_server: bool = True,
    progress: Progress | None = None,
    approvers: Sequence[Approver] = (),
) -> SignedEip1559Transaction:
    """Sign an EIP-1559 transaction with an ECDSA wallet (a DKLs23 signing ceremony).

    Arguments:
        client, wallet, devices, with_server, progress: as ``WalletClient.sign``.
        transaction: the unsigned transaction.
        derivation_path: non-hardened BIP-32 indices of the sending key.
        approvers: for a wallet with a policy set, who approves; the server
            share parses the transaction itself and checks it against the policy.

    Returns:
        The signed transaction (``.raw`` to broadcast, ``.sender_address``).

    Raises:
        InputError: not an ECDSA wallet, or a bad path.
        WalletError: the ceremony failed.
        InternalError: the signature does not recover to the wallet's key
            (never expected; the signers verify it too).
    """
    public_key = wallet_public_key(wallet, derivation_path)
    signature = await client.sign(
        wallet,
        transaction.signing_hash(),
        devices,
        options=SigningOptions(derivation_path=tuple(derivation_path)),
        with_server=with_server,
        progress=progress,
        approvers=approvers,
        payload=SignedPayload(evm_transaction=transaction.signing_payload()),
    )
    if not isinstance(signature, RecoverableSignature):
        raise InternalError("an ECDSA wallet returned no recovery id")
    try:
        return attach_signature(transaction, signature, public_key)
    except InputError as e:
        raise InternalError(f"the wallet's signature is unusable: {e}") from e
