"""Backup shares kept by the host, and recovery on a new device (docs/architecture.md, "Storage").

The client encrypts every backup before it leaves the device
(``client.storage.shares.make_backup``: Argon2id passcode or a 32-byte passkey/KMS
key, AES-256-GCM), so the host's ``PutBackup`` / ``GetBackup`` /
``ListBackups`` only ever see ciphertext and clear metadata (wallet, party
index, epoch). A backup is either a bare share container or a device backup
(``client.sdk.device_backup``: the share plus the party identity that signs with
it); only the latter lets a new device sign again.

The host is untrusted: what it returns is checked against what the caller
knows (the wallet's public key, e.g. from its address) before the passcode is
spent, then authenticated by decryption. The current epoch may come from the
host (``GetWallet``): a host lying about it can at worst hand back an old
share, which no longer combines with the server share after a refresh.

On the wire the party is the decimal text of its 0-based index (the host's
``party_id`` is a string).

Offline export (docs/architecture.md) needs none of this: ``offline_export`` rebuilds
the private key from at least t decrypted key shares (``offline_export_files``
from share files, ``client.storage.shares``), checked against the keyring's public
key and every other party's public share, with no host, relay or server share.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.errors import InvalidInput, WalletError, sdk_boundary
from client.sdk.default_policy import default_policy_set
from client.sdk.device_backup import RecoveredDevice, is_device_backup, make_device_backup
from client.sdk.device_backup import open_device_backup as _open_device_backup
from client.sdk.party import PartyIdentity
from client.sdk.wallet import SCHEMES, Wallet, WalletClient
from client.storage.errors import ShareMismatchError, StorageError
from client.storage.shares import (
    DEFAULT_ARGON2_PARAMS,
    Argon2Params,
    BackupBlob,
    Passcode,
    Random,
    make_backup,
    read_share_file,
    recover_share,
)
from shardkeep.policyset import PolicySet
from shardkeep.v1 import ceremony_pb2, host_pb2, host_pb2_grpc
from tss.channel import party_id as party_id_of
from tss.errors import InputError
from tss.export import offline_export as _reconstruct
from tss.keyshare import KeyShare

__all__ = [
    # Functions
    "host_stub",
    "put_backup",
    "get_backup",
    "list_backups",
    "backup_share",
    "find_backup",
    "recover_from_backup",
    "recover_device",
    "restore_wallet",
    "offline_export",
    "offline_export_files",
    # Exceptions
    "NoBackupError",
    # Types
    "BackupEntry",
    "ExportedKey",
    "HostTarget",
    "RecoveredDevice",
]

HostTarget = grpc.aio.Channel | host_pb2_grpc.HostStub
"""A channel to the host, or a ``HostStub`` on one."""

_RPC_TIMEOUT_S: Final = 30.0
_PARTY_RE: Final = re.compile(r"0|[1-9][0-9]{0,2}")
T = TypeVar("T")


class NoBackupError(StorageError):
    """The host holds no backup matching the request (wallet, epoch, party)."""

    error_code = "no_backup"


@dataclass(frozen=True)
class BackupEntry:
    """A backup as ``ListBackups`` describes it (no blob).

    Attributes:
        wallet_id, backup_id, epoch: as stored.
        party_id: the party's index, or None if the host's text is not one
            (a record this SDK did not write).
        created_at_ms: when the host stored it (the host's clock).
        blob_bytes: the blob's length.
    """

    wallet_id: str
    backup_id: str
    party_id: int | None
    epoch: int
    created_at_ms: int
    blob_bytes: int


@sdk_boundary
def host_stub(host: HostTarget) -> host_pb2_grpc.HostStub:
    """A ``HostStub`` for a channel (or the stub itself)."""
    if isinstance(host, host_pb2_grpc.HostStub):
        return host
    return host_pb2_grpc.HostStub(host)  # type: ignore[no-untyped-call]


async def _call(what: str, rpc: Callable[[], Awaitable[T]]) -> T:
    try:
        return await rpc()
    except grpc.aio.AioRpcError as e:
        raise WalletError(f"{what} failed: {e.details()}", e.code()) from e


def _party_index(text: str) -> int | None:
    return int(text) if _PARTY_RE.fullmatch(text) and int(text) <= 255 else None


### Host RPCs


@sdk_boundary
async def put_backup(host: HostTarget, backup: BackupBlob) -> None:
    """Upload an encrypted backup (idempotent for the same record).

    Raises:
        WalletError: the host refused it (``code`` ALREADY_EXISTS: another
            blob is stored under this id; NOT_FOUND: no such wallet).
    """
    request = host_pb2.PutBackupRequest(
        backup=host_pb2.Backup(
            wallet_id=backup.wallet_id,
            backup_id=backup.backup_id,
            party_id=str(backup.party_id),
            epoch=backup.epoch,
            blob=backup.blob,
        )
    )
    stub = host_stub(host)
    await _call("PutBackup", lambda: stub.PutBackup(request, timeout=_RPC_TIMEOUT_S))


@sdk_boundary
async def get_backup(host: HostTarget, wallet_id: str, backup_id: str) -> BackupBlob:
    """Download one backup.

    Raises:
        WalletError: the host has no such wallet or backup (``code`` NOT_FOUND).
        ShareFormatError: the record is not one of this SDK's (party id not an index).
    """
    stub = host_stub(host)
    request = host_pb2.GetBackupRequest(wallet_id=wallet_id, backup_id=backup_id)
    reply: host_pb2.Backup = await _call(
        "GetBackup", lambda: stub.GetBackup(request, timeout=_RPC_TIMEOUT_S)
    )
    party = _party_index(reply.party_id)
    if party is None or (reply.wallet_id, reply.backup_id) != (wallet_id, backup_id):
        raise ShareMismatchError("backup record")
    try:
        return BackupBlob(reply.wallet_id, reply.backup_id, party, reply.epoch, bytes(reply.blob))
    except InputError as e:
        raise ShareMismatchError("backup record") from e


@sdk_boundary
async def list_backups(host: HostTarget, wallet_id: str) -> list[BackupEntry]:
    """Every backup of a wallet, by backup id (no blobs).

    Raises:
        WalletError: no such wallet (``code`` NOT_FOUND).
    """
    stub = host_stub(host)
    request = host_pb2.ListBackupsRequest(wallet_id=wallet_id)
    reply: host_pb2.ListBackupsResponse = await _call(
        "ListBackups", lambda: stub.ListBackups(request, timeout=_RPC_TIMEOUT_S)
    )
    return [
        BackupEntry(
            b.wallet_id,
            b.backup_id,
            _party_index(b.party_id),
            b.epoch,
            b.created_at_ms,
            b.blob_bytes,
        )
        for b in reply.backups
        if b.wallet_id == wallet_id
    ]


### Backup and recovery


@sdk_boundary
async def backup_share(
    host: HostTarget,
    share: KeyShare,
    *,
    wallet_id: str,
    passcode: Passcode | None = None,
    key: bytes | None = None,
    identity: PartyIdentity | None = None,
    owner_key: Ed25519PrivateKey | None = None,
    policy_set: PolicySet | None = None,
    backup_id: str | None = None,
    params: Argon2Params = DEFAULT_ARGON2_PARAMS,
    insecure_allow_weak_kdf: bool = False,
    random: Random = secrets.token_bytes,
) -> BackupBlob:
    """Encrypt a key share on this device and store the ciphertext at the host.

    Arguments:
        host: a channel to the host, or its stub.
        share: the key share to back up.
        wallet_id: its wallet.
        passcode, key: exactly one: an Argon2id passcode or a 32-byte passkey/KMS key.
        identity: also back up the party identity (a device backup), so that a
            new device can sign with the recovered share; recommended.
        owner_key: with ``identity``, also back up the wallet owner's key.
        policy_set: with ``identity``, also back up the wallet's policy set
            (``Wallet.policy_set``), sealed as ``client.sdk.device_backup`` seals it,
            so that the restored wallet approves under the set in force.
        backup_id: the id to store it under (default: derived from the blob).
        params, insecure_allow_weak_kdf, random: as in ``client.storage.shares.make_backup``.

    Returns:
        The record stored (its ``backup_id`` names it at the host).

    Raises:
        InvalidInput: bad arguments (``owner_key`` or ``policy_set`` without ``identity``).
        WalletError: the host refused the upload.
    """
    if owner_key is not None and identity is None:
        raise InvalidInput("an owner key is backed up only with the party identity")
    if policy_set is not None and identity is None:
        raise InvalidInput("a policy set is backed up only with the party identity")
    common: dict[str, Any] = {
        "wallet_id": wallet_id,
        "passcode": passcode,
        "key": key,
        "backup_id": backup_id,
        "params": params,
        "insecure_allow_weak_kdf": insecure_allow_weak_kdf,
        "random": random,
    }
    if identity is None:
        backup = make_backup(share, **common)
    else:
        backup = make_device_backup(
            share, identity, owner_key=owner_key, policy_set=policy_set, **common
        )
    await put_backup(host, backup)
    return backup


@sdk_boundary
async def find_backup(
    host: HostTarget, wallet_id: str, *, epoch: int, party_id: int | None = None
) -> BackupEntry:
    """The newest backup of the wallet for ``epoch`` (and ``party_id``, if given).

    Raises:
        NoBackupError: none matches.
        InvalidInput: backups of several parties match and ``party_id`` is None.
        WalletError: the host failed.
    """
    entries = [
        e
        for e in await list_backups(host, wallet_id)
        if e.party_id is not None
        and e.epoch == epoch
        and (party_id is None or e.party_id == party_id)
    ]
    if not entries:
        raise NoBackupError(f"no backup of wallet {wallet_id} for epoch {epoch}")
    if len({e.party_id for e in entries}) > 1:
        raise InvalidInput("backups of several parties match: choose one with party_id")
    return max(entries, key=lambda e: (e.created_at_ms, e.backup_id))


async def _chosen_backup(
    host: HostTarget,
    wallet_id: str,
    public_key: bytes,
    epoch: int | None,
    party_id: int | None,
    backup_id: str | None,
) -> tuple[BackupBlob, int]:
    if epoch is None:
        stub = host_stub(host)
        request = host_pb2.GetWalletRequest(wallet_id=wallet_id)
        wallet: host_pb2.Wallet = await _call(
            "GetWallet", lambda: stub.GetWallet(request, timeout=_RPC_TIMEOUT_S)
        )
        if wallet.public_key != public_key:
            raise ShareMismatchError("public key")
        epoch = wallet.epoch
    if backup_id is None:
        backup_id = (await find_backup(host, wallet_id, epoch=epoch, party_id=party_id)).backup_id
    return await get_backup(host, wallet_id, backup_id), epoch


@sdk_boundary
async def recover_from_backup(
    host: HostTarget,
    *,
    wallet_id: str,
    public_key: bytes,
    epoch: int | None = None,
    party_id: int | None = None,
    backup_id: str | None = None,
    passcode: Passcode | None = None,
    key: bytes | None = None,
    insecure_allow_weak_kdf: bool = False,
) -> KeyShare:
    """Fetch a backup from the host and decrypt its key share (either backup kind).

    Arguments:
        host: a channel to the host, or its stub.
        wallet_id: the wallet.
        public_key: the wallet's public key (33 bytes; ed25519: 32) as the caller knows it.
        epoch: the share's epoch; None takes the host's current one (checked
            to be of ``public_key``).
        party_id: the party to recover; None if only one party has backups.
        backup_id: a specific backup; None takes the newest matching one.
        passcode, key: exactly one, as the backup was made.
        insecure_allow_weak_kdf: accept weak Argon2id parameters (tests only).

    Returns:
        The validated key share.

    Raises:
        NoBackupError: nothing to recover.
        ShareMismatchError: the host's backup is not of this wallet, key,
            epoch or party.
        DecryptionError: wrong passcode or key, or tampered with.
        WalletError: the host failed.
    """
    backup, epoch = await _chosen_backup(host, wallet_id, public_key, epoch, party_id, backup_id)
    options: dict[str, Any] = {
        "public_key": public_key,
        "epoch": epoch,
        "party_id": party_id,
        "passcode": passcode,
        "key": key,
        "insecure_allow_weak_kdf": insecure_allow_weak_kdf,
    }
    if is_device_backup(backup.blob):
        return _open_device_backup(backup, **options).share
    return recover_share(backup, **options)


@sdk_boundary
async def recover_device(
    host: HostTarget,
    *,
    wallet_id: str,
    public_key: bytes,
    epoch: int | None = None,
    party_id: int | None = None,
    backup_id: str | None = None,
    passcode: Passcode | None = None,
    key: bytes | None = None,
    insecure_allow_weak_kdf: bool = False,
) -> RecoveredDevice:
    """Like :func:`recover_from_backup`, for a device backup: the share and its identity.

    Raises:
        ShareFormatError: the backup holds a share without its identity.
        Others: as :func:`recover_from_backup`.
    """
    backup, epoch = await _chosen_backup(host, wallet_id, public_key, epoch, party_id, backup_id)
    return _open_device_backup(
        backup,
        public_key=public_key,
        epoch=epoch,
        party_id=party_id,
        passcode=passcode,
        key=key,
        insecure_allow_weak_kdf=insecure_allow_weak_kdf,
    )


@sdk_boundary
async def restore_wallet(
    client: WalletClient,
    host: HostTarget,
    recovered: RecoveredDevice,
    *,
    policy_set: PolicySet | None = None,
    allow_raw_digest: bool = False,
) -> Wallet:
    """Rebuild the ``Wallet`` a recovered device signs with, from the host and the attestation.

    The host's keyring (``GetWallet``) must agree with the recovered share
    (scheme, threshold, public key, epoch, party count), every party id must
    derive from its static key, the server party is found by the attested
    party id, and the recovered identity must be the share's party.

    The wallet's policy set is ``policy_set`` if given (e.g. from its policy
    file), else the set the backup carried, else, with the owner key
    recovered, the default set (``client.sdk.default_policy``,
    ``allow_raw_digest`` as the wallet was created with): a backup made
    without the set (or before backups carried it) still restores.

    Returns:
        A wallet holding the recovered share (and owner key, if recovered).

    Raises:
        ShareMismatchError: the host's keyring contradicts the share or identity.
        AttestationError, WalletError: as ``WalletClient.attest`` / the host.
    """
    share, identity = recovered.share, recovered.identity
    server = await client.attest()
    stub = host_stub(host)
    request = host_pb2.GetWalletRequest(wallet_id=recovered.wallet_id)
    reply: host_pb2.Wallet = await _call(
        "GetWallet", lambda: stub.GetWallet(request, timeout=_RPC_TIMEOUT_S)
    )
    if ceremony_pb2.Scheme.Name(reply.scheme) != SCHEMES[share.scheme]:
        raise ShareMismatchError("scheme")
    if (reply.public_key, reply.epoch) != (share.public_key, share.epoch):
        raise ShareMismatchError("public key or epoch")
    if (reply.threshold, len(reply.parties)) != (share.threshold, share.parties):
        raise ShareMismatchError("keyring")
    parties = [
        ceremony_pb2.Party(party_id=p.party_id, static_key=p.static_key) for p in reply.parties
    ]
    for party in parties:
        try:
            derived = party_id_of(bytes(party.static_key))
        except InputError as e:
            raise ShareMismatchError("party static key") from e
        if derived != party.party_id:
            raise ShareMismatchError("party id")
    ids = [p.party_id for p in parties]
    # None when a reshare moved the keyring off the server share.
    server_index = ids.index(server.party.party_id) if server.party.party_id in ids else None
    if ids[share.party_id] != identity.party_id or share.party_id == server_index:
        raise ShareMismatchError("party identity")
    # The parties' ChillDKG host keys are not stored at the host; the two this
    # client speaks for come from the attestation and the recovered identity.
    if server_index is not None:
        parties[server_index] = server.party
    parties[share.party_id] = identity.party
    if policy_set is None:
        policy_set = recovered.policy_set
    if policy_set is None and recovered.owner_key is not None:
        policy_set = default_policy_set(
            recovered.wallet_id, recovered.owner_key, allow_raw_digest=allow_raw_digest
        )
    return Wallet(
        recovered.wallet_id, share.scheme, share.threshold, parties, server_index,
        share.public_key, share.epoch, {share.party_id: share}, recovered.owner_key,
        None if policy_set is None else replace(policy_set, wallet_id=recovered.wallet_id),
    )  # fmt: skip


### Offline export: the key from backup shares, with no host, relay or server share


@dataclass(frozen=True)
class ExportedKey:
    """A private key rebuilt offline, and what it belongs to.

    Attributes:
        wallet_id: the wallet the share files name.
        public_key: the keyring's public key (33 bytes; ed25519: 32).
        parties: the party indices whose shares were combined.
        private_key: the private key, 32 bytes (ed25519: the 64-byte expanded secret;
            a keyring holds no seed); never printed.
    """

    wallet_id: str
    public_key: bytes
    parties: tuple[int, ...]
    private_key: bytes = field(repr=False)


@sdk_boundary
def offline_export(shares: Sequence[KeyShare], *, public_key: bytes | None = None) -> bytes:
    """Reconstruct the private key from key shares alone (e.g. decrypted backups).

    Arguments:
        shares: key shares of one keyring and epoch, distinct parties, at least
            the threshold (the server share is not needed: any t shares do).
        public_key: the wallet's public key (33 bytes; ed25519: 32) as the caller knows it
            (e.g. from its address); checked when given.

    Returns:
        The 32-byte private key, checked against the keyring's public key and
        every other party's public share (``tss.export.offline_export``).

    Raises:
        InvalidInput: too few shares, repeated parties, shares of different
            keyrings or epochs, or shares inconsistent with their keyring (a
            corrupted backup).
        ShareMismatchError: the shares are of another key than ``public_key``.
    """
    private_key = _reconstruct(shares)
    if public_key is not None and shares[0].public_key != public_key:
        raise ShareMismatchError("public key")
    return private_key


@sdk_boundary
def offline_export_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    passcode: Passcode | None = None,
    key: bytes | None = None,
    public_key: bytes | None = None,
    insecure_allow_weak_kdf: bool = False,
) -> ExportedKey:
    """Reconstruct the private key from share files (``client.storage.shares``), offline.

    Arguments:
        paths: share files of one wallet and epoch (binary or armoured), at
            least the threshold, e.g. the ``party-<i>.share`` files of a
            ``shardkeep wallet`` state directory.
        passcode, key: what the files are encrypted with (one for all).
        public_key: the wallet's public key (33 bytes; ed25519: 32) as the caller knows it.
        insecure_allow_weak_kdf: accept weak Argon2id parameters (tests only).

    Returns:
        The key and the wallet it belongs to.

    Raises:
        DecryptionError: wrong passcode or key, or a tampered file.
        ShareFormatError: a file that is not a share container.
        ShareMismatchError: files of different wallets, or of another key
            than ``public_key``.
        InvalidInput: as ``offline_export``.
        OSError: a file cannot be read.
    """
    if not paths:
        raise InvalidInput("no share files given")
    opened = [
        read_share_file(
            path, passcode=passcode, key=key, insecure_allow_weak_kdf=insecure_allow_weak_kdf
        )
        for path in paths
    ]
    wallet_id = opened[0].metadata.wallet_id
    if any(o.metadata.wallet_id != wallet_id for o in opened):
        raise ShareMismatchError("wallet id")
    shares = [o.share for o in opened]
    private_key = offline_export(shares, public_key=public_key)
    return ExportedKey(
        wallet_id, shares[0].public_key, tuple(s.party_id for s in shares), private_key
    )
