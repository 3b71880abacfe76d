"""A device's key changes: refresh and reshare (add or remove a party), joining one
another device asked for, the epoch acknowledgment, and settling an interrupted one."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from client.errors import InvalidInput, sdk_boundary
from client.sdk.approvals import Approver
from client.sdk.device_checks import approvals_follow, reshare_parties
from client.sdk.device_session import DeviceSession, Progress
from client.sdk.device_wallet import (
    CoordinatorRefused,
    DeviceKeyChangeInterrupted,
    DeviceWallet,
    SaveNewWallet,
)
from client.sdk.party import SavePending
from client.sdk.wallet import KeyChangeUndecided
from shardkeep import lifecycle
from shardkeep.device_auth import sign_device_call
from shardkeep.policyset import PolicySet
from shardkeep.policyset import decode as decode_policy_set
from shardkeep.policyset import encode as encode_policy_set
from shardkeep.v1 import ceremony_pb2, coordinator_pb2
from tss.ceremony import Ceremony
from tss.certificate import Pending, PendingKeyChange, sign_epoch_ack
from tss.channel import Roster
from tss.errors import FaultyParticipantError, InputError
from tss.reshare import PublicKeyring, ReshareOutput

__all__ = ["DeviceKeyChanges"]

_DEADLINE_SLACK_S = 5  # past the request's expiry, the host can no longer store its epoch


@sdk_boundary
class DeviceKeyChanges(DeviceSession):
    """Refresh, reshare and their settling (see :class:`client.sdk.device.Device`)."""

    async def refresh(
        self,
        wallet: DeviceWallet,
        *,
        save_pending: SaveNewWallet | None = None,
        approvers: Sequence[Approver] = (),
        new_policy_set: PolicySet | None = None,
    ) -> DeviceWallet:
        """New shares for this device and the server share, the same key (epoch + 1).

        For a wallet with a policy set, ``approvers`` approve the refresh (the
        exact request, once this device checked it). ``new_policy_set``
        replaces the set from the new epoch on (a policy change, ``SET_POLICY``,
        approved under the set in force; its version must exceed the current
        one's): the coordinator names the wallet and epoch in it, and this
        device checks that nothing else changed.

        Before this device releases its certificate signature (``tss.certificate``),
        ``save_pending`` gets the new wallet and must have stored it, next to
        the old one, when it returns. Store the returned wallet, then call
        :meth:`acknowledge_epoch` so that the host retires the old epoch.

        Raises:
            CoordinatorRefused: the coordinator refused, or the request was not the asked one.
            WalletError: the ceremony failed; the old wallet still signs.
        """
        approvers = self._approvers(wallet, approvers)
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_REFRESH,
            wallet_id=wallet.wallet_id,
            party=self.identity.party,
            approvals_follow=approvals_follow(wallet, approvers),
            policy_set=b"" if new_policy_set is None else encode_policy_set(new_policy_set),
        )
        policy_set = wallet.policy_set
        if new_policy_set is not None:  # in force once the refresh is: as check_request wants it
            policy_set = replace(new_policy_set, wallet_id=wallet.wallet_id, epoch=wallet.epoch + 1)
        target = _Target(wallet.wallet_id, wallet.parties, policy_set)
        return await self._asked_change(ask, wallet, target, save_pending, approvers)

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
        approvers: Sequence[Approver] = (),
    ) -> DeviceWallet:
        """Reshare this device's 2-party wallet to three parties: this device, ``party``
        and the server share, the same key (epoch + 1); the owner key approves it.

        The device holding ``party`` (enrolled with ``device_key``) takes part
        through :meth:`join_wallet` meanwhile (show it the wallet's policy set).
        ``save_pending``, ``approvers`` and :meth:`acknowledge_epoch` as for
        :meth:`refresh`.

        Raises:
            CoordinatorRefused, WalletError: as :meth:`refresh`.
        """
        keyring = PublicKeyring.from_share(wallet.share)
        approvers = self._approvers(wallet, approvers)
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_RESHARE,
            wallet_id=wallet.wallet_id,
            party=self.identity.party,
            new_party=party,
            new_device_key=device_key,
            new_threshold=threshold,
            keyring=lifecycle.keyring_to_proto(keyring),
            approvals_follow=approvals_follow(wallet, approvers),
        )
        # The request must list exactly these (checked before the owner key approves it).
        new_parties = [wallet.parties[wallet.index], party, wallet.parties[wallet.server_index]]
        target = _Target(wallet.wallet_id, new_parties, wallet.policy_set)
        return await self._asked_change(ask, wallet, target, save_pending, approvers)

    async def remove_party(
        self,
        wallet: DeviceWallet,
        party: int,
        *,
        threshold: int = 2,
        save_pending: SaveNewWallet | None = None,
        approvers: Sequence[Approver] = (),
    ) -> DeviceWallet:
        """Reshare ``wallet`` without party ``party`` (a lost device's), the same key
        (epoch + 1); this device and the server share deal, the owner key approves
        (and ``approvers``, as for :meth:`refresh`).

        The lost device's old share no longer combines with the new ones once
        the old epoch is retired (:meth:`acknowledge_epoch`). The wallet's other
        devices keep their parties and take part through :meth:`join_wallet`.

        Raises:
            CoordinatorRefused, WalletError, DeviceKeyChangeInterrupted: as :meth:`refresh`.
        """
        approvers = self._approvers(wallet, approvers)
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_RESHARE,
            wallet_id=wallet.wallet_id,
            party=self.identity.party,
            remove_party=party,
            new_threshold=threshold,
            keyring=lifecycle.keyring_to_proto(PublicKeyring.from_share(wallet.share)),
            approvals_follow=approvals_follow(wallet, approvers),
        )
        target = _Target(wallet.wallet_id, reshare_parties(wallet, ask), wallet.policy_set)
        return await self._asked_change(ask, wallet, target, save_pending, approvers)

    async def join_wallet(
        self,
        wallet_id: str,
        *,
        public_key: bytes,
        threshold: int = 2,
        save_pending: SaveNewWallet | None = None,
        policy_set: PolicySet | None = None,
    ) -> DeviceWallet:
        """Take this device's new seat in the reshare another device's :meth:`add_party` runs.

        ``policy_set``: the wallet's policy set as the other device shows it
        (kept with the new wallet, so that this device's approvers can approve).

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
        target = _Target(wallet_id, list(request.new_parties), policy_set)
        return await self._joined_change(request, started, roster, ceremony, target, save_pending)

    async def join_refresh(
        self, wallet: DeviceWallet, *, save_pending: SaveNewWallet | None = None
    ) -> DeviceWallet:
        """Take part in the refresh another device of ``wallet`` asked for (every party deals).

        Waits (up to the timeout) until the coordinator has that refresh; checks
        the enclave's document on this device's own nonce and that the request
        refreshes this wallet's keyring at its epoch. ``save_pending``,
        :meth:`acknowledge_epoch` and :meth:`resume` as for :meth:`refresh`.

        A refresh that changes the policy set (the other device's owner
        approved it under the set in force, which the server share checks)
        leaves the new wallet with the new set, once the change is through.
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
        policy_set = wallet.policy_set
        if request.policy_set:
            policy_set = decode_policy_set(request.policy_set)
            if (policy_set.wallet_id, policy_set.epoch) != (wallet.wallet_id, wallet.epoch + 1):
                raise CoordinatorRefused("the refresh's policy set names another wallet or epoch")
        roster, ceremony = self._ceremony(request, wallet, None)
        target = _Target(wallet.wallet_id, wallet.parties, policy_set)
        return await self._joined_change(request, started, roster, ceremony, target, save_pending)

    async def _asked_change(
        self,
        ask: coordinator_pb2.CeremonyAsk,
        wallet: DeviceWallet,
        target: _Target,
        save_pending: SaveNewWallet | None,
        approvers: Sequence[Approver],
    ) -> DeviceWallet:
        """Run the refresh or reshare this device asks for."""
        progress = Progress()

        async def run(keep: SavePending) -> tuple[Any, ceremony_pb2.CeremonyResult]:
            _, output, result = await self._run(
                ask, wallet, save_pending=keep, progress=progress, approvers=approvers
            )
            return output, result

        return await self._key_change(target, save_pending, progress, run)

    async def _joined_change(
        self,
        request: ceremony_pb2.CeremonyRequest,
        started: coordinator_pb2.StartedCeremony,
        roster: Roster,
        ceremony: Ceremony[Any],
        target: _Target,
        save_pending: SaveNewWallet | None,
    ) -> DeviceWallet:
        """Run this device's seat of a checked refresh or reshare another device asked for."""
        progress = Progress(request)

        async def run(keep: SavePending) -> tuple[Any, ceremony_pb2.CeremonyResult]:
            return await self._take_part(
                request, started, self.identity.party_id, roster, ceremony, keep, progress
            )

        return await self._key_change(target, save_pending, progress, run)

    async def _key_change(
        self,
        target: _Target,
        save_pending: SaveNewWallet | None,
        progress: Progress,
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
                await save_pending(target.wallet(change))

        try:
            output, result = await run(keep)
        except Exception as e:
            raise _interrupted(e, target, pending, progress) from e
        return _key_change_result(target, output, result, pending)


@dataclass(frozen=True)
class _Target:
    """What a key change makes of the wallet besides this device's share: its id, keyring
    and policy set (carried, or the new one of a policy change), which every new wallet
    of the change carries: pending, finished, or interrupted and settled later."""

    wallet_id: str
    parties: list[ceremony_pb2.Party]
    policy_set: PolicySet | None

    def wallet(self, change: PendingKeyChange) -> DeviceWallet:
        """The wallet after the key change, with this device's new share."""
        share = change.share
        if share is None:
            raise CoordinatorRefused("the key change left this device without a share")
        # The server share re-binds the set to each new epoch; so does the device.
        in_force = None if self.policy_set is None else replace(self.policy_set, epoch=share.epoch)
        return DeviceWallet(
            self.wallet_id, share.scheme, share.threshold, self.parties, share.party_id,
            share.public_key, share.epoch, share, key_change=change, policy_set=in_force,
        )  # fmt: skip


def _key_change_result(
    target: _Target,
    output: Any,
    result: ceremony_pb2.CeremonyResult,
    pending: list[PendingKeyChange],
) -> DeviceWallet:
    """The new wallet of a finished key change, checked against the server share's result."""
    if not isinstance(output, ReshareOutput) or output.share is None or not pending:
        raise CoordinatorRefused("the key change produced no new share")
    new = target.wallet(pending[0])
    if output.share.epoch != result.epoch or (
        result.public_key and bytes(result.public_key) != new.public_key
    ):
        raise CoordinatorRefused("the server share reports another epoch or key")
    return new


def _interrupted(
    error: Exception,
    target: _Target,
    pending: list[PendingKeyChange],
    progress: Progress,
) -> Exception:
    """``error``, or a :class:`DeviceKeyChangeInterrupted` when the new share was saved."""
    if not pending or progress.request is None:
        return error  # nothing saved: the old wallet is all there is
    certificate = getattr(progress.output, "certificate", b"") or b""
    deadline = progress.request.not_after_unix + _DEADLINE_SLACK_S
    return DeviceKeyChangeInterrupted(
        f"the key change was interrupted after the new share was saved ({error}); "
        "resume it to finish or discard it",
        target.wallet(pending[0]), bytes(certificate), deadline,
    )  # fmt: skip
