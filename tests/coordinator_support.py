"""Helpers for the coordinator tests: a development stack, a coordinator service, devices.

Not tests themselves. A test module imports the fixtures it uses by name
(``stack``: the development stack as processes, one per test module;
``socket_dir``: a short directory for Unix sockets) and lists them in its
``__all__``; ``with_coordinator`` runs an in-process coordinator service on
a Unix socket for one test, and ``new_device`` makes a device that talks to it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.cli.devstack import DevStack
from client.sdk.device import Device
from client.sdk.host_session import HostTransport
from client.sdk.party import PartyIdentity
from client.sdk.transport import Transport
from coordinator.coordinator import Coordinator
from coordinator.service import create_server
from tests.stack_harness import RawDigestDevice, background_stack

__all__ = ["CODES", "stack", "socket_dir", "with_coordinator", "new_device"]

T = TypeVar("T")
CODES = ("code-alice", "code-bob")
"""The enrollment codes ``with_coordinator`` gives its coordinator unless told otherwise."""
Body = Callable[[Coordinator, str], Awaitable[T]]


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevStack]:
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with background_stack(tmp_path_factory.mktemp(name)) as running:
        yield running


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="co-"))  # short: Unix socket paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


def with_coordinator(
    stack: DevStack,
    socket_dir: Path,
    body: Body[T],
    kind: type[Coordinator] = Coordinator,
    codes: Sequence[str | tuple[str, str]] = CODES,
    timeout_s: float = 120,
    host_transport: HostTransport = "call",
    relay_transport: Literal["call", "session"] = "session",
    transport: Transport | None = None,
) -> T:
    """Run ``body(coordinator, address)`` with a coordinator service of ``kind`` serving
    on a Unix socket in ``socket_dir``, enrolling ``codes`` (a code, or a code and its
    account), calling the host over ``host_transport`` and making rooms over
    ``relay_transport``, with ``transport`` (default the stack's); stop it afterwards."""

    async def main() -> T:
        coordinator = kind(
            stack.host_address,
            stack.relay_address,
            stack.coordinator_key,
            transport=transport or stack.transport,
            host_transport=host_transport,
            relay_transport=relay_transport,
            root_certificate=stack.root_certificate,
            enrollment_codes=codes,
        )
        address = f"unix:{socket_dir / 'coordinator.sock'}"
        server, _ = await create_server(address, coordinator)
        await server.start()
        try:
            return await asyncio.wait_for(body(coordinator, address), timeout_s)
        finally:
            await server.stop(None)
            await coordinator.aclose()

    return asyncio.run(main())


def new_device(
    stack: DevStack, address: str, device_key: Ed25519PrivateKey | None = None
) -> Device:
    """A device of its own identity and owner key, talking to the coordinator at ``address``
    (its wallets allow raw digests: ``RawDigestDevice``)."""
    return RawDigestDevice(
        address,
        stack.relay_address,
        identity=PartyIdentity.generate(),
        device_key=device_key or Ed25519PrivateKey.generate(),
        owner_key=Ed25519PrivateKey.generate(),
        root_certificate=stack.root_certificate,
    )
