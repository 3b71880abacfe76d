"""``python -m devkms``: run the KMS stand-in as its own process.

Usage::

    python -m devkms --listen 127.0.0.1:0 --policy policy.json [--state keys.json]

It prints ``devkms listening on http://HOST:PORT`` once bound (so a caller
that asked for port 0 learns the port), serves until SIGTERM or SIGINT, then
stops cleanly. Without ``--state`` master keys live in memory and vanish on
exit; with it they persist in that file (mode 0600).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from devkms.keystore import KeyStore, KeyStoreError
from devkms.policy import Policy, PolicyError, load_policy
from devkms.server import make_server
from devkms.service import KmsService

__all__ = ["main"]


def _listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    host = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        # A development stand-in that hands out keys must not face a network.
        raise argparse.ArgumentTypeError("devkms binds only loopback addresses")
    return host, int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devkms", description="Local stand-in for AWS KMS with Nitro attestation policies."
    )
    parser.add_argument(
        "--listen", type=_listen_address, default=("127.0.0.1", 0), help="HOST:PORT (loopback)"
    )
    parser.add_argument("--policy", type=Path, help="policy JSON file (see devkms.policy)")
    parser.add_argument("--state", type=Path, help="master-key file (0600); default: memory")
    parser.add_argument("--region", default="us-east-1", help="region in key ARNs")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in until SIGTERM/SIGINT.

    Arguments:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    try:
        policy = load_policy(args.policy) if args.policy else Policy()
        service = KmsService(KeyStore(args.state), policy, region=args.region)
    except (PolicyError, KeyStoreError) as e:
        print(f"devkms: {e}", file=sys.stderr)
        return 2
    host, port = args.listen
    server, bound = make_server(service, host, port)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"devkms listening on http://{shown_host}:{bound}", flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must run
        # outside the thread that is serving.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
