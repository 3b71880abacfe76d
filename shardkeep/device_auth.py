"""Device calls to a coordinator: signed by the device's Ed25519 key, fresh, never replayed.

A ``DeviceCall`` carries its body and an Ed25519 signature (RFC 8032) over
``DEVICE_CALL_CONTEXT || method || timestamp_ms (8 bytes, big-endian) ||
nonce || body``: the method binds the body to one RPC, the timestamp and the
16-byte nonce let the coordinator refuse stale and replayed calls
(docs/coordinator.md).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shardkeep.v1 import coordinator_pb2

__all__ = [
    "DEVICE_CALL_CONTEXT",
    "FRESHNESS_MS",
    "DeviceCallError",
    "MemoryNonces",
    "ReplayGuard",
    "SeenNonces",
    "sign_device_call",
    "verify_device_call",
]

DEVICE_CALL_CONTEXT: Final = b"shardkeep/v1/device-call"
FRESHNESS_MS: Final = 60_000
NONCE_SIZE: Final = 16


class DeviceCallError(Exception):
    """A device call that is malformed, badly signed, stale or replayed (named)."""


def _message(method: str, timestamp_ms: int, nonce: bytes, body: bytes) -> bytes:
    name = method.encode()
    return (
        DEVICE_CALL_CONTEXT
        + len(name).to_bytes(2, "big")
        + name
        + timestamp_ms.to_bytes(8, "big")
        + nonce
        + body
    )


def sign_device_call(
    key: Ed25519PrivateKey, method: str, body: bytes, *, now_ms: int | None = None
) -> coordinator_pb2.DeviceCall:
    """Sign ``body`` for ``method`` with a fresh nonce and the current time."""
    timestamp = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    nonce = secrets.token_bytes(NONCE_SIZE)
    return coordinator_pb2.DeviceCall(
        device_key=key.public_key().public_bytes_raw(),
        timestamp_ms=timestamp,
        nonce=nonce,
        body=body,
        signature=key.sign(_message(method, timestamp, nonce, body)),
    )


def verify_device_call(call: coordinator_pb2.DeviceCall, method: str) -> None:
    """Check the call's signature for ``method`` (freshness is the :class:`ReplayGuard`'s).

    Raises:
        DeviceCallError: a malformed key, nonce or signature, or one that does not verify.
    """
    if len(call.device_key) != 32 or len(call.nonce) != NONCE_SIZE or len(call.signature) != 64:
        raise DeviceCallError("malformed device call (key, nonce or signature length)")
    try:
        Ed25519PublicKey.from_public_bytes(bytes(call.device_key)).verify(
            bytes(call.signature),
            _message(method, call.timestamp_ms, bytes(call.nonce), bytes(call.body)),
        )
    except (InvalidSignature, ValueError) as e:
        raise DeviceCallError("the device call's signature does not verify") from e


class SeenNonces(Protocol):
    """Where a :class:`ReplayGuard` keeps the nonces it saw (memory, a coordinator's registry)."""

    def remember(self, device_key: bytes, nonce: bytes, now_ms: int, forget_before_ms: int) -> bool:
        """Record the nonce at ``now_ms``; False if it was already recorded. May forget
        nonces recorded before ``forget_before_ms``."""
        ...


class MemoryNonces:
    """Seen nonces in memory: forgotten on restart (a replay within the window then passes)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[bytes, bytes], int] = {}

    def remember(self, device_key: bytes, nonce: bytes, now_ms: int, forget_before_ms: int) -> bool:
        self._seen = {k: t for k, t in self._seen.items() if t >= forget_before_ms}
        key = (device_key, nonce)
        if key in self._seen:
            return False
        self._seen[key] = now_ms
        return True


class ReplayGuard:
    """Refuses calls outside the freshness window and nonces seen within it.

    Arguments:
        clock_ms: the current time in milliseconds.
        seen: where seen nonces are kept (default: memory); a store that
            survives restarts keeps replays refused across them.
    """

    def __init__(
        self,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        seen: SeenNonces | None = None,
    ) -> None:
        self._clock_ms = clock_ms
        self._seen = seen or MemoryNonces()

    def check(self, call: coordinator_pb2.DeviceCall) -> None:
        """Admit a verified call once.

        Raises:
            DeviceCallError: stale (or from the future), or a replayed nonce.
        """
        now = self._clock_ms()
        if abs(now - call.timestamp_ms) > FRESHNESS_MS:
            raise DeviceCallError("the device call is stale (check the device's clock)")
        # A nonce older than twice the window can only come with a stale timestamp.
        if not self._seen.remember(
            bytes(call.device_key), bytes(call.nonce), now, now - 2 * FRESHNESS_MS
        ):
            raise DeviceCallError("the device call was replayed")
