"""Closing a WalletClient while a signature is still in flight: the server's side of a
signature that returns during the close is waited for too, not left running on closed
connections (client.sdk.wallet ``aclose``)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.sdk.wallet import WalletClient
from shardkeep.v1 import ceremony_pb2


class FakeRelay:
    def __init__(self) -> None:
        self.closed = False
        self.rooms_closed: list[str] = []

    async def close_room(self, room_id: str, admin_token: bytes) -> None:
        assert not self.closed, "a room closed after the relay connection"
        self.rooms_closed.append(room_id)

    async def aclose(self) -> None:
        self.closed = True


def test_a_signature_returning_during_close_is_finished_before_the_connections_close() -> None:
    async def main() -> tuple[FakeRelay, set[Any]]:
        relay = FakeRelay()
        client = WalletClient(
            "127.0.0.1:1",
            "127.0.0.1:1",
            Ed25519PrivateKey.generate(),
            relay=relay,  # type: ignore[arg-type]
        )
        loop = asyncio.get_running_loop()
        request = ceremony_pb2.CeremonyRequest(wallet_id="w", ceremony_id="c")

        def returned(room_id: str) -> asyncio.Future[Any]:
            server: asyncio.Future[Any] = loop.create_future()
            loop.call_later(0.05, server.set_result, ceremony_pb2.CeremonyResult())
            room = SimpleNamespace(room_id=room_id, admin_token=b"")
            client._finish_in_background(server, room, request)  # type: ignore[arg-type]
            return server

        returned("first")
        # A second signature in flight returns its devices' result while close waits.
        loop.call_later(0.01, returned, "second")
        await client.aclose()
        return relay, set(client._background)

    relay, left = asyncio.run(main())
    assert left == set()
    assert relay.rooms_closed == ["first", "second"]
