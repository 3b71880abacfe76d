"""Blame in key generation (ChillDKG with every party as its own coordinator).

Three attacks used to blame honest parties or no one:
- a party sends different round-1 messages to different peers: CertEq fails
  everywhere and each party named the first *other* signer whose certificate
  signature failed on its own transcript;
- a party sends one peer a bad CertEq signature: that peer aborts while the
  others finish, and the recovery data that lets it finish was thrown away;
- a party sends one peer a bad encrypted share: the victim got
  ``UnknownFaultyParticipantOrCoordinatorError`` with no culprit.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.nsm import SimulatedNitroPki
from enclave.service import CULPRITS_METADATA
from tests.enclave_harness import (
    ClientParty,
    EquivocatingSession,
    Stack,
    Tolerant,
    client_keygen,
    devkms,
    host_loop,
    keygen_request,
    run,
    signed,
    with_enclave,
)
from tss.ceremony import Message
from tss.dkg import chilldkg
from tss.dkg.chilldkg import hostpubkey_gen
from tss.equivocation import EquivocationError
from tss.errors import ProtocolError, UnknownFaultyParticipantOrCoordinatorError
from tss.group import group_of
from tss.keygen import ROUND1, Keygen, round1_hash
from tss.keyshare import Scheme

# These tests run for both groups ChillDKG shares keys in.
ONE_PROCESS_SCHEMES = pytest.mark.parametrize("scheme", ["bip340", "ed25519"])


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


def enclave_blames(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(CULPRITS_METADATA)


def test_keygen_round1_equivocation_blames_equivocator_not_honest_parties(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: party M (a client) sends the enclave one validly signed round-1 message
    and honest client B another. Both name M, and only M."""
    coordinator = Ed25519PrivateKey.generate()
    b, m = ClientParty(), ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request("bip340", [b.party, m.party, stack.party], 2)
        honest_b = Tolerant(client_keygen("bip340", b, request))
        malicious = EquivocatingSession(
            lambda: client_keygen("bip340", m, request), stack.party.party_id
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await host_loop(
                stack,
                signed(request, coordinator),
                {b.party.party_id: honest_b, m.party.party_id: malicious},
            )
        assert info.value.code() == grpc.StatusCode.ABORTED, info.value.details()
        assert enclave_blames(info.value) == m.party.party_id
        assert isinstance(honest_b.error, EquivocationError)
        assert honest_b.error.culprits == (1,) and honest_b.error.equivocators
        first, second = honest_b.error.equivocators[1]
        context = honest_b.session.ceremony.context  # type: ignore[attr-defined]
        assert first.value != second.value
        assert all(ROUND1.valid(bytes(m.party.host_pubkey), context, 1, s) for s in (first, second))
        # Saved as pending before its CertEq signature left; no result, so the host aborts it.
        assert [s.epoch for s in stack.stored] == [0] and not stack.stored[0].certificate

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def bad_share_to(victim: int) -> type[Keygen]:
    """A ``Keygen`` whose round-1 message to ``victim`` carries a wrong encrypted share,
    validly signed (a malicious party signs what it sends): off in its lowest bit,
    so it still decodes as a scalar (big-endian on secp256k1, little-endian on
    edwards25519)."""

    class BadShare(Keygen):
        def _start(self) -> list[Message]:
            (genuine,) = super()._start()
            n = len(self.parties)
            pmsg1 = bytearray(genuine.payload[:-64])
            low = 0 if self.scheme == "ed25519" else 31
            pmsg1[len(pmsg1) - 32 * (n - victim) + low] ^= 1  # the share encrypted for victim
            signature = ROUND1.sign(
                self._hostseckey, self.context, self.me, round1_hash(bytes(pmsg1)), bytes(32)
            ).signature
            return [Message(1, self.me, victim, bytes(pmsg1) + signature)] + [
                Message(1, self.me, p, genuine.payload)
                for p in self.parties
                if p not in (self.me, victim)
            ]

    return BadShare


@ONE_PROCESS_SCHEMES
def test_keygen_bad_encrypted_share_names_its_sender(
    scheme: Scheme, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: party M encrypts a wrong share to the enclave. The enclave runs ChillDKG's
    investigation on the round-1 messages it holds and names M (it used to name no one);
    in either group ChillDKG shares a key in."""
    coordinator = Ed25519PrivateKey.generate()
    b, m = ClientParty(), ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request(scheme, [b.party, m.party, stack.party], 2)
        sessions = {
            b.party.party_id: Tolerant(client_keygen(scheme, b, request)),
            m.party.party_id: Tolerant(client_keygen(scheme, m, request, bad_share_to(2))),
        }
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await host_loop(stack, signed(request, coordinator), sessions, idle_s=2.0)
        assert info.value.code() == grpc.StatusCode.ABORTED, info.value.details()
        assert enclave_blames(info.value) == m.party.party_id
        assert "UnknownFaulty" not in info.value.details()

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def bad_certeq_to(victim: int) -> type[Keygen]:
    """A ``Keygen`` honest in round 1 whose CertEq signature to ``victim`` is zeroed."""

    class BadCertEq(Keygen):
        def _hold(self, pending: Any, messages: list[Message]) -> list[Message]:
            (broadcast,) = messages  # round 2, released once the pending share is saved
            return super()._hold(
                pending,
                [Message(2, self.me, victim, bytes(64) + broadcast.payload[64:])]
                + [
                    Message(2, self.me, p, broadcast.payload)
                    for p in self.parties
                    if p not in (self.me, victim)
                ],
            )

    return BadCertEq


def test_keygen_bad_certeq_to_one_party_names_the_signer_and_the_others_finish(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: party M is honest in round 1, then sends the enclave a bad CertEq
    signature and honest client B a good one. The enclave names M (transcripts
    agree, so the signature is M's fault), never B; B finishes and keeps
    ChillDKG's recovery data, whose complete certificate lets the enclave's side
    finish later (``Keygen.finish_from_certificate``)."""
    coordinator = Ed25519PrivateKey.generate()
    b, m = ClientParty(), ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request("bip340", [b.party, m.party, stack.party], 2)
        honest_b = Tolerant(client_keygen("bip340", b, request))
        sessions = {
            b.party.party_id: honest_b,
            m.party.party_id: Tolerant(client_keygen("bip340", m, request, bad_certeq_to(2))),
        }
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await host_loop(stack, signed(request, coordinator), sessions, idle_s=2.0)
        assert info.value.code() == grpc.StatusCode.ABORTED, info.value.details()
        assert enclave_blames(info.value) == m.party.party_id
        assert honest_b.error is None and honest_b.done
        keygen = honest_b.session.ceremony
        assert isinstance(keygen, Keygen) and keygen.recovery_data is not None
        # The enclave saved its share as pending before it signed: B's certificate
        # could finish it; without a result the host aborts the keygen instead.
        assert [s.epoch for s in stack.stored] == [0] and not stack.stored[0].certificate

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


### In one process: the other rows of the keygen blame table


def parties(
    scheme: Scheme = "bip340", n: int = 3, kind: dict[int, type[Keygen]] | None = None
) -> list[Keygen]:
    seckeys = [secrets.token_bytes(32) for _ in range(n)]
    pubkeys = [hostpubkey_gen(k) for k in seckeys]
    kinds = kind or {}
    return [
        kinds.get(i, Keygen)(scheme, k, pubkeys, 2, secrets.token_bytes, session_id=b"kg-1")
        for i, k in enumerate(seckeys)
    ]


def route(ceremonies: list[Keygen], tamper: Any = None) -> dict[int, ProtocolError | None]:
    """Run every party; ``tamper(message, recipient)`` rewrites party 2's messages."""
    queue = [
        (m, r)
        for c in ceremonies
        for m in c.start()
        for r in ([m.recipient] if m.recipient is not None else range(len(ceremonies)))
        if r != c.me
    ]
    verdicts: dict[int, ProtocolError | None] = dict.fromkeys(range(len(ceremonies)))
    while queue:
        message, recipient = queue.pop(0)
        if tamper is not None and message.sender == 2:
            message = tamper(message, recipient)
        if verdicts[recipient] is not None:
            continue
        try:
            out = ceremonies[recipient].receive(message)
            if ceremonies[recipient].awaiting_save:  # saved at once (test memory)
                out += ceremonies[recipient].confirm_saved()
        except ProtocolError as e:
            verdicts[recipient] = e
            continue
        queue += [(m, r) for m in out for r in range(len(ceremonies)) if r != recipient]
    del verdicts[2]
    return verdicts


@ONE_PROCESS_SCHEMES
def test_a_bad_share_in_one_process_is_traced_not_left_unknown(scheme: Scheme) -> None:
    ceremonies = parties(scheme, kind={2: bad_share_to(0)})
    verdicts = route(ceremonies)
    error = verdicts[0]
    assert error is not None and error.culprits == (2,)
    assert not isinstance(error, UnknownFaultyParticipantOrCoordinatorError)


@ONE_PROCESS_SCHEMES
def test_bad_certeq_to_one_party_blames_the_signer_and_the_victim_finishes_from_a_certificate(
    scheme: Scheme,
) -> None:
    """Attack: party 2 sends party 0 a bad CertEq signature and party 1 a good one.
    Party 0 names party 2; party 1 finishes; with party 1's complete certificate
    (ChillDKG's recovery data) party 0 finishes too, with the same key."""
    ceremonies = parties(scheme)

    def bad_certeq(message: Message, recipient: int) -> Message:
        if message.round == 2 and recipient == 0:
            return Message(2, 2, None, bytes(64) + message.payload[64:])
        return message

    verdicts = route(ceremonies, bad_certeq)
    assert verdicts[0] is not None and verdicts[0].culprits == (2,)
    assert verdicts[1] is None and ceremonies[1].done
    recovery = ceremonies[1].recovery_data
    assert recovery is not None
    certificate = recovery[-64 * 3 :]
    share = ceremonies[0].finish_from_certificate(certificate)
    assert share.public_key == ceremonies[1].result.public_key
    assert ceremonies[0].recovery_data == recovery
    # Recovery data alone also restores it (ChillDKG participant_recover).
    group = group_of(scheme)
    output, _ = chilldkg.participant_recover(ceremonies[0]._hostseckey, recovery, group)
    assert output.secshare is not None
    assert group.decode_scalar(output.secshare) == share.secret_share


@ONE_PROCESS_SCHEMES
def test_an_echo_with_a_made_up_round1_hash_is_blamed_on_the_echoer(scheme: Scheme) -> None:
    ceremonies = parties(scheme)

    def forge(message: Message, recipient: int) -> Message:
        if message.round == 2 and recipient == 0:
            payload = bytearray(message.payload)
            payload[64 + 96 * 1] ^= 1  # party 1's round-1 hash in party 2's echo
            return Message(2, 2, None, bytes(payload))
        return message

    verdicts = route(ceremonies, forge)
    error = verdicts[0]
    assert isinstance(error, EquivocationError)
    assert error.culprits == (2,) and error.forgers == (2,)
    assert verdicts[1] is None


@ONE_PROCESS_SCHEMES
def test_an_unsigned_or_malformed_round1_message_is_blamed_on_its_sender(scheme: Scheme) -> None:
    spoilers = (
        lambda payload: payload[:-1] + bytes([payload[-1] ^ 1]),  # a bad signature
        lambda payload: payload[:-1],  # the wrong length
    )
    for spoiler in spoilers:

        def spoil(message: Message, recipient: int, spoiler: Any = spoiler) -> Message:
            if message.round == 1 and recipient == 0:
                return Message(1, 2, None, spoiler(message.payload))
            return message

        verdicts = route(parties(scheme), spoil)
        assert verdicts[0] is not None and verdicts[0].culprits == (2,)
        assert verdicts[1] is None
