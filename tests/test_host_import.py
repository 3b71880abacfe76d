"""The host's import path: a reshare that adds the server party may open an unknown wallet.

Against the fake enclave (tests/fake_enclave.py) and the real relay and store,
as tests/test_host_service.py: the importing party ("alice") holds a 1-of-1
keyring and reshares it to herself and the server party. The enclave's new
share opens the wallet at the reshare's epoch with the new keyring and the
owner key the request registers; every other request for an unknown wallet
stays refused before the enclave.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from pathlib import Path

import grpc
import pytest

from host.ceremony_plan import plan_ceremony
from host.errors import HostError
from host.store import (
    EncryptedDataKey,
    Keyring,
    NewWallet,
    OwnerKey,
    Party,
    PublicKey,
    SealedCiphertext,
    SealedShare,
    StaticKey,
    StoreInputError,
    WalletNotFoundError,
)
from host.stores import open_store
from shardkeep.v1 import ceremony_pb2
from tests.fake_enclave import CANARY, PUBLIC_KEY, STATIC_KEY, Script
from tests.relay_harness import run
from tests.test_host_service import (
    ALICE,
    ALICE_KEY,
    SERVER,
    WALLET,
    Outcome,
    Stack,
    alice,
    ceremony,
    host_request,
    keygen,
    postgres_url,
    stack,
)

K = ceremony_pb2.CeremonyKind
OWNER = b"\x09" * 32
OTHER_KEY = b"\x02" + hashlib.sha256(b"another key").digest()


def _party(pid: str, key: bytes) -> ceremony_pb2.Party:
    return ceremony_pb2.Party(party_id=pid, static_key=key)


def import_request(
    room_id: str,
    *,
    public_key: bytes = PUBLIC_KEY,
    keyring: bool = True,
    owner_key: bytes = OWNER,
    server_deals: bool = False,
) -> ceremony_pb2.CeremonyRequest:
    """Alice's 1-of-1 keyring (epoch 0) reshared to alice and the server (2-of-2)."""
    importer = _party(ALICE, ALICE_KEY)
    request = ceremony_pb2.CeremonyRequest(
        ceremony_id=f"c-{secrets.token_hex(4)}",
        room_id=room_id,
        kind=K.CEREMONY_KIND_RESHARE,
        scheme=ceremony_pb2.SCHEME_ECDSA_SECP256K1,
        wallet_id=WALLET,
        parties=[importer, _party(SERVER, STATIC_KEY)] if server_deals else [importer],
        signers=[0],
        epoch=0,
        new_threshold=2,
        new_parties=[importer, _party(SERVER, STATIC_KEY)],
        owner_key=owner_key,
    )
    if keyring:
        ring = ceremony_pb2.PublicKeyring(
            threshold=1, public_key=public_key, public_shares=[public_key],
            epoch=0,
        )  # fmt: skip
        request.keyring.CopyFrom(ring)
    return request


async def run_import(s: Stack, **fields: object) -> Outcome:
    """Play the coordinator (through the host) and alice for one import."""
    room = await s.relay.create_room([SERVER, ALICE], ttl_ms=60_000)
    request = import_request(room.room_id, **fields).SerializeToString()  # type: ignore[arg-type]
    peer = asyncio.create_task(alice(s.relay, room, request))
    result = error = None
    try:
        result = await s.host.Reshare(host_request(request, room.join_tokens[SERVER]), timeout=10.0)
    except grpc.aio.AioRpcError as e:
        error = e
    await s.relay.close_room(room.room_id, room.admin_token)
    try:
        got = await asyncio.wait_for(peer, 5)
    except Exception:
        got = []
    return Outcome(result, error, got, room, request)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'host.db'}"


def test_an_import_opens_the_wallet_at_the_reshare_epoch(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            at_ack = []
            s.fake.on_ack = lambda epoch: at_ack.append(s.store.get_wallet(WALLET))

            outcome = await run_import(s)

            assert outcome.error is None, outcome.error
            assert outcome.result is not None
            assert (outcome.result.public_key, outcome.result.epoch) == (PUBLIC_KEY, 1)
            # Stored pending first (the new wallet's first epoch is 1), committed on the result.
            assert [(w.current_epoch, w.pending_epoch) for w in at_ack] == [(None, 1)]
            wallet = s.store.get_wallet(WALLET)
            assert (wallet.current_epoch, wallet.pending_epoch) == (1, None)
            assert (wallet.scheme, wallet.public_key, wallet.owner_key) == (
                "ecdsa-secp256k1", PUBLIC_KEY, OWNER,
            )  # fmt: skip
            assert wallet.threshold == 2
            assert [p.party_id for p in wallet.parties] == [ALICE, SERVER]
            (share,) = s.store.current_shares(WALLET)
            assert (share.share.share_index, share.share.epoch) == (1, 1)
            assert share.share.ciphertext.startswith(CANARY)
            (seen,) = s.fake.runs
            assert seen.start is not None and list(seen.start.sealed_shares) == []
            assert seen.acks == [1]

            # The imported wallet is an ordinary one now: a sign reaches the enclave
            # with its share, and a second import under its id is refused.
            signed = await ceremony(
                s, K.CEREMONY_KIND_SIGN, epoch=1, digest=bytes(32), signers=[0, 1]
            )
            assert signed.error is None
            start = s.fake.runs[-1].start
            assert start is not None
            assert [(g.share_index, g.epoch) for g in start.sealed_shares] == [(1, 1)]
            again = await run_import(s)
            assert again.error is not None
            assert again.error.code() == grpc.StatusCode.FAILED_PRECONDITION  # expects epoch 0
            other = await run_import(s, public_key=OTHER_KEY)
            assert other.error is not None
            assert other.error.code() == grpc.StatusCode.ALREADY_EXISTS
            assert len(s.fake.runs) == 2  # the import and the sign

    run(body)


def test_a_failed_import_leaves_no_wallet(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            s.fake.script = Script(fail_at="after_store")
            outcome = await run_import(s)
            assert outcome.error is not None
            assert outcome.error.code() == grpc.StatusCode.ABORTED
            assert s.fake.runs[-1].acks == [1]  # the share had been stored, pending
            with pytest.raises(WalletNotFoundError):
                s.store.get_wallet(WALLET)
            s.fake.script = Script()
            retried = await run_import(s)
            assert retried.error is None
            assert s.store.get_wallet(WALLET).current_epoch == 1

    run(body)


def test_the_host_records_only_the_key_the_import_names(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            # The (fake) enclave stores a share of PUBLIC_KEY; the request imports another.
            outcome = await run_import(s, public_key=OTHER_KEY)
            assert outcome.error is not None
            assert outcome.error.code() == grpc.StatusCode.INTERNAL
            assert "another key" in (outcome.error.details() or "")
            with pytest.raises(WalletNotFoundError):
                s.store.get_wallet(WALLET)

    run(body)


@pytest.mark.parametrize(
    "fields",
    [{"keyring": False}, {"owner_key": b""}, {"server_deals": True}],
    ids=["no-keyring", "no-owner-key", "server-already-a-party"],
)
def test_other_reshares_of_an_unknown_wallet_stay_refused(
    sqlite_url: str, fields: dict[str, object]
) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            outcome = await run_import(s, **fields)
            assert outcome.error is not None
            assert outcome.error.code() == grpc.StatusCode.NOT_FOUND
            assert s.fake.runs == []  # refused before the enclave
            with pytest.raises(WalletNotFoundError):
                s.store.get_wallet(WALLET)

    run(body)


def test_a_reshare_of_a_known_wallet_must_name_its_key(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)  # a 2-of-2 bip340 wallet of PUBLIC_KEY with server and alice
            room = await s.relay.create_room([SERVER, ALICE], ttl_ms=60_000)
            request = import_request(room.room_id, server_deals=True, public_key=OTHER_KEY)
            request.epoch = 0
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.Reshare(
                    host_request(request.SerializeToString(), room.join_tokens[SERVER]),
                    timeout=10.0,
                )
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "another public key" in (caught.value.details() or "")
            assert len(s.fake.runs) == 1  # the keygen only

    run(body)


### Unit level: the plan and the store


def test_plan_marks_only_a_joining_reshare_with_keyring_and_owner_key() -> None:
    def plan(**fields: object) -> bool:
        request = import_request("room-1", **fields)  # type: ignore[arg-type]
        return plan_ceremony(
            host_request(request.SerializeToString(), "token"), K.CEREMONY_KIND_RESHARE, STATIC_KEY
        ).may_open_wallet

    assert plan()
    assert (
        plan_ceremony(
            host_request(import_request("r").SerializeToString(), "t"),
            K.CEREMONY_KIND_RESHARE,
            STATIC_KEY,
        ).scheme
        == "ecdsa-secp256k1"
    )
    assert not plan(keyring=False)
    assert not plan(owner_key=b"")
    assert not plan(server_deals=True)
    no_scheme = import_request("room-1")
    no_scheme.scheme = ceremony_pb2.SCHEME_UNSPECIFIED
    with pytest.raises(HostError) as caught:
        plan_ceremony(
            host_request(no_scheme.SerializeToString(), "t"), K.CEREMONY_KIND_RESHARE, STATIC_KEY
        )
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def _sealed(epoch: int, index: int = 1) -> SealedShare:
    return SealedShare(
        WALLET, index, "bip340", epoch, EncryptedDataKey(b"k" * 40), SealedCiphertext(b"c" * 40)
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue(postgres_url.__name__)
        return url
    return f"sqlite:///{tmp_path / 'store.db'}"


def test_store_opens_a_wallet_at_a_later_first_epoch(store_url: str) -> None:
    keyring = Keyring(2, (Party(ALICE, StaticKey(ALICE_KEY)), Party(SERVER, StaticKey(STATIC_KEY))))
    wallet = NewWallet(WALLET, "bip340", PublicKey(PUBLIC_KEY), keyring, OwnerKey(OWNER), epoch=1)
    with open_store(store_url) as store:
        with pytest.raises(StoreInputError):  # shares of the first epoch only
            store.create_wallet(wallet, [_sealed(0)])
        created = store.create_wallet(wallet, [_sealed(1)])
        assert (created.current_epoch, created.pending_epoch, created.threshold) == (None, 1, 2)
        assert store.commit_epoch(WALLET, 1).current_epoch == 1
        store.begin_epoch(WALLET, 2)
        store.put_pending_share(_sealed(2))
        assert store.commit_epoch(WALLET, 2).current_epoch == 2
        # An uncommitted first epoch, aborted, takes the wallet with it (as keygen's).
        store.create_wallet(
            NewWallet("wallet-2", "bip340", PublicKey(PUBLIC_KEY), keyring, epoch=5),
            [SealedShare("wallet-2", 0, "bip340", 5, EncryptedDataKey(b"k" * 40),
                         SealedCiphertext(b"c" * 40))],
        )  # fmt: skip
        assert store.get_wallet("wallet-2").pending_epoch == 5
        assert store.abort_epoch("wallet-2", 5)
        with pytest.raises(WalletNotFoundError):
            store.get_wallet("wallet-2")
    with pytest.raises(StoreInputError):
        NewWallet(WALLET, "bip340", PublicKey(PUBLIC_KEY), keyring, epoch=-1)
