"""The relay's gRPC shell: servicer, error boundary and server factory.

Protobuf stops here: handlers turn requests into ``relay.rooms`` values, call
the backend, and turn results back. Every handler runs behind ``_boundary``,
the one place relay errors become status codes (``relay.errors.STATUS_CODES``);
anything unexpected becomes INTERNAL with a generic
message. Logs (structlog) name the method, room and status, never tokens or
payloads; ``relay.metrics`` counts calls, rooms, envelopes and malformed
requests. The server offers gRPC reflection, so operators can list and call
its services with grpcurl.

Admission: CreateRoom needs a pinned coordinator's credential
(``relay.admission``) and fits the new room into that coordinator's quota and
the global budget (``relay.budget``). Every other call is authenticated per room
and per party (the admin and join tokens CreateRoom minted), in the handlers,
before any room state is read or changed; for Join the token arrives in the
stream's first message, which an interceptor cannot see.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import grpc
import structlog
from google.protobuf import message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from relay import rooms
from relay.admission import (
    CREDENTIAL_CONTEXT,
    CREDENTIAL_METADATA_KEY,
    ROOM_SPEC_CONTEXT,
    Admission,
    Admitter,
)
from relay.backend import Backend
from relay.errors import (
    ERROR_METADATA_KEY,
    HandshakeTimeoutError,
    MalformedRequestError,
    QuotaExceededError,
    RelayError,
    RoomExistsError,
    RoomNotFoundError,
    UnauthenticatedError,
    status_code_for,
)
from relay.metrics import RelayMetrics
from relay.party import JoinedParty
from relay.rooms import PartyId, RelayConfig, RoomId, RoomSnapshot, RoomState
from relay.session import HeldBytes, SessionStream
from shardkeep import keepalive
from shardkeep.server import (
    AsyncHealthServicer,
    MalformedRequest,
    MalformedRequests,
    new_health_servicer,
)
from shardkeep.tls import ServerTls
from shardkeep.v1 import relay_pb2, relay_pb2_grpc

__all__ = [
    # Functions
    "create_server",
    "new_health_servicer",
    "wall_clock_ms",
    # Types
    "AsyncHealthServicer",
    "Clock",
    "RelayServicer",
    "SERVICE_NAME",
]

SERVICE_NAME: Final = "shardkeep.v1.Relay"
_log = structlog.get_logger("relay")
# Typed aliases for what the installed stubs (grpc-stubs, grpc_health stubs)
# do not declare: the end-of-stream marker.
_EOF: Final[object] = grpc.aio.EOF  # type: ignore[attr-defined]


Clock = Callable[[], int]
"""Returns the current Unix time in milliseconds."""

_STATE: Final[dict[RoomState, relay_pb2.RoomState]] = {
    "open": relay_pb2.ROOM_STATE_OPEN,
    "closed": relay_pb2.ROOM_STATE_CLOSED,
    "expired": relay_pb2.ROOM_STATE_EXPIRED,
}
# Events queued towards one stream's writer: bounds memory per slow reader;
# the delivery task then waits, and resumes from the backend log.
_OUTBOX_SIZE: Final = 256
# The writer coalesces queued events into one JoinResponse (fewer gRPC writes
# under load, no added delay when idle) up to this many payload bytes; a frame
# always fits the transport cap, which allows one maximal payload plus slack.
_COALESCE_BYTES: Final = 256 * 1024


def wall_clock_ms() -> int:
    """Return the current Unix time in milliseconds (the default ``Clock``)."""
    return time.time_ns() // 1_000_000


_S = TypeVar("_S", bound="RelayServicer")
_Req = TypeVar("_Req")
_Ctx = TypeVar("_Ctx", bound="grpc.aio.ServicerContext[Any, Any]")
_Resp = TypeVar("_Resp")
_Handler = Callable[[_S, _Req, _Ctx], Awaitable[_Resp]]


def _boundary(handler: _Handler[_S, _Req, _Ctx, _Resp]) -> _Handler[_S, _Req, _Ctx, _Resp]:
    """Map errors raised by ``handler`` to gRPC statuses through the one table."""

    @functools.wraps(handler)
    async def wrapper(self: _S, request: _Req, context: _Ctx) -> _Resp:
        method = handler.__name__
        try:
            response = await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            self._metrics.calls.labels(method, "CANCELLED").inc()
            raise
        except RelayError as e:
            code = status_code_for(e)
            self._metrics.calls.labels(method, code.name).inc()
            _log.info("call failed", method=method, code=code.name, error=type(e).__name__)
            await context.abort(code, str(e), ((ERROR_METADATA_KEY, type(e).__name__),))
        except Exception:
            self._metrics.calls.labels(method, "INTERNAL").inc()
            _log.exception("unexpected error", method=method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        self._metrics.calls.labels(method, "OK").inc()
        return response

    return wrapper


def _credential(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The call's coordinator credential (``relay.admission``), if it carries one."""
    for key, value in context.invocation_metadata() or ():
        if key == CREDENTIAL_METADATA_KEY and isinstance(value, str):
            return value
    return None


def _limits_to_proto(limits: rooms.RoomLimits) -> relay_pb2.RoomLimits:
    return relay_pb2.RoomLimits(
        max_message_bytes=limits.max_message_bytes,
        max_messages=limits.max_messages,
        max_total_bytes=limits.max_total_bytes,
    )


class _Done:
    """Sentinel: the stream's writer should finish with OK."""


_DONE: Final = _Done()
_Event = relay_pb2.EnvelopeDelivery | relay_pb2.EnvelopeAck | relay_pb2.RoomEnded
_Outbox = asyncio.Queue[_Event | BaseException | _Done]


class RelayServicer(relay_pb2_grpc.RelayServicer):
    """The Relay service over a ``Backend``."""

    def __init__(
        self,
        backend: Backend,
        *,
        admitter: Admitter,
        config: RelayConfig,
        clock: Clock,
        metrics: RelayMetrics,
    ) -> None:
        """Arguments:
        backend: room storage.
        admitter: checks CreateRoom credentials; holds the budget and quotas.
        config: relay defaults and limits.
        clock: Unix time in ms (a parameter so tests can move time).
        metrics: where calls, rooms and envelopes are counted.
        """
        self._backend = backend
        self._metrics = metrics
        self._admitter = admitter
        self._config = config
        self._clock = clock
        self._session_held = HeldBytes()  # by every Session stream, against the config

    async def authenticate_malformed(
        self, request: MalformedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Check a malformed request's credential where one travels outside the
        body (CreateRoom's, bound to the raw body), so that a stranger gets
        UNAUTHENTICATED; room tokens travel inside the body, so a malformed room
        call is refused as malformed."""
        if not request.method.endswith("/CreateRoom"):
            return
        try:
            # Verified, not spent: a malformed request creates nothing.
            self._verify(_credential(context), request.raw, self._clock())
        except RelayError as e:
            await context.abort(
                status_code_for(e), str(e), ((ERROR_METADATA_KEY, type(e).__name__),)
            )

    def _verify(
        self,
        credential: str | None,
        request: bytes,
        now_ms: int,
        *,
        context: bytes = CREDENTIAL_CONTEXT,
    ) -> Admission:
        """Check a coordinator credential, counting a refusal (missing or invalid)."""
        try:
            return self._admitter.verify(credential, request, now_ms, context=context)
        except UnauthenticatedError:
            refusal = "missing" if not credential else "invalid"
            self._metrics.credentials_refused.labels(refusal).inc()
            raise

    async def _spend(self, admission: Admission, now_ms: int) -> None:
        """Spend a verified credential (each creates one room), counting a refusal."""
        try:
            await self._backend.spend_credential(
                admission.coordinator.name, admission.nonce, admission.forget_after_ms, now_ms
            )
        except UnauthenticatedError:
            self._metrics.credentials_refused.labels("replayed").inc()
            raise
        except QuotaExceededError:
            self._metrics.credentials_refused.labels("record_full").inc()
            raise

    async def _viewable_room(self, room_id: str, token: str) -> RoomSnapshot:
        snapshot = await self._backend.snapshot(RoomId(rooms.validate_id("room_id", room_id)))
        rooms.authenticate_viewer(snapshot.spec, token)
        return snapshot

    @_boundary
    async def CreateRoom(
        self,
        request: relay_pb2.CreateRoomRequest,
        context: grpc.aio.ServicerContext[
            relay_pb2.CreateRoomRequest, relay_pb2.CreateRoomResponse
        ],
    ) -> relay_pb2.CreateRoomResponse:
        now = self._clock()
        admission = self._verify(
            _credential(context), request.SerializeToString(deterministic=True), now
        )
        coordinator = admission.coordinator
        await self._spend(admission, now)
        new = rooms.new_room(
            room_id=request.room_id,
            participants=request.participants,
            ttl_ms=request.ttl_ms,
            limits=rooms.RoomLimits(
                max_message_bytes=request.limits.max_message_bytes,
                max_messages=request.limits.max_messages,
                max_total_bytes=request.limits.max_total_bytes,
            ),
            config=self._config,
            now_ms=now,
            owner=coordinator.name,
        )
        await self._backend.create_room(
            new.spec, now, quota=coordinator.quota, budget=self._admitter.policy.budget
        )
        self._metrics.rooms_created.labels(coordinator.name).inc()
        self._metrics.observe(await self._backend.usage(now))
        _log.debug(
            "room created", room_id=new.spec.room_id, parties=len(new.spec.participants),
            coordinator=coordinator.name,
        )  # fmt: skip
        return relay_pb2.CreateRoomResponse(
            room_id=new.spec.room_id,
            join_tokens={str(p): t for p, t in new.join_tokens.items()},
            admin_token=new.admin_token,
            expires_at_ms=new.spec.expires_ms,
            limits=_limits_to_proto(new.spec.limits),
        )

    @_boundary
    async def GetRoom(
        self,
        request: relay_pb2.GetRoomRequest,
        context: grpc.aio.ServicerContext[relay_pb2.GetRoomRequest, relay_pb2.RoomStatus],
    ) -> relay_pb2.RoomStatus:
        snapshot = await self._viewable_room(request.room_id, request.token)
        spec = snapshot.spec
        return relay_pb2.RoomStatus(
            room_id=spec.room_id,
            state=_STATE[snapshot.state(self._clock())],
            parties=[
                relay_pb2.RoomPartyStatus(
                    party=p, joined=p in snapshot.joined, messages_delivered=snapshot.delivered[p]
                )
                for p in spec.participants
            ],
            created_at_ms=spec.created_ms,
            expires_at_ms=spec.expires_ms,
            limits=_limits_to_proto(spec.limits),
            messages=snapshot.messages,
            total_bytes=snapshot.total_bytes,
        )

    @_boundary
    async def CloseRoom(
        self,
        request: relay_pb2.CloseRoomRequest,
        context: grpc.aio.ServicerContext[relay_pb2.CloseRoomRequest, relay_pb2.CloseRoomResponse],
    ) -> relay_pb2.CloseRoomResponse:
        await self.close_room(request)
        return relay_pb2.CloseRoomResponse()

    async def close_room(self, request: relay_pb2.CloseRoomRequest) -> None:
        """Close a room with its admin token (``CloseRoom``, and a Session's ``close_room``).

        Raises:
            MalformedRequestError, RoomNotFoundError, PermissionDeniedError.
        """
        room_id = RoomId(rooms.validate_id("room_id", request.room_id))
        snapshot = await self._backend.snapshot(room_id)
        rooms.authenticate_admin(snapshot.spec, request.admin_token)
        now = self._clock()
        await self._backend.close_room(room_id, now)
        self._metrics.observe(await self._backend.usage(now))
        # The room's one line at INFO: what its ceremony moved, and how long it took.
        _log.info(
            "room closed", room_id=room_id, parties=len(snapshot.spec.participants),
            messages=snapshot.messages, total_bytes=snapshot.total_bytes,
            age_ms=now - snapshot.spec.created_ms,
        )  # fmt: skip

    @_boundary
    async def AwaitRound(
        self,
        request: relay_pb2.AwaitRoundRequest,
        context: grpc.aio.ServicerContext[
            relay_pb2.AwaitRoundRequest, relay_pb2.AwaitRoundResponse
        ],
    ) -> relay_pb2.AwaitRoundResponse:
        snapshot = await self._viewable_room(request.room_id, request.token)
        spec = snapshot.spec
        ceremony_id = rooms.validate_id("ceremony_id", request.ceremony_id, allow_empty=True)
        expected = tuple(dict.fromkeys(PartyId(p) for p in request.parties)) or spec.participants
        if any(p not in spec.token_digests for p in expected):
            raise MalformedRequestError("parties must be participants of the room")
        deadline = min(
            self._clock() + min(request.timeout_ms, self._config.max_await_ms), spec.expires_ms
        )
        # The log position is read before the round index: an envelope stored
        # in between makes the next read return at once, so none is missed.
        position, closed = snapshot.position, snapshot.closed
        while True:
            done = await self._backend.delivered(spec.room_id, ceremony_id, request.round, expected)
            now = self._clock()
            if len(done) == len(expected) or closed or now >= deadline:
                break
            wait_s = min((deadline - now) / 1000, self._config.max_block_s)
            batch = await self._backend.read(
                spec.room_id, position, self._config.read_batch, wait_s
            )
            if batch.entries:
                position = batch.entries[-1].position
            closed = batch.closed
        state: RoomState = "closed" if closed else ("expired" if now >= spec.expires_ms else "open")
        return relay_pb2.AwaitRoundResponse(
            complete=len(done) == len(expected),
            delivered=[p for p in expected if p in done],
            missing=[p for p in expected if p not in done],
            state=_STATE[state],
        )

    @_boundary
    async def Join(
        self,
        request_iterator: AsyncIterator[relay_pb2.JoinRequest],
        context: grpc.aio.ServicerContext[relay_pb2.JoinRequest, relay_pb2.JoinResponse],
    ) -> None:
        try:
            async with asyncio.timeout(self._config.hello_timeout_s):
                first = await context.read()
        except TimeoutError:
            raise HandshakeTimeoutError("no JoinHello in time") from None
        if (
            first is _EOF
            or isinstance(first, MalformedRequest)
            or not first.HasField("hello")
            or first.envelopes
        ):
            raise MalformedRequestError("the first message on a Join stream must be a JoinHello")
        party, accepted = await self.join_room(first.hello)
        await context.write(relay_pb2.JoinResponse(accepted=accepted))
        await _PartyStream(party, context).run(first.hello.resume_after)

    @_boundary
    async def Session(
        self,
        request_iterator: AsyncIterator[relay_pb2.RelaySessionRequest],
        context: grpc.aio.ServicerContext[
            relay_pb2.RelaySessionRequest, relay_pb2.RelaySessionResponse
        ],
    ) -> None:
        stream = SessionStream(
            context,
            join=self.join_room,
            close_room=self.close_room,
            clock=self._clock,
            config=self._config,
            metrics=self._metrics,
            relay_held=self._session_held,
        )
        await stream.run()

    async def join_room(
        self, hello: relay_pb2.JoinHello
    ) -> tuple[JoinedParty, relay_pb2.JoinAccepted]:
        """Admit a party to a room (a Join's hello, a Session channel's join),
        creating the room first when the hello carries its signed spec.

        Raises:
            RelayError: the room's or the party's refusal.
        """
        room_id = RoomId(rooms.validate_id("room_id", hello.room_id))
        if hello.HasField("room"):
            snapshot = await self._room_on_join(room_id, hello.room)
        else:
            snapshot = await self._backend.snapshot(room_id)
        # Authenticate before revealing anything about the room's state.
        party = rooms.authenticate_party(snapshot.spec, hello.party, hello.join_token)
        rooms.check_open(snapshot.closed, snapshot.spec.expires_ms, self._clock())
        if hello.resume_after > snapshot.position:
            raise MalformedRequestError("resume_after is past the end of the room log")
        await self._backend.mark_joined(room_id, party, self._clock())
        spec = snapshot.spec
        _log.debug("party joined", room_id=room_id, party=party)
        joined = JoinedParty(
            spec, party, self._backend, self._metrics, self._config, self._clock
        )  # fmt: skip
        return joined, relay_pb2.JoinAccepted(
            room_id=room_id,
            party=party,
            participants=spec.participants,
            next_seq=snapshot.delivered[party] + 1,
            expires_at_ms=spec.expires_ms,
            limits=_limits_to_proto(spec.limits),
        )

    async def _room_on_join(
        self, room_id: RoomId, signed: relay_pb2.SignedRoomSpec
    ) -> RoomSnapshot:
        """The room a join's signed spec describes: created now if it does not
        exist (the credential verified and spent, the quota reserved), else the
        existing room, which must have been created from the same spec.

        Raises:
            MalformedRequestError: an unreadable spec, or one for another room id.
            UnauthenticatedError: a bad, or replayed, credential for a new room.
            QuotaExceededError: the coordinator's quota or the relay's budget.
            RoomExistsError: a room with this id exists with another spec.
        """
        spec = relay_pb2.RoomSpec()
        try:
            spec.ParseFromString(signed.spec)
        except message.DecodeError:
            raise MalformedRequestError("the room spec is not a RoomSpec") from None
        if spec.room_id != room_id:
            raise MalformedRequestError("the room spec names another room")
        try:
            snapshot = await self._backend.snapshot(room_id)
        except RoomNotFoundError:
            snapshot = await self._create_from_spec(room_id, signed, spec)
        # Compared as validated at the room's creation, so an expired room is
        # reported as expired, not its spec as malformed.
        if not rooms.same_room(snapshot.spec, self._spec(spec, snapshot.spec.created_ms, "")):
            raise RoomExistsError(f"room {room_id} exists with another spec")
        return snapshot

    def _spec(self, spec: relay_pb2.RoomSpec, now_ms: int, owner: str) -> rooms.RoomSpec:
        return rooms.room_from_spec(
            room_id=spec.room_id,
            participants=spec.participants,
            expires_ms=spec.expires_at_ms,
            limits=rooms.RoomLimits(
                max_message_bytes=spec.limits.max_message_bytes,
                max_messages=spec.limits.max_messages,
                max_total_bytes=spec.limits.max_total_bytes,
            ),
            token_digests=spec.token_digests,
            admin_digest=spec.admin_digest,
            config=self._config,
            now_ms=now_ms,
            owner=owner,
        )

    async def _create_from_spec(
        self, room_id: RoomId, signed: relay_pb2.SignedRoomSpec, spec: relay_pb2.RoomSpec
    ) -> RoomSnapshot:
        now = self._clock()
        admission = self._verify(signed.credential, signed.spec, now, context=ROOM_SPEC_CONTEXT)
        coordinator = admission.coordinator
        new = self._spec(spec, now, coordinator.name)
        try:
            await self._spend(admission, now)
        except UnauthenticatedError:
            # Spent already: by a replay, or by another party's join creating
            # this room at the same moment (on this relay or another).
            created = await self._await_room(room_id)
            if created is None:
                raise
            return created
        try:
            await self._backend.create_room(
                new, now, quota=coordinator.quota, budget=self._admitter.policy.budget
            )
        except RoomExistsError:
            return await self._backend.snapshot(room_id)
        self._metrics.rooms_created.labels(coordinator.name).inc()
        self._metrics.observe(await self._backend.usage(now))
        _log.debug(
            "room created on join", room_id=room_id, parties=len(new.participants),
            coordinator=coordinator.name,
        )  # fmt: skip
        return await self._backend.snapshot(room_id)

    async def _await_room(self, room_id: RoomId) -> RoomSnapshot | None:
        """The room another join is creating, once it exists; None if it does
        not appear within ``config.room_race_s``."""
        deadline = time.monotonic() + self._config.room_race_s
        while True:
            try:
                return await self._backend.snapshot(room_id)
            except RoomNotFoundError:
                if time.monotonic() >= deadline:
                    return None
            await asyncio.sleep(0.01)


class _PartyStream:
    """One joined party's Join stream: an inbound task stores envelopes and
    queues acks, a delivery task tails the room log and queues deliveries, and
    the handler's own task is the only writer (gRPC allows one write at a time)."""

    def __init__(
        self,
        party: JoinedParty,
        context: grpc.aio.ServicerContext[relay_pb2.JoinRequest, relay_pb2.JoinResponse],
    ) -> None:
        self._party = party
        self._context = context
        self._outbox: _Outbox = asyncio.Queue(maxsize=_OUTBOX_SIZE)

    async def run(self, resume_after: int) -> None:
        tasks = [
            asyncio.create_task(self._guard(self._inbound())),
            asyncio.create_task(self._guard(self._deliver(resume_after))),
        ]
        try:
            while await self._write_next():
                pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write_next(self) -> bool:
        """Write one JoinResponse holding every queued event (up to the byte
        budget); return False once the stream is to end with OK. A failure is
        raised after the events queued before it are written."""
        response = relay_pb2.JoinResponse()
        size, more, content = 0, True, False
        failure: BaseException | None = None
        item = await self._outbox.get()
        while True:
            if isinstance(item, relay_pb2.EnvelopeDelivery):
                response.deliveries.append(item)
                size += len(item.envelope.payload)
                content = True
            elif isinstance(item, relay_pb2.EnvelopeAck):
                response.acks.append(item)
                content = True
            elif isinstance(item, relay_pb2.RoomEnded):
                response.ended.CopyFrom(item)
                content = True
            elif isinstance(item, _Done):
                more = False
            else:
                failure = item
            if failure is not None or not more or self._outbox.empty():
                break
            if size >= _COALESCE_BYTES:
                break
            item = self._outbox.get_nowait()
        if content:
            await self._context.write(response)
        if failure is not None:
            raise failure
        return more

    async def _guard(self, job: Awaitable[None]) -> None:
        """Hand a task's failure to the writer, which raises it at the boundary."""
        try:
            await job
        except Exception as e:
            await self._outbox.put(e)

    async def _inbound(self) -> None:
        while True:
            request = await self._context.read()
            if request is _EOF:
                return  # half-close: the party only listens from now on
            if isinstance(request, MalformedRequest):
                raise MalformedRequestError("a Join request is not a valid message")
            if request.HasField("hello"):
                raise MalformedRequestError("only the first message may carry a JoinHello")
            stored = await self._party.store(request.envelopes)
            for seq, position in stored.acks:
                await self._outbox.put(relay_pb2.EnvelopeAck(seq=seq, position=position))
            if stored.error is not None:
                raise stored.error

    async def _deliver(self, cursor: int) -> None:
        async def queue(deliveries: list[relay_pb2.EnvelopeDelivery]) -> None:
            for d in deliveries:
                await self._outbox.put(d)

        reason = await self._party.follow(cursor, queue)
        await self._outbox.put(relay_pb2.RoomEnded(reason=reason))
        await self._outbox.put(_DONE)


async def create_server(
    address: str,
    backend: Backend,
    *,
    admitter: Admitter,
    config: RelayConfig | None = None,
    clock: Clock = wall_clock_ms,
    health_servicer: AsyncHealthServicer | None = None,
    metrics: RelayMetrics | None = None,
    tls: ServerTls | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Build a relay gRPC server (not started) with the health service.

    Arguments:
        address: ``host:port`` (port 0 picks a free one; tests use
            ``127.0.0.1:0``) or ``unix:/path``.
        backend: room storage; the caller closes it after the server stops.
        admitter: the coordinators that may create rooms, their quotas and the budget.
        config: relay defaults and limits (``RelayConfig()`` if None).
        clock: Unix time in ms.
        health_servicer: pass one to drive graceful shutdown
            (``enter_graceful_shutdown``); a new one is made otherwise.
        metrics: where the relay counts (a fresh registry if None).
        tls: serve TLS (parties reach the relay across the Internet); None: plaintext.

    Returns:
        ``(server, bound_port)``; the port is 0 for a Unix socket.

    Raises:
        RuntimeError: the address cannot be bound.
    """
    config = config or RelayConfig()
    # Room limits are enforced by the relay; the transport cap only needs room
    # for the largest allowed payload plus the envelope's routing fields.
    max_frame = config.max_limits.max_message_bytes + 64 * 1024
    metrics = metrics or RelayMetrics()
    servicer = RelayServicer(
        backend, admitter=admitter, config=config, clock=clock, metrics=metrics
    )
    server = grpc.aio.server(
        interceptors=[
            MalformedRequests(
                authenticate=servicer.authenticate_malformed,
                on_malformed=lambda method: metrics.malformed.labels(method).inc(),
            )
        ],
        options=[
            ("grpc.max_receive_message_length", max_frame),
            ("grpc.max_send_message_length", max_frame),
            ("grpc.so_reuseport", 0),
            *keepalive.server_options(),  # the processes' Session streams ping
        ],
    )
    relay_pb2_grpc.add_RelayServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = health_servicer or new_health_servicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, "grpc.health.v1.Health", reflection.SERVICE_NAME), server
    )
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.credentials())
    return server, 0 if address.startswith("unix:") else port
