"""tss.curve: encodings are validated and group arithmetic agrees with libsecp256k1."""

from __future__ import annotations

import pytest
from coincurve import PrivateKey

from tss.curve import (
    INFINITY,
    G,
    N,
    Point,
    ecdsa_verify,
    point_sum,
    scalar_from_bytes,
    scalar_to_bytes,
    schnorr_verify,
    tagged_hash,
)
from tss.errors import InvalidEncodingError


def test_group_law() -> None:
    a, b = 0x1234, N - 5
    assert G * a + G * b == Point.base_mul(a + b)
    assert G * a - G * a == INFINITY
    assert -(G * a) + G * (a + 1) == G
    assert point_sum([G * a, G * b, -(G * a)]) == G * b
    assert point_sum([]) == INFINITY
    assert G * N == INFINITY and G * 0 == INFINITY
    assert INFINITY + G == G and G + INFINITY == G
    assert 3 * G == G + G + G


def test_encodings_round_trip() -> None:
    p = G * 7
    assert Point.from_bytes(p.to_bytes()) == p
    assert Point.from_uncompressed(p.to_uncompressed()) == p
    assert Point.from_bytes_ext(INFINITY.to_bytes_ext()) == INFINITY
    even = p if p.has_even_y() else -p
    assert Point.from_xonly(p.xonly()) == even


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(33),  # infinity is not a cpoint
        b"\x04" + bytes(32),  # wrong prefix
        b"\x02" + b"\xff" * 32,  # x >= p
        b"\x02" + (5).to_bytes(32, "big"),  # x^3 + 7 is not a square for x = 5
        bytes.fromhex("02") + bytes(31),  # too short
    ],
    ids=["empty", "zeros", "prefix", "x-too-big", "not-on-curve", "short"],
)
def test_invalid_points_are_rejected(data: bytes) -> None:
    with pytest.raises(InvalidEncodingError):
        Point.from_bytes(data)


def test_infinity_has_no_plain_encoding() -> None:
    with pytest.raises(InvalidEncodingError):
        INFINITY.to_bytes()


def test_scalar_decoding() -> None:
    assert scalar_from_bytes(scalar_to_bytes(N - 1)) == N - 1
    with pytest.raises(InvalidEncodingError):
        scalar_from_bytes(N.to_bytes(32, "big"))
    with pytest.raises(InvalidEncodingError):
        scalar_from_bytes(bytes(32), nonzero=True)
    with pytest.raises(InvalidEncodingError):
        scalar_from_bytes(bytes(31))


def test_tagged_hash_matches_bip340_definition() -> None:
    import hashlib

    tag = hashlib.sha256(b"BIP0340/challenge").digest()
    assert tagged_hash("BIP0340/challenge", b"m") == hashlib.sha256(tag + tag + b"m").digest()


def test_verifiers_accept_valid_and_reject_tampered() -> None:
    sk = PrivateKey(b"\x11" * 32)
    digest = b"\x22" * 32
    sig = sk.sign_schnorr(digest, b"\x00" * 32)
    xonly = sk.public_key.format()[1:]
    assert schnorr_verify(digest, xonly, sig)
    assert not schnorr_verify(digest, xonly, sig[:-1] + bytes([sig[-1] ^ 1]))
    compact = sk.sign_recoverable(digest, hasher=None)[:64]
    pk = sk.public_key.format()
    assert ecdsa_verify(digest, pk, compact)
    assert not ecdsa_verify(b"\x23" * 32, pk, compact)
    high_s = compact[:32] + (N - int.from_bytes(compact[32:], "big")).to_bytes(32, "big")
    assert not ecdsa_verify(digest, pk, high_s), "high-s signatures must be rejected"
