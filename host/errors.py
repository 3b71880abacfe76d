"""The host's errors and the one table that turns lower-layer failures into gRPC status.

The host is untrusted and transport-only (docs/architecture.md, "Components"):
it does not decide whether a ceremony is allowed, it relays the enclave's
verdict. So the enclave's own status codes pass through to the coordinator
unchanged (``ENCLAVE_CODES``), with the culprit party ids the enclave attaches
(``google.rpc.Status`` in ``grpc-status-details-bin``, or ``shardkeep-*``
trailing metadata), while the relay's and the store's errors map through
``ERROR_TABLE`` (httpx ``map_exceptions``). Anything else becomes INTERNAL with
a generic message. No message here carries payloads, tokens or blobs: the relay
and store errors promise that for theirs, and the host's own are fixed texts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import grpc

from host.store_errors import (
    EpochError,
    NotFoundError,
    QuotaExceededError,
    StoreConflictError,
    StoreError,
    StoreInputError,
    StoreUnavailableError,
)
from relay.errors import (
    LimitExceededError,
    MalformedRequestError,
    PermissionDeniedError,
    RelayError,
    RoomNotFoundError,
    RoomUnavailableError,
    SequenceError,
)
from shardkeep.v1 import enclave_pb2

__all__ = [
    # Functions
    "error_from_enclave",
    "error_for",
    # Exceptions
    "HostError",
    "EnclaveProtocolError",
    # Tables
    "ENCLAVE_CODES",
    "ERROR_TABLE",
    "error_from_failure",
    "PASSED_TRAILERS",
    "NOT_PROVISIONED",
    "OTHER_PROTOCOL_VERSION",
    "REASON_TRAILER",
]

Trailers = tuple[tuple[str, str | bytes], ...]

StatusCode = grpc.StatusCode

REASON_TRAILER: Final = "shardkeep-reason"
NOT_PROVISIONED: Final = "not-provisioned"
"""The enclave's reason when it has no identity (it restarted): provision it, then retry."""


class HostError(Exception):
    """A failure with the gRPC status the coordinator gets.

    Attributes:
        code: the status code.
        message: the status details (no secrets, no payloads).
        trailers: trailing metadata to pass on (the enclave's culprit details).
        from_enclave: whether the enclave returned this status (for metrics and logs).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        trailers: Trailers = (),
        *,
        from_enclave: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailers = trailers
        self.from_enclave = from_enclave

    @property
    def reason(self) -> str:
        """The enclave's machine-readable reason (``shardkeep-reason``), or ""."""
        for key, value in self.trailers:
            if key == REASON_TRAILER and isinstance(value, str):
                return value
        return ""


OTHER_PROTOCOL_VERSION: Final = (
    "the enclave speaks another protocol version (an output this host does not know);"
    " run host and enclave from the same release"
)


class EnclaveProtocolError(HostError):
    """The enclave broke the host <-> enclave stream contract (a bug, not an attack on it)."""

    def __init__(self, message: str) -> None:
        super().__init__(StatusCode.INTERNAL, f"enclave protocol error: {message}")


# The enclave decides (docs/architecture.md): its verdicts reach the coordinator as they
# are. UNAVAILABLE gets a fixed message because grpc's own text names the
# enclave's socket; codes the enclave never sends on purpose become INTERNAL.
ENCLAVE_CODES: Final[Mapping[grpc.StatusCode, grpc.StatusCode]] = {
    StatusCode.INVALID_ARGUMENT: StatusCode.INVALID_ARGUMENT,
    StatusCode.FAILED_PRECONDITION: StatusCode.FAILED_PRECONDITION,
    StatusCode.ABORTED: StatusCode.ABORTED,
    StatusCode.PERMISSION_DENIED: StatusCode.PERMISSION_DENIED,
    StatusCode.UNAUTHENTICATED: StatusCode.UNAUTHENTICATED,
    StatusCode.NOT_FOUND: StatusCode.NOT_FOUND,
    StatusCode.ALREADY_EXISTS: StatusCode.ALREADY_EXISTS,
    StatusCode.RESOURCE_EXHAUSTED: StatusCode.RESOURCE_EXHAUSTED,
    StatusCode.OUT_OF_RANGE: StatusCode.OUT_OF_RANGE,
    StatusCode.DEADLINE_EXCEEDED: StatusCode.DEADLINE_EXCEEDED,
    StatusCode.CANCELLED: StatusCode.CANCELLED,
    StatusCode.INTERNAL: StatusCode.INTERNAL,
    StatusCode.UNAVAILABLE: StatusCode.UNAVAILABLE,
}
_FIXED_ENCLAVE_MESSAGES: Final[Mapping[grpc.StatusCode, str]] = {
    StatusCode.UNAVAILABLE: "the enclave is unavailable",
    StatusCode.DEADLINE_EXCEEDED: "the enclave call passed its deadline",
    StatusCode.CANCELLED: "the ceremony was cancelled",
}

PASSED_TRAILERS: Final = "grpc-status-details-bin"
"""The rich-status trailer passed on verbatim, besides every ``shardkeep-*`` key."""

# Lower-layer errors -> status, most specific first.
# The relay's errors come from the coordinator's room and token; the store's
# from the wallet's state.
ERROR_TABLE: Final[tuple[tuple[type[Exception], grpc.StatusCode], ...]] = (
    (RoomNotFoundError, StatusCode.NOT_FOUND),
    (PermissionDeniedError, StatusCode.PERMISSION_DENIED),
    (RoomUnavailableError, StatusCode.FAILED_PRECONDITION),  # closed or expired
    (LimitExceededError, StatusCode.RESOURCE_EXHAUSTED),
    (MalformedRequestError, StatusCode.INVALID_ARGUMENT),
    (SequenceError, StatusCode.ABORTED),
    (RelayError, StatusCode.UNAVAILABLE),
    (NotFoundError, StatusCode.NOT_FOUND),
    (StoreInputError, StatusCode.INVALID_ARGUMENT),
    (StoreConflictError, StatusCode.ABORTED),  # another ceremony wrote first
    (QuotaExceededError, StatusCode.RESOURCE_EXHAUSTED),
    (EpochError, StatusCode.FAILED_PRECONDITION),
    (StoreUnavailableError, StatusCode.UNAVAILABLE),
    (StoreError, StatusCode.INTERNAL),
)
_PREFIXES: Final = ((RelayError, "relay"), (StoreError, "store"))


def _passed_trailers(metadata: Iterable[tuple[str, str | bytes]]) -> Trailers:
    return tuple(
        (key, value)
        for key, value in metadata
        if key == PASSED_TRAILERS or key.startswith("shardkeep-")
    )


def error_from_enclave(error: grpc.aio.AioRpcError) -> HostError:
    """The coordinator's status for a failed enclave call.

    Arguments:
        error: the enclave call's failure.

    Returns:
        A ``HostError`` with the mapped code, the enclave's message (or a fixed
        one for transport failures) and the culprit trailers.
    """
    code = ENCLAVE_CODES.get(error.code(), StatusCode.INTERNAL)
    message = _FIXED_ENCLAVE_MESSAGES.get(error.code())
    if message is None:
        message = error.details() or code.name.lower()
    # grpc.aio.Metadata iterates as (key, value) pairs; the stubs say otherwise.
    metadata: Iterable[tuple[str, str | bytes]] = error.trailing_metadata() or ()  # type: ignore[assignment]
    return HostError(code, message, _passed_trailers(metadata), from_enclave=True)


def error_from_failure(failure: enclave_pb2.CeremonyFailure) -> HostError:
    """The coordinator's status for the enclave's ``CeremonyFailure`` output."""
    enclave_code = getattr(StatusCode, failure.code, StatusCode.INTERNAL)
    code = ENCLAVE_CODES.get(enclave_code, StatusCode.INTERNAL)
    message = _FIXED_ENCLAVE_MESSAGES.get(code) or failure.message or code.name.lower()
    # The same shardkeep-* keys the enclave's own status carries (enclave.service._abort):
    # the culprits to blame, and a machine-readable reason (e.g. "pair-setup-required").
    trailers: Trailers = tuple(
        (key, value)
        for key, value in (
            ("shardkeep-culprits", ",".join(failure.culprits)),
            (REASON_TRAILER, failure.reason),
        )
        if value
    )
    return HostError(code, message, trailers, from_enclave=True)


def error_for(exc: BaseException) -> HostError:
    """The coordinator's status for any failure, through ``ERROR_TABLE``.

    Arguments:
        exc: what was raised.

    Returns:
        ``exc`` itself if it is a ``HostError``; the mapped status for relay,
        store and enclave-call errors; INTERNAL with a generic message otherwise.
    """
    if isinstance(exc, HostError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        return error_from_enclave(exc)
    for kind, code in ERROR_TABLE:
        if isinstance(exc, kind):
            prefix = next(p for k, p in _PREFIXES if isinstance(exc, k))
            return HostError(code, f"{prefix}: {exc}")
    return HostError(StatusCode.INTERNAL, "internal error")
