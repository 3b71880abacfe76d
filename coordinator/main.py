"""``python -m coordinator.main``: the demo coordinator service for devices (docs/coordinator.md).

    python -m coordinator.main --listen 127.0.0.1:7600 --host HOST --relay RELAY \\
        --coordinator-key coordinator.key --enrollment-codes codes.txt \\
        --registry coordinator.db [--root PEM]

Devices enroll with one of the one-time codes in ``--enrollment-codes`` (one
per line: ``CODE``, or ``CODE ACCOUNT`` to enroll the device into that
account, e.g. to restore a user's lost device from its backups). Enrolled
devices, used codes, wallets and recently seen device calls are kept in the
SQLite file ``--registry`` (``coordinator.registry``), so a restart forgets
no device and admits no replayed call. The coordinator
reaches the host with ``--server-ca``, ``--client-cert``, ``--client-key`` and
``--api-token-file`` as the CLI does, and serves devices over TLS with
``--tls-cert``/``--tls-key``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from client.cli.connection import add_transport_options, transport_from_args
from coordinator.coordinator import Coordinator
from coordinator.registry import Registry, RegistryError
from coordinator.service import create_server
from shardkeep import eventloop
from shardkeep.server import new_health_servicer, serve_until_signalled
from shardkeep.tls import add_server_tls_arguments, server_tls_from_args
from tss.errors import InputError


async def _serve(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    registry = Registry(args.registry)
    # channels on this loop
    coordinator = Coordinator(args.host, args.relay, registry=registry, **settings)
    health = new_health_servicer()
    server, port = await create_server(
        args.listen, coordinator, tls=server_tls_from_args(args), health_servicer=health
    )
    await server.start()
    bound = (
        args.listen
        if args.listen.startswith("unix:")
        else f"{args.listen.rsplit(':', 1)[0]}:{port}"
    )
    print(f"shardkeep-coordinator listening on {bound}", flush=True)
    try:
        await serve_until_signalled(server, health)
    finally:
        await coordinator.aclose()
        registry.close()


def _codes(text: str) -> list[str | tuple[str, str]]:
    codes: list[str | tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if len(words) > 2:
            raise InputError(f"--enrollment-codes line {number}: expected CODE [ACCOUNT]")
        if words:
            codes.append(words[0] if len(words) == 1 else (words[0], words[1]))
    return codes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="coordinator", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:7600", help="host:port or unix:/path")
    parser.add_argument("--host", required=True, help="the host's address")
    parser.add_argument("--relay", required=True, help="the relay's address")
    parser.add_argument("--coordinator-key", type=Path, required=True, metavar="PEM")
    parser.add_argument("--root", type=Path, metavar="PEM", help="attestation root (default AWS)")
    parser.add_argument(
        "--enrollment-codes", type=Path, required=True, metavar="FILE",
        help="one-time device enrollment codes, one per line",
    )  # fmt: skip
    parser.add_argument(
        "--registry", type=Path, required=True, metavar="FILE",
        help="the SQLite file of enrolled devices, used codes, wallets and seen calls",
    )  # fmt: skip
    parser.add_argument(
        "--host-transport", choices=("call", "session"), default="call",
        help="one call to the host per ceremony and challenge, or all of them on one "
        "long-lived Host.Session stream (docs/transport.md)",
    )  # fmt: skip
    parser.add_argument(
        "--relay-transport", choices=("call", "session"), default="session",
        help="rooms created by their first join from a signed spec, every room on one "
        "long-lived Relay.Session stream (the default), or a CreateRoom call per room "
        "(docs/transport.md)",
    )  # fmt: skip
    add_server_tls_arguments(parser)
    add_transport_options(parser)
    args = parser.parse_args(argv)
    try:
        key = load_pem_private_key(args.coordinator_key.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            parser.error("--coordinator-key is not an Ed25519 private key")
        codes = _codes(args.enrollment_codes.read_text())
        settings: dict[str, Any] = {
            "coordinator_key": key,
            "transport": transport_from_args(args),
            "host_transport": args.host_transport,
            "relay_transport": args.relay_transport,
            "root_certificate": args.root.read_bytes() if args.root else None,
            "enrollment_codes": codes,
        }
    except (OSError, ValueError, InputError) as e:
        parser.error(str(e))
    try:
        Registry(args.registry).close()  # fail before serving, with the file named
    except RegistryError as e:
        parser.error(str(e))
    eventloop.run(_serve(args, settings))


if __name__ == "__main__":
    main()
