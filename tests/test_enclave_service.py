"""The enclave's gRPC service end to end: devkms, simulated NSM, sealed shares, client parties.

The test plays the host: it carries envelopes between the enclave's
RunCeremony stream and client parties running the same ``tss`` ceremonies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import VerifyKey

from client.sdk.attestation import verify
from enclave import service as enclave_service
from enclave.config import RECORD_CACHE_SIZE, ConfigError, EnclaveConfig
from enclave.nsm import SimulatedNitroPki
from enclave.service import CULPRITS_METADATA, EnclaveDeps
from shardkeep.framing import unbatched
from shardkeep.v1 import ceremony_pb2, enclave_pb2, envelope_pb2
from tests.enclave_harness import (
    DIGEST,
    SCHEMES,
    ClientParty,
    Stack,
    Tamper,
    client_keygen,
    client_sign,
    devkms,
    enclave_deps,
    host_loop,
    keygen_request,
    run,
    sign_request,
    signed,
    with_enclave,
)
from tss.curve import ecdsa_verify, schnorr_verify


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_keygen_and_sign_with_the_server_share(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request(scheme, [client.party, stack.party], 2)
        session = client_keygen(scheme, client, request)
        result = await host_loop(
            stack, signed(request, coordinator), {client.party.party_id: session}
        )
        share = session.result
        assert result.public_key == share.public_key and result.epoch == 0
        (stored,) = stack.stored
        assert (stored.wallet_id, stored.share_index, stored.epoch) == ("wallet-1", 1, 0)
        # The host only ever sees ciphertext: no secret of either party is in it.
        for secret in (share.secret_share_bytes,):
            assert secret not in stored.ciphertext and secret not in stored.encrypted_data_key

        sign = sign_request(request, [0, 1])
        signer = client_sign(share, client, sign)
        result = await host_loop(
            stack, signed(sign, coordinator), {client.party.party_id: signer}, [stored]
        )
        if scheme == "bip340":
            assert schnorr_verify(DIGEST, share.public_key[1:], result.signature)
        elif scheme == "ed25519":  # RFC 8032 over the message itself, checked by libsodium
            VerifyKey(share.public_key).verify(DIGEST, result.signature)
        else:
            assert ecdsa_verify(DIGEST, share.public_key, result.signature)
        assert (
            signer.result in (result.signature,)
            or getattr(signer.result, "signature", None) == result.signature
        )

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_attestation_binds_the_static_key(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()

    async def body(stack: Stack) -> None:
        nonce = secrets.token_bytes(32)
        reply = await stack.stub.GetAttestation(enclave_pb2.GetAttestationRequest(nonce=nonce))
        document = verify(reply.document, root_certificate=pki.root_certificate_pem, nonce=nonce)
        assert document.public_key == stack.identity.static_key
        assert document.user_data == stack.identity.host_pubkey

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_the_sealed_identity_survives_a_restart(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    first: list[enclave_pb2.ProvisionResponse] = []

    async def remember(stack: Stack) -> None:
        first.append(stack.identity)

    async def reload(stack: Stack) -> None:
        again = stack.identity
        assert again.static_key == first[0].static_key and again.host_pubkey == first[0].host_pubkey
        # Once provisioned, the host cannot swap in another identity.
        fresh = stack.stub.Provision(enclave_pb2.ProvisionRequest())
        await expect_status(fresh, grpc.StatusCode.FAILED_PRECONDITION)

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, remember))
    sealed = first[0].sealed_identity
    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, reload, sealed))


async def expect_status(call: Any, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value


def test_authorisation_is_checked_inside_the_enclave(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request("bip340", [client.party, stack.party], 2)
        forged = signed(request, Ed25519PrivateKey.generate())  # not the pinned coordinator
        session = client_keygen("bip340", client, request)
        await expect_status(
            host_loop(stack, forged, {client.party.party_id: session}),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        session = client_keygen("bip340", client, request)  # binds a fresh challenge
        good = signed(request, coordinator)
        await host_loop(stack, good, {client.party.party_id: session})
        replay = client_keygen("bip340", client, request)
        await expect_status(
            host_loop(stack, good, {client.party.party_id: replay}),
            grpc.StatusCode.PERMISSION_DENIED,
        )

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_a_tampering_host_gets_typed_errors(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request("bip340", [client.party, stack.party], 2)
        session = client_keygen("bip340", client, request)
        await host_loop(stack, signed(request, coordinator), {client.party.party_id: session})
        share, (stored,) = session.result, stack.stored
        sign = sign_request(request, [0, 1])

        def sign_with(sealed: list[ceremony_pb2.SealedShare], tamper: Tamper | None = None) -> Any:
            signer = client_sign(share, client, sign)
            return host_loop(
                stack,
                signed(sign, coordinator),
                {client.party.party_id: signer},
                sealed,
                tamper,
            )

        flipped = ceremony_pb2.SealedShare()
        flipped.CopyFrom(stored)
        flipped.ciphertext = stored.ciphertext[:-1] + bytes([stored.ciphertext[-1] ^ 1])
        await expect_status(sign_with([flipped]), grpc.StatusCode.FAILED_PRECONDITION)
        other_wallet = ceremony_pb2.SealedShare()
        other_wallet.CopyFrom(stored)
        other_wallet.wallet_id = (
            "wallet-2"  # the host relabels another wallet's share: the binding differs
        )
        sign.wallet_id = "wallet-2"
        await expect_status(sign_with([other_wallet]), grpc.StatusCode.FAILED_PRECONDITION)
        sign.wallet_id = "wallet-1"
        await expect_status(sign_with([]), grpc.StatusCode.FAILED_PRECONDITION)

        def flip_payload(env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
            env.payload = env.payload[:-1] + bytes([env.payload[-1] ^ 1])
            return env

        # A corrupted envelope is dropped, never blamed on its claimed sender:
        # the ceremony waits for the genuine one until the host gives up.
        signer = client_sign(share, client, sign)
        error = await expect_status(
            host_loop(
                stack, signed(sign, coordinator), {client.party.party_id: signer},
                [stored], flip_payload, idle_s=1.0,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )  # fmt: skip
        assert "ended the stream" in (error.details() or "")
        assert not dict(error.trailing_metadata() or ()).get(CULPRITS_METADATA)
        # The stored share is untouched: signing still works.
        await sign_with([stored])

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_a_host_that_reorders_or_drops_envelopes_blames_no_party(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request(scheme, [client.party, stack.party], 2)
        session = client_keygen(scheme, client, request)
        await host_loop(stack, signed(request, coordinator), {client.party.party_id: session})
        share, (stored,) = session.result, stack.stored
        held: list[envelope_pb2.Envelope] = []

        def swap_first_two(env: envelope_pb2.Envelope) -> list[envelope_pb2.Envelope]:
            if not held and not getattr(swap_first_two, "done", False):
                held.append(env)
                return []
            if held:
                swap_first_two.done = True  # type: ignore[attr-defined]
                return [env, held.pop()]
            return [env]

        # Reordered envelopes each open once; the ceremony orders its rounds itself.
        sign = sign_request(request, [0, 1])
        signer = client_sign(share, client, sign)
        await host_loop(
            stack, signed(sign, coordinator), {client.party.party_id: signer}, [stored],
            swap_first_two,
        )  # fmt: skip
        assert getattr(swap_first_two, "done", False)

        # A dropped envelope is non-delivery: the ceremony waits, then the host
        # gives up; no party is named (the relay or host may have lost it).
        sign = sign_request(request, [0, 1])
        signer = client_sign(share, client, sign)
        call = host_loop(
            stack, signed(sign, coordinator), {client.party.party_id: signer}, [stored],
            lambda env: [], idle_s=1.0,
        )  # fmt: skip
        error = await expect_status(call, grpc.StatusCode.INVALID_ARGUMENT)
        assert not dict(error.trailing_metadata() or ()).get(CULPRITS_METADATA)
        # Transport faults burn no ECDSA pair and touch no share: an honest host signs.
        sign = sign_request(request, [0, 1])
        signer = client_sign(share, client, sign)
        await host_loop(stack, signed(sign, coordinator), {client.party.party_id: signer}, [stored])

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_the_coordinator_signature_is_checked_before_any_share_is_opened(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request("bip340", [client.party, stack.party], 2)
        session = client_keygen("bip340", client, request)
        await host_loop(stack, signed(request, coordinator), {client.party.party_id: session})
        garbage = ceremony_pb2.SealedShare()
        garbage.CopyFrom(stack.stored[0])
        garbage.ciphertext = b"\x00" * len(garbage.ciphertext)  # would fail if it were opened
        sign = sign_request(request, [0, 1])
        signer = client_sign(session.result, client, sign)
        forged = signed(sign, Ed25519PrivateKey.generate())
        call = host_loop(stack, forged, {client.party.party_id: signer}, [garbage])
        await expect_status(call, grpc.StatusCode.PERMISSION_DENIED)

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_a_hot_wallet_does_not_reopen_its_sealed_record(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Opened records stay in enclave memory: a wallet that signs again costs no KMS call,
    unless the cache (``record_cache_size``) is too small for the wallets in use."""
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def sign_round_robin(stack: Stack, rounds: int) -> None:
        wallets = []
        for wallet_id in ("wallet-1", "wallet-2"):
            request = keygen_request("bip340", [client.party, stack.party], 2)
            request.wallet_id = wallet_id
            session = client_keygen("bip340", client, request)
            await host_loop(stack, signed(request, coordinator), {client.party.party_id: session})
            wallets.append((request, session.result, stack.stored[-1]))
        for _ in range(rounds):
            for request, share, sealed in wallets:
                sign = sign_request(request, [0, 1])
                signer = client_sign(share, client, sign)
                result = await host_loop(
                    stack, signed(sign, coordinator), {client.party.party_id: signer}, [sealed]
                )
                assert schnorr_verify(DIGEST, share.public_key[1:], result.signature)

    def counting_opens(deps: EnclaveDeps) -> list[str]:
        opened: list[str] = []
        unseal = deps.sealer.unseal_with_key

        def counted(sealed: Any, binding: Any) -> Any:
            opened.append(binding.wallet_id)
            return unseal(sealed, binding)

        deps.sealer.unseal_with_key = counted  # type: ignore[method-assign]
        return opened

    roomy = enclave_deps(pki, kms_endpoint, coordinator)
    opened = counting_opens(roomy)
    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator,
                     lambda s: sign_round_robin(s, 3), deps=roomy))  # fmt: skip
    assert opened == ["wallet-1", "wallet-2"]  # once each, for 3 signatures each

    small = dataclasses.replace(enclave_deps(pki, kms_endpoint, coordinator), record_cache_size=1)
    opened = counting_opens(small)
    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator,
                     lambda s: sign_round_robin(s, 2), deps=small))  # fmt: skip
    assert opened == ["wallet-1", "wallet-2"] * 2  # each evicts the other: a KMS call each time


def test_the_record_cache_size_is_configured(tmp_path: Path) -> None:
    def load(**extra: object) -> EnclaveConfig:
        path = tmp_path / "enclave.json"
        path.write_text(
            json.dumps(
                {
                    "listen": "unix:/tmp/x.sock",
                    "coordinator_keys": [],
                    "kms": {"endpoint": "http://127.0.0.1:1", "key_id": "dev-key"},
                    "nsm": {"mode": "simulated", "pki_dir": str(tmp_path)},
                    **extra,
                }
            )
        )
        return EnclaveConfig.load(path)

    assert load().record_cache_size == RECORD_CACHE_SIZE
    assert load(record_cache_size=50_000).record_cache_size == 50_000
    with pytest.raises(ConfigError, match="record_cache_size"):
        load(record_cache_size=0)


def test_a_session_bounds_the_ceremonies_and_inputs_a_host_makes_it_hold(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a Session stream the host chooses how many ceremonies run and how much it sends
    them: past the bounds the enclave ends that ceremony (RESOURCE_EXHAUSTED), not the stream."""
    monkeypatch.setattr(enclave_service, "MAX_SESSION_CHANNELS", 2)
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        def start(number: int) -> enclave_pb2.SessionInput:
            request = keygen_request("bip340", [client.party, stack.party], 2)
            request.wallet_id = f"wallet-{number}"
            begin = enclave_pb2.CeremonyStart(request=signed(request, coordinator))
            return enclave_pb2.SessionInput(
                channel=number, input=enclave_pb2.CeremonyInput(start=begin)
            )

        async def ends(call: Any, count: int) -> dict[int, enclave_pb2.ChannelEnd]:
            ended: dict[int, enclave_pb2.ChannelEnd] = {}
            async with asyncio.timeout(20):
                while len(ended) < count:
                    for frame in unbatched(await call.read()):
                        if frame.WhichOneof("frame") == "end":
                            ended[frame.channel] = frame.end
            return ended

        call = stack.stub.Session()
        for number in (1, 2, 3):  # 1 and 2 wait for their peer; 3 is one too many
            await call.write(start(number))
        (refused,) = (await ends(call, 1)).items()
        assert refused[0] == 3 and refused[1].code == "RESOURCE_EXHAUSTED"

        await call.write(enclave_pb2.SessionInput(channel=1, cancel=True))
        monkeypatch.setattr(enclave_service, "MAX_CHANNEL_BACKLOG", 0)
        await call.write(start(4))  # more than the ceremony has read: ended
        (flooded,) = (await ends(call, 1)).items()
        assert flooded[0] == 4 and flooded[1].code == "RESOURCE_EXHAUSTED"

        # The stream goes on: a ceremony on it still runs to its verdict.
        monkeypatch.setattr(enclave_service, "MAX_CHANNEL_BACKLOG", 256)
        await call.write(enclave_pb2.SessionInput(channel=2, cancel=True))
        bad = enclave_pb2.CeremonyInput(inbound=envelope_pb2.Envelope())
        await call.write(enclave_pb2.SessionInput(channel=5, input=bad))
        (verdict,) = (await ends(call, 1)).items()
        assert verdict[0] == 5 and verdict[1].code == "INVALID_ARGUMENT"
        call.cancel()

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_a_sessions_batch_reaches_each_channel_in_order(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Frames the host sends in one batch are handled in the batch's order: a
    ceremony's start and its half-close in one message start it, then end its
    inputs (the other way round, the half-close would name no open channel)."""
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request("bip340", [client.party, stack.party], 2)
        begin = enclave_pb2.CeremonyStart(request=signed(request, coordinator))
        ask = enclave_pb2.GetChallengeRequest()
        batch = enclave_pb2.SessionInputs(
            frames=[
                enclave_pb2.SessionInput(channel=1, input=enclave_pb2.CeremonyInput(start=begin)),
                enclave_pb2.SessionInput(channel=2, get_challenge=ask),
                enclave_pb2.SessionInput(channel=1, half_close=True),
            ]
        )
        call = stack.stub.Session()
        await call.write(enclave_pb2.SessionInput(batch=batch))
        seen: list[tuple[int, str]] = []
        ends: dict[int, enclave_pb2.ChannelEnd] = {}
        async with asyncio.timeout(20):
            while 1 not in ends:
                for frame in unbatched(await call.read()):
                    kind = frame.WhichOneof("frame")
                    if kind == "output":
                        kind = frame.output.WhichOneof("output")
                    elif kind == "end":
                        ends[frame.channel] = frame.end
                    seen.append((frame.channel, kind))
        # Started (its first round went out), then its inputs ended before its peer's came.
        assert [k for c, k in seen if c == 1] == ["outbound", "failure", "end"]
        assert "ended the stream before the ceremony finished" in ends[1].message
        assert (2, "challenge") in seen
        call.cancel()

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


@pytest.mark.parametrize(
    ("batch", "fault"),
    [
        (enclave_pb2.SessionInputs(), "a batch carries no frames"),
        (
            enclave_pb2.SessionInputs(
                frames=[enclave_pb2.SessionInput(batch=enclave_pb2.SessionInputs())]
            ),
            "a batch inside a batch",
        ),
    ],
)
def test_a_malformed_session_batch_is_refused_naming_the_fault(
    pki: SimulatedNitroPki,
    kms_endpoint: str,
    tmp_path: Path,
    batch: enclave_pb2.SessionInputs,
    fault: str,
) -> None:
    """Attack: a host sends a batch that breaks the framing rules (empty, or nested).
    The enclave ends the stream with INVALID_ARGUMENT naming the fault."""
    coordinator = Ed25519PrivateKey.generate()

    async def body(stack: Stack) -> None:
        call = stack.stub.Session()
        await call.write(enclave_pb2.SessionInput(batch=batch))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async with asyncio.timeout(20):
                await call.read()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fault in (refused.value.details() or "")

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))
