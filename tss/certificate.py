"""Transferable certificates of key changes (refresh, reshare, import); what a seat saves first.

A key change ends with a certificate: every seat's BIP-340 signature, made with
its long-term ChillDKG host key, over the ceremony's session id and the
transcript hash every seat agreed on. This is ChillDKG's CertEq (draft BIP
"ChillDKG", "Equality Check Protocol CertEq"): the signed message is a 33-byte
zero-padded prefix, the signer's position and the input (BIP-340 "Domain
separation"), and the certificate is the signatures in position order. A
complete certificate proves to anyone holding the seats' host public keys
that every seat reached the same transcript, so any party holding it may
finish the ceremony later; a party that never sees one must not use its new
share. Certificates hold no secret.

Pending before agreement: a seat must durably store its new share before it
releases its own signature, or a certificate could exist for a share that is
lost (the message that completes the ceremony is the signature; docs/key-changes.md,
ChillDKG's "persist recovery data before sending"). ``PendingKeyChange`` is
what it stores, next to its old share, which it keeps until the new epoch is
committed.

Keygen's certificate is ChillDKG's own CertEq certificate over the DKG
transcript (``eq_input``), not this module's message: ``PendingKeygen`` is what
a keygen party stores before it releases its CertEq signature, and a complete
certificate over the saved transcript lets it finish later, even after a
crash (ChillDKG's recovery).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tss.curve import schnorr_sign, schnorr_verify
from tss.dkg.chilldkg import SessionParams, certeq_verify
from tss.errors import FaultyParticipantError, InputError
from tss.group import group_of
from tss.keyshare import KeyShare
from tss.tags import EPOCH_ACK_MSG_PREFIX, KEYCHANGE_CERTEQ_MSG_PREFIX, PARTY_CLAIM_MSG_PREFIX

__all__ = [
    # Functions
    "certificate_message",
    "sign_certificate",
    "verify_certificate",
    "epoch_ack_message",
    "party_claim_message",
    "sign_epoch_ack",
    "sign_party_claim",
    "verify_epoch_ack",
    "verify_party_claim",
    # Types
    "PendingKeyChange",
    "PendingKeygen",
    "Pending",
    "SIGNATURE_BYTES",
]

SIGNATURE_BYTES = 64


def _prefixed(prefix: bytes, position: int, data: bytes) -> bytes:
    return prefix.ljust(33, b"\x00") + position.to_bytes(4, "big") + data


def certificate_message(session_id: bytes, transcript: bytes, position: int) -> bytes:
    """What the seat at ``position`` signs: the CertEq message over (session id, transcript).

    Raises:
        InputError: a session id or transcript hash that is not 32 bytes, or a bad position.
    """
    if len(session_id) != 32 or len(transcript) != 32:
        raise InputError("session id and transcript hash must be 32 bytes each")
    if not 0 <= position < 2**32:
        raise InputError("position out of range")
    return _prefixed(KEYCHANGE_CERTEQ_MSG_PREFIX, position, session_id + transcript)


def sign_certificate(
    hostseckey: bytes, session_id: bytes, transcript: bytes, position: int, aux_rand: bytes
) -> bytes:
    """This seat's 64-byte certificate signature (BIP-340 with its host key)."""
    return schnorr_sign(certificate_message(session_id, transcript, position), hostseckey, aux_rand)


def verify_certificate(
    hostpubkeys: Sequence[bytes], session_id: bytes, transcript: bytes, certificate: bytes
) -> None:
    """Check a complete certificate: one valid signature per host public key, in order.

    Raises:
        InputError: the certificate is not 64 bytes per seat.
        FaultyParticipantError: the first position whose signature does not verify.
    """
    if len(certificate) != SIGNATURE_BYTES * len(hostpubkeys) or not hostpubkeys:
        raise InputError(f"a certificate is {SIGNATURE_BYTES} bytes per seat")
    for i, hostpubkey in enumerate(hostpubkeys):
        sig = certificate[SIGNATURE_BYTES * i : SIGNATURE_BYTES * (i + 1)]
        # The x-only key suffices: the message binds the position, and the
        # session id (through the plan) every full host public key (as ChillDKG).
        message = certificate_message(session_id, transcript, i)
        if len(hostpubkey) != 33 or not schnorr_verify(message, hostpubkey[1:33], sig):
            raise FaultyParticipantError(i, "certificate signature does not verify")


def epoch_ack_message(wallet_id: str, epoch: int, transcript: bytes, position: int) -> bytes:
    """What a party signs to say it now uses the epoch a key change made (and holds its share)."""
    wallet = wallet_id.encode()
    if not 0 <= epoch < 2**64 or len(transcript) != 32 or len(wallet) > 255:
        raise InputError("bad epoch acknowledgment fields")
    data = bytes([len(wallet)]) + wallet + epoch.to_bytes(8, "big") + transcript
    return _prefixed(EPOCH_ACK_MSG_PREFIX, position, data)


def party_claim_message(wallet_id: str, party: int, device_key: bytes) -> bytes:
    """What a party signs to bind ``device_key`` (32 bytes) to its seat of a wallet.

    A restored device proves with it that it holds the party's host secret key
    (opened from its backup), so a coordinator may let that device act for it.

    Raises:
        InputError: a bad party index, device key or wallet id.
    """
    wallet = wallet_id.encode()
    if not 0 <= party < 2**32 or len(device_key) != 32 or len(wallet) > 255:
        raise InputError("bad party claim fields")
    return _prefixed(PARTY_CLAIM_MSG_PREFIX, party, bytes([len(wallet)]) + wallet + device_key)


def sign_party_claim(
    hostseckey: bytes, wallet_id: str, party: int, device_key: bytes, aux: bytes
) -> bytes:
    """A 64-byte claim of ``party``'s seat for ``device_key``."""
    return schnorr_sign(party_claim_message(wallet_id, party, device_key), hostseckey, aux)


def verify_party_claim(
    hostpubkey: bytes, wallet_id: str, party: int, device_key: bytes, sig: bytes
) -> bool:
    """Whether ``sig`` is that party's claim of its seat for ``device_key``."""
    message = party_claim_message(wallet_id, party, device_key)
    return len(hostpubkey) == 33 and schnorr_verify(message, hostpubkey[1:33], sig)


def sign_epoch_ack(
    hostseckey: bytes, wallet_id: str, epoch: int, transcript: bytes, position: int, aux: bytes
) -> bytes:
    """A 64-byte acknowledgment of ``epoch`` by the seat at ``position``."""
    return schnorr_sign(epoch_ack_message(wallet_id, epoch, transcript, position), hostseckey, aux)


def verify_epoch_ack(
    hostpubkey: bytes, wallet_id: str, epoch: int, transcript: bytes, position: int, sig: bytes
) -> bool:
    """Whether ``sig`` is that seat's acknowledgment of ``epoch``."""
    message = epoch_ack_message(wallet_id, epoch, transcript, position)
    return len(hostpubkey) == 33 and schnorr_verify(message, hostpubkey[1:33], sig)


@dataclass(frozen=True)
class PendingKeyChange:
    """A seat's new share before the key change is certified: save it, then release the signature.

    Attributes:
        share: the new key share (None for a dealer that leaves the keyring).
        public_key: the (unchanged) 33-byte public key.
        epoch: the new epoch.
        session_id: the ceremony's 32-byte session id.
        transcript: the 32-byte transcript hash every seat signs.
        hostpubkeys: every seat's 33-byte host public key, in position order.
        position: this seat's position in the certificate.
    """

    share: KeyShare | None = field(repr=False)
    public_key: bytes
    epoch: int
    session_id: bytes
    transcript: bytes
    hostpubkeys: tuple[bytes, ...]
    position: int

    def verify(self, certificate: bytes) -> None:
        """Check that ``certificate`` completes this key change (see ``verify_certificate``)."""
        verify_certificate(self.hostpubkeys, self.session_id, self.transcript, certificate)


@dataclass(frozen=True)
class PendingKeygen:
    """A keygen party's new share before the DKG is certified: save it, then release CertEq.

    The same fields as ``PendingKeyChange``; the certificate is ChillDKG's
    (draft BIP "ChillDKG", "Equality Check Protocol CertEq") over the DKG
    transcript, which is public (commitments, nonces, encrypted shares) but long.

    Attributes:
        share: the new key share (ecdsa-secp256k1: with no pair setup yet).
        public_key: the new 33-byte public key.
        epoch: 0.
        session_id: the keygen's 32-byte context (``tss.keygen.Keygen.context``).
        transcript: ChillDKG's ``eq_input``, which every party signs.
        hostpubkeys: every party's 33-byte host public key, in party order.
        position: this party's index.
    """

    share: KeyShare = field(repr=False)
    public_key: bytes
    epoch: int
    session_id: bytes
    transcript: bytes = field(repr=False)
    hostpubkeys: tuple[bytes, ...]
    position: int

    def verify(self, certificate: bytes) -> None:
        """Check that ``certificate`` completes this keygen (ChillDKG ``certeq_verify``).

        Raises:
            InputError: not 64 bytes per party.
            FaultyParticipantError: the first party whose signature does not verify.
        """
        share = self.share
        params = SessionParams(self.hostpubkeys, share.threshold, group_of(share.scheme))
        certeq_verify(params, self.transcript, certificate)


Pending = PendingKeyChange | PendingKeygen
"""What a ceremony asks its runner to save before it releases its agreement message."""
