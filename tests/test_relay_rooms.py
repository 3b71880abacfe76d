"""Unit tests of the pure room rules (relay.rooms), the error table
(relay.errors) and the in-memory backend's bookkeeping, with a fake clock."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from relay import errors, rooms
from relay.budget import Quota
from relay.errors import (
    LimitExceededError,
    MalformedRequestError,
    PermissionDeniedError,
    QuotaExceededError,
    RoomClosedError,
    RoomExistsError,
    RoomExpiredError,
    RoomNotFoundError,
    SenderSpoofedError,
    SequenceError,
)
from relay.memory import MemoryBackend
from relay.rooms import (
    AppendCounters,
    Message,
    PartyId,
    ReadResult,
    RelayConfig,
    RoomId,
    RoomLimits,
    RoomSpec,
    check_append,
)
from tests.relay_harness import FakeClock, run

CONFIG = RelayConfig()
NO_LIMITS = RoomLimits(0, 0, 0)


def make_room(participants: tuple[str, ...] = ("a", "b", "c"), **kw: object) -> rooms.NewRoom:
    args: dict[str, object] = {
        "room_id": "",
        "participants": participants,
        "ttl_ms": 0,
        "limits": NO_LIMITS,
        "config": CONFIG,
        "now_ms": 1_000,
    }
    args.update(kw)
    return rooms.new_room(**args)  # type: ignore[arg-type]


def msg(sender: str = "a", seq: int = 1, payload: bytes = b"", recipient: str = "") -> Message:
    return Message(
        sender=PartyId(sender),
        recipient=PartyId(recipient) if recipient else "",
        ceremony_id="c",
        round=1,
        seq=seq,
        payload=payload,
    )


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a", True),
        ("party-0", True),
        ("Zm9v+/=:@._-", True),
        ("x" * 128, True),
        ("", False),
        ("x" * 129, False),
        ("has space", False),
        ("brace{", False),
        ("pipe|", False),
        ("é", False),
        ("new\nline", False),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_validate_id(value: str, ok: bool) -> None:
    if ok:
        assert rooms.validate_id("party id", value) == value
    else:
        with pytest.raises(MalformedRequestError):
            rooms.validate_id("party id", value)


def test_validate_id_allows_empty_only_when_asked() -> None:
    assert rooms.validate_id("ceremony_id", "", allow_empty=True) == ""
    with pytest.raises(MalformedRequestError):
        rooms.validate_id("ceremony_id", "")


def test_resolve_limits_defaults_and_maxima() -> None:
    assert rooms.resolve_limits(NO_LIMITS, CONFIG) == CONFIG.default_limits
    assert rooms.resolve_limits(RoomLimits(5, 6, 7), CONFIG) == RoomLimits(5, 6, 7)
    assert rooms.resolve_limits(CONFIG.max_limits, CONFIG) == CONFIG.max_limits
    too_big = RoomLimits(CONFIG.max_limits.max_message_bytes + 1, 0, 0)
    with pytest.raises(MalformedRequestError):
        rooms.resolve_limits(too_big, CONFIG)
    assert rooms.resolve_ttl(0, CONFIG) == CONFIG.default_ttl_ms
    with pytest.raises(MalformedRequestError):
        rooms.resolve_ttl(CONFIG.max_ttl_ms + 1, CONFIG)


def test_new_room_mints_distinct_tokens_and_keeps_only_digests() -> None:
    new = make_room(ttl_ms=5_000)
    spec = new.spec
    assert len(spec.room_id) >= 20 and make_room().spec.room_id != spec.room_id
    assert spec.expires_ms == 6_000
    assert spec.participants == ("a", "b", "c")
    tokens = [*new.join_tokens.values(), new.admin_token]
    assert len(set(tokens)) == 4 and all(len(t) >= 43 for t in tokens)  # 256 bits
    for party, token in new.join_tokens.items():
        assert spec.token_digests[party] == rooms.token_digest(token)
    for text in (repr(new), repr(spec)):
        assert all(t not in text for t in tokens)
        assert "token_digests" not in text


@pytest.mark.parametrize(
    "participants",
    [("a",), ("a", "a"), ("a", "b c"), tuple(f"p{i}" for i in range(CONFIG.max_participants + 1))],
    ids=["one", "duplicate", "bad-id", "too-many"],
)
def test_new_room_rejects_bad_participant_lists(participants: tuple[str, ...]) -> None:
    with pytest.raises(MalformedRequestError):
        make_room(participants)


def test_authentication() -> None:
    new = make_room()
    spec, t = new.spec, new.join_tokens
    assert rooms.authenticate_party(spec, "b", t[PartyId("b")]) == "b"
    for party, token in [("b", t[PartyId("a")]), ("z", t[PartyId("a")]), ("a", new.admin_token)]:
        with pytest.raises(PermissionDeniedError):
            rooms.authenticate_party(spec, party, token)
    rooms.authenticate_admin(spec, new.admin_token)
    with pytest.raises(PermissionDeniedError):
        rooms.authenticate_admin(spec, t[PartyId("a")])
    for token in [new.admin_token, *t.values()]:
        rooms.authenticate_viewer(spec, token)
    with pytest.raises(PermissionDeniedError):
        rooms.authenticate_viewer(spec, "guess")


def test_check_routing() -> None:
    spec = make_room().spec
    a = PartyId("a")
    rooms.check_routing(spec, a, "", "", "", "", 0)
    rooms.check_routing(spec, a, "a", spec.room_id, "b", "dkg-1", 2**32 - 1)
    with pytest.raises(SenderSpoofedError):
        rooms.check_routing(spec, a, "b", "", "", "", 1)
    for room_id, recipient, ceremony in [
        ("other", "", ""),
        ("", "z", ""),
        ("", "a", ""),
        ("", "", "bad id"),
    ]:
        with pytest.raises(MalformedRequestError):
            rooms.check_routing(spec, a, "", room_id, recipient, ceremony, 1)


LIMITS = RoomLimits(max_message_bytes=10, max_messages=3, max_total_bytes=20)
OPEN = AppendCounters(closed=False, messages=0, total_bytes=0, last_seq=0)


@pytest.mark.parametrize(
    ("counters", "message", "now", "error"),
    [
        (OPEN, msg(seq=1, payload=b"x" * 10), 0, None),
        (AppendCounters(True, 0, 0, 0), msg(), 0, RoomClosedError),
        (OPEN, msg(), 100, RoomExpiredError),
        (AppendCounters(True, 0, 0, 0), msg(), 100, RoomClosedError),  # closed wins
        (OPEN, msg(payload=b"x" * 11), 0, LimitExceededError),
        (OPEN, msg(seq=2), 0, SequenceError),
        (AppendCounters(False, 1, 1, 1), msg(seq=1), 0, SequenceError),
        (AppendCounters(False, 3, 3, 0), msg(seq=1), 0, LimitExceededError),
        (AppendCounters(False, 1, 15, 0), msg(seq=1, payload=b"x" * 6), 0, LimitExceededError),
        (AppendCounters(False, 1, 15, 0), msg(seq=1, payload=b"x" * 5), 0, None),
        # Size is checked before seq, as in the Redis append script.
        (OPEN, msg(seq=5, payload=b"x" * 11), 0, LimitExceededError),
    ],
    ids=[
        "ok",
        "closed",
        "expired",
        "closed-and-expired",
        "too-large",
        "gap",
        "duplicate",
        "count",
        "bytes",
        "bytes-exactly",
        "size-before-seq",
    ],
)
def test_check_append(
    counters: AppendCounters, message: Message, now: int, error: type[Exception] | None
) -> None:
    if error is None:
        check_append(LIMITS, counters, message, 100, now)
    else:
        with pytest.raises(error):
            check_append(LIMITS, counters, message, 100, now)


def test_is_addressed_to() -> None:
    b, c = PartyId("b"), PartyId("c")
    assert rooms.is_addressed_to(msg("a"), b)
    assert not rooms.is_addressed_to(msg("b"), b)
    assert rooms.is_addressed_to(msg("a", recipient="b"), b)
    assert not rooms.is_addressed_to(msg("a", recipient="b"), c)


def test_status_table_covers_every_error() -> None:
    expected = {
        RoomNotFoundError: grpc.StatusCode.NOT_FOUND,
        RoomExistsError: grpc.StatusCode.ALREADY_EXISTS,
        PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
        SenderSpoofedError: grpc.StatusCode.PERMISSION_DENIED,
        RoomClosedError: grpc.StatusCode.FAILED_PRECONDITION,
        RoomExpiredError: grpc.StatusCode.FAILED_PRECONDITION,
        LimitExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
        MalformedRequestError: grpc.StatusCode.INVALID_ARGUMENT,
        SequenceError: grpc.StatusCode.ABORTED,
        errors.HandshakeTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
        errors.BackendUnavailableError: grpc.StatusCode.UNAVAILABLE,
        errors.RelayError: grpc.StatusCode.INTERNAL,
    }
    for cls, code in expected.items():
        assert errors.status_code_for(cls("x")) == code, cls
        rebuilt = errors.error_from_status(code, "x", cls.__name__)
        assert type(rebuilt) is cls
    # Without the class name the base class for the code comes back; a name
    # that does not match the code is ignored.
    assert type(errors.error_from_status(grpc.StatusCode.FAILED_PRECONDITION, "x")) is (
        errors.RoomUnavailableError
    )
    wrong = errors.error_from_status(grpc.StatusCode.NOT_FOUND, "x", "SequenceError")
    assert type(wrong) is RoomNotFoundError
    assert type(errors.error_from_status(grpc.StatusCode.UNKNOWN, "x")) is errors.RelayError


def test_memory_backend_expiry_and_collection() -> None:
    async def body() -> None:
        clock = FakeClock()
        backend = MemoryBackend(retention_ms=1_000)
        budget = Quota(max_rooms=2, max_bytes=1 << 40)

        async def create(spec: RoomSpec) -> None:
            await backend.create_room(spec, clock(), quota=budget, budget=budget)

        first = make_room(ttl_ms=5_000, now_ms=clock()).spec
        await create(first)
        with pytest.raises(RoomExistsError):
            await create(first)
        assert (await backend.append(first.room_id, [msg(seq=1)], clock())).positions == (1,)
        await create(make_room(now_ms=clock()).spec)
        with pytest.raises(QuotaExceededError, match="room quota 2"):
            await create(make_room(now_ms=clock()).spec)

        clock.advance(5_000)  # expired: its reservation is back at once, a tombstone stays
        assert (await backend.snapshot(first.room_id)).state(clock()) == "expired"
        expired = await backend.append(first.room_id, [msg(seq=2)], clock())
        assert expired.positions == () and isinstance(expired.error, RoomExpiredError)
        usage = await backend.usage(clock())
        assert (usage.rooms, usage.stored_bytes, usage.tombstones) == (1, 0, 1)
        await create(make_room(now_ms=clock()).spec)

        clock.advance(1_000)  # past retention: the tombstone is gone
        assert (await backend.usage(clock())).tombstones == 0
        with pytest.raises(RoomNotFoundError):
            await backend.snapshot(first.room_id)
        with pytest.raises(RoomNotFoundError):
            await backend.snapshot(RoomId("never-created"))

    run(body)


def test_memory_backend_read_waits_and_wakes() -> None:
    async def body() -> None:
        backend = MemoryBackend()
        spec = make_room(now_ms=0, ttl_ms=60_000).spec
        budget = Quota(max_rooms=1, max_bytes=1 << 40)
        await backend.create_room(spec, 0, quota=budget, budget=budget)
        empty = await backend.read(spec.room_id, 0, 10, 0.05)
        assert empty.entries == () and not empty.closed
        reader = asyncio.create_task(backend.read(spec.room_id, 0, 10, 10))
        await asyncio.sleep(0.01)
        await backend.append(spec.room_id, [msg(seq=1, payload=b"p")], 1)
        batch = await asyncio.wait_for(reader, 1)
        assert [e.position for e in batch.entries] == [1]
        reader = asyncio.create_task(backend.read(spec.room_id, 1, 10, 10))
        await asyncio.sleep(0.01)
        await backend.close_room(spec.room_id, 2)
        assert (await asyncio.wait_for(reader, 1)).closed
        # A close drops the log: a reader from the start gets only the end.
        assert await backend.read(spec.room_id, 0, 10, 0) == ReadResult((), closed=True)

    run(body)
