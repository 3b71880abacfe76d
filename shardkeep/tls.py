"""TLS for the public gRPC endpoints: server credentials, client channels, retries.

Servers (``shardkeep-host``, ``shardkeep-relay``) take ``--tls-cert`` and
``--tls-key`` to serve TLS themselves, and ``--client-ca`` to require a client
certificate that chains to it (mutual TLS), the job nginx does in front of the
host in the deployment (deploy/README.md). Without them they serve plaintext
(Unix sockets, loopback behind a TLS-terminating proxy).

Clients open channels with :func:`open_channel`: TLS against a given CA (or
the system roots), optionally presenting a client certificate, optionally
sending an API token as ``authorization: Bearer <token>`` (gRPC access-token
call credentials). Without TLS a token may only travel over a Unix socket or
loopback (gRPC local credentials), never in clear text across a network.

Every channel pings while a stream is open (``shardkeep.keepalive``), and
carries a gRPC service config (gRFC A6, "Client retries")
that retries UNAVAILABLE with exponential backoff, for the idempotent calls
only: reads (attestation, wallet, backups, room status, health). Ceremonies,
CreateRoom and PutBackup are never retried by the transport: a repeat would
start a second ceremony or a second room.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc

from shardkeep import keepalive

__all__ = [
    "TlsSettingsError",
    "IDEMPOTENT_METHODS",
    "RETRY_POLICY",
    "ClientTls",
    "ServerTls",
    "add_server_tls_arguments",
    "is_local_address",
    "open_channel",
    "server_tls_from_args",
    "service_config",
]

IDEMPOTENT_METHODS: Final = {
    "shardkeep.v1.Host": ("GetAttestation", "GetWallet", "GetBackup", "ListBackups"),
    "shardkeep.v1.Relay": ("GetRoom", "AwaitRound"),
    "grpc.health.v1.Health": ("Check",),
}
"""Calls that read only: safe to send again when the first attempt was not delivered."""

RETRY_POLICY: Final = {
    "maxAttempts": 5,
    "initialBackoff": "0.2s",
    "maxBackoff": "3s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
"""gRFC A6 retry policy: up to 5 attempts, 0.2 s doubling to 3 s (with gRPC's jitter)."""

MAX_RECONNECT_BACKOFF_MS: Final = 2000
"""Longest pause between a channel's reconnect attempts (gRPC's default grows to 120 s).
The peers are a few known services: a restarted one is reached within about 2 s."""


def service_config() -> str:
    """The channels' service config JSON: :data:`RETRY_POLICY` on :data:`IDEMPOTENT_METHODS`."""
    names = [
        {"service": service, "method": method}
        for service, methods in IDEMPOTENT_METHODS.items()
        for method in methods
    ]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}]})


class TlsSettingsError(ValueError):
    """TLS settings that cannot work together (named in the message)."""


### Servers


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate chain and key, and the CA its clients must chain to (mTLS)."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials; client certificates required when ``client_ca`` is set."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def add_server_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls-cert``, ``--tls-key`` and ``--client-ca`` to a server's parser."""
    parser.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="serve TLS with this certificate chain"
    )
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's key")
    parser.add_argument(
        "--client-ca",
        type=Path,
        metavar="PEM",
        help="require client certificates issued by this CA (mutual TLS; needs --tls-cert)",
    )


def server_tls_from_args(args: argparse.Namespace) -> ServerTls | None:
    """Read the TLS files named by :func:`add_server_tls_arguments`.

    Raises:
        TlsSettingsError: a certificate without its key (or the reverse),
            ``--client-ca`` without ``--tls-cert``, or an unreadable file (named).
    """
    if (args.tls_cert is None) != (args.tls_key is None):
        raise TlsSettingsError("--tls-cert and --tls-key go together")
    if args.tls_cert is None:
        if args.client_ca is not None:
            raise TlsSettingsError("--client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
        return None
    return ServerTls(
        _read(args.tls_cert, "--tls-cert"),
        _read(args.tls_key, "--tls-key"),
        None if args.client_ca is None else _read(args.client_ca, "--client-ca"),
    )


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TlsSettingsError(f"cannot read {flag} {path}: {e.strerror}") from None


### Clients


@dataclass(frozen=True)
class ClientTls:
    """How a client checks the server and proves itself.

    Attributes:
        server_ca: PEM CA(s) the server's certificate must chain to; None: the system roots.
        certificate_chain: PEM client certificate (mutual TLS), with ``private_key``.
        private_key: its PEM private key.
        server_name: the name to check the server's certificate against, when it
            differs from the address's host (``grpc.ssl_target_name_override``).
    """

    server_ca: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise TlsSettingsError("a client certificate and its key go together")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            self.server_ca, self.private_key, self.certificate_chain
        )


def is_local_address(address: str) -> bool:
    """A Unix socket or a loopback TCP address (where plaintext never leaves the machine)."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    host = host.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1")


def open_channel(
    address: str,
    *,
    tls: ClientTls | None = None,
    api_token: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``address`` with TLS, token and retries as configured.

    Arguments:
        address: ``host:port`` or ``unix:/path``.
        tls: TLS settings; None for plaintext.
        api_token: sent as ``authorization: Bearer <token>`` on every call.
        options: further channel options.

    Raises:
        TlsSettingsError: a token without TLS to an address that is not local.
    """
    all_options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config()),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        *keepalive.client_options(),  # the session streams are long-lived
        *options,
    ]
    if tls is None:
        if api_token is None:
            return grpc.aio.insecure_channel(address, options=all_options)
        if not is_local_address(address):
            raise TlsSettingsError(
                f"an API token for {address} needs TLS: plaintext may carry it only to "
                "a Unix socket or loopback"
            )
        kind = (
            grpc.LocalConnectionType.UDS
            if address.startswith(("unix:", "unix-abstract:"))
            else grpc.LocalConnectionType.LOCAL_TCP
        )
        credentials = grpc.local_channel_credentials(kind)
    else:
        credentials = tls.credentials()
        if tls.server_name is not None:
            all_options.append(("grpc.ssl_target_name_override", tls.server_name))
    if api_token is not None:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(api_token)
        )
    return grpc.aio.secure_channel(address, credentials, options=all_options)
