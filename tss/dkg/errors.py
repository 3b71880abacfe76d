"""ChillDKG's own exceptions, mapped onto the project's taxonomy (tss.errors).

The draft BIP's reference (``chilldkg_ref/util.py`` and ``chilldkg.py``) defines
two families: bad input (``ValueError`` subclasses) and blame
(``ProtocolError``). Here the input errors derive from ``InputError`` (itself a
``ValueError``) and the blame errors from ``ProtocolError`` with ``culprits``.
``FaultyParticipantError``, ``FaultyCoordinatorError`` and
``UnknownFaultyParticipantOrCoordinatorError`` are the project's own classes in
tss.errors; only the DKG-specific ones live here.

One deliberate difference: where the reference raises a bare ``ValueError`` for
a peer message of the wrong length, we raise ``ParticipantMsgLengthError`` or
``CoordinatorMsgLengthError``. Both are still ``ValueError``\\ s (code written
against the BIP keeps working) but also blame the sender, as every other
malformed message does.
"""

from __future__ import annotations

from tss.errors import (
    FaultyCoordinatorError,
    FaultyParticipantError,
    InputError,
    InvalidEncodingError,
    ProtocolError,
)

__all__ = [
    "HostSeckeyError",
    "SessionParamsError",
    "InvalidHostPubkeyError",
    "DuplicateHostPubkeyError",
    "ThresholdOrCountError",
    "RandomnessError",
    "RecoveryDataError",
    "FaultyParticipantOrCoordinatorError",
    "ParticipantMsgLengthError",
    "CoordinatorMsgLengthError",
    "InvalidRecoveryAckError",
    "MessageLengthError",
]


### Bad input (the caller's fault)


class HostSeckeyError(InputError):
    """The host secret key is invalid (0 or >= n), or matches no host public key."""


class SessionParamsError(InputError):
    """Base class of invalid ``SessionParams``."""


class InvalidHostPubkeyError(SessionParamsError):
    """A host public key is not a valid compressed point.

    Attributes:
        participant: index of the participant whose host public key is invalid.
    """

    def __init__(self, participant: int) -> None:
        self.participant = participant
        super().__init__(f"host public key of participant {participant} is invalid")


class DuplicateHostPubkeyError(SessionParamsError):
    """Two participants have the same host public key.

    Attributes:
        participant1: index of the first occurrence.
        participant2: index of the second occurrence.
    """

    def __init__(self, participant1: int, participant2: int) -> None:
        self.participant1 = participant1
        self.participant2 = participant2
        super().__init__(f"participants {participant1} and {participant2} share a host public key")


class ThresholdOrCountError(SessionParamsError):
    """``1 <= t <= len(hostpubkeys) <= 2**32 - 1`` does not hold."""


class RandomnessError(InputError):
    """The randomness is all zeros: a broken random number generator."""


class RecoveryDataError(InputError):
    """The recovery data does not parse, has invalid parameters or an invalid certificate."""


class MessageLengthError(InvalidEncodingError):
    """A message does not have the length its parameters fix (raised by decoders)."""


### Blame (a received message is invalid)


class FaultyParticipantOrCoordinatorError(ProtocolError):
    """A participant seems faulty, but the coordinator may have framed it.

    Raised by participants only (ChillDKG ``FaultyParticipantOrCoordinatorError``):
    assuming the raising participant is honest, either ``participant`` or the
    coordinator deviated from the protocol. ``culprits`` names ``participant``.

    Attributes:
        participant: index of the suspected participant.
    """

    def __init__(self, participant: int, message: str) -> None:
        self.participant = participant
        super().__init__(
            f"participant {participant} (or the coordinator): {message}", (participant,)
        )


class ParticipantMsgLengthError(FaultyParticipantError, ValueError):
    """A participant's message has the wrong length (a ``ValueError`` in the reference)."""


class CoordinatorMsgLengthError(FaultyCoordinatorError, ValueError):
    """The coordinator's message has the wrong length (a ``ValueError`` in the reference)."""


class InvalidRecoveryAckError(FaultyParticipantError):
    """A recovery acknowledgment signature is invalid.

    The DKG itself succeeded; it only cannot be confirmed that ``participant``
    holds the recovery data.
    """
