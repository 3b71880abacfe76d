"""Proofs of possession of a DKG participant's secret (SimplPedPop, CGRS23 Section 4).

A participant proves it knows the discrete logarithm of its commitment to the
secret by a Schnorr signature on its index under that commitment. One scheme
per group (``tss.dkg.suite``):

- secp256k1: BIP-340 with the tags "BIP DKG/pop message/{aux,nonce,challenge}"
  in place of "BIP0340/..." (ChillDKG draft BIP and reference ``simplpedpop.py``).
  libsecp256k1 only implements the standard tags, so the scheme is composed here
  from its point operations (BIP-340 "Default Signing" and "Verification", step
  by step); scalar arithmetic mod n happens on Python ints (see tss.curve on
  side channels).
- edwards25519: an RFC 8032 Ed25519 signature (section 5.1.6) by the secret
  scalar itself (there is no seed) on ``"shardkeep/ed25519 BIP DKG/pop message"
  || index``, with a hedged nonce; any RFC 8032 verifier accepts it. The
  commitment is a point ``tss.group.ED25519.decode`` accepted, so verification
  is the cofactorless equation of section 5.1.7, done by libsodium
  (``crypto_sign_open``, which also refuses a non-canonical ``S`` and a
  small-order ``R``; about twice as fast as OpenSSL's here).

Both return a 64-byte ``Pop``; verification returns False for anything invalid.
"""

from __future__ import annotations

import hashlib
from typing import NewType

from nacl import bindings as sodium
from nacl.exceptions import BadSignatureError

from tss.curve import P_FIELD, N, Point, mul_add_g, tagged_hash
from tss.errors import InternalError
from tss.group import ED25519, EdPoint, L
from tss.rfc9591 import FROST_ED25519
from tss.tags import DKG_ED25519_TAG_PREFIX, DKG_TAG_POP

__all__ = [
    "Pop",
    "bip340_pop_prove",
    "bip340_pop_verify",
    "ed25519_pop_prove",
    "ed25519_pop_verify",
]

Pop = NewType("Pop", bytes)
"""A 64-byte proof of possession."""

_POP_AUX = DKG_TAG_POP + "/aux"
_POP_NONCE = DKG_TAG_POP + "/nonce"
_POP_CHALLENGE = DKG_TAG_POP + "/challenge"


def _pop_msg(participant: int) -> bytes:
    return participant.to_bytes(4, "big")


### secp256k1 (ChillDKG reference)


def bip340_pop_prove(seckey: int, pubkey: Point, participant: int, aux_rand: bytes) -> Pop:
    """Sign the proof of possession of ``seckey`` (``pubkey == seckey * G``).

    Raises:
        InternalError: a zero nonce (negligible) or a failed self-check.
    """
    msg = _pop_msg(participant)
    px = pubkey.xonly()
    d = seckey if pubkey.has_even_y() else N - seckey
    masked = bytes(
        a ^ b for a, b in zip(d.to_bytes(32, "big"), tagged_hash(_POP_AUX, aux_rand), strict=True)
    )
    k0 = int.from_bytes(tagged_hash(_POP_NONCE, masked + px + msg), "big") % N
    if k0 == 0:
        raise InternalError("zero nonce")
    r_point = Point.base_mul(k0)
    k = k0 if r_point.has_even_y() else N - k0
    rx = r_point.xonly()
    e = int.from_bytes(tagged_hash(_POP_CHALLENGE, rx + px + msg), "big") % N
    pop = Pop(rx + ((k + e * d) % N).to_bytes(32, "big"))
    # BIP-340 signers verify their output: a faulty s with a deterministic
    # nonce would leak the key.
    if not bip340_pop_verify(pop, pubkey, participant):
        raise InternalError("proof of possession self-check failed")
    return pop


def bip340_pop_verify(pop: bytes, pubkey: Point, participant: int) -> bool:
    """Check a proof of possession for the commitment to the secret ``pubkey``.

    BIP-340 verifies against ``lift_x(x(pubkey))``, which is ``pubkey`` or
    ``-pubkey``: we use the sign directly instead of recomputing a square root
    (the optimisation the reference's comment suggests).
    """
    if len(pop) != 64 or pubkey.is_infinity:
        return False
    rx, s = pop[:32], int.from_bytes(pop[32:], "big")
    if int.from_bytes(rx, "big") >= P_FIELD or s >= N:
        return False
    msg = _pop_msg(participant)
    e = int.from_bytes(tagged_hash(_POP_CHALLENGE, rx + pubkey.xonly() + msg), "big") % N
    # R = s*G - e*P with P = lift_x(x(pubkey)) = (+/-) pubkey
    minus_e = N - e if pubkey.has_even_y() else e
    r_point = mul_add_g(pubkey, minus_e, s)
    return not r_point.is_infinity and r_point.to_bytes() == b"\x02" + rx


### edwards25519 (RFC 8032 signature)

_ED_POP_MESSAGE = (DKG_ED25519_TAG_PREFIX + DKG_TAG_POP).encode()
_ED_POP_NONCE = DKG_ED25519_TAG_PREFIX + _POP_NONCE


def _ed_pop_msg(participant: int) -> bytes:
    return _ED_POP_MESSAGE + _pop_msg(participant)


def ed25519_pop_prove(seckey: int, pubkey: EdPoint, participant: int, aux_rand: bytes) -> Pop:
    """An RFC 8032 signature by ``seckey`` (``pubkey == seckey * B``) on the index.

    The nonce hashes the secret, the fresh ``aux_rand``, the key and the
    message (hedged, as BIP-340's): it repeats only if all of them do.

    Raises:
        InternalError: a zero nonce (negligible) or a failed self-check.
    """
    a_enc = ED25519.encode(pubkey)
    msg = _ed_pop_msg(participant)
    prefix = hashlib.sha256(_ED_POP_NONCE.encode()).digest()
    nonce_in = prefix + prefix + ED25519.encode_scalar(seckey) + aux_rand + a_enc + msg
    k = int.from_bytes(hashlib.sha512(nonce_in).digest(), "little") % L
    if k == 0:
        raise InternalError("zero nonce")
    r_enc = ED25519.encode(ED25519.base_mul(k))
    # RFC 8032 section 5.1.6 steps 4-5: k = SHA-512(R || A || M) mod L, S = r + k * s.
    e = FROST_ED25519.h2(r_enc + a_enc + msg)
    pop = Pop(r_enc + ED25519.encode_scalar((k + e * seckey) % L))
    if not ed25519_pop_verify(pop, pubkey, participant):
        raise InternalError("proof of possession self-check failed")
    return pop


def ed25519_pop_verify(pop: bytes, pubkey: EdPoint, participant: int) -> bool:
    """RFC 8032 section 5.1.7 verification of a proof of possession (by libsodium).

    ``pubkey`` must come from ``ED25519.decode`` (canonical, prime order, not
    the identity); the identity is refused here too.
    """
    if len(pop) != 64 or ED25519.is_identity(pubkey):
        return False
    try:
        sodium.crypto_sign_open(bytes(pop) + _ed_pop_msg(participant), ED25519.encode(pubkey))
    except BadSignatureError:
        return False
    return True
