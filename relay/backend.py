"""The storage contract the relay service runs on (in-memory or Redis).

A backend stores rooms and each room's append-only log. It must make
each ``append`` atomic across every relay process that shares it (the check of
``rooms.check_append`` and the write are one step), so that per-sender order and
seq are enforced even when a party's envelopes reach different relays. It never
interprets payloads.

A backend also keeps the budget (``relay.budget``): a room reserves its
``max_total_bytes`` against the global budget and its coordinator's quota when
it is created, and ends the moment it is closed or expires: its log is dropped,
its reservation returned, and only a tombstone (the spec) stays for
``RelayConfig.retention_ms``.

And it keeps the spent CreateRoom credentials (``relay.spent``), so that a
credential creates one room across every relay that shares the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from relay.budget import Quota
from relay.rooms import AppendResult, Message, PartyId, ReadResult, RoomId, RoomSnapshot, RoomSpec

__all__ = ["Backend", "BackendUsage"]


@dataclass(frozen=True)
class BackendUsage:
    """What the relay holds now (for metrics and tests).

    Attributes:
        rooms: live rooms (each holding a reservation).
        reserved_bytes: the sum of their ``max_total_bytes``.
        stored_bytes: payload bytes in their logs (-1 where the backend cannot
            count them cheaply).
        tombstones: ended rooms still remembered (-1 where unknown).
    """

    rooms: int
    reserved_bytes: int
    stored_bytes: int
    tombstones: int


class Backend(Protocol):
    """Room storage. All methods may raise ``BackendUnavailableError``."""

    async def spend_credential(
        self, owner: str, nonce: bytes, forget_after_ms: int, now_ms: int
    ) -> None:
        """Spend a CreateRoom credential of coordinator ``owner`` (``relay.spent``).

        Arguments:
            owner: the coordinator's name.
            nonce: the credential's nonce.
            forget_after_ms: when the credential lapses (its nonce may go then).
            now_ms: the relay's clock.

        Raises:
            UnauthenticatedError: the credential was spent before.
            QuotaExceededError: the coordinator's record of spent credentials is full.
        """
        ...

    async def create_room(
        self, spec: RoomSpec, now_ms: int, *, quota: Quota, budget: Quota
    ) -> None:
        """Store a new room, reserving ``spec.limits.max_total_bytes``.

        Arguments:
            spec: the room; ``spec.owner`` names the coordinator.
            now_ms: the relay's clock (rooms expired by then are ended first).
            quota: the coordinator's quota.
            budget: the relay's global budget (over every relay of a shared backend).

        Raises:
            RoomExistsError: the id is in use (tombstones included).
            QuotaExceededError: the coordinator's quota or the global budget
                would be passed.
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
        wait). ``closed`` is set once the room is closed (its log is then gone:
        entries not yet read are dropped). Expiry is the caller's business: it knows
        ``expires_ms`` and bounds ``max_wait_s`` by it.

        Raises:
            RoomNotFoundError: the room is gone (e.g. Redis restarted under it).
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

    async def close_room(self, room_id: RoomId, now_ms: int) -> None:
        """Close and end the room at once (idempotent): its log is dropped and
        its reservation returned; readers get ``closed`` next.

        Raises:
            RoomNotFoundError: no such room.
        """
        ...

    async def usage(self, now_ms: int) -> BackendUsage:
        """Return what the backend holds at ``now_ms`` (ending expired rooms
        first; the totals over every relay, for Redis)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
