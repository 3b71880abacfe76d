"""secp256k1 points and scalars over coincurve (libsecp256k1).

Group operations go through libsecp256k1; Python only
handles scalars mod n and encodings. Every decoder validates its input and
raises ``InvalidEncodingError``; protocol code turns that into blame.

Scalar arithmetic on Python ints is not constant time. Secret scalars are only
ever combined with public values by libsecp256k1, but additions and
multiplications mod n of secret shares happen in Python; this is the residual
side-channel risk documented in README.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache

from coincurve import PublicKey, PublicKeyXOnly
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT
from coincurve.ecdsa import cdata_to_der, deserialize_compact

from tss.errors import InputError, InternalError, InvalidEncodingError

__all__ = [
    "N",
    "P_FIELD",
    "Point",
    "G",
    "INFINITY",
    "point_sum",
    "scalar_from_bytes",
    "scalar_to_bytes",
    "int_from_bytes",
    "tagged_hash",
    "schnorr_verify",
    "ecdsa_verify",
    "schnorr_sign",
    "mul_add_g",
    "ecdh",
]

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""The order of the secp256k1 group."""
P_FIELD = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
"""The field prime of secp256k1."""

_INFINITY_EXT = bytes(33)


class Point:
    """An immutable secp256k1 point, or the point at infinity (``INFINITY``).

    Supports ``P + Q``, ``P - Q``, ``-P``, ``k * P`` (k an int, reduced mod n) and
    equality. Finite points keep their compressed encoding; the libsecp256k1
    object is built lazily.
    """

    __slots__ = ("_compressed", "_pk")

    def __init__(self, compressed: bytes | None, pk: PublicKey | None = None) -> None:
        # Internal: use the from_* constructors, which validate.
        self._compressed = compressed
        self._pk = pk

    # --- constructors -------------------------------------------------------

    @staticmethod
    def from_bytes(data: bytes) -> Point:
        """Decode a 33-byte compressed point (``cpoint`` in BIP-340/445).

        Raises:
            InvalidEncodingError: not 33 bytes, or not a point on the curve.
        """
        if len(data) != 33 or data[0] not in (2, 3):
            raise InvalidEncodingError("point must be 33 bytes, compressed")
        try:
            pk = PublicKey(bytes(data))
        except ValueError as e:
            raise InvalidEncodingError("not a point on secp256k1") from e
        return Point(bytes(data), pk)

    @staticmethod
    def from_bytes_ext(data: bytes) -> Point:
        """Decode ``cpoint_ext``: a compressed point, or 33 zero bytes for infinity."""
        if len(data) == 33 and data == _INFINITY_EXT:
            return INFINITY
        return Point.from_bytes(data)

    @staticmethod
    def from_xonly(data: bytes) -> Point:
        """``lift_x`` of BIP-340: the point with this x and an even y.

        Raises:
            InvalidEncodingError: not 32 bytes, or no such point.
        """
        if len(data) != 32:
            raise InvalidEncodingError("x-only point must be 32 bytes")
        return Point.from_bytes(b"\x02" + data)

    @staticmethod
    def from_uncompressed(data: bytes) -> Point:
        """Decode a 65-byte uncompressed point (0x04 || x || y)."""
        if len(data) != 65 or data[0] != 4:
            raise InvalidEncodingError("point must be 65 bytes, uncompressed")
        try:
            pk = PublicKey(bytes(data))
        except ValueError as e:
            raise InvalidEncodingError("not a point on secp256k1") from e
        return Point(pk.format(compressed=True), pk)

    @staticmethod
    def base_mul(k: int) -> Point:
        """``k * G`` for any int k (reduced mod n)."""
        k %= N
        if k == 0:
            return INFINITY
        pk = PublicKey.from_valid_secret(k.to_bytes(32, "big"))
        return Point(None, pk)

    # --- properties ---------------------------------------------------------

    @property
    def is_infinity(self) -> bool:
        return self._compressed is None and self._pk is None

    def _public_key(self) -> PublicKey:
        if self._pk is None:
            if self._compressed is None:
                raise InvalidEncodingError("the point at infinity has no encoding")
            self._pk = PublicKey(self._compressed)
        return self._pk

    def to_bytes(self) -> bytes:
        """33-byte compressed encoding.

        Raises:
            InvalidEncodingError: for the point at infinity.
        """
        if self._compressed is None:
            self._compressed = self._public_key().format(compressed=True)
        return self._compressed

    def to_bytes_ext(self) -> bytes:
        """``cbytes_ext``: 33 zero bytes for infinity, else the compressed encoding."""
        return _INFINITY_EXT if self.is_infinity else self.to_bytes()

    def to_uncompressed(self) -> bytes:
        """65-byte uncompressed encoding."""
        return self._public_key().format(compressed=False)

    def xonly(self) -> bytes:
        """The 32-byte x coordinate (BIP-340 ``xbytes``)."""
        return self.to_bytes()[1:]

    def has_even_y(self) -> bool:
        return self.to_bytes()[0] == 2

    def x_int(self) -> int:
        return int.from_bytes(self.xonly(), "big")

    # --- arithmetic ---------------------------------------------------------

    def __add__(self, other: Point) -> Point:
        if self.is_infinity:
            return other
        if other.is_infinity:
            return self
        try:
            pk = PublicKey.combine_keys([self._public_key(), other._public_key()])
        except ValueError:  # libsecp256k1 refuses to return infinity
            return INFINITY
        return Point(None, pk)

    def __neg__(self) -> Point:
        if self.is_infinity:
            return self
        c = self.to_bytes()
        return Point(bytes([c[0] ^ 1]) + c[1:])

    def __sub__(self, other: Point) -> Point:
        return self + (-other)

    def __mul__(self, k: int) -> Point:
        k %= N
        if k == 0 or self.is_infinity:
            return INFINITY
        return Point(None, self._public_key().multiply(k.to_bytes(32, "big")))

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Point):
            return NotImplemented
        if self.is_infinity or other.is_infinity:
            return self.is_infinity and other.is_infinity
        return self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes_ext())

    def __repr__(self) -> str:
        return "Point(infinity)" if self.is_infinity else f"Point({self.to_bytes().hex()})"


INFINITY = Point(None, None)
G = Point.from_bytes(
    bytes.fromhex("0279BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798")
)


def point_sum(points: Iterable[Point]) -> Point:
    """The sum of several points in one libsecp256k1 call."""
    finite = [p._public_key() for p in points if not p.is_infinity]
    if not finite:
        return INFINITY
    if len(finite) == 1:
        return Point(None, finite[0])
    try:
        return Point(None, PublicKey.combine_keys(finite))
    except ValueError:
        return INFINITY


def int_from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "big")


def scalar_from_bytes(data: bytes, *, nonzero: bool = False) -> int:
    """Decode a 32-byte big-endian scalar that must be < n (and != 0 if ``nonzero``).

    Raises:
        InvalidEncodingError: wrong length, out of range, or zero when forbidden.
    """
    if len(data) != 32:
        raise InvalidEncodingError("scalar must be 32 bytes")
    k = int.from_bytes(data, "big")
    if k >= N:
        raise InvalidEncodingError("scalar out of range")
    if nonzero and k == 0:
        raise InvalidEncodingError("scalar must be nonzero")
    return k


def scalar_to_bytes(k: int) -> bytes:
    """32-byte big-endian encoding of ``k mod n``."""
    return (k % N).to_bytes(32, "big")


@lru_cache(maxsize=128)
def _tag_prefix(tag: str) -> bytes:
    h = hashlib.sha256(tag.encode()).digest()
    return h + h


def tagged_hash(tag: str, msg: bytes) -> bytes:
    """BIP-340 tagged hash: SHA256(SHA256(tag) || SHA256(tag) || msg)."""
    return hashlib.sha256(_tag_prefix(tag) + msg).digest()


def schnorr_verify(msg: bytes, xonly_pubkey: bytes, sig: bytes) -> bool:
    """Verify a BIP-340 signature with libsecp256k1 (any message length)."""
    if len(xonly_pubkey) != 32 or len(sig) != 64:
        return False
    try:
        return bool(PublicKeyXOnly(xonly_pubkey).verify(sig, msg))
    except ValueError:
        return False


def ecdsa_verify(digest32: bytes, pubkey33: bytes, sig64: bytes) -> bool:
    """Verify a compact (r || s) ECDSA signature over a 32-byte digest, low-s only."""
    if len(digest32) != 32 or len(sig64) != 64:
        return False
    try:
        der = cdata_to_der(deserialize_compact(sig64))
        return bool(PublicKey(pubkey33).verify(der, digest32, hasher=None))
    except (ValueError, TypeError):
        return False


# SECP256K1_SCHNORRSIG_EXTRAPARAMS_MAGIC (include/secp256k1_schnorrsig.h)
_SCHNORRSIG_EXTRAPARAMS_MAGIC = [0xDA, 0x6F, 0xB3, 0x8C]


def schnorr_sign(msg: bytes, seckey: bytes, aux_rand: bytes) -> bytes:
    """BIP-340 signature on a message of any length, made by libsecp256k1.

    coincurve's ``PrivateKey.sign_schnorr`` only signs 32-byte messages; this calls
    ``secp256k1_schnorrsig_sign_custom`` of the same library (BIP-340 allows any
    length) and, like BIP-340's reference signer, verifies the signature before
    returning it.

    Arguments:
        msg: the message, any length.
        seckey: 32-byte secret key, 1 <= key < n.
        aux_rand: 32 bytes of auxiliary randomness (BIP-340 ``a``).

    Returns:
        The 64-byte signature.

    Raises:
        InputError: a wrong length, or a secret key out of range.
        InternalError: libsecp256k1 failed, or the signature does not verify.
    """
    if len(seckey) != 32 or len(aux_rand) != 32:
        raise InputError("secret key and aux_rand must be 32 bytes")
    ctx = GLOBAL_CONTEXT.ctx
    keypair = ffi.new("secp256k1_keypair *")
    if not lib.secp256k1_keypair_create(ctx, keypair, bytes(seckey)):
        raise InputError("secret key out of range")
    extra = ffi.new("secp256k1_schnorrsig_extraparams *")
    extra.magic = _SCHNORRSIG_EXTRAPARAMS_MAGIC
    aux = ffi.new("unsigned char[32]", bytes(aux_rand))
    extra.ndata = aux
    sig = ffi.new("unsigned char[64]")
    msg = bytes(msg)
    if not lib.secp256k1_schnorrsig_sign_custom(ctx, sig, msg, len(msg), keypair, extra):
        raise InternalError("BIP-340 signing failed")
    xonly = ffi.new("secp256k1_xonly_pubkey *")
    if not lib.secp256k1_keypair_xonly_pub(ctx, xonly, ffi.NULL, keypair):
        raise InternalError("BIP-340 signing failed")
    if not lib.secp256k1_schnorrsig_verify(ctx, sig, msg, len(msg), xonly):
        raise InternalError("BIP-340 signature self-check failed")
    return bytes(ffi.buffer(sig, 64))


def mul_add_g(point: Point, a: int, b: int) -> Point:
    """``a * point + b * G`` in one libsecp256k1 double multiplication.

    Variable time: for public inputs only (signature and commitment checks).

    libsecp256k1 exposes its Strauss double multiplication ``ecmult`` only through
    verification functions; ECDSA public-key recovery (SEC 1 v2, section 4.1.6)
    returns ``Q = r^-1 * (s * R - z * G)`` where ``R`` is the point with
    x-coordinate ``r`` (+ n if bit 1 of recid) and y parity bit 0 of recid. Taking
    ``R = point``, ``s = a * r`` and ``z = -b * r`` gives ``Q = a * point + b * G``,
    about twice as fast as a multiplication and a separate base multiplication.
    """
    a %= N
    b %= N
    if point.is_infinity or a == 0:
        return Point.base_mul(b)
    c = point.to_bytes()
    r = int.from_bytes(c[1:], "big")
    recid = c[0] & 1
    if r >= N:  # x in [n, p): recovery adds n back to r (recid bit 1)
        r -= N
        recid |= 2
    if r == 0:  # x == n: no ECDSA r encodes it; negligible, use the slow path
        return point * a + Point.base_mul(b)
    s = a * r % N  # nonzero: a and r are nonzero mod the prime n
    z = -b * r % N
    ctx = GLOBAL_CONTEXT.ctx
    sig = ffi.new("secp256k1_ecdsa_recoverable_signature *")
    compact = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if not lib.secp256k1_ecdsa_recoverable_signature_parse_compact(ctx, sig, compact, recid):
        raise InternalError("recoverable signature encoding rejected")
    out = ffi.new("secp256k1_pubkey *")
    if not lib.secp256k1_ecdsa_recover(ctx, out, sig, z.to_bytes(32, "big")):
        # R lifts (it is ``point``) and r, s are nonzero, so the only failure
        # left is a result at infinity.
        return INFINITY
    return Point(None, PublicKey(out))


def ecdh(seckey: bytes, point: Point) -> bytes:
    """libsecp256k1 ECDH: SHA256 of the compressed point ``seckey * point`` (constant time).

    The same value as coincurve's ``PrivateKey.ecdh`` without building a
    ``PrivateKey`` (which derives two public keys) or re-decoding ``point``.

    Arguments:
        seckey: 32-byte secret key, 1 <= key < n.
        point: a finite point (decode received bytes with ``Point.from_bytes``).

    Raises:
        InputError: ``seckey`` is not a valid secret key, or ``point`` is infinity.
    """
    if len(seckey) != 32:
        raise InputError("secret key must be 32 bytes")
    if point.is_infinity:
        raise InputError("ECDH with the point at infinity")
    out = ffi.new("unsigned char[32]")
    pk = point._public_key().public_key
    if not lib.secp256k1_ecdh(GLOBAL_CONTEXT.ctx, out, pk, bytes(seckey), ffi.NULL, ffi.NULL):
        raise InputError("secret key out of range")
    return bytes(ffi.buffer(out, 32))
