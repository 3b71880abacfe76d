"""BIP-341 key-path tweak of a threshold key (``taproot_tweak_pubkey``).

A Taproot output key is ``Q = lift_x(P) + t*G`` with
``t = hash_TapTweak(xbytes(P) || merkle_root)`` (BIP-341, "Constructing and spending
Taproot outputs"). For FROST the tweak ``t`` is applied as an x-only tweak
(``is_xonly=True``) in BIP 445, whose ``ApplyTweak`` computes exactly
``with_even_y(P) + t*G``.

BIP-341 recommends committing a key with no script path to an unspendable script
path anyway (its footnote on ``merkle_root = b""``): pass ``merkle_root=None`` to
get the tweak ``hash_TapTweak(xbytes(P))`` of a key-path-only output.
"""

from __future__ import annotations

from typing import NamedTuple

from tss.curve import N, Point, tagged_hash
from tss.errors import InputError
from tss.tags import BIP341_TAG_TAPTWEAK

__all__ = ["TaprootOutput", "taproot_tweak", "taproot_output_key"]


class TaprootOutput(NamedTuple):
    """A tweaked Taproot output key.

    Attributes:
        tweak: the 32-byte tweak t, for ``frost`` as the x-only tweak ``(tweak, True)``.
        output_key: the 32-byte x-only output key Q (the witness program).
        parity: 1 if Q has odd y (the control block's parity bit), else 0.
    """

    tweak: bytes
    output_key: bytes
    parity: int


def taproot_tweak(internal_key: bytes, merkle_root: bytes | None = None) -> bytes:
    """The BIP-341 TapTweak ``t`` of an x-only internal key and optional script tree root.

    Arguments:
        internal_key: 32-byte x-only internal key P (``public_key[1:]`` of a threshold key).
        merkle_root: 32-byte script tree root, or None for a key-path-only output.

    Returns:
        The 32-byte tweak, a scalar < n.

    Raises:
        InputError: wrong lengths, P not on the curve, or t >= n (probability ~2^-128).
    """
    if len(internal_key) != 32:
        raise InputError("internal key must be 32 bytes")
    if merkle_root is not None and len(merkle_root) != 32:
        raise InputError("merkle root must be 32 bytes")
    Point.from_xonly(internal_key)  # BIP-341 taproot_tweak_pubkey fails if lift_x fails
    t = tagged_hash(BIP341_TAG_TAPTWEAK, internal_key + (merkle_root or b""))
    if int.from_bytes(t, "big") >= N:
        raise InputError("TapTweak is not a valid scalar")
    return t


def taproot_output_key(internal_key: bytes, merkle_root: bytes | None = None) -> TaprootOutput:
    """``taproot_tweak_pubkey`` of BIP-341: the tweak, output key and its parity.

    Arguments and errors as ``taproot_tweak``.
    """
    t = taproot_tweak(internal_key, merkle_root)
    q = Point.from_xonly(internal_key) + Point.base_mul(int.from_bytes(t, "big"))
    if q.is_infinity:  # needs t = -dlog(P): negligible
        raise InputError("tweaked key is the point at infinity")
    return TaprootOutput(t, q.xonly(), 0 if q.has_even_y() else 1)
