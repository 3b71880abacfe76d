"""Base OT: endemic 1-out-of-2 OT of Masny and Rindal (eprint 2019/706, Fig. 8).

DKLs23 (eprint 2023/765, §5 and p. 30) needs kappa = 256 base OTs per ordered
pair of parties as seeds of the OT extension; endemic OT suffices there (MR19
§1: OT extension only needs random seeds, and a corrupt party choosing its own
outputs is harmless). Silence Labs' DKLs23 uses the same Fig. 8 protocol.

One batch of ``n`` OTs, two messages, with H_0, H_1 random oracles onto the group
(try-and-increment, ``_hash_to_curve``) and Diffie-Hellman as key agreement:

1. receiver, choice bit w: t_a <- Z_q, r_{1-w} <- random point,
   r_w = t_a*G - H_w(r_{1-w}); sends (r_0, r_1).
2. sender: m_k = r_k + H_k(r_{1-k}); t_b,k <- Z_q; sends B_k = t_b,k*G;
   output rho_k = H(B_k, t_b,k * m_k) for k = 0, 1.
3. receiver: rho_w = H(B_w, t_a * B_w) (= rho_w of the sender since m_w = t_a*G).

Every hash binds the session id, the OT index and the branch k. Every received
point is decoded with full validation (on the curve, not infinity); an m_k equal
to infinity is rejected, so no output is ever H(infinity). Fresh sender keys per
output, as in Fig. 8 (one key agreement per message).

Not constant time (Python); the receiver evaluates both random oracles, the
second one as a dummy, so its work does not depend on the choice bit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from tss.curve import N, Point, tagged_hash
from tss.errors import InputError, InternalError, InvalidEncodingError
from tss.tags import DKLS_TAG_BASE_OT_H2C, DKLS_TAG_BASE_OT_KEY

__all__ = [
    "POINT_PAIR_BYTES",
    "ReceiverState",
    "receiver_round1",
    "sender_round2",
    "receiver_finish",
]

POINT_PAIR_BYTES = 66
_H2C_PREFIX = hashlib.sha256(DKLS_TAG_BASE_OT_H2C.encode()).digest() * 2


def _hash_to_curve(data: bytes) -> Point:
    """Random oracle onto secp256k1 by try-and-increment (input is public)."""
    for counter in range(256):
        h = hashlib.shake_256(_H2C_PREFIX + data + bytes([counter])).digest(33)
        try:
            return Point.from_bytes(bytes([2 | (h[0] & 1)]) + h[1:])
        except InvalidEncodingError:
            continue
    raise InternalError("hash to curve failed 256 times")  # probability 2^-256


def _ro_point(sid: bytes, index: int, branch: int, other: Point) -> Point:
    """H_branch(r_other) of Fig. 8, bound to the session and OT index."""
    return _hash_to_curve(sid + index.to_bytes(2, "big") + bytes([branch]) + other.to_bytes())


def _key(sid: bytes, index: int, branch: int, b_point: Point, shared: Point) -> bytes:
    msg = sid + index.to_bytes(2, "big") + bytes([branch]) + b_point.to_bytes() + shared.to_bytes()
    return tagged_hash(DKLS_TAG_BASE_OT_KEY, msg)


def _scalars(seed: bytes, sid: bytes, label: bytes, count: int) -> list[int]:
    """``count`` nonzero scalars from a 32-byte secret seed (48 bytes each: bias < 2^-128)."""
    stream = hashlib.shake_256(label + sid + seed).digest(48 * count)
    out = [int.from_bytes(stream[48 * k : 48 * k + 48], "big") % N for k in range(count)]
    if 0 in out:
        raise InternalError("derived scalar is zero")
    return out


def _bits(choices: bytes, count: int) -> list[int]:
    return [(choices[k // 8] >> (k % 8)) & 1 for k in range(count)]


@dataclass(frozen=True)
class ReceiverState:
    """The receiver's secrets between its two steps (choice bits and t_a)."""

    sid: bytes
    choices: bytes = field(repr=False)
    t_a: tuple[int, ...] = field(repr=False)


def receiver_round1(
    sid: bytes, count: int, choices: bytes, rand: bytes
) -> tuple[ReceiverState, bytes]:
    """Receiver's message of ``count`` endemic OTs (MR19 Fig. 8, step 1).

    Arguments:
        sid: session id bound into every hash (any length, fixed per batch).
        count: number of OTs.
        choices: ``ceil(count / 8)`` bytes; bit k (little-endian) is OT k's choice.
        rand: 32 bytes of fresh randomness.

    Returns:
        The state to keep and the message ``r_0 || r_1`` per OT (66 * count bytes).
    """
    if len(rand) != 32 or len(choices) != -(-count // 8):
        raise InputError("rand must be 32 bytes and choices ceil(count/8) bytes")
    bits = _bits(choices, count)
    t_a = _scalars(rand, sid, b"t_a", count)
    others = hashlib.shake_256(b"r_other" + sid + rand).digest(32 * count)
    out = bytearray()
    for k in range(count):
        w = bits[k]
        r_other = _hash_to_curve(b"random" + others[32 * k : 32 * k + 32])
        r_w = Point.base_mul(t_a[k]) - _ro_point(sid, k, w, r_other)
        if r_w.is_infinity:
            raise InternalError("r_w is infinity")  # probability 2^-256
        _ro_point(sid, k, 1 - w, r_w)  # dummy: same work whatever w is
        pair = (r_w, r_other) if w == 0 else (r_other, r_w)
        out += pair[0].to_bytes() + pair[1].to_bytes()
    return ReceiverState(sid, bytes(choices), tuple(t_a)), bytes(out)


def sender_round2(
    sid: bytes, count: int, msg: bytes, rand: bytes
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Sender's answer (MR19 Fig. 8, step 2) and its two 32-byte messages per OT.

    Returns:
        ``[(rho_0, rho_1)] * count`` and the message ``B_0 || B_1`` per OT.

    Raises:
        InvalidEncodingError: wrong length, a point off the curve or at infinity,
            or m_k at infinity. The caller blames the receiver.
    """
    if len(msg) != POINT_PAIR_BYTES * count:
        raise InvalidEncodingError("base OT receiver message has the wrong length")
    if len(rand) != 32:
        raise InputError("rand must be 32 bytes")
    t_b = _scalars(rand, sid, b"t_b", 2 * count)
    keys: list[tuple[bytes, bytes]] = []
    out = bytearray()
    for k in range(count):
        r0 = Point.from_bytes(msg[66 * k : 66 * k + 33])
        r1 = Point.from_bytes(msg[66 * k + 33 : 66 * k + 66])
        m = (r0 + _ro_point(sid, k, 0, r1), r1 + _ro_point(sid, k, 1, r0))
        if m[0].is_infinity or m[1].is_infinity:
            raise InvalidEncodingError("base OT key-agreement point at infinity")
        rho = []
        for branch in (0, 1):
            b_point = Point.base_mul(t_b[2 * k + branch])
            rho.append(_key(sid, k, branch, b_point, m[branch] * t_b[2 * k + branch]))
            out += b_point.to_bytes()
        keys.append((rho[0], rho[1]))
    return keys, bytes(out)


def receiver_finish(state: ReceiverState, count: int, msg: bytes) -> list[bytes]:
    """Receiver's outputs rho_w (MR19 Fig. 8, step 3): one 32-byte message per OT.

    Raises:
        InvalidEncodingError: wrong length or an invalid point (blame the sender).
    """
    if len(msg) != POINT_PAIR_BYTES * count or len(state.t_a) != count:
        raise InvalidEncodingError("base OT sender message has the wrong length")
    bits = _bits(state.choices, count)
    out = []
    for k in range(count):
        b_points = (
            Point.from_bytes(msg[66 * k : 66 * k + 33]),
            Point.from_bytes(msg[66 * k + 33 : 66 * k + 66]),
        )
        w = bits[k]
        out.append(_key(state.sid, k, w, b_points[w], b_points[w] * state.t_a[k]))
    return out
