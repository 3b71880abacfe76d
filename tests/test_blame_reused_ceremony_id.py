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
"""

from __future__ import annotations

import secrets
from collections import deque

from coincurve import PublicKeyXOnly

from shardkeep.lifecycle import channel_context, lifecycle_session_id
from shardkeep.v1 import ceremony_pb2
from tss import local
from tss.channel import Roster, StaticKey
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
