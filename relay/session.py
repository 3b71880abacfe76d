"""The relay's side of a ``Relay.Session`` stream (docs/transport.md).

One stream per process carries every room the process takes part in. Each
channel is one party in one room: its ``join`` frame runs the same admission
as a ``Join`` stream's hello (``RelayServicer.join_room``, which also creates
a room from its signed spec), and its envelopes go through the same
``JoinedParty`` as a Join stream's. What differs is only the framing:

- envelopes arrive as lists (one round step's) and are not acknowledged; an
  envelope the relay refuses gets a ``NonDelivery`` and the channel closes;
- a ``flush`` is answered with the position of the channel's last stored
  envelope, once every envelope sent before it is stored;
- every channel ends with a ``ChannelClosed`` carrying the status a Join call
  would have ended with, and the stream goes on;
- frames may come several to a message (a ``batch``, ``shardkeep.framing``),
  each handled in order as if it came alone, and the writer sends what it has
  queued the same way.

A channel's frames wait in its own bounded inbox, so one slow room never
stalls the stream's reader; a channel that overruns its inbox is closed with
RESOURCE_EXHAUSTED, as is a join past the stream's channel limit. A channel
counts against that limit until its task has ended, closing answer included,
and every frame the stream holds (live channels' joins, frames waiting to be
stored) counts against ``RelayConfig.session_stream_bytes``, and against
``session_relay_bytes`` with every other stream's: a process that never reads
its answers only stalls its own stream, and what any number of streams make
the relay hold stays bounded. The stream's handler task is its only writer (gRPC
allows one write at a time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
import structlog

from relay.errors import (
    DeadlineExceededError,
    LimitExceededError,
    MalformedRequestError,
    RelayError,
    status_code_for,
)
from relay.metrics import RelayMetrics
from relay.party import JoinedParty
from relay.rooms import RelayConfig
from shardkeep.framing import BatchError, batched, chunks, drain, unbatched, until_end
from shardkeep.server import MalformedRequest
from shardkeep.v1 import relay_pb2

__all__ = ["HeldBytes", "SessionStream"]

_log = structlog.get_logger("relay")
_EOF: Final[object] = grpc.aio.EOF  # type: ignore[attr-defined]
# Frames queued towards the stream's writer: bounds memory per slow reader;
# the channels' delivery tasks then wait (the stream's flow control).
_OUTBOX_FRAMES: Final = 256

JoinRoom = Callable[[relay_pb2.JoinHello], Awaitable[tuple[JoinedParty, relay_pb2.JoinAccepted]]]
CloseRoom = Callable[[relay_pb2.CloseRoomRequest], Awaitable[None]]
Clock = Callable[[], int]
_Context = grpc.aio.ServicerContext[relay_pb2.RelaySessionRequest, relay_pb2.RelaySessionResponse]


def _closed(error: RelayError | None, ended: int = 0) -> relay_pb2.ChannelClosed:
    if error is None:
        return relay_pb2.ChannelClosed(code="OK", ended=ended)  # type: ignore[arg-type]
    return relay_pb2.ChannelClosed(
        code=status_code_for(error).name, message=str(error), error=type(error).__name__
    )


class HeldBytes:
    """Bytes of frames every Session stream of one relay holds."""

    def __init__(self) -> None:
        self.total = 0


class _End:
    """Sentinel: the stream ends with OK."""


class _Left(Exception):
    """The process closed a channel (after the frames it sent before)."""


_END: Final = _End()
_Outgoing = relay_pb2.RelaySessionResponse | BaseException | _End


class SessionStream:
    """One process's Session stream."""

    def __init__(
        self,
        context: _Context,
        *,
        join: JoinRoom,
        close_room: CloseRoom,
        clock: Clock,
        config: RelayConfig,
        metrics: RelayMetrics,
        relay_held: HeldBytes,
    ) -> None:
        self._context = context
        self.relay_held = relay_held
        self.join = join
        self.close_room = close_room
        self.clock = clock
        self.config = config
        self._metrics = metrics
        self._outbox: asyncio.Queue[_Outgoing] = asyncio.Queue(maxsize=_OUTBOX_FRAMES)
        # Channels by id, for routing frames; forgotten once a channel closes.
        self._channels: dict[int, _Channel] = {}
        # Channels whose task has not ended (a closing one may still wait to
        # write its answer): what the channel limit counts.
        self._live: set[_Channel] = set()
        self.held_bytes = 0  # frames held, against config.session_stream_bytes
        self._last_channel = 0

    async def run(self) -> None:
        """Serve the stream until the process half-closes it (OK) or sends a
        frame that cannot be read (INVALID_ARGUMENT)."""
        reader = asyncio.create_task(self._read())
        try:
            while True:
                # What is queued goes out in one message (a batch), the end last.
                items = drain(self._outbox, await self._outbox.get())
                frames, end = until_end(items, relay_pb2.RelaySessionResponse)
                for message in batched(frames, relay_pb2.RelaySessionResponses):
                    await self._context.write(message)
                if isinstance(end, BaseException):
                    raise end
                if end is not None:
                    return
        finally:
            tasks = [reader, *(c.stop() for c in list(self._live))]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def emit(self, channel: int, **frame: Any) -> None:
        """Queue one frame for the writer."""
        await self._outbox.put(relay_pb2.RelaySessionResponse(channel=channel, **frame))

    def ended(self, channel: _Channel, code: str) -> None:
        """Forget a channel that closed: later frames for it are dropped."""
        self._channels.pop(channel.number, None)
        self._metrics.calls.labels("Session.channel", code).inc()

    def finished(self, channel: _Channel) -> None:
        """A channel's task ended: it no longer counts, nor do its frames."""
        self._live.discard(channel)
        channel.release(channel.held_bytes)

    def over_budget(self, size: int) -> RelayError | None:
        """The refusal of a frame of ``size`` bytes past the stream's budget, or None."""
        budget = self.config.session_stream_bytes
        if self.held_bytes + size > budget:
            return LimitExceededError(f"more than {budget} bytes waiting on one stream")
        budget = self.config.session_relay_bytes
        if self.relay_held.total + size > budget:
            return LimitExceededError(f"more than {budget} bytes waiting on the relay's streams")
        return None

    async def _read(self) -> None:
        try:
            while True:
                request = await self._context.read()
                if request is _EOF:
                    break
                if isinstance(request, MalformedRequest):
                    raise MalformedRequestError("a Session frame is not a valid message")
                try:
                    frames = unbatched(request)
                except BatchError as e:
                    raise MalformedRequestError(str(e)) from None
                for frame in frames:
                    await self._dispatch(frame)
        except Exception as e:
            await self._outbox.put(e)
            return
        await self._outbox.put(_END)

    async def _dispatch(self, request: relay_pb2.RelaySessionRequest) -> None:
        number, kind = request.channel, request.WhichOneof("frame")
        if kind is None:
            raise MalformedRequestError("a Session frame carries nothing")
        if kind in ("join", "close_room"):
            size = request.ByteSize()
            budget_error = self.over_budget(size)
            if number <= self._last_channel:
                error: RelayError = MalformedRequestError("channel ids must increase on a stream")
            elif len(self._live) >= self.config.max_session_channels:
                error = LimitExceededError(
                    f"at most {self.config.max_session_channels} channels on one stream"
                )
            elif budget_error is not None:
                error = budget_error
            else:
                self._last_channel = number
                channel = _Channel(self, number)
                self._channels[number] = channel
                self._live.add(channel)
                channel.hold(size)
                channel.start(request)
                return
            self._metrics.calls.labels("Session.channel", status_code_for(error).name).inc()
            await self.emit(number, closed=_closed(error))
            return
        open_channel = self._channels.get(number)
        if open_channel is None:
            return  # the channel ended: frames still in flight are dropped
        # A close waits its turn too, so the envelopes sent before it are stored.
        open_channel.offer(request)


class _Channel:
    """One party in one room (or one close_room) on a Session stream."""

    def __init__(self, stream: SessionStream, number: int) -> None:
        self._stream = stream
        self.number = number
        # Frames with their sizes in bytes, released once handled.
        self._inbox: asyncio.Queue[tuple[relay_pb2.RelaySessionRequest, int]] = asyncio.Queue(
            maxsize=stream.config.session_inbox_frames
        )
        self.held_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._position = 0
        # Why the channel's task was cancelled from outside: its inbox overran
        # (the error), or the stream ends (None).
        self._overrun: RelayError | None = None

    def start(self, first: relay_pb2.RelaySessionRequest) -> None:
        self._task = asyncio.create_task(self._run(first))
        self._task.add_done_callback(lambda _: self._stream.finished(self))

    def hold(self, size: int) -> None:
        """Count ``size`` bytes of frames against the stream's budget."""
        self.held_bytes += size
        self._stream.held_bytes += size
        self._stream.relay_held.total += size

    def release(self, size: int) -> None:
        """Stop counting ``size`` bytes held."""
        self.held_bytes -= size
        self._stream.held_bytes -= size
        self._stream.relay_held.total -= size

    def stop(self) -> asyncio.Task[None]:
        """The channel's task, for the stream to cancel as it ends."""
        assert self._task is not None
        return self._task

    def offer(self, request: relay_pb2.RelaySessionRequest) -> None:
        """Queue an envelopes, flush or close frame; close the channel if its inbox is
        full or the stream holds too many bytes."""
        size = request.ByteSize()
        error = self._stream.over_budget(size)
        if error is None:
            try:
                self._inbox.put_nowait((request, size))
            except asyncio.QueueFull:
                error = LimitExceededError(
                    f"more than {self._inbox.maxsize} frames waiting on channel {self.number}"
                )
            else:
                self.hold(size)
                return
        if self._overrun is None and self._task is not None:
            self._overrun = error
            self._task.cancel()

    async def _run(self, first: relay_pb2.RelaySessionRequest) -> None:
        error: RelayError | None = None
        ended = 0
        try:
            if first.HasField("close_room"):
                await self._stream.close_room(first.close_room)
            else:
                ended = await self._serve(first.join)
        except _Left:
            self._stream.ended(self, "CANCELLED")
            return  # the process has forgotten the channel: no answer
        except asyncio.CancelledError:
            if self._overrun is None:
                self._stream.ended(self, "CANCELLED")
                raise  # the stream is ending
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            error = self._overrun
        except RelayError as e:
            error = e
        except Exception:
            _log.exception("unexpected error", method="Session.channel")
            error = RelayError("internal error")
        code = "OK" if error is None else status_code_for(error).name
        if error is not None:
            _log.info("channel failed", method="Session.channel", code=code,
                      error=type(error).__name__)  # fmt: skip
        self._stream.ended(self, code)
        await self._stream.emit(self.number, closed=_closed(error, ended))

    async def _serve(self, join: relay_pb2.ChannelJoin) -> int:
        """Serve the party until its room ends; return the RoomEndReason."""
        delay = None
        if join.deadline_ms:
            delay = max(join.deadline_ms - self._stream.clock(), 0) / 1000
        try:
            async with asyncio.timeout(delay):
                party, accepted = await self._stream.join(join.hello)
                await self._stream.emit(self.number, accepted=accepted)
                return await self._exchange(party, join.hello.resume_after)
        except TimeoutError:
            raise DeadlineExceededError("the channel's deadline passed") from None

    async def _exchange(self, party: JoinedParty, resume_after: int) -> int:
        follow = asyncio.create_task(party.follow(resume_after, self._deliver))
        inbound = asyncio.create_task(self._inbound(party))
        try:
            done, _ = await asyncio.wait((follow, inbound), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failure = task.exception()
                if failure is not None:
                    raise failure
            if inbound in done:
                raise _Left()
            return follow.result()
        finally:
            for task in (follow, inbound):
                task.cancel()
            await asyncio.gather(follow, inbound, return_exceptions=True)

    async def _deliver(self, deliveries: list[relay_pb2.EnvelopeDelivery]) -> None:
        for frame in chunks(deliveries, lambda d: len(d.envelope.payload)):
            await self._stream.emit(
                self.number, deliveries=relay_pb2.DeliveryList(deliveries=frame)
            )

    async def _inbound(self, party: JoinedParty) -> None:
        """Store the channel's envelopes and answer its flushes, in order;
        return at the process's close."""
        while True:
            request, size = await self._inbox.get()
            if request.HasField("close"):
                self.release(size)
                return
            await self._handle(party, request)
            self.release(size)

    async def _handle(self, party: JoinedParty, request: relay_pb2.RelaySessionRequest) -> None:
        if request.HasField("envelopes"):
            stored = await party.store(request.envelopes.envelopes)
            if stored.acks:
                self._position = stored.acks[-1][1]
            if stored.error is not None:
                error = stored.error
                await self._stream.emit(
                    self.number,
                    non_delivery=relay_pb2.NonDelivery(
                        seq=stored.rejected_seq,
                        code=status_code_for(error).name,
                        message=str(error),
                        error=type(error).__name__,
                    ),
                )
                raise error
            flush = request.envelopes.flush  # a flush riding on the list
            if not flush:
                return
        else:  # a flush: everything sent before it is stored
            flush = request.flush
        await self._stream.emit(
            self.number, flushed=relay_pb2.Flushed(flush=flush, position=self._position)
        )
