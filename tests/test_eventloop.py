"""Every process runs on uvloop (``shardkeep.eventloop``), and grpc.aio serves on it:
a unary call and a bidirectional stream through a real relay, on Unix sockets and TCP."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest
import uvloop

from relay.memory import MemoryBackend
from shardkeep import eventloop
from tests.relay_harness import relay

ROOT = Path(__file__).resolve().parents[1]
# Packages whose processes own an event loop; the bridge stays on asyncio's
# loop (AF_VSOCK, which uvloop does not take: shardkeep/eventloop.py).
LOOP_OWNERS = ("host", "relay", "enclave", "coordinator", "client", "bench", "devkms", "shardkeep")
STANDARD_LOOP = {"shardkeep/bridge.py"}


async def _relay_round_trip(address: str) -> bytes:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    async with relay(MemoryBackend(), address=address) as client:
        room = await client.create_room(["a", "b"])  # unary
        tokens = room.join_tokens
        async with (
            client.join(room.room_id, "a", tokens["a"]) as a,
            client.join(room.room_id, "b", tokens["b"]) as b,
        ):  # bidirectional streams
            await a.send(b"on uvloop", ceremony_id="c", round_=1, recipient="b")
            delivery = await asyncio.wait_for(b.receive(), 10)
        await client.close_room(room.room_id, room.admin_token)
        return bytes(delivery.envelope.payload)


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_grpc_aio_serves_on_uvloop(transport: str, tmp_path: Path) -> None:
    address = f"unix:{tmp_path / 'relay.sock'}" if transport == "unix" else "127.0.0.1:0"
    assert eventloop.run(_relay_round_trip(address)) == b"on uvloop"


def test_run_returns_and_raises_like_asyncio_run() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def fail() -> None:
        raise LookupError("from the coroutine")

    assert eventloop.run(answer()) == 42
    with pytest.raises(LookupError, match="from the coroutine"):
        eventloop.run(fail())


def _asyncio_run_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "run"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "asyncio"
    ]


def test_every_process_starts_its_loop_through_shardkeep_eventloop() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in LOOP_OWNERS
        for path in sorted((ROOT / package).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in STANDARD_LOOP
        for line in _asyncio_run_calls(path)
    ]
    assert offenders == []


def test_the_checker_sees_asyncio_run(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import asyncio\n\nasyncio.run(main())\neventloop.run(main())\n")
    assert _asyncio_run_calls(module) == [3]
