"""The device side: a phone (or any end-user device) that holds its shares but no coordinator key.

``Device`` asks a coordinator (``shardkeep.v1.Coordinator``, docs/coordinator.md)
to run a keygen or a signature, checks what comes back before taking part,
and runs its own party over the relay with the room token it was handed:

- the enclave's attestation document must verify (the pinned root and PCRs)
  on the nonce the device chose, and attest the server party the request
  names, so a coordinator cannot slip in a key of its own;
- the request must be what the device asked for (kind, wallet, digest,
  threshold, its own party), and its ceremony is built from the request alone,
  as the enclave builds its own.

The device keeps its key shares and the wallet owner's key; it never sees the
coordinator key, the host's API token or another party's room token.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.sdk.attestation import verify
from client.sdk.party import (
    PartyIdentity,
    keygen_ceremony,
    roster_of,
    run_over_relay,
    sign_ceremony,
)
from client.sdk.transport import Transport
from client.sdk.wallet import PAIR_SETUP_REQUIRED, SCHEMES, WalletError
from relay.client import RelayClient
from shardkeep.device_auth import sign_device_call
from shardkeep.v1 import ceremony_pb2, coordinator_pb2, coordinator_pb2_grpc
from tss.ceremony import Ceremony
from tss.channel import party_id
from tss.ecdsa.setup import PeerSetup
from tss.errors import InputError
from tss.keygen import PairSetup
from tss.keyshare import KeyShare, Scheme
from tss.signing import NO_OPTIONS, RecoverableSignature, SigningOptions

__all__ = ["Device", "DeviceWallet", "CoordinatorRefused"]

_VERDICT_GRACE_S = 10.0


class CoordinatorRefused(WalletError):
    """The coordinator refused, or handed back something this device did not ask for."""


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


class Device:
    """A device's SDK: enroll with a coordinator, create wallets, sign.

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
            raise InputError("a device carries no API token: that is the coordinator's")
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

    async def create_wallet(self, scheme: Scheme, *, threshold: int = 2) -> DeviceWallet:
        """A 2-party wallet of this device and the server share; the device keeps its share."""
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_KEYGEN,
            scheme=SCHEMES[scheme],
            threshold=threshold,
            party=self.identity.party,
            owner_key=self._owner_key.public_key().public_bytes_raw(),
        )
        request, share, result = await self._run(ask, None)
        if not isinstance(share, KeyShare) or share.public_key != bytes(result.public_key):
            raise CoordinatorRefused("the server share reported another public key")
        return DeviceWallet(
            request.wallet_id, scheme, request.threshold, list(request.parties),
            _my_index(request, self.identity), share.public_key, share.epoch, share,
        )  # fmt: skip

    async def sign(
        self, wallet: DeviceWallet, digest: bytes, *, options: SigningOptions = NO_OPTIONS
    ) -> bytes | RecoverableSignature:
        """Sign a 32-byte digest with this device's share and the server share.

        ECDSA: the enclave keeps its DKLs23 pair setups in memory only; when
        this share has none usable, or the enclave answers that it lost its
        side (a restart), a new pair setup runs first (``pair_setup``).
        """
        if len(digest) != 32:
            raise InputError("digest must be 32 bytes")
        if wallet.scheme != "ecdsa-secp256k1":
            return await self._sign(wallet, digest, options)
        if wallet.server_setup_id() is None:
            await self.pair_setup(wallet)
        try:
            return await self._sign(wallet, digest, options)
        except CoordinatorRefused as e:
            if e.reason != PAIR_SETUP_REQUIRED:
                raise
        await self.pair_setup(wallet)
        return await self._sign(wallet, digest, options)

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

    async def _sign(
        self, wallet: DeviceWallet, digest: bytes, options: SigningOptions
    ) -> bytes | RecoverableSignature:
        ask = coordinator_pb2.CeremonyAsk(
            kind=ceremony_pb2.CEREMONY_KIND_SIGN,
            wallet_id=wallet.wallet_id,
            party=self.identity.party,
            digest=digest,
            derivation_path=options.derivation_path,
            taproot=options.taproot,
            taproot_merkle_root=options.taproot_merkle_root or b"",
            pair_setup_id=wallet.server_setup_id() or b"",
        )
        _, signature, _ = await self._run(ask, wallet)
        if not isinstance(signature, bytes | RecoverableSignature):
            raise CoordinatorRefused("the ceremony produced no signature")
        return signature

    async def _run(
        self, ask: coordinator_pb2.CeremonyAsk, wallet: DeviceWallet | None
    ) -> tuple[ceremony_pb2.CeremonyRequest, Any, ceremony_pb2.CeremonyResult]:
        ask.attestation_nonce = secrets.token_bytes(32)
        started: coordinator_pb2.StartedCeremony = await self._unary(
            self._coordinator.StartCeremony,
            sign_device_call(self._device_key, "StartCeremony", ask.SerializeToString()),
        )
        request = ceremony_pb2.CeremonyRequest.FromString(started.request)
        server = self._attested_server(started.attestation_document, bytes(ask.attestation_nonce))
        _check_request(request, ask, self.identity, server, wallet)
        me = _my_index(request, self.identity)
        ceremony: Ceremony[Any]
        if wallet is None:
            roster = roster_of(list(request.parties))
            ceremony = keygen_ceremony(request, self.identity)
        else:
            roster = roster_of(list(request.parties), sorted(request.signers))
            ceremony = (
                sign_ceremony(request, self.identity, wallet.share)
                if request.kind == ceremony_pb2.CEREMONY_KIND_SIGN
                else PairSetup(
                    wallet.share,
                    wallet.server_index,
                    f"{request.room_id}/{request.ceremony_id}".encode(),  # as the enclave
                    secrets.token_bytes,
                )
            )
        mine = request.parties[me].party_id

        async def party() -> Any:
            async with self._relay.join(request.room_id, mine, started.join_token) as relay:
                return await run_over_relay(ceremony, self.identity, roster, request, relay)

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
        return request, output, result

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
        if (request.scheme, request.threshold) != (ask.scheme, ask.threshold) or bytes(
            request.owner_key
        ) != bytes(ask.owner_key):
            raise CoordinatorRefused("the keygen request differs from the ask")
        return
    same_wallet = (
        request.wallet_id == wallet.wallet_id
        and list(request.parties) == wallet.parties
        and request.epoch == wallet.epoch
        and list(request.signers) == sorted([wallet.index, wallet.server_index])
    )
    if request.kind == ceremony_pb2.CEREMONY_KIND_PAIR_SETUP:
        if not same_wallet:
            raise CoordinatorRefused("the pair setup request differs from the wallet")
        return
    same = (
        same_wallet
        and bytes(request.digest) == bytes(ask.digest)
        and list(request.derivation_path) == list(ask.derivation_path)
        and request.taproot == ask.taproot
        and bytes(request.taproot_merkle_root) == bytes(ask.taproot_merkle_root)
    )
    if not same:
        raise CoordinatorRefused("the signing request differs from the ask or the wallet")
