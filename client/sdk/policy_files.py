"""Policy sets and API keys as files: what the CLI reads and writes.

A policy file is JSON, the owner's own record of the set in force (approvals
sign its hash, so the file is what the approver checks the enclave against)::

    {"version": 1,
     "authenticators": [{"name": "ops", "kind": "p256", "public_key": "02ab...",
                         "tags": ["admin"], "rp_id": "", "origin": ""}],
     "policies": [{"name": "friends", "effect": "allow",
                   "condition": "activity.kind == 'SIGN_EVM_TRANSACTION' && ...",
                   "consensus": {"min_approvals": 1, "tag": ""}}]}

The wallet id and epoch are not in the file: the SDK fills them in. An API
key file is JSON with the key's name, kind and PKCS#8 private key (PEM),
written with mode 0600 and never over an existing file. A passkey file (a
software passkey, ``client.sdk.approvals.SoftwarePasskey``) is JSON too::

    {"name": "phone", "kind": "webauthn-es256", "rp_id": "wallet.example",
     "origin": "https://wallet.example", "sign_count": 7, "private_key": "-----BEGIN..."}

Its signature counter is written back (atomically and durably, mode 0600) before each
approval leaves, so the next one counts higher, as WebAuthn §6.1.1 wants of an
authenticator: the enclave refuses a counter that did not increase.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from client.errors import sdk_boundary
from client.sdk.approvals import ApiKey, SoftwarePasskey
from shardkeep.approvals import Approval
from shardkeep.policy_documents import (
    authenticator_entry,
    authenticator_from_entry,
    policy_entry,
    policy_from_entry,
)
from shardkeep.policyset import InvalidPolicy, PolicySet

__all__ = [
    "PasskeyFile",
    "load_approver",
    "load_passkey",
    "save_passkey",
    "load_policy_file",
    "policy_set_of",
    "policy_document",
    "save_api_key",
    "load_api_key",
]

MAX_FILE_BYTES = 1 << 20
UNBOUND_WALLET = "unbound"  # stands in until the SDK names the wallet


def _read_json(path: Path, what: str) -> Any:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidPolicy("", f"{path} is too large for {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidPolicy("", f"{path} is not JSON ({what})") from e


@sdk_boundary
def load_policy_file(path: Path) -> PolicySet:
    """Read a policy file (module docstring) as a policy set not yet bound to a wallet.

    Raises:
        InvalidPolicy: not JSON, a missing or mistyped field, or a set
            ``PolicySet`` refuses. Conditions are compiled by the enclave.
        OSError: the file cannot be read.
    """
    try:
        return policy_set_of(_read_json(path, "a policy file"))
    except InvalidPolicy as e:
        raise InvalidPolicy(e.name, f"{path}: {e}") from e


@sdk_boundary
def policy_set_of(document: Any, wallet_id: str = UNBOUND_WALLET) -> PolicySet:
    """A policy file's document (module docstring) as the policy set of ``wallet_id`` at epoch 0.

    Raises:
        InvalidPolicy: a missing or mistyped field, or a set ``PolicySet`` refuses.
    """
    try:
        authenticators = tuple(authenticator_from_entry(a) for a in document["authenticators"])
        policies = tuple(policy_from_entry(p) for p in document["policies"])
        version = int(document["version"])
    except InvalidPolicy:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InvalidPolicy("", f"a missing or mistyped field ({e!r})") from e
    return PolicySet(wallet_id, 0, version, authenticators, policies)


@sdk_boundary
def policy_document(policy_set: PolicySet) -> dict[str, Any]:
    """The JSON document of a policy set (the inverse of ``load_policy_file``)."""
    return {
        "version": policy_set.version,
        "authenticators": [authenticator_entry(a) for a in policy_set.authenticators],
        "policies": [policy_entry(p) for p in policy_set.policies],
    }


@sdk_boundary
def save_api_key(key: ApiKey, path: Path) -> None:
    """Write ``key`` to a new file readable by its owner only."""
    pem = key.private_key().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"name": key.name, "kind": key.kind, "private_key": pem.decode()}, f)


@sdk_boundary
def load_api_key(path: Path) -> ApiKey:
    """Read an API key file.

    Raises:
        InvalidPolicy: not an API key file (the key's bytes are never shown).
    """
    document = _read_json(path, "an API key file")
    try:
        key = load_pem_private_key(document["private_key"].encode(), password=None)
        name, kind = document["name"], document["kind"]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InvalidPolicy("", f"{path} is not an API key file") from e
    if kind == "ed25519" and isinstance(key, Ed25519PrivateKey):
        return ApiKey(name, "ed25519", key)
    if kind == "p256" and isinstance(key, ec.EllipticCurvePrivateKey):
        return ApiKey(name, "p256", key)
    raise InvalidPolicy("", f"{path}: the key is not of kind {kind!r}")


def _passkey_document(passkey: SoftwarePasskey) -> dict[str, Any]:
    pem = passkey.private_key().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return {
        "name": passkey.name, "kind": "webauthn-es256", "rp_id": passkey.rp_id,
        "origin": passkey.origin, "sign_count": passkey.sign_count, "private_key": pem.decode(),
    }  # fmt: skip


@sdk_boundary
def save_passkey(passkey: SoftwarePasskey, path: Path) -> None:
    """Write a software passkey to a new file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(_passkey_document(passkey), f)


@sdk_boundary
def load_passkey(path: Path) -> SoftwarePasskey:
    """Read a passkey file.

    Raises:
        InvalidPolicy: not a passkey file (the key's bytes are never shown).
    """
    document = _read_json(path, "a passkey file")
    try:
        key = load_pem_private_key(document["private_key"].encode(), password=None)
        name, rp_id, origin = document["name"], document["rp_id"], document["origin"]
        count = document["sign_count"]
        kind = document["kind"]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InvalidPolicy("", f"{path} is not a passkey file") from e
    fields_ok = all(isinstance(v, str) and v for v in (name, rp_id, origin))
    if kind != "webauthn-es256" or not fields_ok or not isinstance(count, int) or count < 0:
        raise InvalidPolicy("", f"{path} is not a passkey file")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidPolicy("", f"{path}: the key is not a P-256 key")
    return SoftwarePasskey(name, rp_id, origin, key, count)


def _replace_durably(path: Path, text: str) -> None:
    """Replace ``path``'s contents (mode 0600) so that a crash or power cut leaves the old
    file or the new one, never half of one, and never brings the old one back once done."""
    # mkstemp: a fresh name per write (mode 0600), so a temporary file a crashed
    # process left behind cannot block the next write.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # The rename lives in the directory: until it is on disk, a power cut can undo it.
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@sdk_boundary
class PasskeyFile:
    """A software passkey kept in a file: each approval first stores its raised counter."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.passkey = load_passkey(path)

    @property
    def name(self) -> str:
        return self.passkey.name

    def approve(self, challenge: bytes) -> Approval:
        """The passkey's assertion over ``challenge``, once the file holds its counter."""
        approval = self.passkey.approve(challenge)
        # An approval whose counter was not stored never leaves.
        _replace_durably(self.path, json.dumps(_passkey_document(self.passkey)))
        return approval

    def __repr__(self) -> str:
        return f"PasskeyFile({str(self.path)!r}, {self.passkey.name!r})"


@sdk_boundary
def load_approver(path: Path) -> ApiKey | PasskeyFile:
    """An API key file or a passkey file, by the kind it names.

    Raises:
        InvalidPolicy: neither.
    """
    document = _read_json(path, "an approver file")
    if isinstance(document, dict) and document.get("kind") == "webauthn-es256":
        return PasskeyFile(path)
    return load_api_key(path)
