"""Burned DKLs23 pairs survive an enclave restart through the coordinator (GHSA-7f6p-phw2-8253).

A client that cheats in the DKLs23 multiplication burns its pair with the
server party. The enclave remembers that in memory only; the host can restart
it and replay the older sealed share, so the coordinator keeps the burned pairs
the enclave reports (``CeremonyFailure.burned`` / ``shardkeep-burned``) and
sends them in every signed sign request (``CeremonyRequest.burned_pairs``).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.wallet import Wallet, WalletError, note_burned
from enclave.nsm import SimulatedNitroPki
from host.errors import error_from_failure
from shardkeep.v1 import ceremony_pb2, enclave_pb2
from tests.enclave_harness import (
    DIGEST,
    ClientParty,
    Stack,
    client_keygen,
    client_sign,
    devkms,
    host_loop,
    keygen_request,
    run,
    sign_request,
    signed,
    with_enclave,
)
from tss.ceremony import Message
from tss.channel import Roster
from tss.curve import ecdsa_verify
from tss.ecdsa.wire import HEADER_BYTES
from tss.keyshare import KeyShare
from tss.session import SecureSession
from tss.signing import EcdsaSigning

SCHEME: Final = "ecdsa-secp256k1"
CLIENT, SERVER = 0, 1
# Round-2 layout after the header: echo (32) || RVOLE reply: a byte inside its
# a-tilde vector (as tests/test_ecdsa_adversarial.py's "a-tilde" case).
A_TILDE = HEADER_BYTES + 32 + 32 + 100


class CheatingSigning(EcdsaSigning):
    """Cheats in the DKLs23 multiplication: flips a bit of round 2's RVOLE reply."""

    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        messages = super()._run_round(round_, payloads)
        if round_ != 1:
            return messages
        return [
            dataclasses.replace(
                m,
                payload=m.payload[:A_TILDE]
                + bytes([m.payload[A_TILDE] ^ 0x40])
                + m.payload[A_TILDE + 1 :],
            )
            for m in messages
        ]


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


def _cheating_sign(
    share: KeyShare, client: ClientParty, request: ceremony_pb2.CeremonyRequest
) -> SecureSession[Any]:
    """``client_sign`` with ``CheatingSigning`` in place of the honest ceremony."""
    signers = list(request.signers)
    roster = Roster.from_parties(
        [(request.parties[i].party_id, bytes(request.parties[i].static_key)) for i in signers],
        signers,
    )
    session_id = f"{request.room_id}/{request.ceremony_id}".encode()
    ceremony = CheatingSigning(share, signers, DIGEST, session_id, secrets.token_bytes)
    return SecureSession(
        ceremony, client.static_key, roster, request.room_id, request.ceremony_id,
        secrets.token_bytes,
    )  # fmt: skip


def _client_sign(
    share: KeyShare, client: ClientParty, request: ceremony_pb2.CeremonyRequest
) -> SecureSession[Any]:
    return client_sign(share, client, request)


def _trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    # grpc.aio.Metadata iterates as (key, value) pairs; the stubs say otherwise.
    pairs: Any = error.trailing_metadata() or ()
    return {str(k): str(v) for k, v in pairs}


def test_a_burned_pair_stays_burned_across_a_restart_through_the_coordinator(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()
    kept: dict[str, Any] = {}

    async def sign(
        stack: Stack, burned_pairs: list[int], cheat: bool = False
    ) -> ceremony_pb2.CeremonyResult:
        request = sign_request(kept["keygen"], [CLIENT, SERVER])
        request.burned_pairs.extend(burned_pairs)
        share: KeyShare = kept["share"]
        session = (_cheating_sign if cheat else _client_sign)(share, client, request)
        result: ceremony_pb2.CeremonyResult = await host_loop(
            stack, signed(request, coordinator), {client.party.party_id: session}, kept["stored"]
        )
        return result

    async def first_life(stack: Stack) -> None:
        request = keygen_request(SCHEME, [client.party, stack.party], 2)
        session = client_keygen(SCHEME, client, request)
        await host_loop(stack, signed(request, coordinator), {client.party.party_id: session})
        kept.update(
            keygen=request, share=session.result, stored=list(stack.stored),
            identity=stack.identity.sealed_identity,
        )  # fmt: skip

        # The cheat is caught: the client is the culprit, its pair is burned and reported.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sign(stack, [], cheat=True)
        assert caught.value.code() == grpc.StatusCode.ABORTED
        trailers = _trailers(caught.value)
        assert trailers["shardkeep-culprits"] == client.party.party_id
        assert trailers["shardkeep-burned"] == client.party.party_id

        # While this enclave runs, it remembers: an honest retry without the list is refused.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sign(stack, [])
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "burned" in (refused.value.details() or "")
        assert _trailers(refused.value)["shardkeep-burned"] == client.party.party_id

    async def restarted(stack: Stack) -> None:
        # The residual risk the coordinator closes: a fresh enclave (the host
        # restarted it, replaying the older sealed share) has forgotten the burn,
        # so a request WITHOUT the coordinator's list is accepted ...
        result = await sign(stack, [])
        assert ecdsa_verify(DIGEST, kept["share"].public_key, result.signature)
        # ... while the coordinator's signed list keeps the pair burned.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sign(stack, [CLIENT])
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "burned" in (refused.value.details() or "")
        assert _trailers(refused.value)["shardkeep-burned"] == client.party.party_id

    async def restarted_again(stack: Stack) -> None:
        # A request carrying the list is refused straight after a restart.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sign(stack, [CLIENT])
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # The list names other parties of the keyring only.
        for bad in ([SERVER], [7]):
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await sign(stack, bad)
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, first_life))
    for life in (restarted, restarted_again):
        run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, life, kept["identity"]))


def test_the_host_passes_burned_pairs_on_as_a_trailer() -> None:
    failure = enclave_pb2.CeremonyFailure(
        code="ABORTED", message="cheat", culprits=["alice"], burned=["alice"]
    )
    error = error_from_failure(failure)
    assert error.code == grpc.StatusCode.ABORTED
    assert dict(error.trailers) == {"shardkeep-culprits": "alice", "shardkeep-burned": "alice"}
    quiet = error_from_failure(enclave_pb2.CeremonyFailure(code="UNAVAILABLE"))
    assert quiet.trailers == ()


def _wallet() -> Wallet:
    parties = [ceremony_pb2.Party(party_id=name) for name in ("alice", "bob", "server")]
    return Wallet("w", SCHEME, 2, parties, 2, b"\x02" * 33, 0, {})


def test_the_client_keeps_the_burned_pairs_it_is_told() -> None:
    wallet = _wallet()
    assert wallet.burned_pairs == frozenset()
    error = WalletError("refused", grpc.StatusCode.ABORTED, "bob", "bob")
    assert error.culprits == ("bob",) and error.burned == ("bob",)
    note_burned(wallet, error)
    assert wallet.burned_pairs == {1}
    # Never unburned by a later error; unknown ids and the server's own are ignored.
    note_burned(wallet, WalletError("refused", burned="alice,server,mallory"))
    assert wallet.burned_pairs == {0, 1}
    note_burned(wallet, WalletError("transport fault", grpc.StatusCode.UNAVAILABLE))
    assert wallet.burned_pairs == {0, 1}
