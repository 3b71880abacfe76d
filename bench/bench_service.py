"""End to end through relay + host + enclave (real processes on Unix sockets), against tss.local.

Reports, for 2-of-2 wallets (one device + the server share) of each scheme:
keygen and signing latency through the service (median wall ms), the same
ceremony with all parties in one process (``tss.local``), the difference (the
service's overhead: relay hops, host, enclave, sealing, KMS, attestation-bound
channels), and signing throughput with N concurrent ceremonies. For ECDSA also
a DKLs23 pair setup alone, and the first signature after an enclave restart
(the enclave keeps its pair setups in memory only, so that signature is
refused once, runs a pair setup and is retried: docs/security/ot-setups.md).
Also the price of replay protection: one ``Host.GetChallenge`` round trip
(host + enclave), and the room creation the SDK overlaps it with, alone and
together.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.util import measure
from client.cli.devstack import running_stack
from client.sdk.party import PartyIdentity
from client.sdk.wallet import WalletClient
from shardkeep import eventloop
from tss import local
from tss.keyshare import Scheme

SCHEMES: tuple[Scheme, ...] = ("bip340", "ecdsa-secp256k1")
RUNS = 10
RESTARTS = 3
CONCURRENCY = (1, 4, 8)
DIGEST = bytes(32)


async def _median_ms(work: Callable[[], Awaitable[object]], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await work()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def _room_ms(wallets: WalletClient, *, with_challenge: bool) -> float:
    """Median ms to create a room (as ``WalletClient._run`` does), with a challenge fetched
    alongside or not; each room is closed again outside the timing (relay quotas)."""
    samples = []
    for _ in range(5 * RUNS):
        start = time.perf_counter()
        create = wallets._create_room(["a", "b"])
        if with_challenge:
            room, _ = await asyncio.gather(create, wallets.challenge())
        else:
            room = await create
        samples.append((time.perf_counter() - start) * 1000)
        await wallets._relay.close_room(room.room_id, room.admin_token)
    return statistics.median(samples)


async def _bench(directory: Path) -> None:
    async with (
        running_stack(directory) as stack,
        WalletClient(
            stack.host_address, stack.relay_address, stack.coordinator_key,
            root_certificate=stack.root_certificate,
        ) as wallets,
    ):  # fmt: skip
        challenge_ms = await _median_ms(wallets.challenge, 5 * RUNS)
        room_ms = await _room_ms(wallets, with_challenge=False)
        both_ms = await _room_ms(wallets, with_challenge=True)
        print(f"challenge {challenge_ms:.2f} ms, create room {room_ms:.2f} ms, both overlapped")
        print(f"(as every ceremony with the server share does) {both_ms:.2f} ms")
        device = PartyIdentity.generate()
        print(f"{'scheme':16} {'op':8} {'service ms':>11} {'local ms':>9} {'overhead':>9}")
        for scheme in SCHEMES:
            create = functools.partial(wallets.create_wallet, scheme, [device], threshold=2)
            wallet = await create()
            keygen_ms = await _median_ms(create, RUNS)
            sign = functools.partial(wallets.sign, wallet, DIGEST, {0: device})
            sign_ms = await _median_ms(sign, RUNS)
            local_keygen = measure(
                functools.partial(local.keygen, scheme, threshold=2, parties=2), RUNS
            )
            shares = local.keygen(scheme, threshold=2, parties=2)
            local_sign = measure(functools.partial(local.sign, shares, DIGEST), RUNS)
            for op, service, base in (
                ("keygen", keygen_ms, local_keygen.wall_ms),
                ("sign", sign_ms, local_sign.wall_ms),
            ):
                print(f"{scheme:16} {op:8} {service:11.1f} {base:9.1f} {service - base:9.1f}")
            for n in CONCURRENCY:
                rate = await _throughput(
                    functools.partial(wallets.sign, wallet, DIGEST, {0: device}), n
                )
                print(f"{scheme:16} signing {n} at a time: {rate:6.1f} signatures/s")
            if scheme == "ecdsa-secp256k1":
                setup_ms = await _median_ms(
                    functools.partial(wallets.pair_setups, wallet, {0: device}), RUNS
                )
                print(f"{scheme:16} pair setup {setup_ms:10.1f}")
                first: list[float] = []
                for _ in range(RESTARTS):
                    await stack.restart("enclave")
                    await wallets.attest()  # the host has re-provisioned the enclave
                    first.append(await _median_ms(sign, 1))
                print(
                    f"{scheme:16} first sign after restart {statistics.median(first):.1f} ms "
                    f"(then {await _median_ms(sign, RUNS):.1f} ms)"
                )


async def _throughput(work: Callable[[], Awaitable[object]], concurrency: int) -> float:
    """Signatures per second with ``concurrency`` ceremonies in flight (4 per slot in all)."""
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await work()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(4 * concurrency)))
    return 4 * concurrency / (time.perf_counter() - start)


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        eventloop.run(_bench(Path(directory)))


if __name__ == "__main__":
    main()
