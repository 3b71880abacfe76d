"""Threshold ECDSA signing: DKLs23 Protocol 3.6 (eprint 2023/765), sans-IO.

Any set S of at least t parties signs a 32-byte digest in three rounds. With
lambda_i the Lagrange coefficient of i in S and zeta_i its zero share
(``tss.ecdsa.zero_share``), party i holds the additive key share
sk_i = lambda_i * x_i + zeta_i, so sum_{i in S} sk_i = sk. Steps of Protocol 3.6:

Round 1 (``sign_round1``): sample the instance key r_i and the inversion mask
phi_i; R_i = r_i * G; commit to R_i (com_i, sent to everyone); for every j start
the RVOLE with i as Bob (``tss.ecdsa.mul.bob_round1``), whose random input is
chi_{i,j}.

Round 2 (``sign_round2``): for every j, answer j's RVOLE as Alice with input
(r_i, sk_i), getting c_u^{i,j}, c_v^{i,j}; send Gamma^u = c_u * G,
Gamma^v = c_v * G, psi_{i,j} = phi_i - chi_{i,j}, pk_i = sk_i * G and the opening
of com_i (R_i and its salt). Every round-2 message also carries a hash of all
round-1 commitments (an echo: point-to-point channels stand in for the
broadcast of com_i, so a party equivocating on com_i is caught).

Round 3 (``presign_finish`` + ``presign_partial``, or ``sign_round3``): finish
each RVOLE as Bob (d_u^{i,j}, d_v^{i,j}) and run the checks of Protocol 3.6:
com_j opens to R_j; chi_{i,j} * R_j = d_u^{i,j} * G + Gamma^u_{j,i};
chi_{i,j} * pk_j = d_v^{i,j} * G + Gamma^v_{j,i} (the second check as corrected
by the authors, with pk_j instead of R_j); sum_j pk_j = pk. Then R = sum_j R_j,
r_x = x(R) mod q and

    u_i = r_i (phi_i + sum_j psi_{j,i}) + sum_j (c_u^{i,j} + d_u^{i,j})
    v_i = sk_i (phi_i + sum_j psi_{j,i}) + sum_j (c_v^{i,j} + d_v^{i,j})
    w_i = H(m) phi_i + r_x v_i,

and (u_i, w_i) is broadcast. ``sign_combine``: s = (sum w_i) / (sum u_i),
normalised to low s, with its recovery id; the signature is verified with
libsecp256k1 before it is returned.

Everything up to u_i, v_i is independent of the message, so rounds 1-2 and the
checks form a presignature (``Presignature``, strictly single use) and the
online phase is one broadcast message.

Error policy: ``InputError`` for the caller's mistakes; ``FaultyParticipantError``
naming a peer whose message is malformed or fails a check; ``ProtocolError``
without culprits when a failure cannot be pinned on one party (inconsistent
echo, sum of pk_j, invalid final signature); ``SessionStateError`` for reused
states, ``PairSetupError`` (one) for a missing or burned pair. Any failed check
involving peer j burns the pair with j (selective-failure attacks on the OT
setup, Taurus GHSA-7f6p-phw2-8253); a failure that cannot be attributed burns
every pair of the session. Routing errors (wrong session, e.g. a replayed
message, wrong kind, length) are detected before any cryptography and burn
nothing.

Burn state is consulted (``EcdsaSetup.peer``) immediately before every check
that involves a pair, not only at round 1: sessions that share a pair's
``PeerSetup`` object, and run their steps under one lock per pair (the enclave
does, ``enclave.pair_setups``), then run at most one failing check per setup,
however many of them are in flight.

Randomness: every step's secrets derive from the 32-byte ``rand`` given to
``sign_round1``, the session and (if given) the digest. ``rand`` must be fresh
for each session, like a nonce; ``session_id`` must be fresh per ceremony and the
same for all signers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tss.curve import INFINITY, N, Point, ecdsa_verify, point_sum, tagged_hash
from tss.ecdsa import mul, zero_share
from tss.ecdsa.ote import OtConsistencyError
from tss.ecdsa.setup import EcdsaSetup, KeyMaterial, check_key_material, key_id
from tss.ecdsa.wire import BROADCAST, open_message, seal
from tss.errors import (
    FaultyParticipantError,
    InputError,
    InternalError,
    InvalidEncodingError,
    ProtocolError,
    SessionStateError,
    ViewMismatchError,
)
from tss.shamir import lagrange_coefficient
from tss.single_use import SingleUse, single_use
from tss.tags import (
    DKLS_TAG_SIGN_COMMIT,
    DKLS_TAG_SIGN_ECHO,
    DKLS_TAG_SIGN_NONCE,
    DKLS_TAG_SIGN_PAIR_SID,
    DKLS_TAG_SIGN_SID,
)

__all__ = [
    "RecoverableSignature",
    "SignRound1State",
    "SignRound2State",
    "Presignature",
    "PartialState",
    "sign_round1",
    "sign_round2",
    "presign_finish",
    "presign_partial",
    "sign_round3",
    "sign_combine",
]

_KIND_ROUND1 = 0x21
_KIND_ROUND2 = 0x22
_KIND_PARTIAL = 0x23
_ROUND1_BODY = 32 + mul.BOB_MSG_BYTES
_ROUND2_BODY = 32 + mul.ALICE_MSG_BYTES + 33 + 33 + 32 + 33 + 33 + 32
_PARTIAL_BODY = 64


@dataclass(frozen=True)
class RecoverableSignature:
    """A low-s ECDSA signature with its recovery id.

    Attributes:
        signature: 64 bytes r || s (s <= n/2).
        recovery_id: 0-3; bit 0 is the parity of R's y, bit 1 set if R's x >= n.
    """

    signature: bytes
    recovery_id: int

    def to_bytes65(self) -> bytes:
        """r || s || recovery_id (65 bytes, as coincurve's recoverable format)."""
        return self.signature + bytes([self.recovery_id])


def _spend(flag: list[bool], what: str) -> None:
    if flag[0]:
        raise SessionStateError(f"{what} already used")
    flag[0] = True


def _scalar(data: bytes) -> int:
    k = int.from_bytes(data, "big")
    if k >= N:
        raise InvalidEncodingError("scalar out of range")
    return k


def _derive(seed: bytes, label: bytes) -> int:
    k = int.from_bytes(hashlib.shake_256(label + seed).digest(48), "big") % N
    if k == 0:
        raise InternalError("derived scalar is zero")  # probability 2^-256
    return k


def _pair_sid(sign_sid: bytes, alice: int, bob: int) -> bytes:
    return tagged_hash(DKLS_TAG_SIGN_PAIR_SID, sign_sid + bytes([alice, bob]))


def _commit(sign_sid: bytes, index: int, big_r: Point, salt: bytes) -> bytes:
    return tagged_hash(DKLS_TAG_SIGN_COMMIT, sign_sid + bytes([index]) + big_r.to_bytes() + salt)


def _check_digest(digest: object) -> bytes:
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise InputError("ECDSA signs only 32-byte digests")
    return digest


def _burn_and_blame(setup: EcdsaSetup, peer: int, reason: str) -> FaultyParticipantError:
    """Burn the pair with ``peer`` (never used again) and build the error blaming it."""
    setup.mark_burned(peer)
    return FaultyParticipantError(peer, reason)


@single_use
class SignRound1State(SingleUse):
    """A signer's state between rounds 1 and 2 (single use)."""

    setup: EcdsaSetup = field(repr=False)
    index: int
    signers: tuple[int, ...]
    sign_sid: bytes
    public_key: Point
    digest: bytes | None
    seed: bytes = field(repr=False)
    r: int = field(repr=False)
    phi: int = field(repr=False)
    sk: int = field(repr=False)
    big_r: Point = field(repr=False)
    salt: bytes = field(repr=False)
    commitment: bytes = field(repr=False)
    bobs: dict[int, mul.BobState] = field(repr=False)
    chis: dict[int, int] = field(repr=False)
    spent: list[bool] = field(default_factory=lambda: [False], repr=False)


@single_use
class SignRound2State(SingleUse):
    """A signer's state between rounds 2 and 3 (single use)."""

    round1: SignRound1State = field(repr=False)
    echo: bytes
    commitments: dict[int, bytes] = field(repr=False)
    alice_outputs: dict[int, tuple[int, ...]] = field(repr=False)
    spent: list[bool] = field(default_factory=lambda: [False], repr=False)


@single_use
class Presignature(SingleUse):
    """The output of rounds 1-3 before the message: strictly single use.

    ``big_r`` is the signature's R; ``u`` and ``v`` are this signer's shares of
    r * phi and sk * phi.
    """

    setup: EcdsaSetup = field(repr=False)
    index: int
    signers: tuple[int, ...]
    sign_sid: bytes
    public_key: Point
    big_r: Point
    digest: bytes | None
    u: int = field(repr=False)
    v: int = field(repr=False)
    phi: int = field(repr=False)
    spent: list[bool] = field(default_factory=lambda: [False], repr=False)


@single_use
class PartialState(SingleUse):
    """What a signer keeps to combine the partial signatures (single use)."""

    setup: EcdsaSetup = field(repr=False)
    index: int
    signers: tuple[int, ...]
    sign_sid: bytes
    public_key: Point
    big_r: Point
    digest: bytes
    u: int
    w: int
    spent: list[bool] = field(default_factory=lambda: [False], repr=False)


def sign_round1(
    setup: EcdsaSetup,
    key: KeyMaterial,
    signers: Sequence[int],
    session_id: bytes,
    rand: bytes,
    digest: bytes | None = None,
    tweak: int = 0,
) -> tuple[SignRound1State, dict[int, bytes]]:
    """Round 1 of Protocol 3.6: commit to R_i and start the RVOLEs as Bob.

    Arguments:
        setup: this party's ``EcdsaSetup`` (from the setup ceremony).
        key: this party's DKG output (``KeyMaterial``).
        signers: the indices of the signing parties (at least t, including this one).
        session_id: 32 bytes, fresh per signing ceremony and the same for all signers.
        rand: 32 bytes of fresh randomness (never reuse it).
        digest: the 32-byte message digest if already known (it is then bound into
            the nonce derivation and round 3 must sign the same digest); None to presign.
        tweak: a public additive tweak (BIP-32 derivation): the signers sign for
            ``public_key + tweak*G``. Each adds lambda_i * tweak to its additive
            share; the Lagrange coefficients of a signer set sum to 1.

    Returns:
        The state for ``sign_round2`` and one message per other signer ({peer: bytes}).

    Raises:
        InputError: bad lengths, signer set, or key material not matching the setup.
        PairSetupError: the pair with some signer is missing or burned.
    """
    if not isinstance(session_id, bytes) or len(session_id) != 32:
        raise InputError("session_id must be 32 bytes")
    if not isinstance(rand, bytes) or len(rand) != 32:
        raise InputError("rand must be 32 bytes")
    if digest is not None:
        _check_digest(digest)
    check_key_material(key)
    kid = key_id(key)
    i = key.party_id
    if setup.key_id != kid or setup.index != i or setup.parties != len(key.public_shares):
        raise InputError("the setup does not belong to this key share")
    ids = tuple(signers)
    if any(not isinstance(j, int) for j in ids) or ids != tuple(sorted(set(ids))):
        raise InputError("signers must be distinct indices in increasing order")
    if i not in ids or len(ids) < key.threshold or not 0 <= ids[0] <= ids[-1] < setup.parties:
        raise InputError("signer set must include this party, have >= t members, indices < n")
    setup.check_signers(ids)
    if not isinstance(tweak, int) or not 0 <= tweak < N:
        raise InputError("tweak must be a scalar below n")
    tweak_bytes = tweak.to_bytes(32, "big")
    sign_sid = tagged_hash(
        DKLS_TAG_SIGN_SID, session_id + kid + tweak_bytes + bytes([len(ids), *ids])
    )
    bound = b"\x01" + digest if digest is not None else b"\x00"
    seed = tagged_hash(DKLS_TAG_SIGN_NONCE, rand + sign_sid + bytes([i]) + bound)
    r, phi = _derive(seed, b"r"), _derive(seed, b"phi")
    salt = hashlib.sha256(b"salt" + seed).digest()
    big_r = Point.base_mul(r)
    commitment = _commit(sign_sid, i, big_r, salt)
    seeds = {j: setup.peer(j).zero_seed for j in ids if j != i}
    zeta = zero_share.zero_share(i, ids, seeds, sign_sid)
    sk = (lagrange_coefficient(ids, i) * (key.secret_share + tweak) + zeta) % N
    bobs, chis, out = {}, {}, {}
    for j in ids:
        if j == i:
            continue
        bob_rand = hashlib.sha256(b"bob" + seed + bytes([j])).digest()
        bobs[j], chis[j], bob_msg = mul.bob_round1(
            setup.peer(j).ote_receiver, _pair_sid(sign_sid, j, i), bob_rand
        )
        out[j] = seal(_KIND_ROUND1, sign_sid, i, j, commitment + bob_msg)
    state = SignRound1State(
        setup,
        i,
        ids,
        sign_sid,
        Point.from_bytes(key.public_key) + Point.base_mul(tweak),
        digest,
        seed,
        r,
        phi,
        sk,
        big_r,
        salt,
        commitment,
        bobs,
        chis,
    )
    return state, out


def _others(index: int, signers: Sequence[int]) -> list[int]:
    return [j for j in signers if j != index]


def sign_round2(
    state: SignRound1State, msgs: Mapping[int, bytes]
) -> tuple[SignRound2State, dict[int, bytes]]:
    """Round 2 of Protocol 3.6: answer every RVOLE as Alice with (r_i, sk_i), open R_i.

    Arguments:
        state: from ``sign_round1`` (single use).
        msgs: the round-1 message of every other signer, keyed by its index.

    Returns:
        The state for round 3 and one message per other signer.

    Raises:
        InputError: missing or extra messages.
        FaultyParticipantError: a malformed message or a failed OT-extension check
            (the pair is then burned).
        SessionStateError: the state was already used.
    """
    others = _others(state.index, state.signers)
    if sorted(msgs) != others:
        raise InputError("need exactly one round-1 message from every other signer")
    _spend(state.spent, "round-1 state")
    bodies = {
        j: open_message(msgs[j], _KIND_ROUND1, state.sign_sid, j, state.index, _ROUND1_BODY)
        for j in others
    }
    commitments = {j: bodies[j][:32] for j in others}
    commitments[state.index] = state.commitment
    echo = tagged_hash(
        DKLS_TAG_SIGN_ECHO, state.sign_sid + b"".join(commitments[j] for j in state.signers)
    )
    pk_i = Point.base_mul(state.sk)
    alice_outputs, out = {}, {}
    for j in others:
        alice_rand = hashlib.sha256(b"alice" + state.seed + bytes([j])).digest()
        try:
            c, reply = mul.alice_round2(
                state.setup.peer(j).ote_sender,
                _pair_sid(state.sign_sid, state.index, j),
                bodies[j][32:],
                (state.r, state.sk),
                alice_rand,
            )
        except (OtConsistencyError, InvalidEncodingError) as e:
            raise _burn_and_blame(state.setup, j, f"OT extension rejected: {e}") from e
        alice_outputs[j] = c
        psi = (state.phi - state.chis[j]) % N
        body = (
            echo
            + reply
            + Point.base_mul(c[0]).to_bytes_ext()
            + Point.base_mul(c[1]).to_bytes_ext()
            + psi.to_bytes(32, "big")
            + pk_i.to_bytes_ext()
            + state.big_r.to_bytes()
            + state.salt
        )
        out[j] = seal(_KIND_ROUND2, state.sign_sid, state.index, j, body)
    return SignRound2State(state, echo, commitments, alice_outputs), out


def presign_finish(state: SignRound2State, msgs: Mapping[int, bytes]) -> Presignature:
    """Round 3 of Protocol 3.6 up to the message: finish the RVOLEs and run all checks.

    Arguments:
        state: from ``sign_round2`` (single use).
        msgs: the round-2 message of every other signer, keyed by its index.

    Returns:
        A single-use ``Presignature``.

    Raises:
        InputError: missing or extra messages.
        PairSetupError: a signer's pair was burned meanwhile (by another session).
        FaultyParticipantError: a malformed message, a failed RVOLE check, a bad
            opening of com_j or a failed consistency check against R_j or pk_j
            (the pair with that peer is then burned).
        ProtocolError: (no culprit) the echoed commitments differ, or the pk_j do not
            sum to the public key (every pair of the session is then burned).
        SessionStateError: the state was already used.
    """
    r1 = state.round1
    setup = r1.setup
    others = _others(r1.index, r1.signers)
    if sorted(msgs) != others:
        raise InputError("need exactly one round-2 message from every other signer")
    _spend(state.spent, "round-2 state")
    bodies = {
        j: open_message(msgs[j], _KIND_ROUND2, r1.sign_sid, j, r1.index, _ROUND2_BODY)
        for j in others
    }
    for j in others:
        if not hmac.compare_digest(bodies[j][:32], state.echo):
            raise ViewMismatchError("signers saw different round-1 commitments (equivocation)")
    big_rs, pks = [r1.big_r], [Point.base_mul(r1.sk)]
    psi_sum, cross_u, cross_v = 0, 0, 0
    for j in others:
        setup.peer(j)  # burned by another session since round 2? then no check runs
        body = bodies[j]
        reply = body[32 : 32 + mul.ALICE_MSG_BYTES]
        rest = body[32 + mul.ALICE_MSG_BYTES :]
        try:
            d = mul.bob_finish(r1.bobs[j], reply)
            gamma_u = Point.from_bytes_ext(rest[0:33])
            gamma_v = Point.from_bytes_ext(rest[33:66])
            psi = _scalar(rest[66:98])
            pk_j = Point.from_bytes(rest[98:131])
            big_r_j = Point.from_bytes(rest[131:164])
            salt_j = rest[164:196]
        except (mul.RvoleCheckError, InvalidEncodingError) as e:
            raise _burn_and_blame(setup, j, f"invalid round-2 message: {e}") from e
        if not hmac.compare_digest(_commit(r1.sign_sid, j, big_r_j, salt_j), state.commitments[j]):
            raise _burn_and_blame(setup, j, "R_j does not open its commitment")
        chi = r1.chis[j]
        # Protocol 3.6 round 3, consistency checks: chi_{i,j} R_j - Gamma^u = d_u G, and
        # chi_{i,j} pk_j - Gamma^v = d_v G (binds j's RVOLE inputs to R_j and pk_j).
        if big_r_j * chi != Point.base_mul(d[0]) + gamma_u:
            raise _burn_and_blame(setup, j, "RVOLE input inconsistent with R_j")
        if pk_j * chi != Point.base_mul(d[1]) + gamma_v:
            raise _burn_and_blame(setup, j, "RVOLE input inconsistent with pk_j")
        big_rs.append(big_r_j)
        pks.append(pk_j)
        psi_sum += psi
        c = state.alice_outputs[j]
        cross_u += c[0] + d[0]
        cross_v += c[1] + d[1]
    setup.check_signers(r1.signers)
    if point_sum(pks) != r1.public_key:
        for j in others:
            setup.mark_burned(j)
        raise ProtocolError("the signers' pk_j do not sum to the public key")
    big_r = point_sum(big_rs)
    if big_r == INFINITY or big_r.x_int() % N == 0:
        raise ProtocolError("degenerate R")
    phi_total = r1.phi + psi_sum
    u = (r1.r * phi_total + cross_u) % N
    v = (r1.sk * phi_total + cross_v) % N
    return Presignature(
        setup, r1.index, r1.signers, r1.sign_sid, r1.public_key, big_r, r1.digest, u, v, r1.phi
    )


def presign_partial(presig: Presignature, digest: bytes) -> tuple[PartialState, bytes]:
    """The online phase: consume the presignature and broadcast (u_i, w_i).

    Arguments:
        presig: from ``presign_finish`` (strictly single use).
        digest: the 32-byte message digest to sign.

    Returns:
        The state for ``sign_combine`` and the broadcast message for every other signer.

    Raises:
        InputError: digest not 32 bytes, or not the digest bound in round 1.
        SessionStateError: the presignature was already used.
    """
    _check_digest(digest)
    if presig.digest is not None and not hmac.compare_digest(presig.digest, digest):
        raise InputError("digest differs from the one bound in round 1")
    _spend(presig.spent, "presignature")
    r_x = presig.big_r.x_int() % N
    w = (int.from_bytes(digest, "big") * presig.phi + r_x * presig.v) % N
    msg = seal(
        _KIND_PARTIAL,
        presig.sign_sid,
        presig.index,
        BROADCAST,
        presig.u.to_bytes(32, "big") + w.to_bytes(32, "big"),
    )
    state = PartialState(
        presig.setup,
        presig.index,
        presig.signers,
        presig.sign_sid,
        presig.public_key,
        presig.big_r,
        digest,
        presig.u,
        w,
    )
    return state, msg


def sign_round3(
    state: SignRound2State, msgs: Mapping[int, bytes], digest: bytes
) -> tuple[PartialState, bytes]:
    """Round 3 of Protocol 3.6: ``presign_finish`` then ``presign_partial``."""
    _check_digest(digest)
    return presign_partial(presign_finish(state, msgs), digest)


def sign_combine(state: PartialState, partials: Mapping[int, bytes]) -> RecoverableSignature:
    """Combine the signers' (u_j, w_j) into a verified low-s signature.

    Arguments:
        state: from ``presign_partial`` / ``sign_round3`` (single use).
        partials: the broadcast message of every other signer (this signer's own
            message may be included).

    Returns:
        The ``RecoverableSignature``, verified with libsecp256k1 against the public key.

    Raises:
        InputError: missing or extra messages.
        FaultyParticipantError: a malformed partial signature.
        ProtocolError: (no culprit) the signature does not verify: some signer sent
            a bad (u_j, w_j); every pair of the session is burned.
        PairSetupError: a signer's pair was burned meanwhile (by another session).
        SessionStateError: the state was already used.
    """
    others = _others(state.index, state.signers)
    given = sorted(j for j in partials if j != state.index)
    if given != others:
        raise InputError("need exactly one partial signature from every other signer")
    _spend(state.spent, "partial-signature state")
    u, w = state.u, state.w
    for j in others:
        body = open_message(partials[j], _KIND_PARTIAL, state.sign_sid, j, BROADCAST, _PARTIAL_BODY)
        try:
            u += _scalar(body[:32])
            w += _scalar(body[32:])
        except InvalidEncodingError as e:
            raise FaultyParticipantError(j, "partial signature out of range") from e
    u, w = u % N, w % N
    r_point = state.big_r
    r = r_point.x_int() % N
    s = w * pow(u, -1, N) % N if u else 0
    recid = (0 if r_point.has_even_y() else 1) | (2 if r_point.x_int() >= N else 0)
    if s > N // 2:
        s, recid = N - s, recid ^ 1
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    state.setup.check_signers(state.signers)  # a pair burned meanwhile: run no check on it
    if s == 0 or not ecdsa_verify(state.digest, state.public_key.to_bytes(), signature):
        for j in others:
            state.setup.mark_burned(j)
        raise ProtocolError("the combined signature is invalid (a signer sent a bad share)")
    return RecoverableSignature(signature, recid)
