"""Fuzzed transactions never crash a parser: they parse, or raise ``TransactionParseError``.

Random bytes, and valid transactions mutated (a byte flipped, inserted or
deleted, truncated), go to every parser of ``shardkeep.chains``; what a
parser accepts must also be what the reference implementations read
(``rlp`` for RLP, ``solders`` for Solana messages).
"""

from __future__ import annotations

import rlp  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solders.message import from_bytes_versioned

from shardkeep.chains import evm, solana
from shardkeep.chains.errors import TransactionParseError
from shardkeep.chains.rlp import decode
from tests.test_chains_evm import LEGACY, eip1559, legacy_payload
from tests.test_chains_solana import messages
from tests.test_ethereum import TRANSACTIONS

FUZZ = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
SEEDS = [
    *(tx.signing_payload() for tx in TRANSACTIONS.values()),
    *(legacy_payload(fields)[0] for fields in LEGACY.values()),
    eip1559(),
]
SOLANA_SEEDS = list(messages().values())


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data.insert(pos, draw(st.integers(0, 255)))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def parses_or_refuses_evm(data: bytes) -> None:
    try:
        tx = evm.parse_transaction(data)
    except TransactionParseError:
        return
    assert tx.digest == evm.keccak256(data)


def parses_or_refuses_solana(data: bytes) -> None:
    try:
        message = solana.parse_message(data)
    except TransactionParseError:
        return
    oracle = from_bytes_versioned(data)  # what we accept, the Solana SDK reads alike
    assert message.account_keys == tuple(bytes(k) for k in oracle.account_keys)
    assert len(message.program_ids) <= len(message.instructions)
    assert len(message.system_instruction_tags()) <= len(message.instructions)
    assert len(message.transfers) <= len(message.instructions)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_never_crash_the_evm_parser(data: bytes) -> None:
    parses_or_refuses_evm(data)
    parses_or_refuses_evm(b"\x02" + data)


@FUZZ
@given(mutated(SEEDS))
def test_mutated_evm_transactions_never_crash_the_parser(data: bytes) -> None:
    parses_or_refuses_evm(data)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_never_crash_the_solana_parser(data: bytes) -> None:
    parses_or_refuses_solana(data)
    parses_or_refuses_solana(b"\x80" + data)


@FUZZ
@given(mutated(SOLANA_SEEDS))
def test_mutated_solana_messages_never_crash_the_parser(data: bytes) -> None:
    parses_or_refuses_solana(data)


RLP_VALUES = st.recursive(st.binary(max_size=80), lambda inner: st.lists(inner, max_size=5))


@FUZZ
@given(RLP_VALUES)
def test_rlp_decodes_every_rlp_package_encoding(value: object) -> None:
    assert decode(bytes(rlp.encode(value))) == value


@FUZZ
@given(
    st.one_of(st.binary(max_size=200), mutated([bytes(rlp.encode([b"a" * 60, [b"", b"\x01"]]))]))
)
def test_rlp_accepts_only_what_the_rlp_package_reads_alike(data: bytes) -> None:
    try:
        ours = decode(data)
    except TransactionParseError:
        return
    assert rlp.decode(data, strict=True) == ours
