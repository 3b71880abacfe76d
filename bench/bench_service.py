"""End to end through relay + host + enclave (real processes on Unix sockets), against tss.local.

Reports, for 2-of-2 wallets (one device + the server share) of each scheme:
keygen and signing latency through the service (median wall ms), the same
ceremony with all parties in one process (``tss.local``), the difference (the
service's overhead: relay hops, host, enclave, sealing, KMS, attestation-bound
channels), and signing throughput with N concurrent ceremonies.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.util import measure
from client.devstack import running_stack
from client.party import PartyIdentity
from client.wallet import WalletClient
from tss import local

SCHEMES = ("bip340", "ecdsa-secp256k1")
RUNS = 10
CONCURRENCY = (1, 4, 8)
DIGEST = bytes(32)


async def _median_ms(work: object, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await work()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def _bench(directory: Path) -> None:
    async with running_stack(directory) as stack:
        async with WalletClient(
            stack.host_address, stack.relay_address, stack.coordinator_key,
            root_certificate=stack.root_certificate,
        ) as wallets:  # fmt: skip
            device = PartyIdentity.generate()
            print(f"{'scheme':16} {'op':8} {'service ms':>11} {'local ms':>9} {'overhead':>9}")
            for scheme in SCHEMES:
                wallet = await wallets.create_wallet(scheme, [device], threshold=2)  # type: ignore[arg-type]
                keygen_ms = await _median_ms(
                    lambda s=scheme: wallets.create_wallet(s, [device], threshold=2),
                    RUNS,  # type: ignore[misc]
                )
                sign_ms = await _median_ms(
                    lambda w=wallet: wallets.sign(w, DIGEST, {0: device}), RUNS
                )  # type: ignore[misc]
                local_keygen = measure(
                    lambda s=scheme: local.keygen(s, threshold=2, parties=2), RUNS
                )  # type: ignore[misc]
                shares = local.keygen(scheme, threshold=2, parties=2)
                local_sign = measure(lambda sh=shares: local.sign(sh, DIGEST), RUNS)  # type: ignore[misc]
                for op, service, base in (
                    ("keygen", keygen_ms, local_keygen.wall_ms),
                    ("sign", sign_ms, local_sign.wall_ms),
                ):
                    print(f"{scheme:16} {op:8} {service:11.1f} {base:9.1f} {service - base:9.1f}")
                for n in CONCURRENCY:
                    start = time.perf_counter()
                    await asyncio.gather(
                        *(wallets.sign(wallet, DIGEST, {0: device}) for _ in range(n * 2))
                    )
                    elapsed = time.perf_counter() - start
                    print(
                        f"{scheme:16} sign x{n * 2:<3} concurrency {n}: {n * 2 / elapsed:6.1f} signatures/s"
                    )


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(_bench(Path(directory)))


if __name__ == "__main__":
    main()
