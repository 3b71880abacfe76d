"""The ``shardkeep`` command line over the client SDK (docs/architecture.md, "Components").

Subcommands:

* ``shardkeep attestation verify FILE`` verifies a Nitro attestation document
  (``client.sdk.attestation.verify``) and prints its contents;
* ``shardkeep attestation fetch --host ADDR --out FILE`` gets the enclave's
  document from a host, on a fresh nonce it prints (``client.cli.fetch``);
* ``shardkeep wallet create|sign|backup|recover|list|reshare|refresh|export``
  runs wallets with the server share against a running host
  (``client.cli.wallet`` documents the options, state and environment);
* ``shardkeep demo`` runs the whole system on embedded defaults (``make run``);
* ``shardkeep dev up|status|down`` keeps it running in the background for
  trying things, and prints the environment the CLI needs (``client.cli.dev``).

Exit status: 0 success, 1 the attestation document is invalid or the
operation failed, 2 bad usage, unreadable input or a command not available
yet, 130 interrupted (Ctrl-C), 141 the reader of the output went away (a closed
pipe, as in ``shardkeep ... | head -1``). Every failure is one line on stderr,
``shardkeep: <what failed>``, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from client.cli.dev import add_dev_commands
from client.cli.exits import EXIT_CLOSED_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from client.cli.fetch import add_fetch_command
from client.cli.policy import add_policy_commands
from client.cli.wallet import add_wallet_commands, environment_help
from client.errors import InvalidInput, WalletError
from client.sdk.attestation import AttestationDocument, AttestationError, verify
from tss.errors import InputError

__all__ = [
    # Functions
    "main",
    "build_parser",
    "document_to_json",
]


def main(argv: list[str] | None = None) -> int:
    """Run the ``shardkeep`` command line.

    Arguments:
        argv: the arguments after the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 success, 1 invalid attestation document or failed
        operation, 2 usage error, 130 interrupted, 141 closed pipe.
    """
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # argparse exits on --help and on usage errors
            return e.code if isinstance(e.code, int) else EXIT_USAGE
        status: int = args.handler(args, sys.stdout, sys.stderr)
        sys.stdout.flush()
        return status
    except WalletError as e:  # an SDK failure its command does not map itself
        print(f"shardkeep: {e}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, InvalidInput) else EXIT_FAILED
    except KeyboardInterrupt:
        print("shardkeep: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Nobody reads stdout any more: point it at /dev/null, so that the
        # interpreter's last flush at exit does not fail again (Python's
        # documented recipe for SIGPIPE), and say nothing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_CLOSED_PIPE


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand.

    Returns:
        The ``shardkeep`` parser; each leaf subcommand sets ``handler``.
    """
    parser = argparse.ArgumentParser(
        prog="shardkeep",
        description="shardkeep threshold-signature wallet client.",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"shardkeep {_version()}",
        help="print the version and exit",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    attestation = commands.add_parser(
        "attestation", help="AWS Nitro Enclaves attestation documents"
    )
    attestation_commands = attestation.add_subparsers(
        dest="attestation_command", required=True, metavar="ACTION"
    )
    verify_parser = attestation_commands.add_parser(
        "verify",
        help="verify an attestation document and print its contents",
        description=(
            "Verify a COSE_Sign1 attestation document: ES384 signature, certificate "
            "chain to the AWS Nitro root G1 (or --root) valid at --at, debug-mode "
            "PCRs, expected PCRs and nonce. Exit 0 if valid, 1 if not (reason on "
            "stderr), 2 on a usage error."
        ),
    )
    verify_parser.add_argument("file", metavar="FILE", help="the document's bytes ('-' = stdin)")
    verify_parser.add_argument(
        "--root",
        metavar="PEM",
        type=Path,
        help="trust this root certificate (PEM or DER file) instead of the AWS root",
    )
    verify_parser.add_argument(
        "--at",
        metavar="TIME",
        type=_parse_time,
        help="verification time, ISO 8601 (UTC if no offset) or Unix seconds; default now",
    )
    verify_parser.add_argument(
        "--pcr",
        metavar="N=HEX",
        type=_parse_pcr,
        action="append",
        default=[],
        help="expected value of PCR N (repeatable)",
    )
    verify_parser.add_argument(
        "--nonce", metavar="HEX", type=_parse_hex, help="the nonce the document must carry"
    )
    verify_parser.add_argument(
        "--allow-debug",
        action="store_true",
        help="accept all-zero PCRs (a debug-mode enclave; never in production)",
    )
    verify_parser.add_argument(
        "--json", action="store_true", help="print the document as JSON (bytes as hex)"
    )
    verify_parser.set_defaults(handler=_attestation_verify)
    add_fetch_command(attestation_commands)

    add_wallet_commands(commands)
    add_policy_commands(commands)
    add_dev_commands(commands)

    demo = commands.add_parser("demo", help="run the end-to-end demonstration")
    demo.add_argument(
        "--dir", type=Path, default=Path("var/demo"),
        help="where the demo writes its deployment: a directory an earlier demo made (it is "
        "recreated), an empty one or a new one; anything else is refused (default var/demo)",
    )  # fmt: skip
    demo.set_defaults(handler=_demo)
    return parser


def document_to_json(doc: AttestationDocument) -> dict[str, Any]:
    """Render a verified document as JSON-ready data.

    Arguments:
        doc: a document returned by ``client.sdk.attestation.verify``.

    Returns:
        A dict with byte strings as lowercase hex, PCR indices as string keys
        and the timestamp in ISO 8601 with milliseconds.
    """
    return {
        "module_id": doc.module_id,
        "timestamp": doc.timestamp.isoformat(timespec="milliseconds"),
        "digest": doc.digest,
        "pcrs": {str(index): value.hex() for index, value in doc.pcrs.items()},
        "certificate": doc.certificate.hex(),
        "cabundle": [cert.hex() for cert in doc.cabundle],
        "public_key": _hex_or_none(doc.public_key),
        "user_data": _hex_or_none(doc.user_data),
        "nonce": _hex_or_none(doc.nonce),
    }


### Handlers


def _attestation_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        document = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        root = args.root.read_bytes() if args.root is not None else None
    except OSError as e:
        print(f"shardkeep: cannot read {e.filename}: {e.strerror}", file=err)
        return EXIT_USAGE
    expected: dict[int, bytes] = {}
    for index, value in args.pcr:
        if index in expected:
            print(f"shardkeep: --pcr {index} given twice", file=err)
            return EXIT_USAGE
        expected[index] = value
    try:
        doc = verify(
            document,
            root_certificate=root,
            at=args.at,
            expected_pcrs=expected,
            nonce=args.nonce,
            allow_debug=args.allow_debug,
        )
    except AttestationError as e:
        print(f"shardkeep: attestation document invalid ({e.reason}): {e}", file=err)
        return EXIT_FAILED
    except InputError as e:
        print(f"shardkeep: {e}", file=err)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(document_to_json(doc), indent=2), file=out)
    else:
        _print_summary(doc, out)
    return EXIT_OK


def _demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from client.cli.demo import DemoDirectoryError, run_demo  # pulls in the whole SDK: load it here

    try:
        return run_demo(args.dir, out)
    except DemoDirectoryError as e:
        print(f"shardkeep: {e}", file=err)
        return EXIT_USAGE


### Helpers


def _version() -> str:
    try:
        return importlib.metadata.version("shardkeep")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def _print_summary(doc: AttestationDocument, out: TextIO) -> None:
    rows: list[tuple[str, str]] = [
        ("module_id", doc.module_id),
        ("timestamp", doc.timestamp.isoformat(timespec="milliseconds")),
        ("digest", doc.digest),
        *((f"PCR{index}", value.hex()) for index, value in doc.pcrs.items()),
        ("public_key", _describe_bytes(doc.public_key)),
        ("user_data", _describe_bytes(doc.user_data)),
        ("nonce", _describe_bytes(doc.nonce)),
        ("cabundle", f"{len(doc.cabundle)} certificates"),
    ]
    print("attestation document valid", file=out)
    for name, value in rows:
        print(f"  {name + ':':<12} {value}", file=out)


def _describe_bytes(value: bytes | None) -> str:
    return "(absent)" if value is None else f"{value.hex()} ({len(value)} bytes)"


def _hex_or_none(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _parse_hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not hexadecimal: {text!r}") from e


def _parse_pcr(text: str) -> tuple[int, bytes]:
    index, sep, value = text.partition("=")
    if not sep or not index.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected N=HEX, got {text!r}")
    return int(index), _parse_hex(value)


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    except (OverflowError, OSError) as e:
        raise argparse.ArgumentTypeError(f"time out of range: {text!r}") from e
    try:
        when = datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not ISO 8601 or Unix seconds: {text!r}") from e
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


if __name__ == "__main__":
    raise SystemExit(main())
