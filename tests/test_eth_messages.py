"""EIP-191 personal messages and EIP-712 typed data (shardkeep.chains.eth_messages).

eth-account is the oracle: the digests must equal its, and a signature of our
digest must recover, in eth-account, to the signing key's address. The EIP-712
specification's own example (Mail) is checked against the values its reference
implementation prints.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_defunct, encode_typed_data

from shardkeep.chains.eth_messages import (
    TypedDataError,
    encode_type,
    load_typed_data,
    parse_typed_data,
    personal_message_digest,
)

KEY = PrivateKey(bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
ADDRESS = Account.from_key(KEY.secret).address

# The EIP-712 specification's example (assets/eip-712/Example.js).
MAIL: dict[str, Any] = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "verifyingContract", "type": "address"},
        ],
        "Person": [
            {"name": "name", "type": "string"},
            {"name": "wallet", "type": "address"},
        ],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": {
        "name": "Ether Mail",
        "version": "1",
        "chainId": 1,
        "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
    },
    "message": {
        "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
        "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
        "contents": "Hello, Bob!",
    },
}

# Nested structs, arrays of structs, arrays of atomic and dynamic types, fixed and
# multi-dimensional arrays, signed integers, bytes, bool and a salted domain.
NESTED: dict[str, Any] = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "salt", "type": "bytes32"},
        ],
        "Person": [
            {"name": "name", "type": "string"},
            {"name": "wallets", "type": "address[]"},
        ],
        "Group": [
            {"name": "name", "type": "string"},
            {"name": "members", "type": "Person[]"},
        ],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person[]"},
            {"name": "contents", "type": "string"},
            {"name": "groups", "type": "Group[2]"},
            {"name": "grid", "type": "int16[2][]"},
            {"name": "tags", "type": "string[]"},
            {"name": "blobs", "type": "bytes[]"},
            {"name": "nonce", "type": "uint64"},
            {"name": "delta", "type": "int256"},
            {"name": "flag", "type": "bool"},
            {"name": "memo", "type": "bytes"},
            {"name": "id", "type": "bytes4"},
        ],
    },
    "primaryType": "Mail",
    "domain": {"name": "Nested", "chainId": "0x89", "salt": "0x" + "ab" * 32},
    "message": {
        "from": {
            "name": "Cow",
            "wallets": [
                "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826",
                "0xDeaDbeefdEAdbeefdEadbEEFdeadbeEFdEaDbeeF",
            ],
        },
        "to": [
            {"name": "Bob", "wallets": ["0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"]},
            {"name": "Alice", "wallets": []},
        ],
        "contents": "Hello, Bob! ✉",
        "groups": [
            {"name": "one", "members": [{"name": "Dan", "wallets": []}]},
            {"name": "none", "members": []},
        ],
        "grid": [[1, -2], [-32768, 32767]],
        "tags": ["a", "", "ünï"],
        "blobs": ["0x", "0x00ff"],
        "nonce": "18446744073709551615",
        "delta": -12345678901234567890,
        "flag": True,
        "memo": "0xdeadbeef",
        "id": "0x01020304",
    },
}


def sign(digest: bytes) -> bytes:
    """r || s || v (v = 27 + recovery id), as personal_sign returns it."""
    recoverable = KEY.sign_recoverable(digest, hasher=None)
    return recoverable[:64] + bytes([27 + recoverable[64]])


### EIP-191


@pytest.mark.parametrize(
    "message",
    [b"", b"hello", "I ♥ shardkeep".encode(), bytes(range(256)), b"\x19" * 1000],
    ids=["empty", "ascii", "utf8", "binary", "long"],
)
def test_personal_message_digest_matches_eth_account(message: bytes) -> None:
    signable = encode_defunct(primitive=message)
    digest = personal_message_digest(message)
    assert digest == _hash_eip191_message(signable)
    assert Account.recover_message(signable, signature=sign(digest)) == ADDRESS


### EIP-712


def test_the_specifications_mail_example() -> None:
    typed = parse_typed_data(MAIL)
    # The values the EIP's reference implementation (Example.js) prints.
    assert encode_type(typed.types, "Mail") == (
        "Mail(Person from,Person to,string contents)Person(string name,address wallet)"
    )
    assert typed.domain_separator().hex() == (
        "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
    )
    assert typed.message_hash().hex() == (
        "c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
    )
    assert typed.digest().hex() == (
        "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    )


@pytest.mark.parametrize("document", [MAIL, NESTED], ids=["mail", "nested"])
def test_typed_data_digest_matches_eth_account(document: dict[str, Any]) -> None:
    typed = load_typed_data(json.dumps(document))
    signable = encode_typed_data(full_message=copy.deepcopy(document))
    assert typed.digest() == _hash_eip191_message(signable)
    assert Account.recover_message(signable, signature=sign(typed.digest())) == ADDRESS


def test_nested_types_encode_their_dependencies_sorted_once() -> None:
    typed = parse_typed_data(NESTED)
    assert encode_type(typed.types, "Mail").startswith(
        "Mail(Person from,Person[] to,string contents,Group[2] groups,int16[2][] grid,"
    )
    assert encode_type(typed.types, "Mail").endswith(
        ")Group(string name,Person[] members)Person(string name,address[] wallets)"
    )


def test_a_domain_without_its_type_takes_the_members_it_has() -> None:
    document = copy.deepcopy(MAIL)
    del document["types"]["EIP712Domain"]
    document["domain"]["salt"] = "0x" + "01" * 32
    typed = parse_typed_data(document)
    assert [m.name for m in typed.types["EIP712Domain"]] == [
        "name", "version", "chainId", "verifyingContract", "salt",
    ]  # fmt: skip
    signable = encode_typed_data(
        domain_data=document["domain"],
        message_types={k: v for k, v in document["types"].items()},
        message_data=document["message"],
    )
    assert typed.digest() == _hash_eip191_message(signable)


def with_change(path: list[str | int], value: Any, base: dict[str, Any] = MAIL) -> dict[str, Any]:
    document = copy.deepcopy(base)
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


_DELETE = object()


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (with_change(["message", "to", "wallet"], _DELETE), "message.to"),
        (with_change(["message", "to", "extra"], "unsigned"), "message.to"),
        (
            with_change(
                ["message", "from", "wallet"], "0xcd2a3d9f938e13cd947ec05abc7fe734df8dD826"
            ),
            "message.from.wallet",
        ),
        (with_change(["message", "from", "wallet"], "0x1234"), "message.from.wallet"),
        (with_change(["domain", "chainId"], -1), "domain.chainId"),
        (with_change(["domain", "chainId"], True), "domain.chainId"),
        (with_change(["domain", "chainId"], "1e3"), "domain.chainId"),
        (with_change(["message", "contents"], 7), "message.contents"),
        (with_change(["types", "Mail", 2, "type"], "strin"), "types.Mail.contents"),
        (with_change(["types", "Mail", 2, "type"], "string[0]"), "types.Mail.contents"),
        (
            with_change(["types", "EIP712Domain", 0], {"name": "chainId", "type": "uint256"}),
            "types.EIP712Domain",
        ),
        (with_change(["types", "EIP712Domain", 0, "type"], "bytes32"), "types.EIP712Domain"),
        (with_change(["domain", "extra"], "x"), "domain"),
        (with_change(["primaryType"], "EIP712Domain"), "primaryType"),
        (with_change(["primaryType"], "Letter"), "primaryType"),
        (with_change(["types", "uint8"], []), "types.uint8"),
        (with_change(["types", "Unused"], []), "types.Unused"),
        (with_change(["primaryType"], "Person"), "types.Mail"),
        (with_change(["extra"], {}), "document"),
        (with_change(["message", "id"], "0x010203", NESTED), "message.id"),
        (with_change(["message", "grid"], [[1, 2, 3]], NESTED), "message.grid[0]"),
        (with_change(["message", "groups"], [], NESTED), "message.groups"),
        (with_change(["message", "nonce"], 1 << 64, NESTED), "message.nonce"),
        (with_change(["message", "grid"], [[1, 1 << 15]], NESTED), "message.grid[0][1]"),
        (with_change(["message", "flag"], 1, NESTED), "message.flag"),
        (with_change(["message", "memo"], "deadbeef", NESTED), "message.memo"),
        (with_change(["message", "delta"], "9" * 100, NESTED), "message.delta"),
    ],
)
def test_ambiguous_or_malformed_typed_data_is_refused_naming_where(
    document: dict[str, Any], where: str
) -> None:
    with pytest.raises(TypedDataError) as caught:
        load_typed_data(json.dumps(document)).digest()
    assert caught.value.where == where, caught.value


@pytest.mark.parametrize(
    "text",
    [
        '{"types": {}, "types": {}, "primaryType": "Mail", "domain": {}, "message": {}}',
        json.dumps(MAIL).replace('"chainId": 1', '"chainId": 1.0'),
        json.dumps(MAIL).replace('"chainId": 1', '"chainId": NaN'),
        "[1, 2",
        "x" * (2 << 20),
    ],
    ids=["duplicate-key", "float", "nan", "truncated", "too-large"],
)
def test_json_that_two_readers_could_read_differently_is_refused(text: str) -> None:
    with pytest.raises(TypedDataError) as caught:
        load_typed_data(text)
    assert caught.value.where == "document"


def test_a_struct_that_contains_itself_hashes_as_deep_as_its_value() -> None:
    document = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}],
            "Node": [{"name": "label", "type": "string"}, {"name": "children", "type": "Node[]"}],
        },
        "primaryType": "Node",
        "domain": {"name": "tree"},
        "message": {"label": "root", "children": [{"label": "leaf", "children": []}]},
    }
    typed = load_typed_data(json.dumps(document))
    assert typed.digest() == _hash_eip191_message(encode_typed_data(full_message=document))
    deep: dict[str, Any] = {"label": "x", "children": []}
    for _ in range(40):
        deep = {"label": "x", "children": [deep]}
    too_deep = dict(document, message=deep)
    with pytest.raises(TypedDataError, match="nested deeper"):
        load_typed_data(json.dumps(too_deep)).digest()
