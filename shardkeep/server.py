"""The common shape of every shardkeep gRPC server.

A factory binds the address and returns ``(server, bound_port)`` so tests can
bind ``127.0.0.1:0``; a health service reports SERVING; SIGTERM/SIGINT drain
gracefully: health goes NOT_SERVING first, then ``server.stop(grace)``. Every
server refuses request bodies that do not parse with INVALID_ARGUMENT, after
its own authentication (``MalformedRequests``).
"""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import structlog
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
    on_malformed: Callable[[str], None] | None = None,
) -> tuple[grpc.aio.Server, AsyncHealthServicer]:
    """A ``grpc.aio`` server with a health service (call ``mark_serving`` once started);
    ``MalformedRequests`` runs after ``interceptors`` and counts with ``on_malformed``."""
    server = grpc.aio.server(
        interceptors=[*interceptors, MalformedRequests(on_malformed=on_malformed)],
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


@dataclass(frozen=True)
class MalformedRequest:
    """Stands in for a request body that did not parse (``MalformedRequests``).

    Attributes:
        method: the full method name (``/package.Service/Method``).
        raw: the body as received (e.g. to check a signature bound to it).
    """

    method: str
    raw: bytes = field(repr=False)


# Called for a malformed unary request before it is refused: a service checks
# what credential it can (and aborts with UNAUTHENTICATED) so that a stranger
# learns nothing more from a bad body than from a good one.
Authenticate = Callable[[MalformedRequest, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[None]]


# grpc-stubs makes the interceptor generic; the runtime class is not subscriptable.
if TYPE_CHECKING:
    _InterceptorBase = grpc.aio.ServerInterceptor[Any, Any]
else:
    _InterceptorBase = grpc.aio.ServerInterceptor


class MalformedRequests(_InterceptorBase):
    """Turn request bodies that do not parse into INVALID_ARGUMENT, logged and counted.

    grpc answers a body it cannot parse with UNKNOWN and Python's exception
    text, before any check of the service. This interceptor makes every
    method's parser tolerant: a bad body becomes a ``MalformedRequest``. A
    unary request is then authenticated (``authenticate``), logged, counted
    (``on_malformed``) and refused with INVALID_ARGUMENT; a streaming method
    receives the ``MalformedRequest`` among its messages and refuses it itself.
    Put it last among a server's interceptors, so that the ones before it
    (e.g. the host's API-token check) run first.
    """

    def __init__(
        self,
        *,
        authenticate: Authenticate | None = None,
        on_malformed: Callable[[str], None] | None = None,
    ) -> None:
        """Arguments:
        authenticate: the service's check for a malformed unary request.
        on_malformed: counts a malformed request, with the method's short name.
        """
        self._authenticate = authenticate
        self._on_malformed = on_malformed
        self._log = structlog.get_logger("shardkeep.rpc")

    def _parser(self, method: str, parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
        def tolerant(raw: bytes) -> Any:
            if parse is None:
                return raw
            try:
                return parse(raw)
            except Exception:
                return MalformedRequest(method, raw)

        return tolerant

    def refused(self, request: MalformedRequest) -> str:
        """Log and count a malformed request; return the status message for it."""
        name = request.method.rsplit("/", 1)[-1]
        self._log.warning("malformed request", method=name, body_bytes=len(request.raw))
        if self._on_malformed is not None:
            self._on_malformed(name)
        return f"malformed {name} request: the body is not a valid message"

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[return-value]  # an unknown method: UNIMPLEMENTED
        method: str = handler_call_details.method
        parser = self._parser(method, handler.request_deserializer)
        for kind in ("unary_unary", "unary_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                return handler._replace(  # type: ignore[no-any-return]
                    request_deserializer=parser, **{kind: self._guard(behavior, kind)}
                )
        return handler._replace(request_deserializer=parser)  # type: ignore[no-any-return]

    def _guard(self, behavior: Callable[..., Any], kind: str) -> Callable[..., Any]:
        async def refuse(
            request: MalformedRequest, context: grpc.aio.ServicerContext[Any, Any]
        ) -> None:
            if self._authenticate is not None:
                await self._authenticate(request, context)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.refused(request))

        if kind == "unary_unary":

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if isinstance(request, MalformedRequest):
                    await refuse(request, context)
                return await behavior(request, context)

            return unary

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, MalformedRequest):
                await refuse(request, context)
            # A server-streaming behavior either yields its responses or writes
            # them with ``context.write`` (a coroutine, as the health Watch does).
            responses = behavior(request, context)
            if inspect.isasyncgen(responses):
                async for response in responses:
                    yield response
            else:
                await responses

        return streaming
