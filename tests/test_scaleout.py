"""Two hosts on one PostgreSQL, two relays on one Redis and two enclaves serve the same wallets.

Real processes (``client.cli.devstack_scaleout``): wallets made through one
host sign through the other, a refresh runs while the wallet signs on the
other enclave, two refreshes of one wallet race through the two hosts (the
store lets one commit), and an enclave killed mid-run leaves the other
serving every wallet, nothing lost.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar
from urllib.parse import quote

import psycopg
import pytest

from client.cli.devstack_scaleout import ScaleoutStack, running_scaleout
from client.sdk.party import PartyIdentity
from client.sdk.wallet import Wallet, WalletClient, WalletError
from tests.conftest import POSTGRES_DSN, REDIS_URL, require_service
from tests.stack_harness import held_in_background
from tss.curve import ecdsa_verify, schnorr_verify
from tss.signing import RecoverableSignature

pytestmark = pytest.mark.slow
T = TypeVar("T")
START_TIMEOUT_S = 120.0
TEST_TIMEOUT_S = 240.0
DIGEST = bytes.fromhex("5c" * 32)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleoutStack]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    schema = f"test_scaleout_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES_DSN else "?"
    store_url = f"{POSTGRES_DSN}{separator}options={quote(f'-csearch_path={schema}')}"
    directory = tmp_path_factory.mktemp("scaleout") / "run"
    try:
        prefix = f"shardkeep:test:scaleout:{secrets.token_hex(6)}:"
        with held_in_background(
            lambda: running_scaleout(
                directory, store_url=store_url, redis_url=REDIS_URL, redis_prefix=prefix
            ),
            START_TIMEOUT_S,
        ) as running:
            yield running
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def run(stack: ScaleoutStack, body: Callable[[WalletClient, WalletClient], Awaitable[T]]) -> T:
    """``body(client of host 1, client of host 2)`` on a fresh loop, bounded by a timeout."""

    async def main() -> T:
        async with asyncio.timeout(TEST_TIMEOUT_S), stack.client(0) as a, stack.client(1) as b:
            return await body(a, b)

    return asyncio.run(main())


def valid(wallet: Wallet, signature: bytes | RecoverableSignature) -> bool:
    if isinstance(signature, RecoverableSignature):
        return ecdsa_verify(DIGEST, wallet.public_key, signature.signature)
    return schnorr_verify(DIGEST, wallet.public_key[-32:], signature)


def finished_on(stack: ScaleoutStack, kind: str, wallet_id: str = "") -> dict[str, set[str]]:
    """The ceremony ids of ``kind`` (of one wallet, if given) each enclave finished, from its
    log."""
    done: dict[str, set[str]] = {}
    for i in range(len(stack.enclaves)):
        name = f"enclave-{i + 1}"
        text = (stack.directory / f"{name}.log").read_text(errors="replace")
        done[name] = {
            m.group(1)
            for line in text.splitlines()
            if "ceremony finished" in line
            and f"CEREMONY_KIND_{kind}" in line
            and f'"wallet_id": "{wallet_id}' in line
            for m in [re.search(r'"ceremony_id": "([^"]+)"', line)]
            if m is not None
        }
    return done


def new_ids(
    stack: ScaleoutStack, kind: str, before: dict[str, set[str]], wallet_id: str = ""
) -> dict[str, set[str]]:
    found = finished_on(stack, kind, wallet_id)
    return {name: ids - before.get(name, set()) for name, ids in found.items()}


async def settled(
    stack: ScaleoutStack, kind: str, before: dict[str, set[str]], count: int, wallet_id: str = ""
) -> None:
    """Wait (a few seconds at most) for ``count`` new ceremonies of ``kind`` in the logs: an
    enclave logs its line as its ceremony ends, maybe after the host answered."""
    for _ in range(100):
        if sum(map(len, new_ids(stack, kind, before, wallet_id).values())) >= count:
            return
        await asyncio.sleep(0.05)


def test_keygen_through_one_host_signs_through_the_other_on_both_enclaves(
    stack: ScaleoutStack,
) -> None:
    async def body(a: WalletClient, b: WalletClient) -> dict[str, str]:
        ids = {}
        for scheme in ("bip340", "ecdsa-secp256k1"):
            device = PartyIdentity.generate()
            wallet = await a.create_wallet(scheme, [device], threshold=2, allow_raw_digest=True)
            ids[scheme] = wallet.wallet_id
            for _ in range(4):
                signature = await b.sign(wallet, DIGEST, {0: device})
                assert valid(wallet, signature), scheme
            signature = await a.sign(wallet, DIGEST, {0: device})
            assert valid(wallet, signature), scheme
            await settled(stack, "SIGN", {}, 5, wallet.wallet_id)
        return ids

    ids = run(stack, body)
    # BIP-340 signatures take turns between the enclaves (no affinity); an ECDSA
    # wallet's stay on one (its pair setups live there), through either host.
    assert all(finished_on(stack, "SIGN", ids["bip340"]).values())
    ecdsa = finished_on(stack, "SIGN", ids["ecdsa-secp256k1"])
    assert sorted(len(signed) for signed in ecdsa.values()) == [0, 5], ecdsa


def test_refresh_while_signing_on_the_other_enclave(stack: ScaleoutStack) -> None:
    async def body(a: WalletClient, b: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await a.create_wallet("bip340", [device], threshold=2, allow_raw_digest=True)

        async def signs() -> list[bytes | RecoverableSignature]:
            # Two at a time, so host 2 keeps both enclaves busy during the refresh.
            return list(
                await asyncio.gather(*(b.sign(wallet, DIGEST, {0: device}) for _ in range(6)))
            )

        signed_before = finished_on(stack, "SIGN")
        refreshed_before = finished_on(stack, "REFRESH")
        refreshed, signatures = await asyncio.gather(a.refresh(wallet, {0: device}), signs())
        # The refresh ran on one enclave while signatures ran on the other.
        await settled(stack, "REFRESH", refreshed_before, 1)
        await settled(stack, "SIGN", signed_before, 6)
        refresh_on = new_ids(stack, "REFRESH", refreshed_before)
        sign_on = new_ids(stack, "SIGN", signed_before)
        (refresher,) = [name for name, ids in refresh_on.items() if ids]
        assert any(ids for name, ids in sign_on.items() if name != refresher), sign_on
        assert all(valid(wallet, s) for s in signatures)
        assert refreshed.epoch == wallet.epoch + 1
        assert refreshed.public_key == wallet.public_key
        # The new epoch signs through either host, the old one still too (not acknowledged).
        assert valid(refreshed, await b.sign(refreshed, DIGEST, {0: device}))
        assert valid(refreshed, await a.sign(refreshed, DIGEST, {0: device}))
        assert valid(wallet, await b.sign(wallet, DIGEST, {0: device}))

    run(stack, body)


def test_two_refreshes_of_one_wallet_through_two_hosts_commit_once(stack: ScaleoutStack) -> None:
    async def body(a: WalletClient, b: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await a.create_wallet("bip340", [device], threshold=2, allow_raw_digest=True)
        outcomes = await asyncio.gather(
            a.refresh(wallet, {0: device}), b.refresh(wallet, {0: device}),
            return_exceptions=True,
        )  # fmt: skip
        won = [o for o in outcomes if isinstance(o, Wallet)]
        lost = [o for o in outcomes if not isinstance(o, Wallet)]
        # The store serialises the epoch: at most one commits; a loser fails typed.
        assert len(won) <= 1, outcomes
        assert all(isinstance(e, WalletError) for e in lost), lost
        if won:
            (winner,) = won
            assert winner.epoch == wallet.epoch + 1
            assert valid(winner, await b.sign(winner, DIGEST, {0: device}))
            assert valid(winner, await a.sign(winner, DIGEST, {0: device}))
        else:
            # Both lost (each met the other's pending epoch): the old epoch stays current.
            assert valid(wallet, await b.sign(wallet, DIGEST, {0: device}))

    run(stack, body)


def test_an_enclave_killed_mid_run_leaves_the_other_serving(stack: ScaleoutStack) -> None:
    async def body(a: WalletClient, b: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await a.create_wallet("bip340", [device], threshold=2, allow_raw_digest=True)
        clients = (a, b, a, b)
        # One ECDSA wallet per signer: concurrent pair setups of one device would
        # replace each other's (a device's affair, not the service's).
        ecdsa_devices = [PartyIdentity.generate() for _ in clients]
        ecdsa = [
            await a.create_wallet("ecdsa-secp256k1", [d], threshold=2, allow_raw_digest=True)
            for d in ecdsa_devices
        ]
        failures: list[WalletError] = []
        done = 0

        async def keep_signing(i: int, until: asyncio.Event) -> None:
            nonlocal done
            client = clients[i]
            while not until.is_set():
                try:
                    assert valid(wallet, await client.sign(wallet, DIGEST, {0: device}))
                    signature = await client.sign(ecdsa[i], DIGEST, {0: ecdsa_devices[i]})
                    assert valid(ecdsa[i], signature)
                    done += 1
                except WalletError as e:
                    failures.append(e)

        stop = asyncio.Event()
        signers = [asyncio.create_task(keep_signing(i, stop)) for i in range(len(clients))]
        while done < 4:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(stack.kill, "enclave-1")
        before = done
        while done < before + 12:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*signers)
        # Only what ran on the killed enclave at that moment fails (at most one
        # ceremony per signer), as unavailable; the rest moved to the other enclave.
        assert len(failures) <= len(signers), failures
        assert all("unavailable" in str(e) for e in failures), failures
        # Afterwards every signature goes through, through either host.
        for i, client in enumerate(clients):
            assert valid(wallet, await client.sign(wallet, DIGEST, {0: device}))
            assert valid(ecdsa[i], await client.sign(ecdsa[i], DIGEST, {0: ecdsa_devices[i]}))
        # Nothing lost: a new epoch from the surviving enclave, and the killed one,
        # back, serves the same wallets.
        refreshed = await b.refresh(wallet, {0: device})
        await stack.revive("enclave-1")
        for i, client in enumerate(clients):
            assert valid(refreshed, await client.sign(refreshed, DIGEST, {0: device}))
            assert valid(ecdsa[i], await client.sign(ecdsa[i], DIGEST, {0: ecdsa_devices[i]}))

    run(stack, body)
