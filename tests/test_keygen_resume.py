"""A keygen party saves its share before it agrees, and finishes from a certificate later.

Pending before agreement: a party's CertEq signature (round 2) is the message
that can complete ChillDKG's certificate, so it leaves only after the runner
saved ``Keygen.pending``. Finishing from the certificate: a party that lost
the last messages (for ECDSA, the pairwise setup rounds) or crashed finishes
from the complete certificate another party holds; an ECDSA share finished
that way has no pair setup and signs once one is made on demand.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable

import pytest
from coincurve import PublicKey, PublicKeyXOnly

from tss import local
from tss.ceremony import Message, run_in_memory
from tss.certificate import PendingKeygen
from tss.dkg.chilldkg import hostpubkey_gen
from tss.errors import FaultyCoordinatorError, FaultyParticipantError, SessionStateError
from tss.keygen import Keygen, PairSetup
from tss.keyshare import KeyShare, Scheme

SCHEMES: tuple[Scheme, ...] = ("bip340", "ecdsa-secp256k1")
DIGEST = bytes.fromhex("5a" * 32)


def keygens(scheme: Scheme, n: int = 3, t: int = 2) -> list[Keygen]:
    seckeys = [secrets.token_bytes(32) for _ in range(n)]
    pubkeys = [hostpubkey_gen(k) for k in seckeys]
    return [
        Keygen(scheme, k, pubkeys, t, secrets.token_bytes, session_id=b"kg-resume") for k in seckeys
    ]


def route(parties: list[Keygen], drop: Callable[[Message, int], bool]) -> None:
    """Deliver every message except those ``drop(message, recipient)`` names; save at once."""
    queue: deque[tuple[Message, int]] = deque()

    def post(messages: list[Message]) -> None:
        for m in messages:
            targets = [m.recipient] if m.recipient is not None else range(len(parties))
            queue.extend((m, r) for r in targets if r != m.sender)

    for p in parties:
        post(p.start())
    while queue:
        message, recipient = queue.popleft()
        if drop(message, recipient):
            continue
        party = parties[recipient]
        post(party.receive(message))
        if party.awaiting_save:
            post(party.confirm_saved())


def certificate_of(party: Keygen) -> bytes:
    assert party.recovery_data is not None
    return party.recovery_data[-64 * len(party.parties) :]


def pair_up(a: KeyShare, b: KeyShare) -> tuple[KeyShare, KeyShare]:
    """Run a DKLs23 pair setup between two ECDSA shares (what the SDK does on demand)."""
    sid = secrets.token_bytes(16)
    ca = PairSetup(a, b.party_id, sid, secrets.token_bytes)
    cb = PairSetup(b, a.party_id, sid, secrets.token_bytes)
    sa, sb = run_in_memory([ca, cb])
    assert a.ecdsa is not None and b.ecdsa is not None
    return (
        KeyShare(**{**a.__dict__, "ecdsa": a.ecdsa.with_peer(sa)}),
        KeyShare(**{**b.__dict__, "ecdsa": b.ecdsa.with_peer(sb)}),
    )


def check_signs(scheme: Scheme, a: KeyShare, b: KeyShare) -> None:
    """Two shares of the keygen sign together, and the signature verifies under its key."""
    if scheme == "ecdsa-secp256k1":
        a, b = pair_up(a, b)
        signature = local.sign_recoverable([a, b], DIGEST)
        recovered = PublicKey.from_signature_and_message(
            signature.to_bytes65(), DIGEST, hasher=None
        )
        assert recovered.format() == a.public_key
    else:
        assert PublicKeyXOnly(a.public_key[1:]).verify(local.sign([a, b], DIGEST), DIGEST)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_keygen_withholds_its_certeq_signature_until_its_share_is_saved(scheme: Scheme) -> None:
    parties = keygens(scheme)
    round1 = [m for p in parties for m in p.start()]
    me = parties[0]
    out: list[Message] = []
    for m in round1:
        if m.sender != me.me:
            out += me.receive(m)
    assert out == [] and me.awaiting_save
    pending = me.pending
    assert isinstance(pending, PendingKeygen)
    assert (pending.epoch, pending.position, pending.session_id) == (0, 0, me.context)
    released = me.confirm_saved()
    assert [m.round for m in released] == [2] and not me.awaiting_save

    # The whole run: the saved share is the one each party ends with.
    fresh = keygens(scheme)
    shares = run_in_memory(fresh)
    for party, share in zip(fresh, shares, strict=True):
        saved = party.pending
        assert isinstance(saved, PendingKeygen)
        assert (saved.share.public_key, saved.share.public_shares, saved.share.chain_code) == (
            share.public_key,
            share.public_shares,
            share.chain_code,
        )
        assert saved.share.secret_share == share.secret_share
        saved.verify(certificate_of(party))


def test_ecdsa_keygen_party_that_lost_the_last_setup_message_finishes_from_the_certificate() -> (
    None
):
    """Fault: party 0 never gets party 2's round-4 (pairwise setup) message. The others
    finish; party 0 finishes from their certificate with no pair setup, and signs with
    party 1 once their pair setup is made."""
    parties = keygens("ecdsa-secp256k1")
    route(parties, lambda m, r: m.round == 4 and m.sender == 2 and r == 0)
    assert not parties[0].done and parties[1].done and parties[2].done
    share = parties[0].finish_from_certificate(certificate_of(parties[1]))
    assert share.public_key == parties[1].result.public_key
    assert share.ecdsa is not None and not share.ecdsa.held  # made on demand
    check_signs("ecdsa-secp256k1", share, parties[1].result)
    with pytest.raises(SessionStateError):
        parties[0].finish_from_certificate(certificate_of(parties[1]))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_keygen_party_that_lost_every_certeq_signature_finishes_from_the_certificate(
    scheme: Scheme,
) -> None:
    """Fault: party 0 gets no round-2 message (nor, for ECDSA, any later one)."""
    parties = keygens(scheme)
    # For ECDSA the setup rounds need party 0 too: only party 0's finish is checked.
    route(parties, lambda m, r: m.round >= 2 and r == 0)
    assert not parties[0].done
    # bip340: party 1 finished. ECDSA: nobody finished the setup without party 0, but
    # party 1 finalized the DKG, so it holds the complete certificate.
    assert parties[1].done == (scheme == "bip340")
    certificate = certificate_of(parties[1])
    bad = bytes(64) + certificate[64:]
    with pytest.raises(FaultyCoordinatorError):
        parties[0].finish_from_certificate(bad)
    share = parties[0].finish_from_certificate(certificate)  # the state survived the bad one
    other = parties[1].finish_from_certificate(certificate) if scheme != "bip340" else None
    check_signs(scheme, share, other or parties[1].result)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_crashed_keygen_party_finishes_from_its_saved_pending_share(scheme: Scheme) -> None:
    """Fault: party 0 saved its pending share, released its CertEq signature and crashed
    (its ceremony object is gone). The saved record and the certificate are enough."""
    parties = keygens(scheme)
    route(parties, lambda m, r: r == 0 and m.round >= 2)
    saved = parties[0].pending
    assert isinstance(saved, PendingKeygen)
    # The process is gone: from here on only what it saved is used.
    certificate = certificate_of(parties[1])
    with pytest.raises(FaultyParticipantError) as bad:
        saved.verify(certificate[:64] + bytes(64) + certificate[128:])
    assert bad.value.culprits == (1,)
    saved.verify(certificate)
    peer = parties[1].result if parties[1].done else parties[1].finish_from_certificate(certificate)
    check_signs(scheme, saved.share, peer)
