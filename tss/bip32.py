"""BIP-32 non-hardened public child derivation (``CKDpub``) for threshold keys.

Only public derivation is possible for a key nobody holds whole. Each step adds
``I_L * G`` to the key, so a path from the threshold key adds the sum of the
``I_L`` as one plain tweak: a signer signs for the child with BIP 445's
``ApplyTweak(tweak, is_xonly=False)`` (``frost`` tweak ``(tweak, False)``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import NamedTuple

from tss.curve import N, Point
from tss.errors import InputError

__all__ = ["HARDENED", "DerivedKey", "ckd_pub", "derive_public"]

HARDENED = 2**31
"""First hardened index; public derivation stops below it."""


class DerivedKey(NamedTuple):
    """A public child key and how to sign for it.

    Attributes:
        public_key: 33-byte compressed child key.
        chain_code: 32-byte child chain code.
        tweak: 32-byte scalar with ``child = parent + tweak*G`` (the sum of every
            step's I_L mod n), the plain tweak for threshold signing.
    """

    public_key: bytes
    chain_code: bytes
    tweak: bytes


def _ckd_pub(parent: Point, chain_code: bytes, index: int) -> tuple[Point, bytes, int]:
    # BIP-32 "Public parent key -> public child key".
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < HARDENED:
        raise InputError("public derivation needs a non-hardened index 0 <= i < 2^31")
    i = hmac.digest(chain_code, parent.to_bytes() + index.to_bytes(4, "big"), hashlib.sha512)
    il = int.from_bytes(i[:32], "big")
    if il >= N:
        raise InputError("invalid child (I_L >= n): BIP-32 says use the next index")
    child = parent + Point.base_mul(il)
    if child.is_infinity:
        raise InputError("invalid child (point at infinity): BIP-32 says use the next index")
    return child, i[32:], il


def _check_parent(public_key: bytes, chain_code: bytes) -> Point:
    if len(chain_code) != 32:
        raise InputError("chain code must be 32 bytes")
    return Point.from_bytes(public_key)


def ckd_pub(public_key: bytes, chain_code: bytes, index: int) -> DerivedKey:
    """``CKDpub((K_par, c_par), i)`` for one non-hardened index.

    Arguments:
        public_key: 33-byte compressed parent key.
        chain_code: 32-byte parent chain code.
        index: 0 <= index < 2^31.

    Returns:
        The child key, chain code and the tweak I_L.

    Raises:
        InputError: hardened or negative index, bad lengths, or an invalid child
            (I_L >= n or infinity, probability < 2^-127).
        InvalidEncodingError: ``public_key`` is not a compressed point.
    """
    return derive_public(public_key, chain_code, [index])


def derive_public(public_key: bytes, chain_code: bytes, path: Sequence[int]) -> DerivedKey:
    """``CKDpub`` along a path of non-hardened indices (``M/a/b/c``).

    Arguments:
        public_key: 33-byte compressed parent key.
        chain_code: 32-byte parent chain code.
        path: the indices, each 0 <= i < 2^31 (empty: the parent itself, tweak 0).

    Returns:
        The final child key and chain code, and the accumulated tweak mod n.

    Raises:
        InputError / InvalidEncodingError: as ``ckd_pub``.
    """
    key = _check_parent(public_key, chain_code)
    tweak = 0
    for index in path:
        key, chain_code, il = _ckd_pub(key, chain_code, index)
        tweak = (tweak + il) % N
    return DerivedKey(key.to_bytes(), chain_code, tweak.to_bytes(32, "big"))
