"""gRPC's own CPU cost per message, with nothing of the service around it.

Two processes on a Unix socket, set up as the service's are: a server from
``shardkeep.server.new_server`` (health service, ``MalformedRequests``, the
message size limits) and a client channel from ``shardkeep.tls.open_channel``
(the retry service config). The client sends 300-byte messages and the server
echoes them: on one bidirectional stream (what a session stream's frame costs)
and as unary calls (what a call costs). Reported per round trip: each
process's CPU microseconds (``/proc``, all threads) and the voluntary context
switches of both.

``python -m bench.bench_grpc [--messages N] [--standard-loop]``;
``--standard-loop`` runs both processes on asyncio's own event loop instead
of uvloop, to compare (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc

from bench.bench_cpu import Sample, sample
from shardkeep import eventloop
from shardkeep.server import bind, new_server
from shardkeep.tls import open_channel

__all__ = ["main"]

SERVICE = "shardkeep.bench.Echo"
MESSAGE = os.urandom(300)
WARMUP = 100
_T = TypeVar("_T")
PerRoundTrip = tuple[float, float, float]  # client CPU us, server CPU us, voluntary switches


async def _echo_stream(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


async def _echo_call(request: bytes, context: object) -> bytes:
    return request


async def _serve(socket_path: str) -> None:
    server, _ = new_server()
    handlers = {
        "Stream": grpc.stream_stream_rpc_method_handler(
            _echo_stream, request_deserializer=bytes, response_serializer=bytes
        ),
        "Call": grpc.unary_unary_rpc_method_handler(
            _echo_call, request_deserializer=bytes, response_serializer=bytes
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    bind(server, f"unix:{socket_path}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


def _per_round_trip(
    before: tuple[Sample, Sample], after: tuple[Sample, Sample], count: int
) -> PerRoundTrip:
    """Client and server CPU microseconds and both's voluntary switches per round trip."""
    client = (after[0].cpu_ms - before[0].cpu_ms) * 1000 / count
    server = (after[1].cpu_ms - before[1].cpu_ms) * 1000 / count
    switches = sum(a.switches - b.switches for a, b in zip(after, before, strict=True))
    return client, server, switches / count


async def _measure(socket_path: str, server_pid: int, messages: int) -> dict[str, PerRoundTrip]:
    pids = (os.getpid(), server_pid)
    async with open_channel(f"unix:{socket_path}") as channel:
        open_stream = channel.stream_stream(
            f"/{SERVICE}/Stream", request_serializer=bytes, response_deserializer=bytes
        )
        stream = open_stream()  # type: ignore[call-arg]  # grpc.aio: written with write()
        call = channel.unary_unary(
            f"/{SERVICE}/Call", request_serializer=bytes, response_deserializer=bytes
        )
        for _ in range(WARMUP):
            await stream.write(MESSAGE)
            await stream.read()
            await call(MESSAGE)
        results: dict[str, PerRoundTrip] = {}
        before = (sample(pids[0]), sample(pids[1]))
        for _ in range(messages):
            await stream.write(MESSAGE)
            await stream.read()
        after = (sample(pids[0]), sample(pids[1]))
        results["stream message"] = _per_round_trip(before, after, messages)
        await stream.done_writing()
        calls = messages // 4  # a call costs about three stream messages
        before = (sample(pids[0]), sample(pids[1]))
        for _ in range(calls):
            await call(MESSAGE)
        after = (sample(pids[0]), sample(pids[1]))
        results["unary call"] = _per_round_trip(before, after, calls)
        return results


def _run(main: Coroutine[Any, Any, _T], standard_loop: bool) -> _T:
    if not standard_loop:
        return eventloop.run(main)
    with asyncio.Runner() as runner:  # asyncio's own loop, to compare with uvloop
        return runner.run(main)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.bench_grpc", description=__doc__)
    parser.add_argument("--messages", type=int, default=4000, help="stream round trips")
    parser.add_argument("--standard-loop", action="store_true", help="asyncio's loop, not uvloop")
    parser.add_argument("--serve", metavar="SOCKET", help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args(argv)
    if args.serve:
        _run(_serve(args.serve), args.standard_loop)
        return
    with tempfile.TemporaryDirectory() as directory:
        socket_path = str(Path(directory) / "echo.sock")
        command = [sys.executable, "-m", "bench.bench_grpc", "--serve", socket_path]
        if args.standard_loop:
            command.append("--standard-loop")
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:
            try:
                assert server.stdout is not None
                server.stdout.readline()  # "serving"
                results = _run(_measure(socket_path, server.pid, args.messages), args.standard_loop)
            finally:
                server.terminate()
    loop = "asyncio's loop" if args.standard_loop else "uvloop"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"gRPC per round trip, 300-byte messages, {loop} (load average {load}):")
    print(f"{'':16}{'client us':>10}{'server us':>10}{'vol.cs':>8}")
    for name, (client, server_us, switches) in results.items():
        print(f"{name:16}{client:10.0f}{server_us:10.0f}{switches:8.1f}")


if __name__ == "__main__":
    main()
