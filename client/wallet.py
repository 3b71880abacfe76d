"""The wallet SDK: create wallets with the server share and run every ceremony against it.

``WalletClient`` plays the relay coordinator (it creates rooms and signs
ceremony requests with the coordinator key the enclave pins) and runs the local
parties' sides of each ceremony (user devices, a customer server) over the
relay, while the host drives the server share in the enclave. Before any
ceremony it verifies the enclave's attestation document, which binds the
server party's keys (DESIGN.md §4-5).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.attestation import AttestationDocument, verify
from client.party import PartyIdentity, Progress, roster_of, run_over_relay
from relay.client import RelayClient
from shardkeep.requests import COORDINATOR_CONTEXT, OWNER_CONTEXT, sign_request
from shardkeep.v1 import ceremony_pb2, host_pb2, host_pb2_grpc
from tss.ceremony import Ceremony
from tss.channel import party_id
from tss.errors import InputError, ShardkeepError
from tss.keygen import Keygen
from tss.keyshare import KeyShare, Scheme
from tss.signing import (
    NO_OPTIONS,
    Bip340Signing,
    EcdsaSigning,
    RecoverableSignature,
    SigningOptions,
)

SCHEMES: dict[Scheme, str] = {
    "bip340": "SCHEME_BIP340",
    "ecdsa-secp256k1": "SCHEME_ECDSA_SECP256K1",
}


class WalletError(ShardkeepError):
    """A ceremony with the server share failed; ``code`` is the host's gRPC status."""

    def __init__(
        self, message: str, code: grpc.StatusCode | None = None, culprits: str = ""
    ) -> None:
        self.code = code
        self.culprits = tuple(c for c in culprits.split(",") if c)
        super().__init__(message if not culprits else f"{message} (culprits: {culprits})")


@dataclass(frozen=True)
class ServerParty:
    """The enclave's party as its attestation document vouches for it."""

    party: ceremony_pb2.Party
    document: AttestationDocument


@dataclass
class Wallet:
    """A keyring shared with the server share, and the key shares this client holds.

    Attributes:
        parties: every party in index order (the server party among them).
        server_index: the server party's index.
        shares: this client's key shares by party index.
        owner_key: the wallet owner's Ed25519 key (signs export and reshare requests).
    """

    wallet_id: str
    scheme: Scheme
    threshold: int
    parties: list[ceremony_pb2.Party]
    server_index: int
    public_key: bytes
    epoch: int
    shares: dict[int, KeyShare] = field(repr=False)
    owner_key: Ed25519PrivateKey | None = field(default=None, repr=False)


class WalletClient:
    """Talks to a host (the server share) and a relay as a coordinator.

    Arguments:
        host_address, relay_address: gRPC addresses (``host:port`` or ``unix:/path``).
        coordinator_key: the Ed25519 key the enclave pins as a coordinator.
        root_certificate: the attestation root (default: AWS Nitro root G1).
        expected_pcrs: PCR values the enclave image must have.
        allow_debug: accept debug-mode (all-zero PCR) enclaves.
        timeout: seconds for each ceremony.
    """

    def __init__(
        self,
        host_address: str,
        relay_address: str,
        coordinator_key: Ed25519PrivateKey,
        *,
        root_certificate: bytes | None = None,
        expected_pcrs: Mapping[int, bytes] | None = None,
        allow_debug: bool = False,
        timeout: float = 120.0,
    ) -> None:
        self._host_channel = grpc.aio.insecure_channel(host_address)
        self._host = host_pb2_grpc.HostStub(self._host_channel)  # type: ignore[no-untyped-call]
        self._relay = RelayClient.insecure(relay_address)
        self._coordinator = coordinator_key
        self._root = root_certificate
        self._pcrs = expected_pcrs
        self._allow_debug = allow_debug
        self._timeout = timeout

    async def __aenter__(self) -> WalletClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._relay.aclose()
        await self._host_channel.close(None)

    # --- attestation -----------------------------------------------------------

    async def attest(self) -> ServerParty:
        """Fetch and verify a fresh attestation document; return the server party it vouches for.

        Raises:
            AttestationError: the document is not valid for the pinned root, PCRs or our nonce.
        """
        nonce = secrets.token_bytes(32)
        reply = await self._host.GetAttestation(
            host_pb2.HostAttestationRequest(nonce=nonce), timeout=30
        )
        document = verify(
            reply.document,
            root_certificate=self._root,
            expected_pcrs=self._pcrs,
            nonce=nonce,
            allow_debug=self._allow_debug,
        )
        if document.public_key is None or document.user_data is None:
            raise WalletError("the attestation document does not carry the server party's keys")
        party = ceremony_pb2.Party(
            party_id=party_id(document.public_key),
            static_key=document.public_key,
            host_pubkey=document.user_data,
        )
        return ServerParty(party, document)

    # --- ceremonies ------------------------------------------------------------------

    async def create_wallet(
        self,
        scheme: Scheme,
        devices: Sequence[PartyIdentity],
        *,
        threshold: int,
        owner_key: Ed25519PrivateKey | None = None,
        wallet_id: str | None = None,
        progress: Progress | None = None,
    ) -> Wallet:
        """Run a keygen among ``devices`` and the server share (the server is the last party).

        Returns:
            The wallet with every device's key share.
        """
        server = await self.attest()
        parties = [d.party for d in devices] + [server.party]
        owner = owner_key or Ed25519PrivateKey.generate()
        request = ceremony_pb2.CeremonyRequest(
            ceremony_id=_new_id("keygen"),
            kind=ceremony_pb2.CEREMONY_KIND_KEYGEN,
            scheme=SCHEMES[scheme],
            wallet_id=wallet_id or _new_id("wallet"),
            threshold=threshold,
            parties=parties,
            owner_key=owner.public_key().public_bytes_raw(),
        )
        hostpubkeys = [bytes(p.host_pubkey) for p in parties]

        def build(_: ceremony_pb2.CeremonyRequest) -> dict[int, Ceremony[Any]]:
            return {
                i: Keygen(scheme, d.hostseckey, hostpubkeys, threshold, secrets.token_bytes)
                for i, d in enumerate(devices)
            }

        result, shares = await self._run(
            request, devices, build, server_index=len(devices), progress=progress
        )
        for share in shares.values():
            if share.public_key != result.public_key:
                raise WalletError(
                    "the server share reported another public key than the devices got"
                )
        return Wallet(
            request.wallet_id, scheme, threshold, parties, len(devices), result.public_key,
            result.epoch, shares, owner,
        )  # fmt: skip

    async def sign(
        self,
        wallet: Wallet,
        digest: bytes,
        devices: Mapping[int, PartyIdentity],
        *,
        options: SigningOptions = NO_OPTIONS,
        with_server: bool = True,
        progress: Progress | None = None,
    ) -> bytes | RecoverableSignature:
        """Sign a 32-byte digest with ``devices`` (by party index) and, by default, the server.

        Returns:
            The BIP-340 signature, or for ECDSA the signature with its recovery id.
        """
        if len(digest) != 32:
            raise InputError("digest must be 32 bytes")
        signers = sorted(devices) + ([wallet.server_index] if with_server else [])
        request = ceremony_pb2.CeremonyRequest(
            ceremony_id=_new_id("sign"),
            kind=ceremony_pb2.CEREMONY_KIND_SIGN,
            scheme=SCHEMES[wallet.scheme],
            wallet_id=wallet.wallet_id,
            parties=wallet.parties,
            digest=digest,
            signers=signers,
            derivation_path=options.derivation_path,
            taproot=options.taproot,
            taproot_merkle_root=options.taproot_merkle_root or b"",
            epoch=wallet.epoch,
        )
        kind = Bip340Signing if wallet.scheme == "bip340" else EcdsaSigning

        def build(req: ceremony_pb2.CeremonyRequest) -> dict[int, Ceremony[Any]]:
            # The same session id the enclave derives from the room and ceremony.
            session_id = f"{req.room_id}/{req.ceremony_id}".encode()
            return {
                i: kind(wallet.shares[i], signers, digest, session_id, secrets.token_bytes, options)
                for i in sorted(devices)
            }

        identities = [devices[i] for i in sorted(devices)]
        _, results = await self._run(
            request,
            identities,
            build,
            server_index=wallet.server_index if with_server else None,
            indices=signers,
            progress=progress,
        )
        first: bytes | RecoverableSignature = results[sorted(results)[0]]
        return first

    # --- plumbing ----------------------------------------------------------------------

    async def _run(
        self,
        request: ceremony_pb2.CeremonyRequest,
        devices: Sequence[PartyIdentity],
        build: Callable[[ceremony_pb2.CeremonyRequest], Mapping[int, Ceremony[Any]]],
        *,
        server_index: int | None,
        indices: list[int] | None = None,
        progress: Progress | None = None,
    ) -> tuple[ceremony_pb2.CeremonyResult, dict[int, Any]]:
        parties = list(request.parties)
        members = indices if indices is not None else list(range(len(parties)))
        room = await self._relay.create_room(
            [parties[i].party_id for i in members], ttl_ms=int(self._timeout * 1000)
        )
        request.room_id = room.room_id
        roster = roster_of(parties, members)
        by_id = {d.party_id: d for d in devices}
        ceremonies = build(request)

        async def device(index: int, ceremony: Ceremony[Any]) -> Any:
            identity = by_id[parties[index].party_id]
            async with self._relay.join(
                room.room_id, identity.party_id, room.join_tokens[identity.party_id]
            ) as relay:
                return await run_over_relay(ceremony, identity, roster, request, relay, progress)

        async def server() -> ceremony_pb2.CeremonyResult:
            if server_index is None:
                return ceremony_pb2.CeremonyResult(
                    ceremony_id=request.ceremony_id, wallet_id=request.wallet_id
                )
            server_id = parties[server_index].party_id
            call = HOST_METHODS[request.kind](self._host)
            try:
                result: ceremony_pb2.CeremonyResult = await call(
                    host_pb2.HostCeremonyRequest(
                        request=self._signed(request), relay_token=room.join_tokens[server_id]
                    ),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as e:
                culprits = _metadata(e).get("shardkeep-culprits", "")
                raise WalletError(
                    f"the server share refused: {e.details()}", e.code(), str(culprits)
                ) from e
            return result

        tasks = [server(), *(device(i, c) for i, c in ceremonies.items())]
        try:
            outcome = await asyncio.wait_for(asyncio.gather(*tasks), self._timeout)
        finally:
            await self._relay.close_room(room.room_id, room.admin_token)
        return outcome[0], dict(zip(ceremonies, outcome[1:], strict=True))

    def _signed(
        self, request: ceremony_pb2.CeremonyRequest, owner: Ed25519PrivateKey | None = None
    ) -> ceremony_pb2.SignedCeremonyRequest:
        request.not_after_unix = int(time.time()) + int(self._timeout)
        request.request_nonce = secrets.token_bytes(16)
        data = request.SerializeToString()
        return ceremony_pb2.SignedCeremonyRequest(
            request=data,
            coordinator_signature=sign_request(self._coordinator, COORDINATOR_CONTEXT, data),
            owner_signature=sign_request(owner, OWNER_CONTEXT, data) if owner else b"",
        )


HOST_METHODS: dict[int, Any] = {
    ceremony_pb2.CEREMONY_KIND_KEYGEN: lambda stub: stub.Keygen,
    ceremony_pb2.CEREMONY_KIND_SIGN: lambda stub: stub.Sign,
    ceremony_pb2.CEREMONY_KIND_RESHARE: lambda stub: stub.Reshare,
    ceremony_pb2.CEREMONY_KIND_REFRESH: lambda stub: stub.Refresh,
    ceremony_pb2.CEREMONY_KIND_EXPORT: lambda stub: stub.Export,
}


def _metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
    pairs: Any = error.trailing_metadata() or ()
    return {str(k): str(v) for k, v in pairs}


def _new_id(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(8)}"
