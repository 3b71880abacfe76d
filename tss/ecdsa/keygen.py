"""The DKLs23 pairwise setup ceremony run on top of a DKG output (sans-IO).

DKLs23 (eprint 2023/765) Protocol 3.6 assumes, besides the Shamir-shared key,
a setup for every pair {i, j}: F_RVOLE in both directions (here: kappa base OTs
each way, seeding the OT extension, ``tss.ecdsa.base_ot``) and F_Zero seeds
(``tss.ecdsa.zero_share``). This module runs them for all pairs at once in two
rounds of point-to-point messages, then every party holds an ``EcdsaSetup``:

- ``setup_round1``: to each peer j, party i sends the receiver message of the
  kappa base OTs in which i is the receiver with random choice bits Delta_{i->j}
  (i will be the OT-extension sender, Alice, toward j), and a commitment to its
  zero-seed contribution.
- ``setup_round2``: i answers j's base-OT receiver message as sender (getting
  both seeds: i is Bob toward j) and reveals its zero-seed contribution.
- ``setup_finalize``: i finishes its base OTs (k^Delta), checks j's reveal
  against the commitment and combines the seeds.

Every message is bound to the ceremony's session id and the keyring (its
``key_id``): the caller supplies a fresh 32-byte ``session_id`` per ceremony,
and 32 bytes of fresh randomness per party. Peer faults raise
``FaultyParticipantError`` naming the peer. A refresh re-runs this ceremony,
which replaces every pair's setup (burned ones included).

The same rounds also run for a subset of the pairs (``peers``): a *pair setup*
between two parties replaces just their pair's setup (``tss.keygen.PairSetup``).
Both parties of a pair derive the same ``setup_id``: a hash of the session id,
the pair and both round-1 messages (which carry fresh randomness of each side),
so an id names one run of the setup even if a session id repeats.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tss.curve import tagged_hash
from tss.ecdsa import base_ot, zero_share
from tss.ecdsa.ote import OteReceiverSetup, OteSenderSetup
from tss.ecdsa.params import KAPPA, KAPPA_BYTES
from tss.ecdsa.setup import EcdsaSetup, KeyMaterial, PeerSetup, check_key_material, key_id
from tss.ecdsa.wire import open_message, seal
from tss.errors import FaultyParticipantError, InputError, InvalidEncodingError, SessionStateError
from tss.tags import DKLS_TAG_SETUP_ID, DKLS_TAG_SETUP_SID

__all__ = ["SetupRound1State", "SetupRound2State", "setup_round1", "setup_round2", "setup_finalize"]

_KIND_ROUND1 = 0x11
_KIND_ROUND2 = 0x12
_OT_MSG_BYTES = base_ot.POINT_PAIR_BYTES * KAPPA
_ROUND1_BODY = 32 + _OT_MSG_BYTES
_ROUND2_BODY = 32 + _OT_MSG_BYTES


def _pair_sid(sid: bytes, receiver: int, sender: int) -> bytes:
    """Session id of the base OTs with ``receiver`` as OT receiver."""
    return sid + bytes([receiver, sender])


def _setup_id(sid: bytes, i: int, j: int, sent: bytes, received: bytes) -> bytes:
    """The pair's setup id, the same on both sides: session, pair and both round-1 messages."""
    lo, hi = (sent, received) if i < j else (received, sent)
    return tagged_hash(DKLS_TAG_SETUP_ID, sid + bytes([min(i, j), max(i, j)]) + lo + hi)


def _spend(flag: list[bool]) -> None:
    if flag[0]:
        raise SessionStateError("setup state already used")
    flag[0] = True


@dataclass(frozen=True)
class SetupRound1State:
    """State kept by a party between ``setup_round1`` and ``setup_round2``."""

    index: int
    parties: int
    peers: tuple[int, ...]
    key_id: bytes
    sid: bytes
    sent: dict[int, bytes]  # hash of our round-1 message to each peer
    seed: bytes = field(repr=False)
    base_ot_receivers: dict[int, base_ot.ReceiverState] = field(repr=False)
    deltas: dict[int, bytes] = field(repr=False)
    contributions: dict[int, bytes] = field(repr=False)
    spent: list[bool] = field(default_factory=lambda: [False], repr=False)


@dataclass(frozen=True)
class SetupRound2State:
    """State kept by a party between ``setup_round2`` and ``setup_finalize``."""

    round1: SetupRound1State = field(repr=False)
    commitments: dict[int, bytes]
    received: dict[int, bytes]  # hash of each peer's round-1 message
    receiver_seeds: dict[int, OteReceiverSetup] = field(repr=False)
    spent: list[bool] = field(default_factory=lambda: [False], repr=False)


def setup_round1(
    key: KeyMaterial,
    session_id: bytes,
    rand: bytes,
    peers: Sequence[int] | None = None,
) -> tuple[SetupRound1State, dict[int, bytes]]:
    """Start the pairwise setup: base-OT receiver messages and zero-seed commitments.

    Arguments:
        key: this party's DKG output (index, t, secret share, public shares, public key).
        session_id: 32 bytes, fresh for this ceremony, the same for all parties.
        rand: 32 bytes of fresh randomness.
        peers: the parties to set up a pair with (default: every other party).

    Returns:
        The state for ``setup_round2`` and one message per other party
        (``{peer: bytes}``, 16,964 bytes each).

    Raises:
        InputError: bad lengths or inconsistent key material.
    """
    if len(session_id) != 32 or len(rand) != 32:
        raise InputError("session_id and rand must be 32 bytes")
    check_key_material(key)
    kid = key_id(key)
    sid = tagged_hash(DKLS_TAG_SETUP_SID, session_id + kid)
    i, n = key.party_id, len(key.public_shares)
    others = tuple(j for j in range(n) if j != i)
    chosen = others if peers is None else tuple(sorted(set(peers)))
    if not chosen or not set(chosen) <= set(others):
        raise InputError("peers must be other parties of the keyring")
    seed = hashlib.sha256(b"setup" + sid + bytes([i]) + rand).digest()
    receivers, deltas, contributions, out = {}, {}, {}, {}
    for j in chosen:
        stream = hashlib.shake_256(seed + bytes([j])).digest(KAPPA_BYTES + 64)
        deltas[j] = stream[:KAPPA_BYTES]
        contributions[j] = stream[KAPPA_BYTES : KAPPA_BYTES + 32]
        state, ot_msg = base_ot.receiver_round1(
            _pair_sid(sid, i, j), KAPPA, deltas[j], stream[KAPPA_BYTES + 32 :]
        )
        receivers[j] = state
        body = zero_share.commit(sid, i, j, contributions[j]) + ot_msg
        out[j] = seal(_KIND_ROUND1, sid, i, j, body)
    sent = {j: hashlib.sha256(m).digest() for j, m in out.items()}
    return SetupRound1State(
        i, n, chosen, kid, sid, sent, seed, receivers, deltas, contributions
    ), out


def setup_round2(
    state: SetupRound1State, msgs: Mapping[int, bytes]
) -> tuple[SetupRound2State, dict[int, bytes]]:
    """Answer every peer's base OTs as sender and reveal the zero-seed contributions.

    Arguments:
        state: from ``setup_round1`` (single use).
        msgs: the round-1 message of every other party, keyed by its index.

    Returns:
        The state for ``setup_finalize`` and one message per other party.

    Raises:
        InputError: missing or extra messages.
        FaultyParticipantError: a malformed message (bad header, length or point).
        SessionStateError: the state was already used.
    """
    if tuple(sorted(msgs)) != state.peers:
        raise InputError("need exactly one round-1 message from every peer")
    _spend(state.spent)
    commitments, receiver_seeds, out = {}, {}, {}
    received = {j: hashlib.sha256(msgs[j]).digest() for j in state.peers}
    for j in state.peers:
        body = open_message(msgs[j], _KIND_ROUND1, state.sid, j, state.index, _ROUND1_BODY)
        commitments[j] = body[:32]
        rand = hashlib.sha256(b"ot-sender" + state.seed + bytes([j])).digest()
        try:
            keys, reply = base_ot.sender_round2(
                _pair_sid(state.sid, j, state.index), KAPPA, body[32:], rand
            )
        except InvalidEncodingError as e:
            raise FaultyParticipantError(j, f"invalid base-OT message: {e}") from e
        receiver_seeds[j] = OteReceiverSetup(
            b"".join(k[0] for k in keys), b"".join(k[1] for k in keys)
        )
        out[j] = seal(_KIND_ROUND2, state.sid, state.index, j, state.contributions[j] + reply)
    return SetupRound2State(state, commitments, received, receiver_seeds), out


def setup_finalize(state: SetupRound2State, msgs: Mapping[int, bytes]) -> EcdsaSetup:
    """Finish the base OTs, check the zero-seed reveals and build the ``EcdsaSetup``.

    Arguments:
        state: from ``setup_round2`` (single use).
        msgs: the round-2 message of every other party, keyed by its index.

    Returns:
        This party's ``EcdsaSetup`` with the ceremony's peers (store it in the key share).

    Raises:
        InputError: missing or extra messages.
        FaultyParticipantError: a malformed message, a bad point, or a reveal that
            does not match its commitment.
        SessionStateError: the state was already used.
    """
    r1 = state.round1
    if tuple(sorted(msgs)) != r1.peers:
        raise InputError("need exactly one round-2 message from every peer")
    _spend(state.spent)
    setups = {}
    for j in r1.peers:
        body = open_message(msgs[j], _KIND_ROUND2, r1.sid, j, r1.index, _ROUND2_BODY)
        revealed = body[:32]
        if not hmac.compare_digest(
            zero_share.commit(r1.sid, j, r1.index, revealed), state.commitments[j]
        ):
            raise FaultyParticipantError(j, "zero-seed reveal does not match its commitment")
        try:
            seeds = base_ot.receiver_finish(r1.base_ot_receivers[j], KAPPA, body[32:])
        except InvalidEncodingError as e:
            raise FaultyParticipantError(j, f"invalid base-OT message: {e}") from e
        setups[j] = PeerSetup(
            j,
            OteSenderSetup(r1.deltas[j], b"".join(seeds)),
            state.receiver_seeds[j],
            zero_share.combine(r1.contributions[j], revealed),
            _setup_id(r1.sid, r1.index, j, r1.sent[j], state.received[j]),
        )
    return EcdsaSetup(r1.index, r1.parties, r1.key_id, setups)
