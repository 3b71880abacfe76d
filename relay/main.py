"""``shardkeep-relay``: run the relay gRPC service.

    shardkeep-relay --listen 127.0.0.1:50070 --backend memory
    shardkeep-relay --listen unix:/run/shardkeep/relay.sock --backend redis://127.0.0.1:6379/0

On SIGTERM or SIGINT the health service turns NOT_SERVING
(``enter_graceful_shutdown``, so load balancers stop routing here), then the
server stops accepting calls and gives running ones ``--grace`` seconds
(STYLE.md principle 14). Open Join streams are cancelled at the end of the
grace period; with the Redis backend their parties rejoin another relay and
resume from their last log position.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from relay.backend import Backend
from relay.memory import MemoryBackend
from relay.redis_backend import RedisBackend
from relay.rooms import RelayConfig
from relay.service import create_server
from shardkeep.server import new_health_servicer

__all__ = ["main", "make_backend"]

_log = logging.getLogger("relay")


def make_backend(spec: str, *, redis_prefix: str, config: RelayConfig) -> Backend:
    """Build the backend named on the command line.

    Arguments:
        spec: ``memory``, or a ``redis://`` / ``rediss://`` / ``unix://`` URL.
        redis_prefix: key prefix for the Redis backend.
        config: relay config (retention of expired rooms).

    Returns:
        The backend.

    Raises:
        ValueError: any other spec.
    """
    if spec == "memory":
        return MemoryBackend(retention_ms=config.retention_ms)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisBackend.from_url(spec, prefix=redis_prefix, retention_ms=config.retention_ms)
    raise ValueError(f"unknown backend {spec!r}: use 'memory' or a redis:// URL")


def _bound_address(address: str, port: int) -> str:
    if address.startswith("unix:"):
        return address
    host = address.rsplit(":", 1)[0]
    return f"{host}:{port}"


async def _serve(args: argparse.Namespace) -> None:
    config = RelayConfig()
    backend = make_backend(args.backend, redis_prefix=args.redis_prefix, config=config)
    health = new_health_servicer()
    server, port = await create_server(args.listen, backend, config=config, health_servicer=health)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    # One machine-readable line, so scripts and benchmarks can find port 0.
    print(f"shardkeep-relay listening on {_bound_address(args.listen, port)}", flush=True)
    try:
        await stop.wait()
        _log.info("shutting down: draining for up to %.1f s", args.grace)
        await health.enter_graceful_shutdown()
        await server.stop(args.grace)
    finally:
        await backend.aclose()
    _log.info("stopped")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``shardkeep-relay`` console script.

    Arguments:
        argv: command-line arguments (``sys.argv[1:]`` if None).
    """
    parser = argparse.ArgumentParser(prog="shardkeep-relay", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:50070", help="host:port or unix:/path")
    parser.add_argument("--backend", default="memory", help="memory or redis://host:port/db")
    parser.add_argument("--redis-prefix", default="shardkeep:relay:", help="Redis key prefix")
    parser.add_argument("--grace", type=float, default=10.0, help="drain time on SIGTERM, s")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        make_backend(args.backend, redis_prefix=args.redis_prefix, config=RelayConfig())
    except ValueError as e:
        parser.error(str(e))
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
