"""Challenges ahead: the SDK keeps the enclave's next challenges (issued with each result)
and starts a ceremony without a GetChallenge round trip (client.sdk.challenges).

The pool alone (units), then the SDK against the real stack (devkms, relay,
enclave, host as processes), counting the host's GetChallenge calls in its
Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from client.cli.devstack import DevStack
from client.sdk.challenges import INSTANCE_TAG_BYTES, ChallengePool
from client.sdk.party import PartyIdentity
from client.sdk.wallet import CHALLENGE_REFUSED, Wallet, WalletError
from tests.stack_harness import RawDigestWalletClient, background_stack
from tss.curve import ecdsa_verify, schnorr_verify
from tss.signing import RecoverableSignature

DIGEST = bytes.fromhex("a7" * 32)
NOW = 1_800_000_000


def challenge(tag: bytes = b"T" * INSTANCE_TAG_BYTES) -> bytes:
    return tag + secrets.token_bytes(32)


def pool(**kwargs: Any) -> ChallengePool:
    return ChallengePool(clock=lambda: NOW, **kwargs)


### The pool (units)


def test_each_pooled_challenge_is_handed_out_once_and_only_for_its_affinity() -> None:
    challenges = pool()
    first, second = challenge(), challenge()
    challenges.put("", first, NOW + 600)
    challenges.put("", second, NOW + 600)
    assert challenges.take("wallet-1") is None
    assert [challenges.take(""), challenges.take(""), challenges.take("")] == [first, second, None]


def test_a_pooled_challenge_near_its_expiry_is_not_handed_out() -> None:
    challenges = pool(margin_s=30)
    near, fresh = challenge(), challenge()
    challenges.put("", near, NOW + 29)
    challenges.put("", fresh, NOW + 30)
    assert challenges.take("") == fresh
    assert challenges.take("") is None and len(challenges) == 0  # the near one is gone


def test_the_pool_is_bounded_per_affinity_and_in_all() -> None:
    challenges = pool(per_affinity=2, total=3)
    for _ in range(5):
        challenges.put("a", challenge(), NOW + 600)
    assert len(challenges) == 2 and not challenges.wants("a") and challenges.wants("b")
    for affinity in ("b", "c"):  # past the total, the least recently filled gives way
        challenges.put(affinity, challenge(), NOW + 600)
    assert len(challenges) == 3
    assert challenges.take("a") is not None and challenges.take("a") is None
    assert challenges.take("b") is not None and challenges.take("c") is not None


def test_many_wallets_emptied_in_turn_neither_break_the_bound_nor_grow_the_pool() -> None:
    challenges = pool(per_affinity=2, total=3)
    for wallet in range(1000):  # an ECDSA wallet each: one affinity each, used up in turn
        challenges.put(f"wallet-{wallet}", challenge(), NOW + 600)
        if wallet % 2:
            assert challenges.take(f"wallet-{wallet}") is not None
    assert len(challenges) <= 3
    assert len(challenges._pools) <= 3  # no empty affinity is kept


def test_a_refused_challenge_drops_every_challenge_of_its_enclave_process() -> None:
    challenges = pool()
    old, other = b"A" * INSTANCE_TAG_BYTES, b"B" * INSTANCE_TAG_BYTES
    stale = [challenge(old) for _ in range(3)]
    kept = challenge(other)
    challenges.put("", stale[0], NOW + 600)
    challenges.put("", kept, NOW + 600)
    challenges.put("wallet-1", stale[1], NOW + 600)
    challenges.forget_issuer(stale[2])
    assert challenges.take("wallet-1") is None
    assert challenges.take("") == kept and len(challenges) == 0


### The SDK against the real stack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    port = free_port()
    directory = tmp_path_factory.mktemp("pool") / "run"
    with background_stack(directory, host_args=["--metrics-port", str(port)]) as running:
        running.metrics_port = port  # type: ignore[attr-defined]
        yield running


def get_challenge_calls(stack: DevStack) -> int:
    """The host's GetChallenge calls so far (``shardkeep_host_calls_total``)."""
    port = stack.metrics_port  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        int(float(m.group(1)))
        for m in re.finditer(
            r'^shardkeep_host_calls_total\{[^}]*method="GetChallenge"[^}]*\} (\S+)$', text, re.M
        )
    )


class RecordingClient(RawDigestWalletClient):
    """The SDK client, recording the challenge of every request it signs and the reason of
    every refused run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[bytes] = []
        self.refusals: list[str] = []

    def _signed(self, request: Any, challenge: bytes, *args: Any) -> Any:
        self.sent.append(challenge)
        return super()._signed(request, challenge, *args)

    async def _run_once(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._run_once(*args, **kwargs)
        except WalletError as e:
            self.refusals.append(e.reason)
            raise


def run(stack: DevStack, body: Any) -> Any:
    async def main() -> Any:
        client = RecordingClient(
            stack.host_address, stack.relay_address, stack.coordinator_key,
            root_certificate=stack.root_certificate,
        )  # fmt: skip
        async with asyncio.timeout(120), client:
            return await body(client)

    return asyncio.run(main())


def valid(wallet: Wallet, signature: bytes | RecoverableSignature) -> bool:
    if isinstance(signature, RecoverableSignature):
        return ecdsa_verify(DIGEST, wallet.public_key, signature.signature)
    return schnorr_verify(DIGEST, wallet.public_key[-32:], signature)


@pytest.mark.slow
def test_a_signature_needs_no_get_challenge_call_when_the_pool_holds_one(stack: DevStack) -> None:
    async def body(client: RecordingClient) -> None:
        for scheme in ("bip340", "ecdsa-secp256k1"):
            device = PartyIdentity.generate()
            wallet = await client.create_wallet(scheme, [device], threshold=2)
            before = get_challenge_calls(stack)
            for _ in range(3):
                # The last result's challenge is in the pool once its call has finished
                # (a signature returns before it).
                await client.settle()
                assert len(client._challenges) >= 1
                assert valid(wallet, await client.sign(wallet, DIGEST, {0: device}))
            assert get_challenge_calls(stack) == before, scheme
        assert len(set(client.sent)) == len(client.sent)  # every request its own challenge
        assert client.refusals == []

    run(stack, body)


@pytest.mark.slow
def test_an_expired_pooled_challenge_is_not_sent(stack: DevStack) -> None:
    async def body(client: RecordingClient) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [device], threshold=2)
        pooled = client._challenges.take("")
        assert pooled is not None
        # The enclave still knows it, but the client sees it within the margin of expiry.
        client._challenges.put("", pooled, 1)
        before = get_challenge_calls(stack)
        assert valid(wallet, await client.sign(wallet, DIGEST, {0: device}))
        assert get_challenge_calls(stack) == before + 1
        assert pooled not in client.sent

    run(stack, body)


async def signed_once(client: RecordingClient) -> tuple[Wallet, PartyIdentity]:
    """A new BIP-340 wallet that signed once, with that signature's server side ended
    (its result brought the next challenge into the pool)."""
    device = PartyIdentity.generate()
    wallet = await client.create_wallet("bip340", [device], threshold=2)
    assert valid(wallet, await client.sign(wallet, DIGEST, {0: device}))
    await client.settle()
    return wallet, device


@pytest.mark.slow
def test_a_replayed_pooled_challenge_is_refused_and_the_sign_retries_with_a_fresh_one(
    stack: DevStack,
) -> None:
    async def body(client: RecordingClient) -> None:
        wallet, device = await signed_once(client)
        used = client.sent[-1]
        client._challenges.take("")  # leave only the replayed challenge in the pool
        client._challenges.put("", used, 2**40)
        before = get_challenge_calls(stack)
        assert valid(wallet, await client.sign(wallet, DIGEST, {0: device}))
        assert client.refusals == [CHALLENGE_REFUSED]  # the enclave refused the replay, typed
        assert client.sent[-2:-1] == [used] and client.sent[-1] != used
        assert get_challenge_calls(stack) == before + 1

    run(stack, body)


@pytest.mark.slow
def test_a_pooled_challenge_after_an_enclave_restart_is_refused_typed_and_the_retry_signs(
    stack: DevStack,
) -> None:
    async def body(client: RecordingClient) -> None:
        wallet, device = await signed_once(client)
        assert len(client._challenges) == 1
        await stack.restart("enclave")
        before = get_challenge_calls(stack)
        assert valid(wallet, await client.sign(wallet, DIGEST, {0: device}))
        # Refused once as unknown to the new enclave process; the retry fetched a fresh one.
        assert client.refusals == [CHALLENGE_REFUSED]
        assert get_challenge_calls(stack) == before + 1

    run(stack, body)


@pytest.mark.slow
def test_other_refusals_of_a_pooled_challenge_request_are_not_retried(stack: DevStack) -> None:
    async def body(client: RecordingClient) -> None:
        device = PartyIdentity.generate()
        # The default policy set without raw digests: the enclave refuses a bare digest.
        wallet = await client.create_wallet("bip340", [device], threshold=2, allow_raw_digest=False)
        assert len(client._challenges) == 1
        with pytest.raises(WalletError) as refused:
            await client.sign(wallet, DIGEST, {0: device})
        assert refused.value.reason == "policy-denied"
        assert client.refusals == ["policy-denied"]  # one run, no retry

    run(stack, body)
