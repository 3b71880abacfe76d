"""What both transports' party sessions share: the inbox of deliveries, the
room's end and the seq counter (``relay.client.PartySession`` on a Join stream,
``relay.session_client.SessionParty`` on the Session stream)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

from relay.errors import RelayError, RoomClosedError, RoomExpiredError
from shardkeep.v1 import relay_pb2

__all__ = ["PartyInbox"]


class PartyInbox(ABC):
    """The receiving side of one party in one room; a transport's session fills
    ``_inbox`` with deliveries, then puts the error that ended it."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[relay_pb2.EnvelopeDelivery | RelayError] = asyncio.Queue()
        self.accepted: relay_pb2.JoinAccepted = relay_pb2.JoinAccepted()
        self.ended: relay_pb2.RoomEndReason | None = None
        self._next_seq = 1

    @abstractmethod
    async def open(self) -> relay_pb2.JoinAccepted:
        """Join the room and wait for the relay's answer."""

    @abstractmethod
    async def aclose(self) -> None:
        """Leave the room."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def next_seq(self) -> int:
        """The seq the next ``send`` will use."""
        return self._next_seq

    async def receive(self) -> relay_pb2.EnvelopeDelivery:
        """Return the next delivery for this party.

        Raises:
            RoomClosedError / RoomExpiredError: the room ended (after every
                delivery before the end was returned).
            the relay's error when the session or its stream failed.
        """
        item = await self._inbox.get()
        if isinstance(item, RelayError):
            self._inbox.put_nowait(item)  # every later call raises it too
            raise item
        return item

    def __aiter__(self) -> AsyncIterator[relay_pb2.EnvelopeDelivery]:
        return self._deliveries()

    async def _deliveries(self) -> AsyncIterator[relay_pb2.EnvelopeDelivery]:
        """Yield deliveries until the room ends; raise on a stream failure."""
        while True:
            try:
                yield await self.receive()
            except (RoomClosedError, RoomExpiredError):
                if self.ended is not None:
                    return
                raise
