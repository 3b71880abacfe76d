"""Solana transactions (legacy and v0 messages) signed by an Ed25519 wallet.

Wire format (Solana's transaction and message formats, as ``solders`` and the
validators read them)::

    transaction = compact_u16(#signatures) || signature(64)* || message
    legacy      = header || compact_array(account key(32)) || recent blockhash(32)
                  || compact_array(instruction)
    v0          = 0x80 || the legacy layout || compact_array(address table lookup)
    header      = #required signatures, #readonly signed, #readonly unsigned (1 byte each)
    instruction = program id index (1) || compact_array(account index (1))
                  || compact_array(data byte)

Accounts are compiled as Solana's ``CompiledKeys`` does: one entry per key
with its flags merged, the fee payer first, then writable signers, readonly
signers, writable non-signers and readonly non-signers, each group in byte
order of the keys. Every signature signs the whole message bytes (Ed25519
signs the message, not a digest). v0 messages here use no address lookup tables.

Addresses are base58 (the Bitcoin alphabet) of the 32-byte public key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client.errors import InvalidInput, sdk_boundary
from client.sdk.approvals import Approver
from client.sdk.party import PartyIdentity, Progress
from client.sdk.wallet import SignedPayload, Wallet, WalletClient
from shardkeep.chains import base58

__all__ = [
    "b58encode",
    "b58decode",
    "address",
    "public_key_from_address",
    "AccountMeta",
    "Instruction",
    "SYSTEM_PROGRAM_ID",
    "TOKEN_PROGRAM_ID",
    "sol_transfer",
    "spl_transfer_checked",
    "compile_message",
    "signed_transaction",
    "sign_transaction",
    "check_fee_payer",
    "SolanaError",
]


class SolanaError(InvalidInput):
    """A malformed address, amount, instruction or signature (also a ``ValueError``)."""

    error_code = "solana"


@sdk_boundary
def b58encode(data: bytes) -> str:
    """Base58 (Bitcoin alphabet): one '1' per leading zero byte, then the number in base 58."""
    return base58.encode(data)


@sdk_boundary
def b58decode(text: str) -> bytes:
    """Inverse of ``b58encode``.

    Raises:
        SolanaError: a character outside the alphabet.
    """
    try:
        return base58.decode(text)
    except base58.Base58Error as e:
        raise SolanaError(str(e)) from e


@sdk_boundary
def address(public_key: bytes) -> str:
    """The Solana address of a 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise SolanaError("a Solana public key is 32 bytes")
    return b58encode(public_key)


@sdk_boundary
def public_key_from_address(text: str) -> bytes:
    """The 32 bytes an address names.

    Raises:
        SolanaError: not base58, or not 32 bytes.
    """
    key = b58decode(text)
    if len(key) != 32:
        raise SolanaError(f"address {text!r} is not 32 bytes")
    return key


SYSTEM_PROGRAM_ID: Final = bytes(32)
TOKEN_PROGRAM_ID: Final = public_key_from_address("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")


@dataclass(frozen=True)
class AccountMeta:
    """An account an instruction reads or writes."""

    pubkey: bytes
    is_signer: bool
    is_writable: bool


@dataclass(frozen=True)
class Instruction:
    """One program call: the program, its accounts in order, and its data."""

    program_id: bytes
    accounts: tuple[AccountMeta, ...]
    data: bytes


def _u64(value: int, what: str) -> bytes:
    if not 0 <= value < 2**64:
        raise SolanaError(f"{what} must fit in 64 bits")
    return value.to_bytes(8, "little")


@sdk_boundary
def sol_transfer(source: bytes, destination: bytes, lamports: int) -> Instruction:
    """System program ``Transfer`` (instruction 2: u32 LE tag, u64 LE lamports)."""
    return Instruction(
        SYSTEM_PROGRAM_ID,
        (AccountMeta(source, True, True), AccountMeta(destination, False, True)),
        (2).to_bytes(4, "little") + _u64(lamports, "lamports"),
    )


@sdk_boundary
def spl_transfer_checked(
    source: bytes,
    mint: bytes,
    destination: bytes,
    owner: bytes,
    amount: int,
    decimals: int,
    token_program: bytes = TOKEN_PROGRAM_ID,
) -> Instruction:
    """SPL Token ``TransferChecked`` (instruction 12: u8 tag, u64 LE amount, u8 decimals).

    ``source`` and ``destination`` are token accounts (e.g. associated token
    accounts), ``owner`` is the wallet that signs.
    """
    if not 0 <= decimals < 256:
        raise SolanaError("decimals must fit in a byte")
    return Instruction(
        token_program,
        (
            AccountMeta(source, False, True),
            AccountMeta(mint, False, False),
            AccountMeta(destination, False, True),
            AccountMeta(owner, True, False),
        ),
        bytes([12]) + _u64(amount, "amount") + bytes([decimals]),
    )


def _compact_u16(n: int) -> bytes:
    # Solana's short_vec: 7 bits per byte, high bit set while more follow.
    if not 0 <= n < 2**16:
        raise SolanaError("too many items for a compact array")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _compile_keys(payer: bytes, instructions: Sequence[Instruction]) -> tuple[bytes, list[bytes]]:
    flags: dict[bytes, list[bool]] = {payer: [True, True]}  # [signer, writable]
    for ix in instructions:
        flags.setdefault(ix.program_id, [False, False])
        for meta in ix.accounts:
            f = flags.setdefault(meta.pubkey, [False, False])
            f[0] |= meta.is_signer
            f[1] |= meta.is_writable
    for key in flags:
        if len(key) != 32:
            raise SolanaError("account keys are 32 bytes")
    others = sorted(k for k in flags if k != payer)

    def group(signer: bool, writable: bool) -> list[bytes]:
        return [k for k in others if flags[k] == [signer, writable]]

    ws, rs, wu, ru = group(True, True), group(True, False), group(False, True), group(False, False)
    keys = [payer, *ws, *rs, *wu, *ru]
    header = bytes([1 + len(ws) + len(rs), len(rs), len(ru)])
    return header, keys


@sdk_boundary
def compile_message(
    payer: bytes,
    instructions: Sequence[Instruction],
    recent_blockhash: bytes,
    version: Literal["legacy", 0] = "legacy",
) -> bytes:
    """The message bytes every signer signs.

    Arguments:
        payer: the fee payer's 32-byte public key (a signer, first account).
        instructions: the program calls, in order.
        recent_blockhash: 32 bytes.
        version: "legacy" or 0 (v0, no address lookup tables).

    Raises:
        SolanaError: malformed keys, blockhash, or too many accounts.
    """
    if len(recent_blockhash) != 32:
        raise SolanaError("the recent blockhash is 32 bytes")
    header, keys = _compile_keys(payer, instructions)
    if len(keys) > 256:
        raise SolanaError("more than 256 accounts")
    index = {k: i for i, k in enumerate(keys)}
    body = bytearray(header)
    body += _compact_u16(len(keys)) + b"".join(keys)
    body += recent_blockhash
    body += _compact_u16(len(instructions))
    for ix in instructions:
        body.append(index[ix.program_id])
        body += _compact_u16(len(ix.accounts)) + bytes(index[m.pubkey] for m in ix.accounts)
        body += _compact_u16(len(ix.data)) + ix.data
    if version == "legacy":
        return bytes(body)
    if version == 0:
        return b"\x80" + bytes(body) + _compact_u16(0)
    raise SolanaError(f"unknown message version {version!r}")


@sdk_boundary
def signed_transaction(message: bytes, public_key: bytes, sign: Callable[[bytes], bytes]) -> bytes:
    """The wire transaction of a message whose only signer is ``public_key`` (the fee payer).

    ``sign`` signs the message bytes (e.g. ``tss.local.sign`` of an ed25519
    keyring; ``sign_transaction`` signs with the service); the signature is
    verified before the transaction is returned.

    Raises:
        SolanaError: the message needs other signers, or the signature does not verify.
    """
    check_fee_payer(message, public_key)
    return _assemble(message, public_key, sign(message))


@sdk_boundary
async def sign_transaction(
    client: WalletClient,
    wallet: Wallet,
    message: bytes,
    devices: Mapping[int, PartyIdentity],
    *,
    with_server: bool = True,
    progress: Progress | None = None,
    approvers: Sequence[Approver] = (),
) -> bytes:
    """Sign a compiled message with an ed25519 wallet (FROST(Ed25519) with the service).

    The request marks the message as a Solana message, so the server share
    parses it and checks it against the wallet's policy set, if it has one.

    Arguments:
        client, wallet, devices, with_server, progress: as ``WalletClient.sign``.
        message: a legacy or v0 message (``compile_message``) whose only signer,
            the fee payer, is the wallet.
        approvers: for a wallet with a policy set, who approves.

    Returns:
        The wire transaction (signature count, signature, message), ready to send.

    Raises:
        SolanaError: not an ed25519 wallet, another signer, or a signature that
            does not verify (never expected: the signers verify it too).
        WalletError: the ceremony failed.
    """
    if wallet.scheme != "ed25519":
        raise SolanaError("Solana transactions are signed by ed25519 wallets")
    check_fee_payer(message, wallet.public_key)
    signature = await client.sign(
        wallet,
        message,
        devices,
        with_server=with_server,
        progress=progress,
        approvers=approvers,
        payload=SignedPayload(solana_message=True),
    )
    if not isinstance(signature, bytes):
        raise SolanaError("an ed25519 wallet returned a recoverable signature")
    return _assemble(message, wallet.public_key, signature)


@sdk_boundary
def check_fee_payer(message: bytes, public_key: bytes) -> None:
    """Check that ``message`` has exactly one signer, ``public_key``, as its fee payer.

    Raises:
        SolanaError: a message too short to hold its header, another signer, or more.
    """
    offset = 1 if message[:1] == b"\x80" else 0
    if len(message) < offset + 4:
        raise SolanaError("the message is too short")
    keys = offset + 3 + (1 if message[offset + 3] < 0x80 else 2)  # past the key count
    if message[offset] != 1 or message[keys : keys + 32] != public_key:
        raise SolanaError("the message must have exactly one signer, this wallet as fee payer")


def _assemble(message: bytes, public_key: bytes, signature: bytes) -> bytes:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError) as e:
        raise SolanaError("the signature does not verify for the wallet's key") from e
    return _compact_u16(1) + signature + message
