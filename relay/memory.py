"""The embedded in-memory backend (the default): one asyncio event loop, one process.

Atomicity comes from asyncio itself: ``append`` has no ``await`` between its
check and its write. Waiting readers park on a per-room ``asyncio.Event`` that
is set and replaced on every change. Expired rooms are kept for
``retention_ms`` (so callers hear "expired", not "not found") and then dropped
when a later ``create_room`` sweeps them.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from relay.errors import LimitExceededError, RelayError, RoomExistsError, RoomNotFoundError
from relay.rooms import (
    AppendCounters,
    AppendResult,
    Message,
    PartyId,
    ReadResult,
    RoomId,
    RoomSnapshot,
    RoomSpec,
    StoredMessage,
    check_append,
)

__all__ = ["MemoryBackend"]


@dataclass(eq=False)
class _Room:
    spec: RoomSpec
    log: list[StoredMessage] = field(default_factory=list)
    closed: bool = False
    joined: set[PartyId] = field(default_factory=set)
    last_seq: dict[PartyId, int] = field(default_factory=dict)
    total_bytes: int = 0
    rounds: dict[tuple[str, int], set[PartyId]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class MemoryBackend:
    """Rooms in this process's memory; implements ``relay.backend.Backend``."""

    def __init__(self, *, max_rooms: int = 10_000, retention_ms: int = 10 * 60 * 1000) -> None:
        """Create an empty backend.

        Arguments:
            max_rooms: most rooms held at once, expired-but-retained ones included.
            retention_ms: how long an expired room is kept before it is dropped.
        """
        self._rooms: dict[RoomId, _Room] = {}
        self._gc_heap: list[tuple[int, RoomId]] = []
        self._max_rooms = max_rooms
        self._retention_ms = retention_ms

    def _room(self, room_id: RoomId) -> _Room:
        room = self._rooms.get(room_id)
        if room is None:
            raise RoomNotFoundError("no such room")
        return room

    def _sweep(self, now_ms: int) -> None:
        while self._gc_heap and self._gc_heap[0][0] <= now_ms:
            _, room_id = heapq.heappop(self._gc_heap)
            room = self._rooms.pop(room_id, None)
            if room is not None:
                room.notify()

    async def create_room(self, spec: RoomSpec, now_ms: int) -> None:
        self._sweep(now_ms)
        if spec.room_id in self._rooms:
            raise RoomExistsError("room id in use")
        if len(self._rooms) >= self._max_rooms:
            raise LimitExceededError("the relay holds as many rooms as it may")
        self._rooms[spec.room_id] = _Room(spec=spec, last_seq=dict.fromkeys(spec.participants, 0))
        heapq.heappush(self._gc_heap, (spec.expires_ms + self._retention_ms, spec.room_id))

    async def snapshot(self, room_id: RoomId) -> RoomSnapshot:
        room = self._room(room_id)
        return RoomSnapshot(
            spec=room.spec,
            closed=room.closed,
            joined=frozenset(room.joined),
            delivered=dict(room.last_seq),
            messages=len(room.log),
            total_bytes=room.total_bytes,
            position=len(room.log),
        )

    async def mark_joined(self, room_id: RoomId, party: PartyId, now_ms: int) -> None:
        self._room(room_id).joined.add(party)

    async def append(
        self, room_id: RoomId, messages: Sequence[Message], now_ms: int
    ) -> AppendResult:
        positions: list[int] = []
        try:
            room = self._room(room_id)
            for message in messages:
                counters = AppendCounters(
                    closed=room.closed,
                    messages=len(room.log),
                    total_bytes=room.total_bytes,
                    last_seq=room.last_seq[message.sender],
                )
                check_append(room.spec.limits, counters, message, room.spec.expires_ms, now_ms)
                # Position = 1-based index in the log, so read() can slice.
                position = len(room.log) + 1
                room.log.append(StoredMessage(position=position, message=message))
                room.total_bytes += len(message.payload)
                room.last_seq[message.sender] = message.seq
                key = (message.ceremony_id, message.round)
                room.rounds.setdefault(key, set()).add(message.sender)
                positions.append(position)
        except RelayError as e:
            return AppendResult(tuple(positions), e)
        finally:
            if positions:
                room.notify()
        return AppendResult(tuple(positions), None)

    async def read(self, room_id: RoomId, after: int, limit: int, max_wait_s: float) -> ReadResult:
        room = self._room(room_id)
        if len(room.log) <= after and not room.closed and max_wait_s > 0:
            changed = room.changed
            try:
                async with asyncio.timeout(max_wait_s):
                    await changed.wait()
            except TimeoutError:
                pass
            room = self._room(room_id)
        entries = tuple(room.log[after : after + limit])
        drained = after + len(entries) >= len(room.log)
        return ReadResult(entries=entries, closed=room.closed and drained)

    async def delivered(
        self, room_id: RoomId, ceremony_id: str, round_: int, parties: Sequence[PartyId]
    ) -> frozenset[PartyId]:
        room = self._room(room_id)
        return frozenset(room.rounds.get((ceremony_id, round_), ())).intersection(parties)

    async def close_room(self, room_id: RoomId) -> None:
        room = self._room(room_id)
        if not room.closed:
            room.closed = True
            room.notify()

    async def aclose(self) -> None:
        self._rooms.clear()
        self._gc_heap.clear()
