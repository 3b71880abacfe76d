"""The ``shardkeep wallet`` state directory: wallets, their local key shares and party identities.

Layout (one directory per wallet, named by a hash of its id, since wallet ids
may contain "/")::

    STATE/wallets/<sha256(wallet_id)[:32]>/
        wallet.json           the committed epoch's public description: id, scheme,
                              threshold, epoch, public key, parties, server index,
                              local parties, the policy set in force (a policy
                              file's document; absent for a wallet made before sets)
        pending.json          a key change in flight (optional): the new epoch's
                              description and what resuming it needs (public data)
        epoch-<N>/
            party-<i>.share     party i's key share of epoch N: a client.storage.shares
                                share file, passcode-encrypted (Argon2id + AES-256-GCM)
            party-<i>.identity  party i's identity (and the owner key), sealed
                                under a key derived from its share
                                (client.sdk.device_backup.seal_identity), CBOR

So everything secret is behind the passcode, through the share; the JSON files
hold only what the host and relay know anyway. Files are written atomically
with mode 0600.

Crash safety: a save never touches a file the committed epoch needs. The new
epoch's files go to their own ``epoch-<N>`` directory first; then one atomic
rename decides: ``pending.json`` (a key change that may still fail) or
``wallet.json`` (the commit point). A crash, a full disk or an interrupt at any
step leaves the previous ``wallet.json`` and its epoch's files as they were.
Old epochs' files are deleted only after a newer epoch is committed, and the
one before the current epoch is kept (the host keeps it signable until every
party has the new one). Both steps of every save, encryption and file writing,
go through :class:`StateIO`, so tests can fail either.

Wallets written before epoch directories existed keep their files at the top
level; they are read there and moved into ``epoch-<N>`` by the next save.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.sdk.device_backup import open_identity, seal_identity
from client.sdk.key_change import PendingChange
from client.sdk.party import PartyIdentity
from client.sdk.policy_files import policy_document, policy_set_of
from client.sdk.wallet import Wallet
from client.storage.errors import (
    DecryptionError,
    ShareFormatError,
    ShareMismatchError,
    StorageError,
)
from client.storage.shares import (
    DEFAULT_ARGON2_PARAMS,
    Argon2Params,
    Passcode,
    encrypt_share,
    inspect_share,
    read_share_file,
    write_file_atomically,
)
from shardkeep.policyset import InvalidPolicy, PolicySet
from shardkeep.v1 import ceremony_pb2
from tss.errors import InputError
from tss.keyshare import SCHEMES, KeyShare

__all__ = [
    # Functions
    "wallet_dir",
    "save_wallet",
    "save_pending",
    "commit_pending",
    "discard_pending",
    "prune_epochs",
    "load_description",
    "load_pending_description",
    "load_wallet",
    "load_pending",
    "list_wallets",
    "change_passcode",
    # Types
    "DamagedWallet",
    "StateIO",
    "StateKeyStore",
    "WalletDescription",
    "PendingDescription",
    "LoadedWallet",
    # Constants
    "DESCRIPTION_FORMAT",
    "PENDING_FORMAT",
    "REAL_IO",
]

DESCRIPTION_FORMAT: Final = "shardkeep-cli-wallet"
PENDING_FORMAT: Final = "shardkeep-cli-pending"
_VERSION: Final = 1
_PENDING: Final = "pending.json"
_MAX_IDENTITY_BYTES: Final = 4096


def wallet_dir(state: Path, wallet_id: str) -> Path:
    """The wallet's directory under the state directory."""
    return state / "wallets" / hashlib.sha256(wallet_id.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class WalletDescription:
    """What ``wallet.json`` says (public data only)."""

    wallet_id: str
    scheme: str
    threshold: int
    epoch: int
    public_key: bytes
    server_index: int | None
    parties: tuple[ceremony_pb2.Party, ...]
    local: tuple[int, ...]
    policy_set: PolicySet | None = None

    def to_json(self) -> dict[str, Any]:
        policy = {} if self.policy_set is None else {"policy": policy_document(self.policy_set)}
        return {
            **policy,
            "format": DESCRIPTION_FORMAT,
            "version": _VERSION,
            "wallet_id": self.wallet_id,
            "scheme": self.scheme,
            "threshold": self.threshold,
            "epoch": self.epoch,
            "public_key": self.public_key.hex(),
            "server_index": self.server_index,
            "parties": [
                {
                    "party_id": p.party_id,
                    "static_key": bytes(p.static_key).hex(),
                    "host_pubkey": bytes(p.host_pubkey).hex(),
                }
                for p in self.parties
            ],
            "local": list(self.local),
        }

    @staticmethod
    def from_json(data: object) -> WalletDescription:
        """Parse ``wallet.json`` (raises ShareFormatError naming the bad field)."""
        if not isinstance(data, dict) or data.get("format") != DESCRIPTION_FORMAT:
            raise ShareFormatError("format", f"not a {DESCRIPTION_FORMAT} file")
        if data.get("version") != _VERSION:
            raise ShareFormatError("version", "unsupported wallet description version")
        try:
            parties = tuple(
                ceremony_pb2.Party(
                    party_id=str(p["party_id"]),
                    static_key=bytes.fromhex(p["static_key"]),
                    host_pubkey=bytes.fromhex(p["host_pubkey"]),
                )
                for p in data["parties"]
            )
            description = WalletDescription(
                wallet_id=str(data["wallet_id"]),
                scheme=str(data["scheme"]),
                threshold=int(data["threshold"]),
                epoch=int(data["epoch"]),
                public_key=bytes.fromhex(data["public_key"]),
                server_index=None if data["server_index"] is None else int(data["server_index"]),
                parties=parties,
                local=tuple(int(i) for i in data["local"]),
                policy_set=None
                if data.get("policy") is None
                else policy_set_of(data["policy"], str(data["wallet_id"])),
            )
        except (KeyError, TypeError, ValueError, InvalidPolicy) as e:
            raise ShareFormatError("wallet.json", "missing or malformed field") from e
        server = description.server_index
        if description.scheme not in SCHEMES or (
            server is not None and not 0 <= server < len(parties)
        ):
            raise ShareFormatError("wallet.json", "bad scheme or server index")
        if any(not 0 <= i < len(parties) or i == server for i in description.local):
            raise ShareFormatError("local", "not device party indices")
        return description


@dataclass(frozen=True)
class LoadedWallet:
    """A wallet read back from the state, ready for ``WalletClient``."""

    wallet: Wallet
    devices: dict[int, PartyIdentity] = field(repr=False)


def _encrypt(
    share: KeyShare, wallet_id: str, passcode: Passcode, params: Argon2Params, weak: bool
) -> bytes:
    return encrypt_share(
        share, passcode, wallet_id=wallet_id, params=params, insecure_allow_weak_kdf=weak
    )


@dataclass(frozen=True)
class StateIO:
    """The two steps of every save: encrypting a share (Argon2id) and writing a file.

    The defaults are the real ones; tests replace either to fail it (ENOSPC, an
    interrupt in the middle of the key derivation).
    """

    encrypt: Callable[[KeyShare, str, Passcode, Argon2Params, bool], bytes] = _encrypt
    write: Callable[[Path, bytes], None] = write_file_atomically


REAL_IO: Final = StateIO()


def _epoch_dir(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch}"


def _party_file(directory: Path, epoch: int, index: int, kind: str) -> Path:
    """Where party ``index``'s ``kind`` file of ``epoch`` is (top level for older wallets)."""
    path = _epoch_dir(directory, epoch) / f"party-{index}.{kind}"
    legacy = directory / f"party-{index}.{kind}"
    return legacy if not path.exists() and legacy.exists() else path


def _write_epoch_files(
    directory: Path,
    wallet: Wallet,
    devices: dict[int, PartyIdentity],
    passcode: Passcode,
    params: Argon2Params,
    weak: bool,
    io: StateIO,
) -> None:
    """Write each local party's share and sealed identity into the wallet's epoch directory."""
    if set(devices) != set(wallet.shares):
        raise InputError("every local share needs its party identity")
    target = _epoch_dir(directory, wallet.epoch)
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    for index, share in sorted(wallet.shares.items()):
        if share.epoch != wallet.epoch:
            raise InputError("a share of another epoch than the wallet's")
        container = io.encrypt(share, wallet.wallet_id, passcode, params, weak)
        io.write(target / f"party-{index}.share", container)
        sealed = seal_identity(
            devices[index], share, wallet_id=wallet.wallet_id, owner_key=wallet.owner_key,
            random=secrets.token_bytes,
        )  # fmt: skip
        io.write(target / f"party-{index}.identity", cbor2.dumps(sealed))


def _description_of(wallet: Wallet) -> WalletDescription:
    return WalletDescription(
        wallet.wallet_id, wallet.scheme, wallet.threshold, wallet.epoch, wallet.public_key,
        wallet.server_index, tuple(wallet.parties), tuple(sorted(wallet.shares)),
        wallet.policy_set,
    )  # fmt: skip


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def save_wallet(
    state: Path,
    wallet: Wallet,
    devices: dict[int, PartyIdentity],
    passcode: Passcode,
    *,
    params: Argon2Params = DEFAULT_ARGON2_PARAMS,
    insecure_allow_weak_kdf: bool = False,
    io: StateIO = REAL_IO,
) -> Path:
    """Write a wallet's shares and identities, then commit its description; return its directory.

    The commit point is the atomic replacement of ``wallet.json``: before it,
    the previously committed epoch (if any) is what loads; after it, this one.
    A pending key change at this epoch or below is settled by the commit.

    Raises:
        InputError: a local share without its identity, or of another epoch.
        OSError: the file system failed (the committed wallet is as it was).
    """
    directory = wallet_dir(state, wallet.wallet_id)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_epoch_files(directory, wallet, devices, passcode, params, insecure_allow_weak_kdf, io)
    io.write(directory / "wallet.json", _json_bytes(_description_of(wallet).to_json()))
    pending = _read_pending(directory)
    if pending is not None and pending.wallet.epoch <= wallet.epoch:
        (directory / _PENDING).unlink(missing_ok=True)
    prune_epochs(state, wallet.wallet_id)
    return directory


@dataclass(frozen=True)
class PendingDescription:
    """What ``pending.json`` says: the new epoch's description and how to resume it.

    Attributes:
        wallet: the wallet as it will be once the new epoch is committed.
        change: the key change's public record, as the SDK gives it
            (``client.sdk.key_change.PendingChange.to_json``).
    """

    wallet: WalletDescription
    change: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PENDING_FORMAT,
            "version": _VERSION,
            "wallet": self.wallet.to_json(),
            "change": self.change,
        }

    @staticmethod
    def from_json(data: object) -> PendingDescription:
        """Parse ``pending.json`` (raises ShareFormatError naming the bad field)."""
        if not isinstance(data, dict) or data.get("format") != PENDING_FORMAT:
            raise ShareFormatError("format", f"not a {PENDING_FORMAT} file")
        if data.get("version") != _VERSION or not isinstance(data.get("change"), dict):
            raise ShareFormatError("pending.json", "unsupported version or no change record")
        return PendingDescription(WalletDescription.from_json(data.get("wallet")), data["change"])


def save_pending(
    state: Path,
    wallet: Wallet,
    devices: dict[int, PartyIdentity],
    passcode: Passcode,
    change: dict[str, Any],
    *,
    params: Argon2Params = DEFAULT_ARGON2_PARAMS,
    insecure_allow_weak_kdf: bool = False,
    io: StateIO = REAL_IO,
) -> None:
    """Save a key change's new shares as *pending*, beside the committed epoch.

    Called before the local parties release their agreement: once this
    returns, the new shares survive a crash, and :func:`commit_pending` or
    :func:`discard_pending` settles them later. The committed epoch's files
    and ``wallet.json`` are not touched.

    Arguments:
        wallet: the wallet at the new epoch with the new local shares.
        devices: the new local parties' identities by new index.
        change: the key change's public record (stored as given).

    Raises:
        InputError: a local share without its identity, the new epoch not
            above the committed one, or a pending change of another epoch.
        OSError: the file system failed (the committed wallet is as it was).
    """
    directory = wallet_dir(state, wallet.wallet_id)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    committed = _read_committed(directory)
    if committed is not None and wallet.epoch <= committed.epoch:
        raise InputError("a pending epoch must come after the committed one")
    _write_epoch_files(directory, wallet, devices, passcode, params, insecure_allow_weak_kdf, io)
    pending = PendingDescription(_description_of(wallet), change)
    io.write(directory / _PENDING, _json_bytes(pending.to_json()))


def load_pending_description(state: Path, wallet_id: str) -> PendingDescription | None:
    """The wallet's unsettled key change, if any (one the committed epoch settled is dropped).

    Raises:
        ShareFormatError: a malformed ``pending.json``.
    """
    directory = wallet_dir(state, wallet_id)
    pending = _read_pending(directory)
    if pending is None:
        return None
    committed = _read_committed(directory)
    if pending.wallet.wallet_id != wallet_id:
        raise ShareMismatchError("wallet id")
    if committed is not None and pending.wallet.epoch <= committed.epoch:
        # A crash between committing and removing pending.json: already settled.
        (directory / _PENDING).unlink(missing_ok=True)
        return None
    return pending


def commit_pending(state: Path, wallet_id: str, *, io: StateIO = REAL_IO) -> WalletDescription:
    """Make the pending epoch the committed one (after its certificate was verified).

    Raises:
        FileNotFoundError: nothing is pending.
        OSError: the file system failed (the pending change stays pending).
    """
    directory = wallet_dir(state, wallet_id)
    pending = load_pending_description(state, wallet_id)
    if pending is None:
        raise FileNotFoundError(f"no pending key change for wallet {wallet_id}")
    io.write(directory / "wallet.json", _json_bytes(pending.wallet.to_json()))
    (directory / _PENDING).unlink(missing_ok=True)
    prune_epochs(state, wallet_id)
    return pending.wallet


def discard_pending(state: Path, wallet_id: str) -> None:
    """Drop the pending key change and its shares (it failed); the committed epoch stays.

    A key generation or import that never committed leaves no wallet behind.
    """
    directory = wallet_dir(state, wallet_id)
    pending = _read_pending(directory)
    (directory / _PENDING).unlink(missing_ok=True)  # the decision; files follow
    committed = _read_committed(directory)
    if committed is None:
        shutil.rmtree(directory, ignore_errors=True)
        return
    if pending is not None and pending.wallet.epoch != committed.epoch:
        shutil.rmtree(_epoch_dir(directory, pending.wallet.epoch), ignore_errors=True)


def prune_epochs(state: Path, wallet_id: str) -> None:
    """Delete the files of epochs older than the one before the committed epoch.

    Kept: the committed epoch, its predecessor (still signable at the host
    until every party has acknowledged the new one) and a pending epoch.
    Files of the older layout (top level) go once their epoch is not kept.
    """
    directory = wallet_dir(state, wallet_id)
    committed = _read_committed(directory)
    if committed is None:
        return
    pending = _read_pending(directory)
    keep = {committed.epoch, committed.epoch - 1}
    if pending is not None:
        keep.add(pending.wallet.epoch)
    for path in directory.glob("epoch-*"):
        suffix = path.name.removeprefix("epoch-")
        if path.is_dir() and suffix.isdigit() and int(suffix) not in keep:
            shutil.rmtree(path, ignore_errors=True)
    legacy = sorted(directory.glob("party-*.share"))
    if legacy and _legacy_epoch(legacy[0]) not in keep:
        for path in directory.glob("party-*"):
            path.unlink(missing_ok=True)


def _legacy_epoch(share_file: Path) -> int | None:
    """The epoch a top-level (older layout) share file claims in its clear metadata."""
    try:
        return inspect_share(share_file.read_bytes()).metadata.epoch
    except (OSError, ShareFormatError):
        return None


@dataclass(frozen=True)
class StateKeyStore:
    """The state directory as the SDK's ``client.sdk.key_change.KeyStore`` (passcode-encrypted)."""

    state: Path
    passcode: Passcode = field(repr=False)
    params: Argon2Params = DEFAULT_ARGON2_PARAMS
    insecure_allow_weak_kdf: bool = False
    io: StateIO = REAL_IO

    def save(self, wallet: Wallet, devices: dict[int, PartyIdentity]) -> None:
        save_wallet(
            self.state, wallet, devices, self.passcode, params=self.params,
            insecure_allow_weak_kdf=self.insecure_allow_weak_kdf, io=self.io,
        )  # fmt: skip

    def save_pending(self, change: PendingChange) -> None:
        save_pending(
            self.state, change.wallet, change.devices, self.passcode, change.to_json(),
            params=self.params, insecure_allow_weak_kdf=self.insecure_allow_weak_kdf, io=self.io,
        )  # fmt: skip

    def commit(self, change: PendingChange) -> None:
        pending = load_pending_description(self.state, change.wallet.wallet_id)
        if pending is None or pending.wallet.epoch != change.epoch:
            self.save(change.wallet, change.devices)  # saved elsewhere: write it whole
            return
        commit_pending(self.state, change.wallet.wallet_id, io=self.io)

    def discard(self, change: PendingChange) -> None:
        pending = load_pending_description(self.state, change.wallet.wallet_id)
        if pending is not None and pending.wallet.epoch == change.epoch:
            discard_pending(self.state, change.wallet.wallet_id)

    def load_pending(self, wallet_id: str) -> PendingChange | None:
        """The wallet's saved pending key change, with its decrypted shares, if any.

        Raises:
            DecryptionError, ShareFormatError, ShareMismatchError: as :func:`load_wallet`;
            InputError: a malformed change record.
        """
        found = load_pending(
            self.state, wallet_id, self.passcode,
            insecure_allow_weak_kdf=self.insecure_allow_weak_kdf,
        )  # fmt: skip
        if found is None:
            return None
        loaded, record = found
        return PendingChange.from_json(record, loaded.wallet, loaded.devices)


def _read_committed(directory: Path) -> WalletDescription | None:
    try:
        return WalletDescription.from_json(json.loads((directory / "wallet.json").read_text()))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ShareFormatError("wallet.json", "not JSON") from e


def _read_pending(directory: Path) -> PendingDescription | None:
    try:
        return PendingDescription.from_json(json.loads((directory / _PENDING).read_text()))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ShareFormatError("pending.json", "not JSON") from e


def load_description(state: Path, wallet_id: str) -> WalletDescription:
    """Read a wallet's description.

    Raises:
        FileNotFoundError: no such wallet in the state.
        ShareFormatError: a malformed description, or one of another wallet.
    """
    path = wallet_dir(state, wallet_id) / "wallet.json"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShareFormatError("wallet.json", "not JSON") from e
    description = WalletDescription.from_json(data)
    if description.wallet_id != wallet_id:
        raise ShareMismatchError("wallet id")
    return description


def load_wallet(
    state: Path,
    wallet_id: str,
    passcode: Passcode,
    *,
    parties: Sequence[int] | None = None,
    insecure_allow_weak_kdf: bool = False,
) -> LoadedWallet:
    """Decrypt the committed epoch's local shares (all, or ``parties``) and identities.

    Raises:
        FileNotFoundError: no such wallet or share file.
        InputError: a requested party that is not local.
        DecryptionError: wrong passcode, or a damaged file.
        ShareFormatError, ShareMismatchError: files that do not belong together.
    """
    description = load_description(state, wallet_id)
    return _load(state, description, passcode, parties, insecure_allow_weak_kdf)


def load_pending(
    state: Path, wallet_id: str, passcode: Passcode, *, insecure_allow_weak_kdf: bool = False
) -> tuple[LoadedWallet, dict[str, Any]] | None:
    """Decrypt the pending epoch's local shares; return them with the change record, or None.

    Raises:
        DecryptionError, ShareFormatError, ShareMismatchError: as :func:`load_wallet`.
    """
    pending = load_pending_description(state, wallet_id)
    if pending is None:
        return None
    return _load(state, pending.wallet, passcode, None, insecure_allow_weak_kdf), pending.change


def _load(
    state: Path,
    description: WalletDescription,
    passcode: Passcode,
    parties: Sequence[int] | None,
    weak: bool,
) -> LoadedWallet:
    wallet_id, epoch = description.wallet_id, description.epoch
    chosen = list(description.local) if parties is None else list(parties)
    if not chosen or any(i not in description.local for i in chosen):
        raise InputError(f"local parties of this wallet: {list(description.local)}")
    directory = wallet_dir(state, wallet_id)
    shares: dict[int, KeyShare] = {}
    devices: dict[int, PartyIdentity] = {}
    owner: Ed25519PrivateKey | None = None
    for index in chosen:
        opened = read_share_file(
            _party_file(directory, epoch, index, "share"),
            passcode=passcode,
            insecure_allow_weak_kdf=weak,
        )
        share = opened.share
        if (
            opened.metadata.wallet_id != wallet_id
            or share.party_id != index
            or (share.public_key, share.epoch) != (description.public_key, epoch)
        ):
            raise ShareMismatchError("share file")
        raw = _party_file(directory, epoch, index, "identity").read_bytes()[:_MAX_IDENTITY_BYTES]
        try:
            sealed = cbor2.loads(raw)
        except Exception as e:  # cbor2 raises several types for bad input
            raise ShareFormatError("identity", "not CBOR") from e
        identity, owner_key = open_identity(sealed, share, wallet_id=wallet_id)
        if identity.party_id != description.parties[index].party_id:
            raise ShareMismatchError("party identity")
        shares[index], devices[index] = share, identity
        owner = owner or owner_key
    wallet = Wallet(
        wallet_id, share.scheme, description.threshold, list(description.parties),
        description.server_index, description.public_key, epoch, shares, owner,
        description.policy_set,
    )  # fmt: skip
    return LoadedWallet(wallet, devices)


@dataclass(frozen=True)
class DamagedWallet:
    """A wallet directory that cannot be used as it is, and why (no secret is read)."""

    directory: str  # the directory's name under ``STATE/wallets``
    reason: str
    wallet_id: str | None = None  # when its description is readable

    def __str__(self) -> str:
        return f"{self.wallet_id or self.directory} ({self.reason})"


def list_wallets(state: Path) -> list[WalletDescription | DamagedWallet]:
    """Every wallet in the state, by wallet id, then the damaged ones by directory.

    A wallet is damaged when its ``wallet.json`` is unreadable or belongs
    elsewhere, or a local party's share file is missing, is no share container
    or names another wallet or epoch in its clear metadata. Only public data is
    read; a wrong passcode or a tampered ciphertext shows when the share is used.
    A directory holding only a pending key change (a keygen in flight) is not
    listed.
    """
    wallets: list[WalletDescription] = []
    damaged: list[DamagedWallet] = []
    for directory in sorted((state / "wallets").glob("*/")):
        found = _examine(directory)
        if isinstance(found, DamagedWallet):
            damaged.append(found)
        elif found is not None:
            wallets.append(found)
    return [*sorted(wallets, key=lambda d: d.wallet_id), *damaged]


def _examine(directory: Path) -> WalletDescription | DamagedWallet | None:
    try:
        description = _read_committed(directory)
    except (OSError, ValueError, StorageError) as e:
        return DamagedWallet(directory.name, f"wallet.json unreadable ({_reason(e)})")
    if description is None:
        return None
    wallet_id = description.wallet_id
    if directory.name != wallet_dir(Path(), wallet_id).name:
        return DamagedWallet(directory.name, "wallet.json names another wallet", wallet_id)
    for index in description.local:
        path = _party_file(directory, description.epoch, index, "share")
        try:
            metadata = inspect_share(path.read_bytes()).metadata
        except FileNotFoundError:
            reason = f"party {index}'s share file is missing"
            return DamagedWallet(directory.name, reason, wallet_id)
        except (OSError, StorageError) as e:
            return DamagedWallet(directory.name, f"party {index}'s share: {_reason(e)}", wallet_id)
        if (metadata.wallet_id, metadata.epoch) != (wallet_id, description.epoch):
            reason = f"party {index}'s share belongs to another wallet or epoch"
            return DamagedWallet(directory.name, reason, wallet_id)
        if not _party_file(directory, description.epoch, index, "identity").is_file():
            reason = f"party {index}'s identity file is missing"
            return DamagedWallet(directory.name, reason, wallet_id)
    return description


def _reason(error: BaseException) -> str:
    if isinstance(error, ShareFormatError):
        return error.problem
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return str(error) or type(error).__name__


def change_passcode(
    state: Path,
    wallet_id: str,
    old: Passcode,
    new: Passcode,
    *,
    params: Argon2Params = DEFAULT_ARGON2_PARAMS,
    insecure_allow_weak_kdf: bool = False,
    io: StateIO = REAL_IO,
) -> tuple[int, ...]:
    """Re-encrypt the committed epoch's local shares under ``new``; return the parties changed.

    Every new container is made (the slow Argon2id step) before the first file is
    replaced, and each file is replaced atomically. An interrupted change can still
    leave some shares under each passcode; running it again with the same two
    passcodes finishes it, since a share that opens under ``new`` only is left as it
    is. The identity files are sealed under a key derived from the share, not the
    passcode, so they stay as they are.

    Raises:
        FileNotFoundError: no such wallet.
        InputError: a key change of the wallet is pending.
        DecryptionError: a share opens under neither passcode.
        ShareFormatError, ShareMismatchError: files that do not belong together.
    """
    description = load_description(state, wallet_id)
    directory = wallet_dir(state, wallet_id)
    if _read_pending(directory) is not None:
        raise InputError("a key change of this wallet is pending; change the passcode after it")
    weak = insecure_allow_weak_kdf
    replaced: dict[int, tuple[Path, bytes]] = {}
    for index in description.local:
        path = _party_file(directory, description.epoch, index, "share")
        try:
            opened = read_share_file(path, passcode=old, insecure_allow_weak_kdf=weak)
        except DecryptionError:
            read_share_file(path, passcode=new, insecure_allow_weak_kdf=weak)  # done before
            continue
        share = opened.share
        if (opened.metadata.wallet_id, share.party_id, share.epoch) != (
            wallet_id, index, description.epoch,
        ) or share.public_key != description.public_key:  # fmt: skip
            raise ShareMismatchError("share file")
        replaced[index] = path, io.encrypt(share, wallet_id, new, params, weak)
    for path, container in replaced.values():
        io.write(path, container)
    return tuple(replaced)
