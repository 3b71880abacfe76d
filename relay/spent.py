"""Spent CreateRoom credentials: each one creates at most one room.

A credential (``relay.admission``) is valid for ``window_ms`` around its issue
time; its nonce is remembered until that validity has passed, so a captured
credential replayed later is refused. The record lives with the rooms it
guards (``Backend.spend_credential``): in the in-memory backend's process, or
in Redis, where every relay of a deployment shares it and a relay restart
forgets nothing. Each coordinator has its own bounded record: a coordinator
that mints credentials faster than they lapse fills only its own, and is
refused (RESOURCE_EXHAUSTED) rather than a replay let through.

``SpentCredentials`` is the rule; the Redis backend's spend script mirrors it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from relay.errors import QuotaExceededError, UnauthenticatedError

__all__ = ["DEFAULT_MAX_SPENT", "SpentCredentials", "replayed", "record_full"]

DEFAULT_MAX_SPENT: Final = 200_000
"""Most live credentials remembered per coordinator (about 1,600 rooms/s for a 60 s window)."""


def replayed() -> UnauthenticatedError:
    """The refusal of a credential already spent."""
    return UnauthenticatedError("replayed coordinator credential")


def record_full(owner: str, max_spent: int) -> QuotaExceededError:
    """The refusal when ``owner``'s record of spent credentials is full."""
    return QuotaExceededError(
        f"coordinator {owner!r} credential record full ({max_spent} in the validity window)"
    )


class SpentCredentials:
    """Per-coordinator records of spent credential nonces, in this process."""

    def __init__(self, max_spent: int = DEFAULT_MAX_SPENT) -> None:
        """Arguments:
        max_spent: most live credentials remembered per coordinator.
        """
        self._max_spent = max_spent
        # owner -> nonce -> when it may be forgotten; insertion order is nearly
        # time order (credentials are spent within their window).
        self._spent: dict[str, OrderedDict[bytes, int]] = {}

    def spend(self, owner: str, nonce: bytes, forget_after_ms: int, now_ms: int) -> None:
        """Spend ``owner``'s credential ``nonce``.

        Raises:
            UnauthenticatedError: it was spent before.
            QuotaExceededError: ``owner``'s record is full.
        """
        spent = self._spent.setdefault(owner, OrderedDict())
        while spent:
            oldest, until = next(iter(spent.items()))
            if until > now_ms:
                break
            del spent[oldest]
        if nonce in spent:
            raise replayed()
        if len(spent) >= self._max_spent:
            raise record_full(owner, self._max_spent)
        spent[nonce] = forget_after_ms
