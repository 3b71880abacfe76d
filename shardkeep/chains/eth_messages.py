"""Ethereum messages that are not transactions: EIP-191 personal messages, EIP-712 typed data.

EIP-191 version 0x45 ("personal_sign")::

    digest = keccak256(0x19 || "Ethereum Signed Message:\\n" || decimal(len(message)) || message)

EIP-712 ("Specification", "eth_signTypedData" JSON as in ``eth_signTypedData_v4``)::

    digest          = keccak256(0x19 || 0x01 || domainSeparator || hashStruct(message))
    domainSeparator = hashStruct(eip712Domain)
    hashStruct(s)   = keccak256(typeHash || encodeData(s))
    typeHash        = keccak256(encodeType(typeOf(s)))
    encodeType      = "Name(type1 name1,...)" then each struct type it references
                      (through arrays too), sorted by name, once
    encodeData      = one 32-byte word per member, in declared order: atomic values
                      padded (uintN, intN two's complement, bool, address left-padded;
                      bytesN right-padded), bytes and string as keccak256 of their
                      contents, structs as their hashStruct, arrays as keccak256 of
                      their elements' words concatenated

The input is what a wallet is asked to sign, so it is read strictly, and
everything that would make two readers disagree on what is signed is refused
with a :class:`TypedDataError` naming where: duplicate JSON keys, floats,
members missing from or added to a struct, undeclared or misspelt types,
values out of their type's range, a mixed-case address whose EIP-55 checksum
is wrong, fixed-size bytes of the wrong length, a domain type that is not the
spec's ``EIP712Domain`` (``name``, ``version``, ``chainId``,
``verifyingContract``, ``salt``, in that order, each optional), a type the
message does not use (a reader inferring the message's type from the one
type nothing refers to would pick another). Without an
``EIP712Domain`` entry its members are those the domain object has (the
common tools' behaviour). A ``primaryType`` of ``EIP712Domain`` (a domain
separator alone) is refused.

Integers are JSON integers, or strings in decimal or ``0x`` hex; ``bytes``,
``bytesN`` and addresses are ``0x`` hex strings; ``bool`` is JSON true/false.
This module imports no project package but ``tss.errors`` and
``shardkeep.chains``: the enclave can compute the same digests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from shardkeep.chains.evm import keccak256
from tss.errors import InputError

__all__ = [
    # Functions
    "personal_message_digest",
    "load_typed_data",
    "parse_typed_data",
    "encode_type",
    # Exceptions
    "TypedDataError",
    # Types
    "Member",
    "TypedData",
]

PERSONAL_PREFIX: Final = b"\x19Ethereum Signed Message:\n"
DOMAIN_TYPE: Final = "EIP712Domain"
# The spec's domain members ("Definition of domainSeparator"), in their order.
DOMAIN_MEMBERS: Final = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
)
MAX_DOCUMENT_BYTES: Final = 1 << 20
MAX_DEPTH: Final = 32  # nesting of structs and arrays in a value
_IDENTIFIER: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_ARRAY_SUFFIX: Final = re.compile(r"\[([1-9][0-9]{0,5})?\]$")
_SIZED: Final = re.compile(r"(u?int|bytes)([0-9]+)")
_DECIMAL: Final = re.compile(r"-?(0|[1-9][0-9]*)")
_HEX: Final = re.compile(r"0x[0-9a-fA-F]*")
_MAX_INTEGER_TEXT: Final = 80  # a 256-bit integer has at most 78 decimal digits and a sign


class TypedDataError(InputError):
    """Typed data that cannot be signed as it is, and where the fault is.

    Attributes:
        where: the path of the fault, e.g. ``message.to[1].wallet`` or ``types.Mail``.
    """

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"EIP-712 {where}: {message}")


def personal_message_digest(message: bytes) -> bytes:
    """The EIP-191 version 0x45 (``personal_sign``) digest of ``message``.

    Arguments:
        message: the message's bytes (a text's UTF-8), any length.

    Returns:
        The 32-byte digest an ECDSA key signs.
    """
    return keccak256(PERSONAL_PREFIX + str(len(message)).encode("ascii") + message)


@dataclass(frozen=True)
class Member:
    """One member of a struct type: its name and its type as written."""

    name: str
    type: str


@dataclass(frozen=True)
class TypedData:
    """Checked EIP-712 typed data.

    Attributes:
        types: every struct type, ``EIP712Domain`` included, by name.
        primary_type: the message's struct type.
        domain: the domain object.
        message: the message object.
    """

    types: Mapping[str, tuple[Member, ...]]
    primary_type: str
    domain: Mapping[str, Any]
    message: Mapping[str, Any]

    def domain_separator(self) -> bytes:
        """``hashStruct(eip712Domain)`` (32 bytes)."""
        return _hash_struct(self.types, DOMAIN_TYPE, self.domain, "domain", 0)

    def message_hash(self) -> bytes:
        """``hashStruct(message)`` (32 bytes)."""
        return _hash_struct(self.types, self.primary_type, self.message, "message", 0)

    def digest(self) -> bytes:
        """The 32-byte digest an ECDSA key signs: ``keccak256(0x1901 || separator || hash)``."""
        return keccak256(b"\x19\x01" + self.domain_separator() + self.message_hash())


### Reading


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise TypedDataError("document", f"the key {key!r} appears twice in one object")
        found[key] = value
    return found


def _no_float(text: str) -> Any:
    raise TypedDataError("document", f"{text} is not an integer (floats are refused)")


def load_typed_data(document: bytes | str) -> TypedData:
    """Read and check typed data from its JSON text (``eth_signTypedData_v4``'s argument).

    Arguments:
        document: the JSON object with ``types``, ``primaryType``, ``domain``
            and ``message``; at most 1 MiB.

    Returns:
        The checked typed data; its values are hashed only by ``digest()``,
        which checks them.

    Raises:
        TypedDataError: not JSON, duplicate keys, floats, or what
            ``parse_typed_data`` refuses.
    """
    if len(document) > MAX_DOCUMENT_BYTES:
        raise TypedDataError("document", f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        loaded = json.loads(
            document,
            object_pairs_hook=_no_duplicates,
            parse_float=_no_float,
            parse_constant=_no_float,
        )
    except (ValueError, RecursionError) as e:
        if isinstance(e, TypedDataError):
            raise
        raise TypedDataError("document", "not valid JSON") from e
    return parse_typed_data(loaded)


def parse_typed_data(document: object) -> TypedData:
    """Check typed data already decoded from JSON (dicts, lists, str, int, bool).

    Returns:
        The typed data, its types checked and its domain type settled; the
        digest checks the values.

    Raises:
        TypedDataError: a missing or extra top-level key, a malformed or
            undeclared type, a bad domain type, or an unusable ``primaryType``.
    """
    if not isinstance(document, dict):
        raise TypedDataError("document", "not a JSON object")
    expected = {"types", "primaryType", "domain", "message"}
    if set(document) != expected:
        missing, extra = expected - set(document), set(document) - expected
        raise TypedDataError(
            "document", f"needs exactly {sorted(expected)} (missing {sorted(missing)}, "
            f"unexpected {sorted(extra)})",
        )  # fmt: skip
    domain, message, primary = document["domain"], document["message"], document["primaryType"]
    if not isinstance(domain, dict):
        raise TypedDataError("domain", "not an object")
    if not isinstance(message, dict):
        raise TypedDataError("message", "not an object")
    types = _parse_types(document["types"])
    if DOMAIN_TYPE not in types:
        known = dict(DOMAIN_MEMBERS)
        unknown = sorted(set(domain) - set(known))
        if unknown:
            raise TypedDataError("domain", f"members {unknown} are no EIP712Domain members")
        types[DOMAIN_TYPE] = tuple(Member(n, t) for n, t in DOMAIN_MEMBERS if n in domain)
    _check_domain_type(types[DOMAIN_TYPE])
    if not isinstance(primary, str) or primary not in types:
        raise TypedDataError("primaryType", f"{primary!r} is not a declared type")
    if primary == DOMAIN_TYPE:
        raise TypedDataError("primaryType", "a domain alone is not signed here")
    used: set[str] = set()
    _dependencies(types, primary, used)
    unused = sorted(set(types) - used - {DOMAIN_TYPE})
    if unused:
        # Readers that infer the message's type from the one type nothing refers
        # to (eth-account does) would hash another struct than primaryType names.
        raise TypedDataError(f"types.{unused[0]}", f"not used by {primary} (unused types)")
    return TypedData(types=types, primary_type=primary, domain=domain, message=message)


def _parse_types(value: object) -> dict[str, tuple[Member, ...]]:
    if not isinstance(value, dict):
        raise TypedDataError("types", "not an object")
    types: dict[str, tuple[Member, ...]] = {}
    for name, members in value.items():
        where = f"types.{name}"
        if not _IDENTIFIER.fullmatch(name) or _is_atomic(name) or name in ("bytes", "string"):
            raise TypedDataError(where, "not a usable struct name")
        if not isinstance(members, list):
            raise TypedDataError(where, "not a list of members")
        parsed = []
        for i, member in enumerate(members):
            if (
                not isinstance(member, dict)
                or set(member) != {"name", "type"}
                or not isinstance(member["name"], str)
                or not isinstance(member["type"], str)
            ):
                raise TypedDataError(f"{where}[{i}]", 'a member is {"name": ..., "type": ...}')
            if not _IDENTIFIER.fullmatch(member["name"]):
                raise TypedDataError(f"{where}[{i}]", f"{member['name']!r} is no member name")
            parsed.append(Member(member["name"], member["type"]))
        names = [m.name for m in parsed]
        if len(set(names)) != len(names):
            raise TypedDataError(where, "a member name appears twice")
        types[name] = tuple(parsed)
    for name, members in types.items():
        for member in members:
            base, _ = _split_array(member.type, f"types.{name}.{member.name}")
            if not (_is_atomic(base) or base in ("bytes", "string") or base in types):
                raise TypedDataError(f"types.{name}.{member.name}", f"undeclared type {base!r}")
    return types


def _check_domain_type(members: tuple[Member, ...]) -> None:
    canonical = [Member(n, t) for n, t in DOMAIN_MEMBERS]
    positions = [canonical.index(m) if m in canonical else -1 for m in members]
    if -1 in positions or positions != sorted(positions):
        raise TypedDataError(
            f"types.{DOMAIN_TYPE}",
            "members must be among name string, version string, chainId uint256, "
            "verifyingContract address, salt bytes32, in that order",
        )


### Types


def _is_atomic(name: str) -> bool:
    if name in ("bool", "address"):
        return True
    sized = _SIZED.fullmatch(name)
    if sized is None or sized.group(2).startswith("0"):
        return False
    size = int(sized.group(2))
    if sized.group(1) == "bytes":
        return 1 <= size <= 32
    return 8 <= size <= 256 and size % 8 == 0


def _split_array(type_: str, where: str) -> tuple[str, list[int | None]]:
    """``T[2][]`` -> ("T", [2, None]); the last dimension is the outermost."""
    dimensions: list[int | None] = []
    rest = type_
    while rest.endswith("]"):
        suffix = _ARRAY_SUFFIX.search(rest)
        if suffix is None:
            raise TypedDataError(where, f"malformed array type {type_!r}")
        dimensions.insert(0, int(suffix.group(1)) if suffix.group(1) else None)
        rest = rest[: suffix.start()]
    if not _IDENTIFIER.fullmatch(rest):
        raise TypedDataError(where, f"malformed type {type_!r}")
    return rest, dimensions


def _dependencies(types: Mapping[str, tuple[Member, ...]], name: str, found: set[str]) -> None:
    if name in found or name not in types:
        return
    found.add(name)
    for member in types[name]:
        base, _ = _split_array(member.type, f"types.{name}.{member.name}")
        _dependencies(types, base, found)


def encode_type(types: Mapping[str, tuple[Member, ...]], name: str) -> str:
    """``encodeType`` of struct ``name``: itself, then its dependencies sorted by name.

    Raises:
        TypedDataError: ``name`` is not a declared struct.
    """
    if name not in types:
        raise TypedDataError(f"types.{name}", "not declared")
    found: set[str] = set()
    _dependencies(types, name, found)
    order = [name, *sorted(found - {name})]
    return "".join(f"{n}({','.join(f'{m.type} {m.name}' for m in types[n])})" for n in order)


### Values


def _hash_struct(
    types: Mapping[str, tuple[Member, ...]], name: str, value: object, where: str, depth: int
) -> bytes:
    if depth > MAX_DEPTH:
        raise TypedDataError(where, f"nested deeper than {MAX_DEPTH}")
    if not isinstance(value, dict):
        raise TypedDataError(where, f"a {name} is an object")
    declared = [m.name for m in types[name]]
    if set(value) != set(declared):
        missing = sorted(set(declared) - set(value))
        extra = sorted(set(value) - set(declared))
        raise TypedDataError(
            where, f"a {name} has exactly {declared} (missing {missing}, unexpected {extra})"
        )
    words = [keccak256(encode_type(types, name).encode("ascii"))]
    words += [
        _word(types, m.type, value[m.name], f"{where}.{m.name}", depth + 1) for m in types[name]
    ]
    return keccak256(b"".join(words))


def _word(
    types: Mapping[str, tuple[Member, ...]], type_: str, value: object, where: str, depth: int
) -> bytes:
    """The 32-byte ``encodeData`` word of one member value."""
    base, dimensions = _split_array(type_, where)
    if dimensions:
        if depth > MAX_DEPTH:
            raise TypedDataError(where, f"nested deeper than {MAX_DEPTH}")
        if not isinstance(value, list):
            raise TypedDataError(where, f"a {type_} is a list")
        length = dimensions[-1]
        if length is not None and len(value) != length:
            raise TypedDataError(where, f"a {type_} has {length} elements, not {len(value)}")
        inner = type_[: type_.rindex("[")]
        return keccak256(
            b"".join(
                _word(types, inner, item, f"{where}[{i}]", depth + 1)
                for i, item in enumerate(value)
            )
        )
    if base in types:
        return _hash_struct(types, base, value, where, depth)
    if base == "string":
        if not isinstance(value, str):
            raise TypedDataError(where, "a string is a JSON string")
        try:
            return keccak256(value.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise TypedDataError(where, "not a valid Unicode string") from e
    if base == "bytes":
        return keccak256(_hex_bytes(value, where))
    return _atomic(base, value, where)


def _hex_bytes(value: object, where: str) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) % 2:
        raise TypedDataError(where, "bytes are a 0x-prefixed hex string of whole bytes")
    return bytes.fromhex(value[2:])


def _integer(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypedDataError(where, "an integer is a JSON integer or a decimal or 0x string")
    if isinstance(value, int):
        return value
    if len(value) > _MAX_INTEGER_TEXT:
        raise TypedDataError(where, "too long for a 256-bit integer")
    if _DECIMAL.fullmatch(value):
        return int(value)
    if _HEX.fullmatch(value) and len(value) > 2:
        return int(value[2:], 16)
    raise TypedDataError(where, f"{value[:80]!r} is no decimal or 0x integer")


def _address(value: object, where: str) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) != 42:
        raise TypedDataError(where, "an address is 0x and 40 hex digits")
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper():
        # EIP-55: a letter is uppercase where the matching nibble of the hash is >= 8.
        digest = keccak256(digits.lower().encode("ascii")).hex()
        expected = "".join(
            c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c
            for i, c in enumerate(digits.lower())
        )
        if digits != expected:
            raise TypedDataError(where, "the address's EIP-55 checksum is wrong")
    return bytes.fromhex(digits)


def _atomic(type_: str, value: object, where: str) -> bytes:
    if type_ == "bool":
        if not isinstance(value, bool):
            raise TypedDataError(where, "a bool is JSON true or false")
        return int(value).to_bytes(32, "big")
    if type_ == "address":
        return _address(value, where).rjust(32, b"\x00")
    sized = _SIZED.fullmatch(type_)
    assert sized is not None  # _parse_types admitted only atomic names here
    kind, size = sized.group(1), int(sized.group(2))
    if kind == "bytes":
        data = _hex_bytes(value, where)
        if len(data) != size:
            raise TypedDataError(where, f"a bytes{size} is {size} bytes, not {len(data)}")
        return data.ljust(32, b"\x00")
    number = _integer(value, where)
    low, high = (0, 1 << size) if kind == "uint" else (-(1 << (size - 1)), 1 << (size - 1))
    if not low <= number < high:
        raise TypedDataError(where, f"out of the range of {type_}")
    return (number % (1 << 256)).to_bytes(32, "big")
