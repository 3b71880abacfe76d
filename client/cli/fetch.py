"""``shardkeep attestation fetch``: get the enclave's attestation document from a host.

It sends a nonce (32 fresh random bytes unless ``--nonce``) to
``Host.GetAttestation`` over the configured transport (TLS, client
certificate, API token: ``client.cli.connection``), writes the document's
bytes to ``--out`` and prints the nonce, so that ``shardkeep attestation
verify FILE --nonce HEX --pcr N=HEX ...`` checks exactly that document.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Final, TextIO

from client.cli.connection import add_transport_options
from client.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from shardkeep import eventloop

__all__ = ["add_fetch_command"]

_MAX_NONCE: Final = 1024  # the NSM's limit (AWS attestation_process.md §2.2)


def add_fetch_command(attestation_commands: Any) -> None:
    """Register ``fetch`` under ``shardkeep attestation``."""
    fetch = attestation_commands.add_parser(
        "fetch",
        help="fetch the enclave's attestation document from the host",
        description=__doc__.split("\n\n")[1].replace("``", "") if __doc__ else None,
    )
    fetch.add_argument("--host", help="host address ($SHARDKEEP_HOST)")
    fetch.add_argument(
        "--out", "-o", type=Path, required=True, metavar="FILE",
        help="where the document's bytes go ('-' = stdout)",
    )  # fmt: skip
    fetch.add_argument(
        "--nonce", metavar="HEX", type=_nonce, help="the nonce to send (default: 32 random bytes)"
    )
    fetch.add_argument(
        "--state", type=Path, metavar="DIR", default=_env_path("SHARDKEEP_STATE"),
        help="state directory whose config.toml applies (default ~/.shardkeep)",
    )  # fmt: skip
    fetch.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    fetch.add_argument("--json", action="store_true", help="print file, size and nonce as JSON")
    add_transport_options(fetch)
    fetch.set_defaults(handler=_fetch)


def _fetch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from client.cli.connection import resolve_connection, transport_from_args
    from tss.errors import InputError

    try:
        resolve_connection(args)
        transport = transport_from_args(args)
    except InputError as e:
        print(f"shardkeep: {e}", file=err)
        return EXIT_USAGE
    if not args.host:
        print("shardkeep: missing --host (or $SHARDKEEP_HOST, or host in the config)", file=err)
        return EXIT_USAGE
    nonce: bytes = args.nonce if args.nonce is not None else secrets.token_bytes(32)
    try:
        document = eventloop.run(_get_document(transport, args.host, nonce, args.timeout))
    except _Failed as e:
        print(f"shardkeep: {e}", file=err)
        return EXIT_FAILED
    try:
        if str(args.out) == "-":
            sys.stdout.buffer.write(document)
            sys.stdout.buffer.flush()
            out = err  # the document owns stdout
        else:
            args.out.write_bytes(document)
    except OSError as e:
        print(f"shardkeep: cannot write {args.out}: {e.strerror}", file=err)
        return EXIT_USAGE
    result = {"file": str(args.out), "bytes": len(document), "nonce": nonce.hex()}
    if args.json:
        print(json.dumps(result), file=out)
    else:
        print(f"wrote {len(document)} bytes to {args.out}", file=out)
        print(f"nonce: {nonce.hex()}", file=out)
        check = f"shardkeep attestation verify {args.out} --nonce {nonce.hex()} --pcr N=HEX ..."
        print(f"check it: {check}", file=out)
    return EXIT_OK


class _Failed(Exception):
    """The host could not be reached or refused; the message says why."""


async def _get_document(transport: Any, host: str, nonce: bytes, timeout: float) -> bytes:
    import grpc

    from client.sdk.transport import transport_error
    from shardkeep.v1 import host_pb2, host_pb2_grpc

    async with transport.host_channel(host) as channel:
        stub = host_pb2_grpc.HostStub(channel)  # type: ignore[no-untyped-call]
        try:
            reply = await stub.GetAttestation(
                host_pb2.HostAttestationRequest(nonce=nonce), timeout=timeout
            )
        except grpc.aio.AioRpcError as e:
            typed = transport_error(e, "host", host, transport)
            raise _Failed(str(typed) if typed else f"{e.code().name}: {e.details()}") from e
    document: bytes = reply.document
    return document


def _nonce(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not hexadecimal: {text!r}") from e
    if not 1 <= len(value) <= _MAX_NONCE:
        raise argparse.ArgumentTypeError(f"a nonce is 1 to {_MAX_NONCE} bytes")
    return value


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None
