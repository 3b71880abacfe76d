"""Prime-order groups as a parameter: secp256k1 (libsecp256k1) and edwards25519 (libsodium).

Protocol code that works in any prime-order group (RFC 9591 FROST, Shamir
sharing) takes a ``Group`` and never touches a curve library itself. Scalars
are Python ints mod ``order``; elements are the group's own immutable type.

* ``SECP256K1``: ``tss.curve.Point`` over coincurve, 33-byte compressed
  encodings, 32-byte big-endian scalars.
* ``ED25519``: ``EdPoint`` over PyNaCl's libsodium bindings
  (``crypto_core_ed25519_*``, ``crypto_scalarmult_ed25519_*noclamp``), RFC 8032
  section 5.1.2 encodings, 32-byte little-endian scalars (RFC 9591 section 6.1).
  No field arithmetic is written here: every point operation is a libsodium call.

``decode`` is for received bytes: it refuses anything but a canonical encoding
of a non-identity element of the prime-order group (RFC 9591
``DeserializeElement``) with ``InvalidEncodingError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, Protocol, TypeVar

from nacl import bindings as sodium
from nacl.exceptions import RuntimeError as SodiumRuntimeError

from tss import curve
from tss.errors import InvalidEncodingError

__all__ = [
    "Group",
    "Secp256k1Group",
    "Ed25519Group",
    "EdPoint",
    "SECP256K1",
    "ED25519",
    "L",
    "group_of",
    "checked_points",
]

E = TypeVar("E")


class Group(Protocol, Generic[E]):
    """What generic protocol code needs of a prime-order group with a fixed generator."""

    name: str
    order: int
    element_size: int
    scalar_size: int

    def identity(self) -> E: ...
    def base_mul(self, k: int) -> E: ...
    def mul(self, p: E, k: int) -> E: ...
    def decode_mul(self, data: bytes, k: int) -> E: ...
    def add(self, p: E, q: E) -> E: ...
    def sum(self, points: Iterable[E]) -> E: ...
    def is_identity(self, p: E) -> bool: ...
    def encode(self, p: E) -> bytes: ...
    def decode(self, data: bytes) -> E: ...
    def encode_scalar(self, k: int) -> bytes: ...
    def decode_scalar(self, data: bytes) -> int: ...
    def encode_ext(self, p: E) -> bytes: ...
    def decode_ext(self, data: bytes) -> E: ...


class Secp256k1Group:
    """secp256k1 with ``tss.curve.Point`` (SEC 1 compressed points, big-endian scalars)."""

    name = "secp256k1"
    order = curve.N
    element_size = 33
    scalar_size = 32

    def identity(self) -> curve.Point:
        return curve.INFINITY

    def base_mul(self, k: int) -> curve.Point:
        return curve.Point.base_mul(k)

    def mul(self, p: curve.Point, k: int) -> curve.Point:
        return p * k

    def decode_mul(self, data: bytes, k: int) -> curve.Point:
        """``k * decode(data)``."""
        return self.decode(data) * k

    def add(self, p: curve.Point, q: curve.Point) -> curve.Point:
        return p + q

    def sum(self, points: Iterable[curve.Point]) -> curve.Point:
        return curve.point_sum(points)

    def is_identity(self, p: curve.Point) -> bool:
        return p.is_infinity

    def encode(self, p: curve.Point) -> bytes:
        return p.to_bytes()

    def decode(self, data: bytes) -> curve.Point:
        return curve.Point.from_bytes(data)

    def encode_ext(self, p: curve.Point) -> bytes:
        """As ``encode``, with infinity as 33 zero bytes (BIP 445 ``cbytes_ext``)."""
        return p.to_bytes_ext()

    def decode_ext(self, data: bytes) -> curve.Point:
        """As ``decode``, also accepting infinity (33 zero bytes)."""
        return curve.Point.from_bytes_ext(data)

    def encode_scalar(self, k: int) -> bytes:
        return curve.scalar_to_bytes(k)

    def decode_scalar(self, data: bytes) -> int:
        return curve.scalar_from_bytes(data)


L = 2**252 + 27742317777372353535851937790883648493
"""The order of the edwards25519 prime-order subgroup (RFC 8032 section 5.1)."""

_ED_IDENTITY = b"\x01" + bytes(31)

_NOT_A_POINT = "not a canonical ed25519 point of the prime-order subgroup (or the identity)"

_checked: ContextVar[set[bytes] | None] = ContextVar("checked_ed25519_points", default=None)


@contextmanager
def checked_points(memo: set[bytes]) -> Iterator[None]:
    """Within the block, an edwards25519 point is checked by libsodium once per ``memo``.

    ``Ed25519Group.decode`` accepts an encoding in ``memo`` without asking
    libsodium again (``crypto_core_ed25519_is_valid_point``, about 30 µs), and
    adds every encoding it checks and every ``encode`` of a non-identity
    ``EdPoint`` (each is a subgroup element, being made only from checked
    encodings and libsodium results). So ``memo`` holds only canonical
    encodings of non-identity prime-order elements. One party keeps one memo
    per ceremony (``tss.ceremony``): its own commitments coming back in a
    peer's list, and the points of the key share it builds from its DKG output,
    are not checked again; every point a peer sends still is, once.
    """
    token = _checked.set(memo)
    try:
        yield
    finally:
        _checked.reset(token)


class EdPoint:
    """An element of the edwards25519 prime-order subgroup, kept as its 32-byte encoding.

    Built only by ``Ed25519Group`` (from validated bytes or libsodium results).
    """

    __slots__ = ("_enc",)

    def __init__(self, enc: bytes) -> None:
        self._enc = enc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EdPoint) and self._enc == other._enc

    def __hash__(self) -> int:
        return hash(self._enc)

    def __repr__(self) -> str:
        return f"EdPoint({self._enc.hex()})"


class Ed25519Group:
    """edwards25519 through libsodium (RFC 9591 section 6.1 encodings).

    libsodium's no-clamp scalar multiplications refuse a zero scalar, an
    identity result and identity or small-order inputs; those cases are the
    identity by definition and are answered here without a call.
    """

    name = "ed25519"
    order = L
    element_size = 32
    scalar_size = 32

    def identity(self) -> EdPoint:
        return EdPoint(_ED_IDENTITY)

    def base_mul(self, k: int) -> EdPoint:
        k %= L
        if k == 0:
            return self.identity()
        return EdPoint(sodium.crypto_scalarmult_ed25519_base_noclamp(k.to_bytes(32, "little")))

    def mul(self, p: EdPoint, k: int) -> EdPoint:
        k %= L
        if k == 0 or p._enc == _ED_IDENTITY:
            return self.identity()
        return EdPoint(sodium.crypto_scalarmult_ed25519_noclamp(k.to_bytes(32, "little"), p._enc))

    def decode_mul(self, data: bytes, k: int) -> EdPoint:
        """``k * decode(data)``, the point checked by the multiplication itself.

        ``crypto_scalarmult_ed25519_noclamp`` refuses every encoding ``decode``
        refuses (not canonical, not on the curve, of small order, outside the
        prime-order subgroup) before multiplying, and for a point of order L
        and 0 < k < L the product is never the identity: so it fails exactly
        when ``decode`` would (``tests/test_group_ed25519.py`` holds libsodium
        to that), and a point that is only multiplied is not checked twice.

        Raises:
            InvalidEncodingError: as ``decode``.
        """
        k %= L
        memo = _checked.get()
        if k == 0 or (memo is not None and data in memo):
            return self.mul(self.decode(data), k)
        if not isinstance(data, bytes) or len(data) != 32:
            raise InvalidEncodingError("ed25519 point must be 32 bytes")
        try:
            product = sodium.crypto_scalarmult_ed25519_noclamp(k.to_bytes(32, "little"), data)
        except SodiumRuntimeError as e:
            raise InvalidEncodingError(_NOT_A_POINT) from e
        if memo is not None:
            memo.add(data)
        return EdPoint(product)

    def add(self, p: EdPoint, q: EdPoint) -> EdPoint:
        return EdPoint(sodium.crypto_core_ed25519_add(p._enc, q._enc))

    def sum(self, points: Iterable[EdPoint]) -> EdPoint:
        acc: EdPoint | None = None
        for p in points:
            acc = p if acc is None else self.add(acc, p)
        return self.identity() if acc is None else acc

    def is_identity(self, p: EdPoint) -> bool:
        return p._enc == _ED_IDENTITY

    def encode(self, p: EdPoint) -> bytes:
        memo = _checked.get()
        if memo is not None and p._enc != _ED_IDENTITY:
            memo.add(p._enc)
        return p._enc

    def decode(self, data: bytes) -> EdPoint:
        """RFC 9591 section 6.1 ``DeserializeElement``.

        ``crypto_core_ed25519_is_valid_point`` accepts only canonical encodings
        of points on the curve, in the prime-order subgroup, of large order
        (so never the identity).

        Raises:
            InvalidEncodingError: anything else.
        """
        if not isinstance(data, bytes) or len(data) != 32:
            raise InvalidEncodingError("ed25519 point must be 32 bytes")
        memo = _checked.get()
        if memo is not None and data in memo:
            return EdPoint(data)
        try:
            valid = sodium.crypto_core_ed25519_is_valid_point(data)
        except SodiumRuntimeError as e:  # pragma: no cover - libsodium refuses only bad lengths
            raise InvalidEncodingError("not an ed25519 point") from e
        if not valid:
            raise InvalidEncodingError(_NOT_A_POINT)
        if memo is not None:
            memo.add(data)
        return EdPoint(data)

    def encode_ext(self, p: EdPoint) -> bytes:
        """As ``encode``; the identity has its own canonical encoding."""
        return self.encode(p)

    def decode_ext(self, data: bytes) -> EdPoint:
        """As ``decode``, also accepting the identity (commitments to zero)."""
        return self.identity() if data == _ED_IDENTITY else self.decode(data)

    def encode_scalar(self, k: int) -> bytes:
        return (k % L).to_bytes(32, "little")

    def decode_scalar(self, data: bytes) -> int:
        """RFC 9591 section 6.1 ``DeserializeScalar``: 32 bytes little-endian, < L."""
        if not isinstance(data, bytes) or len(data) != 32:
            raise InvalidEncodingError("ed25519 scalar must be 32 bytes")
        k = int.from_bytes(data, "little")
        if k >= L:
            raise InvalidEncodingError("ed25519 scalar out of range")
        return k


SECP256K1 = Secp256k1Group()
ED25519 = Ed25519Group()


def group_of(scheme: str) -> Group[Any]:
    """The group of a key scheme: edwards25519 for "ed25519", else secp256k1."""
    return ED25519 if scheme == "ed25519" else SECP256K1
