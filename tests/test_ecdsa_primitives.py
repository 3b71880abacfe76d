"""DKLs23 building blocks: GF(2^128), base OT, OT extension, RVOLE, zero sharing."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tss.curve import N, Point
from tss.ecdsa import base_ot, gf128, mul, ote, zero_share
from tss.ecdsa.params import KAPPA, XI, XI_EXT_BYTES
from tss.errors import InputError, InvalidEncodingError


def _rng(label: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big"))


def _bytes(label: str, n: int) -> bytes:
    return hashlib.shake_256(label.encode()).digest(n)


# --- GF(2^128) ---------------------------------------------------------------


def test_gf128_field_laws() -> None:
    a, b, c = (int.from_bytes(_bytes(s, 16), "little") for s in "abc")
    assert gf128.mul(a, b) == gf128.mul(b, a)
    assert gf128.mul(a, b ^ c) == gf128.mul(a, b) ^ gf128.mul(a, c)
    assert gf128.mul(gf128.mul(a, b), c) == gf128.mul(a, gf128.mul(b, c))
    assert gf128.mul(a, 1) == a and gf128.mul(a, 0) == 0
    # x^128 = x^7 + x^2 + x + 1: the reduction is a real multiplication, not an XOR.
    assert gf128.mul(1 << 127, 2) == gf128.MODULUS_LOW
    # a^(2^128 - 1) = 1 for a != 0 (multiplicative group of order 2^128 - 1).
    acc, base, e = 1, a, (1 << 128) - 1
    while e:
        if e & 1:
            acc = gf128.mul(acc, base)
        base, e = gf128.mul(base, base), e >> 1
    assert acc == 1


def test_column_hash_matches_field_multiplication() -> None:
    chis = [int.from_bytes(_bytes(f"chi{j}", 16), "little") for j in range(4)]
    cols = np.frombuffer(_bytes("cols", 7 * 80), dtype=np.uint8).reshape(7, 80)
    got = gf128.column_hash(cols, chis)
    for r in range(7):
        row = cols[r].tobytes()
        want = int.from_bytes(row[64:], "little")
        for j, chi in enumerate(chis):
            want ^= gf128.mul(chi, int.from_bytes(row[16 * j : 16 * j + 16], "little"))
        assert int.from_bytes(got[r].tobytes(), "little") == want
    with pytest.raises(InputError):
        gf128.column_hash(cols[:, :64], chis)


# --- base OT -----------------------------------------------------------------

_SID = b"s" * 32


def test_base_ot_outputs() -> None:
    choices = _bytes("choices", 4)
    state, m1 = base_ot.receiver_round1(_SID, 32, choices, _bytes("r", 32))
    keys, m2 = base_ot.sender_round2(_SID, 32, m1, _bytes("s", 32))
    got = base_ot.receiver_finish(state, 32, m2)
    for k in range(32):
        w = choices[k // 8] >> (k % 8) & 1
        assert got[k] == keys[k][w] != keys[k][1 - w]
    # A different session id gives unrelated outputs (session binding).
    keys2, _ = base_ot.sender_round2(b"t" * 32, 32, m1, _bytes("s", 32))
    assert all(a != b for a, b in zip(keys, keys2, strict=True))


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda m: m[:-1],
        lambda m: b"\x04" + m[1:],
        lambda m: b"\x02" + b"\xff" * 32 + m[33:],  # x >= p: not a point
        lambda m: bytes(33) + m[33:],  # infinity encoding is rejected
    ],
    ids=["short", "bad-prefix", "off-curve", "infinity"],
)
def test_base_ot_rejects_bad_points(corrupt) -> None:  # type: ignore[no-untyped-def]
    state, m1 = base_ot.receiver_round1(_SID, 2, b"\x01", _bytes("r", 32))
    with pytest.raises(InvalidEncodingError):
        base_ot.sender_round2(_SID, 2, corrupt(m1), _bytes("s", 32))
    _, m2 = base_ot.sender_round2(_SID, 2, m1, _bytes("s", 32))
    with pytest.raises(InvalidEncodingError):
        base_ot.receiver_finish(state, 2, corrupt(m2))


def test_base_ot_rejects_key_agreement_at_infinity() -> None:
    # r_0 = -H_0(r_1) makes m_0 the point at infinity: the sender must refuse.
    r1 = Point.base_mul(5)
    r0 = -base_ot._ro_point(_SID, 0, 0, r1)
    with pytest.raises(InvalidEncodingError):
        base_ot.sender_round2(_SID, 1, r0.to_bytes() + r1.to_bytes(), _bytes("s", 32))


# --- OT extension --------------------------------------------------------------


def _ot_pair(label: str) -> tuple[ote.OteSenderSetup, ote.OteReceiverSetup]:
    delta = _bytes(label + "delta", 32)
    k0, k1 = _bytes(label + "k0", KAPPA * 32), _bytes(label + "k1", KAPPA * 32)
    chosen = b"".join(
        (k1 if delta[i // 8] >> (i % 8) & 1 else k0)[32 * i : 32 * i + 32] for i in range(KAPPA)
    )
    return ote.OteSenderSetup(delta, chosen), ote.OteReceiverSetup(k0, k1)


def test_ote_correlation() -> None:
    sender, receiver = _ot_pair("p")
    choices = _bytes("x", XI // 8)
    state, msg = ote.receiver_extend(receiver, b"sid", choices, _bytes("pad", 28))
    assert len(msg) == ote.EXTEND_MSG_BYTES
    v0, v1 = ote.sender_extend(sender, b"sid", msg, b"salt" * 8)
    got = ote.receiver_outputs(state, b"salt" * 8)
    for j in range(XI):
        bit = choices[j // 8] >> (j % 8) & 1
        assert got[j] == (v1 if bit else v0)[j] != (v0 if bit else v1)[j]
        assert all(0 <= x < 2**256 for x in got[j])  # used mod q by the RVOLE


def cheating_extension(
    receiver: ote.OteReceiverSetup, ote_sid: bytes, honest_u: bytes, column: int
) -> bytes:
    """A receiver that uses different choice bits in one column of u (KOS cheat),
    then computes the check values honestly for its real x."""
    t0 = ote._expand(receiver.seeds0, ote_sid)
    t1 = ote._expand(receiver.seeds1, ote_sid)
    u = np.frombuffer(honest_u, dtype=np.uint8).reshape(KAPPA, XI_EXT_BYTES).copy()
    x = u[0] ^ t0[0] ^ t1[0]
    u[column, 0] ^= 0x01  # flip choice bit 0 in this column only
    chis = ote._challenges(ote_sid, u.tobytes())
    x_check = gf128.column_hash(x.reshape(1, -1), chis)
    t_check = gf128.column_hash(t0, chis)
    return u.tobytes() + x_check.tobytes() + t_check.tobytes()


def test_ote_consistency_check_catches_inconsistent_column() -> None:
    sender, receiver = _ot_pair("q")
    _, msg = ote.receiver_extend(receiver, b"sid", _bytes("x", XI // 8), _bytes("pad", 28))
    # Column i cheats; caught exactly when Delta_i = 1 (a guessed Delta_i = 0 passes:
    # the selective failure that makes a burned setup unusable afterwards).
    delta_bits = [sender.delta[i // 8] >> (i % 8) & 1 for i in range(KAPPA)]
    one, zero = delta_bits.index(1), delta_bits.index(0)
    bad = cheating_extension(receiver, b"sid", msg[: KAPPA * XI_EXT_BYTES], one)
    with pytest.raises(ote.OtConsistencyError):
        ote.sender_extend(sender, b"sid", bad, b"salt" * 8)
    lucky = cheating_extension(receiver, b"sid", msg[: KAPPA * XI_EXT_BYTES], zero)
    ote.sender_extend(sender, b"sid", lucky, b"salt" * 8)
    with pytest.raises(InvalidEncodingError):
        ote.sender_extend(sender, b"sid", msg[:-1], b"salt" * 8)


def test_ote_check_binds_session() -> None:
    sender, receiver = _ot_pair("r")
    _, msg = ote.receiver_extend(receiver, b"sid-a", _bytes("x", XI // 8), _bytes("pad", 28))
    with pytest.raises(ote.OtConsistencyError):
        ote.sender_extend(sender, b"sid-b", msg, b"salt" * 8)


# --- RVOLE (DKLs23 Protocol 5.2) ----------------------------------------------------


def test_rvole_products() -> None:
    sender, receiver = _ot_pair("m")
    a = (int.from_bytes(_bytes("a1", 32), "big") % N, N - 1)
    bob, b, m1 = mul.bob_round1(receiver, b"pair", _bytes("bob", 32))
    c, m2 = mul.alice_round2(sender, b"pair", m1, a, _bytes("alice", 32))
    assert len(m1) == mul.BOB_MSG_BYTES and len(m2) == mul.ALICE_MSG_BYTES
    d = mul.bob_finish(bob, m2)
    assert all((c[i] + d[i]) % N == a[i] * b % N for i in range(2))


def test_rvole_known_answer() -> None:
    # Both messages and all outputs of one RVOLE from fixed base-OT setups, inputs
    # and randomness: any change to what goes on the wire or comes out shows here.
    sender, receiver = _ot_pair("pin")
    a = tuple(int.from_bytes(_bytes(s, 32), "big") % N for s in ("a1", "a2"))
    bob, b, m1 = mul.bob_round1(receiver, b"pair", _bytes("bob", 32))
    c, m2 = mul.alice_round2(sender, b"pair", m1, a, _bytes("alice", 32))
    d = mul.bob_finish(bob, m2)
    transcript = m1 + m2 + b"".join(x.to_bytes(32, "big") for x in (b, *c, *d))
    assert hashlib.sha256(transcript).hexdigest() == (
        "148410d78809ae458af8c11d0fb658fbcc341599dcfd3f0268c2d48af5fcac2c"
    )


def test_rvole_check_catches_inconsistent_alice() -> None:
    sender, receiver = _ot_pair("n")
    bob, _, m1 = mul.bob_round1(receiver, b"pair", _bytes("bob", 32))
    _, m2 = mul.alice_round2(sender, b"pair", m1, (3, 4), _bytes("alice", 32))
    # Flip a correction a~_{j,i}: a different input in one OT (with theta and mu as sent).
    for offset in (32 + 32 * 3 * 7 + 5, len(m2) - 1):
        bad = bytearray(m2)
        bad[offset] ^= 1
        with pytest.raises(mul.RvoleCheckError):
            mul.bob_finish(bob, bytes(bad))
    # Non-canonical scalar and wrong length are encoding errors.
    with pytest.raises(InvalidEncodingError):
        mul.bob_finish(bob, m2[:32] + b"\xff" * 32 + m2[64:])
    with pytest.raises(InvalidEncodingError):
        mul.bob_finish(bob, m2 + b"\x00")


def test_gadget_is_public_and_fixed() -> None:
    g = mul.gadget()
    assert len(g) == XI and len(set(g)) == XI and all(0 < x < N for x in g)


# --- zero sharing ------------------------------------------------------------------


def test_zero_shares_sum_to_zero() -> None:
    parties = [0, 2, 3, 6]
    seeds = {
        (i, j): _bytes(f"seed{min(i, j)}{max(i, j)}", 32)
        for i in parties
        for j in parties
        if i != j
    }
    shares = [
        zero_share.zero_share(i, parties, {j: seeds[(i, j)] for j in parties if j != i}, b"sid")
        for i in parties
    ]
    assert sum(shares) % N == 0 and all(shares)
    c = zero_share.commit(b"sid", 0, 1, seeds[(0, 2)])
    assert c != zero_share.commit(b"sid", 1, 0, seeds[(0, 2)])
    assert zero_share.combine(b"\x0f" * 32, b"\xf0" * 32) == b"\xff" * 32
