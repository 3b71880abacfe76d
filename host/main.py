"""``shardkeep-host``: run the host, the untrusted proxy between coordinators and the enclave.

    shardkeep-host --listen 0.0.0.0:50060 --enclave unix:/run/shardkeep/enclave.sock \\
        --relay 127.0.0.1:50070 --store sqlite:////var/lib/shardkeep/host.db --metrics-port 9460

At start-up the host opens (and migrates) the store, provisions the enclave
with its sealed identity (waiting for the enclave to come up), then serves.
Logs are JSON lines on stderr (structlog). On SIGTERM or SIGINT the health
service turns NOT_SERVING first (load balancers stop routing here), then the
server stops accepting calls and gives running ceremonies ``--grace`` seconds;
a ceremony cut off then aborts its pending epoch, so the old share stays
current (docs/key-changes.md).

The public API is plaintext unless ``--tls-cert``/``--tls-key`` are given
(``--client-ca`` then requires client certificates: mutual TLS); the
deployment keeps it on loopback behind nginx, which terminates mutual TLS
(deploy/host/nginx). ``--api-token-file`` lists the bearer tokens callers
must send either way. ``--relay-ca`` reaches a relay that serves TLS.

On Nitro the enclave is reached over vsock through a vsock<->Unix bridge
(docs/architecture.md): pass the bridge's ``unix:`` socket as ``--enclave``, and
``--kms-credentials imds``: the host then fetches the instance role's
temporary credentials (IMDSv2) and hands them to the enclave for its KMS
requests, before provisioning and again before they expire
(``host.credentials``). ``env`` and ``file:PATH`` serve development; the
default ``none`` hands over none (the enclave's development configuration
has its own).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog

from host.credentials import CredentialsError, source_from_spec
from host.enclave_link import LinkConfig
from host.enclave_pool import EnclavePool
from host.host_session import MAX_SESSION_CHANNELS
from host.metrics import HostMetrics, MetricsServer, start_metrics_server
from host.service import create_server, enclave_pool
from host.store import BackupQuota, Store, StoreError
from host.stores import open_store
from relay.client import RelayClient
from shardkeep import eventloop, logs
from shardkeep.server import new_health_servicer
from shardkeep.tls import (
    ClientTls,
    ServerTls,
    add_server_tls_arguments,
    open_channel,
    server_tls_from_args,
)

__all__ = ["main", "serve", "HostConfig"]

# Sealed DKLs23 shares carry pairwise OT setups (megabytes): the enclave link
# must carry a ceremony start with them.
_ENCLAVE_MESSAGE_BYTES = 64 << 20


@dataclass(frozen=True)
class HostConfig:
    """What the command line configures.

    Attributes:
        listen: ``host:port`` or ``unix:/path`` for the public API.
        enclave: the enclave's (or the vsock bridge's) gRPC target.
        more_enclaves: the targets of more enclaves of the same image; each
            ceremony runs on one of them (``host.enclave_pool``).
        relay: the relay's gRPC target.
        store: ``sqlite:///path`` or ``postgresql://...``.
        metrics_port: serve Prometheus metrics here (None: no endpoint).
        metrics_address: the metrics endpoint's listen address.
        grace_s: drain time on SIGTERM.
        link: enclave timeouts.
        api_tokens: accepted bearer tokens (empty: any caller).
        backup_quota: most backups and blob bytes one wallet may keep.
        tls: serve the public API over TLS (mutual TLS with a client CA); None: plaintext.
        relay_tls: reach the relay over TLS; None: plaintext.
        relay_session: every room on one ``Relay.Session`` stream (docs/transport.md);
            False: a Join call per room.
        keep_retired_epochs: retired epochs kept once every party acknowledged
            the current one.
        enclave_status_interval_s: how often the enclave's counters are fetched
            for the metrics endpoint.
        max_session_channels: channels one coordinator's ``Host.Session``
            stream may hold open at once.
    """

    listen: str
    enclave: str
    relay: str
    store: str
    more_enclaves: tuple[str, ...] = ()
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    grace_s: float = 10.0
    link: LinkConfig = field(default_factory=LinkConfig)
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    backup_quota: BackupQuota = field(default_factory=BackupQuota)
    tls: ServerTls | None = None
    relay_tls: ClientTls | None = None
    relay_session: bool = True
    keep_retired_epochs: int = 0
    enclave_status_interval_s: float = 15.0
    max_session_channels: int = MAX_SESSION_CHANNELS


def _bound_address(address: str, port: int) -> str:
    if address.startswith("unix:"):
        return address
    return f"{address.rsplit(':', 1)[0]}:{port}"


async def serve(
    config: HostConfig,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[int, int | None], None] | None = None,
) -> None:
    """Run the host until ``stop`` is set, then drain gracefully.

    Arguments:
        config: the host's configuration.
        stop: set it to shut down (``main`` sets it on SIGTERM/SIGINT).
        on_ready: called with the bound API port (0 for a Unix socket) and the
            metrics port (None without an endpoint) once serving.

    Raises:
        HostError: the enclave could not be provisioned.
        StoreError: the store could not be opened or migrated.
    """
    log = structlog.get_logger("host")
    store = await asyncio.to_thread(open_store, config.store)
    enclave_channels = {
        target: grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", _ENCLAVE_MESSAGE_BYTES),
                ("grpc.max_send_message_length", _ENCLAVE_MESSAGE_BYTES),
            ],
        )
        for target in (config.enclave, *config.more_enclaves)
    }
    relay = RelayClient(
        open_channel(config.relay, tls=config.relay_tls), session=config.relay_session
    )
    metrics = HostMetrics()
    metrics_server: MetricsServer | None = None
    health = new_health_servicer()
    try:
        server, port = await create_server(
            config.listen,
            store=store,
            enclave_channel=enclave_channels,
            relay=relay,
            metrics=metrics,
            link_config=config.link,
            api_tokens=config.api_tokens,
            health_servicer=health,
            backup_quota=config.backup_quota,
            tls=config.tls,
            keep_retired_epochs=config.keep_retired_epochs,
            max_session_channels=config.max_session_channels,
        )
        if config.metrics_port is not None:
            metrics_server = start_metrics_server(
                metrics, config.metrics_port, config.metrics_address
            )
        await server.start()
        log.info(
            "host serving",
            listen=_bound_address(config.listen, port),
            metrics_port=None if metrics_server is None else metrics_server.port,
        )
        if on_ready is not None:
            on_ready(port, None if metrics_server is None else metrics_server.port)
        chores = [
            asyncio.create_task(
                _sweep_expired_epochs(
                    store,
                    max(
                        1.0,
                        min(config.link.pending_deadline_s, config.link.unsigned_deadline_s) / 4,
                    ),
                )
            ),
            asyncio.create_task(
                _report_enclave_status(
                    enclave_pool(enclave_channels, config.link, metrics),
                    config.enclave_status_interval_s,
                )
            ),
        ]
        try:
            await stop.wait()
        finally:
            for chore in chores:
                chore.cancel()
        log.info("shutting down", grace_s=config.grace_s)
        await health.enter_graceful_shutdown()
        await server.stop(config.grace_s)
        log.info("stopped")
    finally:
        if metrics_server is not None:
            metrics_server.close()
        await relay.aclose()
        for channel in enclave_channels.values():
            await channel.close(None)
        await asyncio.to_thread(store.close)


async def _sweep_expired_epochs(store: Store, interval_s: float) -> None:
    """Abort pending epochs past their deadline, every ``interval_s``, wallets in use or not.

    A wallet in use has its own checked at once (``Store.abort_expired``); this
    frees the rest, e.g. the id of a keygen nobody retries.
    """
    log = structlog.get_logger("host.epochs")
    while True:
        await asyncio.sleep(interval_s)
        try:
            aborted = await asyncio.to_thread(store.abort_all_expired)
        except StoreError as e:
            log.warning("sweeping expired pending epochs failed", error=str(e))
            continue
        for wallet_id, epoch in aborted:
            log.info("pending epoch aborted after its deadline", wallet_id=wallet_id, epoch=epoch)


async def _report_enclave_status(enclaves: EnclavePool, interval_s: float) -> None:
    """Fetch the enclaves' status every ``interval_s`` (each one's counters go to the
    metrics), so they stay fresh when no ceremony runs."""
    while True:
        await enclaves.report_status()
        await asyncio.sleep(interval_s)


def _read_tokens(path: str | None) -> tuple[str, ...]:
    if path is None:
        return ()
    tokens = tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())
    if not tokens:
        raise ValueError(f"{path} holds no API token")
    return tokens


async def _serve_until_signalled(config: HostConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready(port: int, metrics_port: int | None) -> None:
        # One plain line on stdout, so scripts and benchmarks can find port 0.
        print(f"shardkeep-host listening on {_bound_address(config.listen, port)}", flush=True)

    await serve(config, stop, on_ready=ready)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``shardkeep-host`` console script.

    Arguments:
        argv: command-line arguments (``sys.argv[1:]`` if None).
    """
    parser = argparse.ArgumentParser(prog="shardkeep-host", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:50060", help="host:port or unix:/path")
    parser.add_argument(
        "--enclave",
        required=True,
        action="append",
        help="unix:/path (enclave or vsock bridge) or host:port; repeat it for several "
        "enclaves of the same image, which share the work (docs/architecture.md)",
    )
    parser.add_argument("--relay", required=True, help="the relay's host:port or unix:/path")
    parser.add_argument(
        "--store", required=True, help="sqlite:///path or postgresql://user@host/db"
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus endpoint port")
    parser.add_argument("--metrics-address", default="127.0.0.1", help="metrics listen address")
    parser.add_argument("--grace", type=float, default=10.0, help="drain time on SIGTERM, s")
    parser.add_argument(
        "--max-ceremony-seconds", type=float, default=300.0, help="cap on one ceremony's time"
    )
    parser.add_argument(
        "--api-token-file", default=None, help="file of accepted bearer tokens, one per line"
    )
    parser.add_argument(
        "--kms-credentials",
        default="none",
        metavar="SOURCE",
        help="AWS credentials handed to the enclave for KMS: none, env, file:PATH, imds "
        "(IMDSv2, on EC2) or imds:http://HOST:PORT",
    )
    parser.add_argument(
        "--max-backups-per-wallet", type=int, default=BackupQuota.max_count, metavar="N"
    )
    parser.add_argument(
        "--max-backup-bytes-per-wallet", type=int, default=BackupQuota.max_bytes, metavar="BYTES"
    )
    parser.add_argument(
        "--relay-transport",
        choices=("call", "session"),
        default="session",
        help="every room on one long-lived Relay.Session stream (the default), or one "
        "Join call per room (docs/transport.md)",
    )
    parser.add_argument(
        "--enclave-transport",
        choices=("call", "session"),
        default="session",
        help="every ceremony on one long-lived Enclave.Session stream (the default), or "
        "one RunCeremony call per ceremony (docs/transport.md)",
    )
    parser.add_argument(
        "--pending-deadline-seconds",
        type=float,
        default=LinkConfig.pending_deadline_s,
        help="abort a key change's pending epoch this long after its share was stored, "
        "unless its certificate arrived",
    )
    parser.add_argument(
        "--unsigned-deadline-seconds",
        type=float,
        default=LinkConfig.unsigned_deadline_s,
        help="abort a pending epoch this long after its share was stored if the server "
        "share's agreement has not left by then (no certificate can exist without it)",
    )
    parser.add_argument(
        "--keep-retired-epochs",
        type=int,
        default=0,
        metavar="N",
        help="retired epochs kept once every party acknowledged the current one",
    )
    parser.add_argument(
        "--max-session-channels",
        type=int,
        default=MAX_SESSION_CHANNELS,
        metavar="N",
        help="ceremonies and challenges one coordinator's Host.Session stream may have "
        "open at once; past that a channel is refused with RESOURCE_EXHAUSTED",
    )
    parser.add_argument("--log-level", default="INFO")
    add_server_tls_arguments(parser)
    parser.add_argument(
        "--relay-ca", type=Path, metavar="PEM", help="reach the relay over TLS, trusting this CA"
    )
    args = parser.parse_args(argv)
    if min(args.pending_deadline_seconds, args.unsigned_deadline_seconds) <= 0:
        parser.error("--pending-deadline-seconds and --unsigned-deadline-seconds must be positive")
    if args.keep_retired_epochs < 0:
        parser.error("--keep-retired-epochs must be >= 0")
    if args.max_session_channels < 1:
        parser.error("--max-session-channels must be >= 1")
    if args.max_backups_per_wallet < 1 or args.max_backup_bytes_per_wallet < 1:
        parser.error("backup quotas must be positive")
    if len(set(args.enclave)) != len(args.enclave):
        parser.error("--enclave names one enclave twice")
    if any(target.startswith("vsock:") for target in args.enclave):
        parser.error("grpcio has no vsock transport: point --enclave at the vsock bridge's socket")
    try:
        tokens = _read_tokens(args.api_token_file)
        tls = server_tls_from_args(args)
        relay_tls = None if args.relay_ca is None else ClientTls(args.relay_ca.read_bytes())
    except (OSError, ValueError) as e:
        parser.error(str(e))
    try:
        credentials = source_from_spec(args.kms_credentials)
    except CredentialsError as e:
        parser.error(f"--kms-credentials: {e}")
    logs.configure("host", level=logging.getLevelName(args.log_level.upper()))
    config = HostConfig(
        listen=args.listen,
        enclave=args.enclave[0],
        more_enclaves=tuple(args.enclave[1:]),
        relay=args.relay,
        store=args.store,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        grace_s=args.grace,
        link=LinkConfig(
            max_ceremony_s=args.max_ceremony_seconds,
            kms_credentials=credentials,
            pending_deadline_s=args.pending_deadline_seconds,
            unsigned_deadline_s=args.unsigned_deadline_seconds,
            session_transport=args.enclave_transport == "session",
        ),
        api_tokens=tokens,
        backup_quota=BackupQuota(args.max_backups_per_wallet, args.max_backup_bytes_per_wallet),
        tls=tls,
        relay_tls=relay_tls,
        relay_session=args.relay_transport == "session",
        keep_retired_epochs=args.keep_retired_epochs,
        max_session_channels=args.max_session_channels,
    )
    eventloop.run(_serve_until_signalled(config))


if __name__ == "__main__":
    main()
