"""Reshare (tss.reshare, tss.local.reshare): t-of-n -> t'-of-n' with the same public key."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import pytest
from coincurve import PublicKeyXOnly

from tests.lifecycle_support import bip340_keyring, join_dealing, run, seeded, split_dealing
from tss import local
from tss.ceremony import Message, run_in_memory
from tss.channel import Roster, StaticKey
from tss.curve import G, N, Point, ecdsa_verify
from tss.dkg.chilldkg import hostpubkey_gen
from tss.ecdsa.setup import key_id
from tss.errors import FaultyParticipantError, InputError, ProtocolError
from tss.keyshare import KeyShare, Scheme
from tss.reshare import PublicKeyring, Reshare, ReshareOutput, ResharePlan, deal, holder_seats
from tss.session import SecureSession
from tss.shamir import interpolate_at_zero
from tss.signing import Bip340Signing, throwaway_host_keys

KEY = 0x1F2E3D4C5B6A79880102030405060708090A0B0C0D0E0F101112131415161718
DIGEST = bytes(range(32))
SID = bytes(32)


def _bip340_verifies(share: KeyShare, sig: bytes) -> bool:
    return bool(PublicKeyXOnly(share.public_key[1:]).verify(sig, DIGEST))


def _plan(
    old: list[KeyShare], dealers: tuple[int, ...], holders: tuple[int, ...], t2: int
) -> ResharePlan:
    return ResharePlan(SID, PublicKeyring.from_share(old[0]), dealers, holders, t2)


def _ceremonies(plan: ResharePlan, old: list[KeyShare], seed: int = 1) -> list[Reshare]:
    rand = seeded(seed)
    return [
        Reshare(plan, seat, old[seat] if seat in plan.dealers else None, rand)
        for seat in plan.seats
    ]


### The transitions the issue names, through tss.local


@pytest.mark.parametrize(
    ("t", "n", "t2", "n2"),
    [(2, 2, 2, 3), (2, 3, 2, 2), (2, 2, 3, 5), (3, 5, 2, 3), (2, 3, 3, 5), (1, 1, 2, 2)],
    ids=lambda v: str(v),
)
def test_reshare_keeps_the_key_and_every_new_quorum_signs(t: int, n: int, t2: int, n2: int) -> None:
    old = bip340_keyring(KEY, t, n)
    new = local.reshare(old[n - t :], threshold=t2, parties=n2)  # the last t parties deal
    assert [s.party_id for s in new] == list(range(n2))
    assert {(s.public_key, s.chain_code, s.threshold, s.epoch) for s in new} == {
        (old[0].public_key, old[0].chain_code, t2, 1)
    }
    assert len({s.public_shares for s in new}) == 1
    for quorum in itertools.combinations(new, t2):
        assert _bip340_verifies(new[0], local.sign(list(quorum), DIGEST))
        assert local.export_key(list(quorum)) == KEY.to_bytes(32, "big")
    if t2 > 1:  # t' - 1 new shares say nothing about the key
        assert interpolate_at_zero({s.party_id: s.secret_share for s in new[: t2 - 1]}) != KEY
    for share in new:
        assert KeyShare.from_bytes(share.to_bytes()) == share


def test_reshare_after_a_real_dkg() -> None:
    old = local.keygen("bip340", threshold=2, parties=3)
    new = local.reshare(old[:2], threshold=3, parties=4)
    assert new[0].public_key == old[0].public_key
    assert _bip340_verifies(new[0], local.sign(new[1:], DIGEST))


@pytest.mark.parametrize(("t", "n", "t2", "n2"), [(2, 2, 2, 3), (2, 3, 2, 2)], ids=str)
def test_ecdsa_reshare_makes_fresh_setups_for_every_pair(t: int, n: int, t2: int, n2: int) -> None:
    old = local.import_key("ecdsa-secp256k1", KEY.to_bytes(32, "big"), threshold=t, parties=n)
    new = local.reshare(old[:t], threshold=t2, parties=n2)
    for share in new:
        setup = share.ecdsa
        assert setup is not None and setup.key_id == key_id(share) != key_id(old[0])
        for peer in range(n2):
            if peer != share.party_id:
                setup.peer(peer)  # present and not burned
        again = KeyShare.from_bytes(share.to_bytes())
        assert again == share and again.ecdsa is not None
    for quorum in itertools.combinations(new, t2):
        sig = local.sign(list(quorum), DIGEST)
        assert ecdsa_verify(DIGEST, old[0].public_key, sig)
    assert local.export_key(new[:t2]) == KEY.to_bytes(32, "big")


### Seats: dealers keep their old ids, continuing parties play both roles


def test_continuing_parties_deal_and_receive_at_one_seat() -> None:
    old = bip340_keyring(KEY, 2, 3)
    # Old 0 and 1 deal and stay (new ids 0 and 1); old 2 leaves; seat 5 joins as new party 2.
    plan = _plan(old, (0, 1), (0, 1, 5), 2)
    assert plan.seats == (0, 1, 5)
    outputs = run(_ceremonies(plan, old))
    new = [o.share for o in outputs]
    assert all(s is not None for s in new)
    assert [s.party_id for s in new if s] == [0, 1, 2]
    assert len({o.keyring for o in outputs}) == 1 and len({o.agreement for o in outputs}) == 1
    shares = [s for s in new if s]
    assert local.export_key(shares[1:]) == KEY.to_bytes(32, "big")
    assert all(s.secret_share != o.secret_share for s, o in zip(shares, old, strict=False))


def test_holder_seats_follow_party_identities() -> None:
    # Old 2-of-3: "server" (0) and "laptop" (2) deal; "server" stays, two newcomers join.
    seats = holder_seats(3, {0: "server", 2: "laptop"}, ["phone", "server", "backup"])
    assert seats == (3, 0, 5)
    with pytest.raises(InputError):
        holder_seats(3, {0: "server"}, ["phone", "phone"])


def test_a_leaving_dealer_gets_the_new_keyring_but_no_share() -> None:
    old = bip340_keyring(KEY, 2, 3)
    plan = _plan(old, (1, 2), (0, 1), 2)  # old 2 deals and leaves; old 0 receives only
    outputs = run(_ceremonies(plan, old))
    by_seat = dict(zip(plan.seats, outputs, strict=True))
    assert by_seat[2].share is None and by_seat[2].keyring == by_seat[0].keyring
    assert by_seat[0].share is not None and by_seat[1].share is not None


def test_a_leaving_dealer_of_a_certified_ecdsa_reshare_finishes() -> None:
    """The dealer that leaves takes no part in the pairwise setup rounds, then signs
    the certificate like everyone (it used to fail with "round 3 out of order")."""
    old = local.keygen("ecdsa-secp256k1", threshold=2, parties=3)
    seckeys = [bytes([i + 1]) * 32 for i in range(3)]
    plan = ResharePlan(
        SID, PublicKeyring.from_share(old[0]), (0, 1), (1, 2), 2,
        hostpubkeys=tuple(hostpubkey_gen(k) for k in seckeys),
    )  # fmt: skip
    rand = seeded(5)
    outputs = run_in_memory(
        [
            Reshare(plan, s, old[s] if s in plan.dealers else None, rand, hostseckey=seckeys[s])
            for s in plan.seats
        ]
    )
    assert outputs[0].share is None and outputs[1].share is not None
    assert len({o.certificate for o in outputs}) == 1 and outputs[0].certificate


def test_a_removed_party_cannot_sign_with_the_new_set() -> None:
    old = bip340_keyring(KEY, 2, 3)
    new = local.reshare(old[:2], threshold=2, parties=2)
    removed = old[2]
    with pytest.raises(InputError):  # the consistency checks refuse the mix
        local.sign([new[0], removed], DIGEST)
    # Mathematically: the removed share is on the old polynomial, not the new one.
    assert interpolate_at_zero({0: new[0].secret_share, 2: removed.secret_share}) != KEY
    with pytest.raises(InputError):  # nor can it pose as a member of the new keyring
        replace(new[1], secret_share=removed.secret_share)
    # And when an old-epoch share signs beside a new one anyway (bypassing the
    # checks of tss.local), the signature fails and the ceremony aborts.
    rand = seeded(3)
    # Host keys for parties 0 and 1 in both keyrings' sizes, so that nonces verify.
    keys = throwaway_host_keys(len(old[1].public_shares), rand)
    new_keys = replace(keys[0], pubkeys=keys[0].pubkeys[: len(new[0].public_shares)])
    with pytest.raises(ProtocolError):
        run(
            [
                Bip340Signing(new[0], [0, 1], DIGEST, SID, rand, host_keys=new_keys),
                Bip340Signing(old[1], [0, 1], DIGEST, SID, rand, host_keys=keys[1]),
            ]
        )


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_reshare_over_sealed_channels(scheme: Scheme) -> None:
    # The service's path: every Message sealed between the seats' static keys.
    old = (
        bip340_keyring(KEY, 2, 2)
        if scheme == "bip340"
        else local.import_key(scheme, KEY.to_bytes(32, "big"), threshold=2, parties=2)
    )
    plan = _plan(old, (0, 1), (1, 7, 9), 2)  # old 0 leaves, old 1 stays as new 0
    rand = seeded(21)
    keys = {seat: StaticKey.generate(rand(32)) for seat in plan.seats}
    roster = Roster.from_parties(
        [(keys[s].party_id, keys[s].public_key) for s in plan.seats], plan.seats
    )
    sessions = {
        seat: SecureSession(ceremony, keys[seat], roster, "room-7", "reshare-1", rand)
        for seat, ceremony in zip(plan.seats, _ceremonies(plan, old), strict=True)
    }
    queue = [out for s in sessions.values() for out in s.start()]
    while queue:
        out = queue.pop(0)
        queue += sessions[out.recipient].receive(out.envelope)
    new = [sessions[seat].result.share for seat in plan.holders]
    assert sessions[0].result.share is None
    shares = [s for s in new if s is not None]
    assert [s.party_id for s in shares] == [0, 1, 2]
    sig = local.sign(shares[1:], DIGEST)
    if scheme == "bip340":
        assert _bip340_verifies(shares[0], sig)
    else:
        assert ecdsa_verify(DIGEST, old[0].public_key, sig)


### Adversarial dealers


def _tamper_dealing(
    dealer: int, recipients: set[int], change: Callable[[Message], bytes]
) -> Callable[[Message], bytes]:
    """Rewrite ``dealer``'s round-1 payloads to ``recipients`` (the dealer cheats)."""

    def tamper(m: Message) -> bytes:
        if m.round == 1 and m.sender == dealer and m.recipient in recipients:
            return change(m)
        return m.payload

    return tamper


def test_a_dealer_sending_an_inconsistent_subshare_is_blamed() -> None:
    old = bip340_keyring(KEY, 2, 3)
    plan = _plan(old, (0, 1), (3, 4, 5), 2)

    def bump(m: Message) -> bytes:
        points, chain, sub = split_dealing(m.payload, 2)
        assert sub is not None
        return join_dealing(points, chain, (sub + 1) % N)

    with pytest.raises(FaultyParticipantError) as e:
        run(_ceremonies(plan, old), _tamper_dealing(1, {4}, bump))
    assert e.value.participant == 1 and e.value.culprits == (1,)


def test_two_dealers_with_bad_subshares_are_both_blamed() -> None:
    old = bip340_keyring(KEY, 3, 5)
    plan = _plan(old, (0, 2, 4), (5, 6, 7), 3)

    def tamper(m: Message) -> bytes:
        if m.round == 1 and m.sender in (2, 4) and m.recipient == 6:
            points, chain, sub = split_dealing(m.payload, 3)
            assert sub is not None
            return join_dealing(points, chain, (sub + 7) % N)
        return m.payload

    with pytest.raises(ProtocolError) as e:
        run(_ceremonies(plan, old), tamper)
    assert e.value.culprits == (2, 4)


def test_a_dealing_that_would_change_the_public_key_is_blamed() -> None:
    old = bip340_keyring(KEY, 2, 3)
    plan = _plan(old, (0, 2), (3, 4, 5), 2)
    delta = 12345

    def shift(m: Message) -> bytes:
        # A fully consistent sharing of w_d + delta: C_0 + delta G and every sub-share + delta.
        points, chain, sub = split_dealing(m.payload, 2)
        points[0] = points[0] + G * delta
        return join_dealing(points, chain, None if sub is None else (sub + delta) % N)

    with pytest.raises(FaultyParticipantError, match="change the public key") as e:
        run(_ceremonies(plan, old), _tamper_dealing(2, {0, 3, 4, 5}, shift))
    assert e.value.participant == 2


def test_an_equivocating_dealer_fails_the_agreement_check() -> None:
    old = bip340_keyring(KEY, 2, 3)
    plan = _plan(old, (0, 1), (0, 1, 2), 2)
    delta = 777

    def other_polynomial(m: Message) -> bytes:
        # To party 2 only: g(x) + delta * x, consistent with its sub-share at x = 3.
        points, chain, sub = split_dealing(m.payload, 2)
        assert sub is not None
        points[1] = points[1] + G * delta
        return join_dealing(points, chain, (sub + delta * 3) % N)

    with pytest.raises(ProtocolError, match="agreement check failed") as e:
        run(_ceremonies(plan, old), _tamper_dealing(0, {2}, other_polynomial))
    assert e.value.culprits == ()


def test_a_party_misreporting_the_agreement_hash_aborts_the_ceremony() -> None:
    old = bip340_keyring(KEY, 2, 3)
    plan = _plan(old, (0, 1), (2, 3, 4), 2)

    def lie(m: Message) -> bytes:
        if m.round == 2 and m.sender == 3:
            return bytes(32)
        return m.payload

    with pytest.raises(ProtocolError, match="agreement check failed"):
        run(_ceremonies(plan, old), lie)


@pytest.mark.parametrize(
    "garble",
    [
        lambda p: p[:-1],
        lambda p: p + b"\x00",
        lambda p: b"\x05" + p[1:],
        lambda p: p[:-32] + b"\xff" * 32,
    ],
    ids=["short", "long", "bad-point", "scalar>=n"],
)
def test_a_malformed_dealing_blames_its_dealer(garble: Callable[[bytes], bytes]) -> None:
    old = bip340_keyring(KEY, 2, 3)
    plan = _plan(old, (0, 1), (3, 4), 2)
    with pytest.raises(FaultyParticipantError) as e:
        run(_ceremonies(plan, old), _tamper_dealing(0, {3}, lambda m: garble(m.payload)))
    assert e.value.participant == 0


def test_ecdsa_setup_faults_blame_the_ceremony_seat() -> None:
    old = local.import_key("ecdsa-secp256k1", KEY.to_bytes(32, "big"), threshold=2, parties=2)
    plan = _plan(old, (0, 1), (2, 3, 4), 2)  # new party j sits at seat 2 + j

    def corrupt_setup(m: Message) -> bytes:
        if m.round == 3 and m.sender == 4 and m.recipient == 2:
            # Flip a bit of the zero-seed reveal (after the 36-byte DKLs23 header),
            # which setup_finalize checks against the round-1 commitment.
            return m.payload[:36] + bytes([m.payload[36] ^ 1]) + m.payload[37:]
        return m.payload

    with pytest.raises(FaultyParticipantError) as e:
        run(_ceremonies(plan, old), corrupt_setup)
    assert e.value.participant == 4


def test_a_failed_reshare_leaves_the_old_shares_usable() -> None:
    old = bip340_keyring(KEY, 2, 3)
    plan = _plan(old, (0, 1), (3, 4, 5), 2)
    with pytest.raises(ProtocolError):
        run(_ceremonies(plan, old), lambda m: bytes(32) if m.round == 2 else m.payload)
    assert _bip340_verifies(old[0], local.sign(old[1:], DIGEST))


### Plans and inputs


def test_plan_validation() -> None:
    old = bip340_keyring(KEY, 2, 3)
    keyring = PublicKeyring.from_share(old[0])
    with pytest.raises(InputError):  # too few dealers
        ResharePlan(SID, keyring, (0,), (3, 4), 2)
    with pytest.raises(InputError):  # dealers must be old party ids, ascending
        ResharePlan(SID, keyring, (1, 0), (3, 4), 2)
    with pytest.raises(InputError):
        ResharePlan(SID, keyring, (0, 3), (3, 4), 2)
    with pytest.raises(InputError):  # t' > n'
        ResharePlan(SID, keyring, (0, 1), (3, 4), 3)
    with pytest.raises(InputError):  # holder seats distinct
        ResharePlan(SID, keyring, (0, 1), (3, 3), 2)
    with pytest.raises(InputError):  # session id
        ResharePlan(bytes(31), keyring, (0, 1), (3, 4), 2)
    # Old public data whose dealers do not interpolate to the public key.
    bad = replace(keyring, public_key=(Point.from_bytes(keyring.public_key) + G).to_bytes())
    with pytest.raises(InputError, match="interpolate"):
        ResharePlan(SID, bad, (0, 1), (3, 4), 2)
    ecdsa_keyring = replace(keyring, scheme="ecdsa-secp256k1")
    with pytest.raises(InputError):  # ECDSA keyrings need t' >= 2
        ResharePlan(SID, ecdsa_keyring, (0, 1), (3,), 1)
    with pytest.raises(InputError):  # a refresh keeps everyone
        ResharePlan(SID, keyring, (0, 1), (0, 1), 2, "refresh")


def test_ceremony_inputs_must_fit_the_plan() -> None:
    old = bip340_keyring(KEY, 2, 3)
    plan = _plan(old, (0, 1), (0, 1, 5), 2)
    rand = seeded(0)
    with pytest.raises(InputError):  # a dealer without its share
        Reshare(plan, 0, None, rand)
    with pytest.raises(InputError):  # another party's share
        Reshare(plan, 0, old[1], rand)
    with pytest.raises(InputError):  # a joining party brings no share
        Reshare(plan, 5, old[2], rand)
    with pytest.raises(InputError):  # not a seat
        Reshare(plan, 7, None, rand)
    newer = local.refresh(old)
    with pytest.raises(InputError):  # a share of another epoch
        Reshare(plan, 0, newer[0], rand)


def test_shares_of_different_epochs_do_not_reshare_together() -> None:
    old = bip340_keyring(KEY, 2, 3)
    newer = local.refresh(old)
    with pytest.raises(InputError):
        local.reshare([old[0], newer[1]], threshold=2, parties=3)
    with pytest.raises(InputError):
        local.reshare(old[:1], threshold=2, parties=3)  # fewer than t


def test_reshare_output_repr_hides_secrets() -> None:
    old = bip340_keyring(KEY, 2, 2)
    outputs: list[ReshareOutput] = run(_ceremonies(_plan(old, (0, 1), (0, 1), 2), old))
    share = outputs[0].share
    assert share is not None
    assert hex(share.secret_share)[2:] not in repr(outputs[0])
    assert str(share.secret_share) not in repr(outputs[0])
    dealing = deal(_plan(old, (0, 1), (2, 3), 2), old[0], bytes(32))
    assert all(str(sub) not in repr(dealing) for sub in dealing.subshares)
