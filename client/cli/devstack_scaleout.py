"""A development system scaled out: several hosts on one PostgreSQL, several relays on one
Redis and several enclaves, all serving the same wallets (end-to-end tests, ``bench_scaleout``).

Processes, each a real one on a Unix socket under the state directory: one
devkms; ``enclave-1`` … (one image and configuration, so one sealed identity
and the same KMS key policy); ``relay-1`` … (the Redis backend under one key
prefix, so a room made on one relay is joined on another); ``host-1`` …, each
with every enclave (``--enclave`` repeated, in the same order on every host)
and its own relay, on one PostgreSQL store. Host *i* and relay *i* form a
pair a coordinator uses together (``ScaleoutStack.client``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from client.cli.devstack import _healthy, _wait_for_line
from client.sdk.wallet import WalletClient
from relay.main import BACKEND_ENV  # the relay reads its Redis URL there, never from argv

__all__ = ["ScaleoutStack", "running_scaleout"]


@dataclass
class ScaleoutStack:
    """Addresses and processes of a running scaled-out system."""

    directory: Path
    hosts: list[str]
    relays: list[str]
    enclaves: list[str]
    store_url: str = field(repr=False)
    root_certificate: bytes = field(repr=False)
    coordinator_key: Ed25519PrivateKey = field(repr=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    commands: dict[str, list[str]] = field(default_factory=dict, repr=False)
    environments: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    def client(self, index: int) -> WalletClient:
        """A coordinator's SDK client of host ``index`` and relay ``index`` (``async with``)."""
        return WalletClient(
            self.hosts[index],
            self.relays[index],
            self.coordinator_key,
            root_certificate=self.root_certificate,
        )

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def kill(self, name: str) -> None:
        """SIGKILL one process (no graceful drain), as a crash would."""
        process = self.processes[name]
        process.kill()
        process.wait(timeout=15)

    async def revive(self, name: str) -> None:
        """Start a killed process again with its command line; wait until healthy."""
        if self.processes[name].poll() is None:
            return
        self.processes[name] = _spawn(
            self.directory, name, self.commands[name], self.environments.get(name)
        )
        await _healthy(_address(self.directory, name), name, self.processes[name], self._log(name))

    def _log(self, name: str) -> Path:
        return self.directory / f"{name}.log"


def _address(directory: Path, name: str) -> str:
    return f"unix:{directory / f'{name}.sock'}"


def _spawn(
    directory: Path, name: str, args: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log = (directory / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, cwd=directory,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip


@asynccontextmanager
async def running_scaleout(
    directory: Path,
    *,
    store_url: str,
    redis_url: str,
    redis_prefix: str,
    hosts: int = 2,
    relays: int = 2,
    enclaves: int = 2,
    host_args: Sequence[str] = (),
) -> AsyncIterator[ScaleoutStack]:
    """Start devkms, ``enclaves`` enclaves, ``relays`` relays and ``hosts`` hosts; stop them
    on exit.

    Arguments:
        directory: the state directory (sockets, logs, the development PKI and keys).
        store_url: the hosts' one store (``postgresql://…``; SQLite for one host only).
        redis_url: the relays' one Redis.
        redis_prefix: the relays' key prefix (one per system on a shared Redis).
        hosts, relays, enclaves: how many of each; host *i* uses relay *i* modulo ``relays``.
        host_args: more ``host.main`` options for every host.
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    enclave_names = [f"enclave-{i + 1}" for i in range(enclaves)]
    relay_names = [f"relay-{i + 1}" for i in range(relays)]
    host_names = [f"host-{i + 1}" for i in range(hosts)]
    setup = subprocess.run(
        [sys.executable, "-m", "enclave.devsetup", str(directory),
         "--listen", _address(directory, enclave_names[0])],
        check=True, capture_output=True,
    )  # fmt: skip
    config = Path(setup.stdout.decode().strip())
    key = load_pem_private_key((directory / "coordinator.key").read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError("coordinator.key is not an Ed25519 key")
    stack = ScaleoutStack(
        directory=directory,
        hosts=[_address(directory, n) for n in host_names],
        relays=[_address(directory, n) for n in relay_names],
        enclaves=[_address(directory, n) for n in enclave_names],
        store_url=store_url,
        root_certificate=(directory / "pki" / "root.pem").read_bytes(),
        coordinator_key=key,
    )
    procs = stack.processes

    def start(name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        stack.commands[name] = args
        if env is not None:
            stack.environments[name] = env
        procs[name] = _spawn(directory, name, args, env)

    async def healthy(names: Sequence[str]) -> None:
        for name in names:
            await _healthy(_address(directory, name), name, procs[name], stack._log(name))

    try:
        start("devkms", ["devkms", "--listen", "127.0.0.1:0",
                         "--policy", str(directory / "kms-policy.json")])  # fmt: skip
        match = await _wait_for_line(
            directory / "devkms.log", r"devkms listening on (http://\S+)", procs["devkms"]
        )
        for name in enclave_names:
            start(name, ["enclave.main", "--config", str(config), "--kms-endpoint",
                         match.group(1), "--listen", _address(directory, name)])  # fmt: skip
        for name in relay_names:
            start(
                name,
                ["relay.main", "--listen", _address(directory, name),
                 "--admission", str(directory / "relay-admission.json"),
                 "--redis-prefix", redis_prefix],
                {BACKEND_ENV: redis_url},
            )  # fmt: skip
        await healthy([*enclave_names, *relay_names])
        enclave_flags = [flag for e in stack.enclaves for flag in ("--enclave", e)]
        for i, name in enumerate(host_names):
            start(name, ["host.main", "--listen", stack.hosts[i], *enclave_flags,
                         "--relay", stack.relays[i % relays], "--store", store_url,
                         *host_args])  # fmt: skip
            # One at a time: the first host's first enclave makes the identity the
            # others are provisioned with.
            await healthy([name])
        yield stack
    finally:
        for name in [*host_names, *enclave_names, *relay_names, "devkms"]:
            process = procs.get(name)
            if process is not None and process.poll() is None:
                process.terminate()
        for process in procs.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
