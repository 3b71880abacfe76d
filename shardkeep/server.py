"""The common shape of every shardkeep gRPC server (STYLE.md principle 14).

A factory binds the address and returns ``(server, bound_port)`` so tests can
bind ``127.0.0.1:0``; a health service reports SERVING; SIGTERM/SIGINT drain
gracefully: health goes NOT_SERVING first, then ``server.stop(grace)``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shardkeep.tls import ServerTls


class AsyncHealthServicer(Protocol):
    """The parts of ``grpc_health.v1.health.aio.HealthServicer`` the services use
    (grpc-stubs does not describe the asyncio health servicer)."""

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        """Set a service's serving status."""
        ...

    async def enter_graceful_shutdown(self) -> None:
        """Report NOT_SERVING for every service from now on."""
        ...


def new_health_servicer() -> AsyncHealthServicer:
    """A new asyncio gRPC health servicer."""
    servicer: AsyncHealthServicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    return servicer


class BindError(RuntimeError):
    """The server could not listen on the requested address."""


def bind(server: grpc.aio.Server, address: str, tls: ServerTls | None = None) -> int:
    """Listen on ``host:port`` or ``unix:/path``; return the bound TCP port (0 for Unix sockets).

    Arguments:
        server: the server to add the port to.
        address: where to listen.
        tls: serve TLS (mutual TLS with a client CA); None serves plaintext.

    Raises:
        BindError: the address could not be bound.
    """
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.credentials())
    except RuntimeError as e:
        raise BindError(f"cannot listen on {address}") from e
    if address.startswith("unix:"):
        return 0
    if port == 0:
        raise BindError(f"cannot listen on {address}")
    return port


def new_server(
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    max_message_bytes: int = 8 * 1024 * 1024,
) -> tuple[grpc.aio.Server, AsyncHealthServicer]:
    """A ``grpc.aio`` server with a health service (call ``mark_serving`` once started)."""
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    health_servicer = new_health_servicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer


async def mark_serving(health_servicer: AsyncHealthServicer, services: Iterable[str]) -> None:
    for name in ("", *services):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


async def serve_until_signalled(
    server: grpc.aio.Server, health_servicer: AsyncHealthServicer, grace_seconds: float = 5.0
) -> None:
    """Run until SIGTERM or SIGINT, then drain gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_seconds)


async def wait_healthy(channel: grpc.aio.Channel, service: str = "", timeout: float = 10.0) -> None:
    """Poll the health service until ``service`` is SERVING (raise TimeoutError otherwise)."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"service {service!r} not healthy after {timeout} s")
        await asyncio.sleep(0.05)
