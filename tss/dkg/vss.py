"""Feldman VSS as SimplPedPop uses it (ChillDKG reference ``vss.py``), in the session's group.

A participant's polynomial ``f(Z) = a[0] + a[1] Z + ... + a[t-1] Z^(t-1)`` is
derived from a seed; participant ``i`` (0-based) gets ``f(i + 1)``
(tss.shamir.eval_point); the commitment is ``(a[0] G, ..., a[t-1] G)``.
Commitments may contain the identity (on secp256k1 the point at infinity,
encoded as 33 zero bytes; on edwards25519 its own encoding) so that no
participant can make a sum of valid commitments unencodable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from math import comb
from typing import Any

from tss.curve import Point, scalar_from_bytes, tagged_hash
from tss.dkg.errors import MessageLengthError
from tss.dkg.suite import SECP256K1_DKG, DkgSuite
from tss.errors import InternalError, InvalidEncodingError
from tss.group import SECP256K1, Group
from tss.shamir import eval_point, poly_eval
from tss.tags import BIP341_TAG_TAPTWEAK, DKG_TAG_VSS_COEFFS

__all__ = [
    "generate_coefficients",
    "secshares",
    "VSSCommitment",
    "verify_secshare",
]


def generate_coefficients(seed: bytes, t: int, suite: DkgSuite = SECP256K1_DKG) -> list[int]:
    """The ``t`` coefficients derived from ``seed`` (reference ``VSS.generate``).

    ``a[j] = H_"BIP DKG/vss coeffs"(seed || j)`` with a 4-byte big-endian ``j``,
    as a scalar of the suite (``DkgSuite.coefficient``).
    """
    return [suite.coefficient(DKG_TAG_VSS_COEFFS, seed + j.to_bytes(4, "big")) for j in range(t)]


def secshares(coeffs: Sequence[int], n: int, order: int = SECP256K1.order) -> list[int]:
    """``[f(1), ..., f(n)]``: the share of every participant (never ``f(0)``)."""
    return [poly_eval(coeffs, eval_point(i), order=order) for i in range(n)]


def _times_public(group: Group[Any], point: Any, k: int) -> Any:
    """``k * point`` for a small public ``k`` (no secret in it: timing may depend on it).

    Double-and-add with point additions: cheaper than a constant-time
    multiplication by a full-size scalar for the small integers below.
    """
    if not 0 < k < 256:
        return group.mul(point, k)
    acc = None
    for bit in bin(k)[2:]:
        if acc is not None:
            acc = group.add(acc, acc)
        if bit == "1":
            acc = point if acc is None else group.add(acc, point)
    return acc


def _difference_coefficient(j: int, k: int) -> int:
    """``Δ^k [x^j]`` at ``x = 1``: the k-th forward difference of ``x^j`` (an integer)."""
    return sum((-1) ** (k - m) * comb(k, m) * (1 + m) ** j for m in range(k + 1))


@dataclass(frozen=True)
class VSSCommitment:
    """A VSS commitment ``(C_0, ..., C_{t-1})`` in ``group``; entries may be the identity."""

    points: tuple[Any, ...]
    group: Group[Any] = field(default=SECP256K1, compare=False, repr=False)

    @staticmethod
    def len_bytes(t: int, group: Group[Any] = SECP256K1) -> int:
        return group.element_size * t

    @staticmethod
    def from_bytes(data: bytes, t: int, group: Group[Any] = SECP256K1) -> VSSCommitment:
        """Decode ``t`` points, each a valid element or the identity (``Group.decode_ext``).

        Raises:
            MessageLengthError: not ``element_size * t`` bytes.
            InvalidEncodingError: an entry is not a valid point encoding.
        """
        size = group.element_size
        if len(data) != size * t:
            raise MessageLengthError("VSS commitment has the wrong length")
        return VSSCommitment(
            tuple(group.decode_ext(bytes(data[i : i + size])) for i in range(0, size * t, size)),
            group,
        )

    def to_bytes(self) -> bytes:
        return b"".join(self.group.encode_ext(p) for p in self.points)

    @property
    def t(self) -> int:
        return len(self.points)

    def commitment_to_secret(self) -> Any:
        return self.points[0]

    def commitment_to_nonconst_terms(self) -> tuple[Any, ...]:
        return self.points[1:]

    def pubshare(self, participant: int) -> Any:
        """``sum_j x^j C_j`` with ``x = participant + 1``: what that share times G must be."""
        g = self.group
        x = eval_point(participant)
        terms = [self.points[0]]
        xj = 1
        for c in self.points[1:]:
            xj = xj * x % g.order
            # participant 0 evaluates at x = 1: a plain sum, no multiplication
            terms.append(c if xj == 1 else g.mul(c, xj))
        return g.sum(terms)

    def pubshares(self, n: int) -> list[Any]:
        """``[pubshare(0), ..., pubshare(n - 1)]``, the same values as ``pubshare``.

        Evaluating the committed polynomial at 1, 2, ..., n "in the exponent" by
        forward differences: after the ``t`` differences at ``x = 1`` (which need
        about t^2/2 multiplications by small integers), every further value costs
        ``t - 1`` point additions instead of ``t - 1`` multiplications.
        """
        g = self.group
        t = self.t
        if n <= 1 or t == 1:
            return [self.pubshare(i) for i in range(n)]
        diffs = []
        for k in range(t):
            terms = []
            for j in range(k, t):
                coeff = _difference_coefficient(j, k)  # 0 when j < k
                terms.append(_times_public(g, self.points[j], coeff))
            diffs.append(g.sum(terms))
        out = [diffs[0]]
        for _ in range(n - 1):
            for k in range(t - 1):
                diffs[k] = g.add(diffs[k], diffs[k + 1])
            out.append(diffs[0])
        return out

    def __add__(self, other: VSSCommitment) -> VSSCommitment:
        if self.t != other.t or self.group is not other.group:
            raise InternalError("adding VSS commitments of different lengths or groups")
        g = self.group
        return VSSCommitment(
            tuple(g.add(a, b) for a, b in zip(self.points, other.points, strict=True)), g
        )

    def invalid_taproot_commit(self) -> tuple[VSSCommitment, int, Point]:
        """Tweak the commitment so its key has an unspendable BIP-341 script path.

        Reference ``VSSCommitment.invalid_taproot_commit`` (secp256k1 only):
        ``tweak = H_TapTweak(xonly(C_0))`` commits to an empty script tree, so no
        participant can hide a Taproot script path in the threshold key.

        Returns:
            The tweaked commitment (``C_0 + tweak * G``), ``tweak`` (to add to
            every secret share) and ``tweak * G``.

        Raises:
            InternalError: not secp256k1, ``C_0`` is infinity (callers rule this
                out first), or the tweak is not below n (probability ~2^-128).
        """
        if self.group is not SECP256K1:
            raise InternalError("the Taproot tweak is for secp256k1 commitments")
        c0: Point = self.points[0]
        if c0.is_infinity:
            raise InternalError("commitment to the secret is infinity")
        try:
            tweak = scalar_from_bytes(tagged_hash(BIP341_TAG_TAPTWEAK, c0.xonly()))
        except InvalidEncodingError as e:
            raise InternalError("Taproot tweak out of range") from e
        pubtweak = Point.base_mul(tweak)
        tweaked = VSSCommitment((c0 + pubtweak, *self.points[1:]))
        return tweaked, tweak, pubtweak

    def tweak(self, suite: DkgSuite) -> tuple[VSSCommitment, int, Any]:
        """The suite's tweak of the threshold key: Taproot's, or none (tweak 0)."""
        if suite.taproot_tweak:
            return self.invalid_taproot_commit()
        return self, 0, self.group.identity()


def verify_secshare(secshare: int, pubshare: Any, group: Group[Any] = SECP256K1) -> bool:
    """Feldman's check ``secshare * G == pubshare``."""
    return bool(group.base_mul(secshare) == pubshare)
