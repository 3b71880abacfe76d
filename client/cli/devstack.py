"""Start the whole system on embedded defaults as real processes (``make run``, end-to-end tests).

One state directory holds everything: the simulated PKI, KMS policy and
coordinator key (``python -m enclave.devsetup``), the Unix sockets, the host's
SQLite database and each process's log. Processes: devkms (the KMS stand-in),
the relay (in-memory rooms), the enclave and the host; with ``coordinator=True``
also the coordinator service for devices (``coordinator.main``), which devices
enroll with using the one-time codes in ``enrollment-codes``.

With ``tls=True`` the stack looks like a deployment from the outside: the
relay and the host listen on loopback TCP with TLS from a throwaway CA
(``client.cli.devtls``), the host requires a client certificate from it (mutual
TLS) and an API token (``api-token``), and ``DevStack.transport`` holds the
client settings that reach them; the coordinator then serves TLS on loopback
TCP too (devices need only the CA).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from client.cli.devtls import DevTls, write_dev_tls
from client.sdk.transport import Transport
from shardkeep.server import wait_healthy

STARTUP_SECONDS = 60.0


class DevProcesses:
    """The processes of a running development system (``DevStack``, and the scaled-out
    ``client.cli.devstack_scaleout.ScaleoutStack``): their logs, and killing and
    starting one again with its own command line."""

    directory: Path
    processes: dict[str, subprocess.Popen[bytes]]
    commands: dict[str, list[str]]

    def address_of(self, name: str) -> str:
        """The gRPC address of process ``name``."""
        raise NotImplementedError

    def channel_for(self, name: str) -> Callable[[str], grpc.aio.Channel]:
        """How to open a channel to process ``name`` (default: plaintext)."""
        return grpc.aio.insecure_channel

    def environment_of(self, name: str) -> dict[str, str] | None:
        """What process ``name`` gets in its environment besides this one's."""
        return None

    def log_path(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def kill(self, name: str) -> None:
        """SIGKILL one process (no graceful drain), as a crash would; ``revive`` starts it again."""
        process = self.processes[name]
        process.kill()
        process.wait(timeout=15)

    async def revive(self, name: str) -> None:
        """Start a killed (or crashed) process again with its command line; wait until healthy."""
        if self.processes[name].poll() is None:
            return
        self.processes[name] = _spawn(
            self.directory, name, self.commands[name], self.environment_of(name)
        )
        await _healthy(
            self.address_of(name), name, self.processes[name], self.log_path(name),
            self.channel_for(name),
        )  # fmt: skip

    async def restart(self, name: str) -> None:
        """Stop one process (SIGKILL: no graceful drain) and start it again."""
        self.kill(name)
        await self.revive(name)


@dataclass
class DevStack(DevProcesses):
    """Addresses and files of a running development system."""

    directory: Path
    relay_address: str
    host_address: str
    enclave_address: str
    store_url: str
    root_certificate: bytes
    coordinator_key: Ed25519PrivateKey = field(repr=False)
    transport: Transport = field(default_factory=Transport)
    tls: DevTls | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    coordinator_address: str | None = None
    enrollment_codes: Path | None = None
    commands: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def address_of(self, name: str) -> str:
        """The gRPC address of the relay, enclave, host or coordinator."""
        if name == "coordinator" and self.coordinator_address is not None:
            return self.coordinator_address
        return {
            "relay": self.relay_address,
            "enclave": self.enclave_address,
            "host": self.host_address,
        }[name]

    def channel_for(self, name: str) -> Callable[[str], grpc.aio.Channel]:
        """How to open a channel to process ``name`` (TLS and token for the host and relay)."""
        if name in ("host", "coordinator"):
            return self.transport.host_channel
        if name == "relay":
            return self.transport.relay_channel
        return grpc.aio.insecure_channel


def _spawn(
    stack_dir: Path, name: str, args: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python -m ARGS`` in ``stack_dir``, its output appended to its log."""
    log = (stack_dir / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, cwd=stack_dir,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip


def _dev_setup(directory: Path, enclave_listen: str) -> tuple[Path, Ed25519PrivateKey]:
    """Make the development PKI, KMS policy, relay admission and coordinator key
    (``enclave.devsetup``); return the enclave's configuration file and the coordinator key."""
    directory.mkdir(parents=True, exist_ok=True)
    setup = subprocess.run(
        [sys.executable, "-m", "enclave.devsetup", str(directory), "--listen", enclave_listen],
        check=True, capture_output=True,
    )  # fmt: skip
    key = load_pem_private_key((directory / "coordinator.key").read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError("coordinator.key is not an Ed25519 key")
    return Path(setup.stdout.decode().strip()), key


async def _start_devkms(system: DevProcesses) -> str:
    """Start devkms on a free loopback port; return its URL."""
    directory = system.directory
    system.processes["devkms"] = _spawn(
        directory, "devkms",
        ["devkms", "--listen", "127.0.0.1:0", "--policy", str(directory / "kms-policy.json")],
    )  # fmt: skip
    match = await _wait_for_line(
        system.log_path("devkms"), r"devkms listening on (http://\S+)", system.processes["devkms"]
    )
    return match.group(1)


def _stop(processes: dict[str, subprocess.Popen[bytes]], order: Sequence[str]) -> None:
    """Terminate the processes named in ``order`` (clients before servers), then reap
    every process, killing one that does not stop within 15 s."""
    for name in order:
        process = processes.get(name)
        if process is not None and process.poll() is None:
            process.terminate()
    for process in processes.values():
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


async def _wait_for_line(
    path: Path, pattern: str, process: subprocess.Popen[bytes]
) -> re.Match[str]:
    deadline = asyncio.get_running_loop().time() + STARTUP_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        match = re.search(pattern, path.read_text(errors="replace")) if path.exists() else None
        if match:
            return match
        if process.poll() is not None:
            raise RuntimeError(f"{path.stem} exited with {process.returncode}; see {path}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{path.stem} did not start; see {path}")


async def _healthy(
    address: str,
    name: str,
    process: subprocess.Popen[bytes],
    log: Path,
    channel: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel,
) -> None:
    async with channel(address) as opened:
        try:
            await wait_healthy(opened, timeout=STARTUP_SECONDS)
        except TimeoutError as e:
            status = process.poll()
            raise RuntimeError(f"{name} is not healthy (exit status {status}); see {log}") from e


async def _listening(stack: DevStack, name: str, process: subprocess.Popen[bytes]) -> str:
    """The ``127.0.0.1:PORT`` a process on port 0 reports (its certificate names the IP).

    The process's command line then names that port, so ``revive`` keeps the address.
    """
    match = await _wait_for_line(
        stack.log_path(name), rf"shardkeep-{name} listening on 127\.0\.0\.1:(\d+)", process
    )
    address = f"127.0.0.1:{match.group(1)}"
    command = stack.commands[name]
    command[command.index("--listen") + 1] = address
    return address


ENROLLMENT_CODES = 5


async def _start_coordinator(stack: DevStack, serve: list[str], host_flags: list[str]) -> None:
    """Start ``coordinator.main`` against the stack's host and relay; wait until healthy.

    ``serve``: its own TLS flags (empty: a Unix socket); ``host_flags``: the
    host's, from which the client side (CA, certificate, token) is derived.
    """
    directory = stack.directory
    codes = directory / "enrollment-codes"
    fd = os.open(codes, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(secrets.token_urlsafe(12) + "\n" for _ in range(ENROLLMENT_CODES))
    stack.enrollment_codes = codes
    reach: list[str] = []
    if stack.tls is not None:
        reach = [
            "--server-ca", str(stack.tls.ca), "--client-cert", str(stack.tls.client_certificate),
            "--client-key", str(stack.tls.client_key),
            "--api-token-file", host_flags[host_flags.index("--api-token-file") + 1],
        ]  # fmt: skip
    listen = "127.0.0.1:0" if serve else f"unix:{directory / 'coordinator.sock'}"
    stack.commands["coordinator"] = [
        "coordinator.main", "--listen", listen, "--host", stack.host_address,
        "--relay", stack.relay_address, "--coordinator-key", str(directory / "coordinator.key"),
        "--root", str(directory / "pki" / "root.pem"), "--enrollment-codes", str(codes),
        "--registry", str(directory / "coordinator.db"), *serve, *reach,
    ]  # fmt: skip
    process = stack.processes["coordinator"] = _spawn(
        directory, "coordinator", stack.commands["coordinator"]
    )
    stack.coordinator_address = await _listening(stack, "coordinator", process) if serve else listen
    await _healthy(
        stack.coordinator_address, "coordinator", process, stack.log_path("coordinator"),
        stack.channel_for("coordinator"),
    )  # fmt: skip


@asynccontextmanager
async def running_stack(
    directory: Path,
    *,
    tls: bool = False,
    store_url: str | None = None,
    host_args: Sequence[str] = (),
    relay_args: Sequence[str] = (),
    enclave_args: Sequence[str] = (),
    coordinator: bool = False,
) -> AsyncIterator[DevStack]:
    """Start devkms, relay, enclave and host under ``directory``; stop them on exit.

    Arguments:
        directory: the state directory.
        tls: serve the relay and the host on loopback TCP with TLS, mutual TLS
            and an API token at the host (see the module's docstring).
        store_url: the host's store (default: SQLite in ``directory``).
        host_args: more ``host.main`` options (e.g. ``--pending-deadline-seconds 5``).
        relay_args: more ``relay.main`` options (e.g. ``--redis-prefix``; a Redis
            backend URL goes in the relay's own environment variable, which
            ``relay.main`` documents, never in argv).
        enclave_args: more ``enclave.main`` options (e.g. ``--log-level DEBUG``).
        coordinator: also start the coordinator service for devices.
    """
    directory = directory.resolve()  # the processes run with it as their working directory
    enclave_address = f"unix:{directory / 'enclave.sock'}"
    config, key = _dev_setup(directory, enclave_address)
    stack = DevStack(
        directory=directory,
        relay_address=f"unix:{directory / 'relay.sock'}",
        host_address=f"unix:{directory / 'host.sock'}",
        enclave_address=enclave_address,
        store_url=store_url or f"sqlite:///{directory / 'host.db'}",
        root_certificate=(directory / "pki" / "root.pem").read_bytes(),
        coordinator_key=key,
    )
    relay_flags: list[str] = []
    host_flags: list[str] = []
    if tls:
        stack.tls = files = write_dev_tls(directory / "tls")
        token_file = directory / "api-token"
        token_file.write_text(secrets.token_urlsafe(24) + "\n")
        token_file.chmod(0o600)
        serve = ["--tls-cert", str(files.server_certificate), "--tls-key", str(files.server_key)]
        relay_flags = serve
        host_flags = [*serve, "--client-ca", str(files.ca), "--relay-ca", str(files.ca),
                      "--api-token-file", str(token_file)]  # fmt: skip
        stack.transport = Transport.from_files(
            server_ca=files.ca,
            client_cert=files.client_certificate,
            client_key=files.client_key,
            api_token_file=token_file,
        )
    procs = stack.processes
    try:
        kms_endpoint = await _start_devkms(stack)
        relay_listen = "127.0.0.1:0" if tls else stack.relay_address
        stack.commands["relay"] = [
            "relay.main", "--listen", relay_listen,
            "--admission", str(directory / "relay-admission.json"), *relay_flags, *relay_args,
        ]  # fmt: skip
        procs["relay"] = _spawn(directory, "relay", stack.commands["relay"])
        if tls:
            stack.relay_address = await _listening(stack, "relay", procs["relay"])
        stack.commands["enclave"] = [
            "enclave.main", "--config", str(config), "--kms-endpoint", kms_endpoint,
            *enclave_args,
        ]  # fmt: skip
        procs["enclave"] = _spawn(directory, "enclave", stack.commands["enclave"])
        await _healthy(
            stack.relay_address, "relay", procs["relay"], stack.log_path("relay"),
            stack.channel_for("relay"),
        )  # fmt: skip
        await _healthy(
            stack.enclave_address, "enclave", procs["enclave"], stack.log_path("enclave")
        )
        host_listen = "127.0.0.1:0" if tls else stack.host_address
        stack.commands["host"] = [
            "host.main", "--listen", host_listen, "--enclave", stack.enclave_address,
            "--relay", stack.relay_address, "--store", stack.store_url, *host_flags, *host_args,
        ]  # fmt: skip
        procs["host"] = _spawn(directory, "host", stack.commands["host"])
        if tls:
            stack.host_address = await _listening(stack, "host", procs["host"])
        await _healthy(
            stack.host_address, "host", procs["host"], stack.log_path("host"),
            stack.channel_for("host"),
        )  # fmt: skip
        if coordinator:
            await _start_coordinator(stack, relay_flags, host_flags)
        yield stack
    finally:
        _stop(procs, ("coordinator", "host", "enclave", "relay", "devkms"))
