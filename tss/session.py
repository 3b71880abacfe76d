"""A ceremony over end-to-end encrypted channels: what a party actually puts on the relay.

``SecureSession`` joins a ``tss.ceremony.Ceremony`` to ``tss.channel``: every
outgoing ``Message`` is sealed to its recipient (a broadcast once per peer) and
every incoming envelope is opened, its routing and order checked, before the
ceremony sees it. Both the enclave and the client SDK drive ceremonies through
this class, so neither the relay nor the host can read, forge or replay what
the parties say. Still sans-IO: bytes in, bytes out.

Blame: an envelope the channel rejects (forged, corrupted, replayed,
misaddressed) is dropped and counted, never blamed on the sender its header
claims, since the relay can write any header. The ceremony keeps waiting for
the genuine message; if it never comes, the caller's deadline reports the
non-delivery. Only what a peer demonstrably sealed reaches the ceremony, so
every culprit the ceremony names is named for its own words.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Generic, TypeVar

from tss.ceremony import Ceremony, Message, Random
from tss.channel import (
    ChannelReceiver,
    ChannelSender,
    ChannelStreamError,
    MisroutedEnvelopeError,
    Roster,
    StaticKey,
)
from tss.errors import InputError

__all__ = ["Outbound", "SecureSession"]

ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Outbound:
    """One sealed envelope to hand to the relay.

    Attributes:
        round: the ceremony round (routing metadata, also bound inside the envelope).
        recipient: the recipient's participant index.
        recipient_id: the recipient's party id (the relay's address).
        envelope: the sealed ``tss.channel`` envelope bytes.
    """

    round: int
    recipient: int
    recipient_id: str
    envelope: bytes

    def __repr__(self) -> str:
        return f"Outbound(round={self.round}, to={self.recipient}, <{len(self.envelope)} bytes>)"


class SecureSession(Generic[ResultT]):
    """Drive one party's ceremony over sealed envelopes.

    Arguments:
        ceremony: this party's ceremony object (its ``parties`` are the roster's indices).
        key: this party's static X25519 key.
        roster: every party of the ceremony (index, party id, static key).
        room_id, ceremony_id: bound into every envelope.
        rand: fresh randomness for sealing.
        context: bound into every envelope too (``tss.channel``): the service
            passes the enclave's single-use request challenge, so envelopes of
            another session under the same ids never open in this one.
    """

    def __init__(
        self,
        ceremony: Ceremony[ResultT],
        key: StaticKey,
        roster: Roster,
        room_id: str,
        ceremony_id: str,
        rand: Random,
        *,
        context: bytes = b"",
    ) -> None:
        if tuple(roster.indices) != tuple(sorted(ceremony.parties)):
            raise InputError("the roster must list exactly the ceremony's parties")
        self.ceremony = ceremony
        self._roster = roster
        self._rand = rand
        self._sender = ChannelSender(key, roster, room_id, ceremony_id, context=context)
        self._receiver = ChannelReceiver(
            key, roster, room_id, ceremony_id, max_round=ceremony.rounds, context=context
        )
        if self._sender.me != ceremony.me:
            raise InputError("the static key is not the ceremony party's")
        self.dropped: Counter[str] = Counter()
        """Envelopes the channel rejected, by reason ("authentication", "replay", ...)."""
        self.last_dropped: MisroutedEnvelopeError | ChannelStreamError | None = None

    @property
    def done(self) -> bool:
        return self.ceremony.done

    @property
    def result(self) -> ResultT:
        return self.ceremony.result

    def start(self) -> list[Outbound]:
        """Seal the ceremony's first messages."""
        return self._seal(self.ceremony.start())

    def confirm_saved(self) -> list[Outbound]:
        """Seal the messages a key change withheld until its pending share was saved
        (``Ceremony.confirm_saved``)."""
        return self._seal(self.ceremony.confirm_saved())

    def receive(self, envelope: bytes) -> list[Outbound]:
        """Open one envelope from the relay, feed it to the ceremony, seal the answers.

        An envelope the channel rejects is dropped (``dropped``, ``last_dropped``)
        and nothing is returned: no party is blamed for bytes the relay can forge.

        Raises:
            ProtocolError, SessionStateError: from the ceremony, about what a
                peer authentically sent.
        """
        try:
            opened = self._receiver.open(envelope)
        except (MisroutedEnvelopeError, ChannelStreamError) as e:
            self.dropped[e.reason] += 1
            self.last_dropped = e
            return []
        message = Message(opened.header.round, opened.sender, self.ceremony.me, opened.plaintext)
        return self._seal(self.ceremony.receive(message))

    def _seal(self, messages: list[Message]) -> list[Outbound]:
        out = []
        for m in messages:
            if m.recipient is None:
                sealed = self._sender.seal_broadcast(m.round, m.payload, self._rand(32))
            else:
                sealed = {
                    m.recipient: self._sender.seal(m.recipient, m.round, m.payload, self._rand(32))
                }
            out += [
                Outbound(m.round, peer, self._roster.party_id_of(peer), envelope)
                for peer, envelope in sealed.items()
            ]
        return out
