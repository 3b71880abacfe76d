"""What the service benchmarks share: their transport options, and a development
stack with an SDK client on the transports chosen (docs/transport.md)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from client.cli.devstack import DevStack, running_stack
from client.sdk.wallet import WalletClient

TransportName = Literal["call", "session"]


def add_transport_options(parser: argparse.ArgumentParser) -> None:
    """``--enclave-transport`` (default ``session``, as the host's), and ``--relay-transport``
    and ``--host-transport`` (``call``, ``session`` or ``both``: one run on each)."""
    parser.add_argument(
        "--enclave-transport", choices=("call", "session"), default="session",
        help="the host's transport to the enclave (docs/transport.md)",
    )  # fmt: skip
    parser.add_argument(
        "--relay-transport", choices=("call", "session", "both"), default="both",
        help="the host's and the SDK's transport to the relay (docs/transport.md)",
    )  # fmt: skip
    parser.add_argument(
        "--host-transport", choices=("call", "session", "both"), default="call",
        help="the SDK's transport to the host: a call per ceremony, or Host.Session",
    )  # fmt: skip


def transports(choice: str) -> tuple[TransportName, ...]:
    """The transports a ``call|session|both`` option names, in the order they run."""
    return ("call", "session") if choice == "both" else (choice,)  # type: ignore[return-value]


@contextlib.asynccontextmanager
async def stack_with_client(
    directory: Path,
    enclave_transport: str,
    relay_transport: TransportName,
    host_transport: TransportName,
) -> AsyncIterator[tuple[DevStack, WalletClient]]:
    """The development stack under ``directory`` (its host on ``enclave_transport`` and
    ``relay_transport``) and an SDK client of it on ``relay_transport`` and ``host_transport``."""
    host_args = ["--enclave-transport", enclave_transport, "--relay-transport", relay_transport]
    async with (
        running_stack(directory, host_args=host_args) as stack,
        WalletClient(
            stack.host_address, stack.relay_address, stack.coordinator_key,
            root_certificate=stack.root_certificate, relay_transport=relay_transport,
            host_transport=host_transport,
        ) as wallets,
    ):  # fmt: skip
        yield stack, wallets
