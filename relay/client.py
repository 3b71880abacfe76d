"""A small asyncio client for the relay, used by parties, the host and tests.

``RelayClient`` wraps the unary calls; ``RelayClient.join`` returns a
``PartySession``, one party's Join stream: ``send`` assigns the per-sender seq
and returns once the relay has stored the envelope (its ack), and iterating the
session yields the deliveries for this party until the room ends. Failed calls
raise the ``relay.errors`` class for their status code (``error_from_status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.admission import CREDENTIAL_METADATA_KEY, create_room_credential
from relay.errors import (
    ERROR_METADATA_KEY,
    BackendUnavailableError,
    RelayError,
    RoomClosedError,
    RoomExpiredError,
    error_from_status,
)
from relay.rooms import RoomLimits
from shardkeep.v1 import envelope_pb2, relay_pb2, relay_pb2_grpc

__all__ = ["CreatedRoom", "PartySession", "RelayClient"]

_JoinCall = grpc.aio.StreamStreamCall[relay_pb2.JoinRequest, relay_pb2.JoinResponse]
_EOF: Final[object] = grpc.aio.EOF  # type: ignore[attr-defined]
# Envelopes queued by concurrent sends go out in one JoinRequest up to this
# many payload bytes (the relay's frame cap allows a maximal payload plus slack).
_COALESCE_BYTES: Final = 256 * 1024
# How long CreateRoom and a Join's hello wait for the relay to be reachable. They
# wait (gRPC wait_for_ready) instead of failing at once with the channel's last
# connection error: after a relay restart the channel may still be in its
# reconnect backoff although the relay is serving again.
CONNECT_SECONDS: Final = 10.0


def _relay_error(e: grpc.aio.AioRpcError) -> RelayError:
    # grpc.aio.Metadata iterates as (key, value) pairs; the stubs say otherwise.
    metadata: Iterable[tuple[str, str | bytes]] = e.trailing_metadata() or ()  # type: ignore[assignment]
    names = [str(v) for k, v in metadata if k == ERROR_METADATA_KEY]
    return error_from_status(e.code(), e.details() or "", names[0] if names else "")


@contextlib.asynccontextmanager
async def _reachable_within(seconds: float) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as e:
        raise BackendUnavailableError(f"the relay was not reachable within {seconds:g} s") from e


@dataclass(frozen=True)
class CreatedRoom:
    """CreateRoom's answer. The tokens are secrets: they never appear in a repr.

    Attributes:
        room_id: the room.
        join_tokens: party id -> join token; give each party only its own.
        admin_token: lets the creator close and query the room.
        expires_at_ms: Unix ms after which the room is expired.
        limits: the effective limits.
    """

    room_id: str
    join_tokens: Mapping[str, str] = field(repr=False)
    admin_token: str = field(repr=False)
    expires_at_ms: int
    limits: RoomLimits


class RelayClient:
    """Unary relay calls plus ``join`` for a party's stream."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        coordinator: Ed25519PrivateKey | None = None,
        connect_seconds: float = CONNECT_SECONDS,
    ) -> None:
        """Arguments:
        channel: a grpc.aio channel to the relay; ``aclose`` closes it.
        coordinator: the coordinator key the relay pins; ``create_room`` needs it.
        connect_seconds: how long ``create_room`` and a session's ``open`` wait
            for the relay to be reachable.
        """
        self._channel = channel
        self._coordinator = coordinator
        self._connect_seconds = connect_seconds
        self._stub = relay_pb2_grpc.RelayStub(channel)  # type: ignore[no-untyped-call]

    @classmethod
    def insecure(cls, address: str, *, coordinator: Ed25519PrivateKey | None = None) -> RelayClient:
        """Open a plaintext channel to ``address`` (``host:port`` or ``unix:/path``).

        Plaintext suits loopback and Unix sockets; across hosts, build a TLS
        channel and pass it to the constructor. Payloads are end-to-end
        encrypted between parties either way.
        """
        return cls(grpc.aio.insecure_channel(address), coordinator=coordinator)

    async def aclose(self) -> None:
        """Close the channel (cancels open sessions)."""
        await self._channel.close(None)

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def create_room(
        self,
        participants: Iterable[str],
        *,
        room_id: str = "",
        ttl_ms: int = 0,
        max_message_bytes: int = 0,
        max_messages: int = 0,
        max_total_bytes: int = 0,
    ) -> CreatedRoom:
        """Create a room.

        Arguments:
            participants: the fixed participant list (2 or more distinct ids).
            room_id: a chosen id, or "" for a generated one.
            ttl_ms: time to live, 0 for the relay's default.
            max_message_bytes / max_messages / max_total_bytes: limits, 0 for
                the relay's defaults.

        Returns:
            The room id, tokens, expiry and effective limits.

        Raises:
            UnauthenticatedError (no coordinator key, or not one the relay pins),
            MalformedRequestError, RoomExistsError, QuotaExceededError,
            BackendUnavailableError (also: the relay not reachable within
                ``connect_seconds``).
        """
        request = relay_pb2.CreateRoomRequest(
            room_id=room_id,
            participants=list(participants),
            ttl_ms=ttl_ms,
            limits=relay_pb2.RoomLimits(
                max_message_bytes=max_message_bytes,
                max_messages=max_messages,
                max_total_bytes=max_total_bytes,
            ),
        )
        metadata: tuple[tuple[str, str], ...] = ()
        if self._coordinator is not None:
            body = request.SerializeToString(deterministic=True)
            credential = create_room_credential(self._coordinator, body, time.time_ns() // 10**6)
            metadata = ((CREDENTIAL_METADATA_KEY, credential),)
        try:
            async with _reachable_within(self._connect_seconds):
                r: relay_pb2.CreateRoomResponse = await self._stub.CreateRoom(
                    request, metadata=metadata, wait_for_ready=True
                )
        except grpc.aio.AioRpcError as e:
            raise _relay_error(e) from e
        return CreatedRoom(
            room_id=r.room_id,
            join_tokens=dict(r.join_tokens),
            admin_token=r.admin_token,
            expires_at_ms=r.expires_at_ms,
            limits=RoomLimits(
                max_message_bytes=r.limits.max_message_bytes,
                max_messages=r.limits.max_messages,
                max_total_bytes=r.limits.max_total_bytes,
            ),
        )

    async def get_room(self, room_id: str, token: str) -> relay_pb2.RoomStatus:
        """Return the room's status (state, who joined, per-party delivered counts).

        Arguments:
            room_id: the room.
            token: the admin token or any party's join token.

        Raises:
            RoomNotFoundError, PermissionDeniedError.
        """
        try:
            status: relay_pb2.RoomStatus = await self._stub.GetRoom(
                relay_pb2.GetRoomRequest(room_id=room_id, token=token)
            )
        except grpc.aio.AioRpcError as e:
            raise _relay_error(e) from e
        return status

    async def close_room(self, room_id: str, admin_token: str) -> None:
        """Close the room (idempotent).

        Raises:
            RoomNotFoundError, PermissionDeniedError (not the admin token).
        """
        try:
            await self._stub.CloseRoom(
                relay_pb2.CloseRoomRequest(room_id=room_id, admin_token=admin_token)
            )
        except grpc.aio.AioRpcError as e:
            raise _relay_error(e) from e

    async def await_round(
        self,
        room_id: str,
        token: str,
        *,
        ceremony_id: str,
        round_: int,
        timeout_s: float,
        parties: Iterable[str] = (),
    ) -> relay_pb2.AwaitRoundResponse:
        """Wait until every expected party delivered the round, or the timeout.

        Arguments:
            room_id: the room.
            token: the admin token or any party's join token.
            ceremony_id: the ceremony.
            round_: the round.
            timeout_s: how long the relay should wait (it caps this).
            parties: the expected parties; empty for every participant.

        Returns:
            ``complete``, ``delivered`` and ``missing`` (the parties to blame).

        Raises:
            RoomNotFoundError, PermissionDeniedError, MalformedRequestError.
        """
        request = relay_pb2.AwaitRoundRequest(
            room_id=room_id,
            token=token,
            ceremony_id=ceremony_id,
            round=round_,
            parties=list(parties),
            timeout_ms=int(timeout_s * 1000),
        )
        try:
            # The call deadline leaves the relay time to answer after its own.
            response: relay_pb2.AwaitRoundResponse = await self._stub.AwaitRound(
                request, timeout=timeout_s + 10.0
            )
        except grpc.aio.AioRpcError as e:
            raise _relay_error(e) from e
        return response

    def join(
        self, room_id: str, party: str, join_token: str, *, resume_after: int = 0
    ) -> PartySession:
        """Return a party session; enter it (``async with``) to open the stream.

        Arguments:
            room_id: the room.
            party: this party's id.
            join_token: this party's token from CreateRoom.
            resume_after: a log position already received (reconnects), 0 for the
                whole backlog.
        """
        call: _JoinCall = self._stub.Join(wait_for_ready=True)
        return PartySession(
            call, room_id, party, join_token, resume_after, connect_seconds=self._connect_seconds
        )


class PartySession:
    """One party's Join stream.

    Use as ``async with client.join(...) as session``; ``send`` envelopes and
    ``async for delivery in session`` (or ``await session.receive()``).
    """

    def __init__(
        self,
        call: _JoinCall,
        room_id: str,
        party: str,
        join_token: str,
        resume_after: int,
        *,
        connect_seconds: float = CONNECT_SECONDS,
    ) -> None:
        self._call = call
        self._connect_seconds = connect_seconds
        self._hello = relay_pb2.JoinHello(
            room_id=room_id, party=party, join_token=join_token, resume_after=resume_after
        )
        self._acks: dict[int, asyncio.Future[int]] = {}
        # Unbounded on purpose: a party that awaits a send's ack before reading
        # must not stall the reader; the room's max_messages bounds it.
        self._inbox: asyncio.Queue[relay_pb2.EnvelopeDelivery | RelayError] = asyncio.Queue()
        self._outbox: asyncio.Queue[envelope_pb2.Envelope] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._failure: RelayError | None = None
        self.accepted: relay_pb2.JoinAccepted = relay_pb2.JoinAccepted()
        self.ended: relay_pb2.RoomEndReason | None = None
        self._next_seq = 1

    async def open(self) -> relay_pb2.JoinAccepted:
        """Send the JoinHello and wait for the relay's answer.

        Returns:
            JoinAccepted: participants, ``next_seq``, expiry, limits.

        Raises:
            RoomNotFoundError, PermissionDeniedError, RoomUnavailableError,
            MalformedRequestError, BackendUnavailableError (also: the relay
            not reachable within ``connect_seconds``).
        """
        try:
            async with _reachable_within(self._connect_seconds):
                await self._call.write(relay_pb2.JoinRequest(hello=self._hello))
                first = await self._call.read()
        except grpc.aio.AioRpcError as e:
            raise _relay_error(e) from e
        if first is _EOF:
            raise error_from_status(await self._call.code(), await self._call.details())
        if not isinstance(first, relay_pb2.JoinResponse) or not first.HasField("accepted"):
            raise RelayError("relay did not answer the JoinHello with JoinAccepted")
        self.accepted = first.accepted
        self._next_seq = first.accepted.next_seq
        self._reader = asyncio.create_task(self._read_loop())
        self._writer = asyncio.create_task(self._write_loop())
        return self.accepted

    async def __aenter__(self) -> PartySession:
        await self.open()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel the stream and stop the reader and writer."""
        self._call.cancel()
        tasks = [t for t in (self._reader, self._writer) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail(RelayError("session closed"))

    def _fail(self, error: RelayError) -> None:
        if self._failure is None:
            self._failure = error
        for future in self._acks.values():
            if not future.done():
                future.set_exception(self._failure)
        self._acks.clear()

    async def _read_loop(self) -> None:
        """Route acks to their ``send`` calls and deliveries to the inbox; on the
        stream's end, fail what is pending with the reason."""
        error: RelayError
        try:
            while True:
                response = await self._call.read()
                if response is _EOF:
                    break
                if not isinstance(response, relay_pb2.JoinResponse):
                    raise RelayError("unexpected message on the Join stream")
                for ack in response.acks:
                    future = self._acks.pop(ack.seq, None)
                    if future is not None and not future.done():
                        future.set_result(ack.position)
                for delivery in response.deliveries:
                    self._inbox.put_nowait(delivery)
                if response.HasField("ended"):
                    self.ended = response.ended.reason
            if self.ended == relay_pb2.ROOM_END_REASON_EXPIRED:
                error = RoomExpiredError("room has expired")
            else:
                error = RoomClosedError("room is closed")
        except grpc.aio.AioRpcError as e:
            error = _relay_error(e)
        except RelayError as e:
            error = e
        self._fail(error)
        self._inbox.put_nowait(error)

    @property
    def next_seq(self) -> int:
        """The seq the next ``send`` will use."""
        return self._next_seq

    async def send(
        self, payload: bytes, *, ceremony_id: str, round_: int, recipient: str = ""
    ) -> int:
        """Send one envelope and wait until the relay stored it.

        Arguments:
            payload: opaque bytes (end-to-end encrypted by the caller).
            ceremony_id: the ceremony.
            round_: the round.
            recipient: a participant id, or "" to broadcast.

        Returns:
            The envelope's log position.

        Raises:
            the relay's error for the stream (e.g. LimitExceededError,
            PermissionDeniedError, RoomClosedError); the stream is then over.
        """
        envelope = envelope_pb2.Envelope(
            ceremony_id=ceremony_id, round=round_, recipient=recipient, payload=payload
        )
        return await self.send_envelope(envelope)

    async def send_envelope(self, envelope: envelope_pb2.Envelope) -> int:
        """Send a prepared envelope (seq 0 gets the session's next seq).

        The relay stamps room and sender; a different sender is rejected.

        Returns:
            The envelope's log position.

        Raises:
            as ``send``.
        """
        if self._failure is not None:
            raise self._failure
        if self._writer is None:
            raise RelayError("the session is not open")
        # No await between taking the seq and queueing: concurrent sends keep
        # seq order equal to queue (and so wire) order.
        if envelope.seq == 0:
            envelope.seq = self._next_seq
        self._next_seq = envelope.seq + 1
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[envelope.seq] = future
        self._outbox.put_nowait(envelope)
        return await future

    async def _write_loop(self) -> None:
        """Write queued envelopes, several per JoinRequest when sends pile up."""
        try:
            while True:
                batch = [await self._outbox.get()]
                size = len(batch[0].payload)
                while not self._outbox.empty() and size < _COALESCE_BYTES:
                    batch.append(self._outbox.get_nowait())
                    size += len(batch[-1].payload)
                await self._call.write(relay_pb2.JoinRequest(envelopes=batch))
        except grpc.aio.AioRpcError as e:
            self._fail(_relay_error(e))
        except (grpc.aio.UsageError, asyncio.InvalidStateError):
            # The call already finished; the reader reports how.
            if self._reader is not None:
                await asyncio.gather(self._reader, return_exceptions=True)
            self._fail(RelayError("the Join stream is closed"))

    async def receive(self) -> relay_pb2.EnvelopeDelivery:
        """Return the next delivery for this party.

        Raises:
            RoomClosedError / RoomExpiredError: the room ended (after every
                delivery before the end was returned).
            the relay's error when the stream failed.
        """
        item = await self._inbox.get()
        if isinstance(item, RelayError):
            self._inbox.put_nowait(item)  # every later call raises it too
            raise item
        return item

    def __aiter__(self) -> AsyncIterator[relay_pb2.EnvelopeDelivery]:
        return self._deliveries()

    async def _deliveries(self) -> AsyncIterator[relay_pb2.EnvelopeDelivery]:
        """Yield deliveries until the room ends; raise on a stream failure."""
        while True:
            try:
                yield await self.receive()
            except (RoomClosedError, RoomExpiredError):
                if self.ended is not None:
                    return
                raise
