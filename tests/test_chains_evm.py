"""``shardkeep.chains.evm``: EIP-1559 and EIP-155 legacy transactions parsed strictly.

The digests are checked against eth-account (the Ethereum Foundation's
signer), the RLP decoder against the ``rlp`` package; malformed and
ambiguous encodings are refused with a typed error naming the fault.
"""

from __future__ import annotations

import pytest
import rlp  # type: ignore[import-untyped]
from eth_account._utils.legacy_transactions import serializable_unsigned_transaction_from_dict
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.address import to_checksum_address

from client.chains.ethereum import AccessListEntry, Eip1559Transaction
from shardkeep.chains import evm
from shardkeep.chains.errors import TransactionParseError
from shardkeep.chains.rlp import decode, decode_uint
from tests.test_ethereum import TRANSACTIONS, as_dict

TO = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")


@pytest.mark.parametrize("name", sorted(TRANSACTIONS))
def test_eip1559_fields_and_digest_match_eth_account(name: str) -> None:
    tx = TRANSACTIONS[name]
    parsed = evm.parse_transaction(tx.signing_payload())
    assert parsed.digest == bytes(TypedTransaction.from_dict(as_dict(tx)).hash())
    assert (parsed.tx_type, parsed.chain_id, parsed.nonce, parsed.gas) == (
        2, tx.chain_id, tx.nonce, tx.gas,
    )  # fmt: skip
    assert (parsed.max_fee_per_gas, parsed.max_priority_fee_per_gas) == (
        tx.max_fee_per_gas, tx.max_priority_fee_per_gas,
    )  # fmt: skip
    assert (parsed.to, parsed.value, parsed.data) == (tx.to, tx.value, tx.data)
    assert parsed.access_list == tuple((e.address, e.storage_keys) for e in tx.access_list)


LEGACY = {
    "transfer": {"nonce": 7, "gasPrice": 2 * 10**9, "gas": 21_000, "to": TO, "value": 10**18,
                 "data": b"", "chainId": 1},
    "erc20-call": {"nonce": 0, "gasPrice": 1, "gas": 60_000, "to": TO, "value": 0,
                   "data": bytes.fromhex("a9059cbb") + bytes(64), "chainId": 56},
    "create": {"nonce": 2**64 - 1, "gasPrice": 2**256 - 1, "gas": 2**64 - 1, "to": b"",
               "value": 0, "data": b"\x60\x80" * 40, "chainId": 2**63 - 1},
}  # fmt: skip


def legacy_payload(fields: dict[str, object]) -> tuple[bytes, bytes]:
    to = fields["to"]
    as_eth = {**fields, "to": to_checksum_address(to) if to else b""}
    unsigned = serializable_unsigned_transaction_from_dict(as_eth)
    return bytes(rlp.encode(unsigned)), bytes(unsigned.hash())


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_legacy_eip155_fields_and_digest_match_eth_account(name: str) -> None:
    fields = LEGACY[name]
    raw, digest = legacy_payload(fields)
    parsed = evm.parse_transaction(raw)
    assert parsed.digest == digest
    assert parsed.tx_type == 0
    assert parsed.chain_id == fields["chainId"]
    assert parsed.max_fee_per_gas == parsed.max_priority_fee_per_gas == fields["gasPrice"]
    assert parsed.to == (fields["to"] or None)
    assert (parsed.value, parsed.data, parsed.nonce) == (
        fields["value"], fields["data"], fields["nonce"],
    )  # fmt: skip
    data = fields["data"]
    assert isinstance(data, bytes)
    assert parsed.selector == (data[:4] if len(data) >= 4 else b"")


def test_pre_eip155_legacy_transaction_is_refused() -> None:
    raw = rlp.encode([1, 10**9, 21_000, TO, 5, b""])
    with pytest.raises(TransactionParseError, match="pre-EIP-155"):
        evm.parse_transaction(raw)


def test_signed_legacy_transaction_is_refused() -> None:
    raw = rlp.encode([1, 10**9, 21_000, TO, 5, b"", 37, 1, 1])
    with pytest.raises(TransactionParseError, match="must be empty"):
        evm.parse_transaction(raw)


@pytest.mark.parametrize("first", [0x00, 0x01, 0x03, 0x04, 0x7F, 0x80])
def test_other_transaction_types_are_refused(first: int) -> None:
    with pytest.raises(TransactionParseError, match="not supported"):
        evm.parse_transaction(bytes([first]) + bytes(rlp.encode([1] * 9)))


def eip1559(**overrides: object) -> bytes:
    fields: list[object] = [1, 0, 1, 2, 21_000, TO, 0, b"", []]
    names = ["chain", "nonce", "tip", "cap", "gas", "to", "value", "data", "access"]
    for key, value in overrides.items():
        fields[names.index(key)] = value
    return b"\x02" + bytes(rlp.encode(fields))


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        (b"", "empty"),
        (eip1559(chain=0), "chain_id"),
        (eip1559(chain=2**63), "chain_id"),
        (eip1559(nonce=2**64), "exceeds 64 bits"),
        (eip1559(gas=2**64), "exceeds 64 bits"),
        (eip1559(value=2**256), "exceeds 256 bits"),
        (eip1559(to=b"\x01" * 19), "not 20"),
        (eip1559(tip=3, cap=2), "exceeds max_fee_per_gas"),
        (eip1559(data=[b"x"]), "is a list"),
        (eip1559(access=b"x"), "access list is not a list"),
        (eip1559(access=[[TO]]), "access list entry"),
        (eip1559(access=[[TO, [b"\x01" * 31]]]), "storage key"),
        (eip1559(nonce=b"\x00\x01"), "leading zero"),
        (eip1559()[:-1], "truncated"),
        (eip1559() + b"\x00", "trailing"),
        (b"\x02" + bytes(rlp.encode([1] * 8)), "9 fields"),
    ],
)
def test_malformed_eip1559_is_refused_naming_the_fault(raw: bytes, fault: str) -> None:
    with pytest.raises(TransactionParseError, match=fault) as caught:
        evm.parse_transaction(raw)
    assert caught.value.chain in ("evm", "rlp")


def deep_list(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (b"\x81\x05", "single byte below 0x80"),
        (b"\xb8\x05hello", "long-form length for fewer than 56"),
        (b"\xb9\x00\x40" + b"a" * 64, "leading zero byte"),
        (b"\xf8\x01\x01", "long-form length for fewer than 56"),
        (b"\xc2\x01", "truncated"),
        (b"\xc1\x82\x01\x02", "truncated"),
        (b"\xc0" * 2, "trailing"),
        (bytes(rlp.encode(deep_list(17))), "nest too deeply"),
    ],
)
def test_rlp_non_canonical_encodings_are_refused(data: bytes, fault: str) -> None:
    with pytest.raises(TransactionParseError, match=fault):
        decode(data)


def test_rlp_decodes_what_the_rlp_package_encodes() -> None:
    values: list[object] = [
        b"", b"\x00", b"\x7f", b"\x80", b"a" * 55, b"b" * 56, b"c" * 1024,
        [], [[], [[]]], [b"x" * 60] * 3, [b"", [b"\x01", [b"\x02" * 70]]],
    ]  # fmt: skip
    for value in values:
        assert decode(bytes(rlp.encode(value))) == value


def test_decode_uint_is_canonical() -> None:
    assert decode_uint(b"", "x") == 0
    assert decode_uint(b"\x01\x00", "x") == 256
    with pytest.raises(TransactionParseError, match="leading zero"):
        decode_uint(b"\x00", "x")
    with pytest.raises(TransactionParseError, match="is a list"):
        decode_uint([], "x")


def test_client_and_enclave_agree_on_a_transaction() -> None:
    tx = Eip1559Transaction(
        chain_id=10, nonce=3, max_priority_fee_per_gas=5, max_fee_per_gas=9, gas=50_000, to=TO,
        value=1, data=b"\xa9\x05\x9c\xbb", access_list=(AccessListEntry(TO, (bytes(32),)),),
    )  # fmt: skip
    assert evm.parse_transaction(tx.signing_payload()).digest == tx.signing_hash()
