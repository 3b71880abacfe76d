"""The shape every ceremony takes: round-based, sans-IO, one object per party.

A ceremony object is driven by its caller: ``start()`` returns the first
messages to send; ``receive()`` takes one message, checks its routing before any
cryptography, buffers it, and once every expected
message of the round has arrived runs the round and returns the next messages.
When ``done`` is set, ``result`` holds the outcome. Randomness comes from the
``Random`` function the caller passes in.

Key changes (``tss.reshare``) and keygen (``tss.keygen``) pause once: before
a seat releases its certificate signature, ``pending`` holds the new share and
``awaiting_save`` is set; the caller stores the share durably, then ``confirm_saved()`` returns the
held messages (``tss.certificate``). Messages arriving meanwhile are buffered.

The same objects run in one process (``tss.local``, routing in memory) and in
the service (the enclave and client SDK encrypt each ``Message`` into a relay
envelope), so tests exercise the code the service runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tss.certificate import Pending
from tss.errors import FaultyParticipantError, InputError, SessionStateError
from tss.group import checked_points

__all__ = ["Random", "Message", "Ceremony", "run_in_memory"]

Random = Callable[[int], bytes]
"""A source of fresh random bytes (``secrets.token_bytes`` in the shell, a seeded PRG in tests)."""

ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Message:
    """One ceremony message. ``recipient`` None means every other party of the ceremony."""

    round: int
    sender: int
    recipient: int | None
    payload: bytes = b""

    def __repr__(self) -> str:  # payloads may be encrypted shares: print their size only
        return (
            f"Message(round={self.round}, sender={self.sender}, "
            f"recipient={self.recipient}, payload=<{len(self.payload)} bytes>)"
        )


class Ceremony(ABC, Generic[ResultT]):
    """One party's side of a ceremony among ``parties`` (0-based ids, ``me`` among them).

    Subclasses define ``rounds`` (how many rounds expect messages), which
    senders each round expects (``_expected_senders``) and the round logic
    (``_start`` and ``_run_round``).
    """

    rounds: int

    def __init__(self, me: int, parties: Sequence[int], rand: Random) -> None:
        if len(set(parties)) != len(parties) or me not in parties:
            raise InputError("parties must be distinct and include this party")
        self.me = me
        self.parties = tuple(parties)
        self._rand = rand
        self._round = 0  # the round whose messages we are collecting; 0 = not started
        self._inbox: dict[int, dict[int, bytes]] = {}
        self._result: ResultT | None = None
        self._failed = False
        self._pending: Pending | None = None
        self._held: list[Message] | None = None  # withheld until the pending share is saved
        self._checked_points: set[bytes] = set()  # tss.group.checked_points

    # --- what subclasses implement ---------------------------------------------

    @abstractmethod
    def _start(self) -> list[Message]:
        """Messages of round 1."""

    @abstractmethod
    def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        """Process every message of ``round_`` and return round ``round_ + 1``'s
        messages; the last round calls ``_finish``."""

    def _expected_senders(self, round_: int) -> Sequence[int]:
        """Who sends to us in ``round_`` (default: every other party)."""
        return [p for p in self.parties if p != self.me]

    def _finish(self, result: ResultT) -> None:
        self._result = result

    def _hold(self, pending: Pending, messages: list[Message]) -> list[Message]:
        """Withhold ``messages`` until the caller saved ``pending`` (``confirm_saved``)."""
        self._pending = pending
        self._held = messages
        return []

    # --- the driver -------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> ResultT:
        if self._result is None:
            raise SessionStateError("the ceremony has not finished")
        return self._result

    @property
    def current_round(self) -> int:
        return self._round

    @property
    def pending(self) -> Pending | None:
        """A key change's or keygen's new share, once it exists (it stays set after
        ``confirm_saved``)."""
        return self._pending

    @property
    def awaiting_save(self) -> bool:
        """Whether messages are withheld until ``confirm_saved``."""
        return self._held is not None

    def confirm_saved(self) -> list[Message]:
        """The pending share is durably stored: release the withheld messages.

        Returns:
            The withheld messages, then any a now-complete round yields.

        Raises:
            SessionStateError: nothing is withheld, or the ceremony failed.
        """
        if self._failed:
            raise SessionStateError("the ceremony failed; start a new one")
        if self._held is None:
            raise SessionStateError("no pending share awaits saving")
        held, self._held = self._held, None
        return held + self._advance()

    def start(self) -> list[Message]:
        """Begin the ceremony; call once."""
        if self._round != 0:
            raise SessionStateError("ceremony already started")
        self._round = 1
        return self._guarded(self._start) + self._advance()

    def receive(self, message: Message) -> list[Message]:
        """Take one message; return what to send (empty until a round completes).

        Raises:
            SessionStateError: not started, already finished or failed.
            FaultyParticipantError: a message not fitting the ceremony (unknown
                sender, wrong recipient, a round already passed, a duplicate).
            ProtocolError: a round found a faulty message (culprits named).
        """
        if self._failed:
            raise SessionStateError("the ceremony failed; start a new one")
        if self._round == 0 or self.done:
            raise SessionStateError("ceremony not running")
        sender = message.sender
        if sender not in self.parties or sender == self.me:
            raise FaultyParticipantError(sender, "not a peer in this ceremony")
        if message.recipient not in (None, self.me):
            raise FaultyParticipantError(sender, "message addressed to another party")
        if not self._round <= message.round <= self.rounds:
            raise FaultyParticipantError(sender, f"message for round {message.round} out of order")
        if sender not in self._expected_senders(message.round):
            raise FaultyParticipantError(sender, f"not expected to send in round {message.round}")
        box = self._inbox.setdefault(message.round, {})
        if sender in box:
            raise FaultyParticipantError(sender, f"second message in round {message.round}")
        box[sender] = message.payload
        return self._advance()

    def _advance(self) -> list[Message]:
        """Run every round whose messages have all arrived (none needed without peers)."""
        out: list[Message] = []
        while (
            not self.done
            and self._held is None
            and self._round <= self.rounds
            and self._round_complete(self._round)
        ):
            payloads = self._inbox.pop(self._round, {})
            round_ = self._round
            self._round += 1
            out += self._guarded(self._run_round, round_, payloads)
        return out

    def _round_complete(self, round_: int) -> bool:
        expected = set(self._expected_senders(round_))
        return expected.issubset(self._inbox.get(round_, {}))

    def _guarded(self, step: Callable[..., list[Message]], *args: object) -> list[Message]:
        """Run a step; any failure leaves the ceremony unusable (no retry with the same secrets).

        Points this party checked or made in an earlier step are not checked again.
        """
        try:
            with checked_points(self._checked_points):
                return step(*args)
        except BaseException:
            self._failed = True
            raise

    # --- embedding one ceremony's rounds in another's ----------------------------

    def first_messages(self) -> list[Message]:
        """For an embedding ceremony: mark this one started and return its round-1 messages."""
        if self._round != 0:
            raise SessionStateError("ceremony already started")
        self._round = 1
        return self._guarded(self._start)

    def step(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        """For an embedding ceremony, which routed and collected ``round_``'s messages itself."""
        if round_ != self._round or self.done:
            raise SessionStateError(f"embedded ceremony is not at round {round_}")
        self._round += 1
        return self._guarded(self._run_round, round_, payloads)

    def _broadcast(self, round_: int, payload: bytes) -> list[Message]:
        return [Message(round_, self.me, None, payload)]

    def _p2p(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
        return [Message(round_, self.me, peer, data) for peer, data in payloads.items()]


def run_in_memory(ceremonies: Sequence[Ceremony[ResultT]]) -> list[ResultT]:
    """Run one ceremony object per party to completion, routing messages in memory.

    Broadcasts go to every other party of the sender's ceremony. A pending
    share counts as saved at once (it is in this process's memory, as the
    results are). Used by ``tss.local`` and tests; raises whatever a party raises.
    """
    by_id = {c.me: c for c in ceremonies}
    queue: deque[Message] = deque()
    for c in ceremonies:
        queue += c.start()
    while True:
        for c in ceremonies:
            if c.awaiting_save:
                queue += c.confirm_saved()
        if not queue:
            break
        message = queue.popleft()
        sender = by_id[message.sender]
        targets = (
            [p for p in sender.parties if p != message.sender]
            if message.recipient is None
            else [message.recipient]
        )
        for target in targets:
            if target not in by_id:
                raise InputError(f"no party {target} in this run")
            queue += by_id[target].receive(message)
    unfinished = [c.me for c in ceremonies if not c.done]
    if unfinished:
        raise SessionStateError(f"parties {unfinished} did not finish")
    return [c.result for c in ceremonies]
