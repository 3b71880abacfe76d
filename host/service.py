"""The host's public gRPC API for relay coordinators (host.proto ``Host``).

Ceremony calls (Keygen, Sign, Reshare, Refresh, Export) are checked against
the method (``host.ceremony_plan``), then run by ``host.enclave_link``:
forwarded to the enclave, with the room's traffic relayed both ways and the
sealed shares stored. GetWallet and ListWallets read the store;
GetAttestation forwards to the enclave, and so does GetChallenge (a single-use
challenge for the next ceremony request). PutBackup, GetBackup and ListBackups
keep the clients' backup shares, which the clients encrypt before upload: the
host stores opaque ciphertext. ``Session`` carries the ceremony calls and
challenges of one coordinator as channels of one long-lived stream
(``host.host_session``). The host authorises nothing itself: the enclave
verifies every request's proof of authority (docs/architecture.md, "The enclave
boundary").

Around every call, ``RequestInterceptor`` checks the optional API token before
the handler, assigns the request id (the caller's ``x-request-id`` or a fresh
one, also sent back in the initial metadata), and logs method, peer, status,
duration and ids (request, room, ceremony, wallet) as one JSON line: never
request or response bodies, tokens, payloads or blobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from host.ceremony_plan import KIND_NAMES, plan_ceremony, scheme_enum
from host.enclave_link import CeremonyDriver, EnclaveLink, LinkConfig, ceremony_budget
from host.enclave_pool import EnclavePool
from host.errors import HostError, error_for
from host.host_session import MAX_SESSION_CHANNELS, SessionStream
from host.metrics import HostMetrics
from host.store import (
    Backup,
    BackupBlob,
    BackupInfo,
    BackupQuota,
    EpochRecord,
    Store,
    StoreConflictError,
    Wallet,
)
from host.store_records import check_id
from relay.client import RelayClient
from shardkeep import keepalive
from shardkeep.keychange import CertificateError, check_ack, check_certificate
from shardkeep.requests import RETIRE_EPOCH_CONTEXT, request_signature_valid, retire_epoch_message
from shardkeep.server import (
    AsyncHealthServicer,
    MalformedRequest,
    MalformedRequests,
    bind,
    new_health_servicer,
)
from shardkeep.tls import ServerTls
from shardkeep.v1 import ceremony_pb2, host_pb2, host_pb2_grpc

__all__ = [
    # Functions
    "create_server",
    "enclave_pool",
    # Types
    "HostServicer",
    "RequestInterceptor",
    "SERVICE_NAME",
]

SERVICE_NAME: Final = "shardkeep.v1.Host"
REQUEST_ID_KEY: Final = "x-request-id"
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_NONCE_BYTES: Final = 512  # the NSM's limit on an attestation nonce
_MAX_MESSAGE_BYTES: Final = 8 << 20
_MAX_AFFINITY_CHARS: Final = 256  # routing only: a longer key is cut, never refused
_K = ceremony_pb2.CeremonyKind
# Per-call ids bound into the log context by the handler, cleared by the interceptor.
# Called once or more per ceremony: their successful calls log at DEBUG.
_PER_CEREMONY_METHODS: Final = frozenset(
    {"Keygen", "Sign", "Reshare", "Refresh", "Export", "PairSetup", "GetChallenge"}
)
_CALL_LOG_KEYS: Final = ("request_id", "method", "room_id", "ceremony_id", "wallet_id", "kind")


def _request_id(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The caller's ``x-request-id`` if it is a plain id, else a fresh one."""
    for key, value in metadata:
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return _safe_request_id(value)
    return uuid.uuid4().hex


def _safe_request_id(given: str) -> str:
    """``given`` if it is a plain id, else a fresh one.

    A caller-chosen id is accepted only in a safe alphabet so that it cannot
    forge log fields.
    """
    return given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex


def _bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ")
    return None


# grpc-stubs makes the interceptor generic; the runtime class is not subscriptable.
if TYPE_CHECKING:
    _InterceptorBase = grpc.aio.ServerInterceptor[Any, Any]
else:
    _InterceptorBase = grpc.aio.ServerInterceptor

_Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class RequestInterceptor(_InterceptorBase):
    """API-token check, request ids, one log line and the call counter per unary call;
    the API-token check and one log line per ``Session`` stream."""

    def __init__(self, metrics: HostMetrics, api_tokens: Sequence[str] = ()) -> None:
        """Arguments:
        metrics: where calls are counted.
        api_tokens: accepted ``authorization: Bearer <token>`` values; empty
            disables the check (the enclave authorises ceremonies either way;
            the token keeps strangers off the host's API).
        """
        self._metrics = metrics
        self._tokens = tuple(t.encode() for t in api_tokens)
        self._log = structlog.get_logger("host.rpc")

    def _authorized(self, metadata: Iterable[tuple[str, str | bytes]]) -> bool:
        if not self._tokens:
            return True
        token = _bearer_token(metadata)
        if token is None:
            return False
        given = token.encode()
        # Compare with every token, constant-time.
        return any([hmac.compare_digest(given, t) for t in self._tokens])

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        # None for an unknown method, whatever the stubs say.
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        full_method: str = handler_call_details.method
        if handler is None or full_method.startswith("/grpc."):
            return handler  # type: ignore[return-value]  # health and unknown methods: as they are
        method = full_method.rsplit("/", 1)[-1]
        # grpc's Metadata iterates as (key, value) pairs; the stubs say otherwise.
        metadata: tuple[tuple[str, str | bytes], ...] = tuple(
            handler_call_details.invocation_metadata or ()
        )
        request_id = _request_id(metadata)
        authorized = self._authorized(metadata)
        if handler.stream_stream is not None:
            return self._stream(handler, method, request_id, authorized)
        if handler.unary_unary is None:
            return handler  # the host serves no other kind of method
        behavior = cast(_Behavior, handler.unary_unary)  # async under grpc.aio

        async def logged(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with self._checked(context, method, request_id, authorized, stream=False):
                return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _stream(
        self,
        handler: grpc.RpcMethodHandler[Any, Any],
        method: str,
        request_id: str,
        authorized: bool,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A streaming method: the token before the first frame, one line when it ends (its
        channels are counted as the calls they stand for, by ``host.host_session``)."""
        behavior = cast(Callable[..., AsyncIterator[Any]], handler.stream_stream)

        async def logged(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async with self._checked(context, method, request_id, authorized, stream=True):
                async for response in behavior(requests, context):
                    yield response

        return grpc.stream_stream_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @contextlib.asynccontextmanager
    async def _checked(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        request_id: str,
        authorized: bool,
        *,
        stream: bool,
    ) -> AsyncIterator[None]:
        """What every call and stream gets around its work: its request id in the logs and
        the response metadata, the API token checked before any work, and one log line
        with its status when it ends (a unary call also counted by method and status)."""
        structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
            if not authorized:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or bad API token")
            yield
            code = _code_of(context, grpc.StatusCode.OK)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = _code_of(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            if not stream:  # a stream's channels count as the calls they stand for
                self._metrics.calls.labels(method, code.name).inc()
            # A ceremony logs its own line; its calls (the ceremony's, the
            # challenge before it) only at DEBUG unless they failed.
            quiet = method in _PER_CEREMONY_METHODS and code == grpc.StatusCode.OK
            (self._log.debug if quiet else self._log.info)(
                "stream finished" if stream else "rpc finished",
                peer=context.peer(),
                code=code.name,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            structlog.contextvars.unbind_contextvars(*_CALL_LOG_KEYS)


def _code_of(
    context: grpc.aio.ServicerContext[Any, Any], default: grpc.StatusCode
) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpc versions report the numeric code
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status
    return default


def _where(error: BaseException) -> str:
    """``module:line`` of the innermost frame that raised ``error`` (no locals, no message)."""
    tb = error.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_globals.get('__name__', '?')}:{tb.tb_lineno}"


async def _abort(context: grpc.aio.ServicerContext[Any, Any], failure: Exception) -> None:
    """End the call with the status (and the enclave's trailers) ``error_for`` gives ``failure``."""
    error = error_for(failure)
    await context.abort(error.code, error.message, trailing_metadata=error.trailers)


def _ceremony_method(kind: int, doc: str) -> Callable[..., Awaitable[ceremony_pb2.CeremonyResult]]:
    """The Host method that runs ceremonies of ``kind`` (``HostServicer._ceremony``)."""

    async def method(
        self: HostServicer,
        request: host_pb2.HostCeremonyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ceremony_pb2.CeremonyResult:
        return await self._ceremony(request, context, kind)

    method.__doc__ = doc
    return method


_DEFAULT_BACKUP_QUOTA: Final = BackupQuota()
_DEFAULT_PAGE_SIZE: Final = 100
_MAX_PAGE_SIZE: Final = 500


class HostServicer(host_pb2_grpc.HostServicer):
    """The Host service: ceremonies through the enclave, wallets from the store."""

    def __init__(
        self,
        *,
        store: Store,
        enclaves: EnclavePool,
        relay: RelayClient,
        metrics: HostMetrics,
        backup_quota: BackupQuota = _DEFAULT_BACKUP_QUOTA,
        keep_retired_epochs: int = 0,
        max_session_channels: int = MAX_SESSION_CHANNELS,
    ) -> None:
        """Arguments:
        store: the ciphertext store (caller-owned).
        enclaves: the provisioned enclaves (one or more, one identity).
        relay: the relay client (caller-owned).
        metrics: the host's metrics.
        backup_quota: most backups and blob bytes one wallet may keep.
        keep_retired_epochs: retired epochs kept after every seat acknowledged
            the current one (``AckEpoch``).
        max_session_channels: channels one ``Session`` stream may hold open at once.
        """
        self._keep_retired = keep_retired_epochs
        self._max_session_channels = max_session_channels
        self._store = store
        self._backup_quota = backup_quota
        self._enclaves = enclaves
        self._relay = relay
        self._metrics = metrics
        # Wallets with a key-changing ceremony running in this process: a second
        # one would share the pending epoch (begin_epoch is idempotent).
        self._changing: set[str] = set()
        self._log = structlog.get_logger("host.service")

    # One unary method per ceremony kind; each is ``run_ceremony`` for its kind.
    Keygen = _ceremony_method(
        _K.CEREMONY_KIND_KEYGEN,
        "Run the server share's part of a keygen (DKG) and store its sealed share.",
    )
    Sign = _ceremony_method(
        _K.CEREMONY_KIND_SIGN, "Run the server share's part of a signing ceremony."
    )
    Reshare = _ceremony_method(
        _K.CEREMONY_KIND_RESHARE,
        "Run a reshare; the new epoch (new keyring) replaces the old one on success.",
    )
    Refresh = _ceremony_method(
        _K.CEREMONY_KIND_REFRESH, "Run a refresh; the new epoch replaces the old one on success."
    )
    Export = _ceremony_method(
        _K.CEREMONY_KIND_EXPORT,
        "Run an export (the key goes, encrypted, to the request's recipient only).",
    )
    PairSetup = _ceremony_method(
        _K.CEREMONY_KIND_PAIR_SETUP,
        "Run a new DKLs23 pair setup with the server share (kept in enclave memory only).",
    )

    async def _ceremony(
        self,
        request: host_pb2.HostCeremonyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        kind: int,
    ) -> ceremony_pb2.CeremonyResult:
        try:
            return await self.run_ceremony(request, kind, context.time_remaining)
        except HostError as e:
            await _abort(context, e)
            raise

    async def run_ceremony(
        self,
        request: host_pb2.HostCeremonyRequest,
        kind: int,
        time_remaining: Callable[[], float | None],
    ) -> ceremony_pb2.CeremonyResult:
        """Run one ceremony call (of a unary method or a ``Session`` channel).

        Arguments:
            time_remaining: seconds left of the caller's deadline (None: no deadline).

        Raises:
            HostError: the status the call ends with.
        """
        kind_name = KIND_NAMES[kind]
        request_id = structlog.contextvars.get_contextvars().get("request_id") or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(kind=kind_name)
        started = time.perf_counter()
        error: HostError | None = None
        result: ceremony_pb2.CeremonyResult | None = None
        driver: CeremonyDriver | None = None
        claimed: str | None = None
        in_flight = self._metrics.in_flight.labels(kind_name)
        in_flight.inc()
        try:
            # At most half the coordinator's time for a restarted enclave to come back.
            budget = ceremony_budget(time_remaining(), self._enclaves.config)
            # The plan needs the enclaves' key first (the same in each).
            if not self._enclaves.provisioned:
                await self._enclaves.ensure_provisioned(self._store, wait_s=budget / 2)
            plan = plan_ceremony(request, kind, self._enclaves.static_key)
            structlog.contextvars.bind_contextvars(
                room_id=plan.room_id, ceremony_id=plan.ceremony_id, wallet_id=plan.wallet_id
            )
            # The enclave that issued the request's challenge: no other accepts it.
            enclave = await self._enclaves.issuer_of(
                plan.request.challenge, self._store, wait_s=budget / 2
            )
            link = enclave.link

            async def enclave_ready() -> None:
                await link.ready(self._store, wait_s=budget / 2)

            if plan.changes_keys:
                if plan.wallet_id in self._changing:
                    raise HostError(
                        grpc.StatusCode.ABORTED,
                        f"another ceremony is changing the keys of wallet {plan.wallet_id}",
                    )
                self._changing.add(plan.wallet_id)
                claimed = plan.wallet_id

            async def run() -> ceremony_pb2.CeremonyResult:
                nonlocal driver
                driver = CeremonyDriver(
                    link=link,
                    relay=self._relay,
                    store=self._store,
                    plan=plan,
                    relay_token=request.relay_token,
                    relay_room=request.relay_room if request.HasField("relay_room") else None,
                    timeout_s=ceremony_budget(time_remaining(), link.config),
                    request_id=request_id,
                    # Overlaps the driver's store reads and relay join.
                    enclave_ready=enclave_ready,
                )
                return await driver.run()

            self._log.debug("ceremony started", request_bytes=len(plan.signed.request))
            # Straight to the enclave; a restarted one is provisioned again (and
            # the ceremony run again from the room's log) only when it says so.
            with enclave.ceremony():
                result = await link.retry_unprovisioned(self._store, run)
        except Exception as e:
            error = error_for(e)
            if not isinstance(e, HostError) and error.code == grpc.StatusCode.INTERNAL:
                # The type and where only: a rendered traceback would carry the
                # frames' locals (relay token, payloads) into the log.
                self._log.error(
                    "ceremony failed unexpectedly",
                    error_type=type(e).__qualname__,
                    where=_where(e),
                )
        finally:
            in_flight.dec()
            if claimed is not None:
                self._changing.discard(claimed)
            code = grpc.StatusCode.OK if error is None else error.code
            if result is None and error is None:
                code = grpc.StatusCode.CANCELLED
            self._metrics.ceremony_seconds.labels(kind_name, code.name).observe(
                time.perf_counter() - started
            )
            stats = vars(driver.stats) if driver is not None else {}
            if error is not None and error.from_enclave:
                self._metrics.enclave_errors.labels(error.code.name).inc()
            # The ceremony's one line at INFO (its call's own line is at DEBUG).
            self._log.info(
                "ceremony finished",
                code=code.name,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                status_message=None if error is None else error.message,
                from_enclave=None if error is None else error.from_enclave,
                **stats,
            )
        if error is not None:
            raise error
        if result is None:  # unreachable: either a result or an error
            raise HostError(grpc.StatusCode.INTERNAL, "internal error")
        return result

    async def GetWallet(
        self, request: host_pb2.GetWalletRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> host_pb2.Wallet:
        """The wallet's current keyring, public key and epoch, from the store."""
        structlog.contextvars.bind_contextvars(wallet_id=request.wallet_id[:128])
        try:
            wallet = await asyncio.to_thread(self._store.get_wallet, request.wallet_id)
            if wallet.current_epoch is None:
                raise HostError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"wallet {wallet.wallet_id} has no committed key yet",
                )
        except Exception as e:
            await _abort(context, e)
        return _wallet_message(wallet)

    async def ListWallets(
        self, request: host_pb2.ListWalletsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> host_pb2.ListWalletsResponse:
        """One page of the stored wallets, in wallet-id byte order (metadata, no shares).

        The page token is the last wallet id of the previous page. A wallet whose
        keygen has not committed is left out, as GetWallet refuses it; a page may
        therefore hold fewer wallets than asked for, and only an empty
        ``next_page_token`` ends the listing.
        """
        try:
            size = request.page_size or _DEFAULT_PAGE_SIZE
            size = min(size, _MAX_PAGE_SIZE)  # a larger page is served at the cap (AIP-158)
            after = request.page_token or None
            if after is not None:
                check_id("page_token (the last wallet id of the previous page)", after)
            # One more than the page: whether another page follows, without a second query.
            found = await asyncio.to_thread(self._store.list_wallets, after=after, limit=size + 1)
        except Exception as e:
            await _abort(context, e)
        page = found[:size]
        return host_pb2.ListWalletsResponse(
            wallets=[_wallet_message(w) for w in page if w.current_epoch is not None],
            next_page_token=page[-1].wallet_id if len(found) > size else "",
        )

    # --- key changes: certificates, acknowledgments, retirement -------------------------

    async def _epochs(self, wallet_id: str) -> list[EpochRecord]:
        """The wallet's epochs, after aborting a pending one past its deadline."""
        await asyncio.to_thread(self._store.abort_expired, wallet_id)
        return await asyncio.to_thread(self._store.list_epochs, wallet_id)

    async def GetEpochs(
        self, request: host_pb2.GetEpochsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> host_pb2.Epochs:
        """Every stored epoch of the wallet: key change, certificate, acknowledgments."""
        structlog.contextvars.bind_contextvars(wallet_id=request.wallet_id[:128])
        try:
            epochs = await self._epochs(request.wallet_id)
        except Exception as e:
            await _abort(context, e)
        return host_pb2.Epochs(epochs=[_epoch_message(e) for e in epochs])

    async def SubmitCertificate(
        self,
        request: host_pb2.SubmitCertificateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> host_pb2.Wallet:
        """Commit a pending key change with its complete certificate (verified here first).

        Submitting the certificate of an epoch already committed with it is a no-op.
        """
        structlog.contextvars.bind_contextvars(wallet_id=request.wallet_id[:128])
        try:
            wallet_id, epoch, certificate = request.wallet_id, request.epoch, request.certificate
            record = _find_epoch(await self._epochs(wallet_id), wallet_id, epoch)
            change = record.key_change
            if change is None:
                raise HostError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"epoch {epoch} of wallet {wallet_id} is no key change",
                )
            check_certificate(
                change.session_id, change.transcript, change.host_pubkeys, certificate
            )
            if record.state == "pending":
                wallet = await asyncio.to_thread(
                    self._store.commit_epoch, wallet_id, epoch, certificate
                )
                self._log.info("epoch committed with a submitted certificate", epoch=epoch)
            else:  # committed (or retired since): already done
                wallet = await asyncio.to_thread(self._store.get_wallet, wallet_id)
        except CertificateError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"certificate: {e}")
        except Exception as e:
            await _abort(context, e)
        return _wallet_message(wallet)

    async def AckEpoch(
        self, request: host_pb2.AckEpochRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> host_pb2.AckEpochResponse:
        """Record a seat's signed acknowledgment; prune older epochs once every seat has acked.

        The enclave's seat counts as acknowledged: the host stored its share.
        """
        structlog.contextvars.bind_contextvars(wallet_id=request.wallet_id[:128])
        pruned = 0
        try:
            wallet_id, epoch, position = request.wallet_id, request.epoch, request.position
            record = _find_epoch(await self._epochs(wallet_id), wallet_id, epoch)
            change = record.key_change
            if change is None or record.state == "pending":
                raise HostError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"epoch {epoch} of wallet {wallet_id} is no committed key change",
                )
            if position >= len(change.host_pubkeys):
                raise HostError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"position {position} is no seat of epoch {epoch}",
                )
            check_ack(
                change.host_pubkeys[position], wallet_id, epoch, change.transcript, position,
                request.signature,
            )  # fmt: skip
            await asyncio.to_thread(
                self._store.ack_epoch, wallet_id, epoch, position, request.signature
            )
            acked = record.acked | {position}
            server_key = self._enclaves.host_pubkey
            acked |= {i for i, k in enumerate(change.host_pubkeys) if k == server_key}
            if record.state == "committed" and len(acked) == len(change.host_pubkeys):
                pruned = await asyncio.to_thread(
                    self._store.prune_retired, wallet_id, self._keep_retired
                )
                self._log.info("every seat acknowledged the epoch", epoch=epoch, pruned=pruned)
        except CertificateError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"acknowledgment: {e}")
        except Exception as e:
            await _abort(context, e)
        return host_pb2.AckEpochResponse(pruned=pruned)

    async def RetireEpoch(
        self, request: host_pb2.RetireEpochRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> host_pb2.RetireEpochResponse:
        """Delete a retired epoch now, on the owner's signature (not every seat acknowledged)."""
        structlog.contextvars.bind_contextvars(wallet_id=request.wallet_id[:128])
        try:
            wallet_id, epoch = request.wallet_id, request.epoch
            wallet = await asyncio.to_thread(self._store.get_wallet, wallet_id)
            message = retire_epoch_message(wallet_id, epoch)
            if not request_signature_valid(
                wallet.owner_key, RETIRE_EPOCH_CONTEXT, message, request.owner_signature
            ):
                raise HostError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the owner's signature retiring epoch {epoch} of {wallet_id} is invalid",
                )
            if not await asyncio.to_thread(self._store.drop_retired, wallet_id, epoch):
                raise HostError(
                    grpc.StatusCode.NOT_FOUND, f"wallet {wallet_id} has no epoch {epoch}"
                )
            self._log.info("retired epoch dropped by the owner", epoch=epoch)
        except Exception as e:
            await _abort(context, e)
        return host_pb2.RetireEpochResponse()

    async def GetAttestation(
        self,
        request: host_pb2.HostAttestationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> host_pb2.HostAttestationResponse:
        """The enclave's attestation document for the caller's nonce (forwarded)."""
        try:
            if len(request.nonce) > _MAX_NONCE_BYTES:
                raise HostError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"nonce is longer than {_MAX_NONCE_BYTES} bytes",
                )
            request_id = structlog.contextvars.get_contextvars().get("request_id", "")
            document = await self._enclaves.attestation(
                self._store, request.nonce, request_id=request_id
            )
        except Exception as e:
            await _abort(context, e)
        return host_pb2.HostAttestationResponse(document=document)

    async def GetChallenge(
        self,
        request: host_pb2.HostChallengeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> host_pb2.HostChallengeResponse:
        """A single-use challenge from the enclave (forwarded; the host keeps nothing)."""
        try:
            request_id = structlog.contextvars.get_contextvars().get("request_id", "")
            return await self._challenge(request, request_id)
        except Exception as e:
            await _abort(context, e)
            raise

    async def _challenge(
        self, request: host_pb2.HostChallengeRequest, request_id: str
    ) -> host_pb2.HostChallengeResponse:
        issued = await self._enclaves.challenge(
            affinity=request.affinity[:_MAX_AFFINITY_CHARS], request_id=request_id
        )
        return host_pb2.HostChallengeResponse(
            challenge=issued.challenge, not_after_unix=issued.not_after_unix
        )

    async def Session(
        self,
        request_iterator: AsyncIterator[host_pb2.HostSessionInput | MalformedRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[host_pb2.HostSessionOutput]:
        """Ceremony calls and challenges as channels of one stream (``host.host_session``)."""
        stream = SessionStream(
            run_ceremony=self.run_ceremony,
            challenge=self._challenge,
            request_id=_safe_request_id,
            metrics=self._metrics,
            max_channels=self._max_session_channels,
        )
        try:
            async for output in stream.serve(request_iterator):
                yield output
        except HostError as e:  # a frame naming no channel
            await context.abort(e.code, e.message)

    # --- backup shares (client-encrypted; the host never interprets the blob) ---------

    async def PutBackup(
        self, request: host_pb2.PutBackupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> host_pb2.PutBackupResponse:
        """Store a client-encrypted backup share; the same record again is a no-op."""
        given = request.backup
        structlog.contextvars.bind_contextvars(wallet_id=given.wallet_id[:128])
        try:
            backup = Backup(
                wallet_id=given.wallet_id,
                backup_id=given.backup_id,
                party_id=given.party_id,
                epoch=given.epoch,
                blob=BackupBlob(bytes(given.blob)),
            )
            await asyncio.to_thread(self._store.put_backup, backup, self._backup_quota)
        except StoreConflictError as e:
            # Not ERROR_TABLE's ABORTED (a ceremony raced us): a stored backup is
            # never replaced, so retrying cannot help.
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"store: {e}")
        except Exception as e:
            await _abort(context, e)
        self._log.info("backup stored", backup_id=backup.backup_id, blob_bytes=len(backup.blob))
        return host_pb2.PutBackupResponse()

    async def GetBackup(
        self, request: host_pb2.GetBackupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> host_pb2.Backup:
        """One backup share of a wallet, blob included."""
        structlog.contextvars.bind_contextvars(wallet_id=request.wallet_id[:128])
        try:
            stored = await asyncio.to_thread(
                self._store.get_backup, request.wallet_id, request.backup_id
            )
        except Exception as e:
            await _abort(context, e)
        backup = stored.backup
        return host_pb2.Backup(
            wallet_id=backup.wallet_id,
            backup_id=backup.backup_id,
            party_id=backup.party_id,
            epoch=backup.epoch,
            blob=backup.blob,
            created_at_ms=stored.created_at_ms,
            blob_bytes=len(backup.blob),
        )

    async def ListBackups(
        self, request: host_pb2.ListBackupsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> host_pb2.ListBackupsResponse:
        """Every backup of a wallet, by backup id, without the blobs.

        Leaving the blobs out keeps the reply small (each may be megabytes) and
        hands out ciphertext only to a caller who names the backup it wants; the
        store does not read them either.
        """
        structlog.contextvars.bind_contextvars(wallet_id=request.wallet_id[:128])
        try:
            stored = await asyncio.to_thread(self._store.list_backups, request.wallet_id)
        except Exception as e:
            await _abort(context, e)
        return host_pb2.ListBackupsResponse(backups=[_backup_info_message(b) for b in stored])


def _wallet_message(wallet: Wallet) -> host_pb2.Wallet:
    return host_pb2.Wallet(
        wallet_id=wallet.wallet_id,
        scheme=scheme_enum(wallet.scheme),
        threshold=wallet.threshold,
        parties=[
            ceremony_pb2.Party(party_id=p.party_id, static_key=p.static_key) for p in wallet.parties
        ],
        public_key=wallet.public_key,
        epoch=wallet.current_epoch or 0,
    )


def _find_epoch(epochs: list[EpochRecord], wallet_id: str, epoch: int) -> EpochRecord:
    for record in epochs:
        if record.epoch == epoch:
            return record
    raise HostError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"wallet {wallet_id} has no epoch {epoch} (aborted after its deadline, pruned, "
        "or never stored)",
    )


def _epoch_message(record: EpochRecord) -> host_pb2.Epoch:
    change = record.key_change
    return host_pb2.Epoch(
        epoch=record.epoch,
        state=record.state,
        threshold=record.keyring.threshold,
        parties=[
            ceremony_pb2.Party(party_id=p.party_id, static_key=p.static_key)
            for p in record.keyring.parties
        ],
        key_change=None
        if change is None
        else ceremony_pb2.KeyChange(
            session_id=change.session_id,
            transcript=change.transcript,
            host_pubkeys=change.host_pubkeys,
        ),
        certificate=record.certificate,
        deadline_unix_ms=record.deadline_at_ms or 0,
        acked=sorted(record.acked),
    )


def _backup_info_message(info: BackupInfo) -> host_pb2.Backup:
    return host_pb2.Backup(
        wallet_id=info.wallet_id,
        backup_id=info.backup_id,
        party_id=info.party_id,
        epoch=info.epoch,
        created_at_ms=info.created_at_ms,
        blob_bytes=info.blob_bytes,
    )


async def create_server(
    address: str,
    *,
    store: Store,
    enclave_channel: grpc.aio.Channel | Mapping[str, grpc.aio.Channel],
    relay: RelayClient,
    metrics: HostMetrics | None = None,
    link_config: LinkConfig | None = None,
    api_tokens: Sequence[str] = (),
    health_servicer: AsyncHealthServicer | None = None,
    max_message_bytes: int = _MAX_MESSAGE_BYTES,
    backup_quota: BackupQuota = _DEFAULT_BACKUP_QUOTA,
    keep_retired_epochs: int = 0,
    tls: ServerTls | None = None,
    max_session_channels: int = MAX_SESSION_CHANNELS,
) -> tuple[grpc.aio.Server, int]:
    """Build the host's gRPC server (not started), provisioning the enclaves first.

    Arguments:
        address: ``host:port`` (port 0 picks one; tests use ``127.0.0.1:0``) or
            ``unix:/path``.
        store: the ciphertext store (caller-owned; close it after the server stops).
        enclave_channel: a channel to the enclave, or to each of several enclaves
            by name (``host.enclave_pool``; caller-owned; allow messages as
            large as the sealed shares, megabytes for DKLs23).
        relay: a client of the relay the coordinators' rooms live on (caller-owned).
        metrics: the host's metrics (a fresh registry if None).
        link_config: enclave timeouts (``LinkConfig()`` if None).
        api_tokens: accepted bearer tokens; empty accepts any caller.
        health_servicer: pass one to drive graceful shutdown
            (``enter_graceful_shutdown``); a new one is made otherwise.
        max_message_bytes: the public API's message size cap.
        backup_quota: most backups and blob bytes one wallet may keep.
        keep_retired_epochs: retired epochs kept once every seat acknowledged
            the current one.
        tls: serve TLS (mutual TLS when it names a client CA); None: plaintext.
        max_session_channels: channels one ``Session`` stream may hold open at once.

    Returns:
        ``(server, bound_port)``; the port is 0 for a Unix socket. Health
        reports SERVING for "" and ``SERVICE_NAME``.

    Raises:
        HostError: no enclave could be provisioned, or two hold different identities.
        StoreError: the enclave identity could not be read or kept.
        shardkeep.server.BindError: the address cannot be bound.
    """
    metrics = metrics or HostMetrics()
    enclaves = enclave_pool(enclave_channel, link_config, metrics)
    await enclaves.provision(store)
    server = grpc.aio.server(
        # The API token first, then malformed bodies: INVALID_ARGUMENT, counted.
        interceptors=[RequestInterceptor(metrics, api_tokens), MalformedRequests()],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            *keepalive.server_options(),  # the coordinators' Session streams ping
        ],
    )
    health_servicer = health_servicer or new_health_servicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Reflection lets operators list and call the API with grpcurl.
    reflection.enable_server_reflection(
        (SERVICE_NAME, "grpc.health.v1.Health", reflection.SERVICE_NAME), server
    )
    host_pb2_grpc.add_HostServicer_to_server(  # type: ignore[no-untyped-call]
        HostServicer(
            store=store,
            enclaves=enclaves,
            relay=relay,
            metrics=metrics,
            backup_quota=backup_quota,
            keep_retired_epochs=keep_retired_epochs,
            max_session_channels=max_session_channels,
        ),
        server,
    )
    port = bind(server, address, tls)
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def enclave_pool(
    channels: grpc.aio.Channel | Mapping[str, grpc.aio.Channel],
    config: LinkConfig | None,
    metrics: HostMetrics,
) -> EnclavePool:
    """The enclaves behind ``channels`` (one channel: one enclave named "enclave"); each
    one's status reports go to ``metrics``, under its name."""
    named = channels if isinstance(channels, Mapping) else {"enclave": channels}
    return EnclavePool(
        {
            name: EnclaveLink(channel, config, functools.partial(metrics.enclave.update, name))
            for name, channel in named.items()
        }
    )
