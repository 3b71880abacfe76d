"""Fixed headers of DKLs23 messages: routing checks before any cryptography.

Every message starts with version (1) || kind (1) || session id (32) || sender (1)
|| recipient (1); broadcast messages use recipient 0xff. ``open_message``
checks all of it and the exact body length, and blames the peer the message
came from (the transport authenticates that peer) with ``FaultyParticipantError``.
"""

from __future__ import annotations

from tss.errors import FaultyParticipantError

__all__ = ["VERSION", "BROADCAST", "HEADER_BYTES", "seal", "open_message"]

VERSION = 1
BROADCAST = 0xFF
HEADER_BYTES = 36


def seal(kind: int, sid: bytes, sender: int, recipient: int, body: bytes) -> bytes:
    """Prefix ``body`` with the message header."""
    return bytes([VERSION, kind]) + sid + bytes([sender, recipient]) + body


def open_message(
    msg: object, kind: int, sid: bytes, sender: int, recipient: int, body_len: int
) -> bytes:
    """Check a received message's header and length; return its body.

    Raises:
        FaultyParticipantError: naming ``sender``, for a wrong type, version, kind,
            session (e.g. a replay from another session), sender, recipient or length.
    """
    if not isinstance(msg, bytes | bytearray):
        raise FaultyParticipantError(sender, "message is not bytes")
    msg = bytes(msg)
    if len(msg) != HEADER_BYTES + body_len:
        raise FaultyParticipantError(sender, f"message of kind {kind} has the wrong length")
    if msg[0] != VERSION or msg[1] != kind:
        raise FaultyParticipantError(sender, "unexpected message version or kind")
    if msg[2:34] != sid:
        raise FaultyParticipantError(sender, "message belongs to another session")
    if msg[34] != sender or msg[35] != recipient:
        raise FaultyParticipantError(sender, "message sender or recipient mismatch")
    return msg[HEADER_BYTES:]
