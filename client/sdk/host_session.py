"""How a coordinator (the SDK's ``WalletClient``, the coordinator service) asks the host
for ceremonies and challenges: one unary call each, or channels of one ``Host.Session``
stream (docs/transport.md).

Both offer the same two calls and fail the same way, with the
``grpc.aio.AioRpcError`` the unary call would have raised (its code, details
and ``shardkeep-*`` trailers), so the code that maps a refusal to a
``WalletError`` does not care which transport ran.

On the session transport the stream is opened by the first call and kept. A
stream that breaks (the host restarted, the network failed) fails every call
on it with UNAVAILABLE, as a broken call would; the next call opens a new
stream. A call that passes its timeout, or is cancelled, sends a cancel frame,
so the host gives its ceremony up as it would a cancelled call's.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any, Final, Literal, Protocol

import grpc

from shardkeep.framing import BatchError, batched, drain, unbatched
from shardkeep.v1 import ceremony_pb2, host_pb2, host_pb2_grpc

# The calls raise grpc's own errors for WalletClient and the coordinator to map:
# internal to them, so only the transport's name is public (and no sdk_boundary).
__all__ = [
    # Types
    "HostTransport",
]

HostTransport = Literal["call", "session"]
"""How ceremony calls reach the host: one call each, or channels of one stream."""

_EOF: Final[object] = grpc.aio.EOF  # type: ignore[attr-defined]
_SessionCall = grpc.aio.StreamStreamCall[host_pb2.HostSessionInput, host_pb2.HostSessionOutput]
_K = ceremony_pb2.CeremonyKind
_METHODS: Final[dict[int, str]] = {
    _K.CEREMONY_KIND_KEYGEN: "Keygen",
    _K.CEREMONY_KIND_SIGN: "Sign",
    _K.CEREMONY_KIND_RESHARE: "Reshare",
    _K.CEREMONY_KIND_REFRESH: "Refresh",
    _K.CEREMONY_KIND_EXPORT: "Export",
    _K.CEREMONY_KIND_PAIR_SETUP: "PairSetup",
}


class HostCalls(Protocol):
    """A ceremony call and a challenge, on either transport."""

    async def ceremony(
        self,
        kind: ceremony_pb2.CeremonyKind,
        request: host_pb2.HostCeremonyRequest,
        *,
        timeout: float,
    ) -> ceremony_pb2.CeremonyResult:
        """The host's result of the server share's part of a ceremony.

        Raises:
            grpc.aio.AioRpcError: the host's refusal, as the unary call's.
        """
        ...

    async def challenge(self, affinity: str, *, timeout: float) -> host_pb2.HostChallengeResponse:
        """A single-use challenge from the enclave (``affinity``: as GetChallenge's).

        Raises:
            grpc.aio.AioRpcError: the host's refusal, as GetChallenge's.
        """
        ...

    async def aclose(self) -> None:
        """Let go of what the calls hold (before the channel closes)."""
        ...


def host_calls(channel: grpc.aio.Channel, transport: HostTransport = "call") -> HostCalls:
    """The host's ceremony calls on ``channel``, by ``transport``."""
    stub = host_pb2_grpc.HostStub(channel)  # type: ignore[no-untyped-call]
    return HostSession(stub) if transport == "session" else UnaryHostCalls(stub)


class UnaryHostCalls:
    """One unary call per ceremony (Keygen, Sign, ...) and per challenge."""

    def __init__(self, stub: host_pb2_grpc.HostStub) -> None:
        self._stub = stub

    async def ceremony(
        self,
        kind: ceremony_pb2.CeremonyKind,
        request: host_pb2.HostCeremonyRequest,
        *,
        timeout: float,
    ) -> ceremony_pb2.CeremonyResult:
        method = getattr(self._stub, _method(kind))
        result: ceremony_pb2.CeremonyResult = await method(request, timeout=timeout)
        return result

    async def challenge(self, affinity: str, *, timeout: float) -> host_pb2.HostChallengeResponse:
        reply: host_pb2.HostChallengeResponse = await self._stub.GetChallenge(
            host_pb2.HostChallengeRequest(affinity=affinity), timeout=timeout
        )
        return reply

    async def aclose(self) -> None:
        """Nothing to let go of: each call ended with itself."""


class HostSession:
    """Every call a channel of one ``Host.Session`` stream: one writer, one reader."""

    def __init__(self, stub: host_pb2_grpc.HostStub) -> None:
        self._stub = stub
        self._numbers = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[host_pb2.HostSessionOutput]] = {}
        self._call: _SessionCall | None = None
        self._outbox: asyncio.Queue[host_pb2.HostSessionInput] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def ceremony(
        self,
        kind: ceremony_pb2.CeremonyKind,
        request: host_pb2.HostCeremonyRequest,
        *,
        timeout: float,
    ) -> ceremony_pb2.CeremonyResult:
        call = host_pb2.HostCeremonyCall(
            kind=kind, request=request, timeout_ms=max(1, math.ceil(timeout * 1000))
        )
        _method(kind)  # a kind with no method never leaves (as with the unary calls)
        output = await self._ask(host_pb2.HostSessionInput(call=call), timeout)
        if output.WhichOneof("frame") != "result":
            raise _call_error(grpc.StatusCode.INTERNAL, "the host answered with no result")
        return output.result

    async def challenge(self, affinity: str, *, timeout: float) -> host_pb2.HostChallengeResponse:
        ask = host_pb2.HostChallengeRequest(affinity=affinity)
        frame = host_pb2.HostSessionInput(get_challenge=ask)
        output = await self._ask(frame, timeout)
        if output.WhichOneof("frame") != "challenge":
            raise _call_error(grpc.StatusCode.INTERNAL, "the host answered with no challenge")
        return output.challenge

    async def _ask(
        self, frame: host_pb2.HostSessionInput, timeout: float
    ) -> host_pb2.HostSessionOutput:
        """Open a channel with ``frame``; its answer, or its end raised as the call's error."""
        if self._call is None or self._call.done():
            self._open()
        frame.channel = number = next(self._numbers)
        answer: asyncio.Future[host_pb2.HostSessionOutput] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[number] = answer
        self._outbox.put_nowait(frame)
        try:
            async with asyncio.timeout(timeout):
                output = await answer
        except TimeoutError:
            self._cancel(number)
            raise _call_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except asyncio.CancelledError:
            self._cancel(number)
            raise
        finally:
            self._waiting.pop(number, None)
        if output.WhichOneof("frame") == "end":
            end = output.end
            trailers = [
                (key, value if key.endswith("-bin") else value.decode(errors="replace"))
                for key, value in end.details.items()
            ]
            code = getattr(grpc.StatusCode, end.code, grpc.StatusCode.UNKNOWN)
            raise _call_error(code, end.message, trailers)
        return output

    def _cancel(self, number: int) -> None:
        if number in self._waiting and self._call is not None and not self._call.done():
            self._outbox.put_nowait(host_pb2.HostSessionInput(channel=number, cancel=True))

    def _open(self) -> None:
        for task in self._tasks:
            task.cancel()
        # The calls of a stream that ended and was not yet read to its end.
        self._fail_all(_call_error(grpc.StatusCode.UNAVAILABLE, "the session stream ended"))
        call: _SessionCall = self._stub.Session()
        self._call = call
        self._outbox = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._write_loop(call, self._outbox)),
            asyncio.create_task(self._read_loop(call)),
        ]

    async def _write_loop(
        self, call: _SessionCall, outbox: asyncio.Queue[host_pb2.HostSessionInput]
    ) -> None:
        """The only writer of the stream (grpc forbids concurrent writes)."""
        try:
            while True:
                # What is queued goes out in one message (a batch).
                frames = drain(outbox, await outbox.get())
                for message in batched(frames, host_pb2.HostSessionInputs):
                    await call.write(message)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return  # the stream ended: the reader reports how

    async def _read_loop(self, call: _SessionCall) -> None:
        error: grpc.aio.AioRpcError = _call_error(
            grpc.StatusCode.UNAVAILABLE, "the host ended the session stream"
        )
        try:
            while True:
                frame = await call.read()
                if frame is _EOF or not isinstance(frame, host_pb2.HostSessionOutput):
                    break
                for one in unbatched(frame):
                    answer = self._waiting.get(one.channel)
                    if answer is not None and not answer.done():
                        answer.set_result(one)
        except BatchError as e:
            call.cancel()
            error = _call_error(grpc.StatusCode.INTERNAL, f"the host sent a malformed batch: {e}")
        except grpc.aio.AioRpcError as e:
            error = e  # e.g. UNAVAILABLE when the host went away, as a call's
        finally:
            if self._call is call:  # else a new stream has failed this one's calls
                self._call = None
                self._fail_all(error)

    def _fail_all(self, error: grpc.aio.AioRpcError) -> None:
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(error)

    async def aclose(self) -> None:
        """End the stream (the channel's close ends it too); calls still on it fail."""
        for task in self._tasks:
            task.cancel()
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self._fail_all(_call_error(grpc.StatusCode.CANCELLED, "the client closed the session"))


def _method(kind: int) -> str:
    method = _METHODS.get(kind)
    if method is None:
        raise ValueError(f"no host method runs ceremony kind {kind}")
    return method


def _call_error(
    code: grpc.StatusCode, details: str, trailers: list[tuple[str, Any]] | None = None
) -> grpc.aio.AioRpcError:
    """The error a unary call ending with this status would raise."""
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*(trailers or ())), details, ""
    )
