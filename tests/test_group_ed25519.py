"""edwards25519 through libsodium: a point is refused however it is checked, and checked once.

``Ed25519Group.decode_mul`` lets libsodium's multiplication check a point it
multiplies; it must refuse exactly the encodings ``decode`` (RFC 9591
DeserializeElement) refuses. ``checked_points`` lets a party skip checking a
point again; it must never let an invalid encoding through.
"""

from __future__ import annotations

import secrets

import pytest
from nacl import bindings as sodium

from tss import group
from tss.errors import InvalidEncodingError
from tss.group import ED25519, L, checked_points

P = 2**255 - 19
IDENTITY = b"\x01" + bytes(31)

# The eight points of small order (RFC 8032 section 5.1.3 decodings), each
# with and without the sign bit: all on the curve, none in the prime-order subgroup.
SMALL_ORDER = [
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    )
]


def _valid() -> bytes:
    return ED25519.encode(ED25519.base_mul(secrets.randbelow(L - 1) + 1))


def _invalid() -> list[bytes]:
    non_canonical = [
        (y | sign << 255).to_bytes(32, "little") for y in range(P, 2**255) for sign in (0, 1)
    ]
    torsioned = [sodium.crypto_core_ed25519_add(_valid(), t) for t in SMALL_ORDER if t != IDENTITY]
    return SMALL_ORDER + non_canonical + torsioned


def _corpus() -> list[bytes]:
    random = [secrets.token_bytes(32) for _ in range(300)]  # about half are on the curve
    return _invalid() + random + [_valid() for _ in range(20)]


def _decodes(data: bytes) -> bool:
    try:
        ED25519.decode(data)
    except InvalidEncodingError:
        return False
    return True


def _libsodium_accepts(data: bytes) -> bool:
    return bool(sodium.crypto_core_ed25519_is_valid_point(data))


def test_the_invalid_points_are_invalid() -> None:
    assert not any(_decodes(d) for d in _invalid())


@pytest.mark.parametrize("with_memo", [False, True])
def test_decode_mul_refuses_exactly_what_decode_refuses(with_memo: bool) -> None:
    for data in _corpus():
        ok = _decodes(data)
        k = secrets.randbelow(L - 1) + 1
        memo: set[bytes] = set()
        try:
            if with_memo:  # the point is new to the memo: the multiplication checks it
                with checked_points(memo):
                    product = ED25519.decode_mul(data, k)
            else:
                product = ED25519.decode_mul(data, k)
        except InvalidEncodingError:
            assert not ok, data.hex()
            assert memo == set()
            continue
        assert ok, data.hex()
        assert product == ED25519.mul(ED25519.decode(data), k)
        assert memo == ({data} if with_memo else set())


def test_decode_mul_by_zero_still_checks_the_point() -> None:
    assert ED25519.is_identity(ED25519.decode_mul(_valid(), L))
    for bad in SMALL_ORDER:
        with pytest.raises(InvalidEncodingError):
            ED25519.decode_mul(bad, 0)


def test_the_memo_holds_only_checked_or_made_points(monkeypatch: pytest.MonkeyPatch) -> None:
    memo: set[bytes] = set()
    corpus = _corpus()
    with checked_points(memo):
        for data in corpus:
            _decodes(data)
    assert memo == {d for d in corpus if _libsodium_accepts(d)}

    memo.clear()
    made, received = _valid(), _valid()
    with checked_points(memo):
        ED25519.encode(ED25519.identity())
        ED25519.encode(ED25519.decode(made))
        ED25519.decode(received)
    assert memo == {made, received}

    checks: list[bytes] = []
    real = sodium.crypto_core_ed25519_is_valid_point

    def counted(data: bytes) -> bool:
        checks.append(data)
        return bool(real(data))

    monkeypatch.setattr(group.sodium, "crypto_core_ed25519_is_valid_point", counted)
    with checked_points(memo):
        ED25519.decode(made)
        ED25519.decode(received)
    assert checks == []  # each was checked once already
    ED25519.decode(made)  # outside the block no memo applies
    with checked_points(set()):  # nor does another party's memo
        ED25519.decode(received)
    assert checks == [made, received]
