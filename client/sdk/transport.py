"""How the SDK reaches a deployed host and relay: TLS, mutual TLS, an API token, and clear errors.

In production the host sits behind nginx, which terminates mutual TLS
(coordinators present a client certificate from the coordinators' CA), and
the host itself checks an API token (``shardkeep-host --api-token-file``);
parties reach the relay over TLS (deploy/README.md, "What runs where").
:class:`Transport` carries those settings: the CA the servers' certificates
must chain to, this client's certificate and key, and the token. The token
goes to the host only; the relay has its own admission.

Connection failures that the settings explain become typed errors
(:func:`transport_error`): a server certificate that does not verify against
the CA, a server that closes the TLS handshake because it wants a client
certificate (or refuses ours), a refused token, a server that cannot be
reached. Idempotent calls are retried on UNAVAILABLE with backoff by the
channel itself (``shardkeep.tls``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import grpc

from client.errors import InvalidInput, WalletError, sdk_boundary
from shardkeep.tls import ClientTls, open_channel

__all__ = [
    "ApiTokenRejected",
    "ClientCertificateRejected",
    "ClientCertificateRequired",
    "ServerCertificateError",
    "ServerUnreachable",
    "Transport",
    "TransportError",
    "transport_error",
]


class TransportError(WalletError):
    """A server could not be reached, or refused this client, before any work was done."""

    error_code: ClassVar[str] = "transport"


class ServerUnreachable(TransportError):
    """Nothing answered at the address (down, wrong address, or a firewall)."""

    error_code = "unreachable"


class ServerCertificateError(TransportError):
    """The server's certificate does not verify against the configured server CA (or name)."""

    error_code = "server_certificate"


class ClientCertificateRequired(TransportError):
    """The server closed the TLS handshake: it requires a client certificate and none was set."""

    error_code = "client_certificate_required"


class ClientCertificateRejected(TransportError):
    """The server closed the TLS handshake although a client certificate was presented."""

    error_code = "client_certificate_rejected"


class ApiTokenRejected(TransportError):
    """The host refused the call: no API token, or not one it accepts."""

    error_code = "api_token_rejected"


@sdk_boundary
@dataclass(frozen=True)
class Transport:
    """TLS and token settings for the host and relay channels.

    Attributes:
        tls: TLS settings (server CA, client certificate); None: plaintext
            (Unix sockets and loopback, as in development).
        api_token: the host's bearer token; never sent to the relay.
    """

    tls: ClientTls | None = None
    api_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_files(
        cls,
        *,
        tls: bool = False,
        server_ca: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        api_token: str | None = None,
        api_token_file: Path | None = None,
        server_name: str | None = None,
    ) -> Transport:
        """Build the settings from PEM files (as the CLI and its configuration name them).

        Arguments:
            tls: use TLS even without ``server_ca`` (the system's roots).
            server_ca: CA certificate(s) the servers must chain to; implies TLS.
            client_cert, client_key: this client's certificate and key (mutual TLS).
            api_token: the token itself; ``api_token_file``: a file holding it.
            server_name: the name the server certificates carry, when it is
                not the address's host.

        Raises:
            InvalidInput: a certificate without its key, client settings without
                TLS, both token sources, an empty token, or an unreadable file (named).
        """
        if (client_cert is None) != (client_key is None):
            raise InvalidInput("--client-cert and --client-key go together")
        use_tls = tls or server_ca is not None or client_cert is not None
        if server_name is not None and not use_tls:
            raise InvalidInput("--server-name needs TLS (--tls or --server-ca)")
        if api_token is not None and api_token_file is not None:
            raise InvalidInput("give the API token or its file, not both")
        if api_token_file is not None:
            api_token = _read(api_token_file, "API token file").decode().strip()
        if api_token is not None and not api_token:
            raise InvalidInput("the API token is empty")
        if not use_tls:
            return cls(None, api_token)
        client_tls = ClientTls(
            server_ca=_read_optional(server_ca, "server CA"),
            certificate_chain=_read_optional(client_cert, "client certificate"),
            private_key=_read_optional(client_key, "client key"),
            server_name=server_name,
        )
        return cls(client_tls, api_token)

    def host_channel(
        self, address: str, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Channel:
        """A channel to the host: TLS as set, the API token on every call."""
        return open_channel(address, tls=self.tls, api_token=self.api_token, options=options)

    def relay_channel(
        self, address: str, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Channel:
        """A channel to the relay: TLS as set, no token."""
        return open_channel(address, tls=self.tls, options=options)


def _read_optional(path: Path | None, what: str) -> bytes | None:
    return None if path is None else _read(path, what)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read the {what} {path}: {e.strerror}") from None


# What gRPC core reports (grpc/src/core/tsi/ssl_transport_security.cc) when
# the peer's certificate fails verification, or its name does not match.
_BAD_SERVER_CERTIFICATE = ("CERTIFICATE_VERIFY_FAILED", "Peer name", "not in peer certificate")


@sdk_boundary
def transport_error(
    error: grpc.aio.AioRpcError, server: str, address: str, transport: Transport
) -> TransportError | None:
    """The typed error a failed call's status stands for, if the connection settings explain it.

    Arguments:
        error: the failed call.
        server: "host" or "relay" (only the host takes the API token).
        address: the address called.
        transport: the settings the channel was opened with.

    Returns:
        The typed error, or None when the failure is the server's answer to
        the call itself (the caller maps it).
    """
    details = error.details() or ""
    where = f"the {server} at {address}"
    if error.code() == grpc.StatusCode.UNAUTHENTICATED and server == "host":
        given = "no API token was set" if transport.api_token is None else "a wrong API token"
        return ApiTokenRejected(
            f"{where} refused the call: {given} (--api-token-file)", error.code()
        )
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    if transport.tls is not None and any(m in details for m in _BAD_SERVER_CERTIFICATE):
        return ServerCertificateError(
            f"{where} presented a certificate that does not verify against the server CA "
            f"(--server-ca) or does not name it: {details}",
            error.code(),
        )
    if transport.tls is not None and "Socket closed" in details:
        if transport.tls.certificate_chain is None:
            return ClientCertificateRequired(
                f"{where} closed the TLS connection: it requires a client certificate "
                "(--client-cert, --client-key)",
                error.code(),
            )
        return ClientCertificateRejected(
            f"{where} closed the TLS connection: it does not accept this client certificate",
            error.code(),
        )
    return ServerUnreachable(f"cannot reach {where}: {details}", error.code())
