"""Soak: sustained signing with both schemes while another process floods the relay.

    python -m bench.soak [--minutes 15] [--signers 4] [--relay-redis redis://HOST:PORT/DB]
                         [--relay-transport call|session]

Not part of ``make bench`` or ``make test`` (it runs for minutes). It starts the
development system (devkms, relay, enclave, host as real processes, as
``make run`` does), creates a 2-of-2 wallet per scheme (one device and the
server share), then for ``--minutes`` keeps ``--signers`` signing ceremonies
in flight, alternating BIP-340 and ECDSA, while a separate process sends
CreateRoom calls without a credential (and with an unpinned key) to the relay
as fast as it can. It reports ceremonies done per scheme, failures by type (a
flood-caused failure would show as RESOURCE_EXHAUSTED or a relay error), the
flood's answers by status code, and each process's resident memory at the
start and the end. ``--relay-redis`` runs the relay on Redis (its own key
prefix, deleted afterwards) and reports what its budget still holds at the
end, which must be nothing once the last ceremony closed its room.
``--relay-transport session`` runs the host and the SDK on the relay session
transport (docs/transport.md): the ceremonies' rooms are then created by
their first join while the flood still hammers CreateRoom.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import grpc
import redis.asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.cli.devstack import running_stack
from client.sdk.party import PartyIdentity
from client.sdk.wallet import Wallet, WalletClient
from relay.admission import CREDENTIAL_METADATA_KEY, create_room_credential
from relay.main import BACKEND_ENV
from relay.redis_backend import RedisBackend
from shardkeep import eventloop
from shardkeep.v1 import relay_pb2, relay_pb2_grpc

__all__ = ["main"]

DIGEST_BYTES = 32


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def flood(address: str, concurrency: int) -> dict[str, int]:
    """CreateRoom without a valid credential, ``concurrency`` calls in flight,
    until SIGTERM."""
    stranger = Ed25519PrivateKey.generate()
    codes: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = relay_pb2_grpc.RelayStub(channel)  # type: ignore[no-untyped-call]

        async def one_worker(n: int) -> None:
            while not stop.is_set():
                request = relay_pb2.CreateRoomRequest(participants=["a", "b"], ttl_ms=86_400_000)
                metadata: tuple[tuple[str, str], ...] = ()
                if n % 2:  # half of them sign with a key the relay does not pin
                    body = request.SerializeToString(deterministic=True)
                    credential = create_room_credential(stranger, body, time.time_ns() // 10**6)
                    metadata = ((CREDENTIAL_METADATA_KEY, credential),)
                try:
                    await stub.CreateRoom(request, metadata=metadata, timeout=10)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as e:
                    codes[e.code().name] += 1

        await asyncio.gather(*(one_worker(n) for n in range(concurrency)))
    return dict(codes)


async def _sign_loop(
    wallets: WalletClient,
    wallet: Wallet,
    device: PartyIdentity,
    deadline: float,
    done: collections.Counter[str],
    failures: collections.Counter[str],
    scheme: str,
) -> None:
    while time.monotonic() < deadline:
        try:
            await wallets.sign(wallet, secrets.token_bytes(DIGEST_BYTES), {0: device})
            done[scheme] += 1
        except Exception as e:  # every failure is counted by type, none stops the soak
            code = getattr(e, "code", None)
            name = getattr(code, "name", code)
            failures[f"{scheme}: {type(e).__name__}{f' ({name})' if name else ''}"] += 1


async def soak(
    minutes: float,
    signers: int,
    flood_concurrency: int,
    relay_redis: str | None = None,
    relay_transport: Literal["call", "session"] = "call",
) -> dict[str, object]:
    seconds = minutes * 60
    prefix = f"shardkeep-soak:{secrets.token_hex(4)}:"
    relay_args: list[str] = []
    if relay_redis is not None:
        os.environ[BACKEND_ENV] = relay_redis  # the relay's child process reads it
        relay_args = ["--redis-prefix", prefix]
    with tempfile.TemporaryDirectory(prefix="shardkeep-soak-") as tmp:
        async with (
            running_stack(
                Path(tmp),
                relay_args=relay_args,
                host_args=["--relay-transport", relay_transport],
            ) as stack,
            WalletClient(
                stack.host_address,
                stack.relay_address,
                stack.coordinator_key,
                root_certificate=stack.root_certificate,
                timeout=60.0,
                relay_transport=relay_transport,
            ) as wallets,
        ):
            device = PartyIdentity.generate()
            made = {
                scheme: await wallets.create_wallet(  # the soak signs bare digests
                    scheme, [device], threshold=2, allow_raw_digest=True
                )
                for scheme in ("bip340", "ecdsa-secp256k1")
            }
            pids = {name: p.pid for name, p in stack.processes.items()}
            pids["client (this process)"] = os.getpid()
            flooder = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.soak", "--flood", stack.relay_address,
                "--concurrency", str(flood_concurrency),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            pids["flood"] = flooder.pid
            await asyncio.sleep(2)  # the flood is under way
            rss_start = {name: rss_mib(pid) for name, pid in pids.items()}
            done: collections.Counter[str] = collections.Counter()
            failures: collections.Counter[str] = collections.Counter()
            started = time.monotonic()
            deadline = started + seconds
            schemes = list(made)
            await asyncio.gather(
                *(
                    _sign_loop(
                        wallets,
                        made[schemes[i % 2]],
                        device,
                        deadline,
                        done,
                        failures,
                        schemes[i % 2],
                    )
                    for i in range(signers)
                )
            )
            elapsed = time.monotonic() - started
            rss_end = {name: rss_mib(pid) for name, pid in pids.items()}
            flooder.terminate()
            out, _ = await flooder.communicate()
            flood_codes = json.loads(out.decode().strip().splitlines()[-1])
    held = None if relay_redis is None else await _redis_budget_left(relay_redis, prefix)
    return {
        "minutes": round(elapsed / 60, 2),
        "signers": signers,
        "ceremonies": dict(done),
        "per_second": round(sum(done.values()) / elapsed, 1),
        "failures": dict(failures),
        "flood": flood_codes,
        "rss_mib_start": {k: round(v, 1) for k, v in rss_start.items()},
        "rss_mib_end": {k: round(v, 1) for k, v in rss_end.items()},
        **({} if held is None else {"redis_budget_left": held}),
    }


async def _redis_budget_left(url: str, prefix: str) -> dict[str, int]:
    """Rooms and bytes the relay's Redis budget still holds (after a sweep); then
    delete the run's keys."""
    backend = RedisBackend.from_url(url, prefix=prefix)
    try:
        usage = await backend.usage(int(time.time() * 1000))
    finally:
        await backend.aclose()
    client = redis.asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
    return {"rooms": usage.rooms, "reserved_bytes": usage.reserved_bytes}


def _print(report: Mapping[str, object]) -> None:
    print(f"soak: {report['minutes']} min, {report['signers']} signing ceremonies in flight")
    print(f"ceremonies done: {report['ceremonies']} ({report['per_second']}/s)")
    print(f"failures by type: {report['failures'] or 'none'}")
    print(f"flood (CreateRoom without a valid credential), answers: {report['flood']}")
    start, end = report["rss_mib_start"], report["rss_mib_end"]
    assert isinstance(start, dict) and isinstance(end, dict)
    print(f"{'process':24} {'RSS start MiB':>14} {'RSS end MiB':>12}")
    for name in start:
        print(f"{name:24} {start[name]:14.1f} {end[name]:12.1f}")
    if "redis_budget_left" in report:
        print(f"relay budget left in Redis: {report['redis_budget_left']}")
    print(json.dumps(report))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--signers", type=int, default=4, help="ceremonies in flight")
    parser.add_argument("--concurrency", type=int, default=16, help="flood calls in flight")
    parser.add_argument("--relay-redis", metavar="URL", help="run the relay on this Redis")
    parser.add_argument(
        "--relay-transport", choices=("call", "session"), default="call",
        help="the host's and the SDK's transport to the relay (docs/transport.md)",
    )  # fmt: skip
    parser.add_argument("--flood", metavar="RELAY", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flood:
        codes = eventloop.run(flood(args.flood, args.concurrency))
        print(json.dumps(codes), flush=True)
        return
    report = soak(
        args.minutes, args.signers, args.concurrency, args.relay_redis, args.relay_transport
    )
    _print(eventloop.run(report))


if __name__ == "__main__":
    main()
