"""EncPedPop: SimplPedPop with the shares encrypted to static keys (ChillDKG layer 2).

Draft BIP section "DKG Protocol EncPedPop" and reference ``encpedpop.py``. Each
sender derives an ephemeral nonce pair from its session seed and pads the share
for participant ``j`` with a scalar derived by ECDH between that nonce and ``j``'s
static encryption key: the "Hashed ElGamal" multi-recipient KEM of Pinto,
Poettering, Schuldt ("Multi-recipient encryption, revisited", AsiaCCS 2014,
Section 5), which hashes in the recipient's index (and here also the public
nonce and the session context). Pads are additive mod n, so the coordinator can
sum the encrypted shares of each recipient without learning them.

A building block, not an API: use tss.dkg.chilldkg. ECDH runs in
libsecp256k1 (constant time) between the parties' secp256k1 keys whatever the
group of the key being shared (``tss.dkg.suite``); the pads are scalars of that
group, so shares and ciphertexts use its scalar encoding (32 bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from tss.curve import Point, ecdh, scalar_from_bytes, tagged_hash
from tss.dkg import simplpedpop
from tss.dkg.errors import (
    CoordinatorMsgLengthError,
    FaultyParticipantOrCoordinatorError,
    MessageLengthError,
)
from tss.dkg.suite import SECP256K1_DKG, DkgSuite
from tss.errors import (
    FaultyCoordinatorError,
    InputError,
    InternalError,
    InvalidEncodingError,
    UnknownFaultyParticipantOrCoordinatorError,
)
from tss.tags import (
    DKG_TAG_ENCPEDPOP_ECDH,
    DKG_TAG_ENCPEDPOP_SECNONCE,
    DKG_TAG_ENCPEDPOP_SEED,
    DKG_TAG_SELF_PAD,
    DKG_TAG_SIMPLPEDPOP_AUX,
)

__all__ = [
    # Functions
    "serialize_enc_context",
    "encaps_multi",
    "decaps_multi",
    "decrypt_sum",
    "scalars_to_bytes",
    "scalars_from_bytes",
    "participant_step1",
    "participant_step2",
    "participant_step2_parsed",
    "participant_investigate",
    "coordinator_step",
    "coordinator_investigate",
    # Types
    "ParticipantMsg",
    "CoordinatorMsg",
    "CoordinatorInvestigationMsg",
    "ParticipantState",
    "ParticipantInvestigationData",
]


### Encryption


def _ecdh_pad(
    seckey: bytes,
    my_pubkey: bytes,
    their_pubkey: Point,
    context: bytes,
    suite: DkgSuite,
    *,
    sending: bool,
) -> int:
    """Pad from an ECDH secret (reference ``ecdh``).

    ``ecdh`` returns SHA256 of the compressed shared point (libsecp256k1's
    default ECDH hash), as the reference expects. The sender's key comes first
    in the hash, so both sides agree.
    """
    shared = ecdh(seckey, their_pubkey)
    their = their_pubkey.to_bytes()
    keys = my_pubkey + their if sending else their + my_pubkey
    return suite.hash_to_scalar(DKG_TAG_ENCPEDPOP_ECDH, shared + keys + context)


def _self_pad(symkey: bytes, nonce: bytes, context: bytes, suite: DkgSuite) -> int:
    # A share to ourselves: the decryption key doubles as a symmetric key,
    # saving an ECDH (draft BIP, "DKG Protocol EncPedPop").
    return suite.hash_to_scalar(DKG_TAG_SELF_PAD, symkey + nonce + context)


def serialize_enc_context(t: int, enckeys: Sequence[Point]) -> bytes:
    """The session context every pad binds: ``t`` (4 bytes) || all encryption keys."""
    return t.to_bytes(4, "big") + b"".join(k.to_bytes() for k in enckeys)


def encaps_multi(
    secnonce: bytes,
    pubnonce: bytes,
    deckey: bytes,
    enckeys: Sequence[Point],
    context: bytes,
    participant: int,
    suite: DkgSuite = SECP256K1_DKG,
) -> list[int]:
    """The sender's pads, one per recipient ``j``, each bound to ``j || context``."""
    pads = []
    for j, enckey in enumerate(enckeys):
        context_j = j.to_bytes(4, "big") + context
        if j == participant:
            pads.append(_self_pad(deckey, pubnonce, context_j, suite))
        else:
            pads.append(_ecdh_pad(secnonce, pubnonce, enckey, context_j, suite, sending=True))
    return pads


def decaps_multi(
    deckey: bytes,
    enckey: bytes,
    pubnonces: Sequence[bytes],
    context: bytes,
    participant: int,
    suite: DkgSuite = SECP256K1_DKG,
) -> list[int]:
    """The recipient's pads, one per sender.

    Raises:
        FaultyParticipantOrCoordinatorError: a sender's public nonce is not a
            valid point (our own keys are well formed, so it must be the nonce).
    """
    context_me = participant.to_bytes(4, "big") + context
    pads = []
    for sender, pubnonce in enumerate(pubnonces):
        if sender == participant:
            pads.append(_self_pad(deckey, pubnonce, context_me, suite))
            continue
        try:
            point = Point.from_bytes(pubnonce)
        except InvalidEncodingError as e:
            raise FaultyParticipantOrCoordinatorError(sender, "invalid public nonce") from e
        pads.append(_ecdh_pad(deckey, enckey, point, context_me, suite, sending=False))
    return pads


def decrypt_sum(
    deckey: bytes,
    enckey: bytes,
    pubnonces: Sequence[bytes],
    context: bytes,
    participant: int,
    sum_ciphertexts: int,
    suite: DkgSuite = SECP256K1_DKG,
) -> int:
    """Decrypt the sum of every sender's encrypted share to ``participant``."""
    if not 0 <= participant < len(pubnonces):
        raise InputError("participant index out of range")
    pads = decaps_multi(deckey, enckey, pubnonces, context, participant, suite)
    return (sum_ciphertexts - sum(pads)) % suite.order


def _scalars(data: bytes, count: int, suite: DkgSuite) -> tuple[int, ...]:
    g = suite.group
    return tuple(g.decode_scalar(bytes(data[i : i + 32])) for i in range(0, 32 * count, 32))


def scalars_to_bytes(values: Sequence[int], suite: DkgSuite = SECP256K1_DKG) -> bytes:
    """Scalars in the suite's 32-byte encoding, concatenated."""
    g = suite.group
    return b"".join(g.encode_scalar(v % g.order) for v in values)


def scalars_from_bytes(data: bytes, count: int, suite: DkgSuite = SECP256K1_DKG) -> tuple[int, ...]:
    """``count`` 32-byte scalars of the suite.

    Raises:
        InvalidEncodingError: an entry is not a scalar (not below the order).
    """
    if len(data) != 32 * count:
        raise MessageLengthError("scalar vector has the wrong length")
    return _scalars(data, count, suite)


### Messages
#
# E is the suite's point size (33 on secp256k1, 32 on edwards25519); public
# nonces are the host keys' secp256k1 points (33 bytes).


@dataclass(frozen=True)
class ParticipantMsg:
    """simpl_pmsg (E*t + 64) || pubnonce (33) || enc_shares (32n)."""

    simpl_pmsg: simplpedpop.ParticipantMsg
    pubnonce: bytes
    enc_shares: tuple[int, ...]
    suite: DkgSuite = field(default=SECP256K1_DKG, compare=False, repr=False)

    @staticmethod
    def len_bytes(t: int, n: int, suite: DkgSuite = SECP256K1_DKG) -> int:
        return simplpedpop.ParticipantMsg.len_bytes(t, suite) + 33 + 32 * n

    @staticmethod
    def from_bytes(data: bytes, t: int, n: int, suite: DkgSuite = SECP256K1_DKG) -> ParticipantMsg:
        """Decode and validate every point and scalar.

        Unlike the reference, the public nonce is checked to be a point here:
        the coordinator can then blame its sender at once (every other
        participant would reject it anyway).

        Raises:
            MessageLengthError, InvalidEncodingError.
        """
        if len(data) != ParticipantMsg.len_bytes(t, n, suite):
            raise MessageLengthError("participant message has the wrong length")
        cut = simplpedpop.ParticipantMsg.len_bytes(t, suite)
        simpl_pmsg = simplpedpop.ParticipantMsg.from_bytes(data[:cut], t, suite)
        pubnonce = bytes(data[cut : cut + 33])
        Point.from_bytes(pubnonce)
        return ParticipantMsg(simpl_pmsg, pubnonce, _scalars(data[cut + 33 :], n, suite), suite)

    def to_bytes(self) -> bytes:
        return (
            self.simpl_pmsg.to_bytes()
            + self.pubnonce
            + scalars_to_bytes(self.enc_shares, self.suite)
        )


@dataclass(frozen=True)
class CoordinatorMsg:
    """simpl_cmsg ((E + 64)n + E(t-1)) || pubnonces (33n, checked by each recipient)."""

    simpl_cmsg: simplpedpop.CoordinatorMsg
    pubnonces: tuple[bytes, ...]

    @staticmethod
    def len_bytes(t: int, n: int, suite: DkgSuite = SECP256K1_DKG) -> int:
        return simplpedpop.CoordinatorMsg.len_bytes(t, n, suite) + 33 * n

    @staticmethod
    def from_bytes(data: bytes, t: int, n: int, suite: DkgSuite = SECP256K1_DKG) -> CoordinatorMsg:
        """Raises MessageLengthError or InvalidEncodingError."""
        if len(data) != CoordinatorMsg.len_bytes(t, n, suite):
            raise MessageLengthError("coordinator message has the wrong length")
        cut = simplpedpop.CoordinatorMsg.len_bytes(t, n, suite)
        simpl_cmsg = simplpedpop.CoordinatorMsg.from_bytes(data[:cut], t, n, suite)
        rest = data[cut:]
        return CoordinatorMsg(
            simpl_cmsg, tuple(bytes(rest[i : i + 33]) for i in range(0, 33 * n, 33))
        )

    def to_bytes(self) -> bytes:
        return self.simpl_cmsg.to_bytes() + b"".join(self.pubnonces)


@dataclass(frozen=True)
class CoordinatorInvestigationMsg:
    """enc_partial_secshares (32n) || partial_pubshares (E*n)."""

    enc_partial_secshares: tuple[int, ...]
    partial_pubshares: tuple[Any, ...]
    suite: DkgSuite = field(default=SECP256K1_DKG, compare=False, repr=False)

    @staticmethod
    def len_bytes(n: int, suite: DkgSuite = SECP256K1_DKG) -> int:
        return (32 + suite.point_size) * n

    @staticmethod
    def from_bytes(
        data: bytes, n: int, suite: DkgSuite = SECP256K1_DKG
    ) -> CoordinatorInvestigationMsg:
        """Raises MessageLengthError or InvalidEncodingError."""
        if len(data) != CoordinatorInvestigationMsg.len_bytes(n, suite):
            raise MessageLengthError("investigation message has the wrong length")
        simpl = simplpedpop.CoordinatorInvestigationMsg.from_bytes(data[32 * n :], n, suite)
        return CoordinatorInvestigationMsg(
            _scalars(data[: 32 * n], n, suite), simpl.partial_pubshares, suite
        )

    def to_bytes(self) -> bytes:
        pubshares = simplpedpop.CoordinatorInvestigationMsg(
            self.partial_pubshares, self.suite
        ).to_bytes()
        return scalars_to_bytes(self.enc_partial_secshares, self.suite) + pubshares


### States


@dataclass(frozen=True)
class ParticipantState:
    simpl_state: simplpedpop.ParticipantState
    pubnonce: bytes
    enckeys: tuple[Point, ...]
    participant: int

    @property
    def suite(self) -> DkgSuite:
        return self.simpl_state.suite


@dataclass(frozen=True, eq=False)
class ParticipantInvestigationData:
    """SimplPedPop's investigation data plus what decrypts the partial shares."""

    simpl_inv_data: simplpedpop.ParticipantInvestigationData
    enc_secshare: int = field(repr=False)
    pads: tuple[int, ...] = field(repr=False)


### Participant


def participant_step1(
    seed: bytes,
    deckey: bytes,
    enckeys: Sequence[Point],
    t: int,
    participant: int,
    random: bytes,
    suite: DkgSuite = SECP256K1_DKG,
) -> tuple[ParticipantState, bytes]:
    """Deal, and encrypt every share to its recipient's static key.

    Arguments:
        seed: secret, high-entropy bytes (ChillDKG passes the host secret key).
        deckey: this participant's 32-byte decryption key.
        enckeys: every participant's encryption key (a validated point), by index.
        t: threshold.
        participant: this participant's index.
        random: 32 fresh random bytes.
        suite: the group the key is shared in (``tss.dkg.suite``).

    Returns:
        The state for ``participant_step2`` and the message for the
        coordinator (``E*t + 32n + 97`` bytes).

    Raises:
        InputError: parameters out of range or wrong lengths.
    """
    if not 0 <= t < 2**32:
        raise InputError("t out of range")
    if len(random) != 32:
        raise InputError("random must be 32 bytes")
    n = len(enckeys)
    # The session seed hashes in everything that makes a session unique, and
    # the nonce derives from it, so different shares are never encrypted under
    # the same pads, even if `random` repeats (reference encpedpop.py comment).
    enc_context = serialize_enc_context(t, enckeys)
    simpl_seed = tagged_hash(suite.tag(DKG_TAG_ENCPEDPOP_SEED), seed + random + enc_context)
    simpl_aux_rand = tagged_hash(suite.tag(DKG_TAG_SIMPLPEDPOP_AUX), simpl_seed)
    secnonce = tagged_hash(suite.tag(DKG_TAG_ENCPEDPOP_SECNONCE), simpl_seed)
    try:
        pubnonce = Point.base_mul(scalar_from_bytes(secnonce, nonzero=True)).to_bytes()
    except InvalidEncodingError as e:  # 0 or >= n: probability ~2^-128
        raise InternalError("encryption nonce out of range") from e

    simpl_state, simpl_pmsg, shares = simplpedpop.participant_step1(
        simpl_seed, t, n, participant, simpl_aux_rand, suite
    )
    pads = encaps_multi(secnonce, pubnonce, deckey, enckeys, enc_context, participant, suite)
    enc_shares = [(share + pad) % suite.order for share, pad in zip(shares, pads, strict=True)]
    state = ParticipantState(simpl_state, pubnonce, tuple(enckeys), participant)
    return state, simpl_pmsg + pubnonce + scalars_to_bytes(enc_shares, suite)


def participant_step2(
    state: ParticipantState, deckey: bytes, cmsg: bytes, enc_secshare: int
) -> tuple[simplpedpop.SimplOutput, bytes]:
    """``participant_step2_parsed`` on the coordinator's message as bytes."""
    try:
        parsed = CoordinatorMsg.from_bytes(
            cmsg, state.simpl_state.t, len(state.enckeys), state.suite
        )
    except MessageLengthError as e:
        raise CoordinatorMsgLengthError(str(e)) from e
    except InvalidEncodingError as e:
        raise FaultyCoordinatorError(f"invalid coordinator message: {e}") from e
    return participant_step2_parsed(state, deckey, parsed, enc_secshare)


def participant_step2_parsed(
    state: ParticipantState, deckey: bytes, cmsg: CoordinatorMsg, enc_secshare: int
) -> tuple[simplpedpop.SimplOutput, bytes]:
    """Decrypt our summed share and run SimplPedPop's checks.

    Arguments:
        state: from ``participant_step1``.
        deckey: this participant's 32-byte decryption key.
        cmsg: the coordinator's message.
        enc_secshare: the sum of the encrypted shares sent to us.

    Returns:
        SimplPedPop's output and the equality-check input, extended with all
        encryption keys and public nonces (draft BIP, end of EncPedPop).

    Raises:
        FaultyCoordinatorError: our own public nonce was altered.
        FaultyParticipantOrCoordinatorError: a public nonce is invalid, or as
            SimplPedPop.
        UnknownFaultyParticipantOrCoordinatorError: as SimplPedPop, with
            ``inv_data`` an EncPedPop ``ParticipantInvestigationData``.
    """
    me, suite = state.participant, state.suite
    t = state.simpl_state.t
    if cmsg.pubnonces[me] != state.pubnonce:
        raise FaultyCoordinatorError("Coordinator replied with wrong pubnonce")
    enc_context = serialize_enc_context(t, state.enckeys)
    pads = decaps_multi(
        deckey, state.enckeys[me].to_bytes(), cmsg.pubnonces, enc_context, me, suite
    )
    secshare = (enc_secshare - sum(pads)) % suite.order
    try:
        output, eq_input = simplpedpop.participant_step2_parsed(
            state.simpl_state, cmsg.simpl_cmsg, secshare
        )
    except UnknownFaultyParticipantOrCoordinatorError as e:
        if not isinstance(e.inv_data, simplpedpop.ParticipantInvestigationData):
            raise InternalError("unexpected investigation data") from e
        inv_data = ParticipantInvestigationData(e.inv_data, enc_secshare, tuple(pads))
        raise UnknownFaultyParticipantOrCoordinatorError(str(e), inv_data) from e
    eq_input += b"".join(k.to_bytes() for k in state.enckeys) + b"".join(cmsg.pubnonces)
    return output, eq_input


def participant_investigate(
    inv_data: ParticipantInvestigationData, cinv: CoordinatorInvestigationMsg
) -> NoReturn:
    """Decrypt the partial shares and let SimplPedPop find the culprit.

    Raises:
        FaultyCoordinatorError: the encrypted partial shares do not sum to our
            encrypted share (the pads are additive, so only the coordinator can
            cause that), or as SimplPedPop.
        FaultyParticipantOrCoordinatorError: as SimplPedPop.
    """
    pads = inv_data.pads
    order = inv_data.simpl_inv_data.suite.order
    if len(cinv.enc_partial_secshares) != len(pads):
        raise InputError("investigation message for another number of participants")
    partial_secshares = [
        (enc - pad) % order for enc, pad in zip(cinv.enc_partial_secshares, pads, strict=True)
    ]
    simpl_cinv = simplpedpop.CoordinatorInvestigationMsg(cinv.partial_pubshares, cinv.suite)
    try:
        simplpedpop.participant_investigate(inv_data.simpl_inv_data, simpl_cinv, partial_secshares)
    except simplpedpop.SecshareSumError as e:
        raise FaultyCoordinatorError(
            "Sum of encrypted partial secshares not equal to encrypted secshare"
        ) from e


### Coordinator


def coordinator_step(
    pmsgs: Sequence[ParticipantMsg],
    t: int,
    enckeys: Sequence[Point],
    suite: DkgSuite = SECP256K1_DKG,
) -> tuple[CoordinatorMsg, simplpedpop.SimplOutput, bytes, list[int]]:
    """Aggregate commitments and sum each recipient's encrypted shares.

    Returns:
        The coordinator's message, its output, the equality-check input, and
        ``enc_secshares[i]``, the sum of the encrypted shares for participant
        ``i``. (ChillDKG broadcasts the whole vector; plain EncPedPop would send
        each participant only its own entry, so it is not part of the message.)

    Raises:
        InputError: not one message per encryption key.
        FaultyParticipantError: as SimplPedPop.
    """
    n = len(enckeys)
    if len(pmsgs) != n:
        raise InputError("need one message per participant")
    simpl_cmsg, output, eq_input = simplpedpop.coordinator_step_parsed(
        [p.simpl_pmsg for p in pmsgs], t, n, suite
    )
    pubnonces = tuple(p.pubnonce for p in pmsgs)
    enc_secshares = [sum(p.enc_shares[i] for p in pmsgs) % suite.order for i in range(n)]
    eq_input += b"".join(k.to_bytes() for k in enckeys) + b"".join(pubnonces)
    return CoordinatorMsg(simpl_cmsg, pubnonces), output, eq_input, enc_secshares


def coordinator_investigate(
    pmsgs: Sequence[ParticipantMsg], suite: DkgSuite = SECP256K1_DKG
) -> list[CoordinatorInvestigationMsg]:
    """For each participant ``i``: every sender's encrypted share to ``i`` and partial pubshare."""
    n = len(pmsgs)
    simpl = simplpedpop.coordinator_investigate([p.simpl_pmsg for p in pmsgs], suite)
    return [
        CoordinatorInvestigationMsg(
            tuple(p.enc_shares[i] for p in pmsgs), simpl[i].partial_pubshares, suite
        )
        for i in range(n)
    ]
