"""The host's end of ``Host.Session``: many ceremony calls on one coordinator stream
(docs/transport.md).

Each channel runs what one unary call runs (a ceremony method, or
GetChallenge) and ends with one frame: the result, the challenge, or a
``HostChannelEnd`` with the status and ``shardkeep-*`` trailers the call would
have ended with. One channel's failure never ends the stream.

What one stream can make the host hold is bounded: at most ``max_channels``
channels open at once; a channel opened past that ends at once with
RESOURCE_EXHAUSTED and the others go on. With ``MAX_SESSION_OUTPUTS`` answers
waiting for a coordinator that does not read them, the host stops reading its
frames until it does. A frame that does not parse ends the
channel its head names with INVALID_ARGUMENT, naming the fault; only a frame
whose channel cannot even be read ends the stream. A cancel frame cancels its
channel's ceremony as a cancelled call's is. When the coordinator half-closes
the stream, the host finishes the channels still open, then ends it; when the
stream breaks, every ceremony on it is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final

import grpc
import structlog
from google.protobuf.message import DecodeError

from host.errors import HostError, error_for
from host.metrics import HostMetrics
from shardkeep.framing import BatchError, batched, drain, unbatched, until_end
from shardkeep.server import MalformedRequest
from shardkeep.v1 import ceremony_pb2, host_pb2

__all__ = [
    # Constants
    "CEREMONY_METHODS",
    "MAX_SESSION_CHANNELS",
    "MAX_SESSION_OUTPUTS",
    # Types
    "SessionStream",
]

MAX_SESSION_CHANNELS: Final = 256
"""Channels one coordinator stream may hold open at once (``--max-session-channels``)."""
MAX_SESSION_OUTPUTS: Final = 1024
"""Answers queued for a coordinator that does not read them before the host stops reading."""

_K = ceremony_pb2.CeremonyKind
CEREMONY_METHODS: Final[dict[int, str]] = {
    _K.CEREMONY_KIND_KEYGEN: "Keygen",
    _K.CEREMONY_KIND_SIGN: "Sign",
    _K.CEREMONY_KIND_RESHARE: "Reshare",
    _K.CEREMONY_KIND_REFRESH: "Refresh",
    _K.CEREMONY_KIND_EXPORT: "Export",
    _K.CEREMONY_KIND_PAIR_SETUP: "PairSetup",
}
"""The unary method each ceremony kind stands for on a channel (its logs and metrics)."""

RunCeremony = Callable[
    [host_pb2.HostCeremonyRequest, int, Callable[[], float | None]],
    Awaitable[ceremony_pb2.CeremonyResult],
]
Challenge = Callable[
    [host_pb2.HostChallengeRequest, str], Awaitable[host_pb2.HostChallengeResponse]
]


class SessionStream:
    """One coordinator's Session stream: its open channels and the frames going back."""

    def __init__(
        self,
        *,
        run_ceremony: RunCeremony,
        challenge: Challenge,
        request_id: Callable[[str], str],
        metrics: HostMetrics,
        max_channels: int = MAX_SESSION_CHANNELS,
    ) -> None:
        """Arguments:
        run_ceremony: runs one ceremony call; raises ``HostError`` with its status.
        challenge: fetches one challenge (for the request, with the request id); raises
            ``HostError``.
        request_id: the caller's request id if it is a safe one, else a fresh one.
        metrics: where channels are counted, as the calls they stand for.
        max_channels: channels open at once on this stream.
        """
        self._run_ceremony = run_ceremony
        self._challenge = challenge
        self._request_id = request_id
        self._metrics = metrics
        self._max_channels = max_channels
        self._channels: dict[int, asyncio.Task[None]] = {}
        self._outputs: asyncio.Queue[host_pb2.HostSessionOutput | None] = asyncio.Queue()
        self._taken = asyncio.Event()  # an output was handed to the coordinator
        self._log = structlog.get_logger("host.session")

    async def serve(
        self, frames: AsyncIterator[host_pb2.HostSessionInput | MalformedRequest]
    ) -> AsyncIterator[host_pb2.HostSessionOutput]:
        """The stream's outputs for its frames, until the coordinator is done.

        Raises:
            HostError: INVALID_ARGUMENT for a frame whose channel cannot be read.
        """
        reader = asyncio.create_task(self._read(frames))
        try:
            while True:
                # What is queued goes out in one message (a batch).
                items = drain(self._outputs, await self._outputs.get())
                self._taken.set()
                ready, _ = until_end(items, host_pb2.HostSessionOutput)
                for message in batched(ready, host_pb2.HostSessionOutputs):
                    yield message
                if len(ready) < len(items):  # the reader's end (None)
                    break
            await reader  # its error, if any, ends the stream
        finally:
            reader.cancel()
            for task in self._channels.values():
                task.cancel()

    async def _read(
        self, frames: AsyncIterator[host_pb2.HostSessionInput | MalformedRequest]
    ) -> None:
        try:
            async for message in frames:
                for frame in self._frames(message):
                    if isinstance(frame, bytes):
                        self._malformed(frame)
                    else:
                        self._route(frame)
                    # Every frame may queue an answer (a refusal ends its channel
                    # at once): a coordinator that does not read them is not read.
                    while self._outputs.qsize() >= MAX_SESSION_OUTPUTS:
                        self._taken.clear()
                        await self._taken.wait()
            # Half-closed: what is open still finishes.
            await asyncio.gather(*self._channels.values(), return_exceptions=True)
        finally:
            self._outputs.put_nowait(None)

    def _frames(
        self, message: host_pb2.HostSessionInput | MalformedRequest
    ) -> Sequence[host_pb2.HostSessionInput | bytes]:
        """The frames a message carries, in order: parsed, or the bytes of one that
        does not parse (a batch that does not parse is taken apart frame by frame).

        Raises:
            HostError: INVALID_ARGUMENT for a batch that breaks the rules, naming how.
        """
        if isinstance(message, MalformedRequest):
            try:
                head = host_pb2.HostSessionFrameHead.FromString(message.raw)
            except DecodeError:
                return (message.raw,)  # _malformed refuses it
            if not head.batch.frames:
                return (message.raw,)
            return [_parsed(raw) for raw in head.batch.frames]
        try:
            return unbatched(message)
        except BatchError as e:
            raise HostError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None

    def _malformed(self, raw: bytes) -> None:
        try:
            number = host_pb2.HostSessionFrameHead.FromString(raw).channel
        except DecodeError:
            raise HostError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a Session frame is not a valid message and names no channel",
            ) from None
        self._log.warning("malformed session frame", channel=number, body_bytes=len(raw))
        self._end(
            number,
            HostError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the frame on channel {number} is not a valid HostSessionInput",
            ),
        )

    def _route(self, frame: host_pb2.HostSessionInput) -> None:
        """Open, or cancel, the frame's channel."""
        kind = frame.WhichOneof("frame")
        number = frame.channel
        if kind == "cancel":
            task = self._channels.pop(number, None)
            if task is not None:  # else it has ended: a late cancel means nothing
                task.cancel()
            return
        if number in self._channels:
            self._end(
                number,
                HostError(grpc.StatusCode.INVALID_ARGUMENT, f"channel {number} is already open"),
            )
            return
        work: Coroutine[Any, Any, host_pb2.HostSessionOutput]
        if kind == "call":
            method = CEREMONY_METHODS.get(frame.call.kind)
            if method is None:
                self._end(number, _refused(f"channel {number} names no ceremony method"))
                return
            work = self._ceremony(number, frame.call, method)
        elif kind == "get_challenge":
            work = self._fetch_challenge(number, frame.get_challenge)
        else:
            self._end(number, _refused(f"the frame on channel {number} carries nothing"))
            return
        if len(self._channels) >= self._max_channels:
            work.close()
            self._end(
                number,
                HostError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"at most {self._max_channels} channels may be open on one session",
                ),
            )
            return
        self._open(number, work)

    def _open(self, number: int, work: Coroutine[Any, Any, host_pb2.HostSessionOutput]) -> None:
        async def run() -> None:
            try:
                output = await work
            finally:
                ended = self._channels.get(number) is not task  # cancelled or ended meanwhile
                if not ended:
                    del self._channels[number]
            if not ended:
                self._outputs.put_nowait(output)

        task = asyncio.create_task(run())
        self._channels[number] = task

    def _end(self, number: int, error: HostError) -> None:
        """End the channel (its ceremony cancelled, if one runs) with ``error``."""
        task = self._channels.pop(number, None)
        if task is not None:
            task.cancel()
        self._log.warning("session channel refused", channel=number, code=error.code.name)
        self._outputs.put_nowait(_end_frame(number, error))

    async def _ceremony(
        self, number: int, call: host_pb2.HostCeremonyCall, method: str
    ) -> host_pb2.HostSessionOutput:
        loop = asyncio.get_running_loop()
        deadline = None if call.timeout_ms == 0 else loop.time() + call.timeout_ms / 1000

        def remaining() -> float | None:
            return None if deadline is None else deadline - loop.time()

        structlog.contextvars.bind_contextvars(  # this channel's task only
            request_id=self._request_id(call.request_id), method=method, channel=number
        )
        code = grpc.StatusCode.CANCELLED
        try:
            result = await self._run_ceremony(call.request, call.kind, remaining)
            code = grpc.StatusCode.OK
            return host_pb2.HostSessionOutput(channel=number, result=result)
        except HostError as e:
            code = e.code
            return _end_frame(number, e)
        finally:
            self._metrics.calls.labels(method, code.name).inc()

    async def _fetch_challenge(
        self, number: int, request: host_pb2.HostChallengeRequest
    ) -> host_pb2.HostSessionOutput:
        request_id = self._request_id("")
        code = grpc.StatusCode.CANCELLED
        try:
            challenge = await self._challenge(request, request_id)
            code = grpc.StatusCode.OK
            return host_pb2.HostSessionOutput(channel=number, challenge=challenge)
        except Exception as e:
            error = error_for(e)
            code = error.code
            return _end_frame(number, error)
        finally:
            self._metrics.calls.labels("GetChallenge", code.name).inc()


def _parsed(raw: bytes) -> host_pb2.HostSessionInput | bytes:
    """A batch's frame, or its bytes if it does not parse."""
    try:
        frame = host_pb2.HostSessionInput.FromString(raw)
    except DecodeError:
        return raw
    if frame.WhichOneof("frame") == "batch":
        raise HostError(
            grpc.StatusCode.INVALID_ARGUMENT, f"a batch inside a batch (channel {frame.channel})"
        )
    return frame


def _refused(message: str) -> HostError:
    return HostError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _end_frame(number: int, error: HostError) -> host_pb2.HostSessionOutput:
    details = {
        key: value if isinstance(value, bytes) else value.encode() for key, value in error.trailers
    }
    end = host_pb2.HostChannelEnd(code=error.code.name, message=error.message, details=details)
    return host_pb2.HostSessionOutput(channel=number, end=end)
