"""One real development stack (devkms, relay, enclave, host as processes) shared by a test module.

``running_stack`` is an async context manager; a module-scoped fixture cannot
hold an event loop open across tests, so the stack's context runs on its own
thread and loop (``held_in_background``, for other systems too), and each
test talks to the processes over their Unix sockets from its own
``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from client.cli.devstack import DevStack, running_stack
from client.sdk.device import Device, DeviceWallet
from client.sdk.wallet import Wallet, WalletClient

T = TypeVar("T")
S = TypeVar("S")
START_TIMEOUT_S = 90.0
TEST_TIMEOUT_S = 120.0


@contextmanager
def background_stack(
    directory: Path,
    *,
    tls: bool = False,
    store_url: str | None = None,
    host_args: Sequence[str] = (),
    coordinator: bool = False,
) -> Iterator[DevStack]:
    """Start the stack under ``directory`` on a helper thread; stop it on exit.

    ``tls``: the relay and host serve TLS, the host mutual TLS and an API token;
    ``store_url``, ``host_args`` and ``coordinator`` go to ``running_stack``.
    """
    with held_in_background(
        lambda: running_stack(
            directory, tls=tls, store_url=store_url, host_args=host_args, coordinator=coordinator
        )
    ) as stack:
        yield stack


@contextmanager
def held_in_background(
    opened: Callable[[], AbstractAsyncContextManager[S]], start_timeout_s: float = START_TIMEOUT_S
) -> Iterator[S]:
    """Enter ``opened()`` on a helper thread's event loop and hold it open until exit.

    A module-scoped fixture cannot hold a test's event loop open, so the
    system's context runs on its own thread and loop; its value (e.g. a
    running stack) is yielded once entered, within ``start_timeout_s``.
    """
    started = threading.Event()
    box: dict[str, Any] = {}
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None

    async def hold() -> None:
        nonlocal stop, loop
        stop, loop = asyncio.Event(), asyncio.get_running_loop()
        try:
            async with opened() as running:
                box["running"] = running
                started.set()
                await stop.wait()
        except BaseException as e:
            box["error"] = e
            raise
        finally:
            started.set()

    thread = threading.Thread(target=asyncio.run, args=(hold(),), daemon=True)
    thread.start()
    if not started.wait(start_timeout_s) or "running" not in box:
        raise RuntimeError(f"the system did not start: {box.get('error')!r}")
    try:
        yield box["running"]
    finally:
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(60)


class RawDigestWalletClient(WalletClient):
    """The SDK client whose new wallets' default policy set allows raw digests, for tests
    that sign bare digests through the service (``allow_raw_digest``; a test that passes
    a ``policy_set`` of its own or ``allow_raw_digest`` gets what it asks)."""

    async def create_wallet(self, *args: Any, **kwargs: Any) -> Wallet:
        if kwargs.get("policy_set") is None:
            kwargs.setdefault("allow_raw_digest", True)
        return await super().create_wallet(*args, **kwargs)

    async def import_key(self, *args: Any, **kwargs: Any) -> Wallet:
        if kwargs.get("policy_set") is None:
            kwargs.setdefault("allow_raw_digest", True)
        return await super().import_key(*args, **kwargs)


class RawDigestDevice(Device):
    """The device SDK whose new wallets' default policy set allows raw digests, for tests
    that sign bare digests through the coordinator (as ``RawDigestWalletClient``)."""

    async def create_wallet(self, *args: Any, **kwargs: Any) -> DeviceWallet:
        if kwargs.get("policy_set") is None:
            kwargs.setdefault("allow_raw_digest", True)
        return await super().create_wallet(*args, **kwargs)


def wallet_client(stack: DevStack) -> WalletClient:
    """A coordinator's SDK client for the stack (use as ``async with``); its wallets
    allow raw digests (``RawDigestWalletClient``)."""
    return RawDigestWalletClient(
        stack.host_address,
        stack.relay_address,
        stack.coordinator_key,
        root_certificate=stack.root_certificate,
        transport=stack.transport,
    )


def run_with_client(stack: DevStack, body: Callable[[WalletClient], Awaitable[T]]) -> T:
    """Run ``body(client)`` on a fresh event loop, bounded by a timeout."""

    async def main() -> T:
        async with asyncio.timeout(TEST_TIMEOUT_S), wallet_client(stack) as client:
            return await body(client)

    return asyncio.run(main())
