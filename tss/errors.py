"""The error taxonomy of the protocol core.

Two families, as in the ChillDKG and BIP-445 references: ``InputError`` when the
caller broke a precondition, ``ProtocolError`` when a received message is
invalid, with the parties to blame carried as data. Messages never contain key
material.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ShardkeepError",
    "InputError",
    "InvalidEncodingError",
    "SessionStateError",
    "StateCopyError",
    "PairSetupError",
    "InternalError",
    "ProtocolError",
    "FaultyParticipantError",
    "FaultyCoordinatorError",
    "UnknownFaultyParticipantOrCoordinatorError",
    "ViewMismatchError",
    "culprits",
]


class ShardkeepError(Exception):
    """Root of the project's errors."""


class InputError(ShardkeepError, ValueError):
    """The caller broke a precondition (bad argument, wrong length, wrong type)."""


class InvalidEncodingError(InputError):
    """Bytes that do not decode to the expected value (point, scalar, message).

    Raised by decoders; protocol code that decodes a peer's message re-raises it
    as ``FaultyParticipantError`` naming that peer.
    """


class SessionStateError(ShardkeepError):
    """Secret state reused, or a step called out of order."""


class StateCopyError(SessionStateError, TypeError):
    """An attempt to copy, pickle or rebuild single-use secret state (``tss.single_use``)."""


class PairSetupError(SessionStateError):
    """The DKLs23 setup of the pair with ``peer`` is missing or burned: run a new pair setup."""

    def __init__(self, peer: int, message: str) -> None:
        self.peer = peer
        super().__init__(message)


class InternalError(ShardkeepError):
    """A self-check failed: a bug or a fault in this process, never a peer's."""


class ProtocolError(ShardkeepError):
    """A received message is invalid; ``culprits`` names the parties to blame."""

    def __init__(self, message: str, culprits: Iterable[int] = ()) -> None:
        self.culprits: tuple[int, ...] = tuple(sorted(set(culprits)))
        if self.culprits:
            message = f"{message} (culprits: {', '.join(map(str, self.culprits))})"
        super().__init__(message)


class FaultyParticipantError(ProtocolError):
    """One participant sent an invalid message."""

    def __init__(self, participant: int, message: str) -> None:
        self.participant = participant
        super().__init__(f"participant {participant}: {message}", (participant,))


class FaultyCoordinatorError(ProtocolError):
    """The coordinator (or relay) sent an invalid or inconsistent message."""


class UnknownFaultyParticipantOrCoordinatorError(ProtocolError):
    """Either a participant or the coordinator cheated; ``inv_data`` lets an
    investigation phase find out which (ChillDKG ``participant_investigate``)."""

    def __init__(self, message: str, inv_data: object = None) -> None:
        self.inv_data = inv_data
        super().__init__(message)


class ViewMismatchError(ProtocolError):
    """Parties saw different messages from someone, and nothing they hold proves
    who sent them: the ceremony aborts and blames no one (a party that
    equivocates, and one that misreports what it saw, look the same here)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def culprits(error: BaseException) -> tuple[int, ...]:
    """Return the parties an error blames (empty when it blames none)."""
    return error.culprits if isinstance(error, ProtocolError) else ()
