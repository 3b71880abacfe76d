"""Scale-out on this machine: 1 host + 1 relay + 1 enclave against 2 + 2 + 2, the same wallets.

Both systems are the scaled-out shape (``client.cli.devstack_scaleout``):
hosts on one PostgreSQL store, relays on one Redis, every host driving every
enclave. For BIP-340 2-of-2 signatures (one device and the server share) it
reports the p50 of sequential signatures, the throughput with N signatures in
flight (spread over the hosts), and the CPU milliseconds one signature costs
each process (``/proc/PID/stat``, user + system, all threads) during the
throughput runs, summed per role. CPU per signature is what capacity follows:
one core of a role sustains about 1000 / (its CPU ms per signature)
signatures/s, and the service (relays, hosts, enclaves, devkms, not the
benchmark's own device parties) about 1000 / (their sum) per core. On a
2-core machine both systems share the same two cores, so throughput cannot
double here; the CPU per signature shows whether adding processes costs
anything per signature, i.e. whether capacity grows with the cores given to
them.

``python -m bench.bench_scaleout [--signatures N] [--in-flight N ...]``;
PostgreSQL and Redis from ``SHARDKEEP_BENCH_POSTGRES`` / ``SHARDKEEP_BENCH_REDIS``
(local defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import redis

from bench.bench_cpu import sample
from client.cli.devstack_scaleout import ScaleoutStack, running_scaleout
from client.sdk.party import PartyIdentity
from client.sdk.wallet import Wallet
from shardkeep.eventloop import run

POSTGRES = os.environ.get("SHARDKEEP_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("SHARDKEEP_BENCH_REDIS", "redis://127.0.0.1:6379/0")
DIGEST = bytes(32)
WALLETS = 8
WARMUP = 2
ROUNDS = 8  # signatures per in-flight slot in a throughput run
ROLES = ("client", "relay", "host", "enclave", "devkms")
SERVICE_ROLES = ROLES[1:]


@dataclass(frozen=True)
class Shape:
    hosts: int
    relays: int
    enclaves: int

    @property
    def name(self) -> str:
        return f"{self.hosts}x{self.relays}x{self.enclaves}"


SHAPES = (Shape(1, 1, 1), Shape(2, 2, 2))


@dataclass(frozen=True)
class Rate:
    in_flight: int
    per_second: float
    cpu_ms: dict[str, float]  # per signature, by process name


@dataclass(frozen=True)
class Result:
    shape: Shape
    p50_ms: float
    rates: list[Rate]


def _role(name: str) -> str:
    return name.split("-", 1)[0]


def _pids(stack: ScaleoutStack) -> dict[str, int]:
    return {"client": os.getpid(), **{n: p.pid for n, p in stack.processes.items()}}


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: sample(pid).cpu_ms for name, pid in pids.items()}


@contextmanager
def _schema() -> Iterator[str]:
    """A store URL in a fresh PostgreSQL schema, dropped afterwards."""
    schema = f"bench_scaleout_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES else "?"
    try:
        yield f"{POSTGRES}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _drop_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


async def _measure(
    stack: ScaleoutStack, shape: Shape, signatures: int, in_flights: list[int]
) -> Result:
    clients = [stack.client(i) for i in range(shape.hosts)]
    for client in clients:
        await client.__aenter__()
    try:
        device = PartyIdentity.generate()
        wallets: list[Wallet] = [
            await clients[i % len(clients)].create_wallet(  # the bench signs bare digests
                "bip340", [device], threshold=2, allow_raw_digest=True
            )
            for i in range(WALLETS)
        ]
        turn = 0

        async def sign() -> None:
            nonlocal turn
            turn += 1
            client, wallet = clients[turn % len(clients)], wallets[turn % len(wallets)]
            await client.sign(wallet, DIGEST, {0: device})

        # Every wallet's record opened in every enclave (KMS) through every host: a
        # host takes its enclaves in turn for consecutive signatures.
        for wallet in wallets:
            for client in clients:
                for _ in range(WARMUP * shape.enclaves):
                    await client.sign(wallet, DIGEST, {0: device})
        walls = []
        for _ in range(signatures):
            start = time.perf_counter()
            await sign()
            walls.append((time.perf_counter() - start) * 1000)
        pids = _pids(stack)
        rates = []
        for in_flight in in_flights:
            total = ROUNDS * in_flight
            slots = asyncio.Semaphore(in_flight)

            async def one(slots: asyncio.Semaphore = slots) -> None:
                async with slots:
                    await sign()

            before = _cpu(pids)
            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(total)))
            for client in clients:  # done when the server's side of every signature is
                await client.settle()
            elapsed = time.perf_counter() - start
            after = _cpu(pids)
            cpu = {n: (after[n] - before[n]) / total for n in pids}
            rates.append(Rate(in_flight, total / elapsed, cpu))
        return Result(shape, statistics.median(walls), rates)
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)


async def _bench_shape(
    directory: Path, shape: Shape, signatures: int, in_flights: list[int]
) -> Result:
    prefix = f"shardkeep:bench:scaleout:{secrets.token_hex(6)}:"
    with _schema() as store_url:
        try:
            async with running_scaleout(
                directory, store_url=store_url, redis_url=REDIS, redis_prefix=prefix,
                hosts=shape.hosts, relays=shape.relays, enclaves=shape.enclaves,
            ) as stack:  # fmt: skip
                return await _measure(stack, shape, signatures, in_flights)
        finally:
            _drop_keys(prefix)


def _by_role(cpu: dict[str, float]) -> dict[str, float]:
    roles = dict.fromkeys(ROLES, 0.0)
    for name, ms in cpu.items():
        roles[_role(name)] += ms
    return roles


def print_table(results: list[Result]) -> None:
    head = "".join(f"{r:>9}" for r in ROLES)
    print(
        f"{'system':8}{'p50 ms':>8}{'flight':>7}{'sig/s':>8}{head}{'service':>9}"
        f"{'sig/s/core':>11}   (CPU ms per signature, summed per role)"
    )
    for r in results:
        for rate in r.rates:
            roles = _by_role(rate.cpu_ms)
            service = sum(roles[n] for n in SERVICE_ROLES)
            cells = "".join(f"{roles[n]:9.2f}" for n in ROLES)
            print(
                f"{r.shape.name:8}{r.p50_ms:8.2f}{rate.in_flight:7}{rate.per_second:8.1f}"
                f"{cells}{service:9.2f}{1000 / service:11.1f}"
            )
    print("per process, CPU ms per signature (the largest in-flight run):")
    for r in results:
        rate = r.rates[-1]
        cells = ", ".join(f"{n} {ms:.2f}" for n, ms in sorted(rate.cpu_ms.items()))
        print(f"  {r.shape.name}: {cells}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.bench_scaleout", description=__doc__)
    parser.add_argument("--signatures", type=int, default=40, help="sequential signatures")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[8, 32])
    args = parser.parse_args(argv)
    results = []
    for shape in SHAPES:
        with tempfile.TemporaryDirectory() as directory:
            results.append(
                run(_bench_shape(Path(directory), shape, args.signatures, args.in_flight))
            )
    print_table(results)


if __name__ == "__main__":
    main()
