"""Who may create rooms: coordinators pinned by their Ed25519 keys, each with a quota.

The relay coordinator (the SDK's ``WalletClient``, docs/architecture.md) already holds
an Ed25519 key the enclave pins; the relay pins the same public keys in its
admission file, so no new secret is handed out and a copy of the relay's
configuration lets nobody in. Every CreateRoom carries a fresh credential in
the ``x-shardkeep-coordinator`` metadata:

    base64url( public_key[32] || issued_ms[8, big-endian] || nonce[16] || signature[64] )

signed (RFC 8032 Ed25519) over ``CREDENTIAL_CONTEXT || issued_ms || nonce ||
SHA-256(request)``, where ``request`` is the deterministic serialisation of the
CreateRoomRequest. So a credential is bound to its request, expires after
``window_ms`` on either side of the relay's clock, and creates one room: the
relay spends its nonce where the rooms live (``relay.spent``; in Redis, shared
by every relay and kept across restarts) until the window has passed. Rooms
are then reached with the room's own tokens (admin and join tokens), which
only the coordinator hands out.

The admission file (JSON)::

    {"max_rooms": 10000, "max_bytes": 4294967296,
     "coordinators": [{"name": "wallet-api", "public_key": "<64 hex digits>",
                       "max_rooms": 5000, "max_bytes": 2147483648}]}

``max_rooms`` / ``max_bytes`` at the top are the global budget; a coordinator
without its own quota gets an equal share of it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from relay.budget import Quota
from relay.errors import UnauthenticatedError

__all__ = [
    # Functions
    "create_room_credential",
    "load_policy",
    "parse_policy",
    # Types
    "Admission",
    "Admitter",
    "AdmissionPolicy",
    "Coordinator",
    # Constants
    "CREDENTIAL_CONTEXT",
    "ROOM_SPEC_CONTEXT",
    "CREDENTIAL_METADATA_KEY",
]

CREDENTIAL_METADATA_KEY: Final = "x-shardkeep-coordinator"
CREDENTIAL_CONTEXT: Final = b"shardkeep/relay/v1/CreateRoom\x00"
# A room created by its first join (relay_pb2.SignedRoomSpec): the credential
# signs the spec's bytes under its own context, so it never passes as a
# CreateRoom credential or the other way round.
ROOM_SPEC_CONTEXT: Final = b"shardkeep/relay/v1/RoomSpec\x00"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KEY, _TIME, _NONCE, _SIG = 32, 8, 16, 64
_CREDENTIAL_BYTES: Final = _KEY + _TIME + _NONCE + _SIG
_MAX_POLICY_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class Coordinator:
    """A pinned coordinator: its name (in logs and refusals), key and quota."""

    name: str
    public_key: bytes
    quota: Quota


@dataclass(frozen=True)
class AdmissionPolicy:
    """The global budget and the pinned coordinators by public key."""

    budget: Quota
    coordinators: Mapping[bytes, Coordinator]


def _signed_bytes(issued_ms: int, nonce: bytes, request: bytes, context: bytes) -> bytes:
    digest = hashlib.sha256(request).digest()
    return context + issued_ms.to_bytes(_TIME, "big") + nonce + digest


def create_room_credential(
    key: Ed25519PrivateKey, request: bytes, now_ms: int, *, context: bytes = CREDENTIAL_CONTEXT
) -> str:
    """Mint the credential for one CreateRoom or room spec (the coordinator's side).

    Arguments:
        key: the coordinator's Ed25519 key.
        request: ``CreateRoomRequest.SerializeToString(deterministic=True)``, or
            a ``RoomSpec``'s bytes.
        now_ms: Unix time in ms.
        context: ``CREDENTIAL_CONTEXT``, or ``ROOM_SPEC_CONTEXT`` for a room spec.

    Returns:
        The ``x-shardkeep-coordinator`` metadata value (or ``SignedRoomSpec.credential``).
    """
    nonce = secrets.token_bytes(_NONCE)
    signature = key.sign(_signed_bytes(now_ms, nonce, request, context))
    raw = key.public_key().public_bytes_raw() + now_ms.to_bytes(_TIME, "big") + nonce + signature
    return base64.urlsafe_b64encode(raw).decode()


def _positive(raw: Mapping[str, Any], name: str, default: int | None) -> int:
    value = raw.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"admission policy: {name} must be a positive integer")
    return value


def parse_policy(raw: Any) -> AdmissionPolicy:
    """Check a decoded admission file.

    Raises:
        ValueError: a missing or bad field (named), a duplicate name or key.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("coordinators"), list):
        raise ValueError("admission policy: an object with a coordinators list is required")
    budget = Quota(_positive(raw, "max_rooms", None), _positive(raw, "max_bytes", None))
    entries: list[Any] = raw["coordinators"]
    share = Quota(
        max(1, budget.max_rooms // max(1, len(entries))),
        max(1, budget.max_bytes // max(1, len(entries))),
    )
    coordinators: dict[bytes, Coordinator] = {}
    names: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError("admission policy: each coordinator is an object")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in names:
            raise ValueError(
                "admission policy: coordinator names are 1-64 of [A-Za-z0-9._-], unique"
            )
        try:
            key = bytes.fromhex(entry.get("public_key", ""))
            Ed25519PublicKey.from_public_bytes(key)
        except (TypeError, ValueError):
            raise ValueError(
                f"admission policy: coordinator {name!r} needs a 32-byte hex public_key"
            ) from None
        if key in coordinators:
            raise ValueError(f"admission policy: coordinator {name!r} repeats another's key")
        quota = Quota(
            _positive(entry, "max_rooms", share.max_rooms),
            _positive(entry, "max_bytes", share.max_bytes),
        )
        names.add(name)
        coordinators[key] = Coordinator(name, key, quota)
    return AdmissionPolicy(budget, coordinators)


def load_policy(path: Path) -> AdmissionPolicy:
    """Read and check an admission file.

    Raises:
        ValueError: unreadable, too large, not JSON, or a bad field.
    """
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_POLICY_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot read admission policy {path}: {e.strerror}") from None
    if len(data) > _MAX_POLICY_BYTES:
        raise ValueError(f"admission policy {path} is larger than {_MAX_POLICY_BYTES} bytes")
    try:
        return parse_policy(json.loads(data))
    except json.JSONDecodeError:
        raise ValueError(f"admission policy {path} is not JSON") from None


@dataclass(frozen=True)
class Admission:
    """A verified credential, still to be spent (``Backend.spend_credential``).

    Attributes:
        coordinator: the coordinator it proves.
        nonce: its 16-byte nonce.
        forget_after_ms: when it lapses and its nonce may be forgotten.
    """

    coordinator: Coordinator
    nonce: bytes = field(repr=False)
    forget_after_ms: int


class Admitter:
    """Checks CreateRoom credentials against a policy."""

    def __init__(self, policy: AdmissionPolicy, *, window_ms: int = 60_000) -> None:
        """Arguments:
        policy: budget and pinned coordinators.
        window_ms: how far a credential's issue time may be from the relay's clock.
        """
        self.policy = policy
        self._window_ms = window_ms

    def verify(
        self,
        credential: str | None,
        request: bytes,
        now_ms: int,
        *,
        context: bytes = CREDENTIAL_CONTEXT,
    ) -> Admission:
        """Check a CreateRoom or room-spec credential; the caller spends it before
        creating the room.

        Arguments:
            credential: the metadata value, or None when absent.
            request: the request's deterministic serialisation (or the spec's bytes).
            now_ms: the relay's clock.
            context: what was signed: ``CREDENTIAL_CONTEXT`` or ``ROOM_SPEC_CONTEXT``.

        Returns:
            The coordinator it proves and the nonce to spend.

        Raises:
            UnauthenticatedError: absent, malformed, unknown key, outside the
                window or bad signature.
        """
        if not credential:
            raise UnauthenticatedError("CreateRoom needs a coordinator credential")
        try:
            raw = base64.urlsafe_b64decode(credential.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise UnauthenticatedError("malformed coordinator credential") from None
        if len(raw) != _CREDENTIAL_BYTES:
            raise UnauthenticatedError("malformed coordinator credential")
        key, rest = raw[:_KEY], raw[_KEY:]
        issued_ms = int.from_bytes(rest[:_TIME], "big")
        nonce, signature = rest[_TIME : _TIME + _NONCE], rest[_TIME + _NONCE :]
        coordinator = self.policy.coordinators.get(key)
        if coordinator is None:
            raise UnauthenticatedError("unknown coordinator key")
        if abs(now_ms - issued_ms) > self._window_ms:
            raise UnauthenticatedError("coordinator credential outside the time window")
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(
                signature, _signed_bytes(issued_ms, nonce, request, context)
            )
        except InvalidSignature:
            raise UnauthenticatedError("bad coordinator credential signature") from None
        # A relay accepts it while its clock reads at most issued + window;
        # remember it one window longer, against skew between relays' clocks.
        return Admission(coordinator, nonce, issued_ms + 2 * self._window_ms)
