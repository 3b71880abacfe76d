"""Blame at the channel layer, end to end against the enclave service.

The relay (and the host behind it) carries sealed envelopes whose headers
travel in the clear: it can put any party's sender id on any bytes and deliver
any envelope twice. Such envelopes must be dropped, never blamed on the party
the header names; the genuine messages still complete the ceremony, and a
message that never comes is non-delivery (the host's deadline), naming no one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.nsm import SimulatedNitroPki
from enclave.service import CULPRITS_METADATA
from shardkeep.v1 import envelope_pb2
from tests.enclave_harness import (
    SCHEMES,
    ClientParty,
    Stack,
    Tamper,
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
from tss.channel import ChannelEnvelope, PartyId


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


def claiming(env: envelope_pb2.Envelope, sender: str) -> envelope_pb2.Envelope:
    """``env`` re-labelled as ``sender``'s, in the relay header and the channel header."""
    sealed = ChannelEnvelope.from_bytes(bytes(env.payload))
    header = dataclasses.replace(sealed.header, sender=PartyId(sender))
    forged = envelope_pb2.Envelope()
    forged.CopyFrom(env)
    forged.sender = sender
    forged.payload = ChannelEnvelope(header, sealed.enc, sealed.ciphertext).to_bytes()
    return forged


def no_culprits(error: grpc.aio.AioRpcError) -> bool:
    return not dict(error.trailing_metadata() or ()).get(CULPRITS_METADATA)


async def expect_no_blame(call: Any) -> grpc.aio.AioRpcError:
    """The host gave up on a stalled ceremony: a non-blaming status, no culprit trailer."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert no_culprits(info.value)
    return info.value


def run_keygen_and_sign(
    scheme: str,
    pki: SimulatedNitroPki,
    kms_endpoint: str,
    tmp_path: Path,
    make_tamper: Any,
) -> None:
    """A 2-of-3 keyring (clients B and C, the enclave): keygen, then B, C and the
    enclave sign; ``make_tamper(b, c)`` attacks every envelope into the enclave.
    Both ceremonies must succeed."""
    coordinator = Ed25519PrivateKey.generate()
    b, c = ClientParty(), ClientParty()

    async def body(stack: Stack) -> None:
        tamper: Tamper = make_tamper(b.party.party_id, c.party.party_id)
        request = keygen_request(scheme, [b.party, c.party, stack.party], 2)
        sessions = {p.party.party_id: client_keygen(scheme, p, request) for p in (b, c)}
        result = await host_loop(stack, signed(request, coordinator), sessions, (), tamper)
        shares = [s.result for s in sessions.values()]
        assert result.public_key == shares[0].public_key
        sign = sign_request(request, [0, 1, 2])
        signers = {
            p.party.party_id: client_sign(share, p, sign)
            for p, share in zip((b, c), shares, strict=True)
        }
        result = await host_loop(
            stack, signed(sign, coordinator), signers, list(stack.stored), tamper
        )
        assert result.signature

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_relay_forged_envelope_blames_nobody(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: the relay forges envelopes with party C's sender id (B's sealed bytes
    relabelled as C's) and delivers each before the genuine one. The enclave used
    to abort naming C; now it drops the forgeries and the ceremonies finish."""

    def make_tamper(b: str, c: str) -> Tamper:
        def forge(env: envelope_pb2.Envelope) -> list[envelope_pb2.Envelope]:
            return [claiming(env, c), env] if env.sender == b else [env]

        return forge

    run_keygen_and_sign(scheme, pki, kms_endpoint, tmp_path, make_tamper)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_relay_replayed_envelope_blames_nobody(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: the relay delivers every envelope of party C twice, and C's first
    envelope again before each later one. The enclave used to abort naming C;
    now replays are dropped and the ceremonies finish."""

    def make_tamper(b: str, c: str) -> Tamper:
        first: list[envelope_pb2.Envelope] = []

        def replay(env: envelope_pb2.Envelope) -> list[envelope_pb2.Envelope]:
            if env.sender != c:
                return [env]
            if not first:
                first.append(env)
                return [env, env]
            return [first[0], env, env]

        return replay

    run_keygen_and_sign(scheme, pki, kms_endpoint, tmp_path, make_tamper)


def test_relay_forged_envelope_instead_of_the_genuine_one_blames_nobody(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: the relay replaces C's envelopes with forgeries (B's bytes relabelled
    as C's). The ceremony cannot finish; the host gives up and no party is named."""
    coordinator = Ed25519PrivateKey.generate()
    b, c = ClientParty(), ClientParty()

    async def body(stack: Stack) -> None:
        c_id = c.party.party_id
        latest_from_b: list[envelope_pb2.Envelope] = []

        def replace(env: envelope_pb2.Envelope) -> list[envelope_pb2.Envelope]:
            if env.sender == b.party.party_id:
                latest_from_b[:] = [env]
                return [env]
            return [claiming(latest_from_b[0], c_id)] if latest_from_b else []

        request = keygen_request("bip340", [b.party, c.party, stack.party], 2)
        sessions = {p.party.party_id: client_keygen("bip340", p, request) for p in (b, c)}
        error = await expect_no_blame(
            host_loop(stack, signed(request, coordinator), sessions, (), replace, idle_s=1.0)
        )
        assert "ended the stream" in (error.details() or "")
        assert not stack.stored

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))
