"""Start the whole system on embedded defaults as real processes (``make run``, end-to-end tests).

One state directory holds everything: the simulated PKI, KMS policy and
coordinator key (``python -m enclave.devsetup``), the Unix sockets, the host's
SQLite database and each process's log. Processes: devkms (the KMS stand-in),
the relay (in-memory rooms), the enclave and the host.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from shardkeep.server import wait_healthy

STARTUP_SECONDS = 60.0


@dataclass
class DevStack:
    """Addresses and files of a running development system."""

    directory: Path
    relay_address: str
    host_address: str
    enclave_address: str
    store_url: str
    root_certificate: bytes
    coordinator_key: Ed25519PrivateKey = field(repr=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    commands: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def log_path(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def address_of(self, name: str) -> str:
        """The gRPC address of the relay, enclave or host."""
        return {
            "relay": self.relay_address,
            "enclave": self.enclave_address,
            "host": self.host_address,
        }[name]

    def kill(self, name: str) -> None:
        """SIGKILL one process (no graceful drain), as a crash would; ``revive`` starts it again."""
        process = self.processes[name]
        process.kill()
        process.wait(timeout=15)

    async def revive(self, name: str) -> None:
        """Start a killed (or crashed) process again with its command line; wait until healthy."""
        if self.processes[name].poll() is None:
            return
        self.processes[name] = _spawn(self.directory, name, self.commands[name])
        address = self.address_of(name)
        await _healthy(address, name, self.processes[name], self.log_path(name))

    async def restart(self, name: str) -> None:
        """Stop one process (SIGKILL: no graceful drain) and start it again."""
        self.kill(name)
        await self.revive(name)


def _spawn(stack_dir: Path, name: str, args: list[str]) -> subprocess.Popen[bytes]:
    log = (stack_dir / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, cwd=stack_dir,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


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


async def _healthy(address: str, name: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await wait_healthy(channel, timeout=STARTUP_SECONDS)
        except TimeoutError as e:
            status = process.poll()
            raise RuntimeError(f"{name} is not healthy (exit status {status}); see {log}") from e


@asynccontextmanager
async def running_stack(directory: Path) -> AsyncIterator[DevStack]:
    """Start devkms, relay, enclave and host under ``directory``; stop them on exit."""
    directory = directory.resolve()  # the processes run with it as their working directory
    directory.mkdir(parents=True, exist_ok=True)
    enclave_address = f"unix:{directory / 'enclave.sock'}"
    setup = subprocess.run(
        [sys.executable, "-m", "enclave.devsetup", str(directory), "--listen", enclave_address],
        check=True, capture_output=True,
    )  # fmt: skip
    config = Path(setup.stdout.decode().strip())
    key = load_pem_private_key((directory / "coordinator.key").read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError("coordinator.key is not an Ed25519 key")
    stack = DevStack(
        directory=directory,
        relay_address=f"unix:{directory / 'relay.sock'}",
        host_address=f"unix:{directory / 'host.sock'}",
        enclave_address=enclave_address,
        store_url=f"sqlite:///{directory / 'host.db'}",
        root_certificate=(directory / "pki" / "root.pem").read_bytes(),
        coordinator_key=key,
    )
    procs = stack.processes
    try:
        procs["devkms"] = _spawn(
            directory, "devkms",
            ["devkms", "--listen", "127.0.0.1:0", "--policy", str(directory / "kms-policy.json")],
        )  # fmt: skip
        match = await _wait_for_line(
            stack.log_path("devkms"), r"devkms listening on (http://\S+)", procs["devkms"]
        )
        stack.commands["relay"] = [
            "relay.main", "--listen", stack.relay_address,
            "--admission", str(directory / "relay-admission.json"),
        ]  # fmt: skip
        procs["relay"] = _spawn(directory, "relay", stack.commands["relay"])
        stack.commands["enclave"] = [
            "enclave.main", "--config", str(config), "--kms-endpoint", match.group(1),
        ]  # fmt: skip
        procs["enclave"] = _spawn(directory, "enclave", stack.commands["enclave"])
        await _healthy(stack.relay_address, "relay", procs["relay"], stack.log_path("relay"))
        await _healthy(
            stack.enclave_address, "enclave", procs["enclave"], stack.log_path("enclave")
        )
        stack.commands["host"] = [
            "host.main", "--listen", stack.host_address, "--enclave", stack.enclave_address,
            "--relay", stack.relay_address, "--store", stack.store_url,
        ]  # fmt: skip
        procs["host"] = _spawn(directory, "host", stack.commands["host"])
        await _healthy(stack.host_address, "host", procs["host"], stack.log_path("host"))
        yield stack
    finally:
        for name in ("host", "enclave", "relay", "devkms"):
            process = procs.get(name)
            if process is not None and process.poll() is None:
                process.terminate()
        for process in procs.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
