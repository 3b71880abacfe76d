"""DKLs23 under attack: cheaters are named, pairs are burned, bad messages are typed errors."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

import pytest

from tests.test_ecdsa_primitives import cheating_extension
from tests.test_ecdsa_support import (
    KeyMaterial,
    dealer_keygen,
    deliver,
    rand32,
    run_setup,
    run_sign,
)
from tss import ecdsa
from tss.curve import G, Point, tagged_hash
from tss.ecdsa import mul, sign
from tss.ecdsa.params import KAPPA, XI_EXT_BYTES
from tss.ecdsa.wire import HEADER_BYTES
from tss.errors import FaultyParticipantError, ProtocolError, SessionStateError
from tss.tags import DKLS_TAG_OTE_SID

DIGEST = hashlib.sha256(b"adversarial").digest()
Tamper = Callable[[int, int, int, bytes], bytes]


@functools.lru_cache(maxsize=1)
def _keyring() -> tuple[list[KeyMaterial], list[bytes]]:
    shares = dealer_keygen(2, 3, seed=9)
    return shares, [s.to_bytes() for s in run_setup(shares, session=9)]


def _fresh() -> tuple[list[KeyMaterial], list[ecdsa.EcdsaSetup]]:
    """A 2-of-3 keyring with unburned setups (decoded anew: tests burn pairs)."""
    shares, stored = _keyring()
    return shares, [ecdsa.EcdsaSetup.from_bytes(b) for b in stored]


def _expect_blame(shares, setups, tamper: Tamper, culprit: int, victim: int, burned: bool):  # type: ignore[no-untyped-def]
    with pytest.raises(FaultyParticipantError) as info:
        run_sign(shares, setups, [0, 1, 2], DIGEST, session=1, tamper=tamper)
    assert info.value.participant == culprit and info.value.culprits == (culprit,)
    assert setups[victim].is_burned(culprit) is burned
    return info.value


# Round-2 message layout after the header: echo (32) || RVOLE reply || Gamma^u (33)
# || Gamma^v (33) || psi (32) || pk_i (33) || R_i (33) || salt (32).
_REPLY = HEADER_BYTES + 32
_GAMMA_U = _REPLY + mul.ALICE_MSG_BYTES
_BIG_R = _GAMMA_U + 33 + 33 + 32 + 33


def _patch(msg: bytes, offset: int, new: bytes) -> bytes:
    return msg[:offset] + new + msg[offset + len(new) :]


def test_cheating_ot_extension_receiver_is_caught_and_pair_burned() -> None:
    shares, setups = _fresh()
    victim, cheater = 0, 2
    delta = setups[victim].peer(cheater).ote_sender.delta
    column = next(i for i in range(KAPPA) if delta[i // 8] >> (i % 8) & 1)

    def tamper(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        if (rnd, s, r) != (1, cheater, victim):
            return msg
        sign_sid = msg[2:34]
        nonce = msg[HEADER_BYTES + 32 : HEADER_BYTES + 64]
        ote_sid = tagged_hash(DKLS_TAG_OTE_SID, sign._pair_sid(sign_sid, victim, cheater) + nonce)
        start = HEADER_BYTES + 64
        u = msg[start : start + KAPPA * XI_EXT_BYTES]
        bad = cheating_extension(setups[cheater].peer(victim).ote_receiver, ote_sid, u, column)
        return msg[:start] + bad

    _expect_blame(shares, setups, tamper, cheater, victim, burned=True)
    # The victim refuses any further session with the cheater, even a fresh one ...
    with pytest.raises(SessionStateError):
        run_sign(shares, setups, [0, 2], DIGEST, session=2)
    # ... and survives the round trip through storage.
    stored = ecdsa.EcdsaSetup.from_bytes(setups[victim].to_bytes())
    with pytest.raises(SessionStateError):
        ecdsa.sign_round1(stored, shares[victim], [0, 2], rand32("sid"), rand32("r"))
    # Other pairs still work; a new setup ceremony (refresh) clears the burn.
    run_sign(shares, setups, [0, 1], DIGEST, session=3)
    renewed = run_setup(shares, session=10)
    run_sign(shares, renewed, [0, 2], DIGEST, session=4)


@pytest.mark.parametrize(
    "offset",
    [_REPLY + 32 + 100, _GAMMA_U - 1],
    ids=["a-tilde", "mu"],
)
def test_cheating_multiplication_sender_is_caught(offset: int) -> None:
    shares, setups = _fresh()
    victim, cheater = 1, 0

    def tamper(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        if (rnd, s, r) != (2, cheater, victim):
            return msg
        return _patch(msg, offset, bytes([msg[offset] ^ 0x40]))

    _expect_blame(shares, setups, tamper, cheater, victim, burned=True)


def test_rvole_input_inconsistent_with_r_is_caught() -> None:
    shares, setups = _fresh()
    victim, cheater = 2, 1

    def tamper(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        if (rnd, s, r) != (2, cheater, victim):
            return msg
        gamma_u = Point.from_bytes(msg[_GAMMA_U : _GAMMA_U + 33]) + G
        return _patch(msg, _GAMMA_U, gamma_u.to_bytes())

    err = _expect_blame(shares, setups, tamper, cheater, victim, burned=True)
    assert "R_j" in str(err)


def test_wrong_nonce_opening_is_caught() -> None:
    shares, setups = _fresh()

    def tamper(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        if (rnd, s, r) != (2, 1, 0):
            return msg
        return _patch(msg, _BIG_R, (Point.from_bytes(msg[_BIG_R : _BIG_R + 33]) + G).to_bytes())

    _expect_blame(shares, setups, tamper, 1, 0, burned=True)


@pytest.mark.parametrize(
    "bad_point",
    [b"\x02" + b"\xff" * 32, b"\x05" + b"\x01" * 32, bytes(33)],
    ids=["off-curve", "bad-prefix", "infinity"],
)
def test_bad_points_are_blamed(bad_point: bytes) -> None:
    shares, setups = _fresh()

    def tamper(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        return _patch(msg, _BIG_R, bad_point) if (rnd, s, r) == (2, 2, 1) else msg

    _expect_blame(shares, setups, tamper, 2, 1, burned=True)


@pytest.mark.parametrize(
    ("rnd", "mangle"),
    [
        (1, lambda m: m[:-1]),
        (2, lambda m: m + b"\x00"),
        (3, lambda m: m[:40]),
        (1, lambda m: m[:1] + b"\x22" + m[2:]),  # wrong kind
        (2, lambda m: m[:34] + b"\x01" + m[35:]),  # wrong sender field
    ],
    ids=["short-r1", "long-r2", "short-partial", "kind", "sender"],
)
def test_malformed_messages_are_blamed_without_burning(rnd: int, mangle) -> None:  # type: ignore[no-untyped-def]
    shares, setups = _fresh()

    def tamper(r_: int, s: int, r: int, msg: bytes) -> bytes:
        return mangle(msg) if (r_, s, r) == (rnd, 2, 0) else msg

    _expect_blame(shares, setups, tamper, 2, 0, burned=False)


def test_replayed_message_from_another_session_is_rejected() -> None:
    shares, setups = _fresh()
    recorded: dict[int, bytes] = {}

    def record(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        if (rnd, s, r) == (1, 1, 0):
            recorded[0] = msg
        return msg

    run_sign(shares, setups, [0, 1], DIGEST, session=20, tamper=record)

    def replay(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        return recorded[0] if (rnd, s, r) == (1, 1, 0) else msg

    with pytest.raises(FaultyParticipantError) as info:
        run_sign(shares, setups, [0, 1], DIGEST, session=21, tamper=replay)
    assert info.value.culprits == (1,) and "another session" in str(info.value)
    assert not setups[0].is_burned(1)


def test_bad_partial_signature_aborts_and_burns_the_session() -> None:
    shares, setups = _fresh()

    def tamper(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        if (rnd, s) != (3, 1):
            return msg
        return _patch(msg, HEADER_BYTES + 40, bytes([msg[HEADER_BYTES + 40] ^ 1]))

    with pytest.raises(ProtocolError) as info:
        run_sign(shares, setups, [0, 1, 2], DIGEST, session=30, tamper=tamper)
    assert not isinstance(info.value, FaultyParticipantError)
    assert setups[0].burned == {1, 2}


def test_equivocated_commitment_is_detected() -> None:
    shares, setups = _fresh()

    def tamper(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        if (rnd, s, r) != (1, 2, 0):
            return msg
        return _patch(msg, HEADER_BYTES, bytes(32))  # a different com_2 for party 0 only

    with pytest.raises(ProtocolError, match="different round-1 commitments"):
        run_sign(shares, setups, [0, 1, 2], DIGEST, session=31, tamper=tamper)


def test_setup_ceremony_blames_bad_reveal_and_bad_points() -> None:
    shares = dealer_keygen(2, 3, seed=11)

    def bad_reveal(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        return _patch(msg, HEADER_BYTES, bytes(32)) if (rnd, s, r) == (2, 1, 2) else msg

    with pytest.raises(FaultyParticipantError) as info:
        run_setup(shares, session=11, tamper=bad_reveal)
    assert info.value.culprits == (1,)

    def bad_point(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        return (
            _patch(msg, HEADER_BYTES + 32, b"\x02" + b"\xff" * 32)
            if (rnd, s, r) == (1, 0, 1)
            else msg
        )

    with pytest.raises(FaultyParticipantError) as info:
        run_setup(shares, session=12, tamper=bad_point)
    assert info.value.culprits == (0,)

    def replay(rnd: int, s: int, r: int, msg: bytes) -> bytes:
        return _patch(msg, 2, bytes(32)) if (rnd, s, r) == (1, 2, 0) else msg

    with pytest.raises(FaultyParticipantError, match="another session"):
        run_setup(shares, session=13, tamper=replay)


def test_setup_states_are_single_use() -> None:
    shares = dealer_keygen(2, 2, seed=12)
    st1, out1 = {}, {}
    for k in shares:
        st1[k.party_id], out1[k.party_id] = ecdsa.setup_round1(
            k, rand32("s"), rand32("r", k.party_id)
        )
    st2, out2 = {}, {}
    for i in st1:
        st2[i], out2[i] = ecdsa.setup_round2(st1[i], deliver(out1, i))
    with pytest.raises(SessionStateError):
        ecdsa.setup_round2(st1[0], deliver(out1, 0))
    ecdsa.setup_finalize(st2[0], deliver(out2, 0))
    with pytest.raises(SessionStateError):
        ecdsa.setup_finalize(st2[0], deliver(out2, 0))
