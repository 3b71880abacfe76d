"""Fuzzed PSBTs and EIP-712 documents never crash their readers.

Valid BIP-174/BIP-371 vectors and EIP-712 documents, mutated (a byte flipped,
inserted or deleted, truncated), and random bytes go to
``shardkeep.chains.psbt`` and ``shardkeep.chains.eth_messages``: each parses
or raises its typed error. A PSBT that parses serialises back to its bytes and
every input's view and sighash either works or names the input; typed data we
accept hashes as eth-account does.
"""

from __future__ import annotations

import contextlib
import json

from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import given
from hypothesis import strategies as st

from shardkeep.chains.eth_messages import TypedDataError, load_typed_data
from shardkeep.chains.psbt import MAGIC, PsbtError, parse_psbt
from tests.test_chains_fuzz import FUZZ, mutated
from tests.test_eth_messages import MAIL, NESTED
from tests.test_psbt import ROLES, VALID

PSBT_SEEDS = [data for _, data in VALID] + ROLES
TYPED_SEEDS = [json.dumps(document).encode() for document in (MAIL, NESTED)]


def parses_or_refuses_psbt(data: bytes) -> None:
    try:
        psbt = parse_psbt(data)
    except PsbtError:
        return
    assert psbt.serialize() == data
    for index in range(len(psbt.inputs)):
        with contextlib.suppress(PsbtError):  # unsupported or inconsistent: named
            psbt.taproot_input(index)
            psbt.key_path_sighash(index)


def hashes_or_refuses_typed_data(data: bytes) -> None:
    try:
        digest = load_typed_data(data).digest()
    except TypedDataError:
        return
    oracle = _hash_eip191_message(encode_typed_data(full_message=json.loads(data)))
    assert digest == oracle


@FUZZ
@given(mutated(PSBT_SEEDS))
def test_mutated_psbts_never_crash_the_parser(data: bytes) -> None:
    parses_or_refuses_psbt(data)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_never_crash_the_psbt_parser(data: bytes) -> None:
    parses_or_refuses_psbt(MAGIC + data)


@FUZZ
@given(mutated(TYPED_SEEDS))
def test_mutated_typed_data_hashes_as_eth_account_or_is_refused(data: bytes) -> None:
    hashes_or_refuses_typed_data(data)
