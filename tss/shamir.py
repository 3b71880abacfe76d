"""Shamir secret sharing over Z_q and Feldman commitments over secp256k1.

The scalar functions take the group order (``order``, secp256k1's n unless
given), so Ed25519 keyrings share them (``tss.group``).

Participant ``i`` (0-based, as in ChillDKG and BIP-445) holds the polynomial's
value at the nonzero evaluation point ``i + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tss.curve import N, Point, point_sum
from tss.errors import InputError

__all__ = [
    "eval_point",
    "poly_eval",
    "commit_poly",
    "commitment_eval",
    "lagrange_coefficient",
    "interpolate_at_zero",
]


def eval_point(participant: int) -> int:
    """The Shamir evaluation point of a 0-based participant index."""
    return participant + 1


def poly_eval(coeffs: Sequence[int], x: int, *, order: int = N) -> int:
    """Evaluate ``sum(coeffs[j] * x^j) mod order`` (Horner)."""
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % order
    return acc


def commit_poly(coeffs: Sequence[int]) -> list[Point]:
    """Feldman commitment ``[c_j * G]`` to a polynomial."""
    return [Point.base_mul(c) for c in coeffs]


def commitment_eval(commitment: Sequence[Point], x: int) -> Point:
    """``sum(x^j * C_j)``: the public share a commitment implies at point ``x``."""
    terms = []
    xj = 1
    for c in commitment:
        terms.append(c * xj)
        xj = xj * x % N
    return point_sum(terms)


def lagrange_coefficient(participants: Sequence[int], participant: int, *, order: int = N) -> int:
    """Lagrange coefficient at 0 of ``participant`` among ``participants`` (0-based ids).

    Raises:
        InputError: duplicate ids, or ``participant`` not among them.
    """
    if len(set(participants)) != len(participants):
        raise InputError("participant ids must be distinct")
    if participant not in participants:
        raise InputError("participant is not in the signer set")
    xi = eval_point(participant)
    num, den = 1, 1
    for j in participants:
        if j == participant:
            continue
        xj = eval_point(j)
        num = num * xj % order
        den = den * (xj - xi) % order
    return num * pow(den, -1, order) % order


def interpolate_at_zero(shares: dict[int, int], *, order: int = N) -> int:
    """Recover ``f(0)`` from ``{participant: f(participant + 1)}``."""
    ids = list(shares)
    return sum(lagrange_coefficient(ids, i, order=order) * s for i, s in shares.items()) % order
