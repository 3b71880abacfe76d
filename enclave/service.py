"""The enclave's gRPC service: the only door into the server share (docs/architecture.md).

The host calls it over vsock (a Unix socket off Nitro). Every ceremony request
is authorised here (``enclave.auth``), the wallet's sealed record is opened
with a key only this attested enclave gets from KMS, and the ceremony runs
over end-to-end sealed envelopes the host merely carries. New shares leave
only sealed, and only after the host has acknowledged storing them is the
result released. Errors are translated once, by ``STATUS_TABLE``.

KMS credentials come from the host too (``SetCredentials``, before
``Provision`` and again before they expire): the parent instance role's
temporary credentials, never part of the image, never logged. After a KMS key
rotation the enclave still opens what older keys sealed (``enclave.seal``);
``Provision`` re-seals the enclave's identity under the current key, and a
refresh or reshare migrates a wallet (its new epoch is sealed under the
current key).

The server party's DKLs23 pair setups never leave enclave memory
(``enclave.pair_setups``, docs/security/ot-setups.md): records are sealed
without them, a signing session takes the setups its request names, and each
session step runs under the locks of its pairs, so a burn is atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

import cbor2
import grpc
import structlog

from enclave.auth import Authorizer, CoordinatorSigned
from enclave.ceremonies import Plan, plan, scheme_of
from enclave.config import RECORD_CACHE_SIZE
from enclave.errors import (
    BadRequest,
    ChallengeRefused,
    NotProvisioned,
    Overloaded,
    Unauthorized,
    WrongShare,
)
from enclave.identity import Identity, KeyChangeProof, ServerShare
from enclave.kms import KmsCredentials, KmsError
from enclave.nsm import MAX_USER_DATA_SIZE, Nsm
from enclave.pair_setups import NO_LOCKS, PairKey, PairLocks, PairSetups, without_pair_setups
from enclave.policy.authenticators import ApprovalRefused
from enclave.policy.engine import PolicyDenied
from enclave.policy.gate import PolicyGate, PolicyRequired
from enclave.policy.organisation import Organisation
from enclave.refusals import MalformedCounts
from enclave.seal import SealBinding, SealedShare, ShareSealer, UnsealedShare
from enclave.step_costs import StepCosts
from shardkeep.framing import BatchError, batched, drain, unbatched, until_end
from shardkeep.lifecycle import seat_party_ids
from shardkeep.server import (
    AsyncHealthServicer,
    MalformedRequest,
    bind,
    mark_serving,
    new_server,
)
from shardkeep.v1 import ceremony_pb2, enclave_pb2, enclave_pb2_grpc, envelope_pb2
from tss.ecdsa.setup import PeerSetup
from tss.errors import InputError, PairSetupError, ProtocolError, SessionStateError
from tss.keyshare import KeyShare

log = structlog.get_logger("enclave")
VERSION = "0.1.0"
IDENTITY_BINDING = SealBinding("_enclave/identity", 0, "enclave-identity", 0)
CULPRITS_METADATA = "shardkeep-culprits"
REASON_METADATA = "shardkeep-reason"
PAIR_SETUP_REQUIRED = "pair-setup-required"
"""The reason when a DKLs23 pair setup is missing or burned: run a pair setup, then retry."""
POLICY_DENIED = "policy-denied"
"""The reason when the wallet's (or the organisation's) policies refuse; the message names
the policy and condition."""
APPROVAL_REFUSED = "approval-refused"
"""The reason when an approval does not verify; the message names the authenticator."""
POLICY_REQUIRED = "policy-required"
"""The reason when a new wallet registers no policy set, or a wallet without one asks
anything but to adopt one (the message says how)."""
NOT_PROVISIONED = "not-provisioned"
"""The reason when the enclave has no identity (it restarted): provision it, then retry."""
CHALLENGE_REFUSED = "challenge-refused"
"""The reason when a request's challenge is unknown to this enclave process (another one
issued it, or it restarted since), used or expired: a new request with a new challenge may run."""
DRAIN_SECONDS = 5.0  # how long a failed ceremony waits for the host's half-close
# Bounds on what the (untrusted) host may make a Session stream hold in enclave memory.
MAX_SESSION_CHANNELS = 1024  # ceremonies running on one stream
MAX_CHANNEL_BACKLOG = 256  # inputs queued for one ceremony, not yet read by it
# Answers queued for a host that does not read them: past this the enclave
# stops reading the stream until the host catches up.
MAX_SESSION_OUTPUTS = 1024
# Bounds on SetCredentials fields (IAM access key ids are at most 128 characters;
# AWS sets no documented limit on session tokens, a few KiB in practice).
_MAX_KEY_CHARS: Final = 128
_MAX_SESSION_TOKEN_CHARS: Final = 16384

# One table maps errors to status codes. Order matters:
# the first matching class wins.
STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (Unauthorized, grpc.StatusCode.PERMISSION_DENIED),
    (WrongShare, grpc.StatusCode.FAILED_PRECONDITION),
    (NotProvisioned, grpc.StatusCode.FAILED_PRECONDITION),
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (KmsError, grpc.StatusCode.UNAVAILABLE),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InputError, grpc.StatusCode.INVALID_ARGUMENT),
    (SessionStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (ProtocolError, grpc.StatusCode.ABORTED),
)


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and the message the host may see for ``error``."""
    for kind, code in STATUS_TABLE:
        if isinstance(error, kind):
            return code, str(error)
    return grpc.StatusCode.INTERNAL, "internal error in the enclave"


def reason_for(error: BaseException) -> str:
    """A stable machine-readable reason for ``error``, or "" (the host or the SDK acts on it)."""
    if isinstance(error, PairSetupError):
        return PAIR_SETUP_REQUIRED
    if isinstance(error, NotProvisioned):
        return NOT_PROVISIONED
    if isinstance(error, ChallengeRefused):
        return CHALLENGE_REFUSED
    if isinstance(error, PolicyDenied):
        return POLICY_DENIED
    if isinstance(error, ApprovalRefused):
        return APPROVAL_REFUSED
    if isinstance(error, PolicyRequired):
        return POLICY_REQUIRED
    return ""


class CredentialsSink(Protocol):
    """Where ``SetCredentials`` puts the host's KMS credentials (``EnclaveKmsClient``)."""

    def set_credentials(self, credentials: KmsCredentials) -> None:
        """Sign later KMS requests with ``credentials``."""
        ...


@dataclass(frozen=True)
class EnclaveDeps:
    """What the service runs on: NSM, sealer (KMS), authoriser, clock and randomness.

    ``kms`` takes the credentials the host hands in (``SetCredentials``);
    None refuses them (FAILED_PRECONDITION). ``record_cache_size`` bounds the
    opened records kept in memory (``EnclaveConfig.record_cache_size``).
    """

    nsm: Nsm
    sealer: ShareSealer
    authorizer: Authorizer
    clock: Callable[[], float] = time.time
    rand: Callable[[int], bytes] = secrets.token_bytes
    kms: CredentialsSink | None = None
    record_cache_size: int = RECORD_CACHE_SIZE
    organisation: Organisation = dataclasses.field(default_factory=Organisation)


class EnclaveServicer(enclave_pb2_grpc.EnclaveServicer):
    def __init__(self, deps: EnclaveDeps) -> None:
        self._deps = deps
        self._identity: Identity | None = None
        self._running = 0
        # The server party's DKLs23 pair setups: this process's memory only.
        self.pair_setups = PairSetups()
        self._records: _RecordCache = _RecordCache(deps.record_cache_size)
        self._policy_gate = PolicyGate(deps.organisation)
        # Cheap steps run on the event loop, expensive ones in threads.
        self._steps = StepCosts()
        # Refusals as malformed, reported by GetStatus (the host exports them).
        self.malformed = MalformedCounts()

    # --- KMS credentials -------------------------------------------------------------

    async def SetCredentials(
        self,
        request: enclave_pb2.SetCredentialsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> enclave_pb2.SetCredentialsResponse:
        try:
            await asyncio.to_thread(self._set_credentials, request)
        except Exception as e:  # mapped by the one table
            await self._refuse(context, "SetCredentials", e)
            raise
        return enclave_pb2.SetCredentialsResponse()

    def _set_credentials(self, request: enclave_pb2.SetCredentialsRequest) -> None:
        sink = self._deps.kms
        if sink is None:
            raise SessionStateError("this enclave takes no KMS credentials from the host")
        # Messages name fields, never values: these are credentials.
        if not 0 < len(request.access_key_id) <= _MAX_KEY_CHARS:
            raise BadRequest(f"access_key_id must be 1..{_MAX_KEY_CHARS} characters")
        if not 0 < len(request.secret_access_key) <= _MAX_KEY_CHARS:
            raise BadRequest(f"secret_access_key must be 1..{_MAX_KEY_CHARS} characters")
        if len(request.session_token) > _MAX_SESSION_TOKEN_CHARS:
            raise BadRequest(f"session_token must be at most {_MAX_SESSION_TOKEN_CHARS} characters")
        expires = request.expires_at_unix
        if expires and expires <= self._deps.clock():
            raise BadRequest("the credentials have already expired")
        sink.set_credentials(
            KmsCredentials(
                request.access_key_id,
                request.secret_access_key,
                request.session_token or None,
            )
        )
        log.info(
            "kms credentials set",
            temporary=bool(request.session_token),
            expires_at_unix=expires or None,
        )

    # --- identity and attestation -------------------------------------------------

    async def Provision(
        self, request: enclave_pb2.ProvisionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> enclave_pb2.ProvisionResponse:
        try:
            identity, sealed = await asyncio.to_thread(
                self._provision, bytes(request.sealed_identity)
            )
        except Exception as e:  # mapped by the one table
            await self._refuse(context, "Provision", e)
            raise
        return enclave_pb2.ProvisionResponse(
            sealed_identity=sealed,
            static_key=identity.static_public_key,
            host_pubkey=identity.host_pubkey,
        )

    def _provision(self, sealed: bytes) -> tuple[Identity, bytes]:
        if sealed:
            opened = self._unseal(sealed, IDENTITY_BINDING)
            identity = Identity.from_bytes(opened.plaintext)
            if opened.stale:
                # Sealed under an older KMS key (a rotation): re-seal under the
                # current one; the host keeps the new blob (append-only), so the
                # old key can be retired. The identity never changes epoch, so
                # nothing else would migrate it.
                sealed = self._seal(opened.plaintext, IDENTITY_BINDING)
                log.info("identity re-sealed under the current kms key")
        else:
            identity = Identity.generate(self._deps.rand)
            sealed = self._seal(identity.to_bytes(), IDENTITY_BINDING)
        if self._identity is not None and self._identity.party_id != identity.party_id:
            raise WrongShare("the enclave is already provisioned with another identity")
        self._identity = identity
        log.info("provisioned", party_id=identity.party_id)
        return identity, sealed

    async def GetAttestation(
        self,
        request: enclave_pb2.GetAttestationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> enclave_pb2.GetAttestationResponse:
        identity = self._identity
        try:
            if len(request.nonce) > MAX_USER_DATA_SIZE:
                raise BadRequest(f"nonce must be at most {MAX_USER_DATA_SIZE} bytes")
            if identity is None:
                raise NotProvisioned("the enclave is not provisioned yet")
            # public_key: the static X25519 party key; user_data: the ChillDKG
            # host key, so a client learns both of the server party's keys attested.
            document = await asyncio.to_thread(
                self._deps.nsm.attestation,
                identity.host_pubkey,
                bytes(request.nonce) or None,
                identity.static_public_key,
            )
        except Exception as e:
            await self._refuse(context, "GetAttestation", e)
            raise
        return enclave_pb2.GetAttestationResponse(document=document)

    async def GetStatus(
        self, request: enclave_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> enclave_pb2.GetStatusResponse:
        static_key = self._identity.static_public_key if self._identity else b""
        return enclave_pb2.GetStatusResponse(
            version=VERSION,
            static_key=static_key,
            ceremonies_running=self._running,
            malformed_requests=self.malformed.snapshot(),
            instance_tag=self._deps.authorizer.challenges.instance_tag,
        )

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        error: BaseException,
        parties: list[str] | None = None,
    ) -> None:
        """End the call with ``error``'s status, counting a malformed request."""
        if status_for(error)[0] == grpc.StatusCode.INVALID_ARGUMENT:
            self.malformed.count(method)
        await _abort(context, error, parties)

    # --- ceremonies ----------------------------------------------------------------

    async def GetChallenge(
        self, request: enclave_pb2.GetChallengeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> enclave_pb2.GetChallengeResponse:
        try:
            challenge, expires = self._deps.authorizer.challenges.issue(int(self._deps.clock()))
        except Exception as e:  # mapped by the one table
            await self._refuse(context, "GetChallenge", e)
            raise
        return enclave_pb2.GetChallengeResponse(challenge=challenge, not_after_unix=expires)

    async def RunCeremony(
        self,
        request_iterator: AsyncIterator[enclave_pb2.CeremonyInput],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[enclave_pb2.CeremonyOutput]:
        run = _CeremonyRun()
        inputs = _inputs(request_iterator)
        try:
            async with contextlib.aclosing(self._ceremony(inputs, run)) as outputs:
                async for output in outputs:
                    yield output
        except Exception as e:
            await _drain(inputs)
            await self._refuse(context, "RunCeremony", e, running_parties(run.request))
            raise

    async def Session(
        self,
        request_iterator: AsyncIterator[enclave_pb2.SessionInput | MalformedRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[enclave_pb2.SessionOutput]:
        """Many ceremonies on one stream (docs/transport.md): each channel runs as one
        RunCeremony call would, and ends with its status in a ``ChannelEnd`` frame."""
        outputs: asyncio.Queue[enclave_pb2.SessionOutput | None] = asyncio.Queue()
        channels: dict[int, _Channel] = {}
        taken = asyncio.Event()  # an output was handed to the host

        async def read_frames() -> None:
            try:
                async for frame in request_iterator:
                    if isinstance(frame, MalformedRequest):
                        raise BadRequest("a session frame is not a valid message")
                    try:
                        frames = unbatched(frame)
                    except BatchError as e:
                        raise BadRequest(str(e)) from None
                    for one in frames:
                        self._route(one, channels, outputs)
                        # Every frame may queue answers (a challenge, a refusal):
                        # a host that does not read them is not read either.
                        while outputs.qsize() >= MAX_SESSION_OUTPUTS:
                            taken.clear()
                            await taken.wait()
            finally:
                outputs.put_nowait(None)  # the host ended the stream, or it broke

        reader = asyncio.create_task(read_frames())
        try:
            while True:
                # What is queued goes out in one message (a batch).
                items = drain(outputs, await outputs.get())
                taken.set()
                frames, _ = until_end(items, enclave_pb2.SessionOutput)
                for message in batched(frames, enclave_pb2.SessionOutputs):
                    yield message
                if len(frames) < len(items):  # the reader's end (None)
                    break
            await reader  # its error, if any, ends the stream
        except Exception as e:
            await self._refuse(context, "Session", e)
            raise
        finally:
            reader.cancel()
            for channel in channels.values():
                channel.task.cancel()

    def _route(
        self,
        frame: enclave_pb2.SessionInput,
        channels: dict[int, _Channel],
        outputs: asyncio.Queue[enclave_pb2.SessionOutput | None],
    ) -> None:
        """Hand one session frame to its channel, opening the channel on its first input."""
        kind = frame.WhichOneof("frame")
        number = frame.channel
        if kind == "get_challenge":
            outputs.put_nowait(self._session_challenge(number))
            return
        channel = channels.get(number)
        if channel is None:
            if kind != "input":
                return  # the channel has ended: late frames mean nothing
            if len(channels) >= MAX_SESSION_CHANNELS:
                outputs.put_nowait(_overloaded(number, "too many ceremonies on this session"))
                return
            inbox: asyncio.Queue[enclave_pb2.CeremonyInput | None] = asyncio.Queue()
            task = asyncio.create_task(self._serve_channel(number, inbox, outputs))
            opened = channels[number] = _Channel(inbox, task)

            def forget(_: asyncio.Task[None]) -> None:
                if channels.get(number) is opened:  # not a later channel of that number
                    del channels[number]

            task.add_done_callback(forget)
            channel = opened
        if kind == "input":
            if channel.inbox.qsize() >= MAX_CHANNEL_BACKLOG:
                # The ceremony is not reading what the host sends: end it, not the session.
                channel.task.cancel()
                channels.pop(number, None)
                outputs.put_nowait(_overloaded(number, "the host sent more than the ceremony read"))
                return
            channel.inbox.put_nowait(frame.input)
        elif kind == "half_close":
            channel.inbox.put_nowait(None)
        elif kind == "cancel":
            channel.task.cancel()

    def _session_challenge(self, number: int) -> enclave_pb2.SessionOutput:
        """A challenge for a session's ``get_challenge`` frame, or the refusal as its end."""
        try:
            challenge, expires = self._deps.authorizer.challenges.issue(int(self._deps.clock()))
        except Exception as e:  # mapped by the one table
            code, message = status_for(e)
            end = enclave_pb2.ChannelEnd(code=code.name, message=message)
            return enclave_pb2.SessionOutput(channel=number, end=end)
        answer = enclave_pb2.GetChallengeResponse(challenge=challenge, not_after_unix=expires)
        return enclave_pb2.SessionOutput(channel=number, challenge=answer)

    async def _serve_channel(
        self,
        number: int,
        inbox: asyncio.Queue[enclave_pb2.CeremonyInput | None],
        outputs: asyncio.Queue[enclave_pb2.SessionOutput | None],
    ) -> None:
        async def inputs() -> AsyncIterator[enclave_pb2.CeremonyInput]:
            while (item := await inbox.get()) is not None:
                yield item

        try:
            async with contextlib.aclosing(self._ceremony(inputs(), _CeremonyRun())) as produced:
                async for output in produced:
                    outputs.put_nowait(enclave_pb2.SessionOutput(channel=number, output=output))
                    if output.HasField("result"):
                        return  # the last output: it ends the channel (no ChannelEnd)
            # Unreachable: a ceremony ends with its result or raises.
            end = enclave_pb2.ChannelEnd(code=grpc.StatusCode.INTERNAL.name, message="no result")
        except Exception as e:  # its CeremonyFailure went first
            code, message = status_for(e)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                self.malformed.count("Session")
            end = enclave_pb2.ChannelEnd(code=code.name, message=message)
        outputs.put_nowait(enclave_pb2.SessionOutput(channel=number, end=end))

    async def _ceremony(
        self, request_iterator: AsyncIterator[enclave_pb2.CeremonyInput], run: _CeremonyRun
    ) -> AsyncGenerator[enclave_pb2.CeremonyOutput, None]:
        """One ceremony's outputs for its inputs; a failure is yielded as its last output
        (``CeremonyFailure``), then raised."""
        self._running += 1
        request: ceremony_pb2.CeremonyRequest | None = None
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("input") != "start":
                raise BadRequest("a ceremony stream starts with CeremonyStart")
            req, active = await self._begin(first.start)
            request = run.request = req
            log.debug("ceremony started", **_ids(req))
            session = active.plan.session
            inputs = _Inputs(request_iterator)
            step: Callable[[], list[Any]] = session.start
            steps_run = 0
            # An export contributor is done once it has sent: it expects nothing.
            while True:
                dropped = session.dropped.total()
                # Steps are told apart by ceremony, scheme and position: their costs differ.
                kind = (req.kind, req.scheme, steps_run)
                sent = await self._steps.run(kind, step, active.locks)
                steps_run += 1
                if session.dropped.total() > dropped and session.last_dropped is not None:
                    # Forged, replayed or misaddressed: the relay or host may have
                    # written any header, so no party is blamed; the deadline
                    # reports a message that never comes.
                    log.warning("envelope dropped", reason=session.last_dropped.reason, **_ids(req))
                if sent:  # one output per step, with every envelope it produced
                    yield active.outbound(sent)
                if session.ceremony.awaiting_save:
                    # Pending before agreement: the host stores the sealed new
                    # share (or nothing, for a leaving dealer) before our
                    # certificate signature leaves.
                    change = session.ceremony.pending
                    record = None if change is None else active.plan.pending(change)
                    if record is not None:
                        yield await asyncio.to_thread(self._store_output, req, record)
                        await inputs.store_ack(record.key_share.epoch)
                    step = session.confirm_saved
                    continue
                if session.done:
                    break
                payload = await inputs.inbound()
                if payload is None:
                    raise BadRequest("the host ended the stream before the ceremony finished")
                step = functools.partial(session.receive, payload)
            outcome = active.plan.finish(session.result)
            if outcome.pair_setup is not None:
                self._keep_pair_setup(req, active, outcome.pair_setup)
            if outcome.pair_setups_of is not None:  # an ECDSA keygen's, sealed without them
                self.pair_setups.adopt(req.wallet_id, outcome.pair_setups_of)
            if outcome.record is not None:
                yield await asyncio.to_thread(self._store_output, req, outcome.record)
                await inputs.store_ack(outcome.result.epoch)
            log.info("ceremony finished", **_ids(req), **active.allowed)
            if req.want_next_challenge:
                self._add_next_challenge(outcome.result)
            yield enclave_pb2.CeremonyOutput(result=outcome.result)
        except Exception as e:
            log.warning(
                "ceremony failed",
                error=type(e).__name__,
                reason=reason_for(e) or None,
                **(_ids(request) if request else {}),
            )
            parties = running_parties(request)
            code, message = status_for(e)
            yield enclave_pb2.CeremonyOutput(
                failure=enclave_pb2.CeremonyFailure(
                    code=code.name,
                    message=message,
                    culprits=_culprit_ids(e, parties),
                    reason=reason_for(e),
                )
            )
            raise
        finally:
            self._running -= 1

    def _add_next_challenge(self, result: ceremony_pb2.CeremonyResult) -> None:
        """Issue the coordinator's next challenge with ``result`` (docs/transport.md): from the
        one table, so its single use, expiry and cap are GetChallenge's. None when the table
        is full: the coordinator then asks GetChallenge, which refuses as overloaded."""
        try:
            challenge, expires = self._deps.authorizer.challenges.issue(int(self._deps.clock()))
        except Overloaded:
            return
        result.next_challenge = challenge
        result.next_challenge_not_after_unix = expires

    async def _begin(
        self, start: enclave_pb2.CeremonyStart
    ) -> tuple[ceremony_pb2.CeremonyRequest, _Running]:
        identity = self._identity
        if identity is None:
            raise NotProvisioned("the enclave is not provisioned yet")
        # The coordinator's signature is checked before anything else (no KMS
        # call for an unsigned request); the owner's (export,
        # reshare) needs the owner key from the sealed record. A reshare that
        # adds the server party has no record: the request registers the owner
        # key, as keygen's does (both under the pinned coordinator's signature).
        verified = self._deps.authorizer.verify_coordinator(start.request)
        unverified = verified.request  # until authorize has checked the rest
        record = None
        owner_key = None
        if _joins_without_share(unverified, identity):
            owner_key = bytes(unverified.owner_key)
        elif unverified.kind != ceremony_pb2.CEREMONY_KIND_KEYGEN:
            record = await self._load_record(unverified, identity, list(start.sealed_shares))
            owner_key = record.owner_key
        return await self._steps.run(
            ("begin", unverified.kind, unverified.scheme),
            functools.partial(self._authorize, verified, identity, record, owner_key),
        )

    def _authorize(
        self,
        verified: CoordinatorSigned,
        identity: Identity,
        record: ServerShare | None,
        owner_key: bytes | None,
    ) -> tuple[ceremony_pb2.CeremonyRequest, _Running]:
        """Check the request's authority, then plan its session (no I/O)."""
        now = int(self._deps.clock())
        request = self._deps.authorizer.authorize(verified, now, owner_key)
        if request.wallet_id.startswith("_") or not request.wallet_id:
            raise BadRequest("wallet ids must be non-empty and not start with '_'")
        # Every wallet is governed by a policy set (its own, sealed, or the
        # organisation's): the coordinator's signature alone never suffices
        # (docs/security/policy.md).
        allowed = self._policy_gate.check(
            verified.signed, request, None if record is None else record.policy_set
        )
        locks = NO_LOCKS
        if record is not None and request.kind == ceremony_pb2.CEREMONY_KIND_SIGN:
            record, locks = self._signing_record(request, record)
        # Logged with the ceremony's outcome: one info line per ceremony.
        policy = {} if allowed is None else {"policy": allowed.policy,
                                             "approvers": list(allowed.approvers)}  # fmt: skip
        return request, _Running(
            request, plan(request, identity, record, self._deps.rand), identity, record, locks,
            policy,
        )  # fmt: skip

    def _signing_record(
        self, request: ceremony_pb2.CeremonyRequest, record: ServerShare
    ) -> tuple[ServerShare, PairLocks]:
        """The record an ECDSA signature runs with: the pair setups the request names, shared
        with every other session on those pairs, and the locks of those pairs."""
        share = record.key_share
        if share.ecdsa is None:
            return record, NO_LOCKS
        me = share.party_id
        peers = sorted({j for j in request.signers if j != me and 0 <= j < share.parties})
        named = {int(j): bytes(v) for j, v in request.pair_setup_ids.items()}
        session_share, locks = self.pair_setups.session_setup(
            request.wallet_id, share, peers, named, record.party_ids
        )
        return dataclasses.replace(record, key_share=session_share), locks

    def _keep_pair_setup(
        self, request: ceremony_pb2.CeremonyRequest, active: _Running, setup: PeerSetup
    ) -> None:
        """Keep a pair setup's result in memory (never sealed)."""
        record = active.record
        if record is None or record.key_share.ecdsa is None:
            raise BadRequest("a pair setup needs the wallet's ECDSA share")
        share = record.key_share
        key = PairKey(request.wallet_id, share.epoch, record.key_share.ecdsa.key_id, setup.peer)
        self.pair_setups.put(key, setup)
        log.info("pair setup kept in memory", peer=record.party_ids[setup.peer], **_ids(request))

    async def _load_record(
        self,
        request: ceremony_pb2.CeremonyRequest,
        identity: Identity,
        sealed: list[ceremony_pb2.SealedShare],
    ) -> ServerShare:
        ids = [p.party_id for p in request.parties]
        if identity.party_id not in ids:
            raise BadRequest("the server party is not among the request's parties")
        me = ids.index(identity.party_id)
        binding = SealBinding(request.wallet_id, me, scheme_of(request), request.epoch)
        candidates = [s for s in sealed if s.share_index == me and s.epoch == request.epoch]
        if len(candidates) != 1:
            raise WrongShare("the host did not supply the server share of this wallet and epoch")
        stored = candidates[0]
        # Opened records stay in enclave memory (trusted), keyed by the exact
        # sealed bytes and binding, so a signature costs no KMS round trip; any
        # other blob the host supplies is opened and checked afresh.
        cache_key = hashlib.sha256(
            binding.encode() + bytes(stored.encrypted_data_key) + bytes(stored.ciphertext)
        ).digest()

        def open_record() -> ServerShare:
            opened = self._unseal(
                cbor2.dumps({"k": bytes(stored.encrypted_data_key), "c": bytes(stored.ciphertext)}),
                binding,
            )
            if opened.stale:
                # Sealed under an older KMS key: the wallet's next refresh or
                # reshare seals its new epoch under the current key.
                log.info("share sealed under an older kms key", wallet_id=request.wallet_id)
            # A record sealed by an earlier release may still carry pair setups:
            # never use them (the host can replay them after any burn).
            return without_pair_setups(ServerShare.from_bytes(opened.plaintext))

        record = self._records.get(cache_key)
        if record is None:  # opening costs a KMS call: off the event loop
            record = await asyncio.to_thread(self._records.get_or_open, cache_key, open_record)
        share = record.key_share
        if share.party_id != me or share.epoch != request.epoch:
            raise WrongShare("the sealed share is not the server party's at this epoch")
        if record.key_change is not None:
            # A key change's share counts only once the change is certified: the
            # host supplies the certificate, the enclave checks it itself; once
            # per record and certificate bytes (the same inputs give the same answer).
            certificate = bytes(stored.certificate)
            if not self._records.certified(cache_key, certificate):
                record.key_change.check(certificate, share.epoch)
                self._records.keep_certified(cache_key, certificate)
        return record

    def _store_output(
        self, request: ceremony_pb2.CeremonyRequest, new: ServerShare
    ) -> enclave_pb2.CeremonyOutput:
        # The new keyring's pair setups stay in memory; the sealed record has none.
        record = self.pair_setups.adopt(request.wallet_id, new)
        share: KeyShare = record.key_share
        binding = SealBinding(request.wallet_id, share.party_id, share.scheme, share.epoch)
        sealed = self._deps.sealer.seal(record.to_bytes(), binding)
        return enclave_pb2.CeremonyOutput(
            store=ceremony_pb2.SealedShare(
                wallet_id=request.wallet_id,
                share_index=share.party_id,
                scheme=request.scheme,
                epoch=share.epoch,
                encrypted_data_key=sealed.encrypted_data_key,
                ciphertext=sealed.ciphertext,
                public_key=share.public_key,
                key_change=_key_change_proto(record.key_change),
            )
        )

    # --- sealing -------------------------------------------------------------------

    def _seal(self, plaintext: bytes, binding: SealBinding) -> bytes:
        sealed = self._deps.sealer.seal(plaintext, binding)
        return cbor2.dumps({"k": sealed.encrypted_data_key, "c": bytes(sealed.ciphertext)})

    def _unseal(self, blob: bytes, binding: SealBinding) -> UnsealedShare:
        try:
            fields = cbor2.loads(blob)
            sealed = SealedShare(bytes(fields["k"]), fields["c"])
        except (cbor2.CBORDecodeError, KeyError, TypeError, ValueError) as e:
            raise WrongShare("sealed data is malformed") from e
        return self._deps.sealer.unseal_with_key(sealed, binding)


class _RecordCache:
    """A bounded LRU map of opened server-share records (enclave memory only).

    Loads are single-flight: sessions that miss on the same record together
    wait for one opening and share its object. With a key change's record goes
    the certificate that last verified for it (public, kept as long as the record).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[bytes, ServerShare] = OrderedDict()
        self._certificates: dict[bytes, bytes] = {}
        self._opening: dict[bytes, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: bytes) -> ServerShare | None:
        with self._lock:
            record = self._items.get(key)
            if record is not None:
                self._items.move_to_end(key)
            return record

    def get_or_open(self, key: bytes, open_: Callable[[], ServerShare]) -> ServerShare:
        """The cached record for ``key``, or ``open_()``'s, opened once however many ask."""
        record = self.get(key)
        if record is not None:
            return record
        with self._lock:
            flight = self._opening.setdefault(key, threading.Lock())
        try:
            with flight:
                record = self.get(key)
                if record is None:
                    record = open_()
                    self.put(key, record)
                return record
        finally:
            with self._lock:
                if self._opening.get(key) is flight:
                    del self._opening[key]

    def put(self, key: bytes, record: ServerShare) -> None:
        with self._lock:
            self._items[key] = record
            while len(self._items) > self._size:
                evicted, _ = self._items.popitem(last=False)
                self._certificates.pop(evicted, None)

    def certified(self, key: bytes, certificate: bytes) -> bool:
        """Whether ``certificate`` verified for the record ``key`` already."""
        with self._lock:
            return self._certificates.get(key) == certificate

    def keep_certified(self, key: bytes, certificate: bytes) -> None:
        """Remember that ``certificate`` verified for the record ``key`` (while it is cached)."""
        with self._lock:
            if key in self._items:
                self._certificates[key] = certificate


@dataclass
class _CeremonyRun:
    """What a ceremony's caller needs after it failed: its request, once known."""

    request: ceremony_pb2.CeremonyRequest | None = None


class _Channel(NamedTuple):
    """One ceremony on a Session stream: its inputs, and the task running it."""

    inbox: asyncio.Queue[enclave_pb2.CeremonyInput | None]
    task: asyncio.Task[None]


@dataclass
class _Running:
    request: ceremony_pb2.CeremonyRequest
    plan: Plan
    identity: Identity
    record: ServerShare | None
    # The locks of its DKLs23 pairs, held through every step: a check on a pair
    # and the burn after its failure happen with no other session on it in between.
    locks: PairLocks = NO_LOCKS
    allowed: dict[str, Any] = dataclasses.field(default_factory=dict)  # the policy that allowed it

    def outbound(self, sealed: list[Any]) -> enclave_pb2.CeremonyOutput:
        """One step's envelopes, in order, as one output."""
        envelopes = [
            envelope_pb2.Envelope(
                room_id=self.request.room_id,
                ceremony_id=self.request.ceremony_id,
                round=o.round,
                sender=self.identity.party_id,
                recipient=o.recipient_id,
                payload=o.envelope,
            )
            for o in sealed
        ]
        return enclave_pb2.CeremonyOutput(
            outbound=enclave_pb2.OutboundEnvelopes(envelopes=envelopes)
        )


def _key_change_proto(proof: KeyChangeProof | None) -> ceremony_pb2.KeyChange | None:
    if proof is None:
        return None
    return ceremony_pb2.KeyChange(
        session_id=proof.session_id, transcript=proof.transcript, host_pubkeys=proof.hostpubkeys
    )


class _Inputs:
    """The host's inputs after the start: room envelopes, and store acknowledgements."""

    def __init__(self, requests: AsyncIterator[enclave_pb2.CeremonyInput]) -> None:
        self._requests = aiter(requests)
        self._early: deque[bytes] = deque()  # envelopes that came while we awaited an ack

    async def inbound(self) -> bytes | None:
        """The next room envelope's payload (None: the host ended the stream)."""
        if self._early:
            return self._early.popleft()
        item = await anext(self._requests, None)
        if item is None:
            return None
        if item.WhichOneof("input") != "inbound":
            raise BadRequest("expected the room's envelopes")
        return bytes(item.inbound.payload)

    async def store_ack(self, epoch: int) -> None:
        """Wait for the host's acknowledgement of the share of ``epoch``; peers' envelopes
        arriving first are kept for the ceremony (they may be its last round)."""
        async for item in self._requests:
            kind = item.WhichOneof("input")
            if kind == "inbound":
                self._early.append(bytes(item.inbound.payload))
                continue
            if kind == "store_ack" and item.store_ack.epoch == epoch:
                return
            break
        raise BadRequest("the host did not acknowledge storing the new share")


async def _inputs(
    requests: AsyncIterator[enclave_pb2.CeremonyInput | MalformedRequest],
) -> AsyncIterator[enclave_pb2.CeremonyInput]:
    """The host's ceremony inputs; one that did not parse ends the ceremony
    (INVALID_ARGUMENT, through the one table)."""
    async for item in requests:
        if isinstance(item, MalformedRequest):
            raise BadRequest("a ceremony input is not a valid message")
        yield item


def _overloaded(channel: int, message: str) -> enclave_pb2.SessionOutput:
    end = enclave_pb2.ChannelEnd(code=grpc.StatusCode.RESOURCE_EXHAUSTED.name, message=message)
    return enclave_pb2.SessionOutput(channel=channel, end=end)


def running_parties(request: ceremony_pb2.CeremonyRequest | None) -> list[str]:
    """Party ids by ceremony seat, to name culprits (reshare and export seats go beyond
    ``parties``: ``shardkeep.lifecycle.seat_party_ids``)."""
    return seat_party_ids(request) if request is not None else []


def _joins_without_share(request: ceremony_pb2.CeremonyRequest, identity: Identity) -> bool:
    """A reshare that adds the server party: it holds no share of the current keyring."""
    return request.kind == ceremony_pb2.CEREMONY_KIND_RESHARE and identity.party_id not in (
        p.party_id for p in request.parties
    )


def _ids(request: ceremony_pb2.CeremonyRequest) -> dict[str, str]:
    return {
        "wallet_id": request.wallet_id,
        "room_id": request.room_id,
        "ceremony_id": request.ceremony_id,
        "kind": ceremony_pb2.CeremonyKind.Name(request.kind),
    }


async def _drain(requests: AsyncIterator[enclave_pb2.CeremonyInput]) -> None:
    """Let the host stop writing before the stream ends: its half-close ends the wait.

    A write that races the end of the stream would hide our status from the
    host (grpc/grpc#36066); waiting for the half-close (at most
    ``DRAIN_SECONDS``) makes the ``failure`` output and the status arrive intact.
    """

    async def consume() -> None:
        async for _ in requests:
            pass

    with contextlib.suppress(TimeoutError, grpc.RpcError):
        await asyncio.wait_for(consume(), DRAIN_SECONDS)


def _culprit_ids(error: BaseException, parties: list[str]) -> list[str]:
    """The party ids a protocol error blames (its culprits are ceremony seats)."""
    if not isinstance(error, ProtocolError):
        return []
    return [parties[i] for i in error.culprits if 0 <= i < len(parties)]


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    error: BaseException,
    parties: list[str] | None = None,
) -> None:
    code, message = status_for(error)
    culprits = _culprit_ids(error, parties or [])
    trailers = [(CULPRITS_METADATA, ",".join(culprits))] if culprits else []
    if reason_for(error):
        trailers.append((REASON_METADATA, reason_for(error)))
    if trailers:
        context.set_trailing_metadata(tuple(trailers))
    if code == grpc.StatusCode.INTERNAL:
        log.error("internal error", error=type(error).__name__)
    await context.abort(code, message)


class RunningEnclave(NamedTuple):
    server: grpc.aio.Server
    port: int  # the bound TCP port, 0 for a Unix socket
    servicer: EnclaveServicer
    health: AsyncHealthServicer


async def create_server(address: str, deps: EnclaveDeps) -> RunningEnclave:
    """Build and start the enclave's gRPC server on ``address`` (``unix:/path`` or host:port)."""
    servicer = EnclaveServicer(deps)
    server, health = new_server(on_malformed=servicer.malformed.count)
    enclave_pb2_grpc.add_EnclaveServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = bind(server, address)
    await server.start()
    await mark_serving(health, ["shardkeep.v1.Enclave"])
    return RunningEnclave(server, port, servicer, health)
