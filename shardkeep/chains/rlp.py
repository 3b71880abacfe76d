"""A strict RLP decoder (Ethereum Yellow Paper, Appendix B "Recursive Length Prefix").

Strict means canonical: a single byte below 0x80 is its own encoding, a
long-form length is used only for 56 bytes or more and has no leading zero
byte, and nothing follows the top-level item. Any other input is refused, so
one transaction has exactly one encoding and the enclave signs the bytes it
parsed. Written here rather than taken from the ``rlp`` package, which pulls
``eth-utils`` (and pydantic) into the enclave image; ``rlp`` is the
differential oracle in the tests.
"""

from __future__ import annotations

from typing import TypeAlias

from shardkeep.chains.errors import TransactionParseError

__all__ = ["RlpItem", "decode", "decode_uint"]

RlpItem: TypeAlias = "bytes | list[RlpItem]"

MAX_DEPTH = 16  # transactions nest three levels (access lists); bounds the recursion


def _fail(message: str) -> TransactionParseError:
    return TransactionParseError("rlp", message)


def decode(data: bytes) -> RlpItem:
    """Decode one canonical RLP item that spans all of ``data``.

    Raises:
        TransactionParseError: truncated, non-canonical, too deep, or trailing bytes.
    """
    item, end = _item(data, 0, len(data), 0)
    if end != len(data):
        raise _fail(f"{len(data) - end} trailing bytes after the item")
    return item


def _length(data: bytes, pos: int, size: int, limit: int) -> int:
    if pos + size > limit:
        raise _fail("truncated length")
    if data[pos] == 0:
        raise _fail("length with a leading zero byte")
    n = int.from_bytes(data[pos : pos + size], "big")
    if n < 56:
        raise _fail("long-form length for fewer than 56 bytes")
    return n


def _item(data: bytes, pos: int, limit: int, depth: int) -> tuple[RlpItem, int]:
    # ``limit``: where the enclosing list ends; no item may run past it.
    if pos >= limit:
        raise _fail("truncated item")
    prefix = data[pos]
    if prefix < 0x80:
        return data[pos : pos + 1], pos + 1
    if prefix < 0xC0:
        if prefix <= 0xB7:
            start, n = pos + 1, prefix - 0x80
        else:
            size = prefix - 0xB7
            start, n = pos + 1 + size, _length(data, pos + 1, size, limit)
        end = start + n
        if end > limit:
            raise _fail("truncated string")
        if n == 1 and data[start] < 0x80:
            raise _fail("a single byte below 0x80 encoded as a string")
        return data[start:end], end
    if depth >= MAX_DEPTH:
        raise _fail("lists nest too deeply")
    if prefix <= 0xF7:
        start, n = pos + 1, prefix - 0xC0
    else:
        size = prefix - 0xF7
        start, n = pos + 1 + size, _length(data, pos + 1, size, limit)
    end = start + n
    if end > limit:
        raise _fail("truncated list")
    items: list[RlpItem] = []
    cursor = start
    while cursor < end:
        item, cursor = _item(data, cursor, end, depth + 1)
        items.append(item)
    return items, end


def decode_uint(item: RlpItem, what: str, max_bits: int = 256) -> int:
    """A canonical RLP integer: big-endian, no leading zero byte, zero as the empty string.

    Raises:
        TransactionParseError: a list, a leading zero, or more than ``max_bits`` bits.
    """
    if not isinstance(item, bytes):
        raise TransactionParseError("rlp", f"{what} is a list, not an integer")
    if item[:1] == b"\x00":
        raise TransactionParseError("rlp", f"{what} has a leading zero byte")
    value = int.from_bytes(item, "big")
    if value >> max_bits:
        raise TransactionParseError("rlp", f"{what} exceeds {max_bits} bits")
    return value
