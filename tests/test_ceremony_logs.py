"""One log line per ceremony at INFO in each process (relay, host, enclave); the rest at DEBUG.

Real processes (``client.cli.devstack``) at their default level: a signature
adds exactly one line to each log, and that line names the ceremony's room.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from client.cli.devstack import DevStack, running_stack
from client.sdk.party import PartyIdentity
from shardkeep import eventloop
from tests.stack_harness import RawDigestWalletClient

SIGNATURES = 3
PROCESSES = ("relay", "host", "enclave")


def _lines(stack: DevStack, name: str) -> list[dict[str, object]]:
    events = []
    for line in stack.log_path(name).read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


@pytest.mark.parametrize("transport", ["call", "session"])
def test_each_process_logs_one_info_line_per_signature(tmp_path: Path, transport: str) -> None:
    """Also on the host's session transport to the enclave (``--enclave-transport``)."""

    async def body() -> dict[str, list[dict[str, object]]]:
        async with (
            running_stack(tmp_path / "run", host_args=["--enclave-transport", transport]) as stack,
            RawDigestWalletClient(
                stack.host_address, stack.relay_address, stack.coordinator_key,
                root_certificate=stack.root_certificate,
            ) as wallets,
        ):  # fmt: skip
            device = PartyIdentity.generate()
            wallet = await wallets.create_wallet("bip340", [device], threshold=2)
            before = {name: len(_lines(stack, name)) for name in PROCESSES}
            for _ in range(SIGNATURES):
                await wallets.sign(wallet, bytes(32), {0: device})
            # A signature returns before the server's side ends (and its room closes).
            await wallets.settle()
            async with asyncio.timeout(10):  # each process writes its line as it finishes
                while any(len(_lines(stack, n)) < before[n] + SIGNATURES for n in PROCESSES):
                    await asyncio.sleep(0.05)
            return {name: _lines(stack, name)[before[name] :] for name in PROCESSES}

    logged = eventloop.run(body())

    assert {name: [e["event"] for e in events] for name, events in logged.items()} == {
        "relay": ["room closed"] * SIGNATURES,
        "host": ["ceremony finished"] * SIGNATURES,
        "enclave": ["ceremony finished"] * SIGNATURES,
    }
    for events in logged.values():
        assert all(e["level"] == "info" for e in events)
        # Each line is a different ceremony's, and names its room.
        assert len({e["room_id"] for e in events}) == SIGNATURES
    host = logged["host"]
    assert all(e["code"] == "OK" and isinstance(e["duration_ms"], float) for e in host)
