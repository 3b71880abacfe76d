"""client.sdk.listing against a host that lies: the listing is checked for shape and order.

A host that repeats a page, lists out of order, pages for ever or describes a
wallet malformed gets a ``WalletError``, never an endless loop or a bad entry.
The host here is a bare gRPC server answering ListWallets with canned pages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from client.errors import WalletError
from client.sdk.listing import list_host_wallets
from shardkeep.v1 import ceremony_pb2, host_pb2, host_pb2_grpc

Pages = Callable[[host_pb2.ListWalletsRequest], host_pb2.ListWalletsResponse]


def wallet(
    wallet_id: str,
    *,
    public_key: bytes = b"\x02" + b"\x01" * 32,
    scheme: ceremony_pb2.Scheme = ceremony_pb2.SCHEME_BIP340,
) -> host_pb2.Wallet:
    return host_pb2.Wallet(
        wallet_id=wallet_id,
        scheme=scheme,
        threshold=2,
        parties=[ceremony_pb2.Party(party_id=p) for p in ("server", "phone")],
        public_key=public_key,
        epoch=3,
    )


class CannedHost(host_pb2_grpc.HostServicer):
    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.calls = 0

    async def ListWallets(
        self, request: host_pb2.ListWalletsRequest, context: Any
    ) -> host_pb2.ListWalletsResponse:
        self.calls += 1
        return self.pages(request)


def listing(pages: Pages, **options: Any) -> tuple[list[str], int]:
    async def body() -> tuple[list[str], int]:
        host = CannedHost(pages)
        server = grpc.aio.server()
        host_pb2_grpc.add_HostServicer_to_server(host, server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                found = await list_host_wallets(channel, page_size=2, **options)
            return [w.wallet_id for w in found], host.calls
        finally:
            await server.stop(None)

    return asyncio.run(asyncio.wait_for(body(), 30))


IDS = ["a", "b", "c", "d", "e"]


def honest(request: host_pb2.ListWalletsRequest) -> host_pb2.ListWalletsResponse:
    rest = [i for i in IDS if i > request.page_token]
    page = rest[: request.page_size]
    more = len(rest) > request.page_size
    return host_pb2.ListWalletsResponse(
        wallets=[wallet(i) for i in page], next_page_token=page[-1] if more else ""
    )


def test_an_honest_host_is_listed_page_by_page() -> None:
    assert listing(honest) == (IDS, 3)


@pytest.mark.parametrize(
    ("pages", "fault"),
    [
        (lambda r: host_pb2.ListWalletsResponse(next_page_token="a"), "does not move forward"),
        (lambda r: host_pb2.ListWalletsResponse(wallets=[wallet("a")], next_page_token="a"),
         "out of order"),
        (lambda r: host_pb2.ListWalletsResponse(wallets=[wallet("b"), wallet("a")]),
         "out of order"),
        (lambda r: host_pb2.ListWalletsResponse(wallets=[wallet("a"), wallet("a")]),
         "out of order"),
        (lambda r: host_pb2.ListWalletsResponse(wallets=[wallet("a", public_key=b"\x02" * 32)]),
         "malformed"),
        (lambda r: host_pb2.ListWalletsResponse(
            wallets=[wallet("a", scheme=ceremony_pb2.SCHEME_ED25519)]), "malformed"),
        (lambda r: host_pb2.ListWalletsResponse(
            wallets=[wallet(r.page_token + "x")], next_page_token=r.page_token + "x"),
         "more than 50 wallets"),
    ],
    ids=[
        "token-stuck", "repeated-page", "out-of-order", "twice", "short-public-key",
        "ed25519-with-a-33-byte-key", "endless",
    ],
)  # fmt: skip
def test_a_lying_host_gets_a_wallet_error(pages: Pages, fault: str) -> None:
    with pytest.raises(WalletError, match=fault):
        listing(pages, max_wallets=50)


def test_an_ed25519_wallet_is_listed_with_its_32_byte_key() -> None:
    key = bytes(range(32))
    solana = host_pb2.ListWalletsResponse(
        wallets=[wallet("a"), wallet("b", public_key=key, scheme=ceremony_pb2.SCHEME_ED25519)]
    )
    assert listing(lambda r: solana) == (["a", "b"], 1)
