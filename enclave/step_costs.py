"""Where a ceremony step runs: on the event loop when it is measured cheap, else in a thread.

A hand-off to a worker thread (``asyncio.to_thread``) costs tens of
microseconds of CPU and two context switches each way, and buys the loop
little for a short step, which holds the GIL for most of its run anyway.
Expensive steps (a DKLs23 OT extension, a keygen's pair setup) must still
leave the loop, or every other ceremony waits behind them. So each step
kind's cost is measured, as CPU time of the thread that ran it
(``time.thread_time``: other processes' load does not inflate it), and kept
as a moving average: a kind runs inline once its average is below
``INLINE_BELOW_S``, in a thread otherwise, and a kind never seen runs in a
thread first.

Only CPU-bound steps come here: anything that may wait on I/O (KMS, the
host) stays off the loop whatever it costs in CPU.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Hashable
from typing import Final, TypeVar

from enclave.pair_setups import NO_LOCKS, PairLocks

__all__ = [
    # Types
    "StepCosts",
    # Constants
    "INLINE_BELOW_S",
]

INLINE_BELOW_S: Final = 0.002
"""Steps cheaper than this (CPU seconds, on average) run on the event loop: every step of a
FROST signature, even on a slow 2-core machine (the costliest, the request's checks and
planning, takes ~1 ms there), while a DKLs23 OT extension (tens of ms) still leaves it."""
_WEIGHT: Final = 0.25  # of the newest measurement in the moving average
_MAX_KINDS: Final = 4096  # step kinds measured; others always run in a thread

_T = TypeVar("_T")


class StepCosts:
    """Measured CPU cost per step kind, and the choice of where the next one runs."""

    def __init__(self, inline_below_s: float = INLINE_BELOW_S) -> None:
        self._inline_below_s = inline_below_s
        self._costs: dict[Hashable, float] = {}
        self._lock = threading.Lock()  # measurements also arrive from worker threads

    def cost(self, kind: Hashable) -> float | None:
        """The average CPU seconds of ``kind`` so far (None: never measured)."""
        return self._costs.get(kind)

    def cheap(self, kind: Hashable) -> bool:
        """Whether ``kind`` has been measured below the inline threshold."""
        cost = self._costs.get(kind)
        return cost is not None and cost < self._inline_below_s

    def record(self, kind: Hashable, seconds: float) -> None:
        """Fold one measurement of ``kind`` into its average."""
        with self._lock:
            old = self._costs.get(kind)
            if old is not None:
                self._costs[kind] = old + _WEIGHT * (seconds - old)
            elif len(self._costs) < _MAX_KINDS:
                self._costs[kind] = seconds

    def _timed(self, kind: Hashable, step: Callable[[], _T], locks: PairLocks) -> _T:
        with locks.held():
            start = time.thread_time()
            result = step()
            self.record(kind, time.thread_time() - start)
        return result

    async def run(self, kind: Hashable, step: Callable[[], _T], locks: PairLocks = NO_LOCKS) -> _T:
        """Run ``step`` holding ``locks``: inline if ``kind`` is cheap and the locks are free
        now, in a worker thread otherwise (where waiting for the locks blocks no one).

        Returns:
            What ``step`` returns.

        Raises:
            Whatever ``step`` raises.
        """
        if self.cheap(kind) and locks.acquire_now():
            try:
                start = time.thread_time()
                result = step()
                self.record(kind, time.thread_time() - start)
            finally:
                locks.release()
            return result
        return await asyncio.to_thread(self._timed, kind, step, locks)
