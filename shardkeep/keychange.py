"""Key-change certificates and epoch acknowledgments, as the host checks them.

The host imports no ``tss`` (docs/architecture.md, "Components"); this is its one door to
``tss.certificate``, so that the host, the enclave and the parties check the
very same messages. The host's checks are bookkeeping (it commits an epoch only
with a complete certificate, prunes only after every acknowledgment); the
enclave and the parties verify the certificate themselves before they use a
new share.
"""

from __future__ import annotations

from collections.abc import Sequence

from tss.certificate import verify_certificate, verify_epoch_ack
from tss.errors import FaultyParticipantError, InputError

__all__ = ["CertificateError", "check_certificate", "check_ack"]


class CertificateError(ValueError):
    """A certificate or acknowledgment that does not verify (``position``: the seat, if known)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


def check_certificate(
    session_id: bytes, transcript: bytes, host_pubkeys: Sequence[bytes], certificate: bytes
) -> None:
    """Raise ``CertificateError`` unless ``certificate`` completes the key change.

    Arguments:
        session_id, transcript, host_pubkeys: the key change (proto ``KeyChange``).
        certificate: 64-byte signatures, one per seat in order.
    """
    try:
        verify_certificate(host_pubkeys, session_id, transcript, certificate)
    except FaultyParticipantError as e:
        raise CertificateError(
            f"the signature of seat {e.participant} does not verify", e.participant
        ) from e
    except InputError as e:
        raise CertificateError(str(e)) from e


def check_ack(
    host_pubkey: bytes, wallet_id: str, epoch: int, transcript: bytes, position: int, sig: bytes
) -> None:
    """Raise ``CertificateError`` unless ``sig`` is seat ``position``'s ack of ``epoch``."""
    try:
        valid = verify_epoch_ack(host_pubkey, wallet_id, epoch, transcript, position, sig)
    except InputError as e:
        raise CertificateError(str(e), position) from e
    if not valid:
        raise CertificateError(f"the acknowledgment of seat {position} does not verify", position)
