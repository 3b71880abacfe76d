"""The SDK's errors: one root, ``WalletError``, and the boundary that keeps it so.

Every failure an SDK call reports is a ``WalletError`` subclass (httpx's one
root) with a stable ``error_code``, a short string that
names the kind of failure and never changes (docs/operations.md lists them);
``code`` is the gRPC status a server answered with, None for local failures.
Transport, attestation and storage errors derive from it too.

Errors of the layers below (the protocol core, the relay client, gRPC) are
translated once, at the SDK's public functions, through ``TRANSLATIONS``
(httpx ``map_exceptions``): ``sdk_boundary`` wraps a function or every public
method of a class. The original error stays the ``__cause__``. One kind
passes unchanged: an ``OSError`` about the caller's own files (a share file
that is missing, a full disk), which keeps its built-in type and file name as
``open`` does; a timeout (also an ``OSError``) is translated.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar, Final, TypeVar

import grpc

from relay.errors import RelayError, status_code_for
from tss.errors import (
    InputError,
    InvalidEncodingError,
    ProtocolError,
    SessionStateError,
    ShardkeepError,
)

__all__ = [
    # Functions
    "passes",
    "sdk_boundary",
    "translate",
    # Exceptions
    "CeremonyFailed",
    "InternalSdkError",
    "InvalidEncoding",
    "InvalidInput",
    "WalletError",
]


class WalletError(ShardkeepError):
    """Root of the SDK's errors.

    Attributes:
        error_code: the stable name of the kind of failure (a class attribute).
        code: the gRPC status a server answered with; None for local failures.
        culprits: the party ids blamed, if any.
        reason: a machine-readable detail (the ``shardkeep-reason`` trailer,
            e.g. ``pair-setup-required``; an attestation check); "" if none.
    """

    error_code: ClassVar[str] = "wallet"

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        culprits: str = "",
        reason: str = "",
    ) -> None:
        self.code = code
        self.culprits = tuple(c for c in culprits.split(",") if c)
        self.reason = reason
        super().__init__(message if not culprits else f"{message} (culprits: {culprits})")


class InvalidInput(WalletError, InputError):
    """The caller broke a precondition (a bad argument, file or setting); also an ``InputError``."""

    error_code = "invalid_input"


class InvalidEncoding(InvalidInput, InvalidEncodingError):
    """Bytes the caller passed do not parse (a transaction, a key); an ``InvalidEncodingError``."""

    error_code = "invalid_encoding"


class CeremonyFailed(WalletError):
    """A local party's side of a ceremony failed: the relay, a timeout, or a protocol fault
    (a misbehaving party is named in the message; the original error is the cause)."""

    error_code = "ceremony_failed"


class InternalSdkError(WalletError):
    """A failure the SDK does not expect (a bug): the cause carries the original error."""

    error_code = "internal"


def passes(error: Exception) -> bool:
    """Whether ``error`` leaves the SDK as it is: an SDK error, or a file's ``OSError``."""
    return isinstance(error, WalletError) or (
        isinstance(error, OSError) and not isinstance(error, TimeoutError)
    )


def translate(error: Exception) -> WalletError:
    """The SDK error ``error`` stands for (``TRANSLATIONS``; a ``WalletError`` is itself)."""
    if isinstance(error, WalletError):
        return error
    for kind, make in TRANSLATIONS:
        if isinstance(error, kind):
            return make(error)
    return InternalSdkError(f"internal error in the SDK ({type(error).__name__})")


def _from_relay(error: Exception) -> WalletError:
    assert isinstance(error, RelayError)
    return CeremonyFailed(f"the relay refused: {error}", status_code_for(error))


def _from_rpc(error: Exception) -> WalletError:
    assert isinstance(error, grpc.aio.AioRpcError)
    return WalletError(f"the server refused: {error.details()}", error.code())


# Lower-layer errors -> SDK errors, first match wins.
TRANSLATIONS: Final[tuple[tuple[type[Exception], Callable[[Exception], WalletError]], ...]] = (
    (InvalidEncodingError, lambda e: InvalidEncoding(str(e))),
    (InputError, lambda e: InvalidInput(str(e))),
    (ProtocolError, lambda e: CeremonyFailed(str(e))),
    (SessionStateError, lambda e: CeremonyFailed(str(e))),
    (RelayError, _from_relay),
    (grpc.aio.AioRpcError, _from_rpc),
    (TimeoutError, lambda e: CeremonyFailed("timed out", grpc.StatusCode.DEADLINE_EXCEEDED)),
    (ValueError, lambda e: InvalidInput(str(e))),  # e.g. a malformed key or PEM
)

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


def _wrap(function: _F) -> _F:
    if getattr(function, "__sdk_boundary__", False):
        return function
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await function(*args, **kwargs)
            except Exception as e:
                if passes(e):
                    raise
                raise translate(e) from e

        wrapped: Any = call_async
    else:

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as e:
                if passes(e):
                    raise
                raise translate(e) from e

        wrapped = call
    wrapped.__sdk_boundary__ = True
    return wrapped  # type: ignore[no-any-return]


def sdk_boundary(target: _T) -> _T:
    """Translate what ``target`` raises into SDK errors (``translate``).

    A function is wrapped; a class has each public method wrapped (static and
    class methods included), so a method added later is covered too.
    Cancellation and interrupts (not ``Exception``) pass through.
    """
    if not inspect.isclass(target):
        wrapped: _T = _wrap(target)  # type: ignore[type-var]
        return wrapped
    for name, member in list(vars(target).items()):
        if name.startswith("_") and name not in ("__aenter__", "__aexit__"):
            continue
        if isinstance(member, staticmethod):
            setattr(target, name, staticmethod(_wrap(member.__func__)))
        elif isinstance(member, classmethod):
            setattr(target, name, classmethod(_wrap(member.__func__)))
        elif inspect.isfunction(member):
            setattr(target, name, _wrap(member))
    return target
