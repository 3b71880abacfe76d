"""The Redis backend: several relay processes serve the same rooms.

Layout per room (the ``{room_id}`` hash tag keeps a room's keys in one Redis
Cluster slot, which multi-key scripts need):

- ``<prefix>room:{<id>}``         hash: spec (participants, limits, expiry, token
  digests), state (``closed``, counters, ``pos``) and per party ``seq:<party>``
  (its last seq = envelopes delivered) and ``joined:<party>``;
- ``<prefix>room:{<id>}:log``     stream: the room log, one entry per envelope,
  entry id ``0-<position>`` so positions are plain integers; a close appends a
  marker entry so readers blocked in XREAD wake up and see it;
- ``<prefix>room:{<id>}:rounds``  hash: ``<ceremony>|<round>|<party>`` -> count,
  for AwaitRound.

Every key gets PEXPIREAT expiry + retention, so Redis itself collects
tombstones (the TTL check proper uses ``expires_ms``, against the relay's
clock). Closing a room ends it at once: the rounds hash is deleted, the log
trimmed to a single close marker (which wakes readers blocked in XREAD) and
every key left to expire after ``retention_ms``.

The budget (``relay.budget``) lives under the ``{budget}`` hash tag:

- ``<prefix>{budget}:exp``  sorted set: live room -> when its reservation
  lapses (ms): the room's expiry, or a short lease while it is being created
  or closed;
- ``<prefix>{budget}:res``  hash: live room -> ``<owner>|<reserved bytes>``;
- ``<prefix>{budget}:use``  hash: ``rooms``, ``bytes``, ``rooms:<owner>``,
  ``bytes:<owner>``: what is held now.

Reservations are leases, so a relay that dies (or loses Redis) halfway
through leaks nothing for longer than ``reservation_lease_ms``. Every budget
script first sweeps the reservations that have lapsed, and whoever sweeps
ends their rooms (an expired room's log is dropped, any other room is
closed): a room lives only as long as its reservation. A create reserves
under a lease, writes the room, then confirms the reservation until the
room's expiry; when the lease lapsed first (a stalled relay) the room is
deleted and the create fails (UNAVAILABLE). A close first makes the
reservation lapse now, then closes the room, then returns the reservation; a
relay that dies in between leaves the next sweep to finish. The room keys and
the budget keys sit in different Redis Cluster slots, so these steps cannot
be one script. Every write is a Lua script, so the ``rooms.check_append``
rules and the write are atomic across relays; the append script mirrors
``check_append`` rule for rule, and the service tests run against both
backends to keep them equal. The stream is also capped with XADD MAXLEN as a
guard behind the count check.

Spent CreateRoom credentials (``relay.spent``) are kept per coordinator in
``<prefix>{spent:<owner>}`` (sorted set: nonce -> when it may be forgotten),
shared by every relay and kept across relay restarts.

Each blocked reader holds one pooled connection during XREAD BLOCK (bounded by
``RelayConfig.max_block_s`` and by half the client's socket timeout, which
redis-py applies to blocking replies too); cancelling a reader makes redis-py
drop that connection, which is safe.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, cast

import redis.asyncio as aioredis
import redis.exceptions

from relay.backend import BackendUsage
from relay.budget import Quota, Usage, check_reserve
from relay.errors import (
    BackendUnavailableError,
    LimitExceededError,
    RelayError,
    RoomClosedError,
    RoomExistsError,
    RoomExpiredError,
    RoomNotFoundError,
    SequenceError,
)
from relay.rooms import (
    AppendResult,
    Message,
    PartyId,
    ReadResult,
    RoomId,
    RoomLimits,
    RoomSnapshot,
    RoomSpec,
    StoredMessage,
    TokenDigest,
)
from relay.spent import DEFAULT_MAX_SPENT, record_full, replayed

__all__ = ["RedisBackend"]

# KEYS: meta, log, rounds. ARGV: gc_ms, then field/value pairs of the meta hash.
_CREATE_LUA: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
"""

# KEYS: meta. ARGV: party, now_ms.
_JOIN_LUA: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'joined:' .. ARGV[1], ARGV[2])
return 1
"""

# KEYS: meta, log, rounds. ARGV: now_ms, sender, recipient, ceremony, round,
# seq, payload. The same rules, in the same order, as rooms.check_append.
_APPEND_LUA: Final = """
local m = redis.call('HMGET', KEYS[1], 'expires_ms', 'closed', 'max_message_bytes',
  'max_messages', 'max_total_bytes', 'messages', 'total_bytes', 'pos', 'gc_ms',
  'seq:' .. ARGV[2])
if not m[1] then return {'not_found'} end
if m[2] == '1' then return {'closed'} end
if tonumber(ARGV[1]) >= tonumber(m[1]) then return {'expired'} end
if not m[10] then return {'not_found'} end
local size = string.len(ARGV[7])
if size > tonumber(m[3]) then return {'too_large', m[3]} end
local last = tonumber(m[10])
if tonumber(ARGV[6]) ~= last + 1 then return {'seq', tostring(last + 1)} end
local messages = tonumber(m[6]) + 1
if messages > tonumber(m[4]) then return {'count', m[4]} end
local total = tonumber(m[7]) + size
if total > tonumber(m[5]) then return {'bytes', m[5]} end
local pos = tonumber(m[8]) + 1
redis.call('XADD', KEYS[2], 'MAXLEN', tonumber(m[4]) + 1, '0-' .. pos,
  'k', 'm', 's', ARGV[2], 'r', ARGV[3], 'c', ARGV[4], 'n', ARGV[5], 'q', ARGV[6],
  'p', ARGV[7])
redis.call('HSET', KEYS[1], 'messages', messages, 'total_bytes', total, 'pos', pos,
  'seq:' .. ARGV[2], ARGV[6])
redis.call('HINCRBY', KEYS[3], ARGV[4] .. '|' .. ARGV[5] .. '|' .. ARGV[2], 1)
redis.call('PEXPIREAT', KEYS[2], m[9])
redis.call('PEXPIREAT', KEYS[3], m[9])
return {'ok', pos}
"""

# KEYS: meta, log, rounds. close(tombstone_until_ms) returns 0 when the room
# does not exist. Drops the log (but for the close marker) and the rounds.
_CLOSE_FN: Final = """
local function close(tombstone_until)
  local m = redis.call('HMGET', KEYS[1], 'closed', 'pos', 'gc_ms')
  if not m[3] then return 0 end
  if m[1] == '1' then return 1 end
  local pos = tonumber(m[2]) + 1
  redis.call('DEL', KEYS[3])
  redis.call('XTRIM', KEYS[2], 'MAXLEN', 0)
  redis.call('XADD', KEYS[2], '0-' .. pos, 'k', 'c')
  redis.call('HSET', KEYS[1], 'closed', '1', 'pos', pos)
  local until_ms = math.min(tonumber(m[3]), tonumber(tombstone_until))
  redis.call('PEXPIREAT', KEYS[1], until_ms)
  redis.call('PEXPIREAT', KEYS[2], until_ms)
  return 1
end
"""

# ARGV: tombstone_until_ms.
_CLOSE_LUA: Final = _CLOSE_FN + "return close(ARGV[1])\n"

# ARGV: now_ms, tombstone_until_ms. Ends a room whose reservation a sweep
# returned: an expired one loses its log (readers see the expiry), any other
# is closed (its reservation lapsed: a create or close cut short).
_END_LUA: Final = (
    _CLOSE_FN
    + """
local expires = redis.call('HGET', KEYS[1], 'expires_ms')
if not expires then return 0 end
if tonumber(expires) > tonumber(ARGV[1]) then return close(ARGV[2]) end
redis.call('DEL', KEYS[3])
redis.call('XTRIM', KEYS[2], 'MAXLEN', 0)
return 1
"""
)

# The budget scripts. KEYS: exp, res, use (see the module docstring).
_BUDGET_LUA: Final = """
local function release(room)
  local r = redis.call('HGET', KEYS[2], room)
  if not r then return 0 end
  local sep = string.find(r, '|', 1, true)
  local owner, bytes = string.sub(r, 1, sep - 1), tonumber(string.sub(r, sep + 1))
  redis.call('HINCRBY', KEYS[3], 'rooms', -1)
  redis.call('HINCRBY', KEYS[3], 'bytes', -bytes)
  redis.call('HINCRBY', KEYS[3], 'rooms:' .. owner, -1)
  redis.call('HINCRBY', KEYS[3], 'bytes:' .. owner, -bytes)
  redis.call('HDEL', KEYS[2], room)
  redis.call('ZREM', KEYS[1], room)
  return 1
end
local function sweep(now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 256)
  for _, room in ipairs(gone) do release(room) end
  return gone
end
"""

# ARGV: now, room, owner, bytes, lease until, budget rooms, budget bytes, quota
# rooms, quota bytes. The same rule as budget.check_reserve; on a refusal the
# usage goes back so that check_reserve names the quota.
_RESERVE_LUA: Final = (
    _BUDGET_LUA
    + """
local gone = sweep(ARGV[1])
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return {'exists', gone} end
local u = redis.call('HMGET', KEYS[3], 'rooms:' .. ARGV[3], 'bytes:' .. ARGV[3], 'rooms', 'bytes')
for i = 1, 4 do u[i] = tonumber(u[i]) or 0 end
local bytes = tonumber(ARGV[4])
if u[1] + 1 > tonumber(ARGV[8]) or u[2] + bytes > tonumber(ARGV[9])
    or u[3] + 1 > tonumber(ARGV[6]) or u[4] + bytes > tonumber(ARGV[7]) then
  return {'refused', gone, u[1], u[2], u[3], u[4]}
end
redis.call('HINCRBY', KEYS[3], 'rooms', 1)
redis.call('HINCRBY', KEYS[3], 'bytes', bytes)
redis.call('HINCRBY', KEYS[3], 'rooms:' .. ARGV[3], 1)
redis.call('HINCRBY', KEYS[3], 'bytes:' .. ARGV[3], bytes)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. '|' .. ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[2])
return {'ok', gone}
"""
)

# ARGV: now, room ('' for a sweep only). Returns the rooms whose reservation lapsed.
_RELEASE_LUA: Final = (
    _BUDGET_LUA
    + """
if ARGV[2] ~= '' then release(ARGV[2]) end
return sweep(ARGV[1])
"""
)

# ARGV: room, until. Moves a held reservation's lapse time (0: it is not held).
_RESCHEDULE_LUA: Final = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
return 1
"""

# KEYS: the owner's spent set. ARGV: nonce, forget_after, now, max spent.
# The same rule as spent.SpentCredentials.spend.
_SPEND_LUA: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'replayed' end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 'full' end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 'ok'
"""

_APPEND_ERRORS: Final[Mapping[bytes, type[RelayError]]] = {
    b"not_found": RoomNotFoundError,
    b"closed": RoomClosedError,
    b"expired": RoomExpiredError,
    b"too_large": LimitExceededError,
    b"seq": SequenceError,
    b"count": LimitExceededError,
    b"bytes": LimitExceededError,
}
_APPEND_MESSAGES: Final[Mapping[bytes, str]] = {
    b"not_found": "no such room",
    b"closed": "room is closed",
    b"expired": "room has expired",
    b"too_large": "payload exceeds the room limit of {} bytes",
    b"seq": "expected seq {}",
    b"count": "room message limit {} reached",
    b"bytes": "room byte limit {} reached",
}


@asynccontextmanager
async def _redis_errors() -> AsyncIterator[None]:
    """Map Redis connection failures to ``BackendUnavailableError`` (the service
    turns it into UNAVAILABLE); other Redis errors are bugs and stay INTERNAL."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise BackendUnavailableError("relay backend unavailable") from e


def _position(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[1])


class RedisBackend:
    """Rooms in Redis; implements ``relay.backend.Backend``."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "shardkeep:relay:",
        retention_ms: int = 30 * 1000,
        reservation_lease_ms: int = 30 * 1000,
        max_spent_credentials: int = DEFAULT_MAX_SPENT,
    ) -> None:
        """Wrap a redis-py asyncio client (created with ``decode_responses=False``).

        Arguments:
            client: the connection (pool) to use; ``aclose`` closes it.
            prefix: prepended to every key, so tests and deployments can share a
                Redis.
            retention_ms: how long an ended room's tombstone is kept.
            reservation_lease_ms: how long a reservation outlives a relay that
                died while creating or closing its room (longer than the
                relays' clock skew).
            max_spent_credentials: most live CreateRoom credentials remembered
                per coordinator (``relay.spent``).
        """
        self._r = client
        # redis-py 8 applies its socket timeout (default 5 s) to XREAD BLOCK
        # replies too, so a block must end well inside it.
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        self._max_block_ms = int(timeout * 500) if timeout else None
        self._prefix = prefix
        self._retention_ms = retention_ms
        self._lease_ms = reservation_lease_ms
        self._max_spent = max_spent_credentials
        self._budget_keys = [f"{prefix}{{budget}}:{name}" for name in ("exp", "res", "use")]
        self._reserve = client.register_script(_RESERVE_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._reschedule = client.register_script(_RESCHEDULE_LUA)
        self._spend = client.register_script(_SPEND_LUA)
        self._end = client.register_script(_END_LUA)
        self._create = client.register_script(_CREATE_LUA)
        self._join = client.register_script(_JOIN_LUA)
        self._append = client.register_script(_APPEND_LUA)
        self._close = client.register_script(_CLOSE_LUA)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "shardkeep:relay:",
        retention_ms: int = 30 * 1000,
        reservation_lease_ms: int = 30 * 1000,
        max_spent_credentials: int = DEFAULT_MAX_SPENT,
    ) -> RedisBackend:
        """Connect to ``url`` (``redis://host:port/db``) lazily.

        Arguments:
            url: a redis:// or rediss:// URL.
            prefix: key prefix.
            retention_ms: how long an ended room's tombstone is kept.
            reservation_lease_ms: see ``RedisBackend``.
            max_spent_credentials: see ``RedisBackend``.

        Returns:
            The backend; the first command opens the connection.
        """
        return cls(
            aioredis.Redis.from_url(
                url, decode_responses=False, socket_timeout=5.0, socket_connect_timeout=3.0
            ),
            prefix=prefix,
            retention_ms=retention_ms,
            reservation_lease_ms=reservation_lease_ms,
            max_spent_credentials=max_spent_credentials,
        )

    def _keys(self, room_id: RoomId) -> tuple[str, str, str]:
        meta = f"{self._prefix}room:{{{room_id}}}"
        return meta, f"{meta}:log", f"{meta}:rounds"

    async def _end_rooms(self, room_ids: Sequence[bytes], now_ms: int) -> None:
        """End the rooms whose reservations a sweep returned (their own keys)."""
        for room_id in room_ids:
            keys = list(self._keys(RoomId(room_id.decode())))
            await self._end(keys=keys, args=[now_ms, now_ms + self._retention_ms])

    async def spend_credential(
        self, owner: str, nonce: bytes, forget_after_ms: int, now_ms: int
    ) -> None:
        key = f"{self._prefix}{{spent:{owner}}}"
        async with _redis_errors():
            reply = await self._spend(
                keys=[key], args=[nonce, forget_after_ms, now_ms, self._max_spent]
            )
        if reply == b"replayed":
            raise replayed()
        if reply == b"full":
            raise record_full(owner, self._max_spent)

    async def create_room(
        self, spec: RoomSpec, now_ms: int, *, quota: Quota, budget: Quota
    ) -> None:
        meta, log, rounds = self._keys(spec.room_id)
        room_bytes = spec.limits.max_total_bytes
        lease = now_ms + self._lease_ms
        args_: list[str | int] = [now_ms, spec.room_id, spec.owner, room_bytes, lease]
        args_ += [budget.max_rooms, budget.max_bytes]
        args_ += [quota.max_rooms, quota.max_bytes]
        async with _redis_errors():
            reply: list[Any] = await self._reserve(keys=self._budget_keys, args=args_)
            await self._end_rooms(reply[1], now_ms)
        if reply[0] == b"exists":
            raise RoomExistsError("room id in use")
        if reply[0] == b"refused":
            owner_rooms, owner_bytes, rooms, reserved = (int(v) for v in reply[2:6])
            check_reserve(
                budget=budget, total=Usage(rooms, reserved), owner=spec.owner,
                quota=quota, held=Usage(owner_rooms, owner_bytes), room_bytes=room_bytes,
            )  # fmt: skip
            raise RelayError("the reserve script refused a room the budget allows")
        fields: dict[str, str | int | bytes] = {
            "participants": json.dumps(list(spec.participants)),
            "created_ms": spec.created_ms,
            "expires_ms": spec.expires_ms,
            "gc_ms": spec.expires_ms + self._retention_ms,
            "max_message_bytes": spec.limits.max_message_bytes,
            "max_messages": spec.limits.max_messages,
            "max_total_bytes": spec.limits.max_total_bytes,
            "admin": spec.admin_digest,
            "closed": "0",
            "messages": 0,
            "total_bytes": 0,
            "pos": 0,
        }
        for party in spec.participants:
            fields[f"tok:{party}"] = spec.token_digests[party]
            fields[f"seq:{party}"] = 0
        args: list[str | int | bytes] = [spec.expires_ms + self._retention_ms]
        for name, value in fields.items():
            args += [name, value]
        async with _redis_errors():
            created = await self._create(keys=[meta, log, rounds], args=args)
            if not created:
                await self._release(keys=self._budget_keys, args=[now_ms, spec.room_id])
                raise RoomExistsError("room id in use")
            confirmed = await self._reschedule(
                keys=self._budget_keys, args=[spec.room_id, spec.expires_ms]
            )
            if not confirmed:
                # The lease lapsed and a sweep took the reservation: the room
                # was never handed out, so it goes too.
                await self._r.delete(meta, log, rounds)
                raise BackendUnavailableError("the room's reservation lapsed; retry")

    async def snapshot(self, room_id: RoomId) -> RoomSnapshot:
        meta, _, _ = self._keys(room_id)
        async with _redis_errors():
            # decode_responses=False: every key and value is bytes.
            raw = cast("dict[bytes, bytes]", await self._r.hgetall(meta))
        if b"participants" not in raw:
            raise RoomNotFoundError("no such room")
        participants = tuple(PartyId(p) for p in json.loads(raw[b"participants"]))
        spec = RoomSpec(
            room_id=room_id,
            participants=participants,
            created_ms=int(raw[b"created_ms"]),
            expires_ms=int(raw[b"expires_ms"]),
            limits=RoomLimits(
                max_message_bytes=int(raw[b"max_message_bytes"]),
                max_messages=int(raw[b"max_messages"]),
                max_total_bytes=int(raw[b"max_total_bytes"]),
            ),
            token_digests={p: TokenDigest(raw[f"tok:{p}".encode()]) for p in participants},
            admin_digest=TokenDigest(raw[b"admin"]),
        )
        return RoomSnapshot(
            spec=spec,
            closed=raw[b"closed"] == b"1",
            joined=frozenset(p for p in participants if f"joined:{p}".encode() in raw),
            delivered={p: int(raw[f"seq:{p}".encode()]) for p in participants},
            messages=int(raw[b"messages"]),
            total_bytes=int(raw[b"total_bytes"]),
            position=int(raw[b"pos"]),
        )

    async def mark_joined(self, room_id: RoomId, party: PartyId, now_ms: int) -> None:
        meta, _, _ = self._keys(room_id)
        async with _redis_errors():
            found = await self._join(keys=[meta], args=[party, now_ms])
        if not found:
            raise RoomNotFoundError("no such room")

    async def append(
        self, room_id: RoomId, messages: Sequence[Message], now_ms: int
    ) -> AppendResult:
        # One script call per envelope, pipelined into one round trip. Each is
        # atomic; once one is rejected the later ones fail the seq check (or
        # the same room check), so the stored envelopes are always a prefix.
        keys = list(self._keys(room_id))
        async with _redis_errors(), self._r.pipeline(transaction=False) as pipe:
            for m in messages:
                args: list[str | int | bytes] = [now_ms, m.sender, m.recipient]
                args += [m.ceremony_id, m.round, m.seq, m.payload]
                await self._append(keys=keys, args=args, client=pipe)
            replies: list[Any] = await pipe.execute()
        positions: list[int] = []
        for reply in replies:
            status = reply[0]
            if status == b"ok":
                positions.append(int(reply[1]))
                continue
            error = _APPEND_ERRORS.get(status)
            if error is None:
                raise RelayError("unexpected reply from the append script")
            detail = reply[1].decode() if len(reply) > 1 else ""
            return AppendResult(tuple(positions), error(_APPEND_MESSAGES[status].format(detail)))
        return AppendResult(tuple(positions), None)

    async def read(self, room_id: RoomId, after: int, limit: int, max_wait_s: float) -> ReadResult:
        _, log, _ = self._keys(room_id)
        block_ms = int(max_wait_s * 1000)
        if self._max_block_ms is not None:
            block_ms = min(block_ms, self._max_block_ms)
        async with _redis_errors():
            reply = cast(
                "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]",
                await self._r.xread(
                    {log: f"0-{after}"}, count=limit, block=block_ms if block_ms > 0 else None
                ),
            )
        if not reply:
            # Nothing new: make sure the room still exists. After a Redis
            # restart (or a flush) it is gone, and the reader must hear so now
            # rather than wait out the room's TTL.
            async with _redis_errors():
                exists = await self._r.exists(self._keys(room_id)[0])
            if not exists:
                raise RoomNotFoundError("no such room")
        entries: list[StoredMessage] = []
        closed = False
        for _stream, items in reply or ():
            for entry_id, f in items:
                if f[b"k"] == b"c":
                    closed = True
                    break
                message = Message(
                    sender=PartyId(f[b"s"].decode()),
                    recipient=PartyId(f[b"r"].decode()) if f[b"r"] else "",
                    ceremony_id=f[b"c"].decode(),
                    round=int(f[b"n"]),
                    seq=int(f[b"q"]),
                    payload=f[b"p"],
                )
                entries.append(StoredMessage(position=_position(entry_id), message=message))
        return ReadResult(entries=tuple(entries), closed=closed)

    async def delivered(
        self, room_id: RoomId, ceremony_id: str, round_: int, parties: Sequence[PartyId]
    ) -> frozenset[PartyId]:
        _, _, rounds = self._keys(room_id)
        async with _redis_errors():
            counts = await self._r.hmget(rounds, [f"{ceremony_id}|{round_}|{p}" for p in parties])
        return frozenset(p for p, c in zip(parties, counts, strict=True) if c is not None)

    async def close_room(self, room_id: RoomId, now_ms: int) -> None:
        keys = list(self._keys(room_id))
        async with _redis_errors():
            # Lapse first: should this relay die before the reservation is
            # returned, the next sweep returns it and closes the room.
            await self._reschedule(keys=self._budget_keys, args=[room_id, now_ms])
            found = await self._close(keys=keys, args=[now_ms + self._retention_ms])
            gone = await self._release(keys=self._budget_keys, args=[now_ms, room_id])
            await self._end_rooms(gone, now_ms)
        if not found:
            raise RoomNotFoundError("no such room")

    async def usage(self, now_ms: int) -> BackendUsage:
        async with _redis_errors():
            gone = await self._release(keys=self._budget_keys, args=[now_ms, ""])
            await self._end_rooms(gone, now_ms)
            rooms, reserved = await self._r.hmget(self._budget_keys[2], ["rooms", "bytes"])
        return BackendUsage(
            rooms=int(rooms or 0), reserved_bytes=int(reserved or 0), stored_bytes=-1,
            tombstones=-1,
        )  # fmt: skip

    async def aclose(self) -> None:
        await self._r.aclose()
