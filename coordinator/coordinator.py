"""The coordinator library: runs the ceremonies of enrolled devices (docs/coordinator.md).

Keygen, signing, ECDSA pair setups, refresh, export (owner-approved) and a
reshare that adds another enrolled device's party (owner-approved; the added
device joins with :meth:`Coordinator.join`) of the wallets a device holds a
party of; epoch acknowledgments after a key change are forwarded to the host.
Backups of a device's party go to the host through it; a device of the
wallet's account fetches them and takes the party over by proving its host
key (a lost device restored).

It holds what a device must not: the coordinator key the enclave pins and
the relay admits, and the host's client certificate and API token
(``client.sdk.transport.Transport``). For each ask it fetches the enclave's
attestation document on the device's nonce, builds and signs the
``CeremonyRequest``, defines the room (by default a signed room spec that its
first join creates, docs/transport.md; with the call transport a CreateRoom),
starts the server share's side at the host and hands the device its own room
token and the spec. It keeps no share: only the
wallets' public keyrings, owner keys and which devices may use them.

Every request the enclave sees is assembled in one place, :meth:`Coordinator._launch`:
the coordinator's signature and the approvals the request needs: the owner's
signature of an export or reshare, and for a wallet with a policy set its
authenticators' approvals of a signature, refresh (a policy change carries
the asked set, named for the wallet and the new epoch), reshare or export,
which the device gathers over the exact request bytes and the coordinator
attaches unchanged (it cannot make them: they are signed by the owner's
authenticators; the enclave checks them).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError

from client.sdk.attestation import verify
from client.sdk.host_session import HostTransport, host_calls
from client.sdk.transport import Transport
from client.sdk.wallet import room_bytes
from coordinator.policy import Denied, Policy, WalletRecord
from coordinator.registry import Registry
from relay.client import CreatedRoom, RelayClient
from relay.errors import RelayError
from shardkeep import lifecycle
from shardkeep.device_auth import DeviceCallError, ReplayGuard, verify_device_call
from shardkeep.policyset import MAX_AUTHENTICATORS, InvalidPolicy
from shardkeep.policyset import decode as decode_policy_set
from shardkeep.policyset import encode as encode_policy_set
from shardkeep.requests import (
    COORDINATOR_CONTEXT,
    MAX_ED25519_MESSAGE,
    OWNER_CONTEXT,
    request_signature_valid,
    sign_request,
)
from shardkeep.v1 import ceremony_pb2, coordinator_pb2, host_pb2, host_pb2_grpc
from tss.certificate import verify_party_claim
from tss.channel import party_id
from tss.ecdsa.setup import UNKNOWN_SETUP_ID
from tss.errors import InputError

__all__ = [
    "BadAsk",
    "Coordinator",
    "Denied",
    "NoBackup",
    "NotApproved",
    "NotEnrolled",
    "ServerShareFailed",
    "UnknownCeremony",
]

_SCHEMES = (
    ceremony_pb2.SCHEME_BIP340,
    ceremony_pb2.SCHEME_ECDSA_SECP256K1,
    ceremony_pb2.SCHEME_ED25519,
)
_WALLET_KINDS = (
    ceremony_pb2.CEREMONY_KIND_SIGN,
    ceremony_pb2.CEREMONY_KIND_PAIR_SETUP,
    ceremony_pb2.CEREMONY_KIND_REFRESH,
    ceremony_pb2.CEREMONY_KIND_EXPORT,
    ceremony_pb2.CEREMONY_KIND_RESHARE,
)
# The enclave runs these only with the wallet owner's signature of the request.
_OWNER_SIGNED = (ceremony_pb2.CEREMONY_KIND_EXPORT, ceremony_pb2.CEREMONY_KIND_RESHARE)
# The host's refusals of a forwarded call that name a fault of the ask.
_ACK_REFUSALS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
)
_MAX_NONCE = 1024  # the NSM's limit on an attestation nonce


class NotEnrolled(Exception):
    """The call is not from an enrolled device (or is badly signed, stale or replayed)."""


class BadAsk(Exception):
    """The ask is malformed or inconsistent (named)."""


class UnknownCeremony(Exception):
    """No running ceremony of this device has that id."""


class NoBackup(Exception):
    """The host keeps no backup of the wallet's current epoch."""


class NotApproved(Exception):
    """The ceremony needs the owner's approval first, or the approval does not verify."""


class ServerShareFailed(Exception):
    """The server share's side failed; ``code`` is the host's status, ``culprits`` and
    ``reason`` its trailers (``reason``: e.g. ``pair-setup-required``)."""

    def __init__(self, message: str, code: grpc.StatusCode, culprits: str, reason: str) -> None:
        self.code = code
        self.culprits = culprits
        self.reason = reason
        super().__init__(message if not culprits else f"{message} (culprits: {culprits})")


@dataclass
class _Running:
    device_key: bytes
    device_index: int
    request: ceremony_pb2.CeremonyRequest
    data: bytes  # the request's bytes as handed to the device: what the signatures cover
    room: CreatedRoom
    server_id: str
    approvals_follow: bool = False  # the device's authenticators approve before it starts
    server_side: asyncio.Task[ceremony_pb2.CeremonyResult] | None = None
    # reshare: the added device's key -> its index among the new parties
    invited: dict[bytes, int] = field(default_factory=dict)
    # devices that joined and have not asked for the result yet; the room
    # closes once none is left and no FinishCeremony is still waiting
    waiting: set[bytes] = field(default_factory=set)
    finishing: int = 0
    recorded: bool = False
    started_at: float = field(default_factory=time.monotonic)


class Coordinator:
    """Runs ceremonies for devices; see the module docstring.

    Arguments:
        host_address, relay_address: where the host and the relay are.
        coordinator_key: the key the enclave pins and the relay admits.
        transport: TLS, client certificate and API token for the host (and TLS for the relay).
        root_certificate, expected_pcrs, allow_debug: how to check the enclave's documents.
        enrollment_codes: one-time codes a device enrolls with, or ``(code, account)``
            pairs that enroll it into an account (added to the registry; a code the
            registry knows as used stays used).
        registry: enrolled devices, codes, wallets and seen calls (default: in
            memory, forgotten on restart; ``coordinator.registry``).
        policy: who may ask for what (default :class:`Policy`).
        timeout: seconds for each ceremony.
        host_transport: "call" (the default: a unary call to the host per ceremony and
            challenge) or "session" (each a channel of one Host.Session stream, faster
            in flight; docs/transport.md).
        relay_transport: "session" (rooms created on first join from a signed spec,
            every room on one Relay.Session stream; docs/transport.md) or "call"
            (a CreateRoom, Join and CloseRoom call per room).
    """

    def __init__(
        self,
        host_address: str,
        relay_address: str,
        coordinator_key: Ed25519PrivateKey,
        *,
        transport: Transport | None = None,
        root_certificate: bytes | None = None,
        expected_pcrs: Mapping[int, bytes] | None = None,
        allow_debug: bool = False,
        enrollment_codes: Iterable[str | tuple[str, str]] = (),
        registry: Registry | None = None,
        policy: Policy | None = None,
        timeout: float = 120.0,
        host_transport: HostTransport = "call",
        relay_transport: Literal["call", "session"] = "session",
    ) -> None:
        transport = transport or Transport()
        self._host_channel = transport.host_channel(host_address)
        self._host = host_pb2_grpc.HostStub(self._host_channel)  # type: ignore[no-untyped-call]
        # Ceremonies and challenges, by call or on one Host.Session stream.
        self._host_calls = host_calls(self._host_channel, host_transport)
        self._relay = RelayClient(
            transport.relay_channel(relay_address),
            coordinator=coordinator_key,
            session=relay_transport == "session",
        )
        self._key = coordinator_key
        self._root = root_certificate
        self._pcrs = expected_pcrs
        self._allow_debug = allow_debug
        self._registry = registry or Registry()
        self._registry.add_codes(enrollment_codes)
        self._policy = policy or Policy()
        self._timeout = timeout
        self._running: dict[str, _Running] = {}
        self._guard = ReplayGuard(seen=self._registry)

    async def aclose(self) -> None:
        """Cancel unfinished ceremonies and close the channels."""
        for running in self._running.values():
            if running.server_side is not None:
                running.server_side.cancel()
        await self._relay.aclose()
        await self._host_calls.aclose()
        await self._host_channel.close(None)

    def wallet(self, wallet_id: str) -> WalletRecord | None:
        """The coordinator's record of a wallet (public data only)."""
        return self._registry.wallet(wallet_id)

    # --- enrollment ------------------------------------------------------------------

    def enroll(self, code: str, device_key: bytes) -> None:
        """Register a device key with a one-time enrollment code.

        Raises:
            NotEnrolled: an unknown or used code.
            BadAsk: not an Ed25519 public key.
        """
        try:
            Ed25519PublicKey.from_public_bytes(device_key)
        except ValueError as e:
            raise BadAsk("the device key is not an Ed25519 public key") from e
        if not self._registry.enroll(code, bytes(device_key)):
            raise NotEnrolled("unknown or used enrollment code")

    def _admit(self, call: coordinator_pb2.DeviceCall, method: str) -> bytes:
        try:
            verify_device_call(call, method)
            if not self._registry.enrolled(bytes(call.device_key)):
                raise NotEnrolled("this device key is not enrolled")
            self._guard.check(call)
        except DeviceCallError as e:
            raise NotEnrolled(str(e)) from e
        return bytes(call.device_key)

    # --- ceremonies ------------------------------------------------------------------

    async def start(self, call: coordinator_pb2.DeviceCall) -> coordinator_pb2.StartedCeremony:
        """Start the ceremony a device asks for; return what the device needs to join it.

        Raises:
            NotEnrolled, Denied, BadAsk; AttestationError (the enclave's document).
        """
        device = self._admit(call, "StartCeremony")
        ask = _parse(coordinator_pb2.CeremonyAsk, call.body)
        wallet = self._registry.wallet(ask.wallet_id) if ask.wallet_id else None
        self._policy.authorize(device, ask, wallet)
        if not 1 <= len(ask.attestation_nonce) <= _MAX_NONCE:
            raise BadAsk(f"the attestation nonce must be 1 to {_MAX_NONCE} bytes")
        # The document answers the device's nonce; the challenge makes the
        # signed request single-use at the enclave (one each, fetched together).
        reply, challenge = await asyncio.gather(
            self._host.GetAttestation(
                host_pb2.HostAttestationRequest(nonce=ask.attestation_nonce), timeout=30
            ),
            self._host_calls.challenge(_affinity(ask, wallet), timeout=30),
        )
        server = self._server_party(reply.document, bytes(ask.attestation_nonce))
        if ask.approvals_follow and ask.kind == ceremony_pb2.CEREMONY_KIND_KEYGEN:
            raise BadAsk("a keygen registers a policy set; it takes no approvals")
        if ask.kind == ceremony_pb2.CEREMONY_KIND_KEYGEN:
            request, index = self._keygen_request(ask, server)
        elif ask.kind in _WALLET_KINDS and wallet is not None:
            request, index = self._wallet_request(ask, wallet, device, server)
        else:
            raise BadAsk(
                "a device may ask for a keygen, or a signature, pair setup, refresh, "
                "export or reshare of a wallet it holds a party of"
            )
        members = [
            request.parties[i].party_id for i in (request.signers or range(len(request.parties)))
        ]
        members += [p.party_id for p in request.new_parties if p.party_id not in members]
        room = await self._relay.create_room(
            members, ttl_ms=int(self._timeout * 1000), max_total_bytes=room_bytes(len(members))
        )
        request.room_id = room.room_id
        request.not_after_unix = int(time.time()) + int(self._timeout)
        request.challenge = bytes(challenge.challenge)
        running = _Running(
            device, index, request, request.SerializeToString(), room, server.party_id,
            approvals_follow=ask.approvals_follow,
        )  # fmt: skip
        running.waiting.add(device)
        if request.kind == ceremony_pb2.CEREMONY_KIND_RESHARE and wallet is not None:
            running.invited = _reshare_invitations(ask, wallet, device, request)
        elif request.kind == ceremony_pb2.CEREMONY_KIND_REFRESH and wallet is not None:
            running.invited = {k: i for k, i in wallet.devices.items() if k != device}
        await self._drop_abandoned()
        self._running[request.ceremony_id] = running
        needs_owner = request.kind in _OWNER_SIGNED
        if not needs_owner and not ask.approvals_follow:
            self._launch(running)
        return coordinator_pb2.StartedCeremony(
            request=running.data,
            attestation_document=reply.document,
            join_token=room.join_tokens[request.parties[index].party_id],
            relay_room=room.spec,
            needs_owner_approval=needs_owner,
            needs_approvals=ask.approvals_follow,
        )

    async def _drop_abandoned(self) -> None:
        """Forget ceremonies nobody finished within twice the timeout (a device gave up, or
        never approved): their server side is cancelled and their room closed, so an
        enrolled device cannot grow the coordinator's memory without bound."""
        cutoff = time.monotonic() - 2 * self._timeout
        for ceremony_id, running in list(self._running.items()):
            if running.started_at >= cutoff or running.finishing:
                continue
            del self._running[ceremony_id]
            if running.server_side is not None:
                running.server_side.cancel()
            with contextlib.suppress(RelayError, grpc.aio.AioRpcError):
                await self._relay.close_room(running.room.room_id, running.room.admin_token)

    def approve(self, call: coordinator_pb2.DeviceCall) -> None:
        """Attach the owner's signature (export, reshare) and the authenticators' approvals
        (a wallet with a policy set) to a started ceremony, and start the server share's side.

        The approvals go to the enclave unchanged: only it knows the policy set
        in force, and it refuses what does not verify under it.

        Raises:
            NotEnrolled, UnknownCeremony; NotApproved: the signature is not the
                wallet owner's over the request, approvals were promised and
                none (or too many) came, or the ceremony takes no approval.
        """
        device = self._admit(call, "ApproveCeremony")
        approval = _parse(coordinator_pb2.CeremonyApproval, call.body)
        running = self._running.get(approval.ceremony_id)
        if running is None or running.device_key != device:
            raise UnknownCeremony(f"no running ceremony {approval.ceremony_id!r} of this device")
        wallet = self._registry.wallet(running.request.wallet_id)
        owner_signed = running.request.kind in _OWNER_SIGNED
        if wallet is None or running.server_side is not None:
            raise NotApproved("this ceremony takes no (further) approval")
        if not owner_signed and not running.approvals_follow:
            raise NotApproved("this ceremony takes no approval")
        signature = bytes(approval.owner_signature)
        if owner_signed and not request_signature_valid(
            wallet.owner_key, OWNER_CONTEXT, running.data, signature
        ):
            raise NotApproved("the approval is not the wallet owner's signature of the request")
        approvals = list(approval.approvals)
        if running.approvals_follow and not 1 <= len(approvals) <= MAX_AUTHENTICATORS:
            raise NotApproved(f"the ceremony takes 1 to {MAX_AUTHENTICATORS} approvals")
        if not running.approvals_follow and approvals:
            raise NotApproved("approvals were not announced when the ceremony started")
        self._launch(running, owner_signature=signature if owner_signed else b"",
                     approvals=approvals)  # fmt: skip

    async def join(self, call: coordinator_pb2.DeviceCall) -> coordinator_pb2.StartedCeremony:
        """Hand a device invited to a running reshare (its new party) or refresh (every other
        device of the wallet) its request and room token.

        The enclave's document answers the joining device's own nonce.

        Raises:
            NotEnrolled, BadAsk; UnknownCeremony: no running reshare of that
                wallet invites this device (yet: the device may ask again).
        """
        device = self._admit(call, "JoinCeremony")
        ask = _parse(coordinator_pb2.JoinAsk, call.body)
        running = next(
            (
                r for r in self._running.values()
                if r.request.wallet_id == ask.wallet_id and device in r.invited
                and r.server_side is not None and device not in r.waiting
            ),
            None,
        )  # fmt: skip
        if running is None:
            raise UnknownCeremony(f"no running ceremony of wallet {ask.wallet_id!r} invites this")
        if not 1 <= len(ask.attestation_nonce) <= _MAX_NONCE:
            raise BadAsk(f"the attestation nonce must be 1 to {_MAX_NONCE} bytes")
        reply = await self._host.GetAttestation(
            host_pb2.HostAttestationRequest(nonce=ask.attestation_nonce), timeout=30
        )
        server = self._server_party(reply.document, bytes(ask.attestation_nonce))
        if server.party_id != running.server_id:
            raise BadAsk("the enclave attests another server party than the ceremony's")
        running.waiting.add(device)
        request = running.request
        seats = request.new_parties if request.kind == ceremony_pb2.CEREMONY_KIND_RESHARE else None
        party = (seats or request.parties)[running.invited[device]]
        return coordinator_pb2.StartedCeremony(
            request=running.data,
            attestation_document=reply.document,
            join_token=running.room.join_tokens[party.party_id],
            relay_room=running.room.spec,
        )

    # --- backups and restoring a lost device -----------------------------------------

    async def store_backup(self, call: coordinator_pb2.DeviceCall) -> None:
        """Store a device's (client-encrypted) backup of its own party at the host.

        Raises:
            NotEnrolled, Denied; BadAsk: another epoch than the wallet's, or the host refused.
        """
        device = self._admit(call, "StoreBackup")
        upload = _parse(coordinator_pb2.BackupUpload, call.body)
        wallet = self._registry.wallet(upload.wallet_id)
        if wallet is None or device not in wallet.devices:
            raise Denied("this device is not a party of the wallet")
        if upload.epoch != wallet.epoch:
            raise BadAsk(f"a backup of epoch {upload.epoch}; the wallet is at {wallet.epoch}")
        backup = host_pb2.Backup(
            wallet_id=upload.wallet_id, backup_id=upload.backup_id,
            party_id=str(wallet.devices[device]), epoch=upload.epoch, blob=upload.blob,
        )  # fmt: skip
        await self._ask_host(self._host.PutBackup(host_pb2.PutBackupRequest(backup=backup)))

    async def fetch_backup(self, call: coordinator_pb2.DeviceCall) -> coordinator_pb2.FetchedBackup:
        """The newest backup of the wallet's current epoch, for a device of its account.

        Raises:
            NotEnrolled, Denied, NoBackup.
        """
        device = self._admit(call, "FetchBackup")
        ask = _parse(coordinator_pb2.BackupAsk, call.body)
        wallet = self._registry.wallet(ask.wallet_id)
        self._policy.authorize_recovery(self._registry.account_of(device), wallet)
        assert wallet is not None  # authorize_recovery refuses None
        listing = await self._ask_host(
            self._host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=wallet.wallet_id))
        )
        current = [b for b in listing.backups if b.epoch == wallet.epoch]
        if not current:
            raise NoBackup(f"no backup of epoch {wallet.epoch} of wallet {wallet.wallet_id!r}")
        newest = max(current, key=lambda b: b.created_at_ms)
        backup = await self._ask_host(
            self._host.GetBackup(
                host_pb2.GetBackupRequest(wallet_id=wallet.wallet_id, backup_id=newest.backup_id)
            )
        )
        if not backup.party_id.isdigit():
            raise NoBackup("the host's backup names no party index")
        return coordinator_pb2.FetchedBackup(
            backup_id=backup.backup_id, party=int(backup.party_id), epoch=backup.epoch,
            blob=backup.blob, parties=wallet.parties,
        )  # fmt: skip

    def claim_party(self, call: coordinator_pb2.DeviceCall) -> None:
        """Let a device act for a party of a wallet of its account, proven by the party's host key.

        The device that held the party before no longer may (it was lost).

        Raises:
            NotEnrolled, Denied (another account, or not the party's signature), BadAsk.
        """
        device = self._admit(call, "ClaimParty")
        claim = _parse(coordinator_pb2.PartyClaim, call.body)
        wallet = self._registry.wallet(claim.wallet_id)
        self._policy.authorize_recovery(self._registry.account_of(device), wallet)
        assert wallet is not None
        if claim.party >= len(wallet.parties) or claim.party == wallet.server_index:
            raise BadAsk("no device party of the wallet has that index")
        host_key = bytes(wallet.parties[claim.party].host_pubkey)
        if not verify_party_claim(
            host_key, wallet.wallet_id, claim.party, device, bytes(claim.signature)
        ):
            raise Denied("the claim is not signed by that party's host key")
        wallet.devices = {k: i for k, i in wallet.devices.items() if i != claim.party}
        wallet.devices[device] = claim.party
        self._registry.save_wallet(wallet)

    async def settle(self, call: coordinator_pb2.DeviceCall) -> coordinator_pb2.SettledKeyChange:
        """What the host decided about a wallet's key change at an epoch (device resumption).

        A complete certificate the device holds goes to the host first
        (``SubmitCertificate``; the host checks it). The device checks the
        answer itself: the session id and transcript against its saved change,
        the certificate against its seats' host keys. A committed refresh
        moves the coordinator's record to its epoch.

        Raises:
            NotEnrolled, Denied; BadAsk: the host refused (named).
        """
        device = self._admit(call, "SettleKeyChange")
        ask = _parse(coordinator_pb2.KeyChangeSettle, call.body)
        wallet = self._registry.wallet(ask.wallet_id)
        if wallet is None or device not in wallet.devices:
            raise Denied("this device is not a party of the wallet")
        request = host_pb2.GetEpochsRequest(wallet_id=ask.wallet_id)
        epochs = await self._ask_host(self._host.GetEpochs(request))
        record = next((e for e in epochs.epochs if e.epoch == ask.epoch), None)
        if record is None:
            return coordinator_pb2.SettledKeyChange(state="absent")
        if record.state == "pending" and ask.certificate:
            submit = host_pb2.SubmitCertificateRequest(
                wallet_id=ask.wallet_id, epoch=ask.epoch, certificate=ask.certificate
            )
            await self._ask_host(self._host.SubmitCertificate(submit))
            record.state, record.certificate = "committed", ask.certificate
        same_keyring = [p.party_id for p in record.parties] == [p.party_id for p in wallet.parties]
        if record.state != "pending" and same_keyring and record.epoch > wallet.epoch:
            wallet.epoch = record.epoch  # a refresh; a reshare's new keyring is not known here
            self._registry.save_wallet(wallet)
        return coordinator_pb2.SettledKeyChange(
            state=record.state, session_id=record.key_change.session_id,
            transcript=record.key_change.transcript, certificate=record.certificate,
            deadline_unix_ms=record.deadline_unix_ms,
        )  # fmt: skip

    async def _ask_host(self, call: Any) -> Any:
        """Await a host call; its refusals of the ask become ``BadAsk`` (named)."""
        try:
            return await call
        except grpc.aio.AioRpcError as e:
            if e.code() in _ACK_REFUSALS:
                raise BadAsk(f"the host refused: {e.details()}") from e
            raise

    async def acknowledge(self, call: coordinator_pb2.DeviceCall) -> int:
        """Forward a device seat's acknowledgment of a new epoch to the host.

        The host checks the signature against the seat's host key; the
        coordinator only checks that the device holds a party of the wallet.

        Returns:
            The number of retired epochs the host pruned.

        Raises:
            NotEnrolled, Denied; BadAsk: the host refused the acknowledgment (named).
        """
        device = self._admit(call, "AcknowledgeEpoch")
        ack = _parse(coordinator_pb2.EpochAck, call.body)
        wallet = self._registry.wallet(ack.wallet_id)
        if wallet is None or device not in wallet.devices:
            raise Denied("this device is not a party of the wallet")
        try:
            reply = await self._host.AckEpoch(
                host_pb2.AckEpochRequest(
                    wallet_id=ack.wallet_id,
                    epoch=ack.epoch,
                    position=ack.position,
                    signature=ack.signature,
                ),
                timeout=30,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() in _ACK_REFUSALS:
                raise BadAsk(f"the host refused the acknowledgment: {e.details()}") from e
            raise
        return int(reply.pruned)

    async def finish(self, call: coordinator_pb2.DeviceCall) -> ceremony_pb2.CeremonyResult:
        """Wait for the server share's result of a device's ceremony; record a new wallet.

        Raises:
            NotEnrolled, UnknownCeremony, ServerShareFailed.
        """
        device = self._admit(call, "FinishCeremony")
        ask = _parse(coordinator_pb2.FinishAsk, call.body)
        running = self._running.get(ask.ceremony_id)
        if running is None or device not in running.waiting:
            raise UnknownCeremony(f"no running ceremony {ask.ceremony_id!r} of this device")
        running.waiting.discard(device)
        running.finishing += 1
        try:
            if running.server_side is None:
                raise NotApproved("the ceremony was never approved by the wallet's owner")
            # Shielded: one device giving up must not cancel the others' ceremony.
            result = await asyncio.wait_for(asyncio.shield(running.server_side), self._timeout)
        finally:
            running.finishing -= 1
            if not running.waiting and not running.finishing:
                self._running.pop(ask.ceremony_id, None)
                await self._relay.close_room(running.room.room_id, running.room.admin_token)
        if not running.recorded:
            running.recorded = True
            self._record(running, result)
        return result

    def _record(self, running: _Running, result: ceremony_pb2.CeremonyResult) -> None:
        """Keep what a finished ceremony changed about its wallet (public data only)."""
        request, device = running.request, running.device_key
        if request.kind == ceremony_pb2.CEREMONY_KIND_KEYGEN:
            self._registry.save_wallet(WalletRecord(
                request.wallet_id, request.scheme, request.threshold, list(request.parties),
                server_index=len(request.parties) - 1, public_key=bytes(result.public_key),
                epoch=result.epoch, devices={device: running.device_index},
                owner_key=bytes(request.owner_key),
                account=self._registry.account_of(device) or "",
            ))  # fmt: skip
            return
        record = self._registry.wallet(request.wallet_id)
        if record is None:
            return
        if request.kind == ceremony_pb2.CEREMONY_KIND_REFRESH:
            record.epoch = result.epoch
        elif request.kind == ceremony_pb2.CEREMONY_KIND_RESHARE:
            new = list(request.new_parties)
            record.parties, record.threshold = new, request.new_threshold
            record.server_index, record.epoch = len(new) - 1, result.epoch
            new_ids = [p.party_id for p in new]
            mine = new_ids.index(request.parties[running.device_index].party_id)
            record.devices = {device: mine} | running.invited
        else:
            return
        self._registry.save_wallet(record)

    def _server_party(self, document: bytes, nonce: bytes) -> ceremony_pb2.Party:
        doc = verify(
            document,
            root_certificate=self._root,
            expected_pcrs=self._pcrs,
            nonce=nonce,
            allow_debug=self._allow_debug,
        )
        if doc.public_key is None or doc.user_data is None:
            raise BadAsk("the enclave's document does not carry the server party's keys")
        return ceremony_pb2.Party(
            party_id=party_id(doc.public_key),
            static_key=doc.public_key,
            host_pubkey=doc.user_data,
        )

    def _keygen_request(
        self, ask: coordinator_pb2.CeremonyAsk, server: ceremony_pb2.Party
    ) -> tuple[ceremony_pb2.CeremonyRequest, int]:
        if ask.scheme not in _SCHEMES:
            raise BadAsk("unknown scheme")
        if len(ask.owner_key) != 32 or not ask.party.party_id:
            raise BadAsk("a keygen needs the device's party and a 32-byte owner key")
        try:
            lifecycle.check_server_threshold(ask.threshold)
        except InputError as e:
            raise BadAsk(str(e)) from e
        if ask.threshold > 2:
            raise BadAsk("a device and the server share make 2 parties: the threshold is 2")
        request = ceremony_pb2.CeremonyRequest(
            ceremony_id=f"keygen-{secrets.token_hex(8)}",
            kind=ceremony_pb2.CEREMONY_KIND_KEYGEN,
            scheme=ask.scheme,
            wallet_id=f"wallet-{secrets.token_hex(8)}",
            threshold=ask.threshold,
            parties=[ask.party, server],
            owner_key=ask.owner_key,
        )
        if ask.policy_set:
            # The wallet id is the coordinator's to choose: it names the new wallet in the
            # set (epoch 0); the device checks the request's set is its own with that id.
            request.policy_set = _named_policy_set(ask.policy_set, request.wallet_id, 0)
        return request, 0

    def _wallet_request(
        self,
        ask: coordinator_pb2.CeremonyAsk,
        wallet: WalletRecord,
        device: bytes,
        server: ceremony_pb2.Party,
    ) -> tuple[ceremony_pb2.CeremonyRequest, int]:
        """A signature, ECDSA pair setup, refresh or export of the device's wallet."""
        if wallet.parties[wallet.server_index].party_id != server.party_id:
            raise BadAsk("the enclave attests another server party than the wallet's")
        index = wallet.devices[device]
        name = ceremony_pb2.CeremonyKind.Name(ask.kind).removeprefix("CEREMONY_KIND_").lower()
        request = ceremony_pb2.CeremonyRequest(
            ceremony_id=f"{name}-{secrets.token_hex(8)}",
            kind=ask.kind,
            scheme=wallet.scheme,
            wallet_id=wallet.wallet_id,
            parties=wallet.parties,
            signers=sorted([index, wallet.server_index]),
            epoch=wallet.epoch,
        )
        if ask.kind == ceremony_pb2.CEREMONY_KIND_PAIR_SETUP:
            if wallet.scheme != ceremony_pb2.SCHEME_ECDSA_SECP256K1:
                raise BadAsk("pair setups are for ECDSA wallets")
            return request, index
        if ask.policy_set and ask.kind != ceremony_pb2.CEREMONY_KIND_REFRESH:
            raise BadAsk("only a keygen or a refresh (a policy change) carries a policy set")
        if ask.kind == ceremony_pb2.CEREMONY_KIND_REFRESH:
            # Every party deals in a refresh: the wallet's other devices are invited to join.
            if len(wallet.devices) != len(wallet.parties) - 1:
                raise BadAsk("a refresh needs every party; one of this wallet's has no device here")
            del request.signers[:]
            if ask.policy_set:  # a policy change: the new set, in force from the new epoch
                request.policy_set = _named_policy_set(
                    ask.policy_set, wallet.wallet_id, wallet.epoch + 1
                )
            return request, index
        if ask.kind == ceremony_pb2.CEREMONY_KIND_RESHARE and ask.HasField("remove_party"):
            return self._remove_party_request(ask, wallet, request, index), index
        if ask.kind == ceremony_pb2.CEREMONY_KIND_RESHARE:
            return self._add_party_request(ask, wallet, request, index), index
        if ask.kind == ceremony_pb2.CEREMONY_KIND_EXPORT:
            if ask.party != wallet.parties[index] or len(ask.export_recipient_key) != 32:
                raise BadAsk("an export goes to the device's own party and a 32-byte X25519 key")
            request.export_recipient.CopyFrom(ask.party)
            request.export_recipient_key = ask.export_recipient_key
            return request, index
        if wallet.scheme == ceremony_pb2.SCHEME_ED25519:
            # RFC 8032 signs the message itself: no digest, path or tweak.
            if ask.digest or ask.derivation_path or ask.taproot or ask.taproot_merkle_root:
                raise BadAsk("an ed25519 wallet signs a message, with no digest, path or tweak")
            if not 1 <= len(ask.message) <= MAX_ED25519_MESSAGE:
                raise BadAsk(f"the message must be 1 to {MAX_ED25519_MESSAGE} bytes")
            request.message = ask.message
            request.solana_message = ask.solana_message
            return request, index
        if len(ask.digest) != 32 or ask.message or ask.solana_message:
            raise BadAsk("the digest must be 32 bytes (and no message)")
        # What the digest is of, for the enclave's policy: it parses it and
        # refuses a digest that is not the one it computes.
        request.evm_transaction = ask.evm_transaction
        request.psbt = ask.psbt
        request.psbt_input = ask.psbt_input
        request.eth_personal_message = ask.eth_personal_message
        request.eth_typed_data = ask.eth_typed_data
        request.digest = ask.digest
        request.derivation_path.extend(ask.derivation_path)
        request.taproot = ask.taproot
        request.taproot_merkle_root = ask.taproot_merkle_root
        if wallet.scheme == ceremony_pb2.SCHEME_ECDSA_SECP256K1:
            request.pair_setup_ids[index] = bytes(ask.pair_setup_id) or UNKNOWN_SETUP_ID
        return request, index

    def _add_party_request(
        self,
        ask: coordinator_pb2.CeremonyAsk,
        wallet: WalletRecord,
        request: ceremony_pb2.CeremonyRequest,
        index: int,
    ) -> ceremony_pb2.CeremonyRequest:
        """A reshare of a device's 2-party wallet that adds another enrolled device's party.

        The device and the server share deal; the new keyring lists the
        device, the added party, then the server party (last, as at keygen).
        """
        if len(wallet.parties) != 2:
            raise BadAsk(
                "adding a party needs every holder; this wallet has others than the device"
            )
        added = bytes(ask.new_device_key)
        if not self._registry.enrolled(added) or added in wallet.devices:
            raise BadAsk("the added party's device must be enrolled and new to the wallet")
        ids = {p.party_id for p in wallet.parties}
        if not ask.HasField("new_party") or ask.new_party.party_id in ids:
            raise BadAsk("a reshare adds one new party")
        try:
            lifecycle.check_server_threshold(ask.new_threshold)
        except InputError as e:
            raise BadAsk(str(e)) from e
        if ask.new_threshold > 3 or not ask.HasField("keyring"):
            raise BadAsk("a 3-party keyring takes a threshold of 2 or 3, and the current keyring")
        server = wallet.parties[wallet.server_index]
        request.new_parties.extend([wallet.parties[index], ask.new_party, server])
        request.new_threshold = ask.new_threshold
        # The enclave checks it against its own share's keyring.
        request.keyring.CopyFrom(ask.keyring)
        return request

    def _remove_party_request(
        self,
        ask: coordinator_pb2.CeremonyAsk,
        wallet: WalletRecord,
        request: ceremony_pb2.CeremonyRequest,
        index: int,
    ) -> ceremony_pb2.CeremonyRequest:
        """A reshare that drops one device party (e.g. a lost device's): the asking device
        and the server share deal; the wallet's other devices are invited to receive."""
        removed = ask.remove_party
        if removed in (index, wallet.server_index) or removed >= len(wallet.parties):
            raise BadAsk("a reshare removes another device's party of the wallet")
        if wallet.threshold > 2 or not ask.HasField("keyring"):
            raise BadAsk("the device and the server share deal: a threshold of 2, and the keyring")
        new = [p for i, p in enumerate(wallet.parties) if i != removed]
        try:
            lifecycle.check_server_threshold(ask.new_threshold)
        except InputError as e:
            raise BadAsk(str(e)) from e
        if ask.new_threshold > len(new):
            raise BadAsk(f"a {len(new)}-party keyring takes a threshold of at most {len(new)}")
        request.new_parties.extend(new)
        request.new_threshold = ask.new_threshold
        request.keyring.CopyFrom(ask.keyring)  # the enclave checks it against its share's
        return request

    def _launch(
        self,
        running: _Running,
        *,
        owner_signature: bytes = b"",
        approvals: Iterable[ceremony_pb2.Approval] = (),
    ) -> None:
        """Sign the request, attach its approvals, and start the server share's side.

        The one place that assembles what the enclave verifies: the
        coordinator's signature of the exact request bytes, the owner's, and
        the authenticators' approvals as the device handed them.
        """
        signed = ceremony_pb2.SignedCeremonyRequest(
            request=running.data,
            coordinator_signature=sign_request(self._key, COORDINATOR_CONTEXT, running.data),
            owner_signature=owner_signature,
            approvals=approvals,
        )
        running.server_side = asyncio.create_task(
            self._server_side(signed, running.room, running.server_id)
        )

    async def _server_side(
        self, signed: ceremony_pb2.SignedCeremonyRequest, room: CreatedRoom, server_id: str
    ) -> ceremony_pb2.CeremonyResult:
        kind = ceremony_pb2.CeremonyRequest.FromString(signed.request).kind
        try:
            result = await self._host_calls.ceremony(
                kind,
                host_pb2.HostCeremonyRequest(
                    request=signed, relay_token=room.join_tokens[server_id], relay_room=room.spec
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as e:
            pairs: Any = e.trailing_metadata() or ()
            trailers = {str(k): str(v) for k, v in pairs}
            raise ServerShareFailed(
                f"the server share refused: {e.details()}",
                e.code(),
                trailers.get("shardkeep-culprits", ""),
                trailers.get("shardkeep-reason", ""),
            ) from e
        return result


def _parse(kind: Any, body: bytes) -> Any:
    try:
        return kind.FromString(body)
    except DecodeError as e:
        raise BadAsk(f"the body is not a {kind.__name__}") from e


def _named_policy_set(data: bytes, wallet_id: str, epoch: int) -> bytes:
    """The asked policy set naming its wallet and the epoch it comes into force at (the
    asking device checks that nothing else changed; the enclave checks the set)."""
    try:
        asked = decode_policy_set(data)
    except InvalidPolicy as e:
        raise BadAsk(f"the policy set is refused: {e}") from e
    return encode_policy_set(replace(asked, wallet_id=wallet_id, epoch=epoch))


def _reshare_invitations(
    ask: coordinator_pb2.CeremonyAsk,
    wallet: WalletRecord,
    device: bytes,
    request: ceremony_pb2.CeremonyRequest,
) -> dict[bytes, int]:
    """The devices a reshare needs besides the asking one, by their new party index: the
    added device, or every other device that keeps its party."""
    if not ask.HasField("remove_party"):
        return {bytes(ask.new_device_key): len(request.new_parties) - 2}
    new_ids = [p.party_id for p in request.new_parties]
    return {
        key: new_ids.index(wallet.parties[i].party_id)
        for key, i in wallet.devices.items()
        if key != device and i != ask.remove_party
    }


def _affinity(ask: coordinator_pb2.CeremonyAsk, wallet: WalletRecord | None) -> str:
    """The host's routing key for the ask's challenge: the wallet id of an ECDSA wallet,
    whose DKLs23 pair setups live in one enclave's memory
    (docs/security/ot-setups.md); none for a keygen (its id is not drawn yet)."""
    if wallet is None or wallet.scheme != ceremony_pb2.SCHEME_ECDSA_SECP256K1:
        return ""
    return wallet.wallet_id
