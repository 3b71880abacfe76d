"""The ``shardkeep wallet`` state directory: wallets, their local key shares and party identities.

Layout (one directory per wallet, named by a hash of its id, since wallet ids
may contain "/")::

    STATE/wallets/<sha256(wallet_id)[:32]>/
        wallet.json           public description: id, scheme, threshold, epoch,
                              public key, parties, server index, local parties
        party-<i>.share       party i's key share: a client.storage share file,
                              passcode-encrypted (Argon2id + AES-256-GCM)
        party-<i>.identity    party i's identity (and the owner key), sealed
                              under a key derived from its share
                              (client.device_backup.seal_identity), CBOR

So everything secret is behind the passcode, through the share; ``wallet.json``
holds only what the host and relay know anyway. Files are written atomically
with mode 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.device_backup import open_identity, seal_identity
from client.party import PartyIdentity
from client.storage import (
    DEFAULT_ARGON2_PARAMS,
    Argon2Params,
    Passcode,
    read_share_file,
    write_file_atomically,
    write_share_file,
)
from client.storage_errors import ShareFormatError, ShareMismatchError
from client.wallet import Wallet
from shardkeep.v1 import ceremony_pb2
from tss.errors import InputError
from tss.keyshare import SCHEMES, KeyShare

__all__ = [
    # Functions
    "wallet_dir",
    "save_wallet",
    "save_shares",
    "load_description",
    "load_wallet",
    "list_wallets",
    "remove_other_parties",
    # Types
    "WalletDescription",
    "LoadedWallet",
    # Constants
    "DESCRIPTION_FORMAT",
]

DESCRIPTION_FORMAT: Final = "shardkeep-cli-wallet"
_VERSION: Final = 1
_MAX_IDENTITY_BYTES: Final = 4096


def remove_other_parties(state: Path, wallet_id: str, keep: Iterable[int]) -> None:
    """Delete the share and identity files of local parties not in ``keep`` (after a reshare)."""
    kept = {f"party-{i}.{kind}" for i in keep for kind in ("share", "identity")}
    for path in wallet_dir(state, wallet_id).glob("party-*"):
        if path.name not in kept:
            path.unlink()


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
    # Parties whose DKLs23 pair with the server is burned: sent with every
    # sign request, so an enclave restart cannot unburn them.
    burned_pairs: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
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
            "burned_pairs": list(self.burned_pairs),
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
                burned_pairs=tuple(int(i) for i in data.get("burned_pairs", [])),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ShareFormatError("wallet.json", "missing or malformed field") from e
        server = description.server_index
        if description.scheme not in SCHEMES or (
            server is not None and not 0 <= server < len(parties)
        ):
            raise ShareFormatError("wallet.json", "bad scheme or server index")
        if any(not 0 <= i < len(parties) or i == server for i in description.local):
            raise ShareFormatError("local", "not device party indices")
        if any(not 0 <= i < len(parties) or i == server for i in description.burned_pairs):
            raise ShareFormatError("burned_pairs", "not device party indices")
        return description


@dataclass(frozen=True)
class LoadedWallet:
    """A wallet read back from the state, ready for ``WalletClient``."""

    wallet: Wallet
    devices: dict[int, PartyIdentity] = field(repr=False)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file_atomically(path, data)


def save_shares(
    state: Path,
    wallet: Wallet,
    devices: dict[int, PartyIdentity],
    passcode: Passcode,
    *,
    params: Argon2Params = DEFAULT_ARGON2_PARAMS,
    insecure_allow_weak_kdf: bool = False,
) -> None:
    """Write each local party's share file and sealed identity (replacing older ones)."""
    directory = wallet_dir(state, wallet.wallet_id)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for index, share in sorted(wallet.shares.items()):
        write_share_file(
            directory / f"party-{index}.share",
            share,
            wallet_id=wallet.wallet_id,
            passcode=passcode,
            params=params,
            insecure_allow_weak_kdf=insecure_allow_weak_kdf,
            overwrite=True,
        )
        sealed = seal_identity(
            devices[index], share, wallet_id=wallet.wallet_id, owner_key=wallet.owner_key,
            random=secrets.token_bytes,
        )  # fmt: skip
        _atomic_write(directory / f"party-{index}.identity", cbor2.dumps(sealed))


def save_wallet(
    state: Path,
    wallet: Wallet,
    devices: dict[int, PartyIdentity],
    passcode: Passcode,
    *,
    params: Argon2Params = DEFAULT_ARGON2_PARAMS,
    insecure_allow_weak_kdf: bool = False,
) -> Path:
    """Write a wallet's description, share files and identities; return its directory.

    Raises:
        InputError: a local share without its identity.
    """
    if set(devices) != set(wallet.shares):
        raise InputError("every local share needs its party identity")
    save_shares(
        state, wallet, devices, passcode, params=params,
        insecure_allow_weak_kdf=insecure_allow_weak_kdf,
    )  # fmt: skip
    description = WalletDescription(
        wallet.wallet_id, wallet.scheme, wallet.threshold, wallet.epoch, wallet.public_key,
        wallet.server_index, tuple(wallet.parties), tuple(sorted(wallet.shares)),
        tuple(sorted(wallet.burned_pairs)),
    )  # fmt: skip
    directory = wallet_dir(state, wallet.wallet_id)
    text = json.dumps(description.to_json(), indent=2, sort_keys=True) + "\n"
    _atomic_write(directory / "wallet.json", text.encode())
    return directory


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
    """Decrypt the local shares (all, or ``parties``) and identities of a wallet.

    Raises:
        FileNotFoundError: no such wallet or share file.
        InputError: a requested party that is not local.
        DecryptionError: wrong passcode, or a damaged file.
        ShareFormatError, ShareMismatchError: files that do not belong together.
    """
    description = load_description(state, wallet_id)
    chosen = list(description.local) if parties is None else list(parties)
    if not chosen or any(i not in description.local for i in chosen):
        raise InputError(f"local parties of this wallet: {list(description.local)}")
    directory = wallet_dir(state, wallet_id)
    shares: dict[int, KeyShare] = {}
    devices: dict[int, PartyIdentity] = {}
    owner: Ed25519PrivateKey | None = None
    for index in chosen:
        opened = read_share_file(
            directory / f"party-{index}.share",
            passcode=passcode,
            insecure_allow_weak_kdf=insecure_allow_weak_kdf,
        )
        share = opened.share
        if (
            opened.metadata.wallet_id != wallet_id
            or share.party_id != index
            or (share.public_key, share.epoch) != (description.public_key, description.epoch)
        ):
            raise ShareMismatchError("share file")
        raw = (directory / f"party-{index}.identity").read_bytes()[:_MAX_IDENTITY_BYTES]
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
        description.server_index, description.public_key, description.epoch, shares, owner,
        burned_pairs=frozenset(description.burned_pairs),
    )  # fmt: skip
    return LoadedWallet(wallet, devices)


def list_wallets(state: Path) -> Iterable[WalletDescription]:
    """Every readable wallet description in the state, by wallet id."""
    found = []
    for path in sorted((state / "wallets").glob("*/wallet.json")):
        with contextlib.suppress(OSError, ValueError, ShareFormatError):
            found.append(WalletDescription.from_json(json.loads(path.read_text())))
    return sorted(found, key=lambda d: d.wallet_id)
