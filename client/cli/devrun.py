"""``python -m client.cli.devrun DIR [--tls]``: hold a development stack until SIGTERM.

What ``shardkeep dev up`` starts in a session of its own: it runs
``client.cli.devstack.running_stack`` with the coordinator, writes the
stack's record (``client.cli.devstate``) once every process is healthy, and
on SIGTERM or SIGINT stops the processes (coordinator, host, enclave, relay,
devkms, each draining gracefully) and deletes the record. Its own output goes
to ``DIR/devrun.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from client.cli.devstack import DevStack, running_stack
from client.cli.devstate import RECORD, STATE_ENV, StackRecord, write_record
from shardkeep import eventloop

__all__ = ["environment_of", "main"]


def environment_of(stack: DevStack) -> dict[str, str]:
    """The ``SHARDKEEP_*`` variables that point the CLI at ``stack`` (its state in ``DIR/cli``)."""
    directory = stack.directory
    environment = {
        "SHARDKEEP_HOST": stack.host_address,
        "SHARDKEEP_RELAY": stack.relay_address,
        "SHARDKEEP_COORDINATOR_KEY": str(directory / "coordinator.key"),
        "SHARDKEEP_ROOT": str(directory / "pki" / "root.pem"),
        STATE_ENV: str(directory / "cli"),
    }
    if stack.tls is not None:
        environment |= {
            "SHARDKEEP_SERVER_CA": str(stack.tls.ca),
            "SHARDKEEP_CLIENT_CERT": str(stack.tls.client_certificate),
            "SHARDKEEP_CLIENT_KEY": str(stack.tls.client_key),
            "SHARDKEEP_API_TOKEN_FILE": str(directory / "api-token"),
        }
    return environment


def _record_of(stack: DevStack) -> StackRecord:
    return StackRecord(
        directory=stack.directory,
        supervisor=os.getpid(),
        pids={name: process.pid for name, process in stack.processes.items()},
        # devkms speaks HTTP to the enclave only; nothing else needs its address
        addresses={name: stack.address_of(name) for name in stack.processes if name != "devkms"},
        environment=environment_of(stack),
        enrollment_codes=stack.enrollment_codes,
        tls=stack.tls is not None,
    )


async def _hold(directory: Path, tls: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running_stack(directory, tls=tls, coordinator=True) as stack:
            write_record(_record_of(stack))
            print(f"dev stack up under {directory}", flush=True)
            await stop.wait()
            print("stopping the dev stack", flush=True)
    finally:
        (directory / RECORD).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m client.cli.devrun", description=__doc__)
    parser.add_argument("directory", type=Path, help="the stack's directory (made by dev up)")
    parser.add_argument("--tls", action="store_true", help="TLS, mutual TLS and an API token")
    args = parser.parse_args(argv)
    eventloop.run(_hold(args.directory.resolve(), args.tls))


if __name__ == "__main__":
    main()
