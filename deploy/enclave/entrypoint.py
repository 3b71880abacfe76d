#!/usr/bin/env python3
"""The enclave image's entrypoint: the vsock bridge and the enclave process, supervised.

Inside a Nitro enclave nothing reaches the process but vsock, and
``nitro-cli run-enclave`` passes no arguments or environment: every setting
below comes from the image (Dockerfile ``ENV``, so it is measured into
PCR0/PCR2 with the rest of the image). Flags override the environment only so
tests can run the same code on Unix sockets.

What it does, in order (deploy/README.md, "What runs where"):

1. brings the loopback interface up (an enclave boots with ``lo`` down) and
   maps the KMS host name to 127.0.0.1 in /etc/hosts, so TLS to KMS is
   checked against the real name while the bytes go to the local forward;
2. starts the forwards (``tcp:127.0.0.1:443`` → ``vsock:3:8000``, the parent's
   vsock-proxy for KMS), then the bridge ``vsock:ANY:5000`` → the enclave
   process's Unix socket (docs/architecture.md, "The enclave boundary");
3. runs ``shardkeep-enclave --listen unix:… --config …`` and waits.

If the enclave process exits, for whatever reason, the entrypoint closes the
bridges and exits non-zero, which ends the enclave; the parent's
``shardkeep-enclave.service`` sees it gone and starts it again. SIGTERM (only
seen off Nitro) stops the child gracefully and exits 0.

Environment (flag): SHARDKEEP_BRIDGE_LISTEN (--listen), SHARDKEEP_ENCLAVE_SOCKET
(--enclave-socket), SHARDKEEP_ENCLAVE_CONFIG (--config), SHARDKEEP_ENCLAVE_COMMAND
(--enclave-command), SHARDKEEP_FORWARDS (--forward, space-separated
LISTEN=TARGET), SHARDKEEP_LOOPBACK_HOSTS (--loopback-host, space-separated),
SHARDKEEP_SETUP_LOOPBACK (--setup-loopback / --no-setup-loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import shlex
import signal
import socket
import struct
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import structlog

from shardkeep.bridge import AddressError, Bridge, BridgeError, UnixAddress, parse_address
from shardkeep.logs import configure

__all__ = ["ensure_loopback_up", "main", "parse_args", "supervise", "write_loopback_hosts"]

DEFAULTS: Final = {
    "SHARDKEEP_BRIDGE_LISTEN": "vsock:ANY:5000",
    "SHARDKEEP_ENCLAVE_SOCKET": "unix:/run/shardkeep/enclave.sock",
    "SHARDKEEP_ENCLAVE_CONFIG": "/etc/shardkeep/enclave.json",
    "SHARDKEEP_ENCLAVE_COMMAND": "shardkeep-enclave",
    "SHARDKEEP_FORWARDS": "",
    "SHARDKEEP_LOOPBACK_HOSTS": "",
    "SHARDKEEP_SETUP_LOOPBACK": "0",
}
_STOP_GRACE_SECONDS: Final = 10.0

# <linux/sockios.h>, <net/if.h>: struct ifreq is a 16-byte name and a 24-byte union.
_SIOCGIFFLAGS: Final = 0x8913
_SIOCSIFFLAGS: Final = 0x8914
_IFF_UP: Final = 0x1
_IFREQ: Final = struct.Struct("16sH22x")

_log = structlog.get_logger("shardkeep.entrypoint")


def ensure_loopback_up(interface: str = "lo") -> bool:
    """Bring a network interface up if it is down (Linux; needs CAP_NET_ADMIN to change it).

    The kernel gives ``lo`` 127.0.0.1/8 when it comes up, so no address is set.

    Arguments:
        interface: the interface name.

    Returns:
        True when the interface was down and is now up, False when it was up.

    Raises:
        OSError: the interface does not exist or may not be changed.
    """
    name = interface.encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        reply = fcntl.ioctl(sock, _SIOCGIFFLAGS, _IFREQ.pack(name, 0))
        _, flags = _IFREQ.unpack(reply)
        if flags & _IFF_UP:
            return False
        fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ.pack(name, flags | _IFF_UP))
    return True


def write_loopback_hosts(hosts_file: Path, names: Sequence[str]) -> None:
    """Make each name resolve to 127.0.0.1 by appending to a hosts file (once per name).

    Arguments:
        hosts_file: usually /etc/hosts.
        names: host names, e.g. ``kms.us-east-1.amazonaws.com``.
    """
    existing = hosts_file.read_text() if hosts_file.exists() else ""
    present = {
        name for line in existing.splitlines() if line.split()[:1] == ["127.0.0.1"]
        for name in line.split()[1:]
    }  # fmt: skip
    missing = [name for name in names if name not in present]
    if not missing:
        return
    prefix = "" if not existing or existing.endswith("\n") else "\n"
    with hosts_file.open("a") as out:
        out.write(prefix + "".join(f"127.0.0.1 {name}\n" for name in missing))


def _forward(text: str) -> tuple[str, str]:
    listen, sep, target = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"forward {text!r} must be LISTEN=TARGET")
    try:
        parse_address(listen)
        parse_address(target)
    except AddressError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return listen, target


def _address(text: str) -> str:
    try:
        parse_address(text)
    except AddressError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """Read the settings: flags first, then the image's environment, then defaults.

    Arguments:
        argv: command-line arguments (``sys.argv[1:]`` if None).
        environ: the environment (``os.environ``).

    Returns:
        The parsed settings.
    """

    def env(name: str) -> str:
        return environ.get(name, DEFAULTS[name])

    parser = argparse.ArgumentParser(prog="entrypoint.py", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=_address, default=env("SHARDKEEP_BRIDGE_LISTEN"))
    parser.add_argument("--enclave-socket", default=env("SHARDKEEP_ENCLAVE_SOCKET"))
    parser.add_argument("--config", default=env("SHARDKEEP_ENCLAVE_CONFIG"))
    parser.add_argument("--enclave-command", default=env("SHARDKEEP_ENCLAVE_COMMAND"))
    parser.add_argument(
        "--forward",
        action="append",
        type=_forward,
        help="LISTEN=TARGET, repeatable (default: SHARDKEEP_FORWARDS)",
    )
    parser.add_argument("--loopback-host", action="append", help="name to map to 127.0.0.1")
    parser.add_argument("--hosts-file", type=Path, default=Path("/etc/hosts"))
    parser.add_argument(
        "--setup-loopback",
        action=argparse.BooleanOptionalAction,
        default=env("SHARDKEEP_SETUP_LOOPBACK") == "1",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        socket_address = parse_address(args.enclave_socket)
    except AddressError as e:
        parser.error(str(e))
    if not isinstance(socket_address, UnixAddress):
        parser.error("--enclave-socket must be a unix: address (grpcio has no vsock)")
    if args.forward is None:
        try:
            args.forward = [_forward(item) for item in env("SHARDKEEP_FORWARDS").split()]
        except argparse.ArgumentTypeError as e:
            parser.error(f"SHARDKEEP_FORWARDS: {e}")
    if args.loopback_host is None:
        args.loopback_host = env("SHARDKEEP_LOOPBACK_HOSTS").split()
    if not shlex.split(args.enclave_command):
        parser.error("the enclave command is empty")
    return args


async def _stop_child(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), _STOP_GRACE_SECONDS)
    except TimeoutError:
        _log.warning("entrypoint.enclave_kill", pid=process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def supervise(args: argparse.Namespace) -> int:
    """Start the forwards, the bridge and the enclave process; return the exit status.

    Arguments:
        args: from :func:`parse_args`.

    Returns:
        0 after SIGTERM/SIGINT; otherwise non-zero (the enclave process's
        status, or 1), because the enclave process must never stop on its own.
    """
    if args.setup_loopback:
        try:
            changed = ensure_loopback_up()
        except OSError as e:
            _log.error("entrypoint.loopback_failed", error=str(e))
            return 1
        _log.info("entrypoint.loopback_up", changed=changed)
    if args.loopback_host:
        write_loopback_hosts(args.hosts_file, args.loopback_host)

    enclave_socket = parse_address(args.enclave_socket)
    if not isinstance(enclave_socket, UnixAddress):  # parse_args checked; narrows the type
        return 1
    Path(enclave_socket.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    bridges = [Bridge(listen, target) for listen, target in args.forward]
    bridges.append(Bridge(args.listen, enclave_socket, unix_mode=0o600))
    started: list[Bridge] = []
    try:
        for bridge in bridges:
            await bridge.start()
            started.append(bridge)
    except (BridgeError, OSError) as e:
        _log.error("entrypoint.bridge_failed", error=str(e))
        for bridge in started:
            await bridge.close()
        return 1

    command = [
        *shlex.split(args.enclave_command),
        "--listen",
        str(enclave_socket),
        "--config",
        args.config,
    ]
    try:
        process = await asyncio.create_subprocess_exec(*command)
    except OSError as e:
        _log.error("entrypoint.enclave_spawn_failed", error=str(e), command=command[0])
        for bridge in started:
            await bridge.close()
        return 1
    _log.info(
        "entrypoint.started",
        pid=process.pid,
        bridges=[f"{b.bound_address}->{b.target}" for b in started],
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    child = asyncio.create_task(process.wait())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({child, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()

    if child.done():
        status = process.returncode or 0
        _log.error("entrypoint.enclave_exited", returncode=status)
        # Never 0: a clean exit of the enclave process is still the end of service.
        exit_status = status if status > 0 else 128 - status if status < 0 else 1
    else:
        _log.info("entrypoint.stopping")
        await _stop_child(process)
        exit_status = 0
    for bridge in started:
        await bridge.close(grace=1.0)
    return exit_status


def main(argv: Sequence[str] | None = None) -> None:
    """Run the entrypoint and exit with its status."""
    args = parse_args(argv, os.environ)
    configure("entrypoint", level=logging.getLevelNamesMapping().get(args.log_level.upper(), 20))
    sys.exit(asyncio.run(supervise(args)))


if __name__ == "__main__":
    main()
