"""The host's ListWallets: paged in wallet-id order, metadata only, behind the API token.

The service runs as in tests/test_host_service.py (real relay in memory, fake
enclave, SQLite store): one wallet comes from a keygen through the host, the
others are written straight into the store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest

from host.store import Store
from shardkeep.v1 import host_pb2, host_pb2_grpc
from tests.relay_harness import run
from tests.test_host_service import WALLET, keygen, stack
from tests.test_store import committed_wallet, make_share, make_wallet

STORED = ("a-1", "a-2", "b-1", "x-9", "z-0")
UNCOMMITTED = "m-keygen-running"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "host.db"


def fill(store: Store) -> None:
    for wallet_id in STORED:
        committed_wallet(store, wallet_id)
    # A keygen that has not committed: no usable key, so not listed (GetWallet refuses it too).
    store.create_wallet(make_wallet(UNCOMMITTED), [make_share(UNCOMMITTED)])


async def every_page(
    host: host_pb2_grpc.HostStub, page_size: int, metadata: tuple[tuple[str, str], ...] = ()
) -> list[list[host_pb2.Wallet]]:
    pages: list[list[host_pb2.Wallet]] = []
    token = ""
    while True:
        reply = await host.ListWallets(
            host_pb2.ListWalletsRequest(page_size=page_size, page_token=token), metadata=metadata
        )
        pages.append(list(reply.wallets))
        token = reply.next_page_token
        if not token:
            return pages


def test_list_wallets_pages_through_every_committed_wallet(db_path: Path) -> None:
    async def body() -> None:
        async with stack(f"sqlite:///{db_path}") as s:
            await keygen(s)
            fill(s.store)
            expected = sorted([*STORED, WALLET])

            pages = await every_page(s.host, page_size=2)
            assert all(len(page) <= 2 for page in pages)
            listed = [w.wallet_id for page in pages for w in page]
            assert listed == expected  # byte order, each once, the uncommitted one left out
            assert len(pages) == 4  # 7 stored wallets in pages of 2; one page lost its keygen

            # Each entry is what GetWallet says of the wallet.
            by_id = {w.wallet_id: w for page in pages for w in page}
            for wallet_id in (WALLET, "a-1"):
                single = await s.host.GetWallet(host_pb2.GetWalletRequest(wallet_id=wallet_id))
                assert by_id[wallet_id] == single

            # Without a page size: the default page holds them all, and says it is the last.
            reply = await s.host.ListWallets(host_pb2.ListWalletsRequest())
            assert [w.wallet_id for w in reply.wallets] == expected
            assert reply.next_page_token == ""

    run(body)


def test_list_wallets_reads_no_sealed_share(db_path: Path) -> None:
    async def body() -> None:
        async with stack(f"sqlite:///{db_path}") as s:
            await keygen(s)
            fill(s.store)
            # Hide the sealed shares from every query: listing must not need them.
            with sqlite3.connect(db_path) as db:
                db.execute("ALTER TABLE sealed_shares RENAME TO hidden_shares")
            reply = await s.host.ListWallets(host_pb2.ListWalletsRequest(page_size=10))
            assert [w.wallet_id for w in reply.wallets] == sorted([*STORED, WALLET])
            assert all(len(w.public_key) == 33 and w.parties for w in reply.wallets)

    run(body)


def test_list_wallets_refuses_a_caller_without_the_api_token(db_path: Path) -> None:
    async def body() -> None:
        async with stack(f"sqlite:///{db_path}", api_tokens=("good-token",)) as s:
            fill(s.store)
            for metadata in ((), (("authorization", "Bearer bad-token"),)):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await s.host.ListWallets(host_pb2.ListWalletsRequest(), metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            pages = await every_page(
                s.host, page_size=3, metadata=(("authorization", "Bearer good-token"),)
            )
            assert [w.wallet_id for page in pages for w in page] == list(STORED)

    run(body)


def test_list_wallets_refuses_a_malformed_page_token(db_path: Path) -> None:
    async def body() -> None:
        async with stack(f"sqlite:///{db_path}") as s:
            fill(s.store)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.ListWallets(host_pb2.ListWalletsRequest(page_token="no such id!"))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "page_token" in (caught.value.details() or "")

    run(body)
