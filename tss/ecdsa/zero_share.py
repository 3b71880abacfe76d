"""Zero-sharing (DKLs23 §3.1, Functionality 3.4 F_Zero, realised with pairwise seeds).

During the setup ceremony every pair {i, j} agrees on a 32-byte seed by
commit-then-reveal: each side commits to a random contribution, then both
reveal, and the seed is their XOR (neither side can bias it after seeing the
other's). In a signing session with session id ``sid`` and signer set S,

    zeta_i = sum_{j in S, j != i} sign(i, j) * RO(seed_{i,j}, sid),

with sign +1 when i < j and -1 otherwise, so sum_{i in S} zeta_i = 0. Signing
adds zeta_i to the Lagrange-weighted key share to re-randomise it (Protocol 3.6).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from tss.curve import N, tagged_hash
from tss.errors import InputError
from tss.tags import DKLS_TAG_ZERO_COMMIT, DKLS_TAG_ZERO_SHARE

__all__ = ["commit", "combine", "zero_share"]


def commit(sid: bytes, owner: int, peer: int, contribution: bytes) -> bytes:
    """32-byte commitment of ``owner``'s seed contribution for the pair with ``peer``.

    The contribution is 32 uniformly random bytes, so the hash hides it without a salt.
    """
    if len(contribution) != 32:
        raise InputError("seed contribution must be 32 bytes")
    return tagged_hash(DKLS_TAG_ZERO_COMMIT, sid + bytes([owner, peer]) + contribution)


def combine(own: bytes, other: bytes) -> bytes:
    """The pair's seed: XOR of both revealed contributions."""
    if len(own) != 32 or len(other) != 32:
        raise InputError("seed contributions must be 32 bytes")
    return bytes(a ^ b for a, b in zip(own, other, strict=True))


def zero_share(index: int, signers: Sequence[int], seeds: Mapping[int, bytes], sid: bytes) -> int:
    """This party's zeta_i; the zeta of all signers of one session sum to zero mod q.

    Arguments:
        index: this party's index.
        signers: the signer set of the session (includes ``index``).
        seeds: the pairwise seed shared with each other signer.
        sid: the signing session id.
    """
    share = 0
    for j in signers:
        if j == index:
            continue
        digest = hashlib.shake_256(tagged_hash(DKLS_TAG_ZERO_SHARE, seeds[j] + sid)).digest(
            48
        )  # 384 bits mod q: bias < 2^-128
        fragment = int.from_bytes(digest, "big") % N
        share += fragment if index < j else -fragment
    return share % N
