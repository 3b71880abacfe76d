"""The host service end to end: real relay (in memory), fake enclave, real store.

Each test starts the relay and a fake enclave (tests/fake_enclave.py, the
host <-> enclave contract with canned behaviour) on 127.0.0.1:0, the host in
front of them over a fresh SQLite file (one test over PostgreSQL, in its own
schema), and plays the coordinator and the other party ("alice") itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import logging
import secrets
import signal
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import psycopg
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from host.enclave_link import LinkConfig
from host.errors import ENCLAVE_CODES, OTHER_PROTOCOL_VERSION, HostError
from host.main import HostConfig, main, serve
from host.metrics import HostMetrics, start_metrics_server
from host.service import create_server
from host.store import Store, WalletNotFoundError
from host.stores import open_store
from relay.client import CreatedRoom, RelayClient
from relay.errors import RoomClosedError
from relay.memory import MemoryBackend
from relay.service import create_server as create_relay_server
from shardkeep import logs
from shardkeep.v1 import ceremony_pb2, host_pb2, host_pb2_grpc, relay_pb2
from tests.fake_enclave import (
    CANARY,
    PUBLIC_KEY,
    SEALED_IDENTITY,
    STATIC_KEY,
    FakeEnclave,
    Script,
    start_fake_enclave,
)
from tests.relay_harness import COORDINATOR, harness_admitter, run

K = ceremony_pb2.CeremonyKind
SERVER = "server"
ALICE = "alice"
ALICE_KEY = bytes(range(100, 132))
WALLET = "wallet-1"
REQUEST_ID = "req-4242"


@dataclass
class Stack:
    host: host_pb2_grpc.HostStub
    channel: grpc.aio.Channel
    relay: RelayClient  # the coordinator's and alice's relay client
    store: Store
    fake: FakeEnclave
    metrics: HostMetrics
    relay_target: str
    enclave_target: str
    enclave_server: grpc.aio.Server
    server: grpc.aio.Server


@asynccontextmanager
async def stack(
    store_url: str,
    *,
    link: LinkConfig | None = None,
    api_tokens: tuple[str, ...] = (),
    fake: FakeEnclave | None = None,
) -> AsyncIterator[Stack]:
    backend = MemoryBackend()
    relay_server, relay_port = await create_relay_server(
        "127.0.0.1:0", backend, admitter=harness_admitter()
    )
    await relay_server.start()
    relay_target = f"127.0.0.1:{relay_port}"
    fake = fake or FakeEnclave()
    enclave_server, enclave_target = await start_fake_enclave(fake)
    store = open_store(store_url)
    enclave_channel = grpc.aio.insecure_channel(enclave_target)
    host_relay = RelayClient.insecure(relay_target)
    coordinator_relay = RelayClient.insecure(relay_target, coordinator=COORDINATOR)
    metrics = HostMetrics()
    server, port = await create_server(
        "127.0.0.1:0",
        store=store,
        enclave_channel=enclave_channel,
        relay=host_relay,
        metrics=metrics,
        link_config=link,
        api_tokens=api_tokens,
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Stack(
            host=host_pb2_grpc.HostStub(channel),  # type: ignore[no-untyped-call]
            channel=channel,
            relay=coordinator_relay,
            store=store,
            fake=fake,
            metrics=metrics,
            relay_target=relay_target,
            enclave_target=enclave_target,
            enclave_server=enclave_server,
            server=server,
        )
    finally:
        await channel.close(None)
        await server.stop(None)
        await host_relay.aclose()
        await coordinator_relay.aclose()
        await enclave_channel.close(None)
        await enclave_server.stop(None)
        await relay_server.stop(None)
        await backend.aclose()
        store.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'host.db'}"


@pytest.fixture
def postgres_url(postgres_dsn: str) -> Iterator[str]:
    schema = f"test_host_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in postgres_dsn else "?"
    try:
        yield f"{postgres_dsn}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


################################################################################
### The coordinator's and alice's side
################################################################################


def parties() -> list[ceremony_pb2.Party]:
    return [
        ceremony_pb2.Party(party_id=SERVER, static_key=STATIC_KEY),
        ceremony_pb2.Party(party_id=ALICE, static_key=ALICE_KEY),
    ]


def make_request(
    kind: ceremony_pb2.CeremonyKind, room_id: str, *, epoch: int = 0, **fields: object
) -> bytes:
    request = ceremony_pb2.CeremonyRequest(
        ceremony_id=f"c-{secrets.token_hex(4)}",
        room_id=room_id,
        kind=kind,
        wallet_id=WALLET,
        parties=parties(),
        epoch=epoch,
        **fields,  # type: ignore[arg-type]
    )
    if kind == K.CEREMONY_KIND_KEYGEN:
        request.scheme = ceremony_pb2.SCHEME_BIP340
        request.threshold = 2
        request.owner_key = b"\x07" * 32
    return request.SerializeToString()


def host_request(request: bytes, token: str) -> host_pb2.HostCeremonyRequest:
    return host_pb2.HostCeremonyRequest(
        request=ceremony_pb2.SignedCeremonyRequest(
            request=request, coordinator_signature=b"\x01" * 64
        ),
        relay_token=token,
    )


@dataclass
class Outcome:
    result: ceremony_pb2.CeremonyResult | None
    error: grpc.aio.AioRpcError | None
    alice_got: list[relay_pb2.EnvelopeDelivery]
    room: CreatedRoom
    request: bytes


async def alice(
    relay: RelayClient, room: CreatedRoom, request: bytes
) -> list[relay_pb2.EnvelopeDelivery]:
    """The other party: take the enclave's round 1, answer, take round 2."""
    ceremony_id = ceremony_pb2.CeremonyRequest.FromString(request).ceremony_id
    got = []
    async with relay.join(room.room_id, ALICE, room.join_tokens[ALICE]) as session:
        got.append(await session.receive())
        await session.send(CANARY + b"alice-round-1", ceremony_id=ceremony_id, round_=1)
        with contextlib.suppress(RoomClosedError):
            got.append(await session.receive())
    return got


async def ceremony(
    s: Stack,
    kind: ceremony_pb2.CeremonyKind,
    *,
    epoch: int = 0,
    method: ceremony_pb2.CeremonyKind | None = None,
    timeout: float = 10.0,
    token: str | None = None,
    **fields: object,
) -> Outcome:
    """Run one ceremony as coordinator (through the host) and as alice."""
    room = await s.relay.create_room([SERVER, ALICE], ttl_ms=60_000)
    request = make_request(kind, room.room_id, epoch=epoch, **fields)
    call = {
        K.CEREMONY_KIND_KEYGEN: s.host.Keygen,
        K.CEREMONY_KIND_SIGN: s.host.Sign,
        K.CEREMONY_KIND_RESHARE: s.host.Reshare,
        K.CEREMONY_KIND_REFRESH: s.host.Refresh,
        K.CEREMONY_KIND_EXPORT: s.host.Export,
    }[method if method is not None else kind]
    peer = asyncio.create_task(alice(s.relay, room, request))
    result = error = None
    try:
        result = await call(
            host_request(request, token if token is not None else room.join_tokens[SERVER]),
            timeout=timeout,
            metadata=(("x-request-id", REQUEST_ID),),
        )
    except grpc.aio.AioRpcError as e:
        error = e
    await s.relay.close_room(room.room_id, room.admin_token)
    try:
        got = await asyncio.wait_for(peer, 5)
    except Exception:
        got = []
    return Outcome(result, error, got, room, request)


async def keygen(s: Stack) -> Outcome:
    outcome = await ceremony(s, K.CEREMONY_KIND_KEYGEN)
    assert outcome.error is None, outcome.error
    return outcome


def trailers(error: grpc.aio.AioRpcError) -> list[tuple[str, str | bytes]]:
    # grpc.aio.Metadata iterates as (key, value) pairs; the stubs say otherwise.
    metadata: Iterable[tuple[str, str | bytes]] = error.trailing_metadata() or ()  # type: ignore[assignment]
    return list(metadata)


################################################################################
### Tests
################################################################################


@pytest.mark.parametrize("transport", ["call", "session"])
def test_keygen_stores_pending_then_commits(sqlite_url: str, transport: str) -> None:
    async def body() -> None:
        link = LinkConfig(session_transport=transport == "session")
        async with stack(sqlite_url, link=link) as s:
            assert s.fake.provisioned == [b""]  # first start: no identity yet
            assert s.store.latest_enclave_identity() == SEALED_IDENTITY
            at_ack = []
            s.fake.on_ack = lambda epoch: at_ack.append(s.store.get_wallet(WALLET))

            outcome = await keygen(s)

            assert outcome.result is not None
            assert (outcome.result.wallet_id, outcome.result.public_key) == (WALLET, PUBLIC_KEY)
            # When the host acknowledged, the share was stored, pending only.
            assert [(w.current_epoch, w.pending_epoch) for w in at_ack] == [(None, 0)]
            wallet = s.store.get_wallet(WALLET)
            assert (wallet.current_epoch, wallet.pending_epoch) == (0, None)
            assert (wallet.scheme, wallet.public_key, wallet.threshold) == (
                "bip340",
                PUBLIC_KEY,
                2,
            )
            assert [p.party_id for p in wallet.parties] == [SERVER, ALICE]
            assert wallet.owner_key == b"\x07" * 32
            (share,) = s.store.current_shares(WALLET)
            assert (share.share.share_index, share.share.epoch) == (0, 0)
            assert share.share.ciphertext.startswith(CANARY)

            # The enclave saw the start (no shares for keygen), alice's envelope, one ack.
            (seen,) = s.fake.runs
            assert seen.start is not None and list(seen.start.sealed_shares) == []
            assert seen.start.request.request == outcome.request
            assert [e.payload for e in seen.inbound] == [CANARY + b"alice-round-1"]
            assert [(e.sender, e.round) for e in seen.inbound] == [(ALICE, 1)]
            assert seen.acks == [0]
            # A RunCeremony call carries the request id in its metadata; a session
            # channel carries none (the enclave logs the ceremony's own ids).
            assert seen.request_id == (REQUEST_ID if transport == "call" else "")
            # Alice got the enclave's envelopes, sent as the server party, numbered by the host.
            assert [
                (d.envelope.sender, d.envelope.recipient, d.envelope.round, d.envelope.seq)
                for d in outcome.alice_got
            ] == [(SERVER, "", 1, 1), (SERVER, ALICE, 2, 2)]
            assert [d.envelope.payload for d in outcome.alice_got] == [
                CANARY + b"round-1",
                CANARY + b"round-2",
            ]

    run(body)


def test_refresh_commits_new_epoch_and_retires_old(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            (old,) = s.store.current_shares(WALLET)

            outcome = await ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0)

            assert outcome.error is None and outcome.result is not None
            assert outcome.result.epoch == 1
            # The enclave was handed the current share of epoch 0.
            start = s.fake.runs[-1].start
            assert start is not None
            (given,) = start.sealed_shares
            assert (given.epoch, given.ciphertext, given.public_key) == (
                0,
                old.share.ciphertext,
                PUBLIC_KEY,
            )
            wallet = s.store.get_wallet(WALLET)
            assert (wallet.current_epoch, wallet.pending_epoch) == (1, None)
            (new,) = s.store.current_shares(WALLET)
            assert new.share.epoch == 1 and new.share.ciphertext != old.share.ciphertext
            assert s.store.get_share(WALLET, 0, 0).state == "retired"

    run(body)


def test_failed_refresh_keeps_old_share_current(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            (old,) = s.store.current_shares(WALLET)
            s.fake.script = Script(fail_at="after_store")
            at_ack = []
            s.fake.on_ack = lambda epoch: at_ack.append(s.store.get_wallet(WALLET))

            outcome = await ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0)

            assert outcome.error is not None
            assert outcome.error.code() == grpc.StatusCode.ABORTED
            assert outcome.error.details() == "participant alice sent an invalid share"
            assert ("shardkeep-culprits", ALICE) in trailers(outcome.error)
            # Epoch 1 was pending when the enclave failed; now it is gone.
            assert [(w.current_epoch, w.pending_epoch) for w in at_ack] == [(0, 1)]
            wallet = s.store.get_wallet(WALLET)
            assert (wallet.current_epoch, wallet.pending_epoch) == (0, None)
            assert s.store.current_shares(WALLET) == [old]

            # The wallet still works: the next refresh starts from epoch 0 again.
            s.fake.script = Script()
            again = await ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0)
            assert again.error is None
            assert s.store.get_wallet(WALLET).current_epoch == 1

    run(body)


def test_failed_keygen_removes_the_wallet(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            s.fake.script = Script(fail_at="after_store", code=grpc.StatusCode.INTERNAL)
            outcome = await ceremony(s, K.CEREMONY_KIND_KEYGEN)
            assert outcome.error is not None
            assert outcome.error.code() == grpc.StatusCode.INTERNAL
            assert s.fake.runs[-1].acks == [0]  # epoch 0 had been stored
            with pytest.raises(WalletNotFoundError):
                s.store.get_wallet(WALLET)
            # The id is free again: a new keygen succeeds.
            s.fake.script = Script()
            await keygen(s)

    run(body)


def test_reshare_records_the_new_keyring(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            carol = ceremony_pb2.Party(party_id="carol", static_key=bytes(range(200, 232)))
            outcome = await ceremony(
                s,
                K.CEREMONY_KIND_RESHARE,
                epoch=0,
                new_threshold=2,
                new_parties=[*parties(), carol],
            )
            assert outcome.error is None
            wallet = s.store.get_wallet(WALLET)
            assert wallet.current_epoch == 1
            assert (wallet.threshold, [p.party_id for p in wallet.parties]) == (
                2,
                [SERVER, ALICE, "carol"],
            )

    run(body)


def test_sign_passes_through(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            digest = bytes(range(32))
            outcome = await ceremony(
                s, K.CEREMONY_KIND_SIGN, epoch=0, digest=digest, signers=[0, 1]
            )
            assert outcome.error is None and outcome.result is not None
            assert outcome.result.signature == hashlib.sha512(digest).digest()
            start = s.fake.runs[-1].start
            assert start is not None and len(start.sealed_shares) == 1
            assert s.fake.runs[-1].acks == []
            assert s.store.get_wallet(WALLET).current_epoch == 0  # nothing stored

    run(body)


def test_kind_method_mismatch_is_refused_before_the_enclave(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            outcome = await ceremony(s, K.CEREMONY_KIND_KEYGEN, method=K.CEREMONY_KIND_SIGN)
            assert outcome.error is not None
            assert outcome.error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "does not match the method (sign)" in (outcome.error.details() or "")
            assert s.fake.runs == []

    run(body)


def test_malformed_requests_are_refused(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            cases = {
                "missing request": host_pb2.HostCeremonyRequest(relay_token="t"),
                "garbage bytes": host_request(b"\xff\xff\xff", "t"),
                "no relay token": host_request(make_request(K.CEREMONY_KIND_KEYGEN, "r"), ""),
            }
            no_server = ceremony_pb2.CeremonyRequest.FromString(
                make_request(K.CEREMONY_KIND_KEYGEN, "room")
            )
            del no_server.parties[0]
            cases["server not a party"] = host_request(no_server.SerializeToString(), "t")
            for name, request in cases.items():
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await s.host.Keygen(request)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert s.fake.runs == []

    run(body)


def test_wallet_state_is_checked_before_the_enclave(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            unknown = await ceremony(s, K.CEREMONY_KIND_SIGN, digest=bytes(32))
            assert unknown.error is not None
            assert unknown.error.code() == grpc.StatusCode.NOT_FOUND
            await keygen(s)
            again = await ceremony(s, K.CEREMONY_KIND_KEYGEN)
            assert again.error is not None
            assert again.error.code() == grpc.StatusCode.ALREADY_EXISTS
            stale = await ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=7)
            assert stale.error is not None
            assert stale.error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "expects epoch 7" in (stale.error.details() or "")
            assert len(s.fake.runs) == 1  # only the keygen reached the enclave

    run(body)


def test_bad_relay_token_fails_before_the_enclave(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            outcome = await ceremony(s, K.CEREMONY_KIND_KEYGEN, token="not-the-token")
            assert outcome.error is not None
            assert outcome.error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert (outcome.error.details() or "").startswith("relay: ")
            assert s.fake.runs == []  # the request's nonce was not spent

    run(body)


@pytest.mark.parametrize(
    ("code", "step"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, "start"),
        (grpc.StatusCode.INVALID_ARGUMENT, "start"),
        (grpc.StatusCode.FAILED_PRECONDITION, "after_round1"),
        (grpc.StatusCode.ABORTED, "after_round1"),
        (grpc.StatusCode.INTERNAL, "after_store"),
        (grpc.StatusCode.UNKNOWN, "after_store"),
    ],
    ids=lambda v: v.name if isinstance(v, grpc.StatusCode) else v,
)
def test_enclave_errors_are_mapped(sqlite_url: str, code: grpc.StatusCode, step: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            (old,) = s.store.current_shares(WALLET)
            s.fake.script = Script(fail_at=step, code=code, message=f"enclave says {code.name}")
            outcome = await ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0)
            assert outcome.error is not None
            expected = ENCLAVE_CODES.get(code, grpc.StatusCode.INTERNAL)
            assert outcome.error.code() == expected
            assert outcome.error.details() == f"enclave says {code.name}"
            assert ("shardkeep-culprits", ALICE) in trailers(outcome.error)
            assert s.store.current_shares(WALLET) == [old]
            assert s.store.get_wallet(WALLET).pending_epoch is None
            sample = s.metrics.registry.get_sample_value(
                "shardkeep_host_enclave_errors_total", {"code": expected.name}
            )
            assert sample == 1.0

    run(body)


def test_enclave_protocol_violations_abort(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            s.fake.script = Script(store_in_sign=True)
            signed = await ceremony(s, K.CEREMONY_KIND_SIGN, epoch=0, digest=bytes(32))
            assert signed.error is not None
            assert signed.error.code() == grpc.StatusCode.INTERNAL
            assert "stores no share" in (signed.error.details() or "")

            s.fake.script = Script(result_epoch_offset=5)
            refreshed = await ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0)
            assert refreshed.error is not None
            assert refreshed.error.code() == grpc.StatusCode.INTERNAL
            # The enclave's certificate signature had gone out: another party may
            # finish the key change, so epoch 1 waits for its certificate (or deadline).
            wallet = s.store.get_wallet(WALLET)
            assert (wallet.current_epoch, wallet.pending_epoch) == (0, 1)

    run(body)


def test_an_enclave_of_another_release_is_named_as_such(sqlite_url: str) -> None:
    """An output with only a field this host does not know (an enclave of the release
    before OutboundEnvelopes) is reported as a version skew, not as an empty output."""

    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            s.fake.script = Script(old_protocol=True)
            signed = await ceremony(s, K.CEREMONY_KIND_SIGN, epoch=0, digest=bytes(32))
            assert signed.error is not None
            assert signed.error.code() == grpc.StatusCode.INTERNAL
            assert signed.error.details() == f"enclave protocol error: {OTHER_PROTOCOL_VERSION}"

    run(body)


def test_deadline_aborts_the_pending_epoch(sqlite_url: str) -> None:
    async def body() -> None:
        link = LinkConfig(deadline_margin_s=0.3)
        async with stack(sqlite_url, link=link) as s:
            await keygen(s)
            s.fake.script = Script(stall_at="after_store")
            outcome = await ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0, timeout=1.5)
            assert outcome.error is not None
            assert outcome.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert s.fake.runs[-1].acks == [1]  # epoch 1 had been written
            # The host gave up before the coordinator's deadline and aborted it.
            wallet = s.store.get_wallet(WALLET)
            assert (wallet.current_epoch, wallet.pending_epoch) == (0, None)
            assert s.fake.runs[-1].cancelled

    run(body)


def test_concurrent_key_changes_of_one_wallet_are_refused(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            gate = asyncio.Event()
            s.fake.script = Script(gate=gate)
            first = asyncio.create_task(ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0))
            while len(s.fake.runs) < 2 or not s.fake.runs[1].acks:  # epoch 1 is pending
                await asyncio.sleep(0.01)
            second = await ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0)
            assert second.error is not None
            assert second.error.code() == grpc.StatusCode.ABORTED
            gate.set()
            done = await first
            assert done.error is None
            assert s.store.get_wallet(WALLET).current_epoch == 1

    run(body)


def test_get_wallet(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.GetWallet(host_pb2.GetWalletRequest(wallet_id=WALLET))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.GetWallet(host_pb2.GetWalletRequest(wallet_id="bad id!"))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            await keygen(s)
            wallet = await s.host.GetWallet(host_pb2.GetWalletRequest(wallet_id=WALLET))
            assert wallet == host_pb2.Wallet(
                wallet_id=WALLET,
                scheme=ceremony_pb2.SCHEME_BIP340,
                threshold=2,
                parties=parties(),
                public_key=PUBLIC_KEY,
                epoch=0,
            )

    run(body)


def test_get_attestation_is_forwarded(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            nonce = secrets.token_bytes(32)
            reply = await s.host.GetAttestation(
                host_pb2.HostAttestationRequest(nonce=nonce),
                metadata=(("x-request-id", REQUEST_ID),),
            )
            assert reply.document == b"attestation:" + nonce
            assert s.fake.attestation_request_ids == [REQUEST_ID]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.GetAttestation(host_pb2.HostAttestationRequest(nonce=bytes(513)))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    run(body)


def test_ceremonies_go_straight_to_the_enclave(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            for _ in range(2):
                outcome = await ceremony(s, K.CEREMONY_KIND_SIGN, epoch=0)
                assert outcome.error is None, outcome.error
            await s.host.GetAttestation(host_pb2.HostAttestationRequest(nonce=b"n"))
            # No status round trip before a ceremony or an attestation.
            assert s.fake.status_calls == 0
            assert s.fake.provisioned == [b""]

    run(body)


def test_a_restarted_enclave_is_provisioned_again_and_the_ceremony_retried(
    sqlite_url: str,
) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            s.fake.lose_identity()

            outcome = await ceremony(s, K.CEREMONY_KIND_SIGN, epoch=0)

            assert outcome.error is None, outcome.error
            assert outcome.result is not None and outcome.result.signature
            assert s.fake.provisioned == [b"", SEALED_IDENTITY]
            _, refused, retried = s.fake.runs
            # The same signed request both times: its challenge was never spent.
            assert refused.start is not None and retried.start is not None
            assert refused.start.request == retried.start.request
            assert refused.inbound == []
            # The retry got alice's envelope from the room's log, and alice the enclave's.
            assert [e.payload for e in retried.inbound] == [CANARY + b"alice-round-1"]
            assert [d.envelope.payload for d in outcome.alice_got] == [
                CANARY + b"round-1",
                CANARY + b"round-2",
            ]

            s.fake.lose_identity()
            nonce = secrets.token_bytes(32)
            reply = await s.host.GetAttestation(host_pb2.HostAttestationRequest(nonce=nonce))
            assert reply.document == b"attestation:" + nonce
            assert s.fake.provisioned == [b"", SEALED_IDENTITY, SEALED_IDENTITY]
            assert s.fake.status_calls == 0

    run(body)


def test_an_enclave_that_stays_unprovisioned_is_retried_once(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            s.fake.provision_forgets = True
            s.fake.lose_identity()

            outcome = await ceremony(s, K.CEREMONY_KIND_SIGN, epoch=0)

            assert outcome.error is not None
            assert outcome.error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert ("shardkeep-reason", "not-provisioned") in trailers(outcome.error)
            assert len(s.fake.runs) == 3  # the keygen, the refusal, one retry
            assert s.fake.provisioned == [b"", SEALED_IDENTITY]
            assert s.store.get_wallet(WALLET).current_epoch == 0

    run(body)


def test_cheap_store_reads_run_on_the_event_loop(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            readers: list[tuple[str, int]] = []
            for name in ("get_wallet", "wallet_and_shares"):
                read = getattr(s.store, name)

                def spy(*args: object, _read: Any = read, _name: str = name) -> Any:
                    readers.append((_name, threading.get_ident()))
                    return _read(*args)

                setattr(s.store, name, spy)
            loop_thread = threading.get_ident()

            assert (await ceremony(s, K.CEREMONY_KIND_SIGN, epoch=0)).error is None
            assert s.store.inline_reads  # SQLite: a local read, no network
            assert readers == [("wallet_and_shares", loop_thread)]  # one read, one transaction

            readers.clear()
            s.store.inline_reads = False  # type: ignore[misc]  # as PostgreSQL's store says
            assert (await ceremony(s, K.CEREMONY_KIND_SIGN, epoch=0)).error is None
            assert [name for name, _ in readers] == ["wallet_and_shares"]
            assert all(thread != loop_thread for _, thread in readers)

    run(body)


def test_restart_hands_the_stored_identity_back(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url):
            pass
        fake = FakeEnclave()
        async with stack(sqlite_url, fake=fake) as s:
            assert fake.provisioned == [SEALED_IDENTITY]
            assert s.store.latest_enclave_identity() == SEALED_IDENTITY

    run(body)


def test_enclave_down_is_unavailable(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            await s.enclave_server.stop(None)
            outcome = await ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0, timeout=3.0)
            assert outcome.error is not None
            assert outcome.error.code() == grpc.StatusCode.UNAVAILABLE
            assert outcome.error.details() == "the enclave is unavailable"  # no socket path
            assert s.store.get_wallet(WALLET).current_epoch == 0

    run(body)


def test_start_up_fails_without_an_enclave(sqlite_url: str) -> None:
    async def body() -> None:
        store = open_store(sqlite_url)
        channel = grpc.aio.insecure_channel("127.0.0.1:9")  # discard port: nothing listens
        relay = RelayClient.insecure("127.0.0.1:9")
        try:
            with pytest.raises(HostError) as caught:
                await create_server(
                    "127.0.0.1:0",
                    store=store,
                    enclave_channel=channel,
                    relay=relay,
                    link_config=LinkConfig(provision_wait_s=0.3),
                )
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
            assert store.latest_enclave_identity() is None
        finally:
            await channel.close(None)
            await relay.aclose()
            store.close()

    run(body)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def no_pending_epoch(s: Stack) -> Callable[[], bool]:
    return lambda: s.store.get_wallet(WALLET).pending_epoch is None


def test_coordinator_cancel_aborts_the_pending_epoch(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            s.fake.script = Script(stall_at="after_store")
            task = asyncio.create_task(ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0))
            await wait_for(lambda: len(s.fake.runs) == 2 and bool(s.fake.runs[1].acks))
            assert s.store.get_wallet(WALLET).pending_epoch == 1
            task.cancel()  # the coordinator's call is cancelled with it
            with pytest.raises(asyncio.CancelledError):
                await task
            await wait_for(no_pending_epoch(s))
            assert s.store.get_wallet(WALLET).current_epoch == 0
            await wait_for(lambda: s.fake.runs[1].cancelled)

    run(body)


def test_shutdown_mid_ceremony_aborts_the_pending_epoch(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            s.fake.script = Script(stall_at="after_store")
            task = asyncio.create_task(ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0))
            await wait_for(lambda: len(s.fake.runs) == 2 and bool(s.fake.runs[1].acks))
            await s.server.stop(0.2)  # the grace period passes; the ceremony is cut off
            outcome = await task
            assert outcome.error is not None
            await wait_for(no_pending_epoch(s))
            assert s.store.get_wallet(WALLET).current_epoch == 0

    run(body)


def test_room_closed_mid_ceremony_aborts_the_pending_epoch(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            s.fake.script = Script(stall_at="after_store")
            room = await s.relay.create_room([SERVER, ALICE], ttl_ms=60_000)
            request = make_request(K.CEREMONY_KIND_REFRESH, room.room_id)
            peer = asyncio.create_task(alice(s.relay, room, request))
            call = s.host.Refresh(host_request(request, room.join_tokens[SERVER]), timeout=10)
            await wait_for(lambda: len(s.fake.runs) == 2 and bool(s.fake.runs[1].acks))
            await s.relay.close_room(room.room_id, room.admin_token)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert (caught.value.details() or "").startswith("relay: ")
            assert s.store.get_wallet(WALLET).pending_epoch is None
            await peer

    run(body)


def test_other_ceremonies_in_the_room_are_not_forwarded(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            room = await s.relay.create_room([SERVER, ALICE], ttl_ms=60_000)
            request = make_request(K.CEREMONY_KIND_KEYGEN, room.room_id)
            # An earlier ceremony's envelope waits in the room's backlog.
            async with s.relay.join(room.room_id, ALICE, room.join_tokens[ALICE]) as early:
                await early.send(b"stale", ceremony_id="an-earlier-ceremony", round_=1)
            peer = asyncio.create_task(alice(s.relay, room, request))
            result = await s.host.Keygen(host_request(request, room.join_tokens[SERVER]))
            assert result.wallet_id == WALLET
            (seen,) = s.fake.runs
            assert [e.payload for e in seen.inbound] == [CANARY + b"alice-round-1"]
            await s.relay.close_room(room.room_id, room.admin_token)
            await peer

    run(body)


def test_logs_carry_ids_and_no_secrets(sqlite_url: str) -> None:
    out = io.StringIO()
    logs.configure("host", level=logging.DEBUG, stream=out)
    try:

        async def body() -> tuple[Outcome, Outcome]:
            async with stack(sqlite_url) as s:
                ok = await keygen(s)
                s.fake.script = Script(fail_at="after_store")
                failed = await ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0)
                return ok, failed

        ok, failed = run(body)
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    events = [json.loads(line) for line in text.splitlines()]
    finished = [e for e in events if e["event"] == "rpc finished"]
    assert [e["method"] for e in finished] == ["Keygen", "Refresh"]
    for event in finished:
        assert event["request_id"] == REQUEST_ID
        assert event["peer"].startswith("ipv4:127.0.0.1:")
        assert event["duration_ms"] >= 0
        assert event["component"] == "host"
    assert {e["room_id"] for e in finished} == {ok.room.room_id, failed.room.room_id}
    assert REQUEST_ID in text
    assert ok.room.room_id in text and failed.room.room_id in text
    assert '"method": "Keygen"' in text and '"method": "Refresh"' in text
    assert '"code": "ABORTED"' in text and '"code": "OK"' in text
    for secret in (CANARY, CANARY + b"alice-round-1"):
        for form in (secret, secret.hex().encode(), base64.b64encode(secret)):
            assert form.decode(errors="replace") not in text
    for outcome in (ok, failed):
        assert outcome.room.join_tokens[SERVER] not in text
        assert outcome.room.admin_token not in text


def test_metrics(sqlite_url: str) -> None:
    async def body() -> bytes:
        async with stack(sqlite_url) as s:
            await keygen(s)
            await ceremony(s, K.CEREMONY_KIND_KEYGEN, method=K.CEREMONY_KIND_SIGN)
            endpoint = start_metrics_server(s.metrics, 0)
            try:
                url = f"http://127.0.0.1:{endpoint.port}/metrics"
                return await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())
            finally:
                endpoint.close()

    text = run(body).decode()
    assert 'shardkeep_host_calls_total{code="OK",method="Keygen"} 1.0' in text
    assert 'shardkeep_host_calls_total{code="INVALID_ARGUMENT",method="Sign"} 1.0' in text
    assert 'shardkeep_host_ceremony_duration_seconds_count{code="OK",kind="keygen"} 1.0' in text
    assert 'shardkeep_host_ceremonies_in_flight{kind="keygen"} 0.0' in text


def test_api_token_is_checked_before_the_handler(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url, api_tokens=("good-token",)) as s:
            request = host_pb2.GetWalletRequest(wallet_id=WALLET)
            for metadata in ((), (("authorization", "Bearer bad-token"),)):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await s.host.GetWallet(request, metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.GetWallet(request, metadata=(("authorization", "Bearer good-token"),))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # past the gate
            # Health checks stay open to load balancers.
            health = health_pb2_grpc.HealthStub(s.channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service="shardkeep.v1.Host"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    run(body)


def test_api_token_is_checked_before_a_session_stream(sqlite_url: str) -> None:
    """Attack: a caller without the API token opens a Host.Session stream; it is refused
    before any frame is read (the stream is no way around the token)."""

    async def body() -> None:
        async with stack(sqlite_url, api_tokens=("good-token",)) as s:
            ask = host_pb2.HostSessionInput(
                channel=1, get_challenge=host_pb2.HostChallengeRequest()
            )
            for metadata in ((), (("authorization", "Bearer bad-token"),)):
                call = s.host.Session(metadata=metadata)
                await call.write(ask)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call.read()
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            call = s.host.Session(metadata=(("authorization", "Bearer good-token"),))
            empty = host_pb2.HostCeremonyCall(kind=K.CEREMONY_KIND_SIGN)
            await call.write(host_pb2.HostSessionInput(channel=2, call=empty))
            answer = await call.read()  # past the gate: the empty request is refused
            assert answer.channel == 2 and answer.WhichOneof("frame") == "end"
            assert answer.end.code == "INVALID_ARGUMENT"
            call.cancel()

    run(body)


@pytest.mark.services
def test_keygen_and_failed_refresh_on_postgres(postgres_url: str) -> None:
    async def body() -> None:
        async with stack(postgres_url) as s:
            assert s.store.latest_enclave_identity() == SEALED_IDENTITY
            at_ack = []
            s.fake.on_ack = lambda epoch: at_ack.append(s.store.get_wallet(WALLET))
            await keygen(s)
            assert [(w.current_epoch, w.pending_epoch) for w in at_ack] == [(None, 0)]
            wallet = s.store.get_wallet(WALLET)
            assert (wallet.current_epoch, wallet.pending_epoch) == (0, None)
            (old,) = s.store.current_shares(WALLET)
            s.fake.script = Script(fail_at="after_store")
            failed = await ceremony(s, K.CEREMONY_KIND_REFRESH, epoch=0)
            assert failed.error is not None
            assert failed.error.code() == grpc.StatusCode.ABORTED
            assert s.store.current_shares(WALLET) == [old]
            assert s.store.get_wallet(WALLET).pending_epoch is None

    run(body)


def test_serve_drains_on_stop(sqlite_url: str) -> None:
    async def body() -> None:
        backend = MemoryBackend()
        relay_server, relay_port = await create_relay_server(
            "127.0.0.1:0", backend, admitter=harness_admitter()
        )
        await relay_server.start()
        fake = FakeEnclave()
        enclave_server, enclave_target = await start_fake_enclave(fake)
        config = HostConfig(
            listen="127.0.0.1:0",
            enclave=enclave_target,
            relay=f"127.0.0.1:{relay_port}",
            store=sqlite_url,
            metrics_port=0,
            grace_s=1.0,
        )
        stop = asyncio.Event()
        ports: list[tuple[int, int | None]] = []
        task = asyncio.create_task(serve(config, stop, on_ready=lambda p, m: ports.append((p, m))))
        while not ports:
            await asyncio.sleep(0.01)
        port, metrics_port = ports[0]
        assert metrics_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stop.set()
            await asyncio.wait_for(task, 5)
            with pytest.raises(grpc.aio.AioRpcError):
                await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        assert fake.provisioned == [b""]
        await enclave_server.stop(None)
        await relay_server.stop(None)
        await backend.aclose()

    run(body)


def test_main_refuses_vsock_targets() -> None:
    with pytest.raises(SystemExit):
        main(["--enclave", "vsock:16:5000", "--relay", "x:1", "--store", "sqlite:///x.db"])


def test_the_console_script_drains_on_sigterm(sqlite_url: str) -> None:
    async def body() -> None:
        backend = MemoryBackend()
        relay_server, relay_port = await create_relay_server(
            "127.0.0.1:0", backend, admitter=harness_admitter()
        )
        await relay_server.start()
        fake = FakeEnclave()
        enclave_server, enclave_target = await start_fake_enclave(fake)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from host.main import main; main()",
            "--listen=127.0.0.1:0",
            f"--enclave={enclave_target}",
            f"--relay=127.0.0.1:{relay_port}",
            f"--store={sqlite_url}",
            "--grace=1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
            assert line.startswith("shardkeep-host listening on 127.0.0.1:")
            target = line.rsplit(" ", 1)[-1].strip()
            async with grpc.aio.insecure_channel(target) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0
            events = [json.loads(e) for e in (await process.stderr.read()).decode().splitlines()]
            assert [e["event"] for e in events if e["event"] != "enclave provisioned"] == [
                "host serving",
                "shutting down",
                "stopped",
            ]
            assert all(e["component"] == "host" for e in events)
            assert fake.provisioned == [b""]
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await enclave_server.stop(None)
            await relay_server.stop(None)
            await backend.aclose()

    run(body)
