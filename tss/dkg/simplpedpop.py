"""SimplPedPop: Pedersen DKG with proofs of possession (ChillDKG draft BIP, layer 1).

Chu, Gerhart, Ruffing, Schröder, "Practical Schnorr Threshold Signatures Without
the Algebraic Group Model" (eprint 2023/899), Section 4, with the modifications
of the draft BIP section "DKG Protocol SimplPedPop": seeded randomness, public
shares in the output, commitments aggregated by an untrusted coordinator, the
Taproot tweak of the threshold key, and no proofs of possession in the
equality-check input.

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
from typing import NewType, NoReturn

from tss.curve import (
    P_FIELD,
    N,
    Point,
    mul_add_g,
    point_sum,
    scalar_to_bytes,
    tagged_hash,
)
from tss.dkg.errors import (
    CoordinatorMsgLengthError,
    FaultyParticipantOrCoordinatorError,
    MessageLengthError,
    ParticipantMsgLengthError,
)
from tss.dkg.vss import VSSCommitment, generate_coefficients, secshares, verify_secshare
from tss.errors import (
    FaultyCoordinatorError,
    FaultyParticipantError,
    InputError,
    InternalError,
    InvalidEncodingError,
    UnknownFaultyParticipantOrCoordinatorError,
)
from tss.shamir import commit_poly
from tss.tags import DKG_TAG_POP

__all__ = [
    # Functions
    "participant_step1",
    "participant_step2",
    "participant_step2_parsed",
    "participant_investigate",
    "coordinator_step",
    "coordinator_step_parsed",
    "coordinator_investigate",
    "pop_prove",
    "pop_verify",
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

Pop = NewType("Pop", bytes)
"""A 64-byte proof of possession."""


class SecshareSumError(ValueError):
    """Internal: the partial secret shares do not sum to the secret share.

    EncPedPop turns it into ``FaultyCoordinatorError`` (reference encpedpop.py).
    """


### Proofs of possession
#
# A proof of possession is a BIP-340 signature on the participant index under
# the commitment to the secret, with the tags "BIP DKG/pop message/{aux,nonce,
# challenge}" in place of "BIP0340/...". libsecp256k1 only implements the
# standard tags, so the scheme is composed here from its point operations
# (BIP-340 "Default Signing" and "Verification", step by step); scalar
# arithmetic mod n happens on Python ints (see tss.curve on side channels).

_POP_AUX = DKG_TAG_POP + "/aux"
_POP_NONCE = DKG_TAG_POP + "/nonce"
_POP_CHALLENGE = DKG_TAG_POP + "/challenge"


def _pop_msg(participant: int) -> bytes:
    return participant.to_bytes(4, "big")


def pop_prove(seckey: int, pubkey: Point, participant: int, aux_rand: bytes) -> Pop:
    """Sign the proof of possession of ``seckey`` (``pubkey == seckey * G``).

    Raises:
        InternalError: a zero nonce (negligible) or a failed self-check.
    """
    msg = _pop_msg(participant)
    px = pubkey.xonly()
    d = seckey if pubkey.has_even_y() else N - seckey
    masked = bytes(
        a ^ b for a, b in zip(d.to_bytes(32, "big"), tagged_hash(_POP_AUX, aux_rand), strict=True)
    )
    k0 = int.from_bytes(tagged_hash(_POP_NONCE, masked + px + msg), "big") % N
    if k0 == 0:
        raise InternalError("zero nonce")
    r_point = Point.base_mul(k0)
    k = k0 if r_point.has_even_y() else N - k0
    rx = r_point.xonly()
    e = int.from_bytes(tagged_hash(_POP_CHALLENGE, rx + px + msg), "big") % N
    pop = Pop(rx + ((k + e * d) % N).to_bytes(32, "big"))
    # BIP-340 signers verify their output: a faulty s with a deterministic
    # nonce would leak the key.
    if not pop_verify(pop, pubkey, participant):
        raise InternalError("proof of possession self-check failed")
    return pop


def pop_verify(pop: bytes, pubkey: Point, participant: int) -> bool:
    """Check a proof of possession for the commitment to the secret ``pubkey``.

    BIP-340 verifies against ``lift_x(x(pubkey))``, which is ``pubkey`` or
    ``-pubkey``: we use the sign directly instead of recomputing a square root
    (the optimisation the reference's comment suggests).
    """
    if len(pop) != 64 or pubkey.is_infinity:
        return False
    rx, s = pop[:32], int.from_bytes(pop[32:], "big")
    if int.from_bytes(rx, "big") >= P_FIELD or s >= N:
        return False
    msg = _pop_msg(participant)
    e = int.from_bytes(tagged_hash(_POP_CHALLENGE, rx + pubkey.xonly() + msg), "big") % N
    # R = s*G - e*P with P = lift_x(x(pubkey)) = (+/-) pubkey
    minus_e = N - e if pubkey.has_even_y() else e
    r_point = mul_add_g(pubkey, minus_e, s)
    return not r_point.is_infinity and r_point.to_bytes() == b"\x02" + rx


### Messages


@dataclass(frozen=True)
class ParticipantMsg:
    """A participant's message: VSS commitment (33t bytes) || proof of possession (64)."""

    com: VSSCommitment
    pop: Pop

    @staticmethod
    def len_bytes(t: int) -> int:
        return 33 * t + 64

    @staticmethod
    def from_bytes(data: bytes, t: int) -> ParticipantMsg:
        """Raises MessageLengthError or InvalidEncodingError."""
        if len(data) != ParticipantMsg.len_bytes(t):
            raise MessageLengthError("SimplPedPop participant message has the wrong length")
        return ParticipantMsg(VSSCommitment.from_bytes(data[: 33 * t], t), Pop(data[33 * t :]))

    def to_bytes(self) -> bytes:
        return self.com.to_bytes() + self.pop


@dataclass(frozen=True)
class CoordinatorMsg:
    """coms_to_secrets (33n) || sum_coms_to_nonconst_terms (33(t-1)) || pops (64n)."""

    coms_to_secrets: tuple[Point, ...]
    sum_coms_to_nonconst_terms: tuple[Point, ...]
    pops: tuple[Pop, ...]

    @staticmethod
    def len_bytes(t: int, n: int) -> int:
        return 97 * n + 33 * (t - 1)

    @staticmethod
    def from_bytes(data: bytes, t: int, n: int) -> CoordinatorMsg:
        """Raises MessageLengthError or InvalidEncodingError."""
        if len(data) != CoordinatorMsg.len_bytes(t, n):
            raise MessageLengthError("SimplPedPop coordinator message has the wrong length")
        points = [Point.from_bytes_ext(data[i : i + 33]) for i in range(0, 33 * (n + t - 1), 33)]
        rest = data[33 * (n + t - 1) :]
        pops = tuple(Pop(rest[i : i + 64]) for i in range(0, 64 * n, 64))
        return CoordinatorMsg(tuple(points[:n]), tuple(points[n:]), pops)

    def to_bytes(self) -> bytes:
        points = (*self.coms_to_secrets, *self.sum_coms_to_nonconst_terms)
        return b"".join(p.to_bytes_ext() for p in points) + b"".join(self.pops)


@dataclass(frozen=True)
class CoordinatorInvestigationMsg:
    """partial_pubshares (33n): each participant's contribution to one pubshare."""

    partial_pubshares: tuple[Point, ...]

    @staticmethod
    def len_bytes(n: int) -> int:
        return 33 * n

    @staticmethod
    def from_bytes(data: bytes, n: int) -> CoordinatorInvestigationMsg:
        """Raises MessageLengthError or InvalidEncodingError."""
        if len(data) != 33 * n:
            raise MessageLengthError("SimplPedPop investigation message has the wrong length")
        return CoordinatorInvestigationMsg(
            tuple(Point.from_bytes_ext(data[i : i + 33]) for i in range(0, 33 * n, 33))
        )

    def to_bytes(self) -> bytes:
        return b"".join(p.to_bytes_ext() for p in self.partial_pubshares)


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
    thresh_pk: Point
    pubshares: tuple[Point, ...]


@dataclass(frozen=True)
class ParticipantState:
    t: int
    n: int
    participant: int
    com_to_secret: Point


@dataclass(frozen=True, eq=False)
class ParticipantInvestigationData:
    """What ``participant_investigate`` needs after a failed share check."""

    n: int
    participant: int
    secshare: int = field(repr=False)
    pubshare: Point


def _assemble_sum_coms(
    coms_to_secrets: Sequence[Point], sum_coms_to_nonconst_terms: Sequence[Point]
) -> VSSCommitment:
    return VSSCommitment((point_sum(coms_to_secrets), *sum_coms_to_nonconst_terms))


def _eq_input(t: int, sum_coms: VSSCommitment) -> bytes:
    # SimplPedPop's transcript: t || sum_coms (draft BIP, end of step 3)
    return t.to_bytes(4, "big") + sum_coms.to_bytes()


### Participant


def participant_step1(
    seed: bytes, t: int, n: int, participant: int, aux_rand: bytes
) -> tuple[ParticipantState, bytes, list[int]]:
    """Deal a fresh polynomial: commitment and proof of possession, plus the shares.

    Arguments:
        seed: 32 secret bytes from which the polynomial is derived.
        t: threshold, 1 <= t <= n.
        n: number of participants.
        participant: this participant's index, 0 <= participant < n.
        aux_rand: 32 bytes of auxiliary randomness for the proof of possession.

    Returns:
        The state for ``participant_step2``, the message for the coordinator
        (``33t + 64`` bytes), and ``n`` secret shares, share ``j`` for
        participant ``j`` only (privately).

    Raises:
        InputError: parameters out of range or wrong lengths.
    """
    if not 1 <= t <= n or not 0 <= participant < n:
        raise InputError("need 1 <= t <= n and 0 <= participant < n")
    if len(seed) != 32 or len(aux_rand) != 32:
        raise InputError("seed and aux_rand must be 32 bytes")
    coeffs = generate_coefficients(seed, t)
    com = VSSCommitment(tuple(commit_poly(coeffs)))
    pop = pop_prove(coeffs[0], com.commitment_to_secret(), participant, aux_rand)
    state = ParticipantState(t, n, participant, com.commitment_to_secret())
    return state, ParticipantMsg(com, pop).to_bytes(), secshares(coeffs, n)


def participant_step2(
    state: ParticipantState, cmsg: bytes, secshare: int
) -> tuple[SimplOutput, bytes]:
    """``participant_step2_parsed`` on the coordinator's message as bytes.

    Raises:
        CoordinatorMsgLengthError, FaultyCoordinatorError: ``cmsg`` does not decode.
        and everything ``participant_step2_parsed`` raises.
    """
    try:
        parsed = CoordinatorMsg.from_bytes(cmsg, state.t, state.n)
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
        cmsg: the coordinator's aggregated message.
        secshare: the sum of the shares received from every participant.

    Returns:
        The output (tweaked secret share, threshold key, public shares) and the
        equality-check input ``t || sum_coms``.

    Raises:
        FaultyCoordinatorError: our own commitment was altered.
        FaultyParticipantOrCoordinatorError: a commitment to a secret is
            infinity or a proof of possession is invalid.
        UnknownFaultyParticipantOrCoordinatorError: the secret share does not
            match the commitments; ``inv_data`` is a ``ParticipantInvestigationData``.
    """
    t, n, me = state.t, state.n, state.participant
    coms_to_secrets = cmsg.coms_to_secrets
    if coms_to_secrets[me] != state.com_to_secret:
        raise FaultyCoordinatorError(
            "Coordinator sent unexpected first group element for local participant id"
        )
    for i in range(n):
        if i == me:
            continue  # our own proof needs no check
        if coms_to_secrets[i].is_infinity:
            raise FaultyParticipantOrCoordinatorError(i, "Participant sent invalid commitment")
        if not pop_verify(cmsg.pops[i], coms_to_secrets[i], i):
            raise FaultyParticipantOrCoordinatorError(
                i, "Participant sent invalid proof-of-knowledge"
            )

    sum_coms = _assemble_sum_coms(coms_to_secrets, cmsg.sum_coms_to_nonconst_terms)
    if sum_coms.commitment_to_secret().is_infinity:
        # Every summand is proven (or our own): only a discrete-log break gets here.
        raise InternalError("sum of proven commitments is infinity")
    # Checking the tweaked share against the tweaked pubshare is equivalent and
    # keeps the untweaked pubshare off the happy path (reference comment).
    sum_coms_tweaked, tweak, pubtweak = sum_coms.invalid_taproot_commit()
    pubshares = sum_coms_tweaked.pubshares(n)
    secshare_tweaked = (secshare + tweak) % N
    if not verify_secshare(secshare_tweaked, pubshares[me]):
        inv_data = ParticipantInvestigationData(n, me, secshare % N, pubshares[me] - pubtweak)
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
    n, me = inv_data.n, inv_data.participant
    if len(partial_secshares) != n or len(cinv.partial_pubshares) != n:
        raise InputError("need one partial share and partial pubshare per participant")
    partial_pubshares = cinv.partial_pubshares
    if point_sum(partial_pubshares) != inv_data.pubshare:
        raise FaultyCoordinatorError("Sum of partial pubshares not equal to pubshare")
    if not hmac.compare_digest(
        scalar_to_bytes(sum(partial_secshares)), scalar_to_bytes(inv_data.secshare)
    ):
        raise SecshareSumError("Sum of partial secshares not equal to secshare")
    for i in range(n):
        if not verify_secshare(partial_secshares[i], partial_pubshares[i]):
            if i != me:
                raise FaultyParticipantOrCoordinatorError(
                    i, "Participant sent invalid partial secshare"
                )
            # We are honest, so the coordinator must have altered it.
            raise FaultyCoordinatorError("Coordinator fiddled with the share from me to myself")
    # Sums match and every summand matches, so the share matched after all.
    raise InputError("participant_investigate() was called, but all inputs are consistent")


### Coordinator


def coordinator_step(pmsgs: Sequence[bytes], t: int, n: int) -> tuple[bytes, SimplOutput, bytes]:
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
            parsed.append(ParticipantMsg.from_bytes(pmsg, t))
        except MessageLengthError as e:
            raise ParticipantMsgLengthError(i, str(e)) from e
        except InvalidEncodingError as e:
            raise FaultyParticipantError(i, f"invalid VSS commitment: {e}") from e
    cmsg, output, eq_input = coordinator_step_parsed(parsed, t, n)
    return cmsg.to_bytes(), output, eq_input


def coordinator_step_parsed(
    pmsgs: Sequence[ParticipantMsg], t: int, n: int
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
        InputError: not ``n`` messages.
        FaultyParticipantError: a participant's commitment to its secret is
            infinity or, when the commitments to the secrets sum to infinity,
            the first participant whose proof of possession is invalid.
    """
    if len(pmsgs) != n:
        raise InputError("need one message per participant")
    coms_to_secrets = tuple(p.com.commitment_to_secret() for p in pmsgs)
    for i, com in enumerate(coms_to_secrets):
        # Participants would blame it too; the coordinator can tell for sure.
        if com.is_infinity:
            raise FaultyParticipantError(i, "commitment to the secret is infinity")
    sum_nonconst = tuple(point_sum(p.com.points[j] for p in pmsgs) for j in range(1, t))
    cmsg = CoordinatorMsg(coms_to_secrets, sum_nonconst, tuple(p.pop for p in pmsgs))
    sum_coms = _assemble_sum_coms(coms_to_secrets, sum_nonconst)
    if sum_coms.commitment_to_secret().is_infinity:
        # Only possible with a commitment nobody can prove: find it.
        for i, com in enumerate(coms_to_secrets):
            if not pop_verify(pmsgs[i].pop, com, i):
                raise FaultyParticipantError(i, "invalid proof of possession")
        raise InternalError("proven commitments to the secrets sum to infinity")
    sum_coms_tweaked, _, _ = sum_coms.invalid_taproot_commit()
    output = SimplOutput(
        None, sum_coms_tweaked.commitment_to_secret(), tuple(sum_coms_tweaked.pubshares(n))
    )
    return cmsg, output, _eq_input(t, sum_coms)


def coordinator_investigate(
    pmsgs: Sequence[ParticipantMsg],
) -> list[CoordinatorInvestigationMsg]:
    """Each participant's contribution to each pubshare, one message per participant.

    Message ``i`` holds ``partial_pubshares[j] = pubshare_i`` of participant
    ``j``'s commitment; it is not confidential.
    """
    n = len(pmsgs)
    by_dealer = [p.com.pubshares(n) for p in pmsgs]
    return [CoordinatorInvestigationMsg(tuple(by_dealer[j][i] for j in range(n))) for i in range(n)]
