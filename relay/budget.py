"""The relay's resource budget: how many rooms and reserved bytes it holds.

Every room reserves its ``max_total_bytes`` when it is created and gives the
reservation back the moment it is closed or expires, so the payload bytes the
relay can hold never pass ``max_bytes`` and sustained load frees as fast as it
allocates. Each coordinator has its own quota inside the global budget, so one
coordinator that fills its quota leaves the rest for the others; refusals name
the quota that was hit (RESOURCE_EXHAUSTED).

``check_reserve`` is the one rule; the in-memory backend calls it and the Redis
backend's reserve script mirrors it line for line.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.errors import QuotaExceededError

__all__ = ["Quota", "Usage", "check_reserve"]


@dataclass(frozen=True)
class Quota:
    """Most rooms and reserved bytes held at once, by one coordinator or the relay."""

    max_rooms: int
    max_bytes: int


@dataclass(frozen=True)
class Usage:
    """Rooms and reserved bytes held now."""

    rooms: int = 0
    reserved_bytes: int = 0


def check_reserve(
    *, budget: Quota, total: Usage, owner: str, quota: Quota, held: Usage, room_bytes: int
) -> None:
    """Raise unless one more room reserving ``room_bytes`` fits.

    Arguments:
        budget: the relay's global budget.
        total: what every coordinator holds now.
        owner: the coordinator's name (for the message).
        quota: the coordinator's quota.
        held: what this coordinator holds now.
        room_bytes: the new room's ``max_total_bytes``.

    Raises:
        QuotaExceededError: the coordinator's quota first, then the global budget.
    """
    if held.rooms + 1 > quota.max_rooms:
        raise QuotaExceededError(f"coordinator {owner!r} room quota {quota.max_rooms} reached")
    if held.reserved_bytes + room_bytes > quota.max_bytes:
        raise QuotaExceededError(f"coordinator {owner!r} byte quota {quota.max_bytes} reached")
    if total.rooms + 1 > budget.max_rooms:
        raise QuotaExceededError(f"relay room budget {budget.max_rooms} reached")
    if total.reserved_bytes + room_bytes > budget.max_bytes:
        raise QuotaExceededError(f"relay byte budget {budget.max_bytes} reached")
