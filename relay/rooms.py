"""The room model: ids, limits, join tokens and the rules every backend applies.

A room (docs/architecture.md) has an id, a fixed participant list, a TTL and
size limits. Everything here is pure: time comes in as ``now_ms`` and
randomness from ``secrets`` only when a room is created. Backends store rooms;
the rules for accepting an envelope live in ``check_append`` (the Redis backend
runs the same rules in one Lua script, and the service tests run against both
backends to keep them equal).

Tokens: the relay keeps only a SHA-256 digest of each join token and compares
digests with ``hmac.compare_digest``, so a dump of the
backend does not let anyone join.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, NewType

from relay.errors import (
    LimitExceededError,
    MalformedRequestError,
    PermissionDeniedError,
    RelayError,
    RoomClosedError,
    RoomExpiredError,
    SenderSpoofedError,
    SequenceError,
)

__all__ = [
    # Functions
    "validate_id",
    "resolve_limits",
    "resolve_ttl",
    "new_room",
    "room_from_spec",
    "same_room",
    "token_digest",
    "authenticate_party",
    "authenticate_viewer",
    "authenticate_admin",
    "check_open",
    "check_routing",
    "check_append",
    "is_addressed_to",
    # Types
    "RoomId",
    "PartyId",
    "TokenDigest",
    "RoomState",
    "RoomLimits",
    "RelayConfig",
    "RoomSpec",
    "NewRoom",
    "Message",
    "StoredMessage",
    "RoomSnapshot",
    "AppendCounters",
    "ReadResult",
    "AppendResult",
]

RoomId = NewType("RoomId", str)
PartyId = NewType("PartyId", str)
# SHA-256 of a join or admin token (32 bytes).
TokenDigest = NewType("TokenDigest", bytes)

RoomState = Literal["open", "closed", "expired"]

# Room, party and ceremony ids: printable, no separators the Redis key and
# field layout uses ("{", "}", "|") and no whitespace; long enough for a
# base64 X25519 key or a UUID.
_ID_RE: Final = re.compile(r"[A-Za-z0-9._:@+/=-]{1,128}")
_TOKEN_DIGEST_TAG: Final = b"shardkeep/relay/token\x00"
MAX_ROUND: Final = 2**32 - 1


@dataclass(frozen=True)
class RoomLimits:
    """Per-room limits; all counts are over the room's whole life."""

    max_message_bytes: int
    max_messages: int
    max_total_bytes: int


@dataclass(frozen=True)
class RelayConfig:
    """Relay-wide defaults and maxima (passed explicitly, no module globals).

    Attributes:
        default_ttl_ms / max_ttl_ms: room TTL when the request says 0 / the most
            a request may ask for.
        default_limits / max_limits: room limits when a request field is 0 / the
            most a request may ask for.
        max_participants: longest participant list.
        hello_timeout_s: how long a Join stream may wait before its JoinHello.
        max_await_ms: cap on AwaitRound's timeout.
        retention_ms: how long a backend keeps the tombstone of a closed or
            expired room (its spec, no log and no reservation), so callers hear
            FAILED_PRECONDITION "closed"/"expired" rather than NOT_FOUND.
        read_batch: most log entries a stream fetches from the backend at once.
        max_block_s: longest single backend wait; bounds how late a stream notices
            a room collected under it.
        room_race_s: how long a join whose room spec's credential was just
            spent waits for the join that spent it to create the room.
        max_session_channels: most channels open at once on one Session stream.
        session_inbox_frames: most frames a Session channel may have waiting
            to be stored; a channel that sends more is closed.
        session_stream_bytes: most bytes of frames one Session stream may
            have the relay hold (joins of live channels, frames waiting to be
            stored); a frame past it closes its channel.
        session_relay_bytes: the same, summed over every Session stream of
            the relay (streams are not counted, so this bounds them all).
    """

    default_ttl_ms: int = 10 * 60 * 1000
    max_ttl_ms: int = 24 * 60 * 60 * 1000
    default_limits: RoomLimits = RoomLimits(
        max_message_bytes=1 << 20, max_messages=10_000, max_total_bytes=64 << 20
    )
    max_limits: RoomLimits = RoomLimits(
        max_message_bytes=4 << 20, max_messages=1_000_000, max_total_bytes=1 << 30
    )
    max_participants: int = 256
    hello_timeout_s: float = 10.0
    max_await_ms: int = 10 * 60 * 1000
    retention_ms: int = 30 * 1000
    read_batch: int = 256
    max_block_s: float = 5.0
    room_race_s: float = 2.0
    max_session_channels: int = 1024
    session_inbox_frames: int = 64
    session_stream_bytes: int = 256 << 20
    session_relay_bytes: int = 1 << 30


@dataclass(frozen=True)
class RoomSpec:
    """What is fixed when a room is created."""

    room_id: RoomId
    participants: tuple[PartyId, ...]
    created_ms: int
    expires_ms: int
    limits: RoomLimits
    token_digests: Mapping[PartyId, TokenDigest] = field(repr=False)
    admin_digest: TokenDigest = field(repr=False)
    # The coordinator that created the room; its quota holds the reservation.
    owner: str = ""


@dataclass(frozen=True)
class NewRoom:
    """A room spec plus the plaintext tokens, returned to the creator only once."""

    spec: RoomSpec
    join_tokens: Mapping[PartyId, str] = field(repr=False)
    admin_token: str = field(repr=False)


@dataclass(frozen=True)
class Message:
    """An envelope as the relay stores it, sender already authenticated."""

    sender: PartyId
    recipient: PartyId | Literal[""]
    ceremony_id: str
    round: int
    seq: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class StoredMessage:
    """A message with its position in the room log (strictly increasing, >= 1)."""

    position: int
    message: Message


@dataclass(frozen=True)
class RoomSnapshot:
    """A room's spec and mutable state at one moment."""

    spec: RoomSpec
    closed: bool
    joined: frozenset[PartyId]
    delivered: Mapping[PartyId, int]
    messages: int
    total_bytes: int
    position: int

    def state(self, now_ms: int) -> RoomState:
        """Return the room's state at ``now_ms`` (closed wins over expired)."""
        if self.closed:
            return "closed"
        if now_ms >= self.spec.expires_ms:
            return "expired"
        return "open"


@dataclass(frozen=True)
class AppendCounters:
    """The room state ``check_append`` decides on."""

    closed: bool
    messages: int
    total_bytes: int
    last_seq: int


@dataclass(frozen=True)
class AppendResult:
    """What a batch append stored: the positions of the leading envelopes that
    were accepted, and the error that stopped the rest (None if all were).

    A rejected envelope stops the batch: the ones after it would fail the seq
    check anyway, since the rejected seq was never stored."""

    positions: tuple[int, ...]
    error: RelayError | None


@dataclass(frozen=True)
class ReadResult:
    """A batch of log entries after a cursor; ``closed`` once the log is drained
    and the room is closed."""

    entries: tuple[StoredMessage, ...]
    closed: bool


def validate_id(kind: str, value: str, *, allow_empty: bool = False) -> str:
    """Check a room, party or ceremony id.

    Arguments:
        kind: what the id names, for the error message.
        value: the id.
        allow_empty: accept "".

    Returns:
        ``value``.

    Raises:
        MalformedRequestError: not 1-128 characters of [A-Za-z0-9._:@+/=-].
    """
    if allow_empty and value == "":
        return value
    if not _ID_RE.fullmatch(value):
        raise MalformedRequestError(f"{kind} must be 1-128 characters of [A-Za-z0-9._:@+/=-]")
    return value


def _resolve_one(name: str, requested: int, default: int, maximum: int) -> int:
    if requested < 0:
        raise MalformedRequestError(f"{name} must not be negative")
    if requested == 0:
        return default
    if requested > maximum:
        raise MalformedRequestError(f"{name} {requested} exceeds the relay maximum {maximum}")
    return requested


def resolve_limits(requested: RoomLimits, config: RelayConfig) -> RoomLimits:
    """Turn requested limits (0 = default) into effective ones.

    Arguments:
        requested: the request's limits.
        config: relay defaults and maxima.

    Returns:
        The effective limits.

    Raises:
        MalformedRequestError: a value above the relay maximum.
    """
    d, m = config.default_limits, config.max_limits
    return RoomLimits(
        max_message_bytes=_resolve_one(
            "max_message_bytes",
            requested.max_message_bytes,
            d.max_message_bytes,
            m.max_message_bytes,
        ),
        max_messages=_resolve_one(
            "max_messages", requested.max_messages, d.max_messages, m.max_messages
        ),
        max_total_bytes=_resolve_one(
            "max_total_bytes", requested.max_total_bytes, d.max_total_bytes, m.max_total_bytes
        ),
    )


def resolve_ttl(ttl_ms: int, config: RelayConfig) -> int:
    """Return the effective TTL in ms (0 = default).

    Raises:
        MalformedRequestError: above the relay maximum or negative.
    """
    return _resolve_one("ttl_ms", ttl_ms, config.default_ttl_ms, config.max_ttl_ms)


def token_digest(token: str) -> TokenDigest:
    """Return the stored form of a token: SHA-256 over a domain tag and the token.

    Arguments:
        token: a join or admin token.

    Returns:
        32 bytes.
    """
    return TokenDigest(hashlib.sha256(_TOKEN_DIGEST_TAG + token.encode()).digest())


def _participants(participants: Iterable[str], config: RelayConfig) -> tuple[PartyId, ...]:
    parties = tuple(PartyId(validate_id("party id", p)) for p in participants)
    if len(parties) < 2:
        raise MalformedRequestError("a room needs at least 2 participants")
    if len(parties) > config.max_participants:
        raise MalformedRequestError(
            f"{len(parties)} participants exceed the relay maximum {config.max_participants}"
        )
    if len(set(parties)) != len(parties):
        raise MalformedRequestError("participants must be distinct")
    return parties


def new_room(
    *,
    room_id: str,
    participants: Iterable[str],
    ttl_ms: int,
    limits: RoomLimits,
    config: RelayConfig,
    now_ms: int,
    owner: str = "",
) -> NewRoom:
    """Validate a CreateRoom request and mint the room's tokens.

    Arguments:
        room_id: the requested id, or "" to generate one (128 random bits).
        participants: the fixed participant list (2 or more distinct ids).
        ttl_ms: requested TTL, 0 for the default.
        limits: requested limits, 0 fields for defaults.
        config: relay defaults and maxima.
        now_ms: current Unix time in ms.
        owner: the creating coordinator's name.

    Returns:
        The spec to store and the plaintext tokens (256 random bits each,
        URL-safe base64) to return to the creator.

    Raises:
        MalformedRequestError: bad id, too few/many or duplicate participants,
            TTL or limits above the relay maxima.
    """
    rid = RoomId(validate_id("room_id", room_id) if room_id else secrets.token_urlsafe(16))
    parties = _participants(participants, config)
    ttl = resolve_ttl(ttl_ms, config)
    join_tokens = {p: secrets.token_urlsafe(32) for p in parties}
    admin_token = secrets.token_urlsafe(32)
    spec = RoomSpec(
        room_id=rid,
        participants=parties,
        created_ms=now_ms,
        expires_ms=now_ms + ttl,
        limits=resolve_limits(limits, config),
        token_digests={p: token_digest(t) for p, t in join_tokens.items()},
        admin_digest=token_digest(admin_token),
        owner=owner,
    )
    return NewRoom(spec=spec, join_tokens=join_tokens, admin_token=admin_token)


def room_from_spec(
    *,
    room_id: str,
    participants: Iterable[str],
    expires_ms: int,
    limits: RoomLimits,
    token_digests: Iterable[bytes],
    admin_digest: bytes,
    config: RelayConfig,
    now_ms: int,
    owner: str = "",
) -> RoomSpec:
    """Validate a room a coordinator specified (and signed) for creation on first join.

    Arguments:
        room_id: the room id.
        participants: the fixed participant list (2 or more distinct ids).
        expires_ms: the room's expiry, Unix ms.
        limits: requested limits, 0 fields for defaults.
        token_digests: ``token_digest`` of each participant's join token, in order.
        admin_digest: ``token_digest`` of the admin token.
        config: relay defaults and maxima.
        now_ms: current Unix time in ms.
        owner: the coordinator whose credential signed it.

    Returns:
        The spec to store.

    Raises:
        MalformedRequestError: bad id or participants, limits above the relay
            maxima, an expiry not in (now, now + max TTL], digests not 32 bytes
            or not one per participant.
    """
    rid = RoomId(validate_id("room_id", room_id))
    parties = _participants(participants, config)
    digests = [TokenDigest(bytes(d)) for d in token_digests]
    if len(digests) != len(parties) or any(len(d) != 32 for d in (*digests, admin_digest)):
        raise MalformedRequestError("a room spec needs one 32-byte token digest per participant")
    if not now_ms < expires_ms <= now_ms + config.max_ttl_ms:
        raise MalformedRequestError(
            f"a room spec's expiry must be in the future and at most {config.max_ttl_ms} ms away"
        )
    return RoomSpec(
        room_id=rid,
        participants=parties,
        created_ms=now_ms,
        expires_ms=expires_ms,
        limits=resolve_limits(limits, config),
        token_digests=dict(zip(parties, digests, strict=True)),
        admin_digest=TokenDigest(bytes(admin_digest)),
        owner=owner,
    )


def same_room(stored: RoomSpec, presented: RoomSpec) -> bool:
    """Whether a join's spec describes the stored room: everything its
    coordinator signed (id, participants, expiry, limits, token digests)."""
    return (
        stored.room_id == presented.room_id
        and stored.participants == presented.participants
        and stored.expires_ms == presented.expires_ms
        and stored.limits == presented.limits
        and dict(stored.token_digests) == dict(presented.token_digests)
        and stored.admin_digest == presented.admin_digest
    )


def authenticate_party(spec: RoomSpec, party: str, token: str) -> PartyId:
    """Check a party's join token.

    Arguments:
        spec: the room.
        party: the claimed party id.
        token: the presented join token.

    Returns:
        The authenticated party id.

    Raises:
        PermissionDeniedError: not a participant, or the wrong token. One message
            for both, so a caller learns nothing about which.
    """
    stored = spec.token_digests.get(PartyId(party))
    presented = token_digest(token)
    if stored is None or not hmac.compare_digest(stored, presented):
        raise PermissionDeniedError("unknown party or bad join token")
    return PartyId(party)


def authenticate_admin(spec: RoomSpec, token: str) -> None:
    """Check the room's admin token.

    Raises:
        PermissionDeniedError: wrong token.
    """
    if not hmac.compare_digest(spec.admin_digest, token_digest(token)):
        raise PermissionDeniedError("bad admin token")


def authenticate_viewer(spec: RoomSpec, token: str) -> None:
    """Check a token that may read room status: the admin's or any party's.

    Every stored digest is compared (no early exit on a match).

    Raises:
        PermissionDeniedError: matches none.
    """
    presented = token_digest(token)
    ok = hmac.compare_digest(spec.admin_digest, presented)
    for stored in spec.token_digests.values():
        ok |= hmac.compare_digest(stored, presented)
    if not ok:
        raise PermissionDeniedError("bad token")


def check_open(closed: bool, expires_ms: int, now_ms: int) -> None:
    """Raise unless the room accepts joins and envelopes.

    Raises:
        RoomClosedError: the room was closed.
        RoomExpiredError: ``now_ms`` is at or past the expiry.
    """
    if closed:
        raise RoomClosedError("room is closed")
    if now_ms >= expires_ms:
        raise RoomExpiredError("room has expired")


def check_routing(
    spec: RoomSpec,
    sender: PartyId,
    claimed_sender: str,
    room_id: str,
    recipient: str,
    ceremony_id: str,
    round_: int,
) -> None:
    """Stateless checks of an envelope's routing fields before it is stored.

    Arguments:
        spec: the room of the sender's stream.
        sender: the stream's authenticated party.
        claimed_sender: the envelope's sender field ("" lets the relay stamp it).
        room_id: the envelope's room field ("" or the stream's room).
        recipient: "" for broadcast, else a participant other than the sender.
        ceremony_id: "" or an id.
        round_: the round number.

    Raises:
        SenderSpoofedError: the envelope names another sender.
        MalformedRequestError: wrong room, bad ceremony id, bad recipient.
    """
    if claimed_sender and claimed_sender != sender:
        raise SenderSpoofedError("envelope sender differs from the authenticated party")
    if room_id and room_id != spec.room_id:
        raise MalformedRequestError("envelope room_id differs from the joined room")
    validate_id("ceremony_id", ceremony_id, allow_empty=True)
    if not 0 <= round_ <= MAX_ROUND:
        raise MalformedRequestError("round out of range")
    if recipient:
        if recipient not in spec.token_digests:
            raise MalformedRequestError("recipient is not a participant")
        if recipient == sender:
            raise MalformedRequestError("recipient is the sender")


def check_append(
    limits: RoomLimits, counters: AppendCounters, message: Message, expires_ms: int, now_ms: int
) -> None:
    """The stateful acceptance rules for one envelope, in order.

    The Redis backend's append script applies the same rules in the same order.

    Arguments:
        limits: the room's limits.
        counters: the room's state before this envelope.
        message: the envelope.
        expires_ms: the room's expiry.
        now_ms: current Unix time in ms.

    Raises:
        RoomClosedError / RoomExpiredError: the room accepts nothing more.
        LimitExceededError: payload too large, or the room's message count or
            byte total would pass its limit.
        SequenceError: ``message.seq`` is not ``counters.last_seq + 1``.
    """
    check_open(counters.closed, expires_ms, now_ms)
    size = len(message.payload)
    if size > limits.max_message_bytes:
        raise LimitExceededError(
            f"payload of {size} bytes exceeds the room limit {limits.max_message_bytes}"
        )
    if message.seq != counters.last_seq + 1:
        raise SequenceError(f"expected seq {counters.last_seq + 1}, got {message.seq}")
    if counters.messages + 1 > limits.max_messages:
        raise LimitExceededError(f"room message limit {limits.max_messages} reached")
    if counters.total_bytes + size > limits.max_total_bytes:
        raise LimitExceededError(f"room byte limit {limits.max_total_bytes} reached")


def is_addressed_to(message: Message, party: PartyId) -> bool:
    """Whether ``party`` receives ``message``: a peer's broadcast, or a
    point-to-point envelope for it. Nobody receives their own envelopes."""
    if message.sender == party:
        return False
    return message.recipient in ("", party)
