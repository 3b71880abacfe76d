"""A small asyncio client for the relay, used by parties, the host and tests.

``RelayClient`` wraps the unary calls; ``RelayClient.join`` returns a
``PartySession``, one party's Join stream: ``send`` assigns the per-sender seq
and returns once the relay has stored the envelope (its ack), and iterating the
session yields the deliveries for this party until the room ends. Failed calls
raise the ``relay.errors`` class for their status code (``error_from_status``).

With ``session=True`` (docs/transport.md) the same client makes no call per
room: ``create_room`` signs a room spec locally (the room is created by its
first join), ``join`` returns a ``relay.session_client.SessionParty`` on the
process's one ``Relay.Session`` stream, and ``close_room`` travels on that
stream too. Ceremony code sees the same interface (``RoomParty``) either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Protocol

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.admission import CREDENTIAL_METADATA_KEY, ROOM_SPEC_CONTEXT, create_room_credential
from relay.errors import (
    ERROR_METADATA_KEY,
    BackendUnavailableError,
    RelayError,
    RoomClosedError,
    RoomExpiredError,
    UnauthenticatedError,
    error_from_status,
)
from relay.party_inbox import PartyInbox
from relay.rooms import RelayConfig, RoomLimits, token_digest
from relay.session_client import SessionParty, SessionStreams
from shardkeep.v1 import envelope_pb2, relay_pb2, relay_pb2_grpc

__all__ = ["CreatedRoom", "PartySession", "RelayClient", "RoomParty"]

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
        limits: the effective limits (for a room spec: the relay's defaults
            in place of 0s, as the relay's own defaults are unknown here).
        spec: the signed spec when the room is created by its first join
            (every party's join presents it); None after CreateRoom.
    """

    room_id: str
    join_tokens: Mapping[str, str] = field(repr=False)
    admin_token: str = field(repr=False)
    expires_at_ms: int
    limits: RoomLimits
    spec: relay_pb2.SignedRoomSpec | None = field(default=None, repr=False)


class RoomParty(Protocol):
    """One party in one room, over a Join stream or a Session channel."""

    @property
    def next_seq(self) -> int: ...

    async def open(self) -> relay_pb2.JoinAccepted: ...

    async def aclose(self) -> None: ...

    async def send(
        self, payload: bytes, *, ceremony_id: str, round_: int, recipient: str = ""
    ) -> int | None: ...

    async def send_envelope(self, envelope: envelope_pb2.Envelope) -> int | None: ...

    async def flush(self) -> int:
        """Wait until every envelope sent so far is stored; return the last one's position."""
        ...

    async def receive(self) -> relay_pb2.EnvelopeDelivery: ...

    def __aiter__(self) -> AsyncIterator[relay_pb2.EnvelopeDelivery]: ...


class RelayClient:
    """Unary relay calls plus ``join`` for a party's stream."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        coordinator: Ed25519PrivateKey | None = None,
        connect_seconds: float = CONNECT_SECONDS,
        session: bool = False,
    ) -> None:
        """Arguments:
        channel: a grpc.aio channel to the relay; ``aclose`` closes it.
        coordinator: the coordinator key the relay pins; ``create_room`` needs it.
        connect_seconds: how long ``create_room`` and a session's ``open`` wait
            for the relay to be reachable.
        session: rooms created on first join, and every room on one
            ``Relay.Session`` stream (docs/transport.md); False: a call per room.
        """
        self._channel = channel
        self._coordinator = coordinator
        self._connect_seconds = connect_seconds
        self._stub = relay_pb2_grpc.RelayStub(channel)  # type: ignore[no-untyped-call]
        self._streams = SessionStreams(self._stub) if session else None
        # Specs of the rooms this coordinator defined, until it closes them:
        # its own parties' joins present them.
        self._specs: dict[str, relay_pb2.SignedRoomSpec] = {}

    @property
    def session(self) -> bool:
        """Whether rooms travel on the Session stream."""
        return self._streams is not None

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
        if self._streams is not None:
            await self._streams.aclose()
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
            With ``session``, only UnauthenticatedError (no coordinator key):
            the relay checks the spec at the first join.
        """
        limits = RoomLimits(max_message_bytes, max_messages, max_total_bytes)
        if self._streams is not None:
            return self._room_spec(participants, room_id, ttl_ms, limits)
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

    def _room_spec(
        self, participants: Iterable[str], room_id: str, ttl_ms: int, limits: RoomLimits
    ) -> CreatedRoom:
        """Define a room for creation on its first join: mint its tokens and
        sign its spec (the relay checks both when the first party joins)."""
        if self._coordinator is None:
            raise UnauthenticatedError("a room spec needs a coordinator key")
        parties = list(participants)
        room_id = room_id or secrets.token_urlsafe(16)
        join_tokens = {p: secrets.token_urlsafe(32) for p in parties}
        admin_token = secrets.token_urlsafe(32)
        now = time.time_ns() // 10**6
        defaults = RelayConfig()
        expires = now + (ttl_ms or defaults.default_ttl_ms)
        spec = relay_pb2.RoomSpec(
            room_id=room_id,
            participants=parties,
            expires_at_ms=expires,
            limits=relay_pb2.RoomLimits(
                max_message_bytes=limits.max_message_bytes,
                max_messages=limits.max_messages,
                max_total_bytes=limits.max_total_bytes,
            ),
            token_digests=[token_digest(join_tokens[p]) for p in parties],
            admin_digest=token_digest(admin_token),
        ).SerializeToString(deterministic=True)
        credential = create_room_credential(self._coordinator, spec, now, context=ROOM_SPEC_CONTEXT)
        signed = relay_pb2.SignedRoomSpec(spec=spec, credential=credential)
        self._specs[room_id] = signed
        d = defaults.default_limits
        return CreatedRoom(
            room_id=room_id,
            join_tokens=join_tokens,
            admin_token=admin_token,
            expires_at_ms=expires,
            limits=RoomLimits(
                limits.max_message_bytes or d.max_message_bytes,
                limits.max_messages or d.max_messages,
                limits.max_total_bytes or d.max_total_bytes,
            ),
            spec=signed,
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
        self._specs.pop(room_id, None)
        if self._streams is not None:
            await self._streams.close_room(
                room_id, admin_token, connect_seconds=self._connect_seconds
            )
            return
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
        self,
        room_id: str,
        party: str,
        join_token: str,
        *,
        resume_after: int = 0,
        room: relay_pb2.SignedRoomSpec | None = None,
        deadline_s: float | None = None,
    ) -> PartySession | SessionParty:
        """Return a party session; enter it (``async with``) to open the stream.

        Arguments:
            room_id: the room.
            party: this party's id.
            join_token: this party's token from CreateRoom (or the room spec's maker).
            resume_after: a log position already received (reconnects), 0 for the
                whole backlog.
            room: the room's signed spec, when it is created on first join
                (default: the spec this client made for ``room_id``, if any).
            deadline_s: the relay ends this party's stream or channel after
                this many seconds (None: at the room's expiry).
        """
        hello = relay_pb2.JoinHello(
            room_id=room_id, party=party, join_token=join_token, resume_after=resume_after
        )
        spec = room or self._specs.get(room_id)
        if spec is not None:
            hello.room.CopyFrom(spec)
        if self._streams is not None:
            deadline_ms = (
                0 if deadline_s is None else time.time_ns() // 10**6 + int(deadline_s * 1000)
            )
            return SessionParty(
                self._streams, hello, deadline_ms=deadline_ms, connect_seconds=self._connect_seconds
            )
        call: _JoinCall = self._stub.Join(wait_for_ready=True, timeout=deadline_s)
        return PartySession(call, hello, connect_seconds=self._connect_seconds)


class PartySession(PartyInbox):
    """One party's Join stream.

    Use as ``async with client.join(...) as session``; ``send`` envelopes and
    ``async for delivery in session`` (or ``await session.receive()``).
    """

    def __init__(
        self,
        call: _JoinCall,
        hello: relay_pb2.JoinHello,
        *,
        connect_seconds: float = CONNECT_SECONDS,
    ) -> None:
        super().__init__()
        self._call = call
        self._connect_seconds = connect_seconds
        self._hello = hello
        self._acks: dict[int, asyncio.Future[int]] = {}
        # The inbox is unbounded on purpose: a party that awaits a send's ack
        # before reading must not stall the reader; the room's max_messages bounds it.
        self._outbox: asyncio.Queue[envelope_pb2.Envelope] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._failure: RelayError | None = None
        self._last_position = 0

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
                    self._last_position = ack.position
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
            # A write racing the relay's end of the stream fails with whatever
            # gRPC's core says (e.g. INTERNAL); the reader has the real reason
            # (the room expired or closed), so it is reported first.
            if self._reader is not None:
                await asyncio.gather(self._reader, return_exceptions=True)
            self._fail(_relay_error(e))
        except (grpc.aio.UsageError, asyncio.InvalidStateError):
            # The call already finished; the reader reports how.
            if self._reader is not None:
                await asyncio.gather(self._reader, return_exceptions=True)
            self._fail(RelayError("the Join stream is closed"))

    async def flush(self) -> int:
        """Wait until every envelope sent so far is stored (each ``send`` already
        waits for its own acknowledgement).

        Returns:
            The log position of the last one acknowledged (0: none yet).

        Raises:
            the stream's error, once it has failed.
        """
        pending = list(self._acks.values())
        if pending:
            await asyncio.gather(*pending)
        if self._failure is not None:
            raise self._failure
        return self._last_position
