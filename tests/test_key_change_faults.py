"""Key changes against the real service: faults and attacks never lose a wallet.

Each test runs against real processes (``client.cli.devstack``: devkms, relay,
enclave, host) with the host on SQLite and on PostgreSQL, for both schemes.
The devices' side is driven here, one ceremony object per device over the
relay, so a test can drop a message (``tests.fault_harness``), kill a process
or make a device cheat, and keep each device's pending share (what it saved
before it signed the certificate). Afterwards only the host's public calls
and ordinary signatures show what is usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import grpc
import psycopg
import pytest
from coincurve import PublicKey, PublicKeyXOnly
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.cli.devstack import DevStack
from client.sdk.default_policy import default_policy_set
from client.sdk.host_session import UnaryHostCalls
from client.sdk.party import PartyIdentity, roster_of, run_over_relay
from client.sdk.wallet import Wallet, WalletClient, WalletError, _Approvals, room_bytes
from relay.client import RelayClient
from shardkeep import lifecycle
from shardkeep.policyset import encode as encode_policy_set
from shardkeep.requests import (
    COORDINATOR_CONTEXT,
    OWNER_CONTEXT,
    RETIRE_EPOCH_CONTEXT,
    retire_epoch_message,
    sign_request,
)
from shardkeep.v1 import ceremony_pb2, host_pb2, host_pb2_grpc
from tests.conftest import POSTGRES_DSN, require_service
from tests.fault_harness import Fault, FaultPlan, FaultyRelay, MessageKey
from tests.stack_harness import RawDigestWalletClient, background_stack
from tss.ceremony import Ceremony, Message
from tss.certificate import Pending, PendingKeygen
from tss.keygen import Keygen
from tss.reshare import PublicKeyring, Reshare
from tss.signing import RecoverableSignature

pytestmark = pytest.mark.slow
DEADLINE_S = 12.0  # the host's pending-epoch deadline in these stacks
DIGEST = bytes.fromhex("c1" * 32)
SCHEMES = ["bip340", "ecdsa-secp256k1"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevStack]:
    store_url = None
    schema = f"test_keychange_{secrets.token_hex(6)}"
    if request.param == "postgresql":
        require_service("PostgreSQL", "127.0.0.1", 5432)
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        separator = "&" if "?" in POSTGRES_DSN else "?"
        store_url = f"{POSTGRES_DSN}{separator}options={quote(f'-csearch_path={schema}')}"
    directory = tmp_path_factory.mktemp(f"keychange-{request.param}") / "run"
    host_args = ["--pending-deadline-seconds", str(DEADLINE_S)]
    try:
        with background_stack(directory, store_url=store_url, host_args=host_args) as running:
            yield running
    finally:
        if store_url is not None:
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# --- driving a key change: the host for the server, one ceremony per device ----------------


@dataclass
class Run:
    """What one key change left: the host's answer, each device's result, error and pending."""

    result: ceremony_pb2.CeremonyResult | None = None
    error: grpc.aio.AioRpcError | None = None
    seconds: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, BaseException] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    ceremonies: dict[str, Any] = field(default_factory=dict)


Build = Callable[[ceremony_pb2.CeremonyRequest], tuple[Any, Mapping[str, Ceremony[Any]]]]


async def key_change(
    stack: DevStack,
    relay: RelayClient,
    request: ceremony_pb2.CeremonyRequest,
    devices: Mapping[str, PartyIdentity],
    build: Build,
    *,
    owner: Ed25519PrivateKey | None = None,
    timeout: float = 30.0,
    approving: Wallet | None = None,
) -> Run:
    """Run one refresh or reshare: the host drives the server share, each device its ceremony
    (``approving``: the wallet whose owner approves the request, as the SDK does).

    Devices keep their failures (a cheater's victims abort); a device still
    waiting 2 s after the host answered has lost a message and is stopped.
    """
    layout, _ = build(request)
    room = await relay.create_room(
        list(layout.party_ids), ttl_ms=int(timeout * 1000) + 30_000,
        max_total_bytes=room_bytes(len(layout.party_ids)),
    )  # fmt: skip
    request.room_id = room.room_id
    async with client(stack) as sdk:  # the enclave's single-use challenge for this request
        request.challenge = await sdk.challenge()  # every party binds it: fetched first
    roster, ceremonies = build(request)
    out = Run(ceremonies=dict(ceremonies))

    async def device(pid: str, ceremony: Ceremony[Any]) -> None:
        async def save(pending: Pending) -> None:
            out.pending[pid] = pending

        try:
            async with relay.join(room.room_id, pid, room.join_tokens[pid]) as session:
                out.outputs[pid] = await run_over_relay(
                    ceremony, devices[pid], roster, request, session, save_pending=save
                )
        except Exception as e:
            out.failures[pid] = e

    request.not_after_unix = int(time.time()) + int(timeout)
    data = request.SerializeToString()
    signed = ceremony_pb2.SignedCeremonyRequest(
        request=data,
        coordinator_signature=sign_request(stack.coordinator_key, COORDINATOR_CONTEXT, data),
        owner_signature=sign_request(owner, OWNER_CONTEXT, data) if owner else b"",
        approvals=[] if approving is None else _Approvals(approving, ()).over(data),
    )
    server_id = next(p for p in roster.party_ids if p not in devices)
    tasks = [asyncio.create_task(device(pid, c)) for pid, c in ceremonies.items()]
    async with grpc.aio.insecure_channel(stack.host_address) as channel:
        host = host_pb2_grpc.HostStub(channel)  # type: ignore[no-untyped-call]
        started = time.monotonic()
        try:
            out.result = await UnaryHostCalls(host).ceremony(
                request.kind,
                host_pb2.HostCeremonyRequest(
                    request=signed, relay_token=room.join_tokens[server_id]
                ),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as e:
            out.error = e
        out.seconds = time.monotonic() - started
    _, waiting = await asyncio.wait(tasks, timeout=2.0)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(Exception):  # the relay may be the process a test killed
        await relay.close_room(room.room_id, room.admin_token)
    return out


def refresh_request(wallet: Wallet) -> ceremony_pb2.CeremonyRequest:
    return ceremony_pb2.CeremonyRequest(
        ceremony_id=f"refresh-{secrets.token_hex(6)}",
        kind=ceremony_pb2.CEREMONY_KIND_REFRESH,
        scheme=ceremony_pb2.SCHEME_BIP340
        if wallet.scheme == "bip340"
        else ceremony_pb2.SCHEME_ECDSA_SECP256K1,
        wallet_id=wallet.wallet_id,
        parties=wallet.parties,
        epoch=wallet.epoch,
    )


def refresh_builder(
    wallet: Wallet,
    devices: Mapping[int, PartyIdentity],
    reshare_class: type[Reshare] = Reshare,
) -> Build:
    keyring = PublicKeyring.from_share(next(iter(wallet.shares.values())))

    def build(request: ceremony_pb2.CeremonyRequest) -> tuple[Any, dict[str, Reshare]]:
        layout = lifecycle.refresh_layout(request, keyring)
        return layout.roster, {
            d.party_id: (reshare_class if i == min(devices) else Reshare)(
                layout.plan, i, wallet.shares[i], secrets.token_bytes, d.hostseckey
            )
            for i, d in devices.items()
        }

    return build


# --- the host's public calls and signatures ---------------------------------------------------


async def host_call(stack: DevStack, method: str, message: Any) -> Any:
    async with grpc.aio.insecure_channel(stack.host_address) as channel:
        host = host_pb2_grpc.HostStub(channel)  # type: ignore[no-untyped-call]
        return await getattr(host, method)(message, timeout=30)


async def epochs(stack: DevStack, wallet_id: str) -> dict[int, host_pb2.Epoch]:
    reply = await host_call(stack, "GetEpochs", host_pb2.GetEpochsRequest(wallet_id=wallet_id))
    return {e.epoch: e for e in reply.epochs}


async def until_deadline(record: host_pb2.Epoch | None) -> None:
    """Sleep until a pending epoch's deadline has passed."""
    if record is not None:
        await asyncio.sleep(max(0.0, record.deadline_unix_ms / 1000 - time.time()) + 0.2)


def check(scheme: str, public_key: bytes, signature: bytes | RecoverableSignature) -> None:
    if scheme == "bip340":
        assert isinstance(signature, bytes)
        assert PublicKeyXOnly(public_key[1:]).verify(signature, DIGEST)
    else:
        assert isinstance(signature, RecoverableSignature)
        recovered = PublicKey.from_signature_and_message(
            signature.to_bytes65(), DIGEST, hasher=None
        )
        assert recovered.format() == public_key


def client(
    stack: DevStack, relay: RelayClient | None = None, timeout: float = 60.0
) -> WalletClient:
    return RawDigestWalletClient(
        stack.host_address, stack.relay_address, stack.coordinator_key,
        root_certificate=stack.root_certificate, relay=relay, timeout=timeout,
    )  # fmt: skip


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(240):
            await body()

    asyncio.run(bounded())


def last_round(scheme: str) -> int:
    """The certificate round of a refresh: after the exchange (2 rounds, 3 for ECDSA)."""
    return 3 if scheme == "bip340" else 4


def faulty_relay(
    stack: DevStack,
    fault: Fault | None,
    roles: dict[str, str],
    also_drop: MessageKey | None = None,
) -> FaultyRelay:
    plan = FaultPlan(fault, kill=stack.kill, delay_s=0.0, roles=roles, also_drop=also_drop)
    return FaultyRelay.to(stack.relay_address, plan, stack.coordinator_key)


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_refresh_last_agreement_lost_phone_resumes(stack: DevStack, scheme: str) -> None:
    """Fault: in a 2-of-2 refresh the phone loses the server's last message (its certificate
    signature). The host commits the new epoch with the complete certificate; the phone
    finishes later from its pending share and the certificate it fetches from the host, and
    until it acknowledges, its old share still signs at the old epoch."""

    async def body() -> None:
        phone = PartyIdentity.generate()
        async with client(stack) as sdk:
            wallet = await sdk.create_wallet(scheme, [phone], threshold=2)  # type: ignore[arg-type]
            lost = Fault("drop", (last_round(scheme), "server", "device0"))
            relay = faulty_relay(stack, lost, {phone.party_id: "device0"})
            try:
                run_ = await key_change(
                    stack, relay, refresh_request(wallet), {phone.party_id: phone},
                    refresh_builder(wallet, {0: phone}), approving=wallet,
                )  # fmt: skip
            finally:
                await relay.aclose()
            assert relay.plan.fired and run_.error is None and run_.result is not None
            assert phone.party_id not in run_.outputs  # the phone never finished ...
            pending = run_.pending[phone.party_id]  # ... but saved its new share first
            new_epoch = wallet.epoch + 1
            assert run_.result.epoch == new_epoch and pending.epoch == new_epoch

            # Resume: the host has the epoch committed with its certificate.
            record = (await epochs(stack, wallet.wallet_id))[new_epoch]
            assert record.state == "committed"
            pending.verify(bytes(record.certificate))
            assert pending.share is not None
            resumed = replace(wallet, epoch=new_epoch, shares={0: pending.share})
            check(scheme, wallet.public_key, await sdk.sign(resumed, DIGEST, {0: phone}))
            # The old share keeps signing until the phone acknowledges the new epoch.
            check(scheme, wallet.public_key, await sdk.sign(wallet, DIGEST, {0: phone}))
            assert await sdk.acknowledge_epoch(resumed, {0: phone}) == 1
            with pytest.raises(WalletError):
                await sdk.sign(wallet, DIGEST, {0: phone})

    run(body)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_keygen_last_message_lost_phone_finishes_from_the_host(
    stack: DevStack, scheme: str
) -> None:
    """Fault: the phone loses the server's last keygen message (BIP-340: its CertEq
    signature; ECDSA: its last pairwise setup message). The host commits epoch 0 and keeps
    ChillDKG's certificate with it; the phone finishes its key generation from that
    certificate (ChillDKG's recovery), and so would a phone that crashed instead, from the
    share it saved as pending before it agreed. An ECDSA share finished that way has no
    pair setup: the SDK makes it on demand and signs with the server."""

    async def body() -> None:
        phone = PartyIdentity.generate()
        owner = Ed25519PrivateKey.generate()
        async with client(stack) as sdk:
            server = await sdk.attest()
        parties = [phone.party, server.party]
        request = ceremony_pb2.CeremonyRequest(
            ceremony_id=f"keygen-{secrets.token_hex(6)}",
            kind=ceremony_pb2.CEREMONY_KIND_KEYGEN,
            scheme=ceremony_pb2.SCHEME_BIP340
            if scheme == "bip340"
            else ceremony_pb2.SCHEME_ECDSA_SECP256K1,
            wallet_id=f"wallet-{secrets.token_hex(6)}",
            threshold=2,
            parties=parties,
            owner_key=owner.public_key().public_bytes_raw(),
        )
        policy = default_policy_set(request.wallet_id, owner, allow_raw_digest=True)
        request.policy_set = encode_policy_set(policy)  # the test signs a bare digest with it
        hostpubkeys = [bytes(p.host_pubkey) for p in parties]

        def build(req: ceremony_pb2.CeremonyRequest) -> tuple[Any, dict[str, Ceremony[Any]]]:
            keygen = Keygen(
                scheme, phone.hostseckey, hostpubkeys, 2, secrets.token_bytes,  # type: ignore[arg-type]
                session_id=lifecycle.lifecycle_session_id(req),
            )  # fmt: skip
            return roster_of(parties), {phone.party_id: keygen}

        last = 2 if scheme == "bip340" else 4
        lost = Fault("drop", (last, "server", "device0"))
        relay = faulty_relay(stack, lost, {phone.party_id: "device0"})
        try:
            run_ = await key_change(stack, relay, request, {phone.party_id: phone}, build)
        finally:
            await relay.aclose()
        assert relay.plan.fired and run_.error is None and run_.result is not None
        keygen = run_.ceremonies[phone.party_id]
        assert isinstance(keygen, Keygen) and not keygen.done
        record = (await epochs(stack, request.wallet_id))[0]
        assert record.state == "committed" and len(record.certificate) == 64 * 2
        certificate = bytes(record.certificate)
        # A phone that crashed instead holds only what it saved before agreeing.
        saved = run_.pending[phone.party_id]
        assert isinstance(saved, PendingKeygen)
        saved.verify(certificate)
        share = keygen.finish_from_certificate(certificate)
        assert share.public_key == run_.result.public_key == saved.share.public_key
        if scheme == "ecdsa-secp256k1":
            assert share.ecdsa is not None and not share.ecdsa.held  # made on demand
        for resumed in (share, saved.share):
            wallet = Wallet(
                request.wallet_id, scheme, 2, parties, 1, share.public_key, 0, {0: resumed}, owner,
                policy,
            )  # fmt: skip
            async with client(stack) as sdk:
                check(scheme, share.public_key, await sdk.sign(wallet, DIGEST, {0: phone}))

    run(body)


def equivocating_reshare(target_seat: int) -> type[Reshare]:
    """A ``Reshare`` that sends a wrong agreement hash (round 2) to ``target_seat`` only."""

    class Equivocating(Reshare):
        def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
            out = super()._run_round(round_, payloads)
            return [
                Message(m.round, m.sender, m.recipient, bytes(32) + m.payload[32:])
                if m.round == 2 and m.recipient == target_seat
                else m
                for m in out
            ]

    return Equivocating


@pytest.mark.parametrize("victim", ["server", "laptop"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_split_agreement_cannot_choose_share_combination(
    stack: DevStack, scheme: str, victim: str
) -> None:
    """Attack: in a 2-of-3 refresh the phone sends the right agreement hash to one party and a
    wrong one to the other. The victim aborts and never signs the certificate, so no party
    holds a complete certificate and the host never commits: every pair keeps signing at the
    old epoch, and the cheater cannot leave only the share combination it chose usable."""

    async def body() -> None:
        phone, laptop = PartyIdentity.generate(), PartyIdentity.generate()
        async with client(stack) as sdk:
            wallet = await sdk.create_wallet(scheme, [phone, laptop], threshold=2)  # type: ignore[arg-type]
            target = 2 if victim == "server" else 1
            relay = RelayClient.insecure(stack.relay_address, coordinator=stack.coordinator_key)
            try:
                run_ = await key_change(
                    stack, relay, refresh_request(wallet),
                    {phone.party_id: phone, laptop.party_id: laptop},
                    refresh_builder(wallet, {0: phone, 1: laptop}, equivocating_reshare(target)),
                    timeout=8.0, approving=wallet,
                )  # fmt: skip
            finally:
                await relay.aclose()
            assert run_.error is not None and run_.result is None
            assert not run_.outputs  # no device finished: nobody holds a certificate
            new_epoch = wallet.epoch + 1
            record = (await epochs(stack, wallet.wallet_id)).get(new_epoch)
            if victim == "laptop" and scheme == "bip340":
                assert laptop.party_id in run_.failures
                # The server signed, so the host keeps the epoch for its certificate, which
                # cannot exist; a certificate without the victim's signature is refused.
                assert record is not None
                assert record.state == "pending" and not record.certificate
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await host_call(
                        stack, "SubmitCertificate",
                        host_pb2.SubmitCertificateRequest(
                            wallet_id=wallet.wallet_id, epoch=new_epoch, certificate=bytes(192)
                        ),
                    )  # fmt: skip
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                await until_deadline(record)
            else:
                # The server aborted (it was the victim), or (ECDSA) it never got the
                # laptop's setup message: it stored nothing and signed nothing.
                assert record is None
                if victim == "server":
                    assert run_.error.code() == grpc.StatusCode.ABORTED
            # Nothing committed; after the deadline the pending epoch is gone.
            assert new_epoch not in await epochs(stack, wallet.wallet_id)
            for devices in ({0: phone}, {1: laptop}):
                check(scheme, wallet.public_key, await sdk.sign(wallet, DIGEST, devices))
            pair = await sdk.sign(wallet, DIGEST, {0: phone, 1: laptop}, with_server=False)
            check(scheme, wallet.public_key, pair)
            # The wallet's key changes work again.
            refreshed = await sdk.refresh(wallet, {0: phone, 1: laptop})
            assert refreshed.epoch == new_epoch

    run(body)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_host_killed_between_pending_and_commit_recovers(stack: DevStack, scheme: str) -> None:
    """Fault: the host is SIGKILLed after it stored the server's pending share and forwarded
    its certificate signature, before it committed. Restarted, it still holds the pending
    epoch; the phone, which completed the certificate, submits it and the new epoch commits.
    Nothing needs an operator (no manual abort). The phone's own certificate signature never
    reaches the server, so the host cannot have committed before it dies, however the two
    last messages race."""

    async def body() -> None:
        phone = PartyIdentity.generate()
        async with client(stack) as sdk:
            wallet = await sdk.create_wallet(scheme, [phone], threshold=2)  # type: ignore[arg-type]
            crash = Fault("kill-host", (last_round(scheme), "server", "device0"))
            relay = faulty_relay(
                stack, crash, {phone.party_id: "device0"},
                also_drop=(last_round(scheme), "device0", "server"),
            )  # fmt: skip
            try:
                run_ = await key_change(
                    stack, relay, refresh_request(wallet), {phone.party_id: phone},
                    refresh_builder(wallet, {0: phone}), timeout=15.0, approving=wallet,
                )  # fmt: skip
            finally:
                await relay.aclose()
                if relay.plan.fired:
                    await stack.revive("host")  # before any assertion: later tests share the stack
            assert relay.plan.fired and run_.error is not None
            output = run_.outputs[phone.party_id]  # the phone got every signature
            new_epoch = wallet.epoch + 1
            committed = await host_call(
                stack, "SubmitCertificate",
                host_pb2.SubmitCertificateRequest(
                    wallet_id=wallet.wallet_id, epoch=new_epoch, certificate=output.certificate
                ),
            )  # fmt: skip
            assert committed.epoch == new_epoch
            resumed = replace(wallet, epoch=new_epoch, shares={0: output.share})
            check(scheme, wallet.public_key, await sdk.sign(resumed, DIGEST, {0: phone}))
            again = await sdk.refresh(resumed, {0: phone})  # key changes go on
            assert again.epoch == new_epoch + 1

    run(body)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_relay_failure_releases_wallet_promptly(stack: DevStack, scheme: str) -> None:
    """Fault: the relay dies during a refresh (before the server signed anything). The host
    ends its side at once instead of holding the wallet until the ceremony's deadline, drops
    the pending epoch, and once the relay is back the next refresh of the wallet is accepted."""

    async def body() -> None:
        phone = PartyIdentity.generate()
        async with client(stack) as sdk:
            wallet = await sdk.create_wallet(scheme, [phone], threshold=2)  # type: ignore[arg-type]
            crash = Fault("kill-relay", (1, "server", "device0"))
            relay = faulty_relay(stack, crash, {phone.party_id: "device0"})
            try:
                run_ = await key_change(
                    stack, relay, refresh_request(wallet), {phone.party_id: phone},
                    refresh_builder(wallet, {0: phone}), timeout=60.0, approving=wallet,
                )  # fmt: skip
            finally:
                await relay.aclose()
            assert relay.plan.fired and run_.error is not None
            assert run_.seconds < 10.0, f"the host held the wallet {run_.seconds:.1f} s"
            await stack.revive("relay")
            assert wallet.epoch + 1 not in await epochs(stack, wallet.wallet_id)
        async with client(stack) as sdk:  # a fresh relay connection
            refreshed = await sdk.refresh(wallet, {0: phone})
            assert refreshed.epoch == wallet.epoch + 1
            check(scheme, wallet.public_key, await sdk.sign(refreshed, DIGEST, {0: phone}))

    run(body)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_failed_keygen_frees_wallet_id(stack: DevStack, scheme: str) -> None:
    """Fault: a keygen fails (the phone loses the server's first message, the host's side
    times out), and a keygen's host is killed at its last message. Neither leaves the wallet
    id taken for good: the failed one frees it at once, the killed one at its deadline."""

    async def body() -> None:
        phone = PartyIdentity.generate()
        roles = {phone.party_id: "device0"}
        wallet_id = f"wallet-{secrets.token_hex(6)}"
        relay = faulty_relay(stack, Fault("drop", (1, "server", "device0")), roles)
        async with client(stack, relay, timeout=5.0) as sdk:
            with pytest.raises((WalletError, TimeoutError)):
                await sdk.create_wallet(scheme, [phone], threshold=2, wallet_id=wallet_id)  # type: ignore[arg-type]
        async with client(stack) as sdk:
            wallet = await sdk.create_wallet(scheme, [phone], threshold=2, wallet_id=wallet_id)  # type: ignore[arg-type]
            check(scheme, wallet.public_key, await sdk.sign(wallet, DIGEST, {0: phone}))

        crashed_id = f"wallet-{secrets.token_hex(6)}"
        last = 2 if scheme == "bip340" else 4
        relay = faulty_relay(
            stack, Fault("kill-host", (last, "server", "device0")), roles,
            also_drop=(last, "device0", "server"),  # the host cannot commit before it dies
        )  # fmt: skip
        async with client(stack, relay, timeout=10.0) as sdk:
            with pytest.raises((WalletError, TimeoutError)):
                await sdk.create_wallet(scheme, [phone], threshold=2, wallet_id=crashed_id)  # type: ignore[arg-type]
        await stack.revive("host")
        with contextlib.suppress(grpc.aio.AioRpcError):  # NOT_FOUND: nothing was stored
            await until_deadline((await epochs(stack, crashed_id)).get(0))
        async with client(stack) as sdk:
            wallet = await sdk.create_wallet(scheme, [phone], threshold=2, wallet_id=crashed_id)  # type: ignore[arg-type]
            check(scheme, wallet.public_key, await sdk.sign(wallet, DIGEST, {0: phone}))

    run(body)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_retired_epochs_pruned_after_acks(stack: DevStack, scheme: str) -> None:
    """Retired epochs stay signable until every party acknowledged the newer one, are pruned
    then (none kept by default), and the owner can retire one earlier; acknowledgments and
    retirements with bad signatures are refused."""

    async def body() -> None:
        phone, laptop = PartyIdentity.generate(), PartyIdentity.generate()
        both = {0: phone, 1: laptop}
        async with client(stack) as sdk:
            first = await sdk.create_wallet(scheme, [phone, laptop], threshold=2)  # type: ignore[arg-type]
            second = await sdk.refresh(first, both)
            third = await sdk.refresh(second, both)
            states = {e: r.state for e, r in (await epochs(stack, first.wallet_id)).items()}
            assert states == {0: "retired", 1: "retired", 2: "committed"}
            for old in (first, second):  # both older epochs still sign
                check(scheme, first.public_key, await sdk.sign(old, DIGEST, {0: phone}))

            with pytest.raises(WalletError):  # an acknowledgment by a stranger's key
                await sdk.acknowledge_epoch(third, {0: PartyIdentity.generate()})
            assert await sdk.acknowledge_epoch(third, {0: phone}) == 0  # laptop still owes one
            check(scheme, first.public_key, await sdk.sign(second, DIGEST, {1: laptop}))
            assert await sdk.acknowledge_epoch(third, {1: laptop}) == 2
            assert set(await epochs(stack, first.wallet_id)) == {2}
            with pytest.raises(WalletError) as pruned:
                await sdk.sign(second, DIGEST, {0: phone})
            assert pruned.value.code == grpc.StatusCode.FAILED_PRECONDITION

            # The owner retires an old epoch without waiting for the acknowledgments.
            fourth = await sdk.refresh(third, both)
            assert fourth.owner_key is not None
            retire = host_pb2.RetireEpochRequest(wallet_id=first.wallet_id, epoch=third.epoch)
            retire.owner_signature = sign_request(
                Ed25519PrivateKey.generate(), RETIRE_EPOCH_CONTEXT,
                retire_epoch_message(first.wallet_id, third.epoch),
            )  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await host_call(stack, "RetireEpoch", retire)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            retire.owner_signature = sign_request(
                fourth.owner_key, RETIRE_EPOCH_CONTEXT,
                retire_epoch_message(first.wallet_id, third.epoch),
            )  # fmt: skip
            await host_call(stack, "RetireEpoch", retire)
            assert set(await epochs(stack, first.wallet_id)) == {fourth.epoch}
            with pytest.raises(WalletError):
                await sdk.sign(third, DIGEST, {0: phone})
            check(scheme, first.public_key, await sdk.sign(fourth, DIGEST, {0: phone}))

    run(body)
