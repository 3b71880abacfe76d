"""The device side: a phone (or any end-user device) that holds its shares but no coordinator key.

``Device`` asks a coordinator (``shardkeep.v1.Coordinator``, docs/coordinator.md)
to run a keygen, a signature, a refresh or an export, checks what comes back
before taking part, and runs its own party over the relay with the room token
it was handed:

- the enclave's attestation document must verify (the pinned root and PCRs)
  on the nonce the device chose, and attest the server party the request
  names, so a coordinator cannot slip in a key of its own;
- the request must be what the device asked for (kind, wallet, digest,
  threshold, its own party), and its ceremony is built from the request alone,
  as the enclave builds its own;
- an export runs only once the device's owner key signed the checked request
  (``ApproveCeremony``), and goes to the device's own one-time key.

The device keeps its key shares and the wallet owner's key; it never sees the
coordinator key, the host's API token or another party's room token.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
from coincurve import PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client.errors import InvalidInput, WalletError, sdk_boundary
from client.sdk.approvals import Approver, approvals_of
from client.sdk.attestation import verify
from client.sdk.device_backup import make_device_backup, open_device_backup
from client.sdk.party import (
    PartyIdentity,
    SavePending,
    keygen_ceremony,
    roster_of,
    run_over_relay,
    sign_ceremony,
)
from client.sdk.transport import Transport
from client.sdk.wallet import PAIR_SETUP_REQUIRED, SCHEMES, KeyChangeUndecided, SignedPayload
from client.storage.shares import BackupBlob, Passcode
from relay.client import RelayClient
from shardkeep import lifecycle
from shardkeep.device_auth import sign_device_call
from shardkeep.policyset import PolicySet
from shardkeep.policyset import decode as decode_policy_set
from shardkeep.policyset import encode as encode_policy_set
from shardkeep.requests import MAX_ED25519_MESSAGE, OWNER_CONTEXT, sign_request
from shardkeep.v1 import ceremony_pb2, coordinator_pb2, coordinator_pb2_grpc
from tss.ceremony import Ceremony
from tss.certificate import Pending, PendingKeyChange, sign_epoch_ack, sign_party_claim
from tss.channel import Roster, party_id
from tss.ecdsa.setup import PeerSetup
from tss.errors import FaultyParticipantError, InputError
from tss.export import Export, ExportOutput
from tss.group import ED25519
from tss.keygen import PairSetup
from tss.keyshare import KeyShare, Scheme
from tss.reshare import PublicKeyring, Reshare, ReshareOutput
from tss.signing import NO_OPTIONS, RecoverableSignature, SigningOptions

__all__ = ["CoordinatorRefused", "Device", "DeviceKeyChangeInterrupted", "DeviceWallet"]

_VERDICT_GRACE_S = 10.0
_INVITATION_POLL_S = 0.2
_DEADLINE_SLACK_S = 5  # past the request's expiry, the host can no longer store its epoch
# The enclave runs these only with the wallet owner's signature of the request.
_OWNER_SIGNED = (ceremony_pb2.CEREMONY_KIND_EXPORT, ceremony_pb2.CEREMONY_KIND_RESHARE)


class CoordinatorRefused(WalletError):
    """The coordinator refused, or handed back something this device did not ask for."""

    error_code = "coordinator_refused"


class DeviceKeyChangeInterrupted(WalletError):
    """A refresh or reshare failed after this device saved its new share as pending.

    :meth:`Device.resume` settles it (the new wallet, or the old one); until
    then the old wallet signs. ``certificate``: the complete certificate, if
    this device's party got every signature; ``deadline_unix``: after it, a
    change the host does not hold can no longer be stored.
    """

    error_code = "device_key_change_interrupted"

    def __init__(
        self, message: str, pending: DeviceWallet, certificate: bytes, deadline_unix: int
    ) -> None:
        super().__init__(message)
        self.pending = pending
        self.certificate = certificate
        self.deadline_unix = deadline_unix


@sdk_boundary
@dataclass
class DeviceWallet:
    """A wallet as a device holds it: the public keyring and its own share."""

    wallet_id: str
    scheme: Scheme
    threshold: int
    parties: list[ceremony_pb2.Party]
    index: int
    public_key: bytes
    epoch: int
    share: KeyShare = field(repr=False)
    # After a refresh: what the epoch acknowledgment signs (public; None otherwise).
    key_change: PendingKeyChange | None = field(default=None, repr=False)
    # Registered at keygen: the server share acts for the wallet only with its approvals.
    policy_set: PolicySet | None = field(default=None, repr=False)

    @property
    def server_index(self) -> int:
        """The server party's index: a coordinator's keygen lists it last."""
        return len(self.parties) - 1

    def server_setup_id(self) -> bytes | None:
        """ECDSA: the id of this share's usable DKLs23 setup with the server party, or None."""
        setup = self.share.ecdsa
        server = self.server_index
        if setup is None or server not in setup.held or setup.is_burned(server):
            return None
        return setup.peer(server).setup_id


SaveNewWallet = Callable[["DeviceWallet"], Awaitable[None]]


@sdk_boundary
class Device:
    """A device's SDK: enroll with a coordinator, create wallets, sign, refresh, export.

    Arguments:
        coordinator_address, relay_address: where the coordinator and the relay are.
        identity: the device's party keys (channel and ChillDKG host key).
        device_key: authenticates this device to the coordinator.
        owner_key: the owner key registered at keygen (signs export and reshare later).
        root_certificate, expected_pcrs, allow_debug: how to check the enclave's documents.
        transport: TLS settings (the device has no API token).
        timeout: seconds for each ceremony.
    """

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

    async def __aenter__(self) -> Device:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._relay.aclose()
        await self._channel.close(None)

    async def enroll(self, code: str) -> None:
        """Register this device's key with a one-time enrollment code."""
        await self._unary(
            self._coordinator.Enroll,
            coordinator_pb2.EnrollRequest(
                enrollment_code=code,
                device_key=self._device_key.public_key().public_bytes_raw(),
            ),
        )

    async def create_wallet(
        self, scheme: Scheme, *, threshold: int = 2, policy_set: PolicySet | None = None
    ) -> DeviceWallet:
        """A 2-party wallet of this device and the server share; the device keeps its share.

        ``policy_set``: authenticators and policies to register with the server
        share (the coordinator names the wallet in it; this device checks that
        nothing else changed). From then on the server share acts for the wallet
        only with their approvals (docs/security/policy.md).
        """
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_KEYGEN,
            scheme=SCHEMES[scheme],
            threshold=threshold,
            party=self.identity.party,
            owner_key=self._owner_key.public_key().public_bytes_raw(),
            policy_set=b"" if policy_set is None else encode_policy_set(policy_set),
        )
        request, share, result = await self._run(ask, None)
        if not isinstance(share, KeyShare) or share.public_key != bytes(result.public_key):
            raise CoordinatorRefused("the server share reported another public key")
        registered = decode_policy_set(request.policy_set) if request.policy_set else None
        return DeviceWallet(
            request.wallet_id, scheme, request.threshold, list(request.parties),
            _my_index(request, self.identity), share.public_key, share.epoch, share,
            policy_set=registered,
        )  # fmt: skip

    async def sign(
        self,
        wallet: DeviceWallet,
        digest: bytes,
        *,
        options: SigningOptions = NO_OPTIONS,
        approvers: Sequence[Approver] = (),
        payload: SignedPayload | None = None,
    ) -> bytes | RecoverableSignature:
        """Sign a 32-byte digest with this device's share and the server share; for an
        ed25519 wallet ``digest`` is the message itself (1 to 65536 bytes: RFC 8032
        hashes the message, there is no digest to sign).

        For a wallet with a policy set, ``approvers`` approve the exact request
        the coordinator returns, once this device checked it; ``payload`` is
        what the digest is of, which the server share parses for the policy.

        ECDSA: the enclave keeps its DKLs23 pair setups in memory only; when
        this share has none usable, or the enclave answers that it lost its
        side (a restart), a new pair setup runs first (``pair_setup``).
        """
        if wallet.scheme == "ed25519":
            if not 1 <= len(digest) <= MAX_ED25519_MESSAGE:
                raise InvalidInput(f"an ed25519 message is 1 to {MAX_ED25519_MESSAGE} bytes")
        elif len(digest) != 32:
            raise InvalidInput("digest must be 32 bytes")
        approval = _Approval(approvers, payload or SignedPayload())
        if wallet.scheme != "ecdsa-secp256k1":
            return await self._sign(wallet, digest, options, approval)
        if wallet.server_setup_id() is None:
            await self.pair_setup(wallet)
        try:
            return await self._sign(wallet, digest, options, approval)
        except CoordinatorRefused as e:
            if e.reason != PAIR_SETUP_REQUIRED:
                raise
        await self.pair_setup(wallet)
        return await self._sign(wallet, digest, options, approval)

    async def pair_setup(self, wallet: DeviceWallet) -> None:
        """ECDSA: a new DKLs23 setup of this device's party with the server party.

        ``wallet.share`` gets its new side in place of the old one (persist it).
        """
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_PAIR_SETUP,
            wallet_id=wallet.wallet_id,
            party=self.identity.party,
        )
        _, setup, _ = await self._run(ask, wallet)
        if not isinstance(setup, PeerSetup) or wallet.share.ecdsa is None:
            raise CoordinatorRefused("the pair setup produced no setup")
        wallet.share = replace(wallet.share, ecdsa=wallet.share.ecdsa.with_peer(setup))

    async def refresh(
        self, wallet: DeviceWallet, *, save_pending: SaveNewWallet | None = None
    ) -> DeviceWallet:
        """New shares for this device and the server share, the same key (epoch + 1).

        Before this device releases its certificate signature (``tss.certificate``),
        ``save_pending`` gets the new wallet and must have stored it, next to
        the old one, when it returns. Store the returned wallet, then call
        :meth:`acknowledge_epoch` so that the host retires the old epoch.

        Raises:
            CoordinatorRefused: the coordinator refused, or the request was not the asked one.
            WalletError: the ceremony failed; the old wallet still signs.
        """
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_REFRESH,
            wallet_id=wallet.wallet_id,
            party=self.identity.party,
        )
        progress = _Progress()

        async def run(keep: SavePending) -> tuple[Any, ceremony_pb2.CeremonyResult]:
            _, output, result = await self._run(ask, wallet, save_pending=keep, progress=progress)
            return output, result

        return await self._key_change(wallet.wallet_id, wallet.parties, save_pending, progress, run)

    async def acknowledge_epoch(self, wallet: DeviceWallet) -> int:
        """Tell the host (through the coordinator) that this device uses ``wallet``'s epoch.

        Call it once the refreshed wallet is stored: the host then prunes the
        old epoch, whose shares no longer sign.

        Returns:
            The number of old epochs the host pruned.
        """
        change = wallet.key_change
        if change is None or change.epoch != wallet.epoch:
            raise InvalidInput("the wallet carries no key change of its epoch to acknowledge")
        signature = sign_epoch_ack(
            self.identity.hostseckey, wallet.wallet_id, wallet.epoch, change.transcript,
            change.position, secrets.token_bytes(32),
        )  # fmt: skip
        ack = coordinator_pb2.EpochAck(
            wallet_id=wallet.wallet_id,
            epoch=wallet.epoch,
            position=change.position,
            signature=signature,
        )
        reply: coordinator_pb2.AcknowledgedEpoch = await self._unary(
            self._coordinator.AcknowledgeEpoch,
            sign_device_call(self._device_key, "AcknowledgeEpoch", ack.SerializeToString()),
        )
        return int(reply.pruned)

    async def resume(
        self, wallet: DeviceWallet, interrupted: DeviceKeyChangeInterrupted
    ) -> DeviceWallet:
        """Settle an interrupted refresh or reshare: the new wallet if the host committed it
        (after handing it the certificate this device holds), else the old ``wallet``.

        The host's answer is checked here: the committed change must be this
        device's (session id, transcript) and its certificate must verify
        against every seat's host key.

        Raises:
            KeyChangeUndecided: the host has not decided yet; ``wallet`` signs meanwhile.
            CoordinatorRefused: the host committed another change at that epoch, or a
                certificate that does not verify.
        """
        new = interrupted.pending
        change = new.key_change
        if change is None or new.wallet_id != wallet.wallet_id:
            raise InvalidInput("the interrupted key change is not one of this wallet")
        ask = coordinator_pb2.KeyChangeSettle(
            wallet_id=wallet.wallet_id, epoch=new.epoch, certificate=interrupted.certificate
        )
        settled: coordinator_pb2.SettledKeyChange = await self._unary(
            self._coordinator.SettleKeyChange,
            sign_device_call(self._device_key, "SettleKeyChange", ask.SerializeToString()),
        )
        if settled.state in ("committed", "retired"):
            if (bytes(settled.session_id), bytes(settled.transcript)) != (
                change.session_id,
                change.transcript,
            ):
                raise CoordinatorRefused(f"the host committed another change at epoch {new.epoch}")
            try:
                change.verify(bytes(settled.certificate))
            except (FaultyParticipantError, InputError) as e:
                raise CoordinatorRefused("the committed certificate does not verify") from e
            return new
        if settled.state == "pending":
            raise KeyChangeUndecided(
                f"epoch {new.epoch} of wallet {wallet.wallet_id} is pending at the host",
                settled.deadline_unix_ms // 1000,
            )
        if time.time() <= interrupted.deadline_unix:
            raise KeyChangeUndecided(
                f"the host may still store epoch {new.epoch} of wallet {wallet.wallet_id}",
                interrupted.deadline_unix,
            )
        return wallet

    async def add_party(
        self,
        wallet: DeviceWallet,
        party: ceremony_pb2.Party,
        device_key: bytes,
        *,
        threshold: int = 2,
        save_pending: SaveNewWallet | None = None,
    ) -> DeviceWallet:
        """Reshare this device's 2-party wallet to three parties: this device, ``party``
        and the server share, the same key (epoch + 1); the owner key approves it.

        The device holding ``party`` (enrolled with ``device_key``) takes part
        through :meth:`join_wallet` meanwhile. ``save_pending`` and
        :meth:`acknowledge_epoch` as for :meth:`refresh`.

        Raises:
            CoordinatorRefused, WalletError: as :meth:`refresh`.
        """
        keyring = PublicKeyring.from_share(wallet.share)
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_RESHARE,
            wallet_id=wallet.wallet_id,
            party=self.identity.party,
            new_party=party,
            new_device_key=device_key,
            new_threshold=threshold,
            keyring=lifecycle.keyring_to_proto(keyring),
        )
        # The request must list exactly these (checked before the owner key approves it).
        new_parties = [wallet.parties[wallet.index], party, wallet.parties[wallet.server_index]]
        progress = _Progress()

        async def run(keep: SavePending) -> tuple[Any, ceremony_pb2.CeremonyResult]:
            _, output, result = await self._run(ask, wallet, save_pending=keep, progress=progress)
            return output, result

        return await self._key_change(wallet.wallet_id, new_parties, save_pending, progress, run)

    async def remove_party(
        self,
        wallet: DeviceWallet,
        party: int,
        *,
        threshold: int = 2,
        save_pending: SaveNewWallet | None = None,
    ) -> DeviceWallet:
        """Reshare ``wallet`` without party ``party`` (a lost device's), the same key
        (epoch + 1); this device and the server share deal, the owner key approves.

        The lost device's old share no longer combines with the new ones once
        the old epoch is retired (:meth:`acknowledge_epoch`). The wallet's other
        devices keep their parties and take part through :meth:`join_wallet`.

        Raises:
            CoordinatorRefused, WalletError, DeviceKeyChangeInterrupted: as :meth:`refresh`.
        """
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_RESHARE,
            wallet_id=wallet.wallet_id,
            party=self.identity.party,
            remove_party=party,
            new_threshold=threshold,
            keyring=lifecycle.keyring_to_proto(PublicKeyring.from_share(wallet.share)),
        )
        new_parties = _reshare_parties(wallet, ask)
        progress = _Progress()

        async def run(keep: SavePending) -> tuple[Any, ceremony_pb2.CeremonyResult]:
            _, output, result = await self._run(ask, wallet, save_pending=keep, progress=progress)
            return output, result

        return await self._key_change(wallet.wallet_id, new_parties, save_pending, progress, run)

    async def join_wallet(
        self,
        wallet_id: str,
        *,
        public_key: bytes,
        threshold: int = 2,
        save_pending: SaveNewWallet | None = None,
    ) -> DeviceWallet:
        """Take this device's new seat in the reshare another device's :meth:`add_party` runs.

        Waits (up to the timeout) until the coordinator has that reshare. The
        device checks the enclave's document on its own nonce, that the
        request adds this device's party to ``wallet_id`` with ``threshold``,
        and that the keyring's key is ``public_key`` (as the other device
        shows it), before it takes part.

        Returns:
            The wallet with this device's new share (store it, then
            :meth:`acknowledge_epoch`).
        """
        nonce = secrets.token_bytes(32)
        body = coordinator_pb2.JoinAsk(wallet_id=wallet_id, attestation_nonce=nonce)
        started = await self._invitation(body)
        request = ceremony_pb2.CeremonyRequest.FromString(started.request)
        server = self._attested_server(started.attestation_document, nonce)
        new_ids = [p.party_id for p in request.new_parties]
        keyring = lifecycle.request_keyring(request)
        if not (
            request.kind == ceremony_pb2.CEREMONY_KIND_RESHARE
            and request.wallet_id == wallet_id
            and self.identity.party in list(request.new_parties)
            and server in new_ids
            and server in [p.party_id for p in request.parties]
            and request.new_threshold == threshold
            and keyring is not None
            and keyring.public_key == public_key
        ):
            raise CoordinatorRefused("the reshare is not the expected one for this device")
        roster, ceremony = self._reshare_party(request, keyring, None)
        parties = list(request.new_parties)
        progress = _Progress(request)

        async def run(keep: SavePending) -> tuple[Any, ceremony_pb2.CeremonyResult]:
            return await self._take_part(
                request, started, self.identity.party_id, roster, ceremony, keep, progress
            )

        return await self._key_change(wallet_id, parties, save_pending, progress, run)

    async def join_refresh(
        self, wallet: DeviceWallet, *, save_pending: SaveNewWallet | None = None
    ) -> DeviceWallet:
        """Take part in the refresh another device of ``wallet`` asked for (every party deals).

        Waits (up to the timeout) until the coordinator has that refresh; checks
        the enclave's document on this device's own nonce and that the request
        refreshes this wallet's keyring at its epoch. ``save_pending``,
        :meth:`acknowledge_epoch` and :meth:`resume` as for :meth:`refresh`.
        """
        nonce = secrets.token_bytes(32)
        body = coordinator_pb2.JoinAsk(wallet_id=wallet.wallet_id, attestation_nonce=nonce)
        started = await self._invitation(body)
        request = ceremony_pb2.CeremonyRequest.FromString(started.request)
        server = self._attested_server(started.attestation_document, nonce)
        if not (
            request.kind == ceremony_pb2.CEREMONY_KIND_REFRESH
            and request.wallet_id == wallet.wallet_id
            and list(request.parties) == wallet.parties
            and request.epoch == wallet.epoch
            and not request.new_parties
            and list(request.signers) in ([], list(range(len(wallet.parties))))
            and wallet.parties[wallet.server_index].party_id == server
        ):
            raise CoordinatorRefused("the refresh is not one of this wallet with its server share")
        roster, ceremony = self._ceremony(request, wallet, None)
        progress = _Progress(request)

        async def run(keep: SavePending) -> tuple[Any, ceremony_pb2.CeremonyResult]:
            return await self._take_part(
                request, started, self.identity.party_id, roster, ceremony, keep, progress
            )

        return await self._key_change(wallet.wallet_id, wallet.parties, save_pending, progress, run)

    async def _key_change(
        self,
        wallet_id: str,
        parties: list[ceremony_pb2.Party],
        save_pending: SaveNewWallet | None,
        progress: _Progress,
        run: Callable[[SavePending], Awaitable[tuple[Any, ceremony_pb2.CeremonyResult]]],
    ) -> DeviceWallet:
        """Run a refresh or reshare this device takes part in (``run`` plays its party).

        The new wallet goes to ``save_pending`` before this device's certificate
        signature leaves; an interruption after that raises
        ``DeviceKeyChangeInterrupted`` naming what was saved (see :meth:`resume`).
        """
        pending: list[PendingKeyChange] = []

        async def keep(change: Pending) -> None:
            if not isinstance(change, PendingKeyChange):
                raise CoordinatorRefused("the key change left a keygen's pending share")
            pending.append(change)
            if save_pending is not None:
                await save_pending(_changed_wallet(wallet_id, parties, change))

        try:
            output, result = await run(keep)
        except Exception as e:
            raise _interrupted(e, wallet_id, parties, pending, progress) from e
        return _key_change_result(wallet_id, parties, output, result, pending)

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

    async def backup(
        self,
        wallet: DeviceWallet,
        *,
        passcode: Passcode,
        include_owner_key: bool = True,
        insecure_allow_weak_kdf: bool = False,
    ) -> str:
        """Store an encrypted backup of this device's party (share and identity) at the host.

        Encrypted here (``client.sdk.device_backup``, Argon2id under
        ``passcode``); the coordinator and the host see ciphertext only. With
        ``include_owner_key`` the owner key goes in too, so a restored device
        can approve exports and reshares again.

        Returns:
            The backup's id.
        """
        blob = make_device_backup(
            wallet.share, self.identity, wallet_id=wallet.wallet_id, passcode=passcode,
            owner_key=self._owner_key if include_owner_key else None,
            insecure_allow_weak_kdf=insecure_allow_weak_kdf,
        )  # fmt: skip
        upload = coordinator_pb2.BackupUpload(
            wallet_id=blob.wallet_id, backup_id=blob.backup_id, epoch=blob.epoch, blob=blob.blob
        )
        await self._unary(
            self._coordinator.StoreBackup,
            sign_device_call(self._device_key, "StoreBackup", upload.SerializeToString()),
        )
        return blob.backup_id

    async def restore(
        self,
        wallet_id: str,
        *,
        public_key: bytes,
        passcode: Passcode,
        insecure_allow_weak_kdf: bool = False,
    ) -> DeviceWallet:
        """Become the party a lost device of this account held: fetch its newest backup,
        open it, and claim the party at the coordinator with the party's host key.

        ``public_key`` is the wallet's key as the user knows it (not as the
        coordinator or host says): the backup must open to a share of it. This
        device's identity (and owner key, if the backup carried it) become the
        restored ones.

        Raises:
            CoordinatorRefused: another account's wallet, no backup, or a
                keyring that does not list the restored party.
            DecryptionError: a wrong passcode or a tampered backup.
        """
        ask = coordinator_pb2.BackupAsk(wallet_id=wallet_id)
        fetched: coordinator_pb2.FetchedBackup = await self._unary(
            self._coordinator.FetchBackup,
            sign_device_call(self._device_key, "FetchBackup", ask.SerializeToString()),
        )
        restored = open_device_backup(
            BackupBlob(wallet_id, fetched.backup_id, fetched.party, fetched.epoch, fetched.blob),
            public_key=public_key, epoch=fetched.epoch, party_id=fetched.party,
            passcode=passcode, insecure_allow_weak_kdf=insecure_allow_weak_kdf,
        )  # fmt: skip
        parties = list(fetched.parties)
        share = restored.share
        if share.party_id >= len(parties) or parties[share.party_id] != restored.identity.party:
            raise CoordinatorRefused("the coordinator's keyring does not list the restored party")
        me = self._device_key.public_key().public_bytes_raw()
        claim = coordinator_pb2.PartyClaim(
            wallet_id=wallet_id,
            party=share.party_id,
            signature=sign_party_claim(
                restored.identity.hostseckey, wallet_id, share.party_id, me,
                secrets.token_bytes(32),
            ),
        )  # fmt: skip
        await self._unary(
            self._coordinator.ClaimParty,
            sign_device_call(self._device_key, "ClaimParty", claim.SerializeToString()),
        )
        self.identity = restored.identity
        if restored.owner_key is not None:
            self._owner_key = restored.owner_key
        return DeviceWallet(
            wallet_id, share.scheme, share.threshold, parties, share.party_id,
            share.public_key, share.epoch, share,
        )  # fmt: skip

    async def export(self, wallet: DeviceWallet) -> bytes:
        """Reconstruct the wallet's private key on this device (the owner key approves it).

        The server share's contribution is sealed to a one-time X25519 key of
        this device; the coordinator, host and relay never see the key.

        Returns:
            The 32-byte private key, checked against the wallet's public key.
        """
        one_time = X25519PrivateKey.generate()
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_EXPORT,
            wallet_id=wallet.wallet_id,
            party=self.identity.party,
            export_recipient_key=one_time.public_key().public_bytes_raw(),
        )
        _, output, _ = await self._run(ask, wallet, recipient_key=one_time)
        key = output.private_key if isinstance(output, ExportOutput) else None
        if key is None or not _key_matches(key, wallet):
            raise CoordinatorRefused("the export delivered no key of this wallet")
        return bytes(key)

    async def _sign(
        self, wallet: DeviceWallet, digest: bytes, options: SigningOptions, approval: _Approval
    ) -> bytes | RecoverableSignature:
        ed25519 = wallet.scheme == "ed25519"
        payload = approval.payload
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_SIGN,
            wallet_id=wallet.wallet_id,
            party=self.identity.party,
            digest=b"" if ed25519 else digest,
            message=digest if ed25519 else b"",
            derivation_path=options.derivation_path,
            taproot=options.taproot,
            taproot_merkle_root=options.taproot_merkle_root or b"",
            pair_setup_id=wallet.server_setup_id() or b"",
            approvals_follow=wallet.policy_set is not None and bool(approval.approvers),
            evm_transaction=payload.evm_transaction,
            solana_message=payload.solana_message,
            psbt=payload.psbt,
            psbt_input=payload.psbt_input,
            eth_personal_message=payload.eth_personal_message,
            eth_typed_data=payload.eth_typed_data,
        )
        _, signature, _ = await self._run(ask, wallet, approvers=approval.approvers)
        if not isinstance(signature, bytes | RecoverableSignature):
            raise CoordinatorRefused("the ceremony produced no signature")
        return signature

    async def _run(
        self,
        ask: coordinator_pb2.CeremonyAsk,
        wallet: DeviceWallet | None,
        *,
        save_pending: SavePending | None = None,
        recipient_key: X25519PrivateKey | None = None,
        progress: _Progress | None = None,
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
        _check_request(request, ask, self.identity, server, wallet)
        me = _my_index(request, self.identity)
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
                approvals=_approvals(started.request, wallet, approvers)
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
        progress: _Progress | None = None,
    ) -> tuple[Any, ceremony_pb2.CeremonyResult]:
        """Run this device's party in the room and, alongside, wait for the server's result."""

        async def party() -> Any:
            async with self._relay.join(request.room_id, mine, started.join_token) as relay:
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


def _my_index(request: ceremony_pb2.CeremonyRequest, identity: PartyIdentity) -> int:
    ids = [p.party_id for p in request.parties]
    if identity.party_id not in ids:
        raise CoordinatorRefused("the request does not include this device's party")
    return ids.index(identity.party_id)


def _check_request(
    request: ceremony_pb2.CeremonyRequest,
    ask: coordinator_pb2.CeremonyAsk,
    identity: PartyIdentity,
    server_id: str,
    wallet: DeviceWallet | None,
) -> None:
    """The request is what this device asked for, with the attested server party in it."""
    me = _my_index(request, identity)
    if request.parties[me] != identity.party:
        raise CoordinatorRefused("the request lists other keys for this device's party")
    if request.kind != ask.kind or server_id not in [p.party_id for p in request.parties]:
        raise CoordinatorRefused("the request is not the asked ceremony with the attested server")
    if wallet is None:
        if (
            (request.scheme, request.threshold) != (ask.scheme, ask.threshold)
            or bytes(request.owner_key) != bytes(ask.owner_key)
            or bytes(request.policy_set) != _named_policy_set(ask, request.wallet_id)
        ):
            raise CoordinatorRefused("the keygen request differs from the ask")
        return
    pair = sorted([wallet.index, wallet.server_index])
    same_current_keyring = (
        request.wallet_id == wallet.wallet_id
        and list(request.parties) == wallet.parties
        and request.epoch == wallet.epoch
    )
    same_keyring = same_current_keyring and not request.new_parties
    same_wallet = same_keyring and list(request.signers) == pair
    if request.kind == ceremony_pb2.CEREMONY_KIND_PAIR_SETUP:
        if not same_wallet:
            raise CoordinatorRefused("the pair setup request differs from the wallet")
        return
    if request.kind == ceremony_pb2.CEREMONY_KIND_REFRESH:
        if not same_keyring or list(request.signers) not in ([], pair):
            raise CoordinatorRefused("the refresh request differs from the wallet")
        return
    if request.kind == ceremony_pb2.CEREMONY_KIND_RESHARE:
        expected = _reshare_parties(wallet, ask)
        if not (
            same_current_keyring
            and list(request.signers) == pair
            and list(request.new_parties) == expected
            and request.new_threshold == ask.new_threshold
            and request.keyring == ask.keyring
            and not request.owner_key
        ):
            raise CoordinatorRefused("the reshare request differs from the ask or the wallet")
        return
    if request.kind == ceremony_pb2.CEREMONY_KIND_EXPORT:
        if not (
            same_wallet
            and request.export_recipient == identity.party
            and bytes(request.export_recipient_key) == bytes(ask.export_recipient_key)
        ):
            raise CoordinatorRefused("the export request differs from the ask or the wallet")
        return
    same = (
        same_wallet
        and bytes(request.digest) == bytes(ask.digest)
        and bytes(request.message) == bytes(ask.message)
        and list(request.derivation_path) == list(ask.derivation_path)
        and request.taproot == ask.taproot
        and bytes(request.taproot_merkle_root) == bytes(ask.taproot_merkle_root)
        and bytes(request.evm_transaction) == bytes(ask.evm_transaction)
        and request.solana_message == ask.solana_message
        and bytes(request.psbt) == bytes(ask.psbt)
        and request.psbt_input == ask.psbt_input
        and bytes(request.eth_personal_message) == bytes(ask.eth_personal_message)
        and bytes(request.eth_typed_data) == bytes(ask.eth_typed_data)
    )
    if not same:
        raise CoordinatorRefused("the signing request differs from the ask or the wallet")


def _named_policy_set(ask: coordinator_pb2.CeremonyAsk, wallet_id: str) -> bytes:
    """The policy set a keygen request must carry: the asked one, naming the new wallet."""
    if not ask.policy_set:
        return b""
    asked = decode_policy_set(ask.policy_set)
    return encode_policy_set(replace(asked, wallet_id=wallet_id, epoch=0))


def _approvals(
    request: bytes, wallet: DeviceWallet | None, approvers: Sequence[Approver]
) -> list[ceremony_pb2.Approval]:
    """The approvers' approvals of the request under the wallet's policy set in force."""
    if wallet is None or wallet.policy_set is None:
        raise CoordinatorRefused("approvals are for a wallet with a policy set")
    return approvals_of(request, wallet.policy_set, wallet.epoch, approvers)


@dataclass(frozen=True)
class _Approval:
    """Who approves a signature request, and what its digest is of."""

    approvers: Sequence[Approver]
    payload: SignedPayload


def _changed_wallet(
    wallet_id: str, parties: list[ceremony_pb2.Party], change: PendingKeyChange
) -> DeviceWallet:
    """The wallet after a key change (refresh or reshare), with this device's new share."""
    share = change.share
    if share is None:
        raise CoordinatorRefused("the key change left this device without a share")
    return DeviceWallet(
        wallet_id, share.scheme, share.threshold, parties, share.party_id, share.public_key,
        share.epoch, share, key_change=change,
    )  # fmt: skip


def _key_change_result(
    wallet_id: str,
    parties: list[ceremony_pb2.Party],
    output: Any,
    result: ceremony_pb2.CeremonyResult,
    pending: list[PendingKeyChange],
) -> DeviceWallet:
    """The new wallet of a finished key change, checked against the server share's result."""
    if not isinstance(output, ReshareOutput) or output.share is None or not pending:
        raise CoordinatorRefused("the key change produced no new share")
    new = _changed_wallet(wallet_id, parties, pending[0])
    if output.share.epoch != result.epoch or (
        result.public_key and bytes(result.public_key) != new.public_key
    ):
        raise CoordinatorRefused("the server share reports another epoch or key")
    return new


def _key_matches(key: bytes, wallet: DeviceWallet) -> bool:
    """Whether ``key`` is the wallet's private key (BIP-340 keys compare by x only; an
    ed25519 export is the expanded secret, whose first half is the scalar)."""
    if wallet.scheme == "ed25519":
        if len(key) != 64:
            return False
        scalar = int.from_bytes(key[:32], "little")
        return ED25519.encode(ED25519.base_mul(scalar)) == wallet.public_key
    try:
        public = PrivateKey(key).public_key.format()
    except ValueError:
        return False
    if wallet.scheme == "bip340":
        return public[1:] == wallet.public_key[1:]
    return public == wallet.public_key


@dataclass
class _Progress:
    """How far a key change got, for its interruption: the request, the party's output."""

    request: ceremony_pb2.CeremonyRequest | None = None
    output: Any = None


def _interrupted(
    error: Exception,
    wallet_id: str,
    parties: list[ceremony_pb2.Party],
    pending: list[PendingKeyChange],
    progress: _Progress,
) -> Exception:
    """``error``, or a :class:`DeviceKeyChangeInterrupted` when the new share was saved."""
    if not pending or progress.request is None:
        return error  # nothing saved: the old wallet is all there is
    certificate = getattr(progress.output, "certificate", b"") or b""
    deadline = progress.request.not_after_unix + _DEADLINE_SLACK_S
    return DeviceKeyChangeInterrupted(
        f"the key change was interrupted after the new share was saved ({error}); "
        "resume it to finish or discard it",
        _changed_wallet(wallet_id, parties, pending[0]), bytes(certificate), deadline,
    )  # fmt: skip


def _reshare_parties(
    wallet: DeviceWallet, ask: coordinator_pb2.CeremonyAsk
) -> list[ceremony_pb2.Party]:
    """The new keyring a device's reshare ask means: without the removed party, or this
    device, the added party and the server party (last)."""
    if ask.HasField("remove_party"):
        return [p for i, p in enumerate(wallet.parties) if i != ask.remove_party]
    server = wallet.parties[wallet.server_index]
    return [wallet.parties[wallet.index], ask.new_party, server]
