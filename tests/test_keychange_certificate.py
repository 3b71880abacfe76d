"""Key-change certificates (tss.certificate) in refresh and reshare: pending before agreement,
a complete certificate or nothing, and resuming from the pending share plus the certificate."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Sequence

import pytest

from tests.lifecycle_support import seeded
from tss import local
from tss.ceremony import Message, run_in_memory
from tss.certificate import PendingKeyChange, sign_certificate, verify_certificate
from tss.dkg.chilldkg import hostpubkey_gen
from tss.errors import FaultyParticipantError, InputError, ProtocolError
from tss.keyshare import KeyShare
from tss.reshare import PublicKeyring, Reshare, ReshareOutput, ResharePlan

SID = hashlib.sha256(b"keychange test").digest()
SCHEMES = ["bip340", "ecdsa-secp256k1"]


def host_keys(n: int) -> list[bytes]:
    return [hashlib.sha256(b"host key %d" % i).digest() for i in range(n)]


def certified_refresh(shares: Sequence[KeyShare]) -> tuple[ResharePlan, list[Reshare]]:
    keys = host_keys(len(shares))
    plan = ResharePlan.refresh(
        PublicKeyring.from_share(shares[0]), SID, [hostpubkey_gen(k) for k in keys]
    )
    rand = seeded(7)
    return plan, [Reshare(plan, s.party_id, s, rand, keys[s.party_id]) for s in shares]


Route = Callable[[Message, int], Message | None]  # what reaches this party (None: dropped)


def drive(ceremonies: Sequence[Reshare], route: Route | None = None) -> dict[int, Exception]:
    """Run in memory, confirming every pending save at once; ``route`` may drop messages.
    Returns the parties' failures by seat (the others either finished or wait)."""
    by_seat = {c.me: c for c in ceremonies}
    queue: deque[Message] = deque()
    failed: dict[int, Exception] = {}
    for c in ceremonies:
        queue += c.start()
    while True:
        for c in ceremonies:
            if c.awaiting_save and c.me not in failed:
                queue += c.confirm_saved()
        if not queue:
            return failed
        m = queue.popleft()
        targets = [s for s in by_seat if s != m.sender] if m.recipient is None else [m.recipient]
        for t in targets:
            delivered = m if route is None else route(m, t)
            if t in failed or delivered is None:
                continue
            try:
                queue += by_seat[t].receive(delivered)
            except ProtocolError as e:
                failed[t] = e


@pytest.mark.parametrize("scheme", SCHEMES)
def test_certified_refresh_ends_with_a_complete_certificate(scheme: str) -> None:
    shares = local.keygen(scheme, threshold=2, parties=3)
    plan, ceremonies = certified_refresh(shares)
    outputs: list[ReshareOutput] = run_in_memory(ceremonies)
    cert = outputs[0].certificate
    assert len(cert) == 64 * 3 and all(o.certificate == cert for o in outputs)
    verify_certificate(plan.hostpubkeys, SID, outputs[0].agreement, cert)
    new = [o.share for o in outputs]
    assert all(s is not None and s.epoch == 1 for s in new)
    assert local.sign([s for s in new if s is not None][:2], bytes(32))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_signature_is_withheld_until_the_pending_share_is_saved(scheme: str) -> None:
    shares = local.keygen(scheme, threshold=2, parties=2)
    _, (a, b) = certified_refresh(shares)
    last_round = a.rounds
    queue = deque(a.start() + b.start())
    while queue:
        m = queue.popleft()
        queue += (b if m.recipient == 1 or (m.recipient is None and m.sender == 0) else a).receive(
            m
        )
    # Both wait for their saves: no certificate signature has been sent.
    assert a.awaiting_save and b.awaiting_save and not a.done and not b.done
    pending = a.pending
    assert isinstance(pending, PendingKeyChange) and pending.share is not None
    assert pending.share.epoch == 1 and pending.position == 0
    released = a.confirm_saved()
    assert [(m.round, len(m.payload)) for m in released] == [(last_round, 64)]
    assert b.receive(released[0]) == []  # b buffers a's signature until its own save
    b_sigs = b.confirm_saved()
    assert b.done
    a.receive(b_sigs[0])
    assert a.done and a.result.certificate == b.result.certificate
    assert a.result.share == pending.share


def test_a_forged_certificate_signature_is_blamed_on_its_sender() -> None:
    shares = local.keygen("bip340", threshold=2, parties=2)
    _, ceremonies = certified_refresh(shares)
    last = ceremonies[0].rounds

    def forge(m: Message, _: int) -> Message:
        if m.round == last and m.sender == 1:
            return Message(m.round, m.sender, m.recipient, bytes(64))
        return m

    failed = drive(ceremonies, forge)
    assert isinstance(failed[0], FaultyParticipantError) and failed[0].participant == 1


def test_split_agreement_gives_no_certificate_to_anyone() -> None:
    """Attack: party 2 sends the right agreement hash to party 0 and a wrong one to party 1.
    Party 1 aborts and never signs, so no party holds a complete certificate: nobody can use
    the new shares, and the malicious party cannot choose which combination works."""
    shares = local.keygen("bip340", threshold=2, parties=3)
    _, ceremonies = certified_refresh(shares)

    def split(m: Message, target: int) -> Message:
        if m.round == 2 and m.sender == 2 and target == 1:
            return Message(m.round, m.sender, m.recipient, bytes(32))
        return m

    failed = drive(ceremonies, split)
    assert set(failed) == {1}
    assert not any(c.done for c in ceremonies)


def test_withheld_last_signature_resumes_from_pending_and_certificate() -> None:
    """Attack/fault: party 1's certificate signature reaches party 0 but is lost on its way to
    party 2. Party 0 finishes with the complete certificate; party 2 verifies that certificate
    against its own pending key change and so finishes later with the same share set."""
    shares = local.keygen("ecdsa-secp256k1", threshold=2, parties=3)
    _, ceremonies = certified_refresh(shares)
    last = ceremonies[0].rounds

    def lose(m: Message, target: int) -> Message | None:
        return None if (m.round == last and m.sender == 1 and target == 2) else m

    assert drive(ceremonies, lose) == {}
    done, stuck = ceremonies[0], ceremonies[2]
    assert done.done and not stuck.done
    pending = stuck.pending
    assert pending is not None and pending.share is not None
    pending.verify(done.result.certificate)  # raises unless it completes 2's key change
    new = [done.result.share, pending.share]
    assert local.sign([s for s in new if s is not None], bytes(32))
    with pytest.raises(FaultyParticipantError):
        pending.verify(done.result.certificate[:64] + bytes(128))


def test_plans_refuse_bad_host_keys_and_seats_need_theirs() -> None:
    shares = local.keygen("bip340", threshold=2, parties=2)
    keyring = PublicKeyring.from_share(shares[0])
    keys = [hostpubkey_gen(k) for k in host_keys(2)]
    with pytest.raises(InputError):
        ResharePlan.refresh(keyring, SID, keys[:1])
    with pytest.raises(InputError):
        ResharePlan.refresh(keyring, SID, [keys[0], keys[0]])
    plan = ResharePlan.refresh(keyring, SID, keys)
    with pytest.raises(InputError):
        Reshare(plan, 0, shares[0], seeded(1))
    with pytest.raises(InputError):
        Reshare(plan, 0, shares[0], seeded(1), host_keys(2)[1])


def test_certificate_signatures_bind_session_and_position() -> None:
    key = host_keys(1)[0]
    transcript = bytes(range(32))
    sig = sign_certificate(key, SID, transcript, 0, bytes(32))
    verify_certificate([hostpubkey_gen(key)], SID, transcript, sig)
    with pytest.raises(FaultyParticipantError):
        verify_certificate([hostpubkey_gen(key)], bytes(32), transcript, sig)
    with pytest.raises(InputError):
        verify_certificate([hostpubkey_gen(key)], SID, transcript, sig + sig)
