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

import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.cli.devstack import DevProcesses, _dev_setup, _healthy, _spawn, _start_devkms, _stop
from client.sdk.wallet import WalletClient
from relay.main import BACKEND_ENV  # the relay reads its Redis URL there, never from argv

__all__ = ["ScaleoutStack", "running_scaleout"]


@dataclass
class ScaleoutStack(DevProcesses):
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

    def address_of(self, name: str) -> str:
        return _address(self.directory, name)

    def environment_of(self, name: str) -> dict[str, str] | None:
        return self.environments.get(name)


def _address(directory: Path, name: str) -> str:
    return f"unix:{directory / f'{name}.sock'}"


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
    enclave_names = [f"enclave-{i + 1}" for i in range(enclaves)]
    relay_names = [f"relay-{i + 1}" for i in range(relays)]
    host_names = [f"host-{i + 1}" for i in range(hosts)]
    config, key = _dev_setup(directory, _address(directory, enclave_names[0]))
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
            await _healthy(_address(directory, name), name, procs[name], stack.log_path(name))

    try:
        kms_endpoint = await _start_devkms(stack)
        for name in enclave_names:
            start(name, ["enclave.main", "--config", str(config), "--kms-endpoint",
                         kms_endpoint, "--listen", _address(directory, name)])  # fmt: skip
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
        _stop(procs, [*host_names, *enclave_names, *relay_names, "devkms"])
