"""The group a ChillDKG session shares its key in: secp256k1, or edwards25519 for Ed25519 keys.

The draft BIP is written for secp256k1, but SimplPedPop (CGRS23, Section 4) and
its encrypted and certified layers work in any prime-order group. Only the
*wallet's* key lives in the chosen group: commitments, proofs of possession,
secret and public shares, the threshold key. The parties' host keys, the ECDH
pads encrypting the shares and the CertEq signatures stay on secp256k1: they
belong to the parties' static identities, whatever scheme the wallet uses.

What the group changes (everything else is the reference protocol unchanged):

- encodings of points and scalars (``tss.group``; every received point is
  decoded there, so an edwards25519 point is canonical, in the prime-order
  subgroup and not the identity);
- hashing to a scalar: secp256k1 keeps the reference's 32-byte hashes (its
  vectors stay byte-exact); edwards25519 reduces a 64-byte hash mod L, as
  RFC 9591 section 6.1 does: 32 bytes mod L (about 2^252) would be far from
  uniform, and a pad drawn that way would leak the share it masks;
- the proof of possession (``tss.dkg.pop``);
- the Taproot tweak of the threshold key: secp256k1 only (an Ed25519 key has
  no script path to rule out);
- domain separation: an edwards25519 session prefixes every tag and replaces
  the CertEq and recovery-acknowledgment prefixes (``tss.tags``), so no
  transcript, certificate or recovery data of one group verifies in the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tss.curve import scalar_from_bytes, tagged_hash
from tss.dkg.pop import (
    Pop,
    bip340_pop_prove,
    bip340_pop_verify,
    ed25519_pop_prove,
    ed25519_pop_verify,
)
from tss.errors import InputError, InternalError, InvalidEncodingError
from tss.group import ED25519, SECP256K1, Group
from tss.tags import (
    DKG_CERTEQ_MSG_PREFIX,
    DKG_ED25519_CERTEQ_MSG_PREFIX,
    DKG_ED25519_RECOVERY_ACK_MSG_PREFIX,
    DKG_ED25519_TAG_PREFIX,
    DKG_RECOVERY_ACK_MSG_PREFIX,
)

__all__ = ["DkgSuite", "SECP256K1_DKG", "ED25519_DKG", "suite_of"]


@dataclass(frozen=True, eq=False)
class DkgSuite:
    """What a ChillDKG session needs of the group its key lives in.

    Attributes:
        group: the key's group (``tss.group``).
        tag_prefix: in front of every tagged hash's tag ("" for secp256k1).
        certeq_prefix: the CertEq signed-message prefix.
        recovery_ack_prefix: the recovery acknowledgment's signed-message prefix.
        taproot_tweak: whether the threshold key gets ChillDKG's Taproot tweak.
        pop_prove: ``(seckey, pubkey, participant, aux_rand) -> Pop``.
        pop_verify: ``(pop, pubkey, participant) -> bool``.
    """

    group: Group[Any]
    tag_prefix: str
    certeq_prefix: bytes
    recovery_ack_prefix: bytes
    taproot_tweak: bool
    pop_prove: Callable[[int, Any, int, bytes], Pop]
    pop_verify: Callable[[bytes, Any, int], bool]

    @property
    def order(self) -> int:
        return self.group.order

    @property
    def point_size(self) -> int:
        return self.group.element_size

    def tag(self, tag: str) -> str:
        """The session's spelling of one of ChillDKG's tags."""
        return self.tag_prefix + tag

    def hash_to_scalar(self, tag: str, data: bytes) -> int:
        """A scalar from a tagged hash of ``data`` under ``self.tag(tag)``.

        secp256k1: the reference's ``scalar_wrapping`` (a 32-byte hash mod n).
        """
        if self.group is SECP256K1:
            return int.from_bytes(tagged_hash(self.tag(tag), data), "big") % self.order
        # BIP-340's tagged-hash construction with SHA-512, read little-endian
        # mod L as RFC 9591 section 6.1 hashes to scalars.
        prefix = hashlib.sha256(self.tag(tag).encode()).digest()
        digest = hashlib.sha512(prefix + prefix + data).digest()
        return int.from_bytes(digest, "little") % self.order

    def coefficient(self, tag: str, data: bytes) -> int:
        """A secret polynomial coefficient (reference ``VSS.generate`` on secp256k1).

        Raises:
            InternalError: secp256k1 only, the hash is not below n (~2^-128).
        """
        if self.group is SECP256K1:
            try:
                return scalar_from_bytes(tagged_hash(self.tag(tag), data))
            except InvalidEncodingError as e:
                raise InternalError("VSS coefficient out of range") from e
        return self.hash_to_scalar(tag, data)


SECP256K1_DKG = DkgSuite(
    group=SECP256K1,
    tag_prefix="",
    certeq_prefix=DKG_CERTEQ_MSG_PREFIX,
    recovery_ack_prefix=DKG_RECOVERY_ACK_MSG_PREFIX,
    taproot_tweak=True,
    pop_prove=bip340_pop_prove,
    pop_verify=bip340_pop_verify,
)
"""ChillDKG as the draft BIP specifies it."""

ED25519_DKG = DkgSuite(
    group=ED25519,
    tag_prefix=DKG_ED25519_TAG_PREFIX,
    certeq_prefix=DKG_ED25519_CERTEQ_MSG_PREFIX,
    recovery_ack_prefix=DKG_ED25519_RECOVERY_ACK_MSG_PREFIX,
    taproot_tweak=False,
    pop_prove=ed25519_pop_prove,
    pop_verify=ed25519_pop_verify,
)
"""ChillDKG sharing an Ed25519 key (RFC 8032 / RFC 9591 encodings)."""


def suite_of(group: Group[Any]) -> DkgSuite:
    """The DKG suite of a ``tss.group`` group.

    Raises:
        InputError: no DKG for that group.
    """
    for suite in (SECP256K1_DKG, ED25519_DKG):
        if suite.group is group:
            return suite
    raise InputError(f"no DKG over {getattr(group, 'name', group)!r}")
