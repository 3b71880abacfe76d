"""The host's link to the enclave: provisioning, attestation, and driving ceremony streams.

KMS credentials (``host.credentials``): with a source configured
(``LinkConfig.kms_credentials``), the link hands the enclave AWS credentials
with ``Enclave.SetCredentials`` before every ``Provision`` (an enclave that
restarted has none) and, before each ceremony, again when they are about to
expire. The values are never logged.

No status check precedes a call: an enclave that restarted refuses it as not
provisioned (reason ``not-provisioned``), and ``retry_unprovisioned``
provisions it again and repeats the call once.

The host <-> enclave contract of ``Enclave.RunCeremony`` (enclave.proto), as
driven by ``CeremonyDriver``:

1. The host joins the ceremony's room on the relay as the enclave's party
   (with the coordinator's ``relay_token``) *before* it opens the stream, so a
   bad room or token fails without spending the request's nonce in the
   enclave. The join overlaps the store reads (independent round trips) and
   the credentials check. It then sends ``CeremonyInput.start``
   with the signed request and the wallet's current sealed shares (none for
   keygen).
2. ``CeremonyOutput.outbound`` carries the envelopes of one round step; they
   go to the relay in the order the enclave produced them, and the host's
   relay session assigns the per-sender seq.
   Sends are pipelined (the host does not wait for one relay ack before
   forwarding the next output) but every one must be acked before the host
   reports success.
3. Every relay delivery of this ceremony (``ceremony_id``) addressed to the
   enclave party, broadcasts included, goes to the enclave as
   ``CeremonyInput.inbound``, in relay order. Deliveries of other ceremonies
   in the same room (the backlog of earlier ones) are dropped.
4. ``CeremonyOutput.store`` is written as pending (``host.epoch_writer``) and
   only then acknowledged with ``CeremonyInput.store_ack{epoch}``. Keygen's
   share creates the wallet; so does an import's (a reshare adding the server
   party to a wallet the store does not know: no shares go with the start).
5. ``CeremonyOutput.result`` ends the exchange; the enclave then ends the
   stream with OK. The host commits the pending epoch (a key change only with
   the result's certificate, which it verifies) and returns the result. Any
   failure before that (an enclave status, the relay, the store, the
   deadline, cancellation) aborts a keygen's epoch; a key change's stays
   pending until its certificate arrives or its deadline passes
   (``host.epoch_writer``), and the old share stays current meanwhile.
6. Enclave statuses pass through to the coordinator (``host.errors``).

The host never looks inside payloads or sealed blobs; it logs ids, counts and
sizes only.

Every ``GetStatus`` answer also carries the enclave's counters; the link hands
them to the host's metrics (``host.metrics.EnclaveReport``), since the enclave
has no network to serve its own.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

import grpc
import structlog

from host.ceremony_plan import CeremonyPlan, scheme_enum
from host.credentials import CredentialKeeper, CredentialsError, CredentialSource
from host.enclave_session import EnclaveSession
from host.epoch_writer import EpochWriter
from host.errors import (
    NOT_PROVISIONED,
    OTHER_PROTOCOL_VERSION,
    EnclaveProtocolError,
    HostError,
    error_from_enclave,
    error_from_failure,
)
from host.store import Store, StoredShare, Wallet, WalletNotFoundError
from relay.client import RelayClient, RoomParty
from shardkeep.v1 import ceremony_pb2, enclave_pb2, enclave_pb2_grpc, envelope_pb2, relay_pb2

__all__ = [
    # Functions
    "ceremony_budget",
    # Types
    "CeremonyDriver",
    "CeremonyStats",
    "EnclaveLink",
    "LinkConfig",
]

_EOF: Final[object] = grpc.aio.EOF  # type: ignore[attr-defined]
_RunCall = grpc.aio.StreamStreamCall[enclave_pb2.CeremonyInput, enclave_pb2.CeremonyOutput]


class CeremonyCall(Protocol):
    """One ceremony's exchange with the enclave: a RunCeremony call or a session channel."""

    async def write(self, request: enclave_pb2.CeremonyInput) -> None: ...

    async def read(self) -> object: ...

    async def done_writing(self) -> None: ...

    def cancel(self) -> bool: ...


_K = ceremony_pb2.CeremonyKind
_T = TypeVar("_T")


@dataclass(frozen=True)
class LinkConfig:
    """Timeouts and KMS credentials of the enclave link.

    Attributes:
        call_timeout_s: deadline of unary enclave calls (Provision, GetAttestation, GetStatus).
        provision_wait_s: how long start-up waits for the enclave to come up.
        max_ceremony_s: the longest a ceremony may run when the coordinator
            sets no (or a longer) deadline.
        deadline_margin_s: the host gives up this much before the coordinator's
            deadline, so it can still abort the pending epoch and answer.
        reconnect_wait_s: how long a call waits for a restarted enclave's socket.
        kms_credentials: where the enclave's AWS credentials for KMS come
            from (None: hand it none; it uses its own development ones).
        credentials_margin_s: hand over new credentials this long before the
            current ones expire (at least ``max_ceremony_s`` + 60 s, so no
            ceremony runs out of credentials midway).
        pending_deadline_s: how long a new epoch may stay pending (waiting for
            its key change's certificate) before it is aborted.
        unsigned_deadline_s: how long it may stay pending before the enclave's
            agreement has left the host (no certificate can exist until then;
            ``host.epoch_writer``).
        session_transport: run every ceremony as a channel of one long-lived
            ``Enclave.Session`` stream (``host.enclave_session``; the default)
            instead of a ``RunCeremony`` call each.
    """

    call_timeout_s: float = 10.0
    reconnect_wait_s: float = 3.0
    provision_wait_s: float = 60.0
    max_ceremony_s: float = 300.0
    deadline_margin_s: float = 0.25
    kms_credentials: CredentialSource | None = None
    credentials_margin_s: float = 900.0
    pending_deadline_s: float = 600.0
    unsigned_deadline_s: float = 30.0
    session_transport: bool = True


class EnclaveLink:
    """The enclave's gRPC API as the host uses it."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        config: LinkConfig | None = None,
        report: Callable[[enclave_pb2.GetStatusResponse], None] | None = None,
    ) -> None:
        """Arguments:
        channel: a channel to the enclave (``unix:/path`` or the vsock bridge).
        config: timeouts (``LinkConfig()`` if None).
        report: where the enclave's status reports go (e.g. ``EnclaveReport.update``
            for this enclave; None: nowhere).
        """
        self._channel = channel
        self._stub = enclave_pb2_grpc.EnclaveStub(channel)  # type: ignore[no-untyped-call]
        self.config = config or LinkConfig()
        self._session = EnclaveSession(self._stub) if self.config.session_transport else None
        self._report = report
        self._static_key: bytes | None = None
        self.host_pubkey = b""  # the enclave's ChillDKG host key, from Provision
        self._log = structlog.get_logger("host.enclave")
        source = self.config.kms_credentials
        # Never less than the longest ceremony (plus a minute): credentials
        # handed over before a ceremony must outlast it.
        margin_s = max(self.config.credentials_margin_s, self.config.max_ceremony_s + 60.0)
        self._credentials = None if source is None else CredentialKeeper(source, margin_s=margin_s)
        self._credentials_lock = asyncio.Lock()
        # Provisions so far, so that calls refused together re-provision once.
        self._provisions = 0
        self._provision_lock = asyncio.Lock()

    @property
    def static_key(self) -> bytes:
        """The enclave's X25519 party key, from Provision.

        Raises:
            HostError: UNAVAILABLE before the enclave was provisioned.
        """
        if self._static_key is None:
            raise HostError(grpc.StatusCode.UNAVAILABLE, "the enclave is not provisioned")
        return self._static_key

    @property
    def provisioned(self) -> bool:
        """Whether a Provision succeeded (the enclave may have restarted since)."""
        return self._static_key is not None

    async def ensure_provisioned(self, store: Store, *, wait_s: float | None = None) -> None:
        """Provision again if the enclave restarted: it then reports no static key.

        The enclave keeps its identity only in memory; after a restart the same
        sealed identity brings back the same party keys, so wallets stay usable.
        Otherwise hand it new KMS credentials if the current ones expire soon.

        Raises:
            HostError: the enclave is down or refuses its identity.
        """
        status = await self.status(wait_s=wait_s)
        if not status.static_key:
            await self.provision(store)
        elif bytes(status.static_key) != self._static_key:
            raise HostError(
                grpc.StatusCode.FAILED_PRECONDITION, "the enclave runs with another identity"
            )
        else:
            await self.refresh_credentials(timeout_s=self.config.call_timeout_s)

    async def ready(self, store: Store, *, wait_s: float | None = None) -> None:
        """Make sure a call can go to the enclave; with the channel connected, that costs no
        round trip (only fresh KMS credentials, if due).

        A channel that is not connected may be backing off after an enclave
        restart: then wait for it (``reconnect_wait_s``), and provision the
        enclave again if it came back without its identity (``ensure_provisioned``).

        Raises:
            HostError: the enclave is down or refuses its identity; no credentials.
        """
        if self._channel.get_state() == grpc.ChannelConnectivity.READY:
            await self.refresh_credentials(timeout_s=self.config.call_timeout_s)
        else:
            await self.ensure_provisioned(store, wait_s=wait_s)

    async def retry_unprovisioned(self, store: Store, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call``; if the enclave refuses it as not provisioned (it restarted since),
        provision it again and run ``call`` once more.

        Calls go straight to the enclave: no status check before each one. An
        enclave refuses a ceremony it has no identity for before it looks at
        the request (its challenge stays unspent), so the retry sends the same
        request.

        Raises:
            HostError: the enclave's status (also of the retry), or a failed provisioning.
        """
        provisions = self._provisions
        try:
            return await call()
        except HostError as e:
            if e.reason != NOT_PROVISIONED:
                raise
            self._log.warning("the enclave lost its identity (restarted): provisioning it again")
        async with self._provision_lock:
            if self._provisions == provisions:  # no other call has re-provisioned meanwhile
                await self.provision(store)
        return await call()

    async def refresh_credentials(self, *, timeout_s: float, force: bool = False) -> bool:
        """Hand the enclave KMS credentials if it has none or they expire soon.

        A no-op without a credential source. Concurrent callers wait for one
        delivery.

        Arguments:
            timeout_s: the SetCredentials deadline (it waits for the enclave to come up).
            force: deliver even if the last delivery is still fresh (the
                enclave may have restarted and lost them).

        Returns:
            True if credentials were delivered.

        Raises:
            HostError: UNAVAILABLE if no credentials could be fetched or the
                enclave did not come up; the enclave's status otherwise.
        """
        keeper = self._credentials
        if keeper is None:
            return False
        async with self._credentials_lock:
            if force:
                keeper.forget()
            if not keeper.due():
                return False
            try:
                credentials = await asyncio.to_thread(keeper.source.fetch)
            except CredentialsError as e:
                self._log.error("kms credentials unavailable", source=keeper.source.kind)
                raise HostError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"no KMS credentials for the enclave ({keeper.source.kind}): {e}",
                ) from e
            try:
                await self._stub.SetCredentials(
                    enclave_pb2.SetCredentialsRequest(
                        access_key_id=credentials.access_key_id,
                        secret_access_key=credentials.secret_access_key,
                        session_token=credentials.session_token or "",
                        expires_at_unix=math.ceil(credentials.expires_at or 0),
                    ),
                    timeout=timeout_s,
                    wait_for_ready=True,
                )
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # never became ready
                    raise HostError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the enclave did not take KMS credentials within {timeout_s} s",
                    ) from e
                raise error_from_enclave(e) from e
            keeper.delivered(credentials)
            # Where from and until when; never the values.
            self._log.info(
                "kms credentials handed to the enclave",
                source=keeper.source.kind,
                temporary=credentials.session_token is not None,
                expires_at_unix=credentials.expires_at,
            )
            return True

    async def provision(
        self, store: Store, *, wait_s: float | None = None
    ) -> enclave_pb2.ProvisionResponse:
        """Hand the enclave its sealed identity (or none, the first time); keep what it returns.

        Waits up to ``wait_s`` (default ``provision_wait_s``) for the enclave to come up.

        Arguments:
            store: where the sealed identity is kept.

        Returns:
            The enclave's answer (static key, ChillDKG host public key).

        Raises:
            HostError: the enclave refused or did not come up.
            StoreError: the identity could not be read or written.
        """
        sealed = await asyncio.to_thread(store.latest_enclave_identity)
        # Before Provision, which opens the sealed identity through KMS: an
        # enclave that (re)started holds no credentials.
        wait_s = self.config.provision_wait_s if wait_s is None else wait_s
        await self.refresh_credentials(timeout_s=wait_s, force=True)
        try:
            response: enclave_pb2.ProvisionResponse = await self._stub.Provision(
                enclave_pb2.ProvisionRequest(sealed_identity=sealed or b""),
                timeout=wait_s,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # never became ready
                raise HostError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the enclave did not come up within {wait_s} s",
                ) from e
            raise error_from_enclave(e) from e
        if len(response.static_key) != 32:
            raise EnclaveProtocolError("Provision returned no 32-byte static key")
        if response.sealed_identity:
            stored = await asyncio.to_thread(store.put_enclave_identity, response.sealed_identity)
        else:
            stored = False
        self._static_key = bytes(response.static_key)
        self.host_pubkey = bytes(response.host_pubkey)
        self._provisions += 1
        self._log.info(
            "enclave provisioned",
            static_key=response.static_key.hex(),
            new_identity_stored=stored,
            first_start=sealed is None,
        )
        return response

    async def attestation(self, nonce: bytes, *, request_id: str) -> bytes:
        """An attestation document for ``nonce`` (COSE_Sign1 bytes).

        Raises:
            HostError: the enclave's status, passed through.
        """
        try:
            response: enclave_pb2.GetAttestationResponse = await self._stub.GetAttestation(
                enclave_pb2.GetAttestationRequest(nonce=nonce),
                timeout=self.config.call_timeout_s,
                metadata=(("x-request-id", request_id),),
            )
        except grpc.aio.AioRpcError as e:
            raise error_from_enclave(e) from e
        return bytes(response.document)

    async def challenge(self, *, request_id: str) -> enclave_pb2.GetChallengeResponse:
        """A single-use challenge from the enclave for the caller's next ceremony request
        (on the session stream with ``session_transport``).

        Raises:
            HostError: the enclave's status, passed through.
        """
        if self._session is not None:
            try:
                async with asyncio.timeout(self.config.call_timeout_s):
                    return await self._session.challenge()
            except TimeoutError as e:
                raise HostError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "the enclave call passed its deadline"
                ) from e
        try:
            response: enclave_pb2.GetChallengeResponse = await self._stub.GetChallenge(
                enclave_pb2.GetChallengeRequest(),
                timeout=self.config.call_timeout_s,
                metadata=(("x-request-id", request_id),),
            )
        except grpc.aio.AioRpcError as e:
            raise error_from_enclave(e) from e
        return response

    async def status(self, *, wait_s: float | None = None) -> enclave_pb2.GetStatusResponse:
        """The enclave's status (version, static key, running ceremonies, counters);
        handed to the link's ``report``.

        Raises:
            HostError: the enclave's status, passed through.
        """
        try:
            # wait_for_ready: right after an enclave restart the channel may
            # still be backing off; wait (within the deadline) instead of failing.
            response: enclave_pb2.GetStatusResponse = await self._stub.GetStatus(
                enclave_pb2.GetStatusRequest(),
                timeout=min(
                    self.config.call_timeout_s, self.config.reconnect_wait_s, wait_s or math.inf
                ),
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # never became ready
                raise HostError(grpc.StatusCode.UNAVAILABLE, "the enclave is unavailable") from e
            raise error_from_enclave(e) from e
        if self._report is not None:
            self._report(response)
        return response

    def open_ceremony(self, *, timeout_s: float, request_id: str) -> CeremonyCall:
        """Open a RunCeremony stream with a deadline (the enclave sees it too), or a
        channel on the session stream (the driver keeps the deadline)."""
        if self._session is not None:
            return self._session.open_channel()
        call: _RunCall = self._stub.RunCeremony(
            timeout=timeout_s, metadata=(("x-request-id", request_id),)
        )
        return call


@dataclass
class CeremonyStats:
    """Counts and sizes of one ceremony's traffic, for its log line (never contents)."""

    outbound: int = 0
    outbound_bytes: int = 0
    inbound: int = 0
    inbound_bytes: int = 0
    skipped: int = 0
    stored: int = 0


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that broke a TaskGroup, preferring real errors to cancellations."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(group)
    real = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
    return (real or leaves)[0]


class CeremonyDriver:
    """Runs one ceremony between the enclave and the relay (steps 1-6 above)."""

    def __init__(
        self,
        *,
        link: EnclaveLink,
        relay: RelayClient,
        store: Store,
        plan: CeremonyPlan,
        relay_token: str,
        timeout_s: float,
        request_id: str,
        relay_room: relay_pb2.SignedRoomSpec | None = None,
        enclave_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Arguments:
        link: the enclave link (provisioned).
        relay: the relay client.
        store: the ciphertext store.
        plan: the checked request (``host.ceremony_plan.plan_ceremony``).
        relay_token: the enclave party's join token for the room (a secret).
        relay_room: the room's signed spec when its first join creates it.
        timeout_s: the whole ceremony's time budget.
        request_id: correlates the host's, the enclave's and the coordinator's logs.
        enclave_ready: awaited before the enclave stream opens, concurrently with
            the store reads and the relay join (e.g. fresh KMS credentials for the enclave);
            its error takes precedence over theirs.
        """
        self._link = link
        self._relay = relay
        self._store = store
        self._plan = plan
        self._relay_token = relay_token
        self._relay_room = relay_room
        self._timeout_s = timeout_s
        self._request_id = request_id
        self._enclave_ready = enclave_ready
        self.stats = CeremonyStats()
        self._epochs = EpochWriter(
            store, plan, link.config.pending_deadline_s, link.config.unsigned_deadline_s
        )
        self._log = structlog.get_logger("host.ceremony")

    async def run(self) -> ceremony_pb2.CeremonyResult:
        """Run the ceremony to its result.

        Returns:
            The enclave's result, after the new epoch (if any) is committed.

        Raises:
            HostError: the coordinator's status (the enclave's, or mapped from
                the relay, the store, or the deadline).
            StoreError / RelayError: mapped by the caller through ``host.errors``.
        """
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await self._run_streams()
        except TimeoutError as e:
            await asyncio.shield(self._epochs.abort())
            raise HostError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the ceremony did not finish before its deadline",
            ) from e
        except BaseException:
            # Cancellation included (the coordinator gave up, or shutdown):
            # the shield lets the abort finish even if we are cancelled again.
            await asyncio.shield(self._epochs.abort())
            raise
        await self._epochs.commit(bytes(result.certificate))
        return result

    async def _read(self, read: Callable[..., _T], *args: object) -> _T:
        """A store read: on the event loop if the store says reads are cheap, else in a thread."""
        if self._store.inline_reads:
            return read(*args)
        return await asyncio.to_thread(read, *args)

    async def _prepare(self) -> list[ceremony_pb2.SealedShare]:
        """Check the wallet's state against the request; return its current sealed shares."""
        plan = self._plan

        async def read() -> tuple[Wallet, list[StoredShare]]:
            if plan.kind == _K.CEREMONY_KIND_KEYGEN:  # needs only to know whether the id is taken
                return await self._read(self._store.get_wallet, plan.wallet_id), []
            return await self._read(
                self._store.wallet_and_shares, plan.wallet_id, plan.request.epoch
            )

        try:
            wallet, stored = await read()
            # A pending epoch past its deadline goes first (with a keygen's
            # uncommitted wallet: its id is free again).
            if wallet.pending_epoch is not None and (
                await asyncio.to_thread(self._store.abort_expired, plan.wallet_id) is not None
            ):
                wallet, stored = await read()
        except WalletNotFoundError:
            if plan.kind == _K.CEREMONY_KIND_KEYGEN:
                return []
            if not plan.may_open_wallet:
                raise
            # An import: the enclave takes the keyring and owner key from the
            # request, and its new share opens the wallet (``EpochWriter``).
            self._epochs.open_wallet()
            return []
        if plan.kind == _K.CEREMONY_KIND_KEYGEN:
            raise HostError(grpc.StatusCode.ALREADY_EXISTS, f"wallet {plan.wallet_id} exists")
        given = plan.request.keyring if plan.request.HasField("keyring") else None
        if given is not None and bytes(given.public_key) != wallet.public_key:
            # E.g. an import under the id of an existing wallet: never another key in it.
            raise HostError(
                grpc.StatusCode.ALREADY_EXISTS
                if plan.may_open_wallet
                else grpc.StatusCode.FAILED_PRECONDITION,
                f"wallet {plan.wallet_id} exists with another public key than the request's",
            )
        if wallet.current_epoch is None:
            raise HostError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"wallet {plan.wallet_id} has no committed key yet",
            )
        epoch = plan.request.epoch
        # Key changes start from the current epoch; a signature or an export may
        # also use a retired epoch the host still keeps (until every party has
        # acknowledged the new one).
        old_epoch_allowed = not plan.changes_keys and epoch < wallet.current_epoch
        if epoch != wallet.current_epoch and not old_epoch_allowed:
            raise HostError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the request expects epoch {epoch}, the wallet is at epoch {wallet.current_epoch}",
            )
        if plan.changes_keys and wallet.pending_epoch is not None:
            raise HostError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"epoch {wallet.pending_epoch} of wallet {plan.wallet_id} is pending from an "
                "unfinished key change: submit its certificate, or wait for its deadline",
            )
        if not stored:
            raise HostError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the host holds no share of wallet {plan.wallet_id} at epoch {epoch}"
                + (" (retired and pruned)" if old_epoch_allowed else ""),
            )
        return [
            ceremony_pb2.SealedShare(
                wallet_id=s.share.wallet_id,
                share_index=s.share.share_index,
                scheme=scheme_enum(s.share.scheme),
                epoch=s.share.epoch,
                encrypted_data_key=s.share.encrypted_data_key,
                ciphertext=s.share.ciphertext,
                public_key=wallet.public_key,
                certificate=s.certificate,
            )
            for s in stored
        ]

    async def _run_streams(self) -> ceremony_pb2.CeremonyResult:
        plan = self._plan
        session = self._relay.join(
            plan.room_id,
            plan.party_id,
            self._relay_token,
            room=self._relay_room,
            deadline_s=self._timeout_s,
        )
        try:
            shares = await self._setup(session)
            start = enclave_pb2.CeremonyStart(request=plan.signed, sealed_shares=shares)
            call = self._link.open_ceremony(timeout_s=self._timeout_s, request_id=self._request_id)
            try:
                return await self._exchange(call, session, start)
            except grpc.aio.AioRpcError as e:
                raise error_from_enclave(e) from e
            finally:
                call.cancel()  # a no-op once the enclave ended the stream
        finally:
            await session.aclose()

    async def _setup(self, session: RoomParty) -> list[ceremony_pb2.SealedShare]:
        """The enclave's readiness (its credentials), the store reads and the relay join,
        overlapped: in sequence they were ~4 ms of a ~20 ms signature (docs/benchmarks.md).
        Errors keep the sequential order's precedence: the enclave's, then the
        store's, then the relay's.
        """

        async def ready() -> None:
            if self._enclave_ready is not None:
                await self._enclave_ready()

        outcomes = await asyncio.gather(
            ready(), self._prepare(), session.open(), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        shares = outcomes[1]
        if not isinstance(shares, list):  # unreachable: _prepare returns a list
            raise HostError(grpc.StatusCode.INTERNAL, "internal error")
        return shares

    async def _exchange(
        self, call: CeremonyCall, session: RoomParty, start: enclave_pb2.CeremonyStart
    ) -> ceremony_pb2.CeremonyResult:
        inputs: asyncio.Queue[enclave_pb2.CeremonyInput] = asyncio.Queue()
        await call.write(enclave_pb2.CeremonyInput(start=start))
        try:
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(self._write_inputs(call, inputs))
                reader = group.create_task(self._forward_deliveries(session, inputs))
                result = await self._read_outputs(call, session, inputs, group)
                # Outbound sends still in flight stay in the group, which waits
                # for their relay acks before the result counts; on a Session
                # channel (no acks) the flush waits until the relay stored them.
                writer.cancel()
                reader.cancel()
                await session.flush()
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None
        return result

    async def _write_inputs(
        self, call: CeremonyCall, inputs: asyncio.Queue[enclave_pb2.CeremonyInput]
    ) -> None:
        """The only writer of the stream after the start (grpc forbids concurrent writes)."""
        while True:
            item = await inputs.get()
            try:
                await call.write(item)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                # The enclave ended the stream; the reading side reports how.
                return

    async def _forward_deliveries(
        self, session: RoomParty, inputs: asyncio.Queue[enclave_pb2.CeremonyInput]
    ) -> None:
        """Relay deliveries of this ceremony -> enclave, in relay order (step 3)."""
        ceremony_id = self._plan.ceremony_id
        while True:
            # Raises the relay's error, or RoomClosedError / RoomExpiredError
            # when the room ends before the ceremony did.
            delivery = await session.receive()
            envelope = delivery.envelope
            if envelope.ceremony_id != ceremony_id:
                self.stats.skipped += 1
                continue
            self.stats.inbound += 1
            self.stats.inbound_bytes += len(envelope.payload)
            inputs.put_nowait(enclave_pb2.CeremonyInput(inbound=envelope))

    def _outbound(self, envelope: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
        plan = self._plan
        if envelope.sender not in ("", plan.party_id):
            raise EnclaveProtocolError("outbound envelope names another sender")
        if envelope.room_id not in ("", plan.room_id):
            raise EnclaveProtocolError("outbound envelope names another room")
        if envelope.ceremony_id != plan.ceremony_id:
            raise EnclaveProtocolError("outbound envelope names another ceremony")
        forwarded = envelope_pb2.Envelope()
        forwarded.CopyFrom(envelope)
        forwarded.room_id = plan.room_id
        forwarded.sender = plan.party_id
        forwarded.seq = 0  # the relay session numbers the enclave party's envelopes
        return forwarded

    async def _read_outputs(
        self,
        call: CeremonyCall,
        session: RoomParty,
        inputs: asyncio.Queue[enclave_pb2.CeremonyInput],
        group: asyncio.TaskGroup,
    ) -> ceremony_pb2.CeremonyResult:
        while True:
            output = await call.read()  # raises AioRpcError on the enclave's error status
            if output is _EOF:
                raise EnclaveProtocolError("the stream ended without a result")
            if not isinstance(output, enclave_pb2.CeremonyOutput):
                raise EnclaveProtocolError("unexpected message on the stream")
            kind = output.WhichOneof("output")
            if kind == "outbound":
                # One round step's envelopes, checked together before any leaves.
                envelopes = [self._outbound(e) for e in output.outbound.envelopes]
                if not envelopes:
                    raise EnclaveProtocolError("an outbound output without envelopes")
                await self._epochs.forwarding()
                for envelope in envelopes:
                    self.stats.outbound += 1
                    self.stats.outbound_bytes += len(envelope.payload)
                    # Created in output order, so the session numbers them in that order.
                    group.create_task(session.send_envelope(envelope))
            elif kind == "store":
                epoch = await self._epochs.write(output.store)
                self.stats.stored += 1
                inputs.put_nowait(
                    enclave_pb2.CeremonyInput(store_ack=enclave_pb2.StoreAck(epoch=epoch))
                )
            elif kind == "failure":
                # The enclave's verdict. It ends the stream only after our
                # half-close, so no write of ours races its status (grpc#36066).
                await call.done_writing()
                raise error_from_failure(output.failure)
            elif kind == "result":
                self._check_result(output.result)
                # The result is final once the enclave ends the stream with OK.
                if await call.read() is not _EOF:
                    raise EnclaveProtocolError("output after the result")
                return output.result
            else:
                # No field this host knows (e.g. the pre-OutboundEnvelopes field 1): the
                # enclave is of another release, not broken; say so rather than "empty".
                raise EnclaveProtocolError(OTHER_PROTOCOL_VERSION)

    def _check_result(self, result: ceremony_pb2.CeremonyResult) -> None:
        plan = self._plan
        if result.wallet_id not in ("", plan.wallet_id):
            raise EnclaveProtocolError("result of another wallet")
        if result.ceremony_id not in ("", plan.ceremony_id):
            raise EnclaveProtocolError("result of another ceremony")
        written = self._epochs.epoch
        if written is not None and result.epoch != written:
            raise EnclaveProtocolError("result names another epoch than the stored share")
        keygen_key = self._epochs.public_key
        if keygen_key is not None and bytes(result.public_key) != keygen_key:
            raise EnclaveProtocolError("result names another public key than the stored share")


def ceremony_budget(remaining: float | None, config: LinkConfig) -> float:
    """The ceremony's time budget: the coordinator's deadline less a margin, capped.

    Arguments:
        remaining: seconds left of the coordinator's deadline (None: no deadline).
        config: the link's limits.

    Returns:
        Seconds (at least a small positive amount, so an expired deadline fails fast).
    """
    budget = config.max_ceremony_s
    if remaining is not None:
        budget = min(budget, remaining - config.deadline_margin_s)
    return max(budget, 0.001)
