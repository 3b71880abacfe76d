"""The store's side of key changes: epoch and share in one transaction, commit only with the
certificate and before the deadline, automatic abort after it, acknowledgments, retirement.
Both backends (the fixtures of tests/test_store.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from host.store import (
    EpochError,
    KeyChange,
    Store,
    StoreConflictError,
    StoreInputError,
    WalletNotFoundError,
)
from host.stores import open_store
from tests.test_store import (  # noqa: F401  (fixtures)
    Backend,
    W,
    backend,
    committed_wallet,
    make_keyring,
    make_share,
    make_wallet,
)

CHANGE = KeyChange(
    hashlib.sha256(b"session").digest(),
    hashlib.sha256(b"transcript").digest(),
    (b"\x02" + bytes(32), b"\x03" + bytes(32)),
)
CERT = bytes(range(128))


class Clock:
    """Unix milliseconds the test moves."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(backend: Backend, clock: Clock) -> Iterator[Store]:  # noqa: F811
    with open_store(backend.url, clock=clock) as opened:
        yield opened


def begin(store: Store, clock: Clock, epoch: int = 1, deadline_ms: int = 5_000) -> None:
    store.begin_epoch(
        W, epoch, shares=[make_share(epoch=epoch)], key_change=CHANGE,
        deadline_at_ms=clock.now + deadline_ms,
    )  # fmt: skip


def test_epoch_and_share_are_written_together(store: Store, clock: Clock) -> None:
    committed_wallet(store)
    bad = make_share(index=7, epoch=1)  # outside the keyring: the whole write fails
    with pytest.raises(StoreInputError):
        store.begin_epoch(W, 1, shares=[bad], key_change=CHANGE)
    assert store.get_wallet(W).pending_epoch is None  # no empty pending epoch left behind
    begin(store, clock)
    (record,) = [e for e in store.list_epochs(W) if e.epoch == 1]
    assert (record.state, record.key_change, record.certificate) == ("pending", CHANGE, b"")
    assert record.deadline_at_ms == clock.now + 5_000


def test_a_key_change_commits_only_with_its_certificate(store: Store, clock: Clock) -> None:
    committed_wallet(store)
    begin(store, clock)
    with pytest.raises(EpochError, match="only with its certificate"):
        store.commit_epoch(W, 1)
    with pytest.raises(StoreInputError):
        store.commit_epoch(W, 1, CERT[:63])
    assert store.commit_epoch(W, 1, CERT).current_epoch == 1
    states = {e.epoch: (e.state, e.certificate) for e in store.list_epochs(W)}
    assert states == {0: ("retired", b""), 1: ("committed", CERT)}
    (current,) = store.current_shares(W)
    assert current.certificate == CERT  # handed to the enclave with the share
    assert [s.share.epoch for s in store.shares_at(W, 0)] == [0]  # the old epoch still signs


def test_a_pending_epoch_past_its_deadline_is_aborted(store: Store, clock: Clock) -> None:
    committed_wallet(store)
    begin(store, clock)
    assert store.abort_expired(W) is None  # within its deadline
    clock.now += 5_001
    with pytest.raises(EpochError, match="deadline"):
        store.commit_epoch(W, 1, CERT)  # too late, even with a certificate
    assert store.abort_expired(W) == 1
    wallet = store.get_wallet(W)
    assert (wallet.current_epoch, wallet.pending_epoch) == (0, None)
    begin(store, clock)  # the next key change starts over
    assert store.commit_epoch(W, 1, CERT).current_epoch == 1


def test_an_expired_keygen_frees_its_wallet_id(store: Store, clock: Clock) -> None:
    store.create_wallet(make_wallet(), [make_share()], deadline_at_ms=clock.now + 10)
    with pytest.raises(StoreConflictError):
        store.create_wallet(make_wallet(), [make_share()])
    clock.now += 11
    assert store.abort_expired(W) == 0
    with pytest.raises(WalletNotFoundError):
        store.get_wallet(W)
    store.create_wallet(make_wallet(), [make_share()])


def test_acknowledgments_and_retirement(store: Store, clock: Clock) -> None:
    committed_wallet(store)
    begin(store, clock)
    with pytest.raises(EpochError):  # a pending epoch takes no acknowledgment
        store.ack_epoch(W, 1, 0, bytes(64))
    store.commit_epoch(W, 1, CERT)
    with pytest.raises(EpochError):  # no such seat
        store.ack_epoch(W, 1, 2, bytes(64))
    store.ack_epoch(W, 1, 1, bytes(64))
    store.ack_epoch(W, 1, 1, bytes(64))  # again: a no-op
    (record,) = [e for e in store.list_epochs(W) if e.epoch == 1]
    assert record.acked == frozenset({1})
    with pytest.raises(EpochError):  # the current epoch cannot be dropped
        store.drop_retired(W, 1)
    assert store.drop_retired(W, 0) and not store.drop_retired(W, 0)
    assert [e.epoch for e in store.list_epochs(W)] == [1]
    assert make_keyring() == store.get_wallet(W).keyring


def test_expired_pending_epochs_of_every_wallet_are_swept(store: Store, clock: Clock) -> None:
    committed_wallet(store)
    begin(store, clock, deadline_ms=10)
    store.create_wallet(
        make_wallet("wallet-2"), [make_share("wallet-2")], deadline_at_ms=clock.now + 20
    )
    store.create_wallet(
        make_wallet("wallet-3"), [make_share("wallet-3")], deadline_at_ms=clock.now + 99
    )
    clock.now += 21
    assert store.abort_all_expired() == [(W, 1), ("wallet-2", 0)]
    assert store.get_wallet(W).pending_epoch is None
    with pytest.raises(WalletNotFoundError):
        store.get_wallet("wallet-2")
    assert store.get_wallet("wallet-3").pending_epoch == 0  # within its deadline
    assert store.abort_all_expired() == []
