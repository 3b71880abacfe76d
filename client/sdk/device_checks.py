"""What a device checks of a request the coordinator hands it before taking part:
it must be the asked ceremony, on this wallet, with the attested server party."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from client.sdk.approvals import Approver, approvals_of
from client.sdk.device_wallet import CoordinatorRefused, DeviceWallet
from client.sdk.party import PartyIdentity
from shardkeep.policyset import decode as decode_policy_set
from shardkeep.policyset import encode as encode_policy_set
from shardkeep.v1 import ceremony_pb2, coordinator_pb2

# No __all__: these checks serve the device modules only; callers use client.sdk.device.


def my_index(request: ceremony_pb2.CeremonyRequest, identity: PartyIdentity) -> int:
    ids = [p.party_id for p in request.parties]
    if identity.party_id not in ids:
        raise CoordinatorRefused("the request does not include this device's party")
    return ids.index(identity.party_id)


def check_request(
    request: ceremony_pb2.CeremonyRequest,
    ask: coordinator_pb2.CeremonyAsk,
    identity: PartyIdentity,
    server_id: str,
    wallet: DeviceWallet | None,
) -> None:
    """The request is what this device asked for, with the attested server party in it."""
    me = my_index(request, identity)
    if request.parties[me] != identity.party:
        raise CoordinatorRefused("the request lists other keys for this device's party")
    if request.kind != ask.kind or server_id not in [p.party_id for p in request.parties]:
        raise CoordinatorRefused("the request is not the asked ceremony with the attested server")
    if wallet is None:
        if (
            (request.scheme, request.threshold) != (ask.scheme, ask.threshold)
            or bytes(request.owner_key) != bytes(ask.owner_key)
            or bytes(request.policy_set) != named_policy_set(ask, request.wallet_id, 0)
        ):
            raise CoordinatorRefused("the keygen request differs from the ask")
        return
    # Only a refresh may change the wallet's policy set, and only to the asked one: a set
    # slipped into any other request would be a policy change the owner never asked for.
    if bytes(request.policy_set) != named_policy_set(ask, wallet.wallet_id, wallet.epoch + 1):
        raise CoordinatorRefused("the request changes the policy set otherwise than asked")
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
        expected = reshare_parties(wallet, ask)
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


def named_policy_set(ask: coordinator_pb2.CeremonyAsk, wallet_id: str, epoch: int) -> bytes:
    """The policy set a request must carry: none, or the asked one (at a keygen, or a
    refresh that changes the set) naming the wallet and the epoch it comes into force."""
    if not ask.policy_set:
        return b""
    asked = decode_policy_set(ask.policy_set)
    return encode_policy_set(replace(asked, wallet_id=wallet_id, epoch=epoch))


def approvals_follow(wallet: DeviceWallet, approvers: Sequence[Approver]) -> bool:
    """Whether approvals follow an ask (announced in it, so the coordinator waits for them)."""
    return wallet.policy_set is not None and bool(approvers)


def approvals_for(
    request: bytes, wallet: DeviceWallet | None, approvers: Sequence[Approver]
) -> list[ceremony_pb2.Approval]:
    """The approvers' approvals of the request under the wallet's policy set in force."""
    if wallet is None or wallet.policy_set is None:
        raise CoordinatorRefused("approvals are for a wallet with a policy set")
    return approvals_of(request, wallet.policy_set, wallet.epoch, approvers)


def reshare_parties(
    wallet: DeviceWallet, ask: coordinator_pb2.CeremonyAsk
) -> list[ceremony_pb2.Party]:
    """The new keyring a device's reshare ask means: without the removed party, or this
    device, the added party and the server party (last)."""
    if ask.HasField("remove_party"):
        return [p for i, p in enumerate(wallet.parties) if i != ask.remove_party]
    server = wallet.parties[wallet.server_index]
    return [wallet.parties[wallet.index], ask.new_party, server]
