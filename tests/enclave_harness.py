"""Test helpers: a devkms + enclave stack in process, client parties, and signed requests."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devkms.keystore import KeyStore
from devkms.policy import KeyPolicy, Policy
from devkms.server import make_server, serve_in_background
from devkms.service import KmsService
from enclave.auth import Authorizer
from enclave.auth import Policy as AuthPolicy
from enclave.kms import EnclaveKmsClient, KmsCredentials, RecipientKey
from enclave.nsm import SimulatedNitroPki, SimulatedNsm, image_pcrs
from enclave.seal import ShareSealer
from enclave.service import EnclaveDeps
from shardkeep.requests import COORDINATOR_CONTEXT, OWNER_CONTEXT, sign_request
from shardkeep.v1 import ceremony_pb2
from tss.channel import StaticKey
from tss.dkg.chilldkg import hostpubkey_gen

IMAGE = "shardkeep-enclave:test"
SEAL_KEY = "5eed0000-0000-4000-8000-000000000001"


@contextmanager
def devkms(pki: SimulatedNitroPki, image: str = IMAGE) -> Iterator[str]:
    """A devkms on 127.0.0.1 whose sealing key needs ``image``'s PCR0-2."""
    policy = Policy(
        root_certificate=pki.root_certificate_pem,
        keys={SEAL_KEY: KeyPolicy("server shares", None, image_pcrs(image))},
    )
    server, port = make_server(KmsService(KeyStore(), policy, region="us-east-1"))
    thread = serve_in_background(server)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def enclave_deps(
    pki: SimulatedNitroPki, endpoint: str, coordinator: Ed25519PrivateKey
) -> EnclaveDeps:
    nsm = SimulatedNsm(IMAGE, pki=pki)
    kms = EnclaveKmsClient.connect(
        endpoint_url=endpoint,
        region="us-east-1",
        credentials=KmsCredentials("test", "test"),
        nsm=nsm,
        recipient_key=RecipientKey.generate(2048),  # the minimum, for speed
    )
    key = coordinator.public_key().public_bytes_raw()
    return EnclaveDeps(nsm, ShareSealer(kms, SEAL_KEY), Authorizer(AuthPolicy((key,))))


@dataclass
class ClientParty:
    """A party outside the enclave: its static key and ChillDKG host key."""

    static_key: StaticKey = field(
        default_factory=lambda: StaticKey.generate(secrets.token_bytes(32))
    )
    hostseckey: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def party(self) -> ceremony_pb2.Party:
        return ceremony_pb2.Party(
            party_id=self.static_key.party_id,
            static_key=bytes(self.static_key.public_key),
            host_pubkey=hostpubkey_gen(self.hostseckey),
        )


def signed(
    request: ceremony_pb2.CeremonyRequest,
    coordinator: Ed25519PrivateKey,
    owner: Ed25519PrivateKey | None = None,
) -> ceremony_pb2.SignedCeremonyRequest:
    """Fill in expiry and nonce, serialise, and sign the request."""
    request.not_after_unix = int(time.time()) + 120
    request.request_nonce = secrets.token_bytes(16)
    data = request.SerializeToString()
    return ceremony_pb2.SignedCeremonyRequest(
        request=data,
        coordinator_signature=sign_request(coordinator, COORDINATOR_CONTEXT, data),
        owner_signature=sign_request(owner, OWNER_CONTEXT, data) if owner else b"",
    )


def unix_address(tmp: Path, name: str) -> str:
    return f"unix:{tmp / name}"


def status_of(error: grpc.aio.AioRpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = error.code()
    return code
