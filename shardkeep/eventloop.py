"""The event loop every shardkeep process runs its asyncio code on: uvloop.

A ceremony is many small gRPC messages, so each process spends much of its
time in the event loop's own machinery (scheduling callbacks, waking tasks,
polling sockets). uvloop runs that machinery in C on libuv; grpc.aio works on
it unchanged (``tests/test_eventloop.py`` serves a call on it).

The vsock bridge (``shardkeep.bridge``) keeps the standard loop: uvloop takes
only TCP and Unix stream sockets, and the bridge's other side is AF_VSOCK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

__all__ = [
    # Functions
    "new_event_loop",
    "run",
]

_T = TypeVar("_T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop event loop (not set as the current one)."""
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` to completion on a new uvloop loop, as ``asyncio.run`` does.

    Returns:
        What ``main`` returns.

    Raises:
        Whatever ``main`` raises.
    """
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
