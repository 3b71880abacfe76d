"""Authorisation inside the enclave: the host alone cannot make the server share act.

Every ceremony request carries the serialised ``CeremonyRequest`` and an
Ed25519 signature by a coordinator key pinned in the enclave's configuration.
Export and reshare also need the wallet owner's signature, by the owner key
registered at keygen and kept inside the sealed share. Requests expire
(``not_after_unix``, at most ``max_validity`` ahead).

Replay: every request carries a challenge this enclave process issued
(``Enclave.GetChallenge``) and has not seen used; ``authorize`` consumes it
atomically. Challenges live in this process's memory only, so a request is
accepted at most once: again in the same process, the challenge is used; after
a restart, or on another enclave instance, it is unknown. Nothing the host
keeps (and could roll back) enters the decision (docs/security/replay.md).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from enclave.errors import BadRequest, ChallengeRefused, Overloaded, Unauthorized
from shardkeep.requests import COORDINATOR_CONTEXT, OWNER_CONTEXT, request_signature_valid
from shardkeep.v1 import ceremony_pb2

KIND = ceremony_pb2.CeremonyKind
OWNER_SIGNED_KINDS = frozenset({KIND.CEREMONY_KIND_EXPORT, KIND.CEREMONY_KIND_RESHARE})
INSTANCE_TAG_BYTES = 8  # names the enclave process that issued a challenge (host routing)
CHALLENGE_RANDOM_BYTES = 32
CHALLENGE_BYTES = INSTANCE_TAG_BYTES + CHALLENGE_RANDOM_BYTES


@dataclass(frozen=True)
class CoordinatorSigned:
    """A request whose coordinator signature verified (``Authorizer.verify_coordinator``),
    parsed: its owner signature, expiry and challenge are ``Authorizer.authorize``'s to check."""

    signed: ceremony_pb2.SignedCeremonyRequest
    request: ceremony_pb2.CeremonyRequest


@dataclass(frozen=True)
class Policy:
    """The enclave's pinned authorisation settings (part of its measured configuration)."""

    coordinator_keys: tuple[bytes, ...]
    max_validity_seconds: int = 600
    max_outstanding_challenges: int = 65536


class ChallengeTable:
    """The challenges this enclave process issued and that are still unused (memory only).

    A challenge is this process's random instance tag followed by 32 random
    bytes; it expires ``ttl_seconds`` after issue (the longest a request may be
    valid). At most ``capacity`` are outstanding: past that, ``issue`` refuses
    (a flood of requests cannot push out the challenges of pending ceremonies).
    """

    def __init__(self, ttl_seconds: int, capacity: int, rand: Callable[[int], bytes]) -> None:
        if ttl_seconds <= 0 or capacity <= 0:
            raise ValueError("the challenge TTL and capacity must be positive")
        self._ttl = ttl_seconds
        self._capacity = capacity
        self._rand = rand
        self.instance_tag = rand(INSTANCE_TAG_BYTES)
        self._outstanding: OrderedDict[bytes, int] = OrderedDict()  # challenge -> expiry, by issue
        self._lock = threading.Lock()

    def issue(self, now: int) -> tuple[bytes, int]:
        """A new challenge and the Unix time it expires.

        Raises:
            Overloaded: ``capacity`` unexpired challenges are outstanding.
        """
        with self._lock:
            self._drop_expired(now)
            if len(self._outstanding) >= self._capacity:
                raise Overloaded("too many outstanding challenges; retry later")
            challenge = self.instance_tag + self._rand(CHALLENGE_RANDOM_BYTES)
            expires = now + self._ttl
            self._outstanding[challenge] = expires
            return challenge, expires

    def consume(self, challenge: bytes, now: int) -> None:
        """Use ``challenge`` up: it is accepted once, if this process issued it and it is fresh.

        Raises:
            ChallengeRefused: an unknown (another process's, or from before a
                restart), already used or expired challenge.
        """
        with self._lock:
            expires = self._outstanding.pop(challenge, None)
        if expires is None:
            raise ChallengeRefused("unknown or used challenge")
        if expires < now:
            raise ChallengeRefused("challenge expired")

    def _drop_expired(self, now: int) -> None:
        # Issue order is expiry order (one TTL), unless the clock stepped back.
        while self._outstanding:
            challenge, expires = next(iter(self._outstanding.items()))
            if expires >= now:
                return
            del self._outstanding[challenge]


class Authorizer:
    """Checks signed requests and consumes their challenges."""

    def __init__(self, policy: Policy, rand: Callable[[int], bytes] = secrets.token_bytes) -> None:
        if not policy.coordinator_keys:
            raise ValueError("at least one coordinator key must be pinned")
        self._policy = policy
        self.challenges = ChallengeTable(
            policy.max_validity_seconds, policy.max_outstanding_challenges, rand
        )

    def verify_coordinator(self, signed: ceremony_pb2.SignedCeremonyRequest) -> CoordinatorSigned:
        """Check only the coordinator's signature and parse the request.

        The first check of every request: what it names (which sealed record)
        is read only after it, and ``authorize`` completes it (the signature
        is verified once per request). It consumes no challenge and checks no
        owner signature.

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
        return CoordinatorSigned(signed, _parse(signed.request))

    def authorize(
        self,
        verified: CoordinatorSigned,
        now: int,
        owner_key: bytes | None = None,
    ) -> ceremony_pb2.CeremonyRequest:
        """Complete the checks of a request whose coordinator signature verified; return
        the parsed request.

        Arguments:
            verified: the request as the host forwarded it, from ``verify_coordinator``.
            now: the current Unix time (seconds).
            owner_key: the wallet owner's 32-byte Ed25519 key, from the unsealed
                share (None for keygen, where the request registers it).

        Raises:
            Unauthorized: a missing or invalid owner signature, an expired
                request, or a challenge that is unknown, used or expired.
        """
        signed, request = verified.signed, verified.request
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
        self.challenges.consume(bytes(request.challenge), now)


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
