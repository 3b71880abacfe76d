"""The enclave's single-use challenges a coordinator holds for its next ceremonies.

Every ceremony request carries a challenge the enclave issued and has not seen
used (docs/security/replay.md). Asking for one costs a round trip through the
host before a ceremony can start, so a request asks for the next challenge with
its result (``CeremonyRequest.want_next_challenge``), and the coordinator keeps
it here until its next ceremony of the same routing affinity (a host with
several enclaves routes a request to the enclave whose instance tag starts its
challenge; an ECDSA wallet's ceremonies stay on one enclave, where its pair
setups are).

A ceremony that found the pool empty fetches a challenge and still gets a next
one with its result, so the challenges in circulation grow until ceremonies
find one waiting (a signature returns before its result, so one coordinator
signing in a loop needs two), up to the bounds: at most ``per_affinity``
challenges for one affinity and ``total`` in all (past that the least
recently filled affinity gives way). A request asks for its next challenge
only while the pool has room for it, so what the coordinator holds unused in
the enclave's table stays bounded. A challenge within ``margin_s`` of its
expiry is never handed out, and each one is handed out once. Only the event
loop's thread touches the pool (no await inside a method), so concurrent
ceremonies never get the same challenge.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final, NamedTuple

# Internal to WalletClient (no SDK caller uses it): nothing here is public SDK API.
__all__: list[str] = []

INSTANCE_TAG_BYTES: Final = 8  # a challenge's first bytes name the enclave process that issued it
PER_AFFINITY: Final = 32
TOTAL: Final = 256
MARGIN_S: Final = 30  # a challenge this close to its expiry is not sent (clock skew, queueing)


class PooledChallenge(NamedTuple):
    """A challenge and the enclave's Unix time after which it refuses it."""

    challenge: bytes
    not_after_unix: int


class ChallengePool:
    """Unused challenges by routing affinity, bounded; each handed out once."""

    def __init__(
        self,
        *,
        per_affinity: int = PER_AFFINITY,
        total: int = TOTAL,
        margin_s: int = MARGIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._per_affinity = per_affinity
        self._total = total
        self._margin_s = margin_s
        self._clock = clock
        self._pools: OrderedDict[str, deque[PooledChallenge]] = OrderedDict()
        self._size = 0

    def take(self, affinity: str) -> bytes | None:
        """An unused challenge for ``affinity`` that is not near its expiry, or None."""
        pool = self._pools.get(affinity)
        fresh_until = self._clock() + self._margin_s
        found = None
        while pool and found is None:
            pooled = pool.popleft()
            self._size -= 1
            if pooled.not_after_unix >= fresh_until:
                found = pooled.challenge
        if pool is not None and not pool:  # an emptied affinity leaves (one per wallet)
            del self._pools[affinity]
        return found

    def wants(self, affinity: str) -> bool:
        """Whether a ceremony of ``affinity`` should ask for its next challenge: the pool
        has room for it."""
        return len(self._pools.get(affinity, ())) < self._per_affinity

    def put(self, affinity: str, challenge: bytes, not_after_unix: int) -> None:
        """Keep ``challenge`` for a later ceremony of ``affinity`` (dropped when its
        affinity's share is full; the least recently filled affinity gives way when all
        are)."""
        pool = self._pools.setdefault(affinity, deque())
        self._pools.move_to_end(affinity)
        if len(pool) >= self._per_affinity:
            return
        pool.append(PooledChallenge(challenge, not_after_unix))
        self._size += 1
        while self._size > self._total:
            oldest = next(iter(self._pools.values()))
            oldest.popleft()
            self._size -= 1
            if not oldest:
                self._pools.popitem(last=False)

    def forget_issuer(self, challenge: bytes) -> None:
        """Drop every challenge of the enclave process that issued ``challenge``: it refused
        that one as unknown (it restarted, or is another process), so it knows none of them."""
        tag = challenge[:INSTANCE_TAG_BYTES]
        for affinity, pool in list(self._pools.items()):
            kept = deque(p for p in pool if p.challenge[:INSTANCE_TAG_BYTES] != tag)
            self._size -= len(pool) - len(kept)
            if kept:
                self._pools[affinity] = kept
            else:
                del self._pools[affinity]

    def __len__(self) -> int:
        return self._size
