"""Whole Ed25519 keys at the edge of a keyring: import from a seed or a Solana keypair, export.

RFC 8032 section 5.1.5 derives the signing scalar from a 32-byte seed:
``h = SHA-512(seed)``, ``s = clamp(h[0:32])`` (little-endian), ``prefix = h[32:64]``.
A keyring shares ``s mod L`` (the same public key, since the base point has
order L). The seed is one-way input to SHA-512, so no keyring can give it back:
a key born in a DKG never had one, and an imported key's seed is gone once
split. Export therefore gives the **expanded secret** ``s || prefix`` (64
bytes), which signs standard Ed25519 signatures (``sign_expanded``) but which
wallets that want a seed or a Solana ``seed || public key`` keypair cannot
import.

Group arithmetic is libsodium's (``tss.group.ED25519``).
"""

from __future__ import annotations

import hashlib

from tss.errors import InputError
from tss.group import ED25519, L
from tss.tags import ED25519_EXPORT_PREFIX

__all__ = ["scalar_from_seed", "scalar_from_keypair", "expanded_secret", "sign_expanded"]


def _clamp(h: bytes) -> int:
    # RFC 8032 section 5.1.5 step 2.
    a = bytearray(h[:32])
    a[0] &= 248
    a[31] &= 127
    a[31] |= 64
    return int.from_bytes(a, "little")


def scalar_from_seed(seed: bytes) -> int:
    """The secret scalar (mod L) of an RFC 8032 32-byte seed ("private key").

    Raises:
        InputError: not 32 bytes.
    """
    if not isinstance(seed, bytes) or len(seed) != 32:
        raise InputError("an Ed25519 seed is 32 bytes")
    return _clamp(hashlib.sha512(seed).digest()) % L


def scalar_from_keypair(keypair: bytes) -> int:
    """The secret scalar of a 64-byte Solana keypair (seed || public key), checked.

    Raises:
        InputError: not 64 bytes, or the public half is not the seed's key.
    """
    if not isinstance(keypair, bytes) or len(keypair) != 64:
        raise InputError("a Solana keypair is 64 bytes: seed || public key")
    s = scalar_from_seed(keypair[:32])
    if ED25519.encode(ED25519.base_mul(s)) != keypair[32:]:
        raise InputError("the keypair's public key does not belong to its seed")
    return s


def expanded_secret(scalar: int) -> bytes:
    """``s || prefix``: the scalar (32 bytes little-endian) and a nonce prefix.

    The prefix (RFC 8032's second half of the seed hash) only has to be secret
    and fixed per key: it is derived from the scalar, so the export is a
    function of the key alone.
    """
    if not 0 < scalar < L:
        raise InputError("scalar out of range")
    s = scalar.to_bytes(32, "little")
    prefix = hashlib.sha512(ED25519_EXPORT_PREFIX + s).digest()[:32]
    return s + prefix


def sign_expanded(expanded: bytes, msg: bytes) -> bytes:
    """RFC 8032 section 5.1.6 signing with an expanded secret (steps 2-6).

    Raises:
        InputError: not 64 bytes, or a scalar out of range.
    """
    if len(expanded) != 64:
        raise InputError("an expanded Ed25519 secret is 64 bytes")
    s = int.from_bytes(expanded[:32], "little")
    if not 0 < s < L:
        raise InputError("scalar out of range")
    g = ED25519
    public_key = g.encode(g.base_mul(s))
    r = int.from_bytes(hashlib.sha512(expanded[32:] + msg).digest(), "little") % L
    big_r = g.encode(g.base_mul(r))
    k = int.from_bytes(hashlib.sha512(big_r + public_key + msg).digest(), "little") % L
    return big_r + g.encode_scalar(r + k * s)
