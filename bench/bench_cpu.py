"""CPU time per signature in each process of the service, and the p50 wall time.

The development machine is shared: other work makes wall times noisy, while a
process's own CPU time (``/proc/PID/stat`` utime + stime, its threads
included) barely moves with load. So this reports, for each wallet shape,
the CPU milliseconds one signature costs the client (this process: the
device parties and the SDK), the relay, the host, the enclave and devkms,
their sum, the voluntary context switches per signature, and the median wall
time of sequential signatures; then the throughput with 8 and 32 signatures
in flight. Real processes on Unix sockets
(``client.cli.devstack``), the in-memory relay, SQLite at the host.

``python -m bench.bench_cpu [--signatures N] [--enclave-transport call|session]
[--relay-transport call|session|both] [--host-transport call|session|both]``;
each shape runs a few seconds, the whole run well under a minute per
combination of transports on an idle 2-core machine. With ``both`` (the
default for the relay) the transports run one after the other in the same
run, each on a fresh stack, so their tables share the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.service_stack import TransportName, add_transport_options, stack_with_client, transports
from client.cli.devstack import DevStack
from client.sdk.party import PartyIdentity
from client.sdk.wallet import Wallet, WalletClient
from shardkeep.eventloop import run
from tss.keyshare import Scheme

PROCESSES = ("client", "relay", "host", "enclave", "devkms")
DIGEST = bytes(32)
WARMUP = 3
IN_FLIGHT = (8, 32)
_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Shape:
    scheme: Scheme
    threshold: int
    parties: int  # the server share included

    @property
    def name(self) -> str:
        label = "BIP-340" if self.scheme == "bip340" else "ECDSA"
        return f"{label} {self.threshold}-of-{self.parties}"


SHAPES = (Shape("bip340", 2, 2), Shape("ecdsa-secp256k1", 2, 2), Shape("bip340", 3, 5))


@dataclass(frozen=True)
class Sample:
    cpu_ms: float
    switches: int


def sample(pid: int) -> Sample:
    """CPU milliseconds (user + system, all threads) and voluntary context switches so far."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces: fields start after its closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    cpu_ms = (int(fields[11]) + int(fields[12])) * _TICK_MS  # utime, stime (fields 14, 15)
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    switches += int(line.split()[1])
    return Sample(cpu_ms, switches)


def _pids(stack: DevStack) -> dict[str, int]:
    return {"client": os.getpid(), **{n: p.pid for n, p in stack.processes.items()}}


@dataclass(frozen=True)
class Result:
    shape: Shape
    signatures: int
    p50_ms: float
    cpu_ms: dict[str, float]  # per signature, by process
    switches: float  # voluntary context switches per signature, all processes
    rates: dict[int, tuple[float, float]]  # in flight -> (signatures/s, CPU ms per signature)


async def measure_shape(
    wallets: WalletClient, stack: DevStack, shape: Shape, signatures: int
) -> Result:
    devices = [PartyIdentity.generate() for _ in range(shape.parties - 1)]
    wallet = await wallets.create_wallet(  # the bench signs bare digests
        shape.scheme, devices, threshold=shape.threshold, allow_raw_digest=True
    )
    signers = {i: devices[i] for i in range(shape.threshold - 1)}  # + the server share
    for _ in range(WARMUP):
        await wallets.sign(wallet, DIGEST, signers)
    pids = _pids(stack)
    before = {name: sample(pid) for name, pid in pids.items()}
    walls = []
    for _ in range(signatures):
        start = time.perf_counter()
        await wallets.sign(wallet, DIGEST, signers)
        walls.append((time.perf_counter() - start) * 1000)
    await wallets.settle()  # the server's side of the last signature counts too
    after = {name: sample(pid) for name, pid in pids.items()}
    rates = {}
    for in_flight in IN_FLIGHT:
        rates[in_flight] = await _throughput(wallets, wallet, signers, pids, in_flight)
    return Result(
        shape,
        signatures,
        statistics.median(walls),
        {n: (after[n].cpu_ms - before[n].cpu_ms) / signatures for n in pids},
        sum(after[n].switches - before[n].switches for n in pids) / signatures,
        rates,
    )


async def _throughput(
    wallets: WalletClient,
    wallet: Wallet,
    signers: dict[int, PartyIdentity],
    pids: dict[str, int],
    in_flight: int,
) -> tuple[float, float]:
    """Signatures per second with ``in_flight`` signatures always running (four rounds
    of them in all), and the CPU ms per signature of all processes meanwhile."""
    total = 4 * in_flight
    slots = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with slots:
            await wallets.sign(wallet, DIGEST, signers)

    cpu_before = sum(sample(pid).cpu_ms for pid in pids.values())
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    await wallets.settle()  # done when the server's side of every signature is
    elapsed = time.perf_counter() - start
    cpu = sum(sample(pid).cpu_ms for pid in pids.values()) - cpu_before
    return total / elapsed, cpu / total


def print_table(results: list[Result]) -> None:
    head = "".join(f"{n:>9}" for n in PROCESSES)
    print(f"{'shape':16}{'p50 ms':>8}{head}{'total':>9}{'vol.cs':>8}   (CPU ms per signature)")
    for r in results:
        cells = "".join(f"{r.cpu_ms.get(n, 0.0):9.2f}" for n in PROCESSES)
        total = sum(r.cpu_ms.values())
        print(f"{r.shape.name:16}{r.p50_ms:8.2f}{cells}{total:9.2f}{r.switches:8.0f}")
    for r in results:
        for in_flight, (rate, cpu_ms) in r.rates.items():
            print(
                f"{r.shape.name:16} {in_flight:2} in flight: {rate:6.1f} signatures/s, "
                f"{cpu_ms:6.2f} CPU ms per signature (all processes)"
            )


async def _bench(
    directory: Path,
    signatures: int,
    transport: str,
    relay_transport: TransportName,
    host_transport: TransportName = "call",
) -> list[Result]:
    clients = stack_with_client(directory, transport, relay_transport, host_transport)
    async with clients as (stack, wallets):
        results = []
        for shape in SHAPES:
            count = signatures if shape.scheme == "bip340" else max(signatures // 3, 10)
            results.append(await measure_shape(wallets, stack, shape, count))
        return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.bench_cpu", description=__doc__)
    parser.add_argument("--signatures", type=int, default=60, help="BIP-340 signatures per shape")
    add_transport_options(parser)
    args = parser.parse_args(argv)
    for relay_transport in transports(args.relay_transport):
        for host_transport in transports(args.host_transport):
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            print(
                f"relay transport {relay_transport}, host transport {host_transport} "
                f"(load average {load}):"
            )
            with tempfile.TemporaryDirectory() as directory:
                print_table(
                    run(
                        _bench(
                            Path(directory),
                            args.signatures,
                            args.enclave_transport,
                            relay_transport,
                            host_transport,
                        )
                    )
                )


if __name__ == "__main__":
    main()
