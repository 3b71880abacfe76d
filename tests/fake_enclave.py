"""A fake enclave for the host's tests: the Enclave gRPC contract with canned behaviour.

It speaks the host <-> enclave stream contract (host/enclave_link.py) as a
two-round toy ceremony with one peer: round 1 it broadcasts, then waits for
one inbound envelope; key-changing ceremonies then store a sealed share and
wait for the host's acknowledgement; round 2 it sends one point-to-point
envelope to the peer and answers with the result. A refresh's or reshare's
share comes with a ``KeyChange`` and the result with its certificate, made
with two host keys the fake holds itself (``SEAT_KEYS``): the host checks
what it is given, not who the seats are. ``Script`` injects failures
(a status at a chosen step, a stall, an illegal output). Every channel of a
``Session`` stream runs the same script as a ``RunCeremony`` call.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from shardkeep.framing import unbatched
from shardkeep.v1 import ceremony_pb2, enclave_pb2, enclave_pb2_grpc, envelope_pb2
from tss.certificate import sign_certificate
from tss.dkg.chilldkg import hostpubkey_gen

K = ceremony_pb2.CeremonyKind
KEY_CHANGING = {K.CEREMONY_KIND_KEYGEN, K.CEREMONY_KIND_RESHARE, K.CEREMONY_KIND_REFRESH}

STATIC_KEY = bytes(range(1, 33))
HOST_PUBKEY = b"\x02" + bytes(range(32))
SEALED_IDENTITY = b"sealed-identity:" + bytes(16)
PUBLIC_KEY = b"\x03" + hashlib.sha256(b"fake public key").digest()
SEAT_KEYS = (hashlib.sha256(b"fake seat 0").digest(), hashlib.sha256(b"fake seat 1").digest())


def key_change_of(request: ceremony_pb2.CeremonyRequest) -> tuple[ceremony_pb2.KeyChange, bytes]:
    """The fake's key change for a refresh or reshare request, and its complete certificate."""
    session_id = hashlib.sha256(b"session:" + request.ceremony_id.encode()).digest()
    transcript = hashlib.sha256(b"transcript:" + request.ceremony_id.encode()).digest()
    certificate = b"".join(
        sign_certificate(k, session_id, transcript, i, bytes(32)) for i, k in enumerate(SEAT_KEYS)
    )
    change = ceremony_pb2.KeyChange(
        session_id=session_id,
        transcript=transcript,
        host_pubkeys=[hostpubkey_gen(k) for k in SEAT_KEYS],
    )
    return change, certificate


# Planted in every payload and sealed blob the fake produces; log tests scan for it.
CANARY = b"CANARY-7f3e9c1d-secret-payload"


def sealed_blob(request: ceremony_pb2.CeremonyRequest, what: bytes) -> bytes:
    """A sealed-looking blob unique to the ceremony (contains the canary)."""
    return CANARY + what + hashlib.sha256(request.SerializeToString()).digest()


@dataclass
class Script:
    """Canned behaviour of the next ceremonies.

    Attributes:
        fail_at: step at which to fail with ``code``: "start" (before anything),
            "after_round1" (after the inbound), "after_store" (after the ack), or None.
        code / message / culprits: the failure's status and culprit trailers.
        stall_at: step at which to hang until cancelled ("after_store", "before_result").
        store_in_sign: store a share even in a sign (an illegal output).
        result_epoch_offset: added to the result's epoch (a wrong result).
        gate: if set, awaited before the result.
        old_protocol: send round 1 as an enclave of the previous release did (one
            envelope in CeremonyOutput field 1, since reserved): an output this host
            does not know.
    """

    fail_at: str | None = None
    code: grpc.StatusCode = grpc.StatusCode.ABORTED
    message: str = "participant alice sent an invalid share"
    culprits: tuple[str, ...] = ("alice",)
    stall_at: str | None = None
    store_in_sign: bool = False
    result_epoch_offset: int = 0
    gate: asyncio.Event | None = None
    old_protocol: bool = False


@dataclass
class Seen:
    """What one RunCeremony call received."""

    start: enclave_pb2.CeremonyStart | None = None
    inbound: list[envelope_pb2.Envelope] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    request_id: str = ""
    cancelled: bool = False


class FakeEnclave(enclave_pb2_grpc.EnclaveServicer):
    """The Enclave service with canned behaviour (see the module docstring)."""

    def __init__(self, *, peer: str = "alice") -> None:
        self.peer = peer
        self.script = Script()
        self.provisioned: list[bytes] = []
        self.runs: list[Seen] = []
        self.attestation_request_ids: list[str] = []
        # Called (in the enclave's task) once the host acknowledged a stored share.
        self.on_ack: Callable[[int], None] | None = None
        self.status_calls = 0
        # False after ``lose_identity`` (a restart) until the next Provision; a
        # fake with ``provision_forgets`` never gets it back.
        self.has_identity = True
        self.provision_forgets = False

    def lose_identity(self) -> None:
        """Behave as an enclave that restarted: refuse work as not provisioned until Provision."""
        self.has_identity = False

    async def _refuse_unprovisioned(self, context: Any) -> None:
        if not self.has_identity:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the enclave is not provisioned yet",
                trailing_metadata=(("shardkeep-reason", "not-provisioned"),),
            )

    async def Provision(
        self, request: enclave_pb2.ProvisionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> enclave_pb2.ProvisionResponse:
        self.provisioned.append(bytes(request.sealed_identity))
        self.has_identity = not self.provision_forgets
        return enclave_pb2.ProvisionResponse(
            sealed_identity=SEALED_IDENTITY, static_key=STATIC_KEY, host_pubkey=HOST_PUBKEY
        )

    async def GetAttestation(
        self,
        request: enclave_pb2.GetAttestationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> enclave_pb2.GetAttestationResponse:
        await self._refuse_unprovisioned(context)
        self.attestation_request_ids.append(_request_id(context))
        return enclave_pb2.GetAttestationResponse(document=b"attestation:" + request.nonce)

    async def GetStatus(
        self, request: enclave_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> enclave_pb2.GetStatusResponse:
        self.status_calls += 1
        key = STATIC_KEY if self.has_identity else b""
        return enclave_pb2.GetStatusResponse(version="fake", static_key=key)

    async def RunCeremony(
        self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        seen = Seen(request_id=_request_id(context))
        self.runs.append(seen)
        script = self.script
        try:
            await self._run(seen, script, context)
        except asyncio.CancelledError:
            seen.cancelled = True
            raise

    async def Session(
        self, request_iterator: AsyncIterator[enclave_pb2.SessionInput], context: Any
    ) -> AsyncIterator[enclave_pb2.SessionOutput]:
        """Each channel runs as one RunCeremony call of the script would, and ends with its
        status in a ``ChannelEnd`` after its ``CeremonyFailure``, as the real enclave's
        (the fake sends a ``ChannelEnd`` after a result too, which the host ignores)."""
        outputs: asyncio.Queue[enclave_pb2.SessionOutput | None] = asyncio.Queue()
        channels: dict[int, _ChannelContext] = {}

        async def read_frames() -> None:
            try:
                async for message in request_iterator:
                    for frame in unbatched(message):
                        route(frame)
            finally:
                outputs.put_nowait(None)

        def route(frame: enclave_pb2.SessionInput) -> None:
            kind = frame.WhichOneof("frame")
            channel = channels.get(frame.channel)
            if channel is None and kind == "input":
                channel = channels[frame.channel] = _ChannelContext(frame.channel, outputs)
                channel.task = asyncio.create_task(self._serve_channel(channel))
            if channel is None:
                return
            if kind == "input":
                channel.inbox.put_nowait(frame.input)
            elif kind == "half_close":
                channel.inbox.put_nowait(grpc.aio.EOF)  # type: ignore[attr-defined]
            elif kind == "cancel" and channel.task is not None:
                channel.task.cancel()

        reader = asyncio.create_task(read_frames())
        try:
            while (output := await outputs.get()) is not None:
                yield output
        finally:
            reader.cancel()
            for channel in channels.values():
                if channel.task is not None:
                    channel.task.cancel()

    async def _serve_channel(self, channel: _ChannelContext) -> None:
        seen = Seen(request_id="")  # a channel carries no call metadata
        self.runs.append(seen)
        end = enclave_pb2.ChannelEnd(code=grpc.StatusCode.OK.name)
        try:
            await self._run(seen, self.script, channel)
        except asyncio.CancelledError:
            seen.cancelled = True
            raise
        except _Aborted as e:
            failure = enclave_pb2.CeremonyFailure(
                code=e.code.name,
                message=e.message,
                culprits=[v for k, v in e.trailers if k == "shardkeep-culprits"],
                reason=next((v for k, v in e.trailers if k == "shardkeep-reason"), ""),
            )
            await channel.write(enclave_pb2.CeremonyOutput(failure=failure))
            end = enclave_pb2.ChannelEnd(code=e.code.name, message=e.message)
        channel.outputs.put_nowait(enclave_pb2.SessionOutput(channel=channel.number, end=end))

    async def _run(self, seen: Seen, script: Script, context: Any) -> None:
        first = await context.read()
        assert isinstance(first, enclave_pb2.CeremonyInput) and first.HasField("start")
        seen.start = first.start
        await self._refuse_unprovisioned(context)
        request = ceremony_pb2.CeremonyRequest.FromString(first.start.request.request)
        # A reshare may add the server party (new_parties only: an import).
        me = next(
            p.party_id
            for p in (*request.parties, *request.new_parties)
            if p.static_key == STATIC_KEY
        )

        async def fail_or_stall(step: str) -> None:
            if script.fail_at == step:
                await context.abort(
                    script.code,
                    script.message,
                    trailing_metadata=tuple(("shardkeep-culprits", c) for c in script.culprits),
                )
            if script.stall_at == step:
                await asyncio.Event().wait()

        def envelope(round_: int, recipient: str, what: bytes) -> enclave_pb2.CeremonyOutput:
            sent = envelope_pb2.Envelope(
                room_id=request.room_id,
                ceremony_id=request.ceremony_id,
                round=round_,
                sender=me,
                recipient=recipient,
                payload=CANARY + what,
            )
            return enclave_pb2.CeremonyOutput(
                outbound=enclave_pb2.OutboundEnvelopes(envelopes=[sent])
            )

        await fail_or_stall("start")
        if script.old_protocol:
            (sent,) = envelope(1, "", b"round-1").outbound.envelopes
            field_1 = b"\x0a" + _varint(sent.ByteSize()) + sent.SerializeToString()
            await context.write(enclave_pb2.CeremonyOutput.FromString(field_1))
            await asyncio.Event().wait()  # the host ends the ceremony
        await context.write(envelope(1, "", b"round-1"))
        item = await context.read()
        assert isinstance(item, enclave_pb2.CeremonyInput) and item.HasField("inbound")
        seen.inbound.append(item.inbound)
        await fail_or_stall("after_round1")

        epoch = 0 if request.kind == K.CEREMONY_KIND_KEYGEN else request.epoch + 1
        change, certificate = key_change_of(request)
        certified = request.kind in (K.CEREMONY_KIND_RESHARE, K.CEREMONY_KIND_REFRESH)
        if request.kind in KEY_CHANGING or script.store_in_sign:
            index = [p.party_id for p in request.new_parties or request.parties].index(me)
            share = ceremony_pb2.SealedShare(
                wallet_id=request.wallet_id,
                share_index=index,
                scheme=request.scheme or ceremony_pb2.SCHEME_BIP340,
                epoch=epoch,
                encrypted_data_key=sealed_blob(request, b"data-key"),
                ciphertext=sealed_blob(request, b"ciphertext"),
                public_key=PUBLIC_KEY,
            )
            if certified:
                share.key_change.CopyFrom(change)
            await context.write(enclave_pb2.CeremonyOutput(store=share))
            ack = await context.read()
            assert isinstance(ack, enclave_pb2.CeremonyInput) and ack.HasField("store_ack")
            seen.acks.append(ack.store_ack.epoch)
            if self.on_ack is not None:
                self.on_ack(ack.store_ack.epoch)
            await fail_or_stall("after_store")

        await context.write(envelope(2, self.peer, b"round-2"))
        await fail_or_stall("before_result")
        if script.gate is not None:
            await script.gate.wait()
        result = ceremony_pb2.CeremonyResult(
            ceremony_id=request.ceremony_id,
            wallet_id=request.wallet_id,
            public_key=PUBLIC_KEY,
            epoch=epoch + script.result_epoch_offset,
        )
        if certified:
            result.certificate = certificate
        if request.kind == K.CEREMONY_KIND_SIGN:
            result.signature = hashlib.sha512(bytes(request.digest)).digest()
        if request.kind == K.CEREMONY_KIND_EXPORT:
            result.encrypted_export = sealed_blob(request, b"export")
        await context.write(enclave_pb2.CeremonyOutput(result=result))


def _varint(n: int) -> bytes:
    """A protobuf base-128 varint (a length prefix); protobuf's own encoder is internal API."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


class _Aborted(Exception):
    """A session channel's ``abort``: the status its call would have ended with."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.trailers = code, message, tuple(trailers or ())


class _ChannelContext:
    """What ``FakeEnclave._run`` uses of a call's context, for one session channel."""

    def __init__(
        self, number: int, outputs: asyncio.Queue[enclave_pb2.SessionOutput | None]
    ) -> None:
        self.number = number
        self.outputs = outputs
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def read(self) -> Any:
        return await self.inbox.get()

    async def write(self, output: enclave_pb2.CeremonyOutput) -> None:
        self.outputs.put_nowait(enclave_pb2.SessionOutput(channel=self.number, output=output))

    async def abort(self, code: grpc.StatusCode, message: str, trailing_metadata: Any = ()) -> None:
        raise _Aborted(code, message, trailing_metadata)


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return str(value)
    return ""


async def start_fake_enclave(
    fake: FakeEnclave, address: str = "127.0.0.1:0"
) -> tuple[grpc.aio.Server, str]:
    """Serve ``fake``; return the started server and its target address."""
    server = grpc.aio.server()
    enclave_pb2_grpc.add_EnclaveServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(address)
    await server.start()
    target = address if address.startswith("unix:") else f"127.0.0.1:{port}"
    return server, target
