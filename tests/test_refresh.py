"""Refresh (tss.reshare in "refresh" mode, tss.local.refresh): new secret shares, same key."""

from __future__ import annotations

import itertools

import pytest
from coincurve import PublicKeyXOnly

from tests.lifecycle_support import bip340_keyring, join_dealing, run, seeded, split_dealing
from tss import local
from tss.ceremony import Message
from tss.curve import G, N, ecdsa_verify
from tss.ecdsa.setup import key_id
from tss.errors import FaultyParticipantError, InputError, ProtocolError
from tss.export import offline_export
from tss.keyshare import KeyShare
from tss.reshare import PublicKeyring, Reshare, ResharePlan
from tss.shamir import interpolate_at_zero
from tss.signing import Bip340Signing, throwaway_host_keys

KEY = 0x5A17E3B0C4D2F1E0A9B8C7D6E5F4A3B2C1D0E9F8A7B6C5D4E3F2A1B0C9D8E7F6
DIGEST = bytes(range(32, 64))
SID = bytes(range(32))


def _verifies(share: KeyShare, sig: bytes) -> bool:
    return bool(PublicKeyXOnly(share.public_key[1:]).verify(sig, DIGEST))


def _refresh_ceremonies(old: list[KeyShare], seed: int = 1) -> list[Reshare]:
    plan = ResharePlan.refresh(PublicKeyring.from_share(old[0]), SID)
    rand = seeded(seed)
    return [Reshare(plan, s.party_id, s, rand) for s in old]


@pytest.mark.parametrize(("t", "n"), [(2, 2), (2, 3), (3, 5)], ids=str)
def test_refresh_keeps_the_key_and_replaces_every_share(t: int, n: int) -> None:
    old = bip340_keyring(KEY, t, n)
    new = local.refresh(old)
    assert [s.party_id for s in new] == list(range(n))
    for o, s in zip(old, new, strict=True):
        assert (s.public_key, s.threshold, s.chain_code) == (o.public_key, t, o.chain_code)
        assert s.epoch == o.epoch + 1
        assert s.secret_share != o.secret_share
        assert s.public_shares[s.party_id] != o.public_shares[o.party_id]
    for quorum in itertools.combinations(new, t):
        assert _verifies(new[0], local.sign(list(quorum), DIGEST))
        assert local.export_key(list(quorum)) == KEY.to_bytes(32, "big")
    again = local.refresh(new)
    assert {s.epoch for s in again} == {2}
    assert local.export_key(again[:t]) == KEY.to_bytes(32, "big")


def test_refresh_after_a_real_dkg() -> None:
    old = local.keygen("bip340", threshold=2, parties=3)
    new = local.refresh(old)
    assert _verifies(new[0], local.sign([new[0], new[2]], DIGEST))


def test_old_and_new_shares_do_not_combine() -> None:
    old = bip340_keyring(KEY, 2, 3)
    new = local.refresh(old)
    # Mathematically: every mixed pair interpolates to something other than the key.
    for i, j in itertools.permutations(range(3), 2):
        mixed = {i: old[i].secret_share, j: new[j].secret_share}
        assert interpolate_at_zero(mixed) != KEY
    # The consistency checks refuse the mix everywhere.
    mix = [old[0], new[1]]
    with pytest.raises(InputError):
        local.sign(mix, DIGEST)
    with pytest.raises(InputError):
        local.export_key(mix)
    with pytest.raises(InputError):
        offline_export(mix)
    # Bypassing those checks, the mixed signature does not verify and signing aborts.
    rand = seeded(2)
    keys = throwaway_host_keys(len(old[0].public_shares), rand)
    with pytest.raises(ProtocolError):
        run(
            [
                Bip340Signing(old[0], [0, 1], DIGEST, SID, rand, host_keys=keys[0]),
                Bip340Signing(new[1], [0, 1], DIGEST, SID, rand, host_keys=keys[1]),
            ]
        )


def test_an_abandoned_refresh_leaves_the_old_shares_usable() -> None:
    old = bip340_keyring(KEY, 2, 3)
    ceremonies = _refresh_ceremonies(old)
    outbox = [m for c in ceremonies for m in c.start()]
    # Party 1 gets its round-1 messages and moves on; the others never hear anything.
    for m in outbox:
        if m.recipient == 1:
            ceremonies[1].receive(m)
    assert ceremonies[1].current_round == 2 and not any(c.done for c in ceremonies)
    del ceremonies  # abandoned
    assert _verifies(old[0], local.sign(old[:2], DIGEST))
    assert local.export_key(old[1:]) == KEY.to_bytes(32, "big")
    assert local.export_key(local.refresh(old)[:2]) == KEY.to_bytes(32, "big")


def test_a_refresh_dealer_with_a_nonzero_constant_is_blamed() -> None:
    old = bip340_keyring(KEY, 2, 3)
    delta = 99

    def shift(m: Message) -> bytes:
        # A consistent sharing of delta instead of 0: it would move the key by delta G.
        if m.round != 1 or m.sender != 1:
            return m.payload
        points, chain, sub = split_dealing(m.payload, 2)
        points[0] = points[0] + G * delta
        return join_dealing(points, chain, None if sub is None else (sub + delta) % N)

    with pytest.raises(FaultyParticipantError, match="change the public key") as e:
        run(_refresh_ceremonies(old), shift)
    assert e.value.participant == 1


def test_a_refresh_dealer_with_a_bad_subshare_is_blamed() -> None:
    old = bip340_keyring(KEY, 3, 5)

    def bump(m: Message) -> bytes:
        if m.round == 1 and m.sender == 3 and m.recipient == 0:
            points, chain, sub = split_dealing(m.payload, 3)
            assert sub is not None
            return join_dealing(points, chain, (sub + 1) % N)
        return m.payload

    with pytest.raises(FaultyParticipantError) as e:
        run(_refresh_ceremonies(old), bump)
    assert e.value.culprits == (3,)


def test_refresh_needs_every_party_and_t_of_at_least_2() -> None:
    old = bip340_keyring(KEY, 2, 3)
    with pytest.raises(InputError):
        local.refresh(old[:2])
    with pytest.raises(InputError):
        local.refresh([old[0], old[1], local.refresh(old)[2]])
    with pytest.raises(InputError):  # 1-of-n shares are the key itself
        local.refresh(bip340_keyring(KEY, 1, 2))


def test_ecdsa_refresh_replaces_the_pairwise_setups() -> None:
    old = local.import_key("ecdsa-secp256k1", KEY.to_bytes(32, "big"), threshold=2, parties=3)
    new = local.refresh(old)
    for o, s in zip(old, new, strict=True):
        assert s.ecdsa is not None and o.ecdsa is not None
        assert s.ecdsa.key_id == key_id(s) != o.ecdsa.key_id
        assert s.ecdsa.to_bytes() != o.ecdsa.to_bytes()
    sig = local.sign([new[1], new[2]], DIGEST)
    assert ecdsa_verify(DIGEST, old[0].public_key, sig)
    with pytest.raises(InputError):
        local.sign([old[0], new[1]], DIGEST)
    assert ecdsa_verify(DIGEST, old[0].public_key, local.sign(old[:2], DIGEST))
