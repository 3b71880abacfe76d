"""EIP-1559 transactions (client.chains.ethereum) against eth-account, the independent oracle.

eth-account (a dev dependency) builds the same transactions from dicts: the
signing hash must match its ``TypedTransaction.hash()``, and a signature made
with a plain private key must give byte for byte the raw transaction
``Account.sign_transaction`` gives (both use RFC 6979 nonces), which
``Account.recover_transaction`` maps back to the key's address. The wallet
(threshold) path runs against the real stack in tests/test_sdk_e2e.py.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_keys.datatypes import PrivateKey as EthPrivateKey
from eth_utils.address import to_checksum_address

from client.chains.ethereum import (
    AccessListEntry,
    Eip1559Transaction,
    address_of,
    attach_signature,
    checksum_address,
    keccak256,
)
from tss.curve import N
from tss.errors import InputError
from tss.signing import RecoverableSignature

TO = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
KEY = PrivateKey(bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))

TRANSACTIONS = {
    "transfer": Eip1559Transaction(
        chain_id=1, nonce=0, max_priority_fee_per_gas=10**9, max_fee_per_gas=30 * 10**9,
        gas=21_000, to=TO, value=10**18,
    ),
    "call-with-access-list": Eip1559Transaction(
        chain_id=11155111, nonce=42, max_priority_fee_per_gas=2, max_fee_per_gas=2, gas=90_000,
        to=TO, value=0, data=bytes.fromhex("a9059cbb") + b"\x00" * 64,
        access_list=(
            AccessListEntry(TO, (b"\x00" * 32, b"\x01" * 32)),
            AccessListEntry(b"\xde" * 20),
        ),
    ),
    "create": Eip1559Transaction(
        chain_id=137, nonce=2**64 - 1, max_priority_fee_per_gas=0, max_fee_per_gas=2**255,
        gas=2**64 - 1, to=None, value=2**256 - 1, data=b"\x60\x80" * 300,
    ),
}  # fmt: skip


def as_dict(tx: Eip1559Transaction) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": tx.chain_id,
        "nonce": tx.nonce,
        "maxPriorityFeePerGas": tx.max_priority_fee_per_gas,
        "maxFeePerGas": tx.max_fee_per_gas,
        "gas": tx.gas,
        "to": to_checksum_address(tx.to) if tx.to is not None else b"",
        "value": tx.value,
        "data": tx.data,
        "accessList": [
            {
                "address": to_checksum_address(e.address),
                "storageKeys": ["0x" + k.hex() for k in e.storage_keys],
            }
            for e in tx.access_list
        ],
    }


def local_signature(key: PrivateKey, digest: bytes) -> RecoverableSignature:
    sig65 = key.sign_recoverable(digest, hasher=None)  # libsecp256k1: low s, RFC 6979
    return RecoverableSignature(sig65[:64], sig65[64])


@pytest.mark.parametrize("name", sorted(TRANSACTIONS))
def test_signing_hash_matches_eth_account(name: str) -> None:
    tx = TRANSACTIONS[name]
    assert tx.signing_hash() == bytes(TypedTransaction.from_dict(as_dict(tx)).hash())
    assert tx.signing_payload()[0] == 0x02


@pytest.mark.parametrize("name", sorted(TRANSACTIONS))
def test_raw_transaction_matches_eth_account(name: str) -> None:
    tx = TRANSACTIONS[name]
    account = Account.from_key(KEY.secret)
    signed = attach_signature(tx, local_signature(KEY, tx.signing_hash()), KEY.public_key.format())
    expected = account.sign_transaction(as_dict(tx))
    assert signed.raw == bytes(expected.raw_transaction)
    assert signed.hash == bytes(expected.hash)
    assert (signed.y_parity, signed.r, signed.s) == (expected.v, expected.r, expected.s)
    assert signed.sender_address == account.address
    assert Account.recover_transaction(signed.raw) == account.address


def test_addresses_match_eth_keys_and_eip55() -> None:
    for _ in range(20):
        key = PrivateKey(secrets.token_bytes(32))
        expected = EthPrivateKey(key.secret).public_key.to_checksum_address()
        for encoding in (key.public_key.format(), key.public_key.format(compressed=False)):
            assert checksum_address(address_of(encoding)) == expected
    # EIP-55's own examples.
    for spelled in (
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ):
        assert checksum_address(bytes.fromhex(spelled[2:])) == spelled
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )


def test_attach_signature_refuses_what_a_type2_transaction_cannot_carry() -> None:
    tx = TRANSACTIONS["transfer"]
    good = local_signature(KEY, tx.signing_hash())
    r, s = good.signature[:32], int.from_bytes(good.signature[32:], "big")
    public_key = KEY.public_key.format()
    high_s = RecoverableSignature(r + (N - s).to_bytes(32, "big"), good.recovery_id ^ 1)
    with pytest.raises(InputError, match="EIP-2"):
        attach_signature(tx, high_s, public_key)
    with pytest.raises(InputError, match=r"R\.x >= n"):
        attach_signature(tx, RecoverableSignature(good.signature, good.recovery_id | 2), public_key)
    with pytest.raises(InputError, match="not by this key"):
        attach_signature(tx, good, PrivateKey(b"\x02" * 32).public_key.format())
    with pytest.raises(InputError, match="not by this key"):
        attach_signature(TRANSACTIONS["create"], good, public_key)  # another transaction
    with pytest.raises(InputError):
        attach_signature(tx, RecoverableSignature(b"\x00" * 64, 0), public_key)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("chain_id", 0, "chain_id"),
        ("nonce", 2**64, "nonce"),
        ("gas", -1, "gas"),
        ("value", 2**256, "value"),
        ("max_priority_fee_per_gas", 31 * 10**9, "exceeds"),
        ("to", b"\x01" * 19, "20-byte"),
        ("access_list", (AccessListEntry(TO, (b"\x00" * 32,)),), None),
    ],
    ids=[
        "chain-zero",
        "nonce-2^64",
        "negative-gas",
        "value-2^256",
        "tip-over-cap",
        "short-to",
        "valid-access-list",
    ],
)
def test_transaction_fields_are_checked(field: str, value: object, problem: str | None) -> None:
    base = TRANSACTIONS["transfer"]
    fields = {**base.__dict__, field: value}
    if problem is None:
        Eip1559Transaction(**fields)
        return
    with pytest.raises(InputError, match=problem):
        Eip1559Transaction(**fields)


def test_access_list_entries_are_checked() -> None:
    with pytest.raises(InputError):
        AccessListEntry(b"\x01" * 21)
    with pytest.raises(InputError):
        AccessListEntry(TO, (b"\x00" * 31,))
