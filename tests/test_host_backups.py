"""The host's backup RPCs (PutBackup, GetBackup, ListBackups) over the real store.

The host keeps whatever ciphertext a client uploads, never interprets it, never
replaces a stored backup, and names the failing field in its errors without
echoing the blob. The service runs as in tests/test_host_service.py: real relay
(in memory), fake enclave, SQLite store.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import grpc
import pytest
import structlog

from shardkeep import logs
from shardkeep.v1 import host_pb2
from tests.fake_enclave import CANARY
from tests.relay_harness import run
from tests.test_host_service import WALLET, keygen, stack

BLOB = CANARY + b"client-ciphertext" * 10


def backup(backup_id: str = "bk-1", *, blob: bytes = BLOB, epoch: int = 0) -> host_pb2.Backup:
    return host_pb2.Backup(
        wallet_id=WALLET, backup_id=backup_id, party_id="1", epoch=epoch, blob=blob
    )


def get_request(backup_id: str) -> host_pb2.GetBackupRequest:
    return host_pb2.GetBackupRequest(wallet_id=WALLET, backup_id=backup_id)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'host.db'}"


def test_put_get_list_round_trip(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            await s.host.PutBackup(host_pb2.PutBackupRequest(backup=backup("bk-2", epoch=3)))
            await s.host.PutBackup(host_pb2.PutBackupRequest(backup=backup("bk-1")))

            got = await s.host.GetBackup(get_request("bk-1"))
            assert (got.wallet_id, got.backup_id, got.party_id, got.epoch) == (
                WALLET,
                "bk-1",
                "1",
                0,
            )
            assert got.blob == BLOB
            assert got.blob_bytes == len(BLOB)
            assert got.created_at_ms > 0

            listed = await s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET))
            # By backup id, without the blobs, with their sizes.
            assert [(b.backup_id, b.epoch, b.party_id) for b in listed.backups] == [
                ("bk-1", 0, "1"),
                ("bk-2", 3, "1"),
            ]
            assert all(b.blob == b"" and b.blob_bytes == len(BLOB) for b in listed.backups)
            # The store holds exactly the client's bytes.
            assert s.store.get_backup(WALLET, "bk-2").backup.blob == BLOB

    run(body)


def test_put_is_idempotent_and_never_replaces(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            request = host_pb2.PutBackupRequest(backup=backup())
            await s.host.PutBackup(request)
            await s.host.PutBackup(request)  # a retried upload: no-op
            for other in (backup(blob=b"other ciphertext"), backup(epoch=1)):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await s.host.PutBackup(host_pb2.PutBackupRequest(backup=other))
                assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
            got = await s.host.GetBackup(get_request("bk-1"))
            assert (got.blob, got.epoch) == (BLOB, 0)

    run(body)


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"backup_id": "bad id!"}, "backup id"),
        ({"backup_id": ""}, "backup id"),
        ({"party_id": ""}, "party id"),
        ({"party_id": "x" * 129}, "party id"),
        ({"blob": b""}, "backup blob"),
        ({"wallet_id": "bad wallet!"}, "wallet id"),
    ],
    ids=[
        "backup-id-alphabet",
        "backup-id-empty",
        "party-empty",
        "party-long",
        "empty-blob",
        "wallet-id",
    ],
)
def test_malformed_backups_are_invalid_argument(
    sqlite_url: str, fields: dict[str, object], field_name: str
) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            bad = backup()
            for name, value in fields.items():
                setattr(bad, name, value)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.PutBackup(host_pb2.PutBackupRequest(backup=bad))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_name in (caught.value.details() or "")
            assert s.store.list_backups(WALLET) == []

    run(body)


def test_unknown_wallet_and_backup_are_not_found(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            for call in (
                s.host.PutBackup(host_pb2.PutBackupRequest(backup=backup())),
                s.host.GetBackup(get_request("bk-1")),
                s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET)),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            await keygen(s)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.GetBackup(get_request("bk-9"))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            listed = await s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET))
            assert list(listed.backups) == []

    run(body)


def test_an_oversized_blob_is_refused(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            huge = backup(blob=b"\x00" * ((8 << 20) + 1))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.PutBackup(host_pb2.PutBackupRequest(backup=huge))
            # The message cap (RESOURCE_EXHAUSTED) or the store's limit (INVALID_ARGUMENT).
            assert caught.value.code() in (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            assert s.store.list_backups(WALLET) == []

    run(body)


def test_the_api_token_guards_backups(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url, api_tokens=("good-token",)) as s:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    run(body)


def test_logs_name_the_calls_but_never_carry_the_blob(sqlite_url: str) -> None:
    out = io.StringIO()
    logs.configure("host", level=logging.DEBUG, stream=out)
    try:

        async def body() -> None:
            async with stack(sqlite_url) as s:
                await keygen(s)
                await s.host.PutBackup(host_pb2.PutBackupRequest(backup=backup()))
                await s.host.GetBackup(get_request("bk-1"))
                await s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET))

        run(body)
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    events = [json.loads(line) for line in text.splitlines()]
    finished = [(e["method"], e["code"]) for e in events if e["event"] == "rpc finished"]
    assert finished[1:] == [("PutBackup", "OK"), ("GetBackup", "OK"), ("ListBackups", "OK")]
    stored = [e for e in events if e["event"] == "backup stored"]
    assert [(e["wallet_id"], e["backup_id"], e["blob_bytes"]) for e in stored] == [
        (WALLET, "bk-1", len(BLOB))
    ]
    for form in (CANARY, CANARY.hex().encode(), base64.b64encode(CANARY)):
        assert form.decode() not in text


def test_backup_flood_refused_by_the_wallet_quota(sqlite_url: str) -> None:
    """The flood: 60 backups of 4 MiB each were accepted for one wallet in
    3.7 s. Now a wallet keeps at most 16 backups and 32 MiB of them: the next
    one is RESOURCE_EXHAUSTED naming the quota, and what is stored is intact."""

    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            big = b"\x5a" * (4 << 20)
            stored = 0
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                for i in range(60):
                    request = host_pb2.PutBackupRequest(backup=backup(f"big-{i}", blob=big))
                    await s.host.PutBackup(request)
                    stored += 1
            assert stored == 8  # 8 x 4 MiB = the 32 MiB quota
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "backup byte quota" in (caught.value.details() or "")
            listed = await s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET))
            assert [b.blob_bytes for b in listed.backups] == [len(big)] * 8
            assert s.store.get_backup(WALLET, "big-7").backup.blob == big

    run(body)


def test_backup_count_flood_refused_by_the_wallet_quota(sqlite_url: str) -> None:
    """Many small backups: the 17th is RESOURCE_EXHAUSTED naming the count quota."""

    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            for i in range(16):
                await s.host.PutBackup(host_pb2.PutBackupRequest(backup=backup(f"b-{i:02}")))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.PutBackup(host_pb2.PutBackupRequest(backup=backup("b-16")))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "backup count quota 16" in (caught.value.details() or "")

    run(body)


def test_list_backups_reads_metadata_only(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """ListBackups selected every blob (767 ms and +58 MiB of host memory for
    one call). Now its query reads no blob column, only the blobs' lengths."""
    from host import sqlite_store

    queries: list[str] = []
    original = sqlite_store._SQLiteTransaction.all

    def spy(self: sqlite_store._SQLiteTransaction, sql: str, params: object = ()) -> object:
        queries.append(sql)
        return original(self, sql, params)  # type: ignore[arg-type]

    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            await s.host.PutBackup(host_pb2.PutBackupRequest(backup=backup("bk-1")))
            monkeypatch.setattr(sqlite_store._SQLiteTransaction, "all", spy)
            listed = await s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET))
            assert [(b.backup_id, b.blob, b.blob_bytes) for b in listed.backups] == [
                ("bk-1", b"", len(BLOB))
            ]
        [query] = [q for q in queries if "FROM backups" in q]
        columns = query.split("FROM backups")[0]
        assert "length(blob)" in columns
        assert "blob" not in columns.replace("length(blob)", "")

    run(body)
