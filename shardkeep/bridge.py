"""A byte bridge between two stream-socket addresses (docs/architecture.md, "The enclave boundary").

PyPI's grpcio is built without vsock support, so the enclave serves gRPC on a
local Unix socket and this bridge carries the bytes over AF_VSOCK; on the
parent instance the mirror bridge turns a local Unix socket into a vsock
connection to the enclave::

    host process ─unix─▶ bridge (host) ─vsock─▶ bridge (enclave) ─unix─▶ enclave process

    python -m shardkeep.bridge --listen vsock:ANY:5000 --target unix:/run/shardkeep/enclave.sock
    python -m shardkeep.bridge --listen unix:/run/shardkeep/enclave.sock --target vsock:16:5000

Addresses are ``unix:/path``, ``vsock:CID:PORT`` (CID a number or ``ANY``,
``LOCAL``, ``HOST``; PORT a number, or ``ANY`` when listening) and
``tcp:HOST:PORT``. TCP is for tests, and for the enclave's own egress to KMS
(``tcp:127.0.0.1:443`` → ``vsock:3:8000``, the parent's vsock-proxy).

Each accepted connection gets exactly one connection to the target, and bytes
are pumped both ways without being parsed: the bridge is not trusted with
anything (gRPC traffic to the enclave is authenticated end to end above it,
and KMS traffic is TLS that ends inside the enclave). A side's EOF is passed
on as a half-close (``shutdown(SHUT_WR)``), and the connection ends when both
directions have ended or either side fails. Buffers are bounded: the reader
pauses while the other side's write buffer is above ``buffer_bytes``
(``drain``), so a slow peer slows its sender instead of growing memory.
Logs carry connection ids, counts and byte counts, never payloads. On the
parent, ``--metrics-port`` serves the same counters to Prometheus
(``shardkeep_bridge_*``, read from ``Bridge.stats`` at each scrape).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import itertools
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shardkeep.logs import configure
from shardkeep.metrics import MetricsServer

__all__ = [
    # Functions
    "main",
    "parse_address",
    # Exceptions
    "AddressError",
    "BridgeError",
    "VsockUnavailableError",
    # Types
    "Address",
    "Bridge",
    "BridgeStats",
    "TcpAddress",
    "UnixAddress",
    "VsockAddress",
    # Constants
    "VMADDR_CID_ANY",
    "VMADDR_CID_HOST",
    "VMADDR_CID_LOCAL",
    "VMADDR_PORT_ANY",
]

# <linux/vm_sockets.h>; defined here so addresses parse where AF_VSOCK is missing.
VMADDR_CID_ANY: Final = 0xFFFFFFFF
VMADDR_CID_LOCAL: Final = 1
VMADDR_CID_HOST: Final = 2
VMADDR_PORT_ANY: Final = 0xFFFFFFFF
_VSOCK_CID_NAMES: Final = {
    "ANY": VMADDR_CID_ANY,
    "LOCAL": VMADDR_CID_LOCAL,
    "HOST": VMADDR_CID_HOST,
}
_U32_MAX: Final = 0xFFFFFFFF
_UNIX_PATH_MAX: Final = 107  # sun_path is 108 bytes including the terminating NUL

_DEFAULT_BUFFER_BYTES: Final = 256 * 1024
_DEFAULT_MAX_CONNECTIONS: Final = 256
_DEFAULT_CONNECT_TIMEOUT: Final = 5.0
_BACKLOG: Final = 128


### Errors


class BridgeError(Exception):
    """The bridge cannot listen or is misused."""


class AddressError(BridgeError, ValueError):
    """A socket address string is malformed."""


class VsockUnavailableError(BridgeError, OSError):
    """AF_VSOCK is missing from this Python or this kernel."""


### Addresses


@dataclass(frozen=True)
class UnixAddress:
    """``unix:/path``: a Unix domain stream socket."""

    path: str

    kind: Literal["unix"] = "unix"

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class VsockAddress:
    """``vsock:CID:PORT``: an AF_VSOCK stream socket (CID and port are 32-bit)."""

    cid: int
    port: int

    kind: Literal["vsock"] = "vsock"

    def __str__(self) -> str:
        names = {value: name for name, value in _VSOCK_CID_NAMES.items()}
        cid = names.get(self.cid, str(self.cid))
        port = "ANY" if self.port == VMADDR_PORT_ANY else str(self.port)
        return f"vsock:{cid}:{port}"


@dataclass(frozen=True)
class TcpAddress:
    """``tcp:HOST:PORT`` (IPv6 hosts in brackets): a TCP socket."""

    host: str
    port: int

    kind: Literal["tcp"] = "tcp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


Address = UnixAddress | VsockAddress | TcpAddress


def _u32(text: str, what: str, names: dict[str, int]) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise AddressError(f"{what} must be a number or one of {sorted(names)}, got {text!r}")
    value = int(text)
    if value > _U32_MAX:
        raise AddressError(f"{what} must fit in 32 bits, got {text}")
    return value


def parse_address(text: str) -> Address:
    """Parse ``unix:/path``, ``vsock:CID:PORT`` or ``tcp:HOST:PORT``.

    Arguments:
        text: the address. A vsock CID may be a number or ``ANY`` (listen on
            every CID), ``LOCAL`` (1) or ``HOST`` (2, the parent instance); a
            vsock port may be ``ANY`` (the kernel picks one when listening).

    Returns:
        The parsed address.

    Raises:
        AddressError: the text is not one of the three forms, or a number is
            out of range (vsock CID and port are 32-bit, a TCP port 16-bit; a
            Unix path is at most 107 bytes).
    """
    scheme, sep, rest = text.partition(":")
    if not sep:
        raise AddressError(f"address {text!r} must start with unix:, vsock: or tcp:")
    if scheme == "unix":
        if not rest or "\x00" in rest:
            raise AddressError(f"address {text!r} needs a path after unix:")
        if len(os.fsencode(rest)) > _UNIX_PATH_MAX:
            raise AddressError(f"unix socket path longer than {_UNIX_PATH_MAX} bytes: {rest!r}")
        return UnixAddress(rest)
    if scheme == "vsock":
        cid_text, sep, port_text = rest.partition(":")
        if not sep or not cid_text or not port_text:
            raise AddressError(f"address {text!r} must be vsock:CID:PORT")
        cid = _u32(cid_text, "vsock CID", _VSOCK_CID_NAMES)
        port = _u32(port_text, "vsock port", {"ANY": VMADDR_PORT_ANY})
        return VsockAddress(cid, port)
    if scheme == "tcp":
        host, sep, port_text = rest.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port_text.isdigit() or int(port_text) > 0xFFFF:
            raise AddressError(f"address {text!r} must be tcp:HOST:PORT with PORT in 0..65535")
        return TcpAddress(host, int(port_text))
    raise AddressError(f"unknown address scheme {scheme!r} in {text!r}: use unix, vsock or tcp")


def _vsock_socket() -> socket.socket:
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise VsockUnavailableError(
            errno.EAFNOSUPPORT, "AF_VSOCK is not available in this Python build (Linux only)"
        )
    try:
        return socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise VsockUnavailableError(
            e.errno or errno.EAFNOSUPPORT,
            "the kernel refused an AF_VSOCK socket: no vsock transport is loaded "
            "(Nitro parents need the nitro_enclaves driver; enclaves have it built in)",
        ) from e


def _remove_stale_unix_socket(path: str) -> None:
    """Unlink a socket file nobody listens on; refuse to touch anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BridgeError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)  # a live server with a full backlog does not answer at once
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise BridgeError(f"another process is listening on {path}")


def _listening_socket(address: Address, unix_mode: int | None) -> socket.socket:
    if isinstance(address, VsockAddress):
        sock = _vsock_socket()
    elif isinstance(address, UnixAddress):
        _remove_stale_unix_socket(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        if isinstance(address, VsockAddress):
            sock.bind((address.cid, address.port))
        elif isinstance(address, UnixAddress):
            sock.bind(address.path)
            if unix_mode is not None:
                os.chmod(address.path, unix_mode)
        else:
            sock.bind((address.host, address.port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise BridgeError(f"cannot listen on {address}: {e.strerror or e}") from e
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect(
    address: Address, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if isinstance(address, UnixAddress):
        return await asyncio.open_unix_connection(address.path, limit=limit)
    if isinstance(address, TcpAddress):
        return await asyncio.open_connection(address.host, address.port, limit=limit)
    sock = _vsock_socket()
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (address.cid, address.port))
        return await asyncio.open_connection(sock=sock, limit=limit)
    except BaseException:
        sock.close()
        raise


### The bridge


@dataclass(frozen=True)
class BridgeStats:
    """Counters since the bridge started (a snapshot)."""

    active: int
    accepted: int
    rejected: int
    target_failures: int
    bytes_to_target: int
    bytes_from_target: int


class _Counts:
    def __init__(self) -> None:
        self.to_target = 0
        self.from_target = 0


class Bridge:
    """Accept on one address, connect each accepted connection to another, pump bytes.

    Use as ``async with Bridge(listen, target) as bridge: ...`` or call
    :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        listen: Address | str,
        target: Address | str,
        *,
        max_connections: int = _DEFAULT_MAX_CONNECTIONS,
        buffer_bytes: int = _DEFAULT_BUFFER_BYTES,
        connect_timeout: float = _DEFAULT_CONNECT_TIMEOUT,
        unix_mode: int | None = 0o660,
    ) -> None:
        """Configure a bridge (nothing is bound until :meth:`start`).

        Arguments:
            listen: where to accept connections.
            target: where to connect for each accepted connection.
            max_connections: connections beyond this many open ones are closed
                at once (the client sees EOF and retries).
            buffer_bytes: per direction and connection, the most bytes read
                ahead or queued for writing before reading pauses.
            connect_timeout: seconds to reach the target before the client's
                connection is closed.
            unix_mode: permission bits for a listening Unix socket (None: umask).

        Raises:
            AddressError: an address does not parse.
            ValueError: a limit is not positive.
        """
        self.listen = parse_address(listen) if isinstance(listen, str) else listen
        self.target = parse_address(target) if isinstance(target, str) else target
        if max_connections < 1 or buffer_bytes < 1024 or connect_timeout <= 0:
            raise ValueError("max_connections >= 1, buffer_bytes >= 1024, connect_timeout > 0")
        self._max_connections = max_connections
        self._buffer_bytes = buffer_bytes
        self._chunk = min(buffer_bytes, 64 * 1024)
        self._connect_timeout = connect_timeout
        self._unix_mode = unix_mode
        self._server: asyncio.Server | None = None
        self._bound: Address | None = None
        self._unix_inode: tuple[int, int] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._active = 0
        self._accepted = 0
        self._rejected = 0
        self._target_failures = 0
        self._to_target = 0
        self._from_target = 0
        self._closed = asyncio.Event()
        self._log = structlog.get_logger("shardkeep.bridge").bind(
            listen=str(self.listen), target=str(self.target)
        )

    async def __aenter__(self) -> Bridge:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def bound_address(self) -> Address:
        """The listening address with a kernel-chosen port filled in.

        Raises:
            BridgeError: the bridge is not started.
        """
        if self._bound is None:
            raise BridgeError("the bridge is not listening")
        return self._bound

    @property
    def stats(self) -> BridgeStats:
        """Connection and byte counters."""
        return BridgeStats(
            active=self._active,
            accepted=self._accepted,
            rejected=self._rejected,
            target_failures=self._target_failures,
            bytes_to_target=self._to_target,
            bytes_from_target=self._from_target,
        )

    async def start(self) -> None:
        """Bind and start accepting.

        Raises:
            BridgeError: already started, or the address cannot be bound (a
                live Unix socket or a non-socket file at the path, port in use).
            VsockUnavailableError: a vsock address on a system without AF_VSOCK.
        """
        if self._server is not None:
            raise BridgeError("the bridge is already started")
        sock = _listening_socket(self.listen, self._unix_mode)
        try:
            self._server = await asyncio.start_server(
                self._on_connection, sock=sock, limit=self._buffer_bytes
            )
        except BaseException:
            sock.close()
            raise
        name = sock.getsockname()
        if isinstance(self.listen, UnixAddress):
            self._bound = self.listen
            info = os.stat(self.listen.path)
            self._unix_inode = (info.st_dev, info.st_ino)
        elif isinstance(self.listen, VsockAddress):
            self._bound = VsockAddress(self.listen.cid, name[1])
        else:
            self._bound = TcpAddress(self.listen.host, name[1])
        self._log.info("bridge.listening", bound=str(self._bound))

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` is called (start first)."""
        if self._server is None and not self._closed.is_set():
            raise BridgeError("the bridge is not started")
        await self._closed.wait()

    async def close(self, grace: float = 0.0) -> None:
        """Stop accepting, let open connections finish for ``grace`` seconds, then cut them.

        Idempotent. A Unix socket file this bridge created is removed.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._unlink_own_socket()
        handlers = set(self._handlers)
        if handlers and grace > 0:
            await asyncio.wait(handlers, timeout=grace)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
        self._closed.set()
        stats = self.stats
        self._log.info(
            "bridge.stopped",
            accepted=stats.accepted,
            rejected=stats.rejected,
            target_failures=stats.target_failures,
            bytes_to_target=stats.bytes_to_target,
            bytes_from_target=stats.bytes_from_target,
        )

    def _unlink_own_socket(self) -> None:
        # Only our own inode: a successor may already have bound the same path.
        if not isinstance(self.listen, UnixAddress) or self._unix_inode is None:
            return
        with contextlib.suppress(OSError):
            info = os.stat(self.listen.path)
            if (info.st_dev, info.st_ino) == self._unix_inode:
                os.unlink(self.listen.path)
        self._unix_inode = None

    async def _on_connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        # The work runs in its own task so close() can cancel it: asyncio's
        # stream server reports a cancelled callback task as an error.
        task = asyncio.create_task(self._serve_connection(client_reader, client_writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        await asyncio.wait({task})

    async def _serve_connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        conn = next(self._ids)
        if self._active >= self._max_connections:
            self._rejected += 1
            self._log.warning("bridge.connection_rejected", conn=conn, active=self._active)
            client_writer.transport.abort()
            return
        self._accepted += 1
        self._active += 1
        started = time.monotonic()
        counts = _Counts()
        reason = "closed"
        target_writer: asyncio.StreamWriter | None = None
        try:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    target_reader, target_writer = await _connect(self.target, self._buffer_bytes)
            except (OSError, TimeoutError) as e:
                self._target_failures += 1
                reason = "target_unreachable"
                self._log.warning(
                    "bridge.target_unreachable",
                    conn=conn,
                    error=type(e).__name__,
                    errno=getattr(e, "errno", None),
                )
                return
            self._log.debug("bridge.connection_opened", conn=conn, active=self._active)
            for writer in (client_writer, target_writer):
                writer.transport.set_write_buffer_limits(high=self._buffer_bytes)
            reason = await self._pump_both(
                client_reader, client_writer, target_reader, target_writer, counts
            )
        except asyncio.CancelledError:
            reason = "shutdown"
            raise
        finally:
            await _close_writer(client_writer)
            if target_writer is not None:
                await _close_writer(target_writer)
            self._active -= 1
            self._log.info(
                "bridge.connection_closed",
                conn=conn,
                reason=reason,
                bytes_to_target=counts.to_target,
                bytes_from_target=counts.from_target,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                active=self._active,
            )

    async def _pump_both(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        target_reader: asyncio.StreamReader,
        target_writer: asyncio.StreamWriter,
        counts: _Counts,
    ) -> str:
        """Run both directions until both saw EOF or one failed; return why it ended."""
        up = asyncio.create_task(self._pump(client_reader, target_writer, counts, upstream=True))
        down = asyncio.create_task(self._pump(target_reader, client_writer, counts, upstream=False))
        try:
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            up.cancel()
            down.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            raise
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        failures = [t.exception() for t in done if t.exception() is not None]
        return f"error:{type(failures[0]).__name__}" if failures else "closed"

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counts: _Counts,
        *,
        upstream: bool,
    ) -> None:
        while True:
            data = await reader.read(self._chunk)
            if not data:
                break
            writer.write(data)
            if upstream:
                counts.to_target += len(data)
                self._to_target += len(data)
            else:
                counts.from_target += len(data)
                self._from_target += len(data)
            await writer.drain()
        # The source half-closed: pass it on, and keep the other direction open.
        if writer.can_write_eof() and not writer.is_closing():
            with contextlib.suppress(OSError):
                writer.write_eof()


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing():
        writer.close()
    with contextlib.suppress(OSError, asyncio.CancelledError):
        await writer.wait_closed()


class BridgeCollector(Collector):
    """Prometheus view of a bridge's counters, read at each scrape."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    def collect(self) -> Iterator[Metric]:
        stats = self._bridge.stats
        yield GaugeMetricFamily(
            "shardkeep_bridge_connections_active", "Connections open now", value=stats.active
        )
        for name, help_text, value in (
            ("connections_accepted", "Connections accepted", stats.accepted),
            ("connections_rejected", "Connections closed at once (too many open)", stats.rejected),
            (
                "target_failures",
                "Connections whose target could not be reached",
                stats.target_failures,
            ),
            ("bytes_to_target", "Bytes carried to the target", stats.bytes_to_target),
            ("bytes_from_target", "Bytes carried back from the target", stats.bytes_from_target),
        ):
            yield CounterMetricFamily(f"shardkeep_bridge_{name}", help_text, value=value)


def bridge_registry(bridge: Bridge) -> CollectorRegistry:
    """A registry holding ``bridge``'s counters (serve it with ``MetricsServer``)."""
    registry = CollectorRegistry()
    registry.register(BridgeCollector(bridge))
    return registry


### Command line


async def _run(args: argparse.Namespace) -> int:
    log = structlog.get_logger("shardkeep.bridge")
    bridge = Bridge(
        args.listen,
        args.target,
        max_connections=args.max_connections,
        buffer_bytes=args.buffer_bytes,
        connect_timeout=args.connect_timeout,
        unix_mode=int(args.unix_mode, 8),
    )
    try:
        await bridge.start()
    except (BridgeError, OSError) as e:
        log.error("bridge.start_failed", error=str(e))
        return 1
    print(f"shardkeep-bridge listening on {bridge.bound_address}", flush=True)
    metrics = None
    if args.metrics_port is not None:
        metrics = MetricsServer(bridge_registry(bridge), args.metrics_port, args.metrics_address)
        log.info("bridge.metrics", port=metrics.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await bridge.close(grace=args.grace)
    if metrics is not None:
        metrics.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m shardkeep.bridge``.

    Arguments:
        argv: command-line arguments (``sys.argv[1:]`` if None).
    """
    parser = argparse.ArgumentParser(
        prog="python -m shardkeep.bridge",
        description="Carry byte streams between unix:, vsock: and tcp: socket addresses.",
    )
    parser.add_argument("--listen", required=True, help="unix:/path, vsock:CID:PORT, tcp:H:P")
    parser.add_argument("--target", required=True, help="unix:/path, vsock:CID:PORT, tcp:H:P")
    parser.add_argument("--max-connections", type=int, default=_DEFAULT_MAX_CONNECTIONS)
    parser.add_argument("--buffer-bytes", type=int, default=_DEFAULT_BUFFER_BYTES)
    parser.add_argument("--connect-timeout", type=float, default=_DEFAULT_CONNECT_TIMEOUT)
    parser.add_argument("--unix-mode", default="660", help="octal mode of a listening socket")
    parser.add_argument("--grace", type=float, default=5.0, help="drain time on SIGTERM, s")
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="Prometheus endpoint port (parent side)"
    )
    parser.add_argument("--metrics-address", default="127.0.0.1", help="metrics listen address")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    for name in ("listen", "target"):
        try:
            parse_address(getattr(args, name))
        except AddressError as e:
            parser.error(str(e))
    try:
        int(args.unix_mode, 8)
    except ValueError:
        parser.error("--unix-mode must be octal, e.g. 660")
    configure("bridge", level=logging.getLevelNamesMapping().get(args.log_level.upper(), 20))
    sys.exit(asyncio.run(_run(args)))


if __name__ == "__main__":
    main()
