"""ChillDKG: EncPedPop with the CertEq equality check and recovery data (layer 3).

Draft BIP "ChillDKG: Distributed Key Generation for FROST" (BlockstreamResearch/
bip-frost-dkg, v0.3.0-dev) and its reference ``chilldkg.py``. This is the API
(the two layers below are building blocks). A session::

    participants                         coordinator
    participant_step1(hostseckey, params, random) -> state1, pmsg1  ----->
                                         coordinator_step1(pmsgs1, params) -> cstate, cmsg1
    participant_step2(hostseckey, state1, cmsg1, aux_rand) -> state2, pmsg2  ---->
                                         coordinator_finalize(cstate, pmsgs2) -> cmsg2, out, rec
    participant_finalize(state2, cmsg2) -> DKGOutput, RecoveryData

Every function is pure: state and bytes in, state and bytes out, randomness as
arguments. Host public keys are 33-byte compressed points; participant ``i`` is
the ``i``-th host public key (0-based) and holds the share ``f(i + 1)``.

Error policy (reference ``chilldkg.py`` docstrings): ``InputError`` subclasses
for the caller's mistakes; ``FaultyParticipantError`` when the coordinator
catches a participant; ``FaultyCoordinatorError``,
``FaultyParticipantOrCoordinatorError`` or
``UnknownFaultyParticipantOrCoordinatorError`` (investigate with
``coordinator_investigate`` / ``participant_investigate``) when a participant
catches someone. A peer message of the wrong length raises
``ParticipantMsgLengthError`` / ``CoordinatorMsgLengthError``: blame that is
also a ``ValueError``, where the reference raises a bare ``ValueError``.

State: ``ParticipantState1`` is single use (``participant_step2`` signs, and
must never sign twice in one session), ``ParticipantState2`` is consumed by a
successful ``participant_finalize`` (which may be retried after a failure);
reuse raises ``SessionStateError``. Persist the recovery data before relying on
the key, and never erase the host secret key after ``participant_step2`` has
sent its message (see the warnings on the functions).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NewType, NoReturn

from tss.curve import N, Point, schnorr_sign, schnorr_verify, tagged_hash
from tss.dkg import encpedpop, simplpedpop
from tss.dkg.errors import (
    CoordinatorMsgLengthError,
    DuplicateHostPubkeyError,
    HostSeckeyError,
    InvalidHostPubkeyError,
    InvalidRecoveryAckError,
    MessageLengthError,
    ParticipantMsgLengthError,
    RandomnessError,
    RecoveryDataError,
    SessionParamsError,
    ThresholdOrCountError,
)
from tss.dkg.suite import DkgSuite, suite_of
from tss.dkg.vss import VSSCommitment, verify_secshare
from tss.errors import (
    FaultyCoordinatorError,
    FaultyParticipantError,
    InputError,
    InternalError,
    InvalidEncodingError,
    ProtocolError,
    SessionStateError,
    UnknownFaultyParticipantOrCoordinatorError,
)
from tss.group import SECP256K1, Group
from tss.tags import DKG_TAG_PARAMS_HASH

__all__ = [
    # Functions
    "hostpubkey_gen",
    "params_hash",
    "participant_step1",
    "participant_step2",
    "participant_step2_as_coordinator",
    "participant_finalize",
    "participant_investigate",
    "coordinator_step1",
    "coordinator_finalize",
    "coordinator_investigate",
    "participant_recover",
    "coordinator_recover",
    "certeq_verify",
    "participant_recovery_ack_sign",
    "participant_recovery_acks_verify",
    "pmsg1_len",
    "cmsg1_len",
    "cmsg2_len",
    "cinv_len",
    # Types
    "SessionParams",
    "DKGOutput",
    "RecoveryData",
    "ParticipantState1",
    "ParticipantState2",
    "CoordinatorState",
]

RecoveryData = NewType("RecoveryData", bytes)
"""Transcript || certificate: ``4 + E*t + 162n`` bytes, the same for every party."""

PMSG2_LEN = 64


def pmsg1_len(t: int, n: int, group: Group[Any] = SECP256K1) -> int:
    """Length of a participant's first message: ``E*t + 32n + 97``.

    E is the group's point size: 33 on secp256k1, 32 on edwards25519.
    """
    return encpedpop.ParticipantMsg.len_bytes(t, n, suite_of(group))


def cmsg1_len(t: int, n: int, group: Group[Any] = SECP256K1) -> int:
    """Length of the coordinator's first message: ``(E + 129)n + E(t - 1)``."""
    return encpedpop.CoordinatorMsg.len_bytes(t, n, suite_of(group)) + 32 * n


def cmsg2_len(n: int) -> int:
    """Length of the coordinator's second message (the certificate): ``64n``."""
    return 64 * n


def cinv_len(n: int, group: Group[Any] = SECP256K1) -> int:
    """Length of an investigation message: ``(32 + E)n``."""
    return encpedpop.CoordinatorInvestigationMsg.len_bytes(n, suite_of(group))


### Host keys


def _host_pubkey(hostseckey: bytes) -> bytes:
    if not isinstance(hostseckey, bytes | bytearray) or len(hostseckey) != 32:
        raise InputError("host secret key must be 32 bytes")
    d = int.from_bytes(hostseckey, "big")
    if not 0 < d < N:
        raise HostSeckeyError("host secret key out of range")
    return Point.base_mul(d).to_bytes()


def hostpubkey_gen(hostseckey: bytes) -> bytes:
    """The host public key: the plain compressed key of the host secret key.

    The host key pair is a participant's long-term identity (BIP-327
    ``IndividualPubkey``); the same pair may serve many sessions.

    Arguments:
        hostseckey: 32 bytes of secure randomness, kept secret and backed up
            together with the recovery data of every session.

    Returns:
        The 33-byte host public key.

    Raises:
        InputError: not 32 bytes.
        HostSeckeyError: zero, or not below n.
    """
    return _host_pubkey(hostseckey)


### Session parameters


@dataclass(frozen=True)
class SessionParams:
    """The common parameters of a session.

    Attributes:
        hostpubkeys: every participant's 33-byte host public key (stored as a
            tuple); the position is the participant's index. Each participant
            must hold authentic copies (compare ``params_hash`` out of band).
        t: the threshold, ``1 <= t <= len(hostpubkeys)``.
        group: the group the key is shared in (``tss.group``): secp256k1, as in
            the draft BIP, or edwards25519 for an Ed25519 key. Host keys are
            secp256k1 keys either way.
    """

    hostpubkeys: Sequence[bytes]
    t: int
    group: Group[Any] = SECP256K1

    def __post_init__(self) -> None:
        suite_of(self.group)  # refuses a group without a DKG
        keys = tuple(self.hostpubkeys)
        if not all(isinstance(k, bytes | bytearray) for k in keys):
            raise InputError("host public keys must be bytes")
        if not isinstance(self.t, int):
            raise InputError("t must be an int")
        object.__setattr__(self, "hostpubkeys", tuple(bytes(k) for k in keys))

    @property
    def n(self) -> int:
        return len(self.hostpubkeys)

    @property
    def suite(self) -> DkgSuite:
        return suite_of(self.group)

    @cached_property
    def _hostpubkey_points(self) -> tuple[Point, ...]:
        # ``_params_validate``; not cached when it raises.
        return _hostpubkey_points(self)


def _params_validate(params: SessionParams) -> tuple[Point, ...]:
    """Check the parameters; return the host public keys as points.

    Checked once per ``SessionParams`` object (it is immutable): a participant
    that is also its own coordinator passes the same one to every step.
    """
    return params._hostpubkey_points


def _hostpubkey_points(params: SessionParams) -> tuple[Point, ...]:
    hostpubkeys, t = params.hostpubkeys, params.t
    if not 1 <= t <= len(hostpubkeys) <= 2**32 - 1:
        raise ThresholdOrCountError("need 1 <= t <= n <= 2^32 - 1")
    points = []
    for i, hostpubkey in enumerate(hostpubkeys):
        try:
            points.append(Point.from_bytes(hostpubkey))
        except InvalidEncodingError as e:
            raise InvalidHostPubkeyError(i) from e
    first_index: dict[bytes, int] = {}
    for i, hostpubkey in enumerate(hostpubkeys):
        if hostpubkey in first_index:
            raise DuplicateHostPubkeyError(first_index[hostpubkey], i)
        first_index[hostpubkey] = i
    return tuple(points)


def params_hash(params: SessionParams) -> bytes:
    """A 32-byte hash of the parameters, for out-of-band comparison.

    If all participants see the same hash, they agree on ``t``, on every
    host public key and on the group (its tag prefix, ``tss.dkg.suite``), so
    each holds authentic keys even if the keys travelled through the
    untrusted coordinator.

    Raises:
        ThresholdOrCountError, InvalidHostPubkeyError, DuplicateHostPubkeyError.
    """
    _params_validate(params)
    return tagged_hash(
        params.suite.tag(DKG_TAG_PARAMS_HASH),
        params.t.to_bytes(4, "big") + b"".join(params.hostpubkeys),
    )


### CertEq (draft BIP "Equality Check Protocol CertEq")


def _prefixed_message(prefix: bytes, x: bytes, participant: int) -> bytes:
    # BIP-340 "Domain separation": a 33-byte zero-padded prefix, then the
    # signer's index, so a signature binds the signer's position.
    return prefix.ljust(33, b"\x00") + participant.to_bytes(4, "big") + x


def _certeq_message(x: bytes, participant: int, suite: DkgSuite) -> bytes:
    return _prefixed_message(suite.certeq_prefix, x, participant)


def _certeq_first_invalid(
    params: SessionParams, x: bytes, cert: bytes, own: tuple[int, bytes] | None = None
) -> int | None:
    """Index of the first signature in ``cert`` that does not verify, or None.

    ``own`` = (index, signature we made and verified ourselves): an identical
    entry needs no second verification.
    """
    for i, hostpubkey in enumerate(params.hostpubkeys):
        sig = cert[64 * i : 64 * (i + 1)]
        if own is not None and own[0] == i and sig == own[1]:
            continue
        # Dropping the sign byte is fine: the message commits to the index, and
        # the transcript x to every full host public key (reference comment).
        if not schnorr_verify(_certeq_message(x, i, params.suite), hostpubkey[1:33], sig):
            return i
    return None


def certeq_verify(params: SessionParams, x: bytes, cert: bytes) -> None:
    """Check a complete CertEq certificate on transcript ``x`` (reference ``certeq_verify``).

    Raises:
        InputError: ``cert`` is not 64 bytes per host public key.
        FaultyParticipantError: the first participant whose signature does not
            verify (the reference's ``InvalidSignatureInCertificateError``).
    """
    if len(cert) != 64 * params.n:
        raise InputError("a certificate is 64 bytes per participant")
    invalid = _certeq_first_invalid(params, x, cert)
    if invalid is not None:
        raise FaultyParticipantError(invalid, "certificate signature does not verify")


### Outputs and states


@dataclass(frozen=True, eq=False)
class DKGOutput:
    """What a party deems the result of a successful session.

    Attributes:
        secshare: this participant's secret share, a 32-byte big-endian scalar
            ``f(participant + 1)`` (None for the coordinator). Never printed.
        thresh_pk: the 33-byte compressed threshold public key (Taproot-tweaked
            so that it has no script path; the BIP-340 key is ``thresh_pk[1:]``).
        pubshares: every participant's 33-byte compressed public share
            ``f(i + 1) * G``, by index.
        participant: this participant's 0-based index (None for the coordinator).
        params: the session parameters (host public keys by index, threshold t).
    """

    secshare: bytes | None = field(repr=False)
    thresh_pk: bytes
    pubshares: tuple[bytes, ...]
    participant: int | None
    params: SessionParams


class _SingleUse:
    """A flag that a frozen state carries to refuse a second use."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = False

    def consume(self, what: str) -> None:
        if self.used:
            raise SessionStateError(f"{what} was already used")
        self.used = True


@dataclass(frozen=True, eq=False)
class ParticipantState1:
    """A participant's state after step 1; pass it to one ``participant_step2`` only.

    Attributes:
        params: the session parameters.
        participant: this participant's index.
    """

    params: SessionParams
    participant: int
    _enc_state: encpedpop.ParticipantState = field(repr=False)
    _use: _SingleUse = field(default_factory=_SingleUse, repr=False)


@dataclass(frozen=True, eq=False)
class ParticipantState2:
    """A participant's state after step 2, for ``participant_finalize``.

    Attributes:
        params: the session parameters.
        participant: this participant's index.
        eq_input: the transcript this participant signed.
        thresh_pk: the threshold public key (33 bytes), not yet confirmed.
        pubshares: the public shares (33 bytes each), not yet confirmed.
    """

    params: SessionParams
    participant: int
    eq_input: bytes = field(repr=False)
    thresh_pk: bytes
    pubshares: tuple[bytes, ...]
    _secshare: bytearray = field(repr=False)
    _own_sig: bytes = field(repr=False)
    _use: _SingleUse = field(default_factory=_SingleUse, repr=False)


@dataclass(frozen=True, eq=False)
class CoordinatorState:
    """The coordinator's state after step 1 (no secrets).

    Attributes:
        params: the session parameters.
        eq_input: the transcript every participant is expected to sign.
        dkg_output: the coordinator's output (``secshare`` None), valid once
            ``coordinator_finalize`` succeeds.
    """

    params: SessionParams
    eq_input: bytes = field(repr=False)
    dkg_output: DKGOutput
    _cmsg: encpedpop.CoordinatorMsg = field(repr=False)
    _enc_secshares: tuple[int, ...] = field(repr=False)


def _to_bytes_output(
    output: simplpedpop.SimplOutput, participant: int | None, params: SessionParams
) -> DKGOutput:
    g = params.group
    secshare = None if output.secshare is None else g.encode_scalar(output.secshare)
    return DKGOutput(
        secshare,
        g.encode(output.thresh_pk),
        tuple(g.encode(p) for p in output.pubshares),
        participant,
        params,
    )


### Participant


def participant_step1(
    hostseckey: bytes, params: SessionParams, random: bytes
) -> tuple[ParticipantState1, bytes]:
    """A participant's first step.

    Arguments:
        hostseckey: this participant's 32-byte host secret key.
        params: the session parameters.
        random: 32 FRESH random bytes.

    Returns:
        The state for ``participant_step2`` (single use), and the first message
        for the coordinator (``33t + 32n + 97`` bytes, see ``pmsg1_len``).

    Raises:
        InputError: a wrong length.
        HostSeckeyError: the key is invalid or is not in ``params.hostpubkeys``.
        ThresholdOrCountError, InvalidHostPubkeyError, DuplicateHostPubkeyError:
            invalid ``params``.
        RandomnessError: ``random`` is all zeros (a broken random source).
    """
    hostpubkey = _host_pubkey(hostseckey)
    hostpubkey_points = _params_validate(params)
    try:
        participant = params.hostpubkeys.index(hostpubkey)
    except ValueError as e:
        raise HostSeckeyError("Host secret key does not match any host public key") from e
    if len(random) != 32:
        raise InputError("random must be 32 bytes")
    if hmac.compare_digest(bytes(random), bytes(32)):
        raise RandomnessError("random is all zeros")
    # The host secret key serves as EncPedPop's seed (it only enters hashes)
    # and as its decryption key; the host public keys are the encryption keys
    # (joint security of Schnorr signatures and ECDH: draft BIP, "ChillDKG").
    enc_state, pmsg1 = encpedpop.participant_step1(
        seed=bytes(hostseckey),
        deckey=bytes(hostseckey),
        enckeys=hostpubkey_points,
        t=params.t,
        participant=participant,
        random=bytes(random),
        suite=params.suite,
    )
    return ParticipantState1(params, participant, enc_state), pmsg1


def participant_step2(
    hostseckey: bytes, state1: ParticipantState1, cmsg1: bytes, aux_rand: bytes
) -> tuple[ParticipantState2, bytes]:
    """A participant's second step: check everything, then sign the transcript.

    **Warning:** once the returned message is sent, never erase the host
    secret key, even if no reply comes: another participant may deem the
    session successful and later convince this one with the recovery data.

    Arguments:
        hostseckey: the same 32-byte host secret key as in step 1.
        state1: from ``participant_step1``; consumed here.
        cmsg1: the coordinator's first message (``162n + 33(t - 1)`` bytes).
        aux_rand: 32 bytes of auxiliary randomness for the BIP-340 signature.

    Returns:
        The state for ``participant_finalize`` and the second message for the
        coordinator (a 64-byte CertEq signature).

    Raises:
        InputError: a wrong ``aux_rand`` or key length.
        HostSeckeyError: not the key used in step 1.
        SessionStateError: ``state1`` was already used.
        CoordinatorMsgLengthError: ``cmsg1`` has the wrong length.
        FaultyCoordinatorError: the coordinator is faulty.
        FaultyParticipantOrCoordinatorError: a participant (``.participant``) or
            the coordinator is faulty.
        UnknownFaultyParticipantOrCoordinatorError: a bad share from an unknown
            sender; run the investigation with ``.inv_data``.
    """
    _check_step2_inputs(hostseckey, state1, aux_rand)
    params = state1.params
    t, n, suite = params.t, params.n, params.suite
    if len(cmsg1) != cmsg1_len(t, n, params.group):
        raise CoordinatorMsgLengthError("coordinator message 1 has the wrong length")
    cut = encpedpop.CoordinatorMsg.len_bytes(t, n, suite)
    try:
        enc_cmsg = encpedpop.CoordinatorMsg.from_bytes(cmsg1[:cut], t, n, suite)
        # every entry enters the transcript: all must be scalars
        enc_secshares = encpedpop.scalars_from_bytes(bytes(cmsg1[cut:]), n, suite)
    except InvalidEncodingError as e:
        raise FaultyCoordinatorError(f"invalid coordinator message: {e}") from e
    return _step2_parsed(hostseckey, state1, enc_cmsg, enc_secshares, aux_rand)


def participant_step2_as_coordinator(
    hostseckey: bytes, state1: ParticipantState1, cstate: CoordinatorState, aux_rand: bytes
) -> tuple[ParticipantState2, bytes]:
    """``participant_step2`` for a participant that ran ``coordinator_step1`` itself.

    Every party of a ceremony without a trusted coordinator aggregates the
    first messages itself (``tss.keygen``). Its coordinator message is then
    taken from ``cstate`` as parsed, not encoded and decoded again: its points
    come from messages ``coordinator_step1`` decoded and checked, and from
    sums computed here. Same result, same errors as ``participant_step2`` on
    ``coordinator_step1``'s message.

    Raises:
        InputError: ``cstate`` is of another session, or as ``participant_step2``.
        and everything ``participant_step2`` raises after decoding ``cmsg1``.
    """
    if cstate.params != state1.params:
        raise InputError("the coordinator state is of another session")
    _check_step2_inputs(hostseckey, state1, aux_rand)
    return _step2_parsed(hostseckey, state1, cstate._cmsg, cstate._enc_secshares, aux_rand)


def _check_step2_inputs(hostseckey: bytes, state1: ParticipantState1, aux_rand: bytes) -> None:
    """The caller's inputs to step 2; consumes ``state1``."""
    hostpubkey = _host_pubkey(hostseckey)
    if len(aux_rand) != 32:
        raise InputError("aux_rand must be 32 bytes")
    params, me = state1.params, state1.participant
    if hostpubkey != params.hostpubkeys[me]:
        raise HostSeckeyError("Host secret key does not match the one used in participant_step1")
    state1._use.consume("ParticipantState1")


def _step2_parsed(
    hostseckey: bytes,
    state1: ParticipantState1,
    enc_cmsg: encpedpop.CoordinatorMsg,
    enc_secshares: Sequence[int],
    aux_rand: bytes,
) -> tuple[ParticipantState2, bytes]:
    params, me = state1.params, state1.participant
    suite = params.suite
    enc_secshares_bytes = encpedpop.scalars_to_bytes(enc_secshares, suite)
    output, eq_input = encpedpop.participant_step2_parsed(
        state1._enc_state, bytes(hostseckey), enc_cmsg, enc_secshares[me]
    )
    # Agreeing on every encrypted share makes the transcript enough to
    # recover any participant's output (draft BIP, "Backup and Recovery").
    eq_input += enc_secshares_bytes
    sig = schnorr_sign(_certeq_message(eq_input, me, suite), bytes(hostseckey), bytes(aux_rand))
    if output.secshare is None:
        raise InternalError("participant output without a secret share")
    state2 = ParticipantState2(
        params=params,
        participant=me,
        eq_input=eq_input,
        thresh_pk=params.group.encode(output.thresh_pk),
        pubshares=tuple(params.group.encode(p) for p in output.pubshares),
        _secshare=bytearray(params.group.encode_scalar(output.secshare)),
        _own_sig=sig,
    )
    return state2, sig


def uncertified_output(state2: ParticipantState2) -> DKGOutput:
    """The output ``participant_finalize`` releases if a certificate verifies, before it does.

    Hazard: the session may still fail, so this is no key yet. It exists for
    one purpose: to persist the share *before* sending the CertEq signature
    (``participant_step2``'s message), so that a certificate can never exist
    for a share that was lost; use it only once a certificate over
    ``state2.eq_input`` verifies (``participant_finalize``, or
    ``coordinator_recover`` on the saved transcript and a certificate).
    Does not consume ``state2``.

    Raises:
        SessionStateError: ``state2`` was already finalized (its share is wiped).
    """
    if state2._use.used:
        raise SessionStateError("ParticipantState2 was already used")
    return DKGOutput(
        bytes(state2._secshare), state2.thresh_pk, state2.pubshares, state2.participant,
        state2.params,
    )  # fmt: skip


def participant_finalize(state2: ParticipantState2, cmsg2: bytes) -> tuple[DKGOutput, RecoveryData]:
    """A participant's last step: check the certificate, release the output.

    Success means this participant deems the session successful; others may
    not yet (they can be convinced later with the recovery data). Before using
    the key, make sure every participant holds the recovery data (e.g. with
    ``participant_recovery_ack_sign``). An exception does NOT mean the session
    failed for everyone: keep the host secret key. After a failure the state
    stays usable, e.g. with a correctly transmitted ``cmsg2``.

    Arguments:
        state2: from ``participant_step2``; consumed on success (its copy of
            the secret share is wiped).
        cmsg2: the coordinator's second message (``64n`` bytes).

    Returns:
        The DKG output (``secshare`` 32 bytes, ``thresh_pk``, ``pubshares``,
        ``participant``, ``params``) and the recovery data
        (``4 + 33t + 162n`` bytes) to persist.

    Raises:
        SessionStateError: ``state2`` was already finalized.
        CoordinatorMsgLengthError: ``cmsg2`` has the wrong length.
        FaultyCoordinatorError: a signature in the certificate is invalid.
    """
    if state2._use.used:
        raise SessionStateError("ParticipantState2 was already used")
    params = state2.params
    if len(cmsg2) != cmsg2_len(params.n):
        raise CoordinatorMsgLengthError("coordinator message 2 has the wrong length")
    cert = bytes(cmsg2)
    own = (state2.participant, state2._own_sig)
    if _certeq_first_invalid(params, state2.eq_input, cert, own) is not None:
        raise FaultyCoordinatorError(
            "Coordinator has provided a certificate with an invalid signature"
        )
    state2._use.consume("ParticipantState2")
    output = DKGOutput(
        bytes(state2._secshare), state2.thresh_pk, state2.pubshares, state2.participant, params
    )
    state2._secshare[:] = bytes(len(state2._secshare))
    return output, RecoveryData(state2.eq_input + cert)


def participant_investigate(
    error: UnknownFaultyParticipantOrCoordinatorError, cinv: bytes
) -> NoReturn:
    """Find who sent a bad share, after ``participant_step2`` raised ``error``.

    Never returns.

    Arguments:
        error: the ``UnknownFaultyParticipantOrCoordinatorError`` from step 2.
        cinv: this participant's investigation message from
            ``coordinator_investigate`` (``65n`` bytes).

    Raises:
        FaultyParticipantOrCoordinatorError: ``.participant`` (or the
            coordinator) sent the bad share.
        FaultyCoordinatorError: the coordinator is faulty.
        CoordinatorMsgLengthError: ``cinv`` has the wrong length.
        InputError: ``error`` carries no investigation data from step 2.
    """
    inv_data = error.inv_data
    if not isinstance(inv_data, encpedpop.ParticipantInvestigationData):
        raise InputError("error carries no ChillDKG investigation data")
    n, suite = inv_data.simpl_inv_data.n, inv_data.simpl_inv_data.suite
    try:
        parsed = encpedpop.CoordinatorInvestigationMsg.from_bytes(cinv, n, suite)
    except MessageLengthError as e:
        raise CoordinatorMsgLengthError(str(e)) from e
    except InvalidEncodingError as e:
        raise FaultyCoordinatorError(f"invalid investigation message: {e}") from e
    encpedpop.participant_investigate(inv_data, parsed)


### Coordinator


def _parse_pmsgs1(pmsgs1: Sequence[bytes], params: SessionParams) -> list[encpedpop.ParticipantMsg]:
    t, n = params.t, params.n
    if len(pmsgs1) != n:
        raise InputError("need one message per participant")
    parsed = []
    for i, pmsg1 in enumerate(pmsgs1):
        try:
            parsed.append(encpedpop.ParticipantMsg.from_bytes(pmsg1, t, n, params.suite))
        except MessageLengthError as e:
            raise ParticipantMsgLengthError(i, str(e)) from e
        except InvalidEncodingError as e:
            raise FaultyParticipantError(i, f"invalid message: {e}") from e
    return parsed


def coordinator_step1(
    pmsgs1: Sequence[bytes], params: SessionParams
) -> tuple[CoordinatorState, bytes]:
    """The coordinator's first step: aggregate and broadcast.

    Arguments:
        pmsgs1: every participant's first message, by index.
        params: the session parameters.

    Returns:
        The state for ``coordinator_finalize``, and the first message for all
        participants (``162n + 33(t - 1)`` bytes, see ``cmsg1_len``).

    Raises:
        InputError: not one message per participant.
        ThresholdOrCountError, InvalidHostPubkeyError, DuplicateHostPubkeyError:
            invalid ``params``.
        ParticipantMsgLengthError: a message has the wrong length.
        FaultyParticipantError: a message holds an invalid point or scalar, or a
            commitment to the secret at infinity.
    """
    hostpubkey_points = _params_validate(params)
    parsed = _parse_pmsgs1(pmsgs1, params)
    enc_cmsg, output, eq_input, enc_secshares = encpedpop.coordinator_step(
        parsed, params.t, hostpubkey_points, params.suite
    )
    enc_secshares_bytes = encpedpop.scalars_to_bytes(enc_secshares, params.suite)
    eq_input += enc_secshares_bytes
    state = CoordinatorState(
        params, eq_input, _to_bytes_output(output, None, params), enc_cmsg, tuple(enc_secshares)
    )
    return state, enc_cmsg.to_bytes() + enc_secshares_bytes


def coordinator_finalize(
    state: CoordinatorState, pmsgs2: Sequence[bytes]
) -> tuple[bytes, DKGOutput, RecoveryData]:
    """The coordinator's last step: assemble and check the certificate.

    Arguments:
        state: from ``coordinator_step1``.
        pmsgs2: every participant's 64-byte second message, by index.

    Returns:
        The second message for all participants (the ``64n``-byte certificate),
        the coordinator's output (``secshare`` None) and the recovery data.

    Raises:
        InputError: not one message per participant.
        ParticipantMsgLengthError: a message is not 64 bytes.
        FaultyParticipantError: a participant's signature is invalid.
    """
    params = state.params
    if len(pmsgs2) != params.n:
        raise InputError("need one message per participant")
    for i, pmsg2 in enumerate(pmsgs2):
        if len(pmsg2) != PMSG2_LEN:
            raise ParticipantMsgLengthError(i, "second message must be 64 bytes")
    cert = b"".join(bytes(p) for p in pmsgs2)
    culprit = _certeq_first_invalid(params, state.eq_input, cert)
    if culprit is not None:
        raise FaultyParticipantError(
            culprit, "Participant has provided an invalid signature for the certificate"
        )
    return cert, state.dkg_output, RecoveryData(state.eq_input + cert)


def coordinator_investigate(pmsgs1: Sequence[bytes], params: SessionParams) -> list[bytes]:
    """One investigation message per participant (not confidential).

    Arguments:
        pmsgs1: every participant's first message, by index.
        params: the session parameters.

    Returns:
        ``n`` messages of ``65n`` bytes; message ``i`` is for participant ``i``.

    Raises:
        InputError: not one message per participant.
        ParticipantMsgLengthError, FaultyParticipantError: a message does not decode.
    """
    parsed = _parse_pmsgs1(pmsgs1, params)
    return [cinv.to_bytes() for cinv in encpedpop.coordinator_investigate(parsed, params.suite)]


### Recovery


@dataclass(frozen=True)
class _RecoveryFields:
    t: int
    sum_coms: VSSCommitment
    hostpubkeys: tuple[bytes, ...]
    pubnonces: tuple[bytes, ...]
    enc_secshares: tuple[int, ...]
    cert: bytes


def _deserialize_recovery_data(data: bytes, group: Group[Any]) -> _RecoveryFields:
    """Split recovery data into its fields.

    Layout: t (4) || sum_coms (E*t) || hostpubkeys (33n) || pubnonces (33n) ||
    enc_secshares (32n) || cert (64n), E the group's point size.

    Raises:
        InvalidEncodingError: it does not decode.
    """
    suite = suite_of(group)
    size = suite.point_size
    if len(data) < 4:
        raise MessageLengthError("recovery data too short")
    t = int.from_bytes(data[:4], "big")
    if len(data) - 4 < size * t:
        raise MessageLengthError("recovery data too short")
    sum_coms = VSSCommitment.from_bytes(data[4 : 4 + size * t], t, group)
    rest = data[4 + size * t :]
    n, remainder = divmod(len(rest), 33 + 33 + 32 + 64)
    if remainder:
        raise MessageLengthError("recovery data has the wrong length")
    hostpubkeys = tuple(bytes(rest[i : i + 33]) for i in range(0, 33 * n, 33))
    rest = rest[33 * n :]
    pubnonces = tuple(bytes(rest[i : i + 33]) for i in range(0, 33 * n, 33))
    rest = rest[33 * n :]
    enc_secshares = encpedpop.scalars_from_bytes(rest[: 32 * n], n, suite)
    cert = bytes(rest[32 * n :])
    return _RecoveryFields(t, sum_coms, hostpubkeys, pubnonces, enc_secshares, cert)


def _recover(
    hostseckey: bytes | None, recovery_data: bytes, group: Group[Any]
) -> tuple[DKGOutput, SessionParams]:
    try:
        fields = _deserialize_recovery_data(bytes(recovery_data), group)
    except InvalidEncodingError as e:
        raise RecoveryDataError("Failed to deserialize recovery data") from e
    params = SessionParams(fields.hostpubkeys, fields.t, group)
    suite = params.suite
    try:
        hostpubkey_points = _params_validate(params)
    except SessionParamsError as e:
        raise RecoveryDataError("Invalid session parameters in recovery data") from e
    eq_input = recovery_data[: len(recovery_data) - len(fields.cert)]
    # The certificate signs the suite's CertEq prefix: recovery data of a
    # session in another group fails here.
    if _certeq_first_invalid(params, eq_input, fields.cert) is not None:
        raise RecoveryDataError("Invalid certificate in recovery data")
    if group.is_identity(fields.sum_coms.commitment_to_secret()):
        raise RecoveryDataError("Recovery data has no threshold public key")

    sum_coms_tweaked, tweak, _ = fields.sum_coms.tweak(suite)
    pubshares = sum_coms_tweaked.pubshares(params.n)
    participant: int | None = None
    secshare: bytes | None = None
    if hostseckey is not None:
        hostpubkey = _host_pubkey(hostseckey)
        try:
            participant = params.hostpubkeys.index(hostpubkey)
        except ValueError as e:
            raise HostSeckeyError(
                "Host secret key does not match any host public key in the recovery data"
            ) from e
        enc_context = encpedpop.serialize_enc_context(params.t, hostpubkey_points)
        try:
            share = encpedpop.decrypt_sum(
                bytes(hostseckey),
                params.hostpubkeys[participant],
                fields.pubnonces,
                enc_context,
                participant,
                fields.enc_secshares[participant],
                suite,
            )
        except ProtocolError as e:
            # Our own signature in the certificate says we decrypted this before.
            raise InternalError("certified recovery data fails to decrypt") from e
        share_tweaked = (share + tweak) % group.order
        # Also checked in the session (our signature proves it): a sanity check.
        if not verify_secshare(share_tweaked, pubshares[participant], group):
            raise InternalError("recovered secret share does not match its public share")
        secshare = group.encode_scalar(share_tweaked)
    output = DKGOutput(
        secshare,
        group.encode(sum_coms_tweaked.commitment_to_secret()),
        tuple(group.encode(p) for p in pubshares),
        participant,
        params,
    )
    return output, params


def participant_recover(
    hostseckey: bytes, recovery_data: bytes, group: Group[Any] = SECP256K1
) -> tuple[DKGOutput, SessionParams]:
    """Recover a participant's output from its host secret key and recovery data.

    Use it after ``participant_finalize`` failed (with recovery data from
    another party), or to restore a backup.

    Arguments:
        hostseckey: the participant's 32-byte host secret key.
        recovery_data: the session's recovery data.
        group: the group of the session's key (``SessionParams.group``).

    Returns:
        The DKG output and the session parameters.

    Raises:
        InputError: the host secret key is not 32 bytes.
        HostSeckeyError: the key is invalid or not among the host public keys.
        RecoveryDataError: the recovery data is invalid (or of another group).
    """
    if hostseckey is None:
        raise InputError("hostseckey is required; use coordinator_recover")
    return _recover(hostseckey, recovery_data, group)


def coordinator_recover(
    recovery_data: bytes, group: Group[Any] = SECP256K1
) -> tuple[DKGOutput, SessionParams]:
    """Recover the coordinator's output (no secret share) from recovery data.

    Raises:
        RecoveryDataError: the recovery data is invalid (or of another group).
    """
    return _recover(None, recovery_data, group)


### Recovery acknowledgments (draft BIP, "Recovering Stuck Parties")


def _recovery_ack_message(recovery_data: bytes, participant: int, suite: DkgSuite) -> bytes:
    return _prefixed_message(suite.recovery_ack_prefix, recovery_data, participant)


def _check_recovery_data_matches(recovery_data: bytes, params: SessionParams) -> None:
    try:
        fields = _deserialize_recovery_data(bytes(recovery_data), params.group)
    except InvalidEncodingError as e:
        raise RecoveryDataError("Failed to deserialize recovery data") from e
    if fields.t != params.t or fields.hostpubkeys != params.hostpubkeys:
        raise RecoveryDataError("Recovery data does not match the provided session parameters")


def participant_recovery_ack_sign(
    hostseckey: bytes, recovery_data: bytes, params: SessionParams, aux_rand: bytes
) -> bytes:
    """Sign that this participant holds ``recovery_data`` (64-byte signature).

    Raises:
        InputError: a wrong length.
        HostSeckeyError: the key is invalid or not in ``params``.
        ThresholdOrCountError, InvalidHostPubkeyError, DuplicateHostPubkeyError.
        RecoveryDataError: the recovery data is invalid or for other parameters.
    """
    hostpubkey = _host_pubkey(hostseckey)
    _params_validate(params)
    try:
        participant = params.hostpubkeys.index(hostpubkey)
    except ValueError as e:
        raise HostSeckeyError("Host secret key does not match any host public key") from e
    if len(aux_rand) != 32:
        raise InputError("aux_rand must be 32 bytes")
    _check_recovery_data_matches(recovery_data, params)
    msg = _recovery_ack_message(bytes(recovery_data), participant, params.suite)
    return schnorr_sign(msg, bytes(hostseckey), bytes(aux_rand))


def participant_recovery_acks_verify(
    recovery_data: bytes, params: SessionParams, ack_sigs: Sequence[bytes]
) -> None:
    """Check every participant's acknowledgment before relying on the key.

    Raises:
        InputError: not one signature per participant.
        ThresholdOrCountError, InvalidHostPubkeyError, DuplicateHostPubkeyError.
        RecoveryDataError: the recovery data is invalid or for other parameters.
        ParticipantMsgLengthError: a signature is not 64 bytes.
        InvalidRecoveryAckError: a signature is invalid (the DKG still
            succeeded; it is only unconfirmed that this participant has the data).
    """
    _params_validate(params)
    if len(ack_sigs) != params.n:
        raise InputError("need one acknowledgment per participant")
    _check_recovery_data_matches(recovery_data, params)
    for i, sig in enumerate(ack_sigs):
        if len(sig) != 64:
            raise ParticipantMsgLengthError(i, "acknowledgment must be 64 bytes")
        msg = _recovery_ack_message(bytes(recovery_data), i, params.suite)
        if not schnorr_verify(msg, params.hostpubkeys[i][1:33], bytes(sig)):
            raise InvalidRecoveryAckError(i, "invalid recovery acknowledgment")
