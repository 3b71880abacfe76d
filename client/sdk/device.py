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
  (``ApproveCeremony``), and goes to the device's own one-time key;
- for a wallet with a policy set, the device's approvers approve each
  signature, refresh, reshare and export once the request is checked (a
  policy change is a refresh carrying the asked set, and no other request may
  carry one); the wallet keeps its set through every key change, the
  settling of an interrupted one, and a backup and restore.

The work is split by job: ``device_wallet`` (the wallet as the device holds
it), ``device_checks`` (what is checked of a request), ``device_session``
(running one ceremony), ``device_key_changes`` (refresh, reshare, settling)
and ``device_recovery`` (backup and restore).

The device keeps its key shares and the wallet owner's key; it never sees the
coordinator key, the host's API token or another party's room token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from coincurve import PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client.errors import InvalidInput, sdk_boundary
from client.sdk.approvals import Approver
from client.sdk.default_policy import default_policy_set
from client.sdk.device_checks import approvals_follow, my_index
from client.sdk.device_key_changes import DeviceKeyChanges
from client.sdk.device_recovery import DeviceRecovery
from client.sdk.device_wallet import CoordinatorRefused, DeviceKeyChangeInterrupted, DeviceWallet
from client.sdk.wallet import PAIR_SETUP_REQUIRED, SCHEMES, SignedPayload
from shardkeep.policyset import PolicySet
from shardkeep.policyset import decode as decode_policy_set
from shardkeep.policyset import encode as encode_policy_set
from shardkeep.requests import MAX_ED25519_MESSAGE
from shardkeep.v1 import ceremony_pb2, coordinator_pb2
from tss.ecdsa.setup import PeerSetup
from tss.export import ExportOutput
from tss.group import ED25519
from tss.keyshare import KeyShare, Scheme
from tss.signing import NO_OPTIONS, RecoverableSignature, SigningOptions

_NAMED_BY_COORDINATOR = "unbound"  # stands in for the wallet id until the coordinator names it

__all__ = ["CoordinatorRefused", "Device", "DeviceKeyChangeInterrupted", "DeviceWallet"]


@sdk_boundary
class Device(DeviceKeyChanges, DeviceRecovery):
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
        self,
        scheme: Scheme,
        *,
        threshold: int = 2,
        policy_set: PolicySet | None = None,
        allow_raw_digest: bool = False,
    ) -> DeviceWallet:
        """A 2-party wallet of this device and the server share; the device keeps its share.

        ``policy_set``: authenticators and policies to register with the server
        share (the coordinator names the wallet in it; this device checks that
        nothing else changed). From then on the server share acts for the wallet
        only with their approvals (docs/security/policy.md). Default: the
        owner approves every parsed activity and key change
        (``client.sdk.default_policy``; ``allow_raw_digest`` also raw digests),
        and this device approves with the owner approval key whenever a call
        names no ``approvers``.
        """
        if policy_set is None:  # the coordinator names the wallet in it
            policy_set = default_policy_set(
                _NAMED_BY_COORDINATOR, self._owner_key, allow_raw_digest=allow_raw_digest
            )
        elif allow_raw_digest:
            raise InvalidInput("allow_raw_digest shapes the default policy set")
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_KEYGEN,
            scheme=SCHEMES[scheme],
            threshold=threshold,
            party=self.identity.party,
            owner_key=self._owner_key.public_key().public_bytes_raw(),
            policy_set=encode_policy_set(policy_set),
        )
        request, share, result = await self._run(ask, None)
        if not isinstance(share, KeyShare) or share.public_key != bytes(result.public_key):
            raise CoordinatorRefused("the server share reported another public key")
        registered = decode_policy_set(request.policy_set) if request.policy_set else None
        return DeviceWallet(
            request.wallet_id, scheme, request.threshold, list(request.parties),
            my_index(request, self.identity), share.public_key, share.epoch, share,
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
        approvers = self._approvers(wallet, approvers)
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

    async def export(self, wallet: DeviceWallet, *, approvers: Sequence[Approver] = ()) -> bytes:
        """Reconstruct the wallet's private key on this device (the owner key approves it;
        for a wallet with a policy set, ``approvers`` too, once this device checked the request).

        The server share's contribution is sealed to a one-time X25519 key of
        this device; the coordinator, host and relay never see the key.

        Returns:
            The 32-byte private key, checked against the wallet's public key.
        """
        one_time = X25519PrivateKey.generate()
        approvers = self._approvers(wallet, approvers)
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_EXPORT,
            wallet_id=wallet.wallet_id,
            party=self.identity.party,
            export_recipient_key=one_time.public_key().public_bytes_raw(),
            approvals_follow=approvals_follow(wallet, approvers),
        )
        _, output, _ = await self._run(ask, wallet, recipient_key=one_time, approvers=approvers)
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
            approvals_follow=approvals_follow(wallet, approval.approvers),
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


@dataclass(frozen=True)
class _Approval:
    """Who approves a signature request, and what its digest is of."""

    approvers: Sequence[Approver]
    payload: SignedPayload


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
