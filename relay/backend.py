"""The storage contract the relay service runs on (in-memory or Redis).

A backend stores rooms and each room's append-only log. It must make
each ``append`` atomic across every relay process that shares it (the check of
``rooms.check_append`` and the write are one step), so that per-sender order and
seq are enforced even when a party's envelopes reach different relays. It never
interprets payloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from relay.rooms import AppendResult, Message, PartyId, ReadResult, RoomId, RoomSnapshot, RoomSpec

__all__ = ["Backend"]


class Backend(Protocol):
    """Room storage. All methods may raise ``BackendUnavailableError``."""

    async def create_room(self, spec: RoomSpec, now_ms: int) -> None:
        """Store a new room.

        Raises:
            RoomExistsError: the id is in use.
            LimitExceededError: the backend holds as many rooms as it may.
        """
        ...

    async def snapshot(self, room_id: RoomId) -> RoomSnapshot:
        """Return the room's spec and current state.

        Raises:
            RoomNotFoundError: no such room (or collected after expiry).
        """
        ...

    async def mark_joined(self, room_id: RoomId, party: PartyId, now_ms: int) -> None:
        """Record that ``party`` joined (for GetRoom).

        Raises:
            RoomNotFoundError: no such room.
        """
        ...

    async def append(
        self, room_id: RoomId, messages: Sequence[Message], now_ms: int
    ) -> AppendResult:
        """Store envelopes in order, each atomically checked by
        ``rooms.check_append``, stopping at the first one rejected.

        Returns:
            The positions of the stored envelopes (each greater than every
            earlier position) and the error that stopped the batch, if any:
            RoomNotFoundError, RoomClosedError, RoomExpiredError,
            LimitExceededError or SequenceError.
        """
        ...

    async def read(self, room_id: RoomId, after: int, limit: int, max_wait_s: float) -> ReadResult:
        """Return up to ``limit`` log entries with position > ``after``.

        When there are none, wait up to ``max_wait_s`` seconds for one (0: do not
        wait). ``closed`` is set once the room is closed and every entry before
        the close has been returned. Expiry is the caller's business: it knows
        ``expires_ms`` and bounds ``max_wait_s`` by it.

        Raises:
            RoomNotFoundError: the room is gone (the Redis backend cannot tell and
                just returns nothing; the caller's expiry check ends the wait).
        """
        ...

    async def delivered(
        self, room_id: RoomId, ceremony_id: str, round_: int, parties: Sequence[PartyId]
    ) -> frozenset[PartyId]:
        """Return which of ``parties`` sent at least one envelope of (ceremony, round).

        Raises:
            RoomNotFoundError: no such room (the Redis backend reports nobody).
        """
        ...

    async def close_room(self, room_id: RoomId) -> None:
        """Close the room (idempotent): no more joins or envelopes; readers get
        the rest of the log and then ``closed``.

        Raises:
            RoomNotFoundError: no such room.
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
