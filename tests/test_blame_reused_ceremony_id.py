"""Attack: a reused ceremony id lets a relay replay an honest signer's old words as equivocation.

Signed statements (a FROST signer's round-1 nonce, keygen's round-1 hashes) are
evidence only within one session. If a session could repeat, a relay or a
coordinator that sends a new request with an old room and ceremony id could
replay an honest signer's envelope from the earlier run to one peer while the
others get its new one: the channel opens the old envelope (same ids, same
static keys), its statement is validly signed for the same session id, and
the peers' echoes then show two signed nonces of one signer, which names it
as an equivocator. The enclave's single-use request challenge is bound into
every session id and every channel (``shardkeep.lifecycle``), so a replayed
request is a new session whose channels drop the old envelopes.

Checked at the protocol level (three signers in memory) and against the
enclave service (``tests.enclave_harness``): a host that sends a second
signature request with the first one's room and ceremony ids replays an
honest client's round-1 envelope of the first run to the enclave, and the
enclave's of the first run to the other client. Both drop it, the signature
completes and nobody is named; with the challenge taken out of the session id
and the channels, the same replay makes every party name the honest client
and the honest enclave.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from coincurve import PublicKeyXOnly
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import VerifyKey
from structlog.testing import capture_logs

from enclave import ceremonies
from enclave.nsm import SimulatedNitroPki
from enclave.service import CULPRITS_METADATA
from shardkeep import lifecycle
from shardkeep.lifecycle import channel_context, lifecycle_session_id
from shardkeep.v1 import ceremony_pb2, envelope_pb2
from tests import enclave_harness
from tests.enclave_harness import (
    ClientParty,
    Stack,
    Tolerant,
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
from tss import local
from tss.channel import ChannelEnvelope, Roster, StaticKey
from tss.equivocation import EquivocationError
from tss.errors import ProtocolError
from tss.keyshare import KeyShare
from tss.session import Outbound, SecureSession
from tss.signing import NO_OPTIONS, signing_ceremony, throwaway_host_keys

DIGEST = bytes.fromhex("3c" * 32)
VICTIM, TARGET = 0, 2  # A's old round-1 envelope is replayed to C


def request(challenge: bytes) -> ceremony_pb2.CeremonyRequest:
    """A signing request with a fixed room and ceremony id (the reused ones)."""
    return ceremony_pb2.CeremonyRequest(
        ceremony_id="sign-reused",
        room_id="room-reused",
        kind=ceremony_pb2.CEREMONY_KIND_SIGN,
        scheme=ceremony_pb2.SCHEME_BIP340,
        wallet_id="wallet-1",
        digest=DIGEST,
        signers=[0, 1, 2],
        challenge=challenge,
    )


class Parties:
    """Three signers of one 3-of-3 BIP-340 keyring, their channel and host keys."""

    def __init__(self) -> None:
        self.shares: list[KeyShare] = local.keygen("bip340", threshold=3, parties=3)
        self.keys = [StaticKey.generate(secrets.token_bytes(32)) for _ in range(3)]
        self.roster = Roster.from_parties([(k.party_id, k.public_key) for k in self.keys])
        self.host_keys = throwaway_host_keys(3, secrets.token_bytes)

    def sessions(self, req: ceremony_pb2.CeremonyRequest) -> list[SecureSession[bytes]]:
        """Every signer's session, built as the SDK and the enclave build theirs."""
        return [self._session(share, req) for share in self.shares]

    def _session(self, share: KeyShare, req: ceremony_pb2.CeremonyRequest) -> SecureSession[bytes]:
        signing = signing_ceremony(
            share, [0, 1, 2], DIGEST, lifecycle_session_id(req), secrets.token_bytes,
            NO_OPTIONS, self.host_keys[share.party_id],
        )  # fmt: skip
        return SecureSession(
            signing, self.keys[share.party_id], self.roster, req.room_id, req.ceremony_id,
            secrets.token_bytes, context=channel_context(req),
        )  # fmt: skip


def relay(
    sessions: list[SecureSession[bytes]], replay: bytes | None = None
) -> tuple[dict[int, ProtocolError], list[tuple[int, Outbound]]]:
    """Carry every envelope in order; with ``replay``, the relay first delivers that old
    envelope to C in place of A's round-1 one (the genuine one follows it).

    Returns each party's failure and every (sender, envelope) carried.
    """
    failures: dict[int, ProtocolError] = {}
    sent: list[tuple[int, Outbound]] = []
    queue: deque[tuple[int, Outbound]] = deque()
    for i, s in enumerate(sessions):
        queue.extend((i, o) for o in s.start())
    while queue:
        sender, out = queue.popleft()
        sent.append((sender, out))
        envelopes = [out.envelope]
        if replay is not None and (sender, out.round, out.recipient) == (VICTIM, 1, TARGET):
            envelopes = [replay, out.envelope]
        for envelope in envelopes:
            if out.recipient in failures:
                continue
            try:
                replies = sessions[out.recipient].receive(envelope)
            except ProtocolError as e:
                failures[out.recipient] = e
                continue
            queue.extend((out.recipient, r) for r in replies)
    return failures, sent


def old_round1_to_target(parties: Parties, req: ceremony_pb2.CeremonyRequest) -> bytes:
    """Run a first, clean session; keep A's round-1 envelope to C, as the relay does."""
    failures, sent = relay(parties.sessions(req))
    assert not failures
    (envelope,) = [
        o.envelope for sender, o in sent if (sender, o.round, o.recipient) == (VICTIM, 1, TARGET)
    ]
    return envelope


def test_reused_ceremony_id_replay_cannot_frame_an_honest_signer_as_equivocator() -> None:
    parties = Parties()
    first = request(secrets.token_bytes(40))
    old = old_round1_to_target(parties, first)

    # Without fresh binding (the same challenge, as if the request could repeat) the
    # attack works: C takes A's old nonce, B its new one, and both name honest A.
    repeated = parties.sessions(request(bytes(first.challenge)))
    failures, _ = relay(repeated, replay=old)
    assert failures and all(isinstance(e, EquivocationError) for e in failures.values())
    assert {c for e in failures.values() for c in e.culprits} == {VICTIM}

    # The service: the replayed ids come with the enclave's new challenge. C's channel
    # drops A's old envelope (it does not authenticate in this session), takes the
    # genuine one, and the signature completes; nobody is named.
    fresh = parties.sessions(request(secrets.token_bytes(40)))
    failures, _ = relay(fresh, replay=old)
    assert not failures
    assert fresh[TARGET].dropped["authentication"] == 1
    signatures = {s.result for s in fresh}
    assert len(signatures) == 1
    assert PublicKeyXOnly(parties.shares[0].public_key[1:]).verify(signatures.pop(), DIGEST)


### Against the enclave service


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


class ReplayingClient:
    """A client session whose first envelope from ``sender`` is preceded by ``replay``
    (the relay's doing); with no ``replay`` it records that first envelope instead."""

    def __init__(self, session: Any, sender: str, replay: bytes | None = None) -> None:
        self.session, self.sender, self.replay = session, sender, replay
        self.first: bytes | None = None

    @property
    def done(self) -> bool:
        return bool(self.session.done)

    def start(self) -> Any:
        return self.session.start()

    def receive(self, envelope: bytes) -> Any:
        sender = ChannelEnvelope.from_bytes(envelope).header.sender
        if self.first is not None or sender != self.sender:
            return self.session.receive(envelope)
        self.first = envelope
        replies = [] if self.replay is None else list(self.session.receive(self.replay))
        return replies + list(self.session.receive(envelope))


def replaying_host(victim: str, replay: envelope_pb2.Envelope | None, seen: list[Any]) -> Any:
    """The host's tamper on envelopes into the enclave: before the victim's first one,
    deliver ``replay``; record the victim's first envelope in ``seen``."""

    def tamper(env: envelope_pb2.Envelope) -> list[envelope_pb2.Envelope]:
        if env.sender != victim or seen:
            return [env]
        kept = envelope_pb2.Envelope()
        kept.CopyFrom(env)
        seen.append(kept)
        return [env] if replay is None else [replay, env]

    return tamper


@dataclass
class Replayed:
    """What the second signature of ``reused_ids_replay`` left."""

    framed: set[str]  # the party ids of B and the enclave, whose old envelopes are replayed
    b_session: Tolerant
    c_session: Tolerant  # the client the enclave's old envelope is replayed to
    public_key: bytes
    result: ceremony_pb2.CeremonyResult | None = None
    failure: grpc.aio.AioRpcError | None = None  # the enclave's


async def reused_ids_replay(stack: Stack, scheme: str, coordinator: Ed25519PrivateKey) -> Replayed:
    """Keygen (clients B and C, the enclave, 2-of-3) and a first signature by all three;
    then a second request with the first one's room and ceremony ids, over which B's
    and the enclave's first-run round-1 envelopes are replayed to the enclave and to C.

    Returns what the second signature left (an enclave failure leaves no result).
    """
    b, c = ClientParty(), ClientParty()
    keygen = keygen_request(scheme, [b.party, c.party, stack.party], 2)
    sessions = {p.party.party_id: client_keygen(scheme, p, keygen) for p in (b, c)}
    await host_loop(stack, signed(keygen, coordinator), sessions)
    shares = [s.result for s in sessions.values()]
    enclave_id, victim = stack.party.party_id, b.party.party_id

    first = sign_request(keygen, [0, 1, 2])
    old_to_enclave: list[envelope_pb2.Envelope] = []
    recorder = ReplayingClient(client_sign(shares[1], c, first), enclave_id)
    signers = {victim: client_sign(shares[0], b, first), c.party.party_id: recorder}
    tamper = replaying_host(victim, None, old_to_enclave)
    await host_loop(stack, signed(first, coordinator), signers, list(stack.stored), tamper)
    assert old_to_enclave and recorder.first is not None

    again = ceremony_pb2.CeremonyRequest()
    again.CopyFrom(first)  # the same room and ceremony ids, a new challenge (``signed``)
    replayed = Replayed(
        {victim, enclave_id}, Tolerant(client_sign(shares[0], b, again)),
        Tolerant(client_sign(shares[1], c, again)), shares[0].public_key,
    )  # fmt: skip
    signers = {
        victim: replayed.b_session,
        c.party.party_id: ReplayingClient(replayed.c_session, enclave_id, recorder.first),
    }
    tamper = replaying_host(victim, old_to_enclave[0], [])
    request = signed(again, coordinator)
    assert (again.room_id, again.ceremony_id) == (first.room_id, first.ceremony_id)
    try:
        replayed.result = await host_loop(stack, request, signers, list(stack.stored), tamper)
    except grpc.aio.AioRpcError as e:
        replayed.failure = e
    return replayed


def replay_against_the_enclave(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> Replayed:
    coordinator = Ed25519PrivateKey.generate()
    replayed: Replayed = run(
        with_enclave(
            pki, kms_endpoint, tmp_path, coordinator,
            lambda stack: reused_ids_replay(stack, scheme, coordinator),
        )
    )  # fmt: skip
    return replayed


@pytest.mark.parametrize("scheme", ["bip340", "ed25519"])
def test_service_reused_ceremony_id_replay_is_dropped_and_names_nobody(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        replayed = replay_against_the_enclave(scheme, pki, kms_endpoint, tmp_path)
    assert replayed.failure is None, replayed.failure.details() if replayed.failure else ""
    # The enclave dropped B's old envelope and C's channel the enclave's: an
    # accepted one would have named its sender an equivocator.
    drops = [e for e in logs if e["event"] == "envelope dropped"]
    assert [e["reason"] for e in drops] == ["authentication"], drops
    assert replayed.c_session.session.dropped["authentication"] == 1
    assert replayed.b_session.error is None and replayed.c_session.error is None
    assert replayed.result is not None
    message = enclave_harness.DIGEST
    if scheme == "ed25519":
        VerifyKey(replayed.public_key).verify(message, replayed.result.signature)
    else:
        assert PublicKeyXOnly(replayed.public_key[1:]).verify(replayed.result.signature, message)


def test_service_without_the_challenge_bound_the_replay_names_the_honest_client(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control: session ids and channels without the challenge, in the enclave and
    # the clients alike, as if a request could repeat: the same replay frames B and
    # the enclave, whose old and new round-1 nonces the others now hold.
    def unbound_session_id(request: ceremony_pb2.CeremonyRequest) -> bytes:
        without = ceremony_pb2.CeremonyRequest()
        without.CopyFrom(request)
        without.challenge = b""
        return lifecycle_session_id(without)

    for module in (ceremonies, enclave_harness, lifecycle):
        monkeypatch.setattr(module, "lifecycle_session_id", unbound_session_id)
        monkeypatch.setattr(module, "channel_context", lambda request: b"")
    replayed = replay_against_the_enclave("bip340", pki, kms_endpoint, tmp_path)
    assert replayed.failure is not None and replayed.result is None
    # The enclave and both clients name honest B and the honest enclave (seats 0 and 2).
    culprits = dict(replayed.failure.trailing_metadata() or ()).get(CULPRITS_METADATA, "")
    assert set(culprits.split(",")) == replayed.framed
    for client in (replayed.b_session, replayed.c_session):
        assert isinstance(client.error, EquivocationError)
        assert set(client.error.culprits) == {0, 2}
