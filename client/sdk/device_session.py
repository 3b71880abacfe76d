"""A device's connection to the coordinator and the relay, and how it runs one
ceremony: start it, check the request, approve it, take part in the room."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client.errors import InvalidInput, sdk_boundary
from client.sdk.approvals import Approver
from client.sdk.attestation import verify
from client.sdk.default_policy import owner_approver
from client.sdk.device_checks import approvals_for, check_request, my_index
from client.sdk.device_wallet import CoordinatorRefused, DeviceWallet
from client.sdk.party import (
    PartyIdentity,
    SavePending,
    keygen_ceremony,
    roster_of,
    run_over_relay,
    sign_ceremony,
)
from client.sdk.transport import Transport
from relay.client import RelayClient
from shardkeep import lifecycle
from shardkeep.device_auth import sign_device_call
from shardkeep.requests import OWNER_CONTEXT, sign_request
from shardkeep.v1 import ceremony_pb2, coordinator_pb2, coordinator_pb2_grpc
from tss.ceremony import Ceremony
from tss.channel import Roster, party_id
from tss.export import Export
from tss.keygen import PairSetup
from tss.keyshare import KeyShare
from tss.reshare import PublicKeyring, Reshare

__all__ = ["DeviceSession", "Progress"]

_VERDICT_GRACE_S = 10.0
_INVITATION_POLL_S = 0.2
# The enclave runs these only with the wallet owner's signature of the request.
_OWNER_SIGNED = (ceremony_pb2.CEREMONY_KIND_EXPORT, ceremony_pb2.CEREMONY_KIND_RESHARE)


@dataclass
class Progress:
    """How far a key change got, for its interruption: the request, the party's output."""

    request: ceremony_pb2.CeremonyRequest | None = None
    output: Any = None


@sdk_boundary
class DeviceSession:
    """The coordinator and relay connections of a device, and its ceremony runner
    (arguments: see :class:`client.sdk.device.Device`)."""

    def __init__(
        self,
        coordinator_address: str,
        relay_address: str,
        *,
        identity: PartyIdentity,
        device_key: Ed25519PrivateKey,
        owner_key: Ed25519PrivateKey,
        root_certificate: bytes | None = None,
        expected_pcrs: Mapping[int, bytes] | None = None,
        allow_debug: bool = False,
        transport: Transport | None = None,
        timeout: float = 120.0,
    ) -> None:
        transport = transport or Transport()
        if transport.api_token is not None:
            raise InvalidInput("a device carries no API token: that is the coordinator's")
        self._channel = transport.host_channel(coordinator_address)
        self._coordinator = coordinator_pb2_grpc.CoordinatorStub(self._channel)  # type: ignore[no-untyped-call]
        self._relay = RelayClient(transport.relay_channel(relay_address))
        self.identity = identity
        self._device_key = device_key
        self._owner_key = owner_key
        self._root = root_certificate
        self._pcrs = expected_pcrs
        self._allow_debug = allow_debug
        self._timeout = timeout

    def _approvers(self, wallet: DeviceWallet, approvers: Sequence[Approver]) -> Sequence[Approver]:
        """``approvers``, or by default the owner approval key where the wallet's set
        registers it (``client.sdk.default_policy``)."""
        if approvers or wallet.policy_set is None:
            return approvers
        key = owner_approver(self._owner_key)
        return [key] if wallet.policy_set.authenticator(key.name) == key.authenticator() else []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._relay.aclose()
        await self._channel.close(None)

    async def _run(
        self,
        ask: coordinator_pb2.CeremonyAsk,
        wallet: DeviceWallet | None,
        *,
        save_pending: SavePending | None = None,
        recipient_key: X25519PrivateKey | None = None,
        progress: Progress | None = None,
        approvers: Sequence[Approver] = (),
    ) -> tuple[ceremony_pb2.CeremonyRequest, Any, ceremony_pb2.CeremonyResult]:
        ask.attestation_nonce = secrets.token_bytes(32)
        started: coordinator_pb2.StartedCeremony = await self._unary(
            self._coordinator.StartCeremony,
            sign_device_call(self._device_key, "StartCeremony", ask.SerializeToString()),
        )
        request = ceremony_pb2.CeremonyRequest.FromString(started.request)
        if progress is not None:
            progress.request = request
        server = self._attested_server(started.attestation_document, bytes(ask.attestation_nonce))
        check_request(request, ask, self.identity, server, wallet)
        me = my_index(request, self.identity)
        roster, ceremony = self._ceremony(request, wallet, recipient_key)
        if started.needs_owner_approval and request.kind not in _OWNER_SIGNED:
            raise CoordinatorRefused(
                "the coordinator asks the owner to approve a ceremony that needs no approval"
            )
        if started.needs_approvals != ask.approvals_follow:
            # Started without them, the server share would refuse; asked for unannounced
            # ones, the coordinator wants approvals this device never offered.
            raise CoordinatorRefused("the coordinator does not wait for the approvals as asked")
        if started.needs_owner_approval or started.needs_approvals:
            # Signed only now, over the request checked above: the owner approves
            # exactly this export, to this device's party and one-time key; the
            # authenticators exactly this request under the wallet's policy set.
            approval = coordinator_pb2.CeremonyApproval(
                ceremony_id=request.ceremony_id,
                owner_signature=sign_request(self._owner_key, OWNER_CONTEXT, started.request)
                if started.needs_owner_approval
                else b"",
                approvals=approvals_for(started.request, wallet, approvers)
                if started.needs_approvals
                else [],
            )
            await self._unary(
                self._coordinator.ApproveCeremony,
                sign_device_call(self._device_key, "ApproveCeremony", approval.SerializeToString()),
            )
        output, result = await self._take_part(
            request, started, request.parties[me].party_id, roster, ceremony, save_pending,
            progress,
        )  # fmt: skip
        return request, output, result

    async def _take_part(
        self,
        request: ceremony_pb2.CeremonyRequest,
        started: coordinator_pb2.StartedCeremony,
        mine: str,
        roster: Roster,
        ceremony: Ceremony[Any],
        save_pending: SavePending | None,
        progress: Progress | None = None,
    ) -> tuple[Any, ceremony_pb2.CeremonyResult]:
        """Run this device's party in the room and, alongside, wait for the server's result."""

        async def party() -> Any:
            spec = started.relay_room if started.HasField("relay_room") else None
            async with self._relay.join(
                request.room_id, mine, started.join_token, room=spec
            ) as relay:
                output = await run_over_relay(
                    ceremony, self.identity, roster, request, relay, None, save_pending
                )
            if progress is not None:
                progress.output = output
            return output

        finish = coordinator_pb2.FinishAsk(ceremony_id=request.ceremony_id).SerializeToString()
        # FinishCeremony runs alongside the party: when the server share fails
        # (e.g. it lost its pair setup), the party stops at once instead of
        # waiting for messages that will not come.
        tasks = [
            asyncio.ensure_future(party()),
            asyncio.ensure_future(
                self._unary(
                    self._coordinator.FinishCeremony,
                    sign_device_call(self._device_key, "FinishCeremony", finish),
                )
            ),
        ]
        try:
            output, result = await asyncio.wait_for(asyncio.gather(*tasks), self._timeout)
        except Exception as e:
            # The server share's verdict (e.g. pair-setup-required) explains a
            # failure better than the room closing under the party, which the
            # coordinator does right after it: wait briefly for it.
            finishing = tasks[1]
            await asyncio.wait({finishing}, timeout=_VERDICT_GRACE_S)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            verdict = None if finishing.cancelled() else finishing.exception()
            if isinstance(verdict, CoordinatorRefused) and verdict is not e:
                raise verdict from e
            raise
        return output, result

    def _ceremony(
        self,
        request: ceremony_pb2.CeremonyRequest,
        wallet: DeviceWallet | None,
        recipient_key: X25519PrivateKey | None,
    ) -> tuple[Roster, Ceremony[Any]]:
        """This device's party of a checked request, built from the request alone."""
        if wallet is None:
            return roster_of(list(request.parties)), keygen_ceremony(request, self.identity)
        kind = request.kind
        if kind == ceremony_pb2.CEREMONY_KIND_SIGN:
            roster = roster_of(list(request.parties), sorted(request.signers))
            return roster, sign_ceremony(request, self.identity, wallet.share)
        if kind == ceremony_pb2.CEREMONY_KIND_PAIR_SETUP:
            roster = roster_of(list(request.parties), sorted(request.signers))
            session = lifecycle.lifecycle_session_id(request)  # as the enclave
            setup = PairSetup(wallet.share, wallet.server_index, session, secrets.token_bytes)
            return roster, setup
        keyring = PublicKeyring.from_share(wallet.share)
        if kind == ceremony_pb2.CEREMONY_KIND_REFRESH:
            layout = lifecycle.refresh_layout(request, keyring)
            reshare = Reshare(
                layout.plan, wallet.index, wallet.share, secrets.token_bytes,
                self.identity.hostseckey,
            )  # fmt: skip
            return layout.roster, reshare
        if kind == ceremony_pb2.CEREMONY_KIND_RESHARE:
            return self._reshare_party(request, keyring, wallet.share)
        if kind == ceremony_pb2.CEREMONY_KIND_EXPORT and recipient_key is not None:
            exporting = lifecycle.export_layout(request, keyring)
            seat = exporting.seat_of(self.identity.party_id)
            if seat is None:
                raise CoordinatorRefused("the export has no seat for this device")
            export = Export(
                exporting.plan, seat, wallet.share, secrets.token_bytes,
                recipient_key.private_bytes_raw(),
            )  # fmt: skip
            return exporting.roster, export
        raise CoordinatorRefused("the coordinator started a ceremony this device did not ask for")

    def _reshare_party(
        self, request: ceremony_pb2.CeremonyRequest, keyring: PublicKeyring, share: KeyShare | None
    ) -> tuple[Roster, Ceremony[Any]]:
        """This device's seat of a reshare: it deals with ``share`` if it is a dealer."""
        layout = lifecycle.reshare_layout(request, keyring)
        seat = layout.seat_of(self.identity.party_id)
        if seat is None:
            raise CoordinatorRefused("the reshare has no seat for this device")
        dealing = share if seat in layout.plan.dealers else None
        reshare = Reshare(layout.plan, seat, dealing, secrets.token_bytes, self.identity.hostseckey)
        return layout.roster, reshare

    def _attested_server(self, document: bytes, nonce: bytes) -> str:
        doc = verify(
            document,
            root_certificate=self._root,
            expected_pcrs=self._pcrs,
            nonce=nonce,
            allow_debug=self._allow_debug,
        )
        if doc.public_key is None:
            raise CoordinatorRefused("the enclave's document attests no party key")
        return party_id(doc.public_key)

    async def _unary(self, method: Any, message: Any) -> Any:
        try:
            return await method(message, timeout=self._timeout)
        except grpc.aio.AioRpcError as e:
            pairs: Any = e.trailing_metadata() or ()
            trailers = {str(k): str(v) for k, v in pairs}
            raise CoordinatorRefused(
                f"the coordinator refused: {e.details()}",
                e.code(),
                trailers.get("shardkeep-culprits", ""),
                trailers.get("shardkeep-reason", ""),
            ) from e

    async def _invitation(self, ask: coordinator_pb2.JoinAsk) -> coordinator_pb2.StartedCeremony:
        """JoinCeremony, asked again while the coordinator has no such reshare yet."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        while True:
            try:
                started: coordinator_pb2.StartedCeremony = await self._unary(
                    self._coordinator.JoinCeremony,
                    sign_device_call(self._device_key, "JoinCeremony", ask.SerializeToString()),
                )
                return started
            except CoordinatorRefused as e:
                if e.code != grpc.StatusCode.NOT_FOUND:
                    raise
                if asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(_INVITATION_POLL_S)
