"""Enclave steps run on the event loop once measured cheap, in a worker thread otherwise
(``enclave.step_costs``), and always under their pair locks."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from enclave.pair_setups import PairLocks
from enclave.step_costs import INLINE_BELOW_S, StepCosts


def _burn_cpu(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class _Where:
    """A step that records which thread ran it, after burning ``cost_s`` of CPU."""

    def __init__(self, cost_s: float = 0.0) -> None:
        self.cost_s = cost_s
        self.threads: list[int] = []

    def __call__(self) -> str:
        _burn_cpu(self.cost_s)
        self.threads.append(threading.get_ident())
        return "sent"


def test_a_cheap_step_moves_onto_the_loop_after_its_first_measurement() -> None:
    async def body() -> None:
        costs, step = StepCosts(), _Where()
        loop_thread = threading.get_ident()
        assert await costs.run("frost-round", step) == "sent"
        assert step.threads[0] != loop_thread  # never measured: a thread first
        cost = costs.cost("frost-round")
        assert cost is not None and cost < INLINE_BELOW_S
        await costs.run("frost-round", step)
        await costs.run("frost-round", step)
        assert step.threads[1:] == [loop_thread, loop_thread]

    asyncio.run(body())


def test_an_expensive_step_stays_off_the_loop() -> None:
    async def body() -> None:
        costs, step = StepCosts(), _Where(cost_s=4 * INLINE_BELOW_S)
        loop_thread = threading.get_ident()
        for _ in range(3):
            await costs.run("ot-extension", step)
        assert loop_thread not in step.threads
        cost = costs.cost("ot-extension")
        assert cost is not None and cost >= INLINE_BELOW_S

    asyncio.run(body())


def test_a_step_that_grows_expensive_goes_back_to_a_thread() -> None:
    async def body() -> None:
        costs, step = StepCosts(), _Where()
        loop_thread = threading.get_ident()
        await costs.run("step", step)
        await costs.run("step", step)
        assert step.threads[-1] == loop_thread
        step.cost_s = 20 * INLINE_BELOW_S
        await costs.run("step", step)  # measured inline, once
        step.threads.clear()
        await costs.run("step", step)
        assert step.threads != [loop_thread]

    asyncio.run(body())


def test_a_cheap_step_whose_pair_is_busy_waits_in_a_thread_not_on_the_loop() -> None:
    async def body() -> None:
        costs, step = StepCosts(), _Where()
        pair = threading.Lock()
        locks = PairLocks([pair])
        loop_thread = threading.get_ident()
        await costs.run("ecdsa-step", step, locks)
        await costs.run("ecdsa-step", step, locks)
        assert step.threads[-1] == loop_thread and not pair.locked()
        pair.acquire()  # another session's step holds the pair
        pending = asyncio.ensure_future(costs.run("ecdsa-step", step, locks))
        await asyncio.sleep(0.05)
        assert not pending.done()  # waiting for the pair, and the loop still runs
        pair.release()
        assert await pending == "sent"
        assert step.threads[-1] != loop_thread and not pair.locked()

    asyncio.run(body())


def test_locks_are_released_when_an_inline_step_raises() -> None:
    async def body() -> None:
        costs = StepCosts()
        pair = threading.Lock()
        locks = PairLocks([pair])
        await costs.run("step", lambda: None, locks)

        def fail() -> None:
            raise ValueError("bad envelope")

        for _ in range(2):
            with pytest.raises(ValueError, match="bad envelope"):
                await costs.run("step", fail, locks)
            assert not pair.locked()

    asyncio.run(body())


def test_acquire_now_takes_all_or_nothing() -> None:
    first, second = threading.Lock(), threading.Lock()
    locks = PairLocks([first, second])
    second.acquire()
    assert not locks.acquire_now()
    assert not first.locked()
    second.release()
    assert locks.acquire_now()
    assert first.locked() and second.locked()
    locks.release()
    assert not first.locked() and not second.locked()
