"""The relay's errors and their one translation table to gRPC status codes.

The relay is transport-only (tests/test_import_rules.py forbids it to import
``tss``), so it has its own root, ``RelayError``. Backends and room logic raise
these; the service maps them once, at the boundary, through ``STATUS_CODES``
(httpx ``map_exceptions``). The client maps a status back
to the same classes with ``error_from_status``; the exact class name travels in
the ``ERROR_METADATA_KEY`` trailing metadata, because one code covers several
classes (closed vs. expired). Messages never carry tokens or payloads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import grpc

__all__ = [
    # Functions
    "status_code_for",
    "error_from_status",
    # Exceptions
    "RelayError",
    "RoomNotFoundError",
    "RoomExistsError",
    "PermissionDeniedError",
    "SenderSpoofedError",
    "RoomUnavailableError",
    "RoomClosedError",
    "RoomExpiredError",
    "LimitExceededError",
    "QuotaExceededError",
    "UnauthenticatedError",
    "MalformedRequestError",
    "SequenceError",
    "DeadlineExceededError",
    "HandshakeTimeoutError",
    "BackendUnavailableError",
    # Tables
    "STATUS_CODES",
    "ERROR_METADATA_KEY",
]


class RelayError(Exception):
    """Root of the relay's errors."""


class RoomNotFoundError(RelayError):
    """No room with this id (never created, or expired and collected)."""


class RoomExistsError(RelayError):
    """CreateRoom named a room id that is in use."""


class PermissionDeniedError(RelayError):
    """Bad token, or a party that is not a participant of the room."""


class SenderSpoofedError(PermissionDeniedError):
    """An envelope names a sender other than the stream's authenticated party."""


class RoomUnavailableError(RelayError):
    """The room exists but accepts no more joins or envelopes."""


class RoomClosedError(RoomUnavailableError):
    """The room was closed by its creator."""


class RoomExpiredError(RoomUnavailableError):
    """The room's TTL has passed."""


class LimitExceededError(RelayError):
    """A size or count limit of the room or the relay would be exceeded."""


class QuotaExceededError(LimitExceededError):
    """A new room would pass the relay's global budget or its coordinator's
    quota (rooms or reserved bytes); the message names which."""


class UnauthenticatedError(RelayError):
    """CreateRoom without a valid coordinator credential."""


class MalformedRequestError(RelayError):
    """A request field is missing, too long or not allowed."""


class SequenceError(RelayError):
    """An envelope's per-sender seq is not the next one (a gap or a duplicate)."""


class DeadlineExceededError(RelayError):
    """A deadline passed: a Session channel's own."""


class HandshakeTimeoutError(DeadlineExceededError):
    """A Join stream sent no JoinHello in time."""


class BackendUnavailableError(RelayError):
    """The relay, or its storage backend (e.g. Redis), cannot be reached."""


# The boundary table. Subclasses not listed take their listed base's code.
# ABORTED for sequence errors follows the gRPC status-code guide ("a sequencer
# check failure"); the client may rejoin and resume from JoinAccepted.next_seq.
STATUS_CODES: Final[Mapping[type[RelayError], grpc.StatusCode]] = {
    RoomNotFoundError: grpc.StatusCode.NOT_FOUND,
    RoomExistsError: grpc.StatusCode.ALREADY_EXISTS,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    RoomUnavailableError: grpc.StatusCode.FAILED_PRECONDITION,
    LimitExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    MalformedRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    SequenceError: grpc.StatusCode.ABORTED,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    BackendUnavailableError: grpc.StatusCode.UNAVAILABLE,
}

ERROR_METADATA_KEY: Final = "x-shardkeep-relay-error"

_ERRORS_BY_CODE: Final[Mapping[grpc.StatusCode, type[RelayError]]] = {
    code: cls for cls, code in STATUS_CODES.items()
}


def status_code_for(error: RelayError) -> grpc.StatusCode:
    """Return the gRPC status code for a relay error.

    Arguments:
        error: any ``RelayError``.

    Returns:
        The code of the class in ``STATUS_CODES`` the error is an instance of
        (no listed class derives from another, so there is at most one), or
        ``INTERNAL`` for a bare ``RelayError``.
    """
    for cls, code in STATUS_CODES.items():
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _error_classes() -> dict[str, type[RelayError]]:
    found: dict[str, type[RelayError]] = {}
    pending: list[type[RelayError]] = [RelayError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending += cls.__subclasses__()
    return found


def error_from_status(code: grpc.StatusCode, details: str, error_name: str = "") -> RelayError:
    """Rebuild a relay error on the client side from a call's status.

    Arguments:
        code: the status code of the failed call.
        details: the status message.
        error_name: the ``ERROR_METADATA_KEY`` trailing metadata value, if any.

    Returns:
        An instance of the class ``error_name`` names when it is a relay error
        with this status code; else the table's class for ``code``; else a bare
        ``RelayError``.
    """
    cls = _ERRORS_BY_CODE.get(code, RelayError)
    named = _error_classes().get(error_name)
    if named is not None and issubclass(named, cls):
        cls = named
    return cls(f"{code.name}: {details}")
