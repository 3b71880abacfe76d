"""SimplPedPop: Pedersen DKG with proofs of possession (ChillDKG draft BIP, layer 1).

Chu, Gerhart, Ruffing, Schröder, "Practical Schnorr Threshold Signatures Without
the Algebraic Group Model" (eprint 2023/899), Section 4, with the modifications
of the draft BIP section "DKG Protocol SimplPedPop": seeded randomness, public
shares in the output, commitments aggregated by an untrusted coordinator, the
Taproot tweak of the threshold key, and no proofs of possession in the
equality-check input. The key lives in the group of a ``tss.dkg.suite.DkgSuite``
(secp256k1, as in the draft BIP, unless given): its encodings, proofs of
possession and tweak.

A building block, not an API: use tss.dkg.chilldkg. The secret shares returned
by ``participant_step1`` must reach their recipients confidentially, which
EncPedPop arranges. Messages go in and out as bytes; the ``*_parsed`` variants
take messages an upper layer has already decoded, so no point is decoded twice.

Error policy (reference simplpedpop.py): the coordinator blames a participant
whose message does not decode (``FaultyParticipantError``); a participant blames
the coordinator for an undecodable or inconsistent message
(``FaultyCoordinatorError``), suspects participant ``j`` for an invalid
commitment or proof of possession (``FaultyParticipantOrCoordinatorError``), and
cannot tell who sent a bad share without an investigation
(``UnknownFaultyParticipantOrCoordinatorError``).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NoReturn

from tss.dkg.errors import (
    CoordinatorMsgLengthError,
    FaultyParticipantOrCoordinatorError,
    MessageLengthError,
    ParticipantMsgLengthError,
)
from tss.dkg.pop import Pop
from tss.dkg.suite import SECP256K1_DKG, DkgSuite
from tss.dkg.vss import VSSCommitment, generate_coefficients, secshares, verify_secshare
from tss.errors import (
    FaultyCoordinatorError,
    FaultyParticipantError,
    InputError,
    InternalError,
    InvalidEncodingError,
    UnknownFaultyParticipantOrCoordinatorError,
)

__all__ = [
    # Functions
    "participant_step1",
    "participant_step2",
    "participant_step2_parsed",
    "participant_investigate",
    "coordinator_step",
    "coordinator_step_parsed",
    "coordinator_investigate",
    # Exceptions
    "SecshareSumError",
    # Types
    "Pop",
    "ParticipantMsg",
    "CoordinatorMsg",
    "CoordinatorInvestigationMsg",
    "ParticipantState",
    "ParticipantInvestigationData",
    "SimplOutput",
]


class SecshareSumError(ValueError):
    """Internal: the partial secret shares do not sum to the secret share.

    EncPedPop turns it into ``FaultyCoordinatorError`` (reference encpedpop.py).
    """


### Messages
#
# Points take ``suite.point_size`` bytes (E below: 33 on secp256k1, 32 on
# edwards25519), proofs of possession 64.


def _points(data: bytes, count: int, suite: DkgSuite) -> list[Any]:
    size, g = suite.point_size, suite.group
    return [g.decode_ext(bytes(data[i : i + size])) for i in range(0, size * count, size)]


def _points_to_bytes(points: Sequence[Any], suite: DkgSuite) -> bytes:
    return b"".join(suite.group.encode_ext(p) for p in points)


@dataclass(frozen=True)
class ParticipantMsg:
    """A participant's message: VSS commitment (E*t bytes) || proof of possession (64)."""

    com: VSSCommitment
    pop: Pop

    @staticmethod
    def len_bytes(t: int, suite: DkgSuite = SECP256K1_DKG) -> int:
        return suite.point_size * t + 64

    @staticmethod
    def from_bytes(data: bytes, t: int, suite: DkgSuite = SECP256K1_DKG) -> ParticipantMsg:
        """Raises MessageLengthError or InvalidEncodingError."""
        if len(data) != ParticipantMsg.len_bytes(t, suite):
            raise MessageLengthError("SimplPedPop participant message has the wrong length")
        cut = suite.point_size * t
        com = VSSCommitment.from_bytes(data[:cut], t, suite.group)
        return ParticipantMsg(com, Pop(bytes(data[cut:])))

    def to_bytes(self) -> bytes:
        return self.com.to_bytes() + self.pop


@dataclass(frozen=True)
class CoordinatorMsg:
    """coms_to_secrets (E*n) || sum_coms_to_nonconst_terms (E*(t-1)) || pops (64n)."""

    coms_to_secrets: tuple[Any, ...]
    sum_coms_to_nonconst_terms: tuple[Any, ...]
    pops: tuple[Pop, ...]
    suite: DkgSuite = field(default=SECP256K1_DKG, compare=False, repr=False)

    @staticmethod
    def len_bytes(t: int, n: int, suite: DkgSuite = SECP256K1_DKG) -> int:
        return (suite.point_size + 64) * n + suite.point_size * (t - 1)

    @staticmethod
    def from_bytes(data: bytes, t: int, n: int, suite: DkgSuite = SECP256K1_DKG) -> CoordinatorMsg:
        """Raises MessageLengthError or InvalidEncodingError."""
        if len(data) != CoordinatorMsg.len_bytes(t, n, suite):
            raise MessageLengthError("SimplPedPop coordinator message has the wrong length")
        points = _points(data, n + t - 1, suite)
        rest = data[suite.point_size * (n + t - 1) :]
        pops = tuple(Pop(bytes(rest[i : i + 64])) for i in range(0, 64 * n, 64))
        return CoordinatorMsg(tuple(points[:n]), tuple(points[n:]), pops, suite)

    def to_bytes(self) -> bytes:
        points = (*self.coms_to_secrets, *self.sum_coms_to_nonconst_terms)
        return _points_to_bytes(points, self.suite) + b"".join(self.pops)

    # Derived once per message object: a party that is its own coordinator
    # (tss.keygen) hands the same object to its participant step.

    @cached_property
    def sum_coms(self) -> VSSCommitment:
        """The summed commitment ``(sum of coms_to_secrets, *sum_coms_to_nonconst_terms)``."""
        g = self.suite.group
        return VSSCommitment((g.sum(self.coms_to_secrets), *self.sum_coms_to_nonconst_terms), g)

    @cached_property
    def tweaked(self) -> tuple[VSSCommitment, int, Any, tuple[Any, ...]]:
        """The suite's tweak of ``sum_coms``: tweaked commitment, tweak, tweak * G and
        every participant's tweaked public share. Only for a sum that is not the identity."""
        sum_coms_tweaked, tweak, pubtweak = self.sum_coms.tweak(self.suite)
        pubshares = tuple(sum_coms_tweaked.pubshares(len(self.coms_to_secrets)))
        return sum_coms_tweaked, tweak, pubtweak, pubshares


@dataclass(frozen=True)
class CoordinatorInvestigationMsg:
    """partial_pubshares (E*n): each participant's contribution to one pubshare."""

    partial_pubshares: tuple[Any, ...]
    suite: DkgSuite = field(default=SECP256K1_DKG, compare=False, repr=False)

    @staticmethod
    def len_bytes(n: int, suite: DkgSuite = SECP256K1_DKG) -> int:
        return suite.point_size * n

    @staticmethod
    def from_bytes(
        data: bytes, n: int, suite: DkgSuite = SECP256K1_DKG
    ) -> CoordinatorInvestigationMsg:
        """Raises MessageLengthError or InvalidEncodingError."""
        if len(data) != suite.point_size * n:
            raise MessageLengthError("SimplPedPop investigation message has the wrong length")
        return CoordinatorInvestigationMsg(tuple(_points(data, n, suite)), suite)

    def to_bytes(self) -> bytes:
        return _points_to_bytes(self.partial_pubshares, self.suite)


### Outputs and states


@dataclass(frozen=True, eq=False)
class SimplOutput:
    """What a SimplPedPop party deems the result, before the equality check.

    Attributes:
        secshare: the participant's (tweaked) secret share, None for the coordinator.
        thresh_pk: the (tweaked) threshold public key.
        pubshares: every participant's (tweaked) public share, by index.
    """

    secshare: int | None = field(repr=False)
    thresh_pk: Any
    pubshares: tuple[Any, ...]


@dataclass(frozen=True)
class ParticipantState:
    t: int
    n: int
    participant: int
    com_to_secret: Any
    suite: DkgSuite = field(default=SECP256K1_DKG, compare=False, repr=False)


@dataclass(frozen=True, eq=False)
class ParticipantInvestigationData:
    """What ``participant_investigate`` needs after a failed share check."""

    n: int
    participant: int
    secshare: int = field(repr=False)
    pubshare: Any
    suite: DkgSuite = field(default=SECP256K1_DKG, repr=False)


def _eq_input(t: int, sum_coms: VSSCommitment) -> bytes:
    # SimplPedPop's transcript: t || sum_coms (draft BIP, end of step 3)
    return t.to_bytes(4, "big") + sum_coms.to_bytes()


### Participant


def participant_step1(
    seed: bytes,
    t: int,
    n: int,
    participant: int,
    aux_rand: bytes,
    suite: DkgSuite = SECP256K1_DKG,
) -> tuple[ParticipantState, bytes, list[int]]:
    """Deal a fresh polynomial: commitment and proof of possession, plus the shares.

    Arguments:
        seed: 32 secret bytes from which the polynomial is derived.
        t: threshold, 1 <= t <= n.
        n: number of participants.
        participant: this participant's index, 0 <= participant < n.
        aux_rand: 32 bytes of auxiliary randomness for the proof of possession.
        suite: the group the key is shared in (``tss.dkg.suite``).

    Returns:
        The state for ``participant_step2``, the message for the coordinator
        (``E*t + 64`` bytes), and ``n`` secret shares, share ``j`` for
        participant ``j`` only (privately).

    Raises:
        InputError: parameters out of range or wrong lengths.
    """
    if not 1 <= t <= n or not 0 <= participant < n:
        raise InputError("need 1 <= t <= n and 0 <= participant < n")
    if len(seed) != 32 or len(aux_rand) != 32:
        raise InputError("seed and aux_rand must be 32 bytes")
    g = suite.group
    coeffs = generate_coefficients(seed, t, suite)
    com = VSSCommitment(tuple(g.base_mul(c) for c in coeffs), g)
    pop = suite.pop_prove(coeffs[0], com.commitment_to_secret(), participant, aux_rand)
    state = ParticipantState(t, n, participant, com.commitment_to_secret(), suite)
    return state, ParticipantMsg(com, pop).to_bytes(), secshares(coeffs, n, g.order)


def participant_step2(
    state: ParticipantState, cmsg: bytes, secshare: int
) -> tuple[SimplOutput, bytes]:
    """``participant_step2_parsed`` on the coordinator's message as bytes.

    Raises:
        CoordinatorMsgLengthError, FaultyCoordinatorError: ``cmsg`` does not decode.
        and everything ``participant_step2_parsed`` raises.
    """
    try:
        parsed = CoordinatorMsg.from_bytes(cmsg, state.t, state.n, state.suite)
    except MessageLengthError as e:
        raise CoordinatorMsgLengthError(str(e)) from e
    except InvalidEncodingError as e:
        raise FaultyCoordinatorError(f"invalid point in coordinator message: {e}") from e
    return participant_step2_parsed(state, parsed, secshare)


def participant_step2_parsed(
    state: ParticipantState, cmsg: CoordinatorMsg, secshare: int
) -> tuple[SimplOutput, bytes]:
    """Check the proofs of possession and the secret share; compute the output.

    Draft BIP "DKG Protocol SimplPedPop", step 3.

    Arguments:
        state: from ``participant_step1``.
        cmsg: the coordinator's aggregated message (in ``state``'s suite).
        secshare: the sum of the shares received from every participant.

    Returns:
        The output (tweaked secret share, threshold key, public shares) and the
        equality-check input ``t || sum_coms``.

    Raises:
        FaultyCoordinatorError: our own commitment was altered.
        FaultyParticipantOrCoordinatorError: a commitment to a secret is
            the identity or a proof of possession is invalid.
        UnknownFaultyParticipantOrCoordinatorError: the secret share does not
            match the commitments; ``inv_data`` is a ``ParticipantInvestigationData``.
    """
    t, n, me, suite = state.t, state.n, state.participant, state.suite
    g = suite.group
    if cmsg.suite is not suite:
        raise InputError("coordinator message of another group")
    coms_to_secrets = cmsg.coms_to_secrets
    if coms_to_secrets[me] != state.com_to_secret:
        raise FaultyCoordinatorError(
            "Coordinator sent unexpected first group element for local participant id"
        )
    for i in range(n):
        if i == me:
            continue  # our own proof needs no check
        if g.is_identity(coms_to_secrets[i]):
            raise FaultyParticipantOrCoordinatorError(i, "Participant sent invalid commitment")
        if not suite.pop_verify(cmsg.pops[i], coms_to_secrets[i], i):
            raise FaultyParticipantOrCoordinatorError(
                i, "Participant sent invalid proof-of-knowledge"
            )

    sum_coms = cmsg.sum_coms
    if g.is_identity(sum_coms.commitment_to_secret()):
        # Every summand is proven (or our own): only a discrete-log break gets here.
        raise InternalError("sum of proven commitments is the identity")
    # Checking the tweaked share against the tweaked pubshare is equivalent and
    # keeps the untweaked pubshare off the happy path (reference comment).
    sum_coms_tweaked, tweak, pubtweak, pubshares = cmsg.tweaked
    secshare_tweaked = (secshare + tweak) % g.order
    if not verify_secshare(secshare_tweaked, pubshares[me], g):
        untweaked = g.add(pubshares[me], g.mul(pubtweak, g.order - 1))
        inv_data = ParticipantInvestigationData(n, me, secshare % g.order, untweaked, suite)
        raise UnknownFaultyParticipantOrCoordinatorError(
            "Received invalid secshare; consider using participant_investigate() "
            "to determine a faulty party",
            inv_data,
        )
    output = SimplOutput(
        secshare_tweaked, sum_coms_tweaked.commitment_to_secret(), tuple(pubshares)
    )
    return output, _eq_input(t, sum_coms)


def participant_investigate(
    inv_data: ParticipantInvestigationData,
    cinv: CoordinatorInvestigationMsg,
    partial_secshares: Sequence[int],
) -> NoReturn:
    """Find who sent the bad share, from the partial shares and partial pubshares.

    Raises:
        FaultyCoordinatorError: the partial pubshares do not sum to our pubshare,
            or our share to ourselves was altered.
        SecshareSumError: the partial shares do not sum to our share (EncPedPop
            maps it to the coordinator).
        FaultyParticipantOrCoordinatorError: participant ``j``'s partial share
            does not match its partial pubshare.
        InputError: everything is consistent: the caller passed the wrong data.
    """
    n, me, g = inv_data.n, inv_data.participant, inv_data.suite.group
    if len(partial_secshares) != n or len(cinv.partial_pubshares) != n:
        raise InputError("need one partial share and partial pubshare per participant")
    partial_pubshares = cinv.partial_pubshares
    if g.sum(partial_pubshares) != inv_data.pubshare:
        raise FaultyCoordinatorError("Sum of partial pubshares not equal to pubshare")
    if not hmac.compare_digest(
        g.encode_scalar(sum(partial_secshares) % g.order),
        g.encode_scalar(inv_data.secshare % g.order),
    ):
        raise SecshareSumError("Sum of partial secshares not equal to secshare")
    for i in range(n):
        if not verify_secshare(partial_secshares[i], partial_pubshares[i], g):
            if i != me:
                raise FaultyParticipantOrCoordinatorError(
                    i, "Participant sent invalid partial secshare"
                )
            # We are honest, so the coordinator must have altered it.
            raise FaultyCoordinatorError("Coordinator fiddled with the share from me to myself")
    # Sums match and every summand matches, so the share matched after all.
    raise InputError("participant_investigate() was called, but all inputs are consistent")


### Coordinator


def coordinator_step(
    pmsgs: Sequence[bytes], t: int, n: int, suite: DkgSuite = SECP256K1_DKG
) -> tuple[bytes, SimplOutput, bytes]:
    """``coordinator_step_parsed`` on the participants' messages as bytes.

    Raises:
        InputError: not ``n`` messages.
        ParticipantMsgLengthError, FaultyParticipantError: message ``i`` does not decode.
    """
    if len(pmsgs) != n:
        raise InputError("need one message per participant")
    parsed = []
    for i, pmsg in enumerate(pmsgs):
        try:
            parsed.append(ParticipantMsg.from_bytes(pmsg, t, suite))
        except MessageLengthError as e:
            raise ParticipantMsgLengthError(i, str(e)) from e
        except InvalidEncodingError as e:
            raise FaultyParticipantError(i, f"invalid VSS commitment: {e}") from e
    cmsg, output, eq_input = coordinator_step_parsed(parsed, t, n, suite)
    return cmsg.to_bytes(), output, eq_input


def coordinator_step_parsed(
    pmsgs: Sequence[ParticipantMsg], t: int, n: int, suite: DkgSuite = SECP256K1_DKG
) -> tuple[CoordinatorMsg, SimplOutput, bytes]:
    """Aggregate the commitments (draft BIP "DKG Protocol SimplPedPop", step 2).

    The commitments to the secrets are forwarded one by one (participants need
    them to check the proofs of possession); the other coefficients are summed
    (Pedersen, "Non-Interactive and Information-Theoretic Secure Verifiable
    Secret Sharing", Section 5.1).

    Returns:
        The coordinator's message, its output (no secret share) and the
        equality-check input.

    Raises:
        InputError: not ``n`` messages, or messages of another group.
        FaultyParticipantError: a participant's commitment to its secret is
            the identity or, when the commitments to the secrets sum to the
            identity, the first participant whose proof of possession is invalid.
    """
    if len(pmsgs) != n:
        raise InputError("need one message per participant")
    g = suite.group
    if any(p.com.group is not g for p in pmsgs):
        raise InputError("participant messages of another group")
    coms_to_secrets = tuple(p.com.commitment_to_secret() for p in pmsgs)
    for i, com in enumerate(coms_to_secrets):
        # Participants would blame it too; the coordinator can tell for sure.
        if g.is_identity(com):
            raise FaultyParticipantError(i, "commitment to the secret is the identity")
    sum_nonconst = tuple(g.sum(p.com.points[j] for p in pmsgs) for j in range(1, t))
    cmsg = CoordinatorMsg(coms_to_secrets, sum_nonconst, tuple(p.pop for p in pmsgs), suite)
    sum_coms = cmsg.sum_coms
    if g.is_identity(sum_coms.commitment_to_secret()):
        # Only possible with a commitment nobody can prove: find it.
        for i, com in enumerate(coms_to_secrets):
            if not suite.pop_verify(pmsgs[i].pop, com, i):
                raise FaultyParticipantError(i, "invalid proof of possession")
        raise InternalError("proven commitments to the secrets sum to the identity")
    sum_coms_tweaked, _, _, pubshares = cmsg.tweaked
    output = SimplOutput(None, sum_coms_tweaked.commitment_to_secret(), pubshares)
    return cmsg, output, _eq_input(t, sum_coms)


def coordinator_investigate(
    pmsgs: Sequence[ParticipantMsg], suite: DkgSuite = SECP256K1_DKG
) -> list[CoordinatorInvestigationMsg]:
    """Each participant's contribution to each pubshare, one message per participant.

    Message ``i`` holds ``partial_pubshares[j] = pubshare_i`` of participant
    ``j``'s commitment; it is not confidential.
    """
    n = len(pmsgs)
    by_dealer = [p.com.pubshares(n) for p in pmsgs]
    return [
        CoordinatorInvestigationMsg(tuple(by_dealer[j][i] for j in range(n)), suite)
        for i in range(n)
    ]
