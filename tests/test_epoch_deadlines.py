"""A pending epoch whose certificate cannot exist is aborted promptly, and never raced.

Until the enclave's agreement (its certificate signature) has left the host,
no certificate can exist, so the host writes a new epoch with a short deadline
(``LinkConfig.unsigned_deadline_s``) and gives it the full pending deadline only
just before it forwards that agreement (``Store.extend_pending``). A host that
crashed between storing the share and forwarding the agreement then blocks the
wallet's key changes for seconds, not for the whole pending deadline; and an
abort that wins against the extension stops the agreement from leaving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.ceremony_plan import plan_ceremony
from host.epoch_writer import EpochWriter
from host.store import EpochError, Store, StoreError, WalletNotFoundError
from host.stores import open_store
from shardkeep.v1 import ceremony_pb2
from tests.fake_enclave import PUBLIC_KEY, STATIC_KEY
from tests.test_host_service import WALLET, host_request, make_request
from tests.test_store import W, committed_wallet
from tests.test_store_key_changes import CERT, Clock, begin

K = ceremony_pb2.CeremonyKind
SHORT_S = 0.2


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'store.db'}", clock=clock) as opened:
        yield opened


def test_extending_a_pending_epoch_and_aborting_it_exclude_each_other(
    store: Store, clock: Clock
) -> None:
    committed_wallet(store)
    begin(store, clock, deadline_ms=100)  # the short deadline: nobody agreed yet
    store.extend_pending(W, 1, clock.now + 600_000)  # the agreement is about to leave
    clock.now += 101
    assert store.abort_expired(W) is None  # the extension won: the epoch waits
    assert store.commit_epoch(W, 1, CERT).current_epoch == 1

    begin(store, clock, epoch=2, deadline_ms=100)
    clock.now += 101
    assert store.abort_expired(W) == 2  # the abort won ...
    with pytest.raises(EpochError):  # ... so the agreement must not leave
        store.extend_pending(W, 2, clock.now + 600_000)
    begin(store, clock, epoch=2, deadline_ms=100)
    clock.now += 101
    with pytest.raises(EpochError, match="deadline"):  # too late, even before the sweep
        store.extend_pending(W, 2, clock.now + 600_000)


def keygen_share() -> ceremony_pb2.SealedShare:
    return ceremony_pb2.SealedShare(
        wallet_id=WALLET, share_index=1, scheme=ceremony_pb2.SCHEME_BIP340, epoch=0,
        encrypted_data_key=b"k" * 40, ciphertext=b"c" * 40, public_key=PUBLIC_KEY,
    )  # fmt: skip


def writer(store: Store) -> EpochWriter:
    request = make_request(K.CEREMONY_KIND_KEYGEN, "room-1")
    plan = plan_ceremony(host_request(request, "token"), K.CEREMONY_KIND_KEYGEN, STATIC_KEY)
    return EpochWriter(store, plan, pending_deadline_s=600.0, unsigned_deadline_s=SHORT_S)


def test_host_crashed_before_the_enclave_agreed_frees_the_wallet_promptly(
    tmp_path: Path,
) -> None:
    """Fault: the host stored the enclave's new share, then died before it forwarded the
    enclave's agreement. No certificate can exist; the epoch (here a keygen's, holding
    the wallet id) is aborted after the short deadline, not the pending one."""

    async def body() -> None:
        with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
            crashed = writer(store)
            assert await crashed.write(keygen_share()) == 0
            # The process is gone: nothing forwards, nothing aborts.
            assert store.abort_expired(WALLET) is None
            await asyncio.sleep(SHORT_S + 0.1)
            assert store.abort_expired(WALLET) == 0
            with pytest.raises(WalletNotFoundError):
                store.get_wallet(WALLET)

            # A live host forwards the agreement in time: the epoch then waits for
            # its certificate as long as the pending deadline allows.
            live = writer(store)
            await live.write(keygen_share())
            await live.forwarding()
            await asyncio.sleep(SHORT_S + 0.1)
            assert store.abort_expired(WALLET) is None
            await live.commit(CERT)
            assert store.get_wallet(WALLET).current_epoch == 0

    asyncio.run(body())


def test_an_agreement_never_leaves_for_an_epoch_aborted_meanwhile(tmp_path: Path) -> None:
    """Race: the sweep aborts the epoch (its short deadline passed while the enclave was
    slow) just before the host would forward the enclave's agreement. The forward is
    refused, so no certificate can exist for an epoch the host no longer holds."""

    async def body() -> None:
        with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
            slow = writer(store)
            await slow.write(keygen_share())
            time.sleep(SHORT_S + 0.1)
            assert store.abort_all_expired() == [(WALLET, 0)]
            with pytest.raises(StoreError):
                await slow.forwarding()

    asyncio.run(body())
