"""``shardkeep.chains.solana``: legacy and v0 messages hand-parsed, checked against ``solders``.

solders (the Solana SDK's Rust types) compiles the messages and is the
oracle for the header, keys, instructions and blockhash; what the validator
would not sanitise, and address table lookups, are refused by name.
"""

from __future__ import annotations

import pytest
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0, from_bytes_versioned, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from shardkeep.chains import base58, solana
from shardkeep.chains.errors import TransactionParseError

PAYER, ALICE, BOB = (Keypair.from_seed(bytes([i]) * 32).pubkey() for i in (1, 2, 3))
MEMO = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TyNwWQHxM6KRmG7dL6hJcV")
BLOCKHASH = Hash(bytes(range(32)))


def instructions() -> list[Instruction]:
    return [
        transfer(TransferParams(from_pubkey=PAYER, to_pubkey=ALICE, lamports=1_500_000_000)),
        transfer(TransferParams(from_pubkey=PAYER, to_pubkey=BOB, lamports=2**64 - 1)),
        Instruction(MEMO, b"hello", [AccountMeta(PAYER, True, False)]),
    ]


def messages() -> dict[str, bytes]:
    return {
        "legacy": bytes(Message.new_with_blockhash(instructions(), PAYER, BLOCKHASH)),
        "v0": to_bytes_versioned(MessageV0.try_compile(PAYER, instructions(), [], BLOCKHASH)),
    }


@pytest.mark.parametrize("name", ["legacy", "v0"])
def test_message_matches_solders(name: str) -> None:
    raw = messages()[name]
    parsed = solana.parse_message(raw)
    oracle = from_bytes_versioned(raw)
    assert parsed.version == ("legacy" if name == "legacy" else 0)
    assert parsed.account_keys == tuple(bytes(k) for k in oracle.account_keys)
    header = oracle.header
    assert (
        parsed.num_required_signatures,
        parsed.num_readonly_signed,
        parsed.num_readonly_unsigned,
    ) == (
        header.num_required_signatures,
        header.num_readonly_signed_accounts,
        header.num_readonly_unsigned_accounts,
    )
    assert parsed.recent_blockhash == bytes(oracle.recent_blockhash)
    keys = oracle.account_keys
    assert [(ix.program_id, ix.accounts, ix.data) for ix in parsed.instructions] == [
        (bytes(keys[ix.program_id_index]), tuple(bytes(keys[a]) for a in ix.accounts), ix.data)
        for ix in oracle.instructions
    ]


@pytest.mark.parametrize("name", ["legacy", "v0"])
def test_policy_view_of_a_message(name: str) -> None:
    parsed = solana.parse_message(messages()[name])
    assert parsed.fee_payer == bytes(PAYER)
    assert parsed.signers == (bytes(PAYER),)
    assert parsed.program_ids == (solana.SYSTEM_PROGRAM_ID, bytes(MEMO))
    assert parsed.transfers == (
        solana.SolTransfer(bytes(PAYER), bytes(ALICE), 1_500_000_000),
        solana.SolTransfer(bytes(PAYER), bytes(BOB), 2**64 - 1),
    )
    assert parsed.system_instruction_tags() == (2, 2)
    assert base58.encode(parsed.fee_payer) == str(PAYER)


def test_address_table_lookups_are_refused() -> None:
    table = AddressLookupTableAccount(Keypair.from_seed(bytes([9]) * 32).pubkey(), [BOB])
    raw = to_bytes_versioned(MessageV0.try_compile(PAYER, instructions(), [table], BLOCKHASH))
    with pytest.raises(TransactionParseError, match="address table lookups"):
        solana.parse_message(raw)


def legacy_with(header: bytes = b"\x01\x00\x01", tail: bytes | None = None) -> bytes:
    raw = messages()["legacy"]
    return header + raw[3:] if tail is None else header + raw[3:] + tail


def test_malformed_messages_are_refused_naming_the_fault() -> None:
    raw = messages()["legacy"]
    cases = {
        b"": "truncated header",
        raw[:-1]: "truncated",
        raw + b"\x00": "trailing",
        b"\x81" + raw: "version 1",
        legacy_with(b"\x00\x00\x01"): "needs a signer",
        legacy_with(b"\x01\x01\x01"): "writable fee payer",
        legacy_with(b"\x01\x00\x05"): "more accounts",
        # compact-u16 of the key count: 4 written as 0x84 0x00 (an alias of 0x04)
        raw[:3] + b"\x84\x00" + raw[4:]: "non-minimal",
    }
    for data, fault in cases.items():
        with pytest.raises(TransactionParseError, match=fault):
            solana.parse_message(data)


def test_program_at_the_fee_payer_index_is_refused() -> None:
    parsed = solana.parse_message(messages()["legacy"])
    keys = len(parsed.account_keys)
    body = b"\x01\x00\x01" + bytes([keys]) + b"".join(parsed.account_keys) + bytes(32)
    with pytest.raises(TransactionParseError, match="out of range"):
        solana.parse_message(body + b"\x01" + b"\x00" + b"\x00" + b"\x00")  # program index 0
    with pytest.raises(TransactionParseError, match="out of range"):
        solana.parse_message(body + b"\x01" + bytes([keys]) + b"\x00\x00")  # past the keys


def test_duplicate_account_keys_are_refused() -> None:
    key = bytes(PAYER)
    raw = b"\x01\x00\x00\x02" + key + key + bytes(32) + b"\x00"
    with pytest.raises(TransactionParseError, match="twice"):
        solana.parse_message(raw)


def test_short_system_transfer_is_refused_not_ignored() -> None:
    system = Pubkey(solana.SYSTEM_PROGRAM_ID)
    bad = Instruction(system, (2).to_bytes(4, "little") + b"\x01", [AccountMeta(PAYER, True, True)])
    with pytest.raises(TransactionParseError, match="System Transfer"):
        solana.parse_message(bytes(Message.new_with_blockhash([bad], PAYER, BLOCKHASH)))


def test_base58_round_trips_and_matches_solders() -> None:
    for raw in (bytes(32), b"\0\0\x01" + bytes(29), bytes(Keypair().pubkey()), b"", b"\0"):
        text = base58.encode(raw)
        assert base58.decode(text) == raw
        if len(raw) == 32:
            assert text == str(Pubkey(raw))
    with pytest.raises(base58.Base58Error, match="not base58: '0'"):
        base58.decode("10OIl")
