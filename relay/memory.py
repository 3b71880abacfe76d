"""The embedded in-memory backend (the default): one asyncio event loop, one process.

Atomicity comes from asyncio itself: ``append`` has no ``await`` between its
check and its write. Waiting readers park on a per-room ``asyncio.Event`` that
is set and replaced on every change. A room that is closed, or reaches its
expiry, is ended at once: its log is dropped and its reservation returned to
the budget (``relay.budget``); a tombstone (the spec alone) stays for
``retention_ms`` so callers hear "closed"/"expired", not "not found". Every
call first ends the rooms whose time has come.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from relay.backend import BackendUsage
from relay.budget import Quota, Usage, check_reserve
from relay.errors import RelayError, RoomExistsError, RoomNotFoundError
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
from relay.spent import DEFAULT_MAX_SPENT, SpentCredentials

__all__ = ["MemoryBackend"]


@dataclass(eq=False)
class _Room:
    spec: RoomSpec
    log: list[StoredMessage] = field(default_factory=list)
    closed: bool = False
    joined: set[PartyId] = field(default_factory=set)
    last_seq: dict[PartyId, int] = field(default_factory=dict)
    total_bytes: int = 0
    position: int = 0
    ended: bool = False
    rounds: dict[tuple[str, int], set[PartyId]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class MemoryBackend:
    """Rooms in this process's memory; implements ``relay.backend.Backend``."""

    def __init__(
        self, *, retention_ms: int = 30 * 1000, max_spent_credentials: int = DEFAULT_MAX_SPENT
    ) -> None:
        """Create an empty backend.

        Arguments:
            retention_ms: how long an ended room's tombstone is kept.
            max_spent_credentials: most live CreateRoom credentials remembered
                per coordinator (``relay.spent``).
        """
        self._spent = SpentCredentials(max_spent_credentials)
        self._rooms: dict[RoomId, _Room] = {}
        # (when, tie-breaker, room): a live room ends at its expiry, a tombstone
        # goes at the end of its retention. Entries for a room no longer in the
        # table (or already ended, for its expiry) are skipped.
        self._timers: list[tuple[int, int, _Room]] = []
        self._timer_ids = itertools.count()
        self._retention_ms = retention_ms
        self._total = Usage()
        self._held: dict[str, Usage] = {}
        self._stored_bytes = 0
        # The latest time a caller passed in, for calls that carry none.
        self._now_ms = 0

    def _room(self, room_id: RoomId) -> _Room:
        room = self._rooms.get(room_id)
        if room is None:
            raise RoomNotFoundError("no such room")
        return room

    def _at(self, when: int, room: _Room) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_ids), room))

    def _sweep(self, now_ms: int | None = None) -> None:
        self._now_ms = max(self._now_ms, now_ms or 0)
        while self._timers and self._timers[0][0] <= self._now_ms:
            _, _, room = heapq.heappop(self._timers)
            if self._rooms.get(room.spec.room_id) is not room:
                continue
            if not room.ended:
                self._end(room)
            else:
                del self._rooms[room.spec.room_id]

    def _end(self, room: _Room) -> None:
        """Drop the room's log, return its reservation, keep a tombstone."""
        room.ended = True
        self._stored_bytes -= room.total_bytes
        room.log = []
        room.rounds = {}
        owner, reserved = room.spec.owner, room.spec.limits.max_total_bytes
        held = self._held[owner]
        self._held[owner] = Usage(held.rooms - 1, held.reserved_bytes - reserved)
        self._total = Usage(self._total.rooms - 1, self._total.reserved_bytes - reserved)
        self._at(self._now_ms + self._retention_ms, room)
        room.notify()

    async def spend_credential(
        self, owner: str, nonce: bytes, forget_after_ms: int, now_ms: int
    ) -> None:
        self._spent.spend(owner, nonce, forget_after_ms, now_ms)

    async def create_room(
        self, spec: RoomSpec, now_ms: int, *, quota: Quota, budget: Quota
    ) -> None:
        self._sweep(now_ms)
        if spec.room_id in self._rooms:
            raise RoomExistsError("room id in use")
        room_bytes = spec.limits.max_total_bytes
        held = self._held.get(spec.owner, Usage())
        check_reserve(
            budget=budget, total=self._total, owner=spec.owner, quota=quota, held=held,
            room_bytes=room_bytes,
        )  # fmt: skip
        self._held[spec.owner] = Usage(held.rooms + 1, held.reserved_bytes + room_bytes)
        self._total = Usage(self._total.rooms + 1, self._total.reserved_bytes + room_bytes)
        self._rooms[spec.room_id] = _Room(spec=spec, last_seq=dict.fromkeys(spec.participants, 0))
        self._at(spec.expires_ms, self._rooms[spec.room_id])

    async def snapshot(self, room_id: RoomId) -> RoomSnapshot:
        self._sweep()
        room = self._room(room_id)
        return RoomSnapshot(
            spec=room.spec,
            closed=room.closed,
            joined=frozenset(room.joined),
            delivered=dict(room.last_seq),
            messages=room.position,
            total_bytes=room.total_bytes,
            position=room.position,
        )

    async def mark_joined(self, room_id: RoomId, party: PartyId, now_ms: int) -> None:
        self._sweep(now_ms)
        self._room(room_id).joined.add(party)

    async def append(
        self, room_id: RoomId, messages: Sequence[Message], now_ms: int
    ) -> AppendResult:
        self._sweep(now_ms)
        positions: list[int] = []
        try:
            room = self._room(room_id)
            for message in messages:
                counters = AppendCounters(
                    closed=room.closed,
                    messages=room.position,
                    total_bytes=room.total_bytes,
                    last_seq=room.last_seq[message.sender],
                )
                check_append(room.spec.limits, counters, message, room.spec.expires_ms, now_ms)
                # Position = 1-based index in the log, so read() can slice.
                room.position += 1
                room.log.append(StoredMessage(position=room.position, message=message))
                room.total_bytes += len(message.payload)
                self._stored_bytes += len(message.payload)
                room.last_seq[message.sender] = message.seq
                key = (message.ceremony_id, message.round)
                room.rounds.setdefault(key, set()).add(message.sender)
                positions.append(room.position)
        except RelayError as e:
            return AppendResult(tuple(positions), e)
        finally:
            if positions:
                room.notify()
        return AppendResult(tuple(positions), None)

    async def read(self, room_id: RoomId, after: int, limit: int, max_wait_s: float) -> ReadResult:
        self._sweep()
        room = self._room(room_id)
        if len(room.log) <= after and not room.ended and max_wait_s > 0:
            changed = room.changed
            try:
                async with asyncio.timeout(max_wait_s):
                    await changed.wait()
            except TimeoutError:
                pass
        # An ended room has no log left: its readers get the end, nothing more.
        entries = tuple(room.log[after : after + limit])
        drained = after + len(entries) >= len(room.log)
        return ReadResult(entries=entries, closed=room.closed and drained)

    async def delivered(
        self, room_id: RoomId, ceremony_id: str, round_: int, parties: Sequence[PartyId]
    ) -> frozenset[PartyId]:
        room = self._room(room_id)
        return frozenset(room.rounds.get((ceremony_id, round_), ())).intersection(parties)

    async def close_room(self, room_id: RoomId, now_ms: int) -> None:
        self._sweep(now_ms)
        room = self._room(room_id)
        if not room.closed:
            room.closed = True
            if not room.ended:
                self._end(room)
            room.notify()

    async def usage(self, now_ms: int) -> BackendUsage:
        self._sweep(now_ms)
        return BackendUsage(
            rooms=self._total.rooms,
            reserved_bytes=self._total.reserved_bytes,
            stored_bytes=self._stored_bytes,
            tombstones=len(self._rooms) - self._total.rooms,
        )

    async def aclose(self) -> None:
        self._rooms.clear()
        self._timers.clear()
