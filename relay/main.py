"""``shardkeep-relay``: run the relay gRPC service.

    shardkeep-relay --listen 127.0.0.1:50070 --admission relay-admission.json
    shardkeep-relay --listen unix:/run/shardkeep/relay.sock --admission FILE \
        --backend redis://127.0.0.1:6379/0
    shardkeep-relay --listen 0.0.0.0:7400 --admission FILE \
        --backend-file /run/credentials/.../relay-backend

Logs are JSON lines on stderr (structlog). ``--metrics-port`` serves
Prometheus metrics (``relay.metrics``) at ``http://--metrics-address:PORT/metrics``.

``--admission`` names the JSON file that pins the coordinators' Ed25519 keys
and sets the global budget and their quotas (``relay.admission``): only they
may create rooms.

A backend URL with a password (``rediss://user:password@host/0``) belongs in a
file (``--backend-file``, e.g. a systemd credential) or the environment
(``SHARDKEEP_RELAY_BACKEND``), not on the command line, where every local user
can read it (``ps``, ``/proc/PID/cmdline``). Precedence: ``--backend-file``,
``--backend``, ``SHARDKEEP_RELAY_BACKEND``, then ``memory``. Error messages
never repeat the URL.

On SIGTERM or SIGINT the health service turns NOT_SERVING
(``enter_graceful_shutdown``, so load balancers stop routing here), then the
server stops accepting calls and gives running ones ``--grace`` seconds.
Open Join streams are cancelled at the end of the
grace period; with the Redis backend their parties rejoin another relay and
resume from their last log position.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import structlog

from relay.admission import Admitter, load_policy
from relay.backend import Backend
from relay.errors import RelayError
from relay.memory import MemoryBackend
from relay.metrics import RelayMetrics
from relay.redis_backend import RedisBackend
from relay.rooms import RelayConfig
from relay.service import create_server, wall_clock_ms
from shardkeep import eventloop, logs
from shardkeep.metrics import MetricsServer
from shardkeep.server import new_health_servicer
from shardkeep.tls import TlsSettingsError, add_server_tls_arguments, server_tls_from_args

__all__ = ["main", "make_backend", "backend_spec", "BACKEND_ENV"]

BACKEND_ENV: Final = "SHARDKEEP_RELAY_BACKEND"
_MAX_BACKEND_FILE_BYTES: Final = 4096

_log = structlog.get_logger("relay")
# How often the room and byte gauges are refreshed between calls (rooms that
# expire change them without a call).
_GAUGE_PERIOD_S: Final = 10.0


def make_backend(spec: str, *, redis_prefix: str, config: RelayConfig) -> Backend:
    """Build the backend named on the command line.

    Arguments:
        spec: ``memory``, or a ``redis://`` / ``rediss://`` / ``unix://`` URL.
        redis_prefix: key prefix for the Redis backend.
        config: relay config (retention of ended rooms' tombstones).

    Returns:
        The backend.

    Raises:
        ValueError: any other spec.
    """
    if spec == "memory":
        return MemoryBackend(retention_ms=config.retention_ms)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisBackend.from_url(spec, prefix=redis_prefix, retention_ms=config.retention_ms)
    # Not the spec itself: it may be a URL with a password in it.
    raise ValueError("unknown backend: use 'memory' or a redis://, rediss:// or unix:// URL")


def backend_spec(
    *, flag: str | None, file: str | None, environ: Mapping[str, str] | None = None
) -> str:
    """The backend spec from ``--backend-file``, ``--backend`` or the environment.

    Arguments:
        flag: the ``--backend`` value, or None.
        file: the ``--backend-file`` path, or None; its first line that is
            neither empty nor a ``#`` comment is the spec (whitespace dropped).
        environ: the environment (``os.environ`` if None), for ``SHARDKEEP_RELAY_BACKEND``.

    Returns:
        The spec; ``memory`` when none is given.

    Raises:
        ValueError: both flags given, or the file is unreadable, too large or empty.
    """
    if file is not None and flag is not None:
        raise ValueError("give --backend or --backend-file, not both")
    if file is not None:
        try:
            with Path(file).open("rb") as f:
                data = f.read(_MAX_BACKEND_FILE_BYTES + 1)
        except OSError as e:
            raise ValueError(f"cannot read --backend-file {file}: {e.strerror}") from None
        if len(data) > _MAX_BACKEND_FILE_BYTES:
            raise ValueError(
                f"--backend-file {file} is larger than {_MAX_BACKEND_FILE_BYTES} bytes"
            )
        lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
        spec = next((line for line in lines if line and not line.startswith("#")), None)
        if spec is None:
            raise ValueError(f"--backend-file {file} names no backend")
        return spec
    if flag is not None:
        return flag
    value = (os.environ if environ is None else environ).get(BACKEND_ENV, "").strip()
    return value or "memory"


def _bound_address(address: str, port: int) -> str:
    if address.startswith("unix:"):
        return address
    host = address.rsplit(":", 1)[0]
    return f"{host}:{port}"


async def _serve(args: argparse.Namespace) -> None:
    config = RelayConfig()
    backend = make_backend(args.backend_spec, redis_prefix=args.redis_prefix, config=config)
    health = new_health_servicer()
    metrics = RelayMetrics()
    server, port = await create_server(
        args.listen,
        backend,
        admitter=Admitter(args.policy),
        config=config,
        health_servicer=health,
        tls=args.tls,
        metrics=metrics,
    )
    metrics_server = None
    if args.metrics_port is not None:
        metrics_server = MetricsServer(metrics.registry, args.metrics_port, args.metrics_address)
    gauges = asyncio.create_task(_refresh_gauges(backend, metrics))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    # One machine-readable line, so scripts and benchmarks can find port 0.
    print(f"shardkeep-relay listening on {_bound_address(args.listen, port)}", flush=True)
    _log.info(
        "relay serving",
        listen=_bound_address(args.listen, port),
        metrics_port=None if metrics_server is None else metrics_server.port,
    )
    try:
        await stop.wait()
        _log.info("shutting down", grace_s=args.grace)
        await health.enter_graceful_shutdown()
        await server.stop(args.grace)
    finally:
        gauges.cancel()
        if metrics_server is not None:
            metrics_server.close()
        await backend.aclose()
    _log.info("stopped")


async def _refresh_gauges(backend: Backend, metrics: RelayMetrics) -> None:
    while True:
        await asyncio.sleep(_GAUGE_PERIOD_S)
        try:
            metrics.observe(await backend.usage(wall_clock_ms()))
        except RelayError as e:
            _log.warning("usage unavailable", error=type(e).__name__)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``shardkeep-relay`` console script.

    Arguments:
        argv: command-line arguments (``sys.argv[1:]`` if None).
    """
    parser = argparse.ArgumentParser(prog="shardkeep-relay", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:50070", help="host:port or unix:/path")
    parser.add_argument(
        "--backend",
        default=None,
        help=f"memory or redis://host:port/db (default: ${BACKEND_ENV}, else memory); "
        "a URL with a password belongs in --backend-file",
    )
    parser.add_argument(
        "--backend-file",
        default=None,
        metavar="PATH",
        help="read the backend (e.g. a rediss:// URL with its password) from this file",
    )
    parser.add_argument(
        "--admission",
        required=True,
        type=Path,
        metavar="PATH",
        help="JSON file: pinned coordinator keys, their quotas and the global budget",
    )
    parser.add_argument("--redis-prefix", default="shardkeep:relay:", help="Redis key prefix")
    parser.add_argument("--grace", type=float, default=10.0, help="drain time on SIGTERM, s")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus endpoint port")
    parser.add_argument("--metrics-address", default="127.0.0.1", help="metrics listen address")
    parser.add_argument("--log-level", default="INFO")
    add_server_tls_arguments(parser)
    args = parser.parse_args(argv)
    logs.configure("relay", level=logging.getLevelName(args.log_level.upper()))
    try:
        args.backend_spec = backend_spec(flag=args.backend, file=args.backend_file)
        make_backend(args.backend_spec, redis_prefix=args.redis_prefix, config=RelayConfig())
        args.policy = load_policy(args.admission)
    except ValueError as e:
        parser.error(str(e))
    try:
        args.tls = server_tls_from_args(args)
    except TlsSettingsError as e:
        parser.error(str(e))
    eventloop.run(_serve(args))


if __name__ == "__main__":
    main()
