"""One joined party in one room, whatever carries it: a ``Join`` stream or a
channel of a ``Session`` stream (docs/transport.md).

``JoinedParty.store`` checks a batch of the party's envelopes and appends it
to the room log; ``JoinedParty.follow`` tails the log and hands on what is
addressed to the party until the room ends. Both transports call these, so
the relay's rules (routing, sender stamping, sequence, limits) have one home.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from relay import rooms
from relay.backend import Backend
from relay.errors import RelayError
from relay.metrics import RelayMetrics
from relay.rooms import Message, PartyId, RelayConfig, RoomSpec
from shardkeep.v1 import envelope_pb2, relay_pb2

__all__ = ["JoinedParty", "Stored", "delivery"]

Clock = Callable[[], int]


def delivery(room_id: str, stored: rooms.StoredMessage) -> relay_pb2.EnvelopeDelivery:
    """The wire form of a stored envelope for its recipient."""
    m = stored.message
    envelope = envelope_pb2.Envelope(
        room_id=room_id,
        ceremony_id=m.ceremony_id,
        round=m.round,
        sender=m.sender,
        recipient=m.recipient,
        seq=m.seq,
        payload=m.payload,
    )
    return relay_pb2.EnvelopeDelivery(envelope=envelope, position=stored.position)


@dataclass(frozen=True)
class Stored:
    """What ``JoinedParty.store`` did with a batch: the (seq, position) of each
    envelope stored, in order, then the error that stopped the rest, with the
    seq of the first envelope not stored."""

    acks: tuple[tuple[int, int], ...]
    error: RelayError | None
    rejected_seq: int = 0


@dataclass(frozen=True)
class JoinedParty:
    """An authenticated party of a room, and what the relay needs to serve it."""

    spec: RoomSpec
    party: PartyId
    backend: Backend
    metrics: RelayMetrics
    config: RelayConfig
    clock: Clock

    async def store(self, envelopes: Sequence[envelope_pb2.Envelope]) -> Stored:
        """Check the envelopes' routing, stamp the sender and append them in order.

        Returns:
            The envelopes stored (a prefix of the batch) and what stopped the rest.
        """
        messages: list[Message] = []
        rejected: RelayError | None = None
        for e in envelopes:
            # Routing checks before anything is stored; the relay stamps the
            # authenticated sender.
            try:
                rooms.check_routing(
                    self.spec, self.party, e.sender, e.room_id, e.recipient, e.ceremony_id, e.round
                )
            except RelayError as error:
                rejected = error
                break
            messages.append(
                Message(
                    sender=self.party,
                    recipient=PartyId(e.recipient) if e.recipient else "",
                    ceremony_id=e.ceremony_id,
                    round=e.round,
                    seq=e.seq,
                    payload=e.payload,
                )
            )
        positions: tuple[int, ...] = ()
        if messages:
            result = await self.backend.append(self.spec.room_id, messages, self.clock())
            positions = result.positions
            self.metrics.envelopes.inc(len(positions))
            self.metrics.envelope_bytes.inc(sum(len(m.payload) for m in messages[: len(positions)]))
            rejected = result.error or rejected
        acks = tuple((m.seq, p) for m, p in zip(messages, positions, strict=False))
        rejected_seq = envelopes[len(acks)].seq if rejected is not None else 0
        return Stored(acks, rejected, rejected_seq)

    async def follow(
        self,
        cursor: int,
        emit: Callable[[list[relay_pb2.EnvelopeDelivery]], Awaitable[None]],
    ) -> relay_pb2.RoomEndReason:
        """Tail the room log after ``cursor``; ``emit`` each batch of envelopes
        addressed to the party (never an empty one). Returns when the room ends.

        Raises:
            RelayError: the backend's (e.g. the room collected under the party).
        """
        room_id, expires = self.spec.room_id, self.spec.expires_ms
        while True:
            now = self.clock()
            if now >= expires:
                return relay_pb2.ROOM_END_REASON_EXPIRED
            wait_s = min((expires - now) / 1000, self.config.max_block_s)
            batch = await self.backend.read(room_id, cursor, self.config.read_batch, wait_s)
            mine = [
                delivery(room_id, stored)
                for stored in batch.entries
                if rooms.is_addressed_to(stored.message, self.party)
            ]
            if batch.entries:
                cursor = batch.entries[-1].position
            if mine:
                await emit(mine)
            if batch.closed:
                return relay_pb2.ROOM_END_REASON_CLOSED
