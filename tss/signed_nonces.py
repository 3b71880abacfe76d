"""Signed FROST round-1 nonces and the echo that shows who equivocated.

BIP 445 has one coordinator hand the same aggregate nonce to every signer.
Here no one is trusted to aggregate: each signer sends its pubnonce to every
other signer point to point and aggregates itself. A signer that shows
different nonces to different peers then gives each honest signer a different
session, and each finds the *other* honest signers' partial signatures invalid
(each is valid only in its signer's own view). Blaming on partial signatures
alone would name honest signers.

So, without changing the FROST arithmetic:

1. Round 1: each signer signs, with its ChillDKG host key (BIP-340, message
   prefixed as CertEq's in the ChillDKG draft BIP), the statement "my nonce
   for this signing is N" (``nonce_context`` binds the session id, threshold
   key, message, signer set and tweaks). A peer whose statement does not
   verify sent it sealed on its own channel: it is blamed.
2. Round 2: each signer echoes the signed nonces it used (its view) together
   with its partial signature. Every view is compared with one's own before
   any partial signature is judged (``judge_views``). Where a view holds
   another nonce for signer k, its signature decides: valid means k signed two
   different nonces for one signing, an equivocation proven by two signatures
   anyone can check against k's host key; invalid means the echoing signer made
   the entry up in a message it sealed. No partial signature is judged against
   a view its signer did not share.

The echo is the signed set itself rather than a hash of it: a hash would show
*that* views differ but not *who* made them differ without a third round. It
costs 130 bytes per signer.

A statement is evidence only within one signing: a session id must never be
reused (the service derives it from the room and the fresh ceremony id).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

from tss.curve import schnorr_sign, schnorr_verify, tagged_hash
from tss.errors import FaultyParticipantError, InputError, ProtocolError
from tss.tags import FROST_SIGNED_NONCE_PREFIX, FROST_TAG_NONCE_CONTEXT

__all__ = [
    "SIGNED_NONCE_BYTES",
    "SignedNonce",
    "NonceEquivocationError",
    "nonce_context",
    "sign_nonce",
    "nonce_signature_valid",
    "parse_signed_nonce",
    "encode_view",
    "parse_view",
    "judge_views",
]

PUBNONCE_BYTES: Final = 66
SIGNATURE_BYTES: Final = 64
SIGNED_NONCE_BYTES: Final = PUBNONCE_BYTES + SIGNATURE_BYTES


class SignedNonce(NamedTuple):
    """A signer's round-1 pubnonce with its host-key signature."""

    pubnonce: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        return self.pubnonce + self.signature


class NonceEquivocationError(ProtocolError):
    """Signers' views of the round-1 nonces differ; the evidence names who caused it.

    Attributes:
        equivocators: signer -> two validly signed, different nonces of this
            signing (the one we hold, the one an echo showed).
        forgers: signers that echoed a nonce with a signature that does not verify.
    """

    def __init__(
        self,
        equivocators: Mapping[int, tuple[SignedNonce, SignedNonce]],
        forgers: Sequence[int],
    ) -> None:
        self.equivocators = dict(equivocators)
        self.forgers = tuple(sorted(set(forgers)))
        parts = []
        if self.equivocators:
            parts.append(f"signed two nonces: {sorted(self.equivocators)}")
        if self.forgers:
            parts.append(f"echoed a nonce signature that does not verify: {list(self.forgers)}")
        super().__init__(
            "signers' round-1 nonces differ (" + "; ".join(parts) + ")",
            [*self.equivocators, *self.forgers],
        )


def _len_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def nonce_context(
    session_id: bytes,
    public_key: bytes,
    msg: bytes,
    signer_ids: Sequence[int],
    tweaks: Sequence[tuple[bytes, bool]],
) -> bytes:
    """The 32-byte hash of what a round-1 nonce is for; every signer computes the same."""
    data = b"".join(
        (
            _len_prefixed(session_id),
            _len_prefixed(public_key),
            _len_prefixed(msg),
            len(signer_ids).to_bytes(4, "big"),
            b"".join(i.to_bytes(4, "big") for i in signer_ids),
            len(tweaks).to_bytes(4, "big"),
            b"".join(t + bytes([x]) for t, x in tweaks),
        )
    )
    return tagged_hash(FROST_TAG_NONCE_CONTEXT, data)


def _statement(context: bytes, signer: int, pubnonce: bytes) -> bytes:
    # As CertEq's messages (ChillDKG draft BIP): a 33-byte zero-padded prefix,
    # then the signer's index, then what is signed.
    return (
        FROST_SIGNED_NONCE_PREFIX.ljust(33, b"\x00")
        + signer.to_bytes(4, "big")
        + (context + pubnonce)
    )


def sign_nonce(
    hostseckey: bytes, context: bytes, signer: int, pubnonce: bytes, aux_rand: bytes
) -> SignedNonce:
    """Sign ``signer``'s round-1 ``pubnonce`` for ``context`` with its host key."""
    if len(pubnonce) != PUBNONCE_BYTES:
        raise InputError("a pubnonce is 66 bytes")
    return SignedNonce(
        pubnonce, schnorr_sign(_statement(context, signer, pubnonce), hostseckey, aux_rand)
    )


def nonce_signature_valid(
    hostpubkey: bytes, context: bytes, signer: int, nonce: SignedNonce
) -> bool:
    """Whether ``nonce`` is signed by ``signer``'s host key for ``context``."""
    # The x-only key suffices: the statement names the signer's index (as CertEq).
    return schnorr_verify(
        _statement(context, signer, nonce.pubnonce), hostpubkey[1:33], nonce.signature
    )


def parse_signed_nonce(data: bytes, sender: int) -> SignedNonce:
    """Decode a round-1 message; a wrong length blames ``sender``, who sealed it."""
    if len(data) != SIGNED_NONCE_BYTES:
        raise FaultyParticipantError(sender, "round-1 message is not a signed nonce")
    return SignedNonce(data[:PUBNONCE_BYTES], data[PUBNONCE_BYTES:])


def encode_view(view: Sequence[SignedNonce]) -> bytes:
    """Every signer's signed nonce, in signer order."""
    return b"".join(n.to_bytes() for n in view)


def parse_view(data: bytes, count: int, sender: int) -> list[SignedNonce]:
    """Decode ``sender``'s echoed view of ``count`` signed nonces (a wrong length blames it)."""
    if len(data) != count * SIGNED_NONCE_BYTES:
        raise FaultyParticipantError(sender, "echoed nonce view has the wrong length")
    step = SIGNED_NONCE_BYTES
    return [
        SignedNonce(data[k : k + PUBNONCE_BYTES], data[k + PUBNONCE_BYTES : k + step])
        for k in range(0, len(data), step)
    ]


def judge_views(
    context: bytes,
    signer_ids: Sequence[int],
    hostpubkeys: Sequence[bytes],
    mine: Sequence[SignedNonce],
    views: Mapping[int, Sequence[SignedNonce]],
) -> None:
    """Check that every echoed view has our nonces; else name who made them differ.

    Arguments:
        context: ``nonce_context`` of this signing.
        signer_ids: the signers, in the order of every view.
        hostpubkeys: every keyring party's 33-byte host public key, by party id.
        mine: our view (each entry's signature already verified in round 1).
        views: signer -> the view it echoed.

    Raises:
        NonceEquivocationError: some view holds another nonce than ours for a
            signer; names that signer when its signature on the other nonce
            verifies, else the signer that echoed it.
    """
    equivocators: dict[int, tuple[SignedNonce, SignedNonce]] = {}
    forgers: list[int] = []
    for echoer, view in views.items():
        for position, signer in enumerate(signer_ids):
            theirs, ours = view[position], mine[position]
            if theirs.pubnonce == ours.pubnonce:
                continue  # the same nonce; its signature is not in question
            if nonce_signature_valid(hostpubkeys[signer], context, signer, theirs):
                equivocators.setdefault(signer, (ours, theirs))
            else:
                forgers.append(echoer)
    if equivocators or forgers:
        raise NonceEquivocationError(equivocators, forgers)
