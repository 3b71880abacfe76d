"""Authorisation inside the enclave: the host alone cannot make the server share act (DESIGN.md §5).

Every ceremony request carries the serialised ``CeremonyRequest`` and an
Ed25519 signature by a coordinator key pinned in the enclave's configuration.
Export and reshare also need the wallet owner's signature, by the owner key
registered at keygen and kept inside the sealed share. Requests expire
(``not_after_unix``, at most ``max_validity`` ahead) and carry a nonce the
enclave accepts once, so a host cannot replay them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from enclave.errors import BadRequest, Unauthorized
from shardkeep.requests import COORDINATOR_CONTEXT, OWNER_CONTEXT, request_signature_valid
from shardkeep.v1 import ceremony_pb2

KIND = ceremony_pb2.CeremonyKind
OWNER_SIGNED_KINDS = frozenset({KIND.CEREMONY_KIND_EXPORT, KIND.CEREMONY_KIND_RESHARE})
MIN_NONCE_BYTES = 16


@dataclass(frozen=True)
class Policy:
    """The enclave's pinned authorisation settings (part of its measured configuration)."""

    coordinator_keys: tuple[bytes, ...]
    max_validity_seconds: int = 600


class Authorizer:
    """Checks signed requests; remembers nonces until their requests expire."""

    def __init__(self, policy: Policy) -> None:
        if not policy.coordinator_keys:
            raise ValueError("at least one coordinator key must be pinned")
        self._policy = policy
        self._seen: dict[bytes, int] = {}  # nonce -> not_after
        self._lock = threading.Lock()

    def verify_coordinator(
        self, signed: ceremony_pb2.SignedCeremonyRequest
    ) -> ceremony_pb2.CeremonyRequest:
        """Check only the coordinator's signature and parse the request.

        For reading what a request needs (which sealed record) before the full
        ``authorize``: it consumes no nonce and checks no owner signature.

        Raises:
            Unauthorized: no valid coordinator signature.
            BadRequest: the signed bytes do not parse.
        """
        if not any(
            request_signature_valid(
                key, COORDINATOR_CONTEXT, signed.request, signed.coordinator_signature
            )
            for key in self._policy.coordinator_keys
        ):
            raise Unauthorized("no valid coordinator signature")
        return _parse(signed.request)

    def authorize(
        self,
        signed: ceremony_pb2.SignedCeremonyRequest,
        now: int,
        owner_key: bytes | None = None,
    ) -> ceremony_pb2.CeremonyRequest:
        """Verify a signed request and return the parsed request.

        Arguments:
            signed: the request as the host forwarded it.
            now: the current Unix time (seconds).
            owner_key: the wallet owner's 32-byte Ed25519 key, from the unsealed
                share (None for keygen, where the request registers it).

        Raises:
            Unauthorized: a missing or invalid signature, an expired or replayed request.
            BadRequest: the request bytes do not parse.
        """
        request = self.verify_coordinator(signed)
        if request.kind in OWNER_SIGNED_KINDS:
            if owner_key is None:
                raise Unauthorized("this operation needs the wallet owner's signature")
            if not request_signature_valid(
                owner_key, OWNER_CONTEXT, signed.request, signed.owner_signature
            ):
                raise Unauthorized("invalid wallet owner signature")
        self._check_freshness(request, now)
        return request

    def _check_freshness(self, request: ceremony_pb2.CeremonyRequest, now: int) -> None:
        if not now <= request.not_after_unix <= now + self._policy.max_validity_seconds:
            raise Unauthorized("request expired or valid for too long")
        nonce = bytes(request.request_nonce)
        if len(nonce) < MIN_NONCE_BYTES:
            raise Unauthorized("request nonce too short")
        with self._lock:
            self._seen = {n: t for n, t in self._seen.items() if t >= now}
            if nonce in self._seen:
                raise Unauthorized("request replayed")
            self._seen[nonce] = request.not_after_unix


def _parse(data: bytes) -> ceremony_pb2.CeremonyRequest:
    request = ceremony_pb2.CeremonyRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as e:
        raise BadRequest("ceremony request does not parse") from e
    return request


def pinned_keys(hex_keys: Iterable[str]) -> tuple[bytes, ...]:
    """Parse coordinator keys given as hex on the command line or in configuration."""
    keys = tuple(bytes.fromhex(k) for k in hex_keys)
    if any(len(k) != 32 for k in keys):
        raise ValueError("coordinator keys are 32-byte Ed25519 public keys")
    return keys
