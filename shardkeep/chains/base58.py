"""Base58 with the Bitcoin alphabet: Solana addresses and BIP-32 extended keys.

Written here (a few lines of integer arithmetic) instead of taken from a
package: the enclave renders Solana accounts in base58 for its policies, and
its image carries no dependency it can do without. Tested against ``solders``
and the BIP-32 vectors.
"""

from __future__ import annotations

from typing import Final

__all__ = ["encode", "decode", "Base58Error"]

_ALPHABET: Final = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX: Final = {c: i for i, c in enumerate(_ALPHABET)}


class Base58Error(ValueError):
    """A character outside the base58 alphabet."""


def encode(data: bytes) -> str:
    """One '1' per leading zero byte, then the number in base 58."""
    n = int.from_bytes(data, "big")
    out = bytearray()
    while n:
        n, r = divmod(n, 58)
        out.append(_ALPHABET[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return (b"1" * zeros + bytes(reversed(out))).decode()


def decode(text: str) -> bytes:
    """Inverse of ``encode``.

    Raises:
        Base58Error: a character outside the alphabet.
    """
    raw = text.encode()
    n = 0
    for c in raw:
        if c not in _INDEX:
            raise Base58Error(f"not base58: {chr(c)!r}")
        n = n * 58 + _INDEX[c]
    zeros = len(raw) - len(raw.lstrip(b"1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return bytes(zeros) + body
