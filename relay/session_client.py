"""The process side of ``Relay.Session`` (docs/transport.md): one stream to the
relay for every room the process takes part in.

``SessionStreams`` keeps one stream open (opening it on first use, and again
after it breaks); ``SessionParty`` is one party in one room on it and offers
what ceremony code uses of a ``relay.client.PartySession`` (``open``, ``send``,
``receive``, ``async for``, ``aclose``), so that code runs the same over either
transport. What differs: ``send`` returns at once (no acknowledgement; the
envelopes one step sends together travel in one frame), a refused envelope
fails the channel with the relay's error (its non-delivery report), and
``flush`` waits until the relay has stored everything sent before it (riding
on the last envelopes when they have not left yet). The stream's writer sends
what is queued as one message (a batch, ``shardkeep.framing``).

A stream that breaks fails every channel on it with the stream's error, as a
broken Join call would; the next join opens a new stream.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import Final, Protocol

import grpc

from relay.errors import (
    BackendUnavailableError,
    LimitExceededError,
    RelayError,
    RoomClosedError,
    RoomExpiredError,
    error_from_status,
)
from relay.party_inbox import PartyInbox
from shardkeep.framing import BatchError, batched, chunks, drain, unbatched
from shardkeep.v1 import envelope_pb2, relay_pb2, relay_pb2_grpc

__all__ = ["SessionParty", "SessionStreams"]

_EOF: Final[object] = grpc.aio.EOF  # type: ignore[attr-defined]
_Call = grpc.aio.StreamStreamCall[relay_pb2.RelaySessionRequest, relay_pb2.RelaySessionResponse]
# Deliveries a channel may hold unread; past it the channel is closed (the
# room's message limit bounds a ceremony's far below this).
INBOX_DELIVERIES: Final = 16_384


def _error(code: str, message: str, name: str) -> RelayError:
    status = getattr(grpc.StatusCode, code, grpc.StatusCode.INTERNAL)
    return error_from_status(status, message, name)


def _stream_error(e: grpc.aio.AioRpcError) -> RelayError:
    metadata: Iterable[tuple[str, str | bytes]] = e.trailing_metadata() or ()  # type: ignore[assignment]
    names = [str(v) for k, v in metadata if k == "x-shardkeep-relay-error"]
    return error_from_status(e.code(), e.details() or "", names[0] if names else "")


class _Endpoint(Protocol):
    """What a stream routes a channel's frames to."""

    def handle(self, response: relay_pb2.RelaySessionResponse) -> None: ...

    def fail(self, error: RelayError) -> None: ...


class _Stream:
    """One open Session stream: the only writer and reader of its call."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._ids = itertools.count(1)
        self.channels: dict[int, _Endpoint] = {}
        self._outbox: asyncio.Queue[relay_pb2.RelaySessionRequest] = asyncio.Queue()
        self.failure: RelayError | None = None
        self._reader = asyncio.create_task(self._read_loop())
        self._writer = asyncio.create_task(self._write_loop())

    def attach(self, endpoint: _Endpoint) -> int:
        number = next(self._ids)
        self.channels[number] = endpoint
        return number

    def send(self, frame: relay_pb2.RelaySessionRequest) -> None:
        if self.failure is None:
            self._outbox.put_nowait(frame)

    async def _write_loop(self) -> None:
        try:
            while True:
                # What is queued goes out in one message (a batch).
                frames = drain(self._outbox, await self._outbox.get())
                for message in batched(frames, relay_pb2.RelaySessionRequests):
                    await self._call.write(message)
        except grpc.aio.AioRpcError as e:
            self._break(_stream_error(e))
        except (grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the call ended: the reader reports how

    async def _read_loop(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if response is _EOF:
                    break
                if not isinstance(response, relay_pb2.RelaySessionResponse):
                    raise RelayError("unexpected message on the Session stream")
                try:
                    frames = unbatched(response)
                except BatchError as e:
                    raise RelayError(f"the relay sent a malformed batch: {e}") from None
                for frame in frames:
                    endpoint = self.channels.get(frame.channel)
                    if endpoint is not None:
                        endpoint.handle(frame)
            error: RelayError = BackendUnavailableError("the relay ended the Session stream")
        except grpc.aio.AioRpcError as e:
            error = _stream_error(e)
        except RelayError as e:
            error = e
        self._break(error)

    def _break(self, error: RelayError) -> None:
        if self.failure is None:
            self.failure = error
        for endpoint in list(self.channels.values()):
            endpoint.fail(self.failure)
        self.channels.clear()

    async def aclose(self) -> None:
        self._call.cancel()
        for task in (self._reader, self._writer):
            task.cancel()
        await asyncio.gather(self._reader, self._writer, return_exceptions=True)
        self._break(RelayError("session closed"))


class SessionStreams:
    """The process's Session stream to one relay, opened on first use."""

    def __init__(self, stub: relay_pb2_grpc.RelayStub) -> None:
        self._stub = stub
        self._stream: _Stream | None = None

    def stream(self) -> _Stream:
        """The open stream, or a new one if there is none or it broke."""
        if self._stream is None or self._stream.failure is not None:
            self._stream = _Stream(self._stub.Session(wait_for_ready=True))
        return self._stream

    async def close_room(self, room_id: str, admin_token: str, *, connect_seconds: float) -> None:
        """Close a room over the stream (a ``close_room`` channel).

        Raises:
            the relay's refusal, as ``RelayClient.close_room``.
        """
        closing = _Closing()
        stream = self.stream()
        number = stream.attach(closing)
        request = relay_pb2.CloseRoomRequest(room_id=room_id, admin_token=admin_token)
        stream.send(relay_pb2.RelaySessionRequest(channel=number, close_room=request))
        try:
            async with asyncio.timeout(connect_seconds):
                await closing.done
        except TimeoutError:
            stream.channels.pop(number, None)
            raise BackendUnavailableError(
                f"the relay did not answer within {connect_seconds:g} s"
            ) from None

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()


class _Closing:
    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def handle(self, response: relay_pb2.RelaySessionResponse) -> None:
        if response.HasField("closed") and not self.done.done():
            c = response.closed
            if c.code == "OK":
                self.done.set_result(None)
            else:
                self.done.set_exception(_error(c.code, c.message, c.error))

    def fail(self, error: RelayError) -> None:
        if not self.done.done():
            self.done.set_exception(error)


def _payload(envelope: envelope_pb2.Envelope) -> int:
    return len(envelope.payload)


class SessionParty(PartyInbox):
    """One party in one room on the process's Session stream.

    Use as ``async with client.join(...) as party`` (a ``RelayClient`` made
    with ``session=True``); ``send`` envelopes and ``async for delivery in party``.
    """

    def __init__(
        self,
        streams: SessionStreams,
        hello: relay_pb2.JoinHello,
        *,
        deadline_ms: int = 0,
        connect_seconds: float,
    ) -> None:
        super().__init__()
        self._streams = streams
        self._join = relay_pb2.ChannelJoin(hello=hello, deadline_ms=deadline_ms)
        self._connect_seconds = connect_seconds
        self._stream: _Stream | None = None
        self._number = 0
        self._accepted: asyncio.Future[relay_pb2.JoinAccepted] | None = None
        self._pending: list[envelope_pb2.Envelope] = []
        self._flushes: dict[int, asyncio.Future[int]] = {}
        self._flush_ids = itertools.count(1)
        self._failure: RelayError | None = None
        self._closed = False

    async def open(self) -> relay_pb2.JoinAccepted:
        """Open the channel (the stream first, if need be) and wait for the relay's answer.

        Raises:
            as ``PartySession.open``; UnauthenticatedError, QuotaExceededError or
            RoomExistsError when the join carries a room spec the relay refuses.
        """
        self._accepted = asyncio.get_running_loop().create_future()
        self._stream = self._streams.stream()
        self._number = self._stream.attach(self)
        self._stream.send(relay_pb2.RelaySessionRequest(channel=self._number, join=self._join))
        try:
            async with asyncio.timeout(self._connect_seconds):
                self.accepted = await self._accepted
        except TimeoutError:
            self._leave()
            raise BackendUnavailableError(
                f"the relay was not reachable within {self._connect_seconds:g} s"
            ) from None
        self._next_seq = self.accepted.next_seq
        return self.accepted

    async def aclose(self) -> None:
        """Leave the channel (the stream goes on)."""
        self._leave()
        self.fail(RelayError("session closed"))

    def _leave(self) -> None:
        stream = self._stream
        if stream is not None and stream.channels.pop(self._number, None) is not None:
            self._push()  # what was sent goes out before the close
            closed = relay_pb2.ChannelClosed(code="CANCELLED")
            stream.send(relay_pb2.RelaySessionRequest(channel=self._number, close=closed))

    # --- frames from the relay -------------------------------------------------

    def handle(self, response: relay_pb2.RelaySessionResponse) -> None:
        kind = response.WhichOneof("frame")
        if kind == "accepted":
            if self._accepted is not None and not self._accepted.done():
                self._accepted.set_result(response.accepted)
        elif kind == "deliveries":
            if self._inbox.qsize() + len(response.deliveries.deliveries) > INBOX_DELIVERIES:
                self._leave()
                self.fail(LimitExceededError(f"more than {INBOX_DELIVERIES} unread deliveries"))
                return
            for delivery in response.deliveries.deliveries:
                self._inbox.put_nowait(delivery)
        elif kind == "non_delivery":
            n = response.non_delivery
            self.fail(_error(n.code, f"envelope {n.seq} not delivered: {n.message}", n.error))
        elif kind == "flushed":
            future = self._flushes.pop(response.flushed.flush, None)
            if future is not None and not future.done():
                future.set_result(response.flushed.position)
        elif kind == "closed":
            assert self._stream is not None
            self._stream.channels.pop(self._number, None)
            c = response.closed
            if c.code != "OK":
                self.fail(_error(c.code, c.message, c.error))
            else:
                self.ended = c.ended
                self.fail(
                    RoomExpiredError("room has expired")
                    if c.ended == relay_pb2.ROOM_END_REASON_EXPIRED
                    else RoomClosedError("room is closed")
                )

    def fail(self, error: RelayError) -> None:
        """End the channel with ``error``: pending calls raise it, and so does
        ``receive`` once the deliveries before it are taken."""
        if self._failure is not None:
            return
        self._failure = error
        if self._accepted is not None and not self._accepted.done():
            self._accepted.set_exception(error)
        for future in self._flushes.values():
            if not future.done():
                future.set_exception(error)
        self._flushes.clear()
        self._inbox.put_nowait(error)

    # --- sending -----------------------------------------------------------------

    async def send(
        self, payload: bytes, *, ceremony_id: str, round_: int, recipient: str = ""
    ) -> None:
        """Send one envelope (no acknowledgement: a refusal fails the channel).

        Raises:
            the channel's error, once it has failed.
        """
        envelope = envelope_pb2.Envelope(
            ceremony_id=ceremony_id, round=round_, recipient=recipient, payload=payload
        )
        await self.send_envelope(envelope)

    async def send_envelope(self, envelope: envelope_pb2.Envelope) -> None:
        """Send a prepared envelope (seq 0 gets the channel's next seq). The
        envelopes sent in one turn of the event loop (one step's) go in one frame.

        Raises:
            as ``send``.
        """
        if self._failure is not None:
            raise self._failure
        if self._stream is None:
            raise RelayError("the session is not open")
        if envelope.seq == 0:
            envelope.seq = self._next_seq
        self._next_seq = envelope.seq + 1
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._push)
        self._pending.append(envelope)

    def _push(self, flush: int = 0) -> None:
        """Send the pending envelopes; a nonzero ``flush`` rides on the last list
        (or goes alone when nothing is pending)."""
        pending, self._pending = self._pending, []
        if self._stream is None or self._failure is not None:
            return
        if not pending:
            if flush:
                self._stream.send(relay_pb2.RelaySessionRequest(channel=self._number, flush=flush))
            return
        lists = [relay_pb2.EnvelopeList(envelopes=frame) for frame in chunks(pending, _payload)]
        lists[-1].flush = flush
        for envelopes in lists:
            self._stream.send(
                relay_pb2.RelaySessionRequest(channel=self._number, envelopes=envelopes)
            )

    async def flush(self) -> int:
        """Wait until the relay has stored every envelope sent so far.

        Returns:
            The room-log position of this party's last stored envelope (0: none).

        Raises:
            the channel's error (e.g. the non-delivery of an envelope).
        """
        # Sends begun before the flush (tasks already scheduled) go first.
        await asyncio.sleep(0)
        if self._failure is not None:
            raise self._failure
        assert self._stream is not None
        number = next(self._flush_ids)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._flushes[number] = future
        self._push(flush=number)
        return await future
