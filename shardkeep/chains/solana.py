"""Solana messages to sign (legacy and v0), hand-parsed: accounts, programs, SOL transfers.

The wire format, from Solana's documentation ("Transactions": message
header, compact array format, account addresses, recent blockhash,
instructions; "Versioned Transactions": the version prefix and address table
lookups)::

    legacy      = header || compact_array(account key(32)) || recent blockhash(32)
                  || compact_array(instruction)
    v0          = 0x80 || the legacy layout || compact_array(address table lookup)
    header      = #required signatures, #readonly signed, #readonly unsigned (1 byte each)
    instruction = program id index (1) || compact_array(account index (1))
                  || compact_array(data byte)
    compact_u16 = 1-3 bytes, 7 bits each, little end first, high bit = more follows

A first byte with the high bit set is a versioned message; version 0 only.
Ed25519 signs the message bytes themselves, so what the enclave signs is the
message it parsed. The checks follow the validator's sanitising of a message
(``Message::sanitize``): at least one signer, the fee payer writable, the
header's counts within the keys, unique keys, every index in range, no
program at index 0 (the fee payer). Refused besides: compact-u16 values in a
non-minimal encoding (the validator's ``short_vec`` refuses them too),
trailing bytes, and v0 messages with address table lookups, whose accounts
are not in the message (the enclave could not tell whom they pay).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from shardkeep.chains.errors import TransactionParseError

__all__ = [
    # Functions
    "parse_message",
    # Types
    "SolanaMessage",
    "SolanaInstruction",
    "SolTransfer",
    # Constants
    "SYSTEM_PROGRAM_ID",
]

SYSTEM_PROGRAM_ID: Final = bytes(32)
SYSTEM_TRANSFER: Final = 2  # System program instruction tag (u32 LE) of Transfer { lamports: u64 }


@dataclass(frozen=True)
class SolanaInstruction:
    """One compiled instruction: its program, its accounts (resolved keys) and data."""

    program_id: bytes
    accounts: tuple[bytes, ...]
    data: bytes


@dataclass(frozen=True)
class SolTransfer:
    """A System program Transfer: ``lamports`` from ``source`` (a signer) to ``destination``."""

    source: bytes
    destination: bytes
    lamports: int


@dataclass(frozen=True)
class SolanaMessage:
    """A parsed Solana message.

    Attributes:
        version: "legacy" or 0.
        num_required_signatures, num_readonly_signed, num_readonly_unsigned: the header.
        account_keys: the 32-byte keys, fee payer first.
        recent_blockhash: 32 bytes.
        instructions: the instructions, in order.
        transfers: the System program Transfer instructions, in order (each one
            checked when the message is parsed, so a policy decides on a whole message).
    """

    version: Literal["legacy", 0]
    num_required_signatures: int
    num_readonly_signed: int
    num_readonly_unsigned: int
    account_keys: tuple[bytes, ...]
    recent_blockhash: bytes
    instructions: tuple[SolanaInstruction, ...]
    transfers: tuple[SolTransfer, ...]

    @property
    def fee_payer(self) -> bytes:
        """The first account key: the first signer, who pays the fee."""
        return self.account_keys[0]

    @property
    def signers(self) -> tuple[bytes, ...]:
        """The keys whose signatures the message needs, in order."""
        return self.account_keys[: self.num_required_signatures]

    @property
    def program_ids(self) -> tuple[bytes, ...]:
        """The distinct programs the instructions call, in order of first call."""
        return tuple(dict.fromkeys(ix.program_id for ix in self.instructions))

    def system_instruction_tags(self) -> tuple[int, ...]:
        """The instruction tag (u32 LE) of each System program call; -1 where the data is short."""
        return tuple(
            int.from_bytes(ix.data[:4], "little") if len(ix.data) >= 4 else -1
            for ix in self.instructions
            if ix.program_id == SYSTEM_PROGRAM_ID
        )


def _sol_transfers(instructions: tuple[SolanaInstruction, ...]) -> tuple[SolTransfer, ...]:
    """The System program Transfers (tag 2, u64 LE lamports, 12 bytes of data).

    Raises:
        TransactionParseError: a Transfer with the wrong data length or fewer
            than two accounts (the runtime would refuse it; a policy must not
            see it as something else).
    """
    transfers = []
    for ix in instructions:
        if ix.program_id != SYSTEM_PROGRAM_ID or ix.data[:4] != SYSTEM_TRANSFER.to_bytes(
            4, "little"
        ):
            continue
        if len(ix.data) != 12 or len(ix.accounts) < 2:
            raise _fail("a System Transfer needs 12 bytes of data and two accounts")
        lamports = int.from_bytes(ix.data[4:12], "little")
        transfers.append(SolTransfer(ix.accounts[0], ix.accounts[1], lamports))
    return tuple(transfers)


def _fail(message: str) -> TransactionParseError:
    return TransactionParseError("solana", message)


class _Reader:
    """A cursor over the message that refuses to read past its end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise _fail(f"truncated {what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def compact_u16(self, what: str) -> int:
        # short_vec: at most three bytes; the third carries the top two bits only,
        # and a final zero byte (an alias of a shorter encoding) is refused.
        value = 0
        for i in range(3):
            b = self.byte(what)
            if i == 2 and b > 0x03:
                raise _fail(f"{what}: compact-u16 overflows 16 bits")
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if i > 0 and b == 0:
                    raise _fail(f"{what}: non-minimal compact-u16")
                return value
        raise _fail(f"{what}: compact-u16 longer than three bytes")


def parse_message(message: bytes) -> SolanaMessage:
    """Parse a legacy or v0 Solana message (the bytes every signer signs).

    Raises:
        TransactionParseError: truncated, trailing bytes, an unsupported
            version, address table lookups, a message the validator would
            not sanitise (see the module docstring), or a malformed System
            Transfer.
    """
    r = _Reader(message)
    version: Literal["legacy", 0] = "legacy"
    if message[:1] and message[0] & 0x80:
        if message[0] & 0x7F != 0:
            raise _fail(f"message version {message[0] & 0x7F} is not supported (legacy and 0)")
        version = 0
        r.take(1, "version")
    required, readonly_signed, readonly_unsigned = r.take(3, "header")
    keys = tuple(r.take(32, "account key") for _ in range(r.compact_u16("account keys")))
    blockhash = r.take(32, "recent blockhash")
    compiled = []
    for _ in range(r.compact_u16("instructions")):
        program = r.byte("program id index")
        accounts = r.take(r.compact_u16("instruction accounts"), "instruction accounts")
        compiled.append((program, accounts, r.take(r.compact_u16("instruction data"), "data")))
    # Lookups come last but decide what the indices mean: refuse them before resolving.
    if version == 0 and r.compact_u16("address table lookups") != 0:
        raise _fail("address table lookups are refused (their accounts are not in the message)")
    if r.pos != len(message):
        raise _fail(f"{len(message) - r.pos} trailing bytes")
    instructions = []
    for program, accounts, data in compiled:
        if program == 0 or program >= len(keys) or any(a >= len(keys) for a in accounts):
            raise _fail("an instruction's program or account index is out of range")
        instructions.append(
            SolanaInstruction(keys[program], tuple(keys[a] for a in accounts), data)
        )
    if required == 0 or readonly_signed >= required:
        raise _fail("the header needs a signer and a writable fee payer")
    if required + readonly_unsigned > len(keys):
        raise _fail("the header counts more accounts than the message has")
    if len(set(keys)) != len(keys):
        raise _fail("an account key appears twice")
    resolved = tuple(instructions)
    return SolanaMessage(
        version, required, readonly_signed, readonly_unsigned, keys, blockhash, resolved,
        _sol_transfers(resolved),
    )  # fmt: skip
