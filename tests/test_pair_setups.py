"""The enclave's in-memory registry of the server party's DKLs23 pair setups (unit level)."""

from __future__ import annotations

import pytest

from enclave.identity import ServerShare
from enclave.pair_setups import PairKey, PairSetups, without_pair_setups
from tss import local
from tss.errors import PairSetupError
from tss.keyshare import KeyShare

SERVER = 2


@pytest.fixture
def shares() -> list[KeyShare]:
    return local.keygen("ecdsa-secp256k1", threshold=2, parties=3)


def _record(share: KeyShare) -> ServerShare:
    return ServerShare(share, b"", ("a", "b", "server"))


def test_adopt_keeps_the_setups_in_memory_and_strips_the_record(shares: list[KeyShare]) -> None:
    server = shares[SERVER]
    assert server.ecdsa is not None
    registry = PairSetups()
    sealed = registry.adopt("w", _record(server))
    assert sealed.key_share.ecdsa is not None and sealed.key_share.ecdsa.held == frozenset()
    assert len(sealed.to_bytes()) < len(_record(server).to_bytes()) - 2 * 24_000
    assert without_pair_setups(sealed) is sealed
    kid = server.ecdsa.key_id
    for peer in (0, 1):
        assert registry.setup_id(PairKey("w", 0, kid, peer)) == server.ecdsa.peer(peer).setup_id
    # A signing session gets the very objects the registry holds (one burn state per pair).
    named = {j: server.ecdsa.peer(j).setup_id for j in (0, 1)}
    share, _ = registry.session_setup("w", sealed.key_share, [0, 1], named, ("a", "b", "server"))
    assert share.ecdsa is not None
    assert share.ecdsa.peer(0) is server.ecdsa.peer(0)
    assert share.ecdsa.peer(1) is server.ecdsa.peer(1)


def test_unknown_wrong_or_burned_setups_are_refused(shares: list[KeyShare]) -> None:
    registry = PairSetups()
    server = registry.adopt("w", _record(shares[SERVER])).key_share
    full = shares[SERVER].ecdsa
    assert full is not None
    ids = ("a", "b", "server")
    for wallet, named in (
        ("other", {0: full.peer(0).setup_id}),  # another wallet's pair
        ("w", {}),  # no setup named
        ("w", {0: bytes(32)}),  # an id the enclave never made
        ("w", {0: full.peer(1).setup_id}),  # another pair's id
    ):
        with pytest.raises(PairSetupError) as refused:
            registry.session_setup(wallet, server, [0], named, ids)
        assert refused.value.peer == 0 and "a" in str(refused.value)
    full.peer(0).burn()
    with pytest.raises(PairSetupError):
        registry.session_setup("w", server, [0], {0: full.peer(0).setup_id}, ids)
    assert registry.setup_id(PairKey("w", 0, full.key_id, 0)) is None
    # The pair with party 1 is untouched.
    registry.session_setup("w", server, [1], {1: full.peer(1).setup_id}, ids)


def test_the_registry_is_bounded_and_an_evicted_pair_needs_a_new_setup(
    shares: list[KeyShare],
) -> None:
    registry = PairSetups(size=1)
    server = registry.adopt("w", _record(shares[SERVER])).key_share
    full = shares[SERVER].ecdsa
    assert full is not None
    ids = ("a", "b", "server")
    registry.session_setup("w", server, [1], {1: full.peer(1).setup_id}, ids)  # the newest
    with pytest.raises(PairSetupError):  # evicted (the oldest)
        registry.session_setup("w", server, [0], {0: full.peer(0).setup_id}, ids)


def test_one_lock_per_setup_object(shares: list[KeyShare]) -> None:
    registry = PairSetups()
    record = _record(shares[SERVER])
    registry.adopt("w", record)
    full = shares[SERVER].ecdsa
    assert full is not None
    stripped = without_pair_setups(record).key_share
    named = {0: full.peer(0).setup_id}
    _, first = registry.session_setup("w", stripped, [0], named, ("a", "b", "server"))
    registry.adopt("w", record)  # the same setups again (a pending, then a final store)
    _, second = registry.session_setup("w", stripped, [0], named, ("a", "b", "server"))
    assert first._locks == second._locks
