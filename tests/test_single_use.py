"""Single-use secret state cannot be duplicated: FROST nonce states, DKLs23 states, presignatures.

Each state signs once because it wipes its nonce or sets a spent flag; a copy
would carry its own unspent nonce. The attacks below are the ones a copy
enables: three FROST partial signatures from one nonce give the signer's
share, two ECDSA signatures from one presignature give the whole key. They
succeed when the state can be copied and must now stop at the copy.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle
import random
from collections.abc import Callable
from typing import Any

import pytest

from tests.test_ecdsa_support import dealer_keygen, deliver, rand32, run_setup
from tss import ecdsa
from tss.curve import N, Point
from tss.errors import SessionStateError, StateCopyError
from tss.frost import (
    PlainPk,
    SessionContext,
    SignersContext,
    derive_interpolating_value,
    get_session_values,
    nonce_agg,
    signer_round1,
    signer_round2,
)
from tss.shamir import eval_point, poly_eval

Copier = Callable[[Any], Any]


def _replace_with_fresh_flag(state: Any) -> Any:
    """What ``dataclasses.replace`` made possible: a copy whose single-use marker is fresh."""
    if hasattr(state, "secnonce"):
        return dataclasses.replace(state, secnonce=bytearray(state.secnonce))
    return dataclasses.replace(state, spent=[False])


COPIERS: dict[str, Copier] = {
    "copy.deepcopy": copy.deepcopy,
    "pickle": lambda state: pickle.loads(pickle.dumps(state)),
    "dataclasses.replace": _replace_with_fresh_flag,
}
# How each copier is refused: the state's own typed error, or replace() refusing a
# non-dataclass (the standard library's TypeError).
REFUSED: dict[str, type[Exception]] = {
    "copy.deepcopy": StateCopyError,
    "pickle": StateCopyError,
    "dataclasses.replace": TypeError,
}


def solve_mod_n(rows: list[list[int]]) -> list[int]:
    """Solve the square linear system [A | y] modulo the group order (Gauss-Jordan)."""
    m = [[v % N for v in row] for row in rows]
    size = len(m)
    for col in range(size):
        pivot = next(r for r in range(col, size) if m[r][col])
        m[col], m[pivot] = m[pivot], m[col]
        inv = pow(m[col][col], -1, N)
        m[col] = [v * inv % N for v in m[col]]
        for r in range(size):
            if r != col and m[r][col]:
                f = m[r][col]
                m[r] = [(a - f * b) % N for a, b in zip(m[r], m[col], strict=True)]
    return [m[r][size] for r in range(size)]


### FROST


class Frost2of2:
    """A 2-of-2 keyring from a trusted dealer; the attacker is signer 1 (and the coordinator)."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        coeffs = [rng.randrange(1, N) for _ in range(2)]
        self.shares = [poly_eval(coeffs, eval_point(i)) for i in range(2)]
        self.public_key = Point.base_mul(coeffs[0]).to_bytes()
        self.public_shares = [Point.base_mul(s).to_bytes() for s in self.shares]
        self.msg = b"pay the attacker"
        self.rng = rng

    def round1(self, i: int, rand: bytes) -> tuple[Any, bytes]:
        return signer_round1(
            i, self.shares[i], self.public_key, self.public_shares, 2, self.msg, b"sid", rand
        )

    def nonce_reuse_equation(self, psig: bytes, pubnonces: dict[int, bytes]) -> list[int]:
        """Signer 0's ``Sign`` as a linear equation in (k1, k2, x): eps*k1 + eps*b*k2 + c*x = s."""
        ctx = SignersContext(
            2, 2, [0, 1], [PlainPk(p) for p in self.public_shares], PlainPk(self.public_key)
        )
        aggnonce = nonce_agg([pubnonces[0], pubnonces[1]], [0, 1])
        values = get_session_values(SessionContext(ctx, aggnonce, [], [], self.msg))
        eps = 1 if values.R.has_even_y() else -1
        g = 1 if values.Q.has_even_y() else -1
        c = values.e * derive_interpolating_value([0, 1], 0) * g * values.gacc
        return [eps, eps * values.b, c, int.from_bytes(psig, "big")]

    def steal_share(self, victims: list[Any]) -> int:
        """Sign with three states holding one nonce, each time with another nonce of our own."""
        pubnonce = victims[0].pubnonce
        rows = []
        for state in victims:
            _, mine = self.round1(1, self.rng.randbytes(32))
            pubnonces = {0: pubnonce, 1: mine}
            psig = signer_round2(state, [0, 1], pubnonces)
            rows.append(self.nonce_reuse_equation(psig, pubnonces))
        return solve_mod_n(rows)[2]


def test_frost_nonce_reuse_gives_the_share_the_attack_is_real() -> None:
    """The algebra of the attack below, with three states made from the same round-1 inputs
    (what a copy gives; ``signer_round1`` is deterministic in its inputs)."""
    keyring = Frost2of2(seed=1)
    rand = keyring.rng.randbytes(32)
    states = [keyring.round1(0, rand)[0] for _ in range(3)]
    assert keyring.steal_share(states) == keyring.shares[0]


@pytest.mark.parametrize("how", list(COPIERS))
def test_copied_frost_nonce_state_cannot_sign_twice(how: str) -> None:
    """Attack: copy a signer's FROST nonce state (deepcopy, pickle, or ``dataclasses.replace``
    with a fresh copy of the secret nonce) and sign with each copy against other co-signer
    nonces; three partial signatures from one nonce give the signer's secret share.

    Every way to copy the state is refused, and the original still signs exactly once.
    """
    keyring = Frost2of2(seed=2)
    state, pubnonce = keyring.round1(0, keyring.rng.randbytes(32))
    with pytest.raises(REFUSED[how]):
        keyring.steal_share([state, COPIERS[how](state), COPIERS[how](state)])
    _, attacker_nonce = keyring.round1(1, keyring.rng.randbytes(32))
    signer_round2(state, [0, 1], {0: pubnonce, 1: attacker_nonce})
    _, attacker_nonce = keyring.round1(1, keyring.rng.randbytes(32))
    with pytest.raises(SessionStateError):
        signer_round2(state, [0, 1], {0: pubnonce, 1: attacker_nonce})


### DKLs23


def ecdsa_presignatures(seed: int) -> tuple[list[Any], Any, Any]:
    """Both signers of a 2-of-2 ECDSA keyring up to their presignatures."""
    shares = dealer_keygen(2, 2, seed=seed)
    setups = run_setup(shares, session=seed)
    sid = rand32("single-use", seed)
    st1, out1 = {}, {}
    for i in (0, 1):
        st1[i], out1[i] = ecdsa.sign_round1(setups[i], shares[i], [0, 1], sid, rand32("r", i))
    st2, out2 = {}, {}
    for i in (0, 1):
        st2[i], out2[i] = ecdsa.sign_round2(st1[i], deliver(out1, i))
    presigs = [ecdsa.presign_finish(st2[i], deliver(out2, i)) for i in (0, 1)]
    return presigs, st1, st2


def _sign(presigs: list[Any], digest: bytes) -> bytes:
    partial, msgs = {}, {}
    for i in (0, 1):
        partial[i], msgs[i] = ecdsa.presign_partial(presigs[i], digest)
    return ecdsa.sign_combine(partial[1], {0: msgs[0]}).signature


def key_from_nonce_reuse(public_key: Point, sigs: list[tuple[bytes, bytes]]) -> int:
    """Two ECDSA signatures with one R on two digests give the private key (s may be negated)."""
    (h1, sig1), (h2, sig2) = [(int.from_bytes(h, "big"), s) for h, s in sigs]
    r = int.from_bytes(sig1[:32], "big")
    s1, s2 = int.from_bytes(sig1[32:], "big"), int.from_bytes(sig2[32:], "big")
    for a in (s1, N - s1):
        for b in (s2, N - s2):
            if a == b:
                continue
            k = (h1 - h2) * pow(a - b, -1, N) % N
            x = (a * k - h1) * pow(r, -1, N) % N
            if Point.base_mul(x) == public_key:
                return x
    raise AssertionError("no key recovered")


@pytest.mark.parametrize("how", list(COPIERS))
def test_copied_presignature_cannot_sign_twice(how: str) -> None:
    """Attack: copy the DKLs23 presignatures (deepcopy, pickle, or ``dataclasses.replace``
    with a fresh spent flag) and sign two digests with one R: the two signatures give the
    whole private key. Every copy is refused; the original signs once."""
    presigs, _, _ = ecdsa_presignatures(seed=7)
    digests = [hashlib.sha256(m).digest() for m in (b"first", b"second")]
    with pytest.raises(REFUSED[how]):
        copies = [COPIERS[how](p) for p in presigs]
        sigs = [(digests[0], _sign(presigs, digests[0])), (digests[1], _sign(copies, digests[1]))]
        key_from_nonce_reuse(presigs[0].public_key, sigs)
    _sign(presigs, digests[0])
    with pytest.raises(SessionStateError):
        _sign(presigs, digests[1])


def test_presignature_reuse_gives_the_key_the_attack_is_real() -> None:
    """The algebra of the attack above: two signatures sharing R reveal the key."""
    key = 0xC0FFEE
    public_key = Point.base_mul(key)
    k = 0xBADC0DE
    r = Point.base_mul(k).x_int() % N
    sigs = []
    for message in (b"first", b"second"):
        h = hashlib.sha256(message).digest()
        s = (int.from_bytes(h, "big") + r * key) * pow(k, -1, N) % N
        sigs.append((h, r.to_bytes(32, "big") + s.to_bytes(32, "big")))
    assert key_from_nonce_reuse(public_key, sigs) == key


### Every single-use type refuses every duplication


def every_single_use_state() -> dict[str, Any]:
    keyring = Frost2of2(seed=3)
    presigs, st1, st2 = ecdsa_presignatures(seed=11)
    partial, _ = ecdsa.presign_partial(presigs[1], bytes(32))
    return {
        "frost.SignerState": keyring.round1(0, bytes(32))[0],
        "ecdsa.SignRound1State": st1[0],
        "ecdsa.SignRound2State": st2[0],
        "ecdsa.Presignature": presigs[0],
        "ecdsa.PartialState": partial,
    }


def test_single_use_states_refuse_every_copy() -> None:
    for name, state in every_single_use_state().items():
        duplicators: tuple[Copier, ...] = (copy.copy, copy.deepcopy, pickle.dumps)
        for duplicate in duplicators:
            with pytest.raises(StateCopyError, match="single-use"):
                duplicate(state)
        with pytest.raises(TypeError, match="dataclass"):
            dataclasses.replace(state)
        assert not dataclasses.is_dataclass(state), name
        assert not hasattr(state, "__dict__"), name  # __slots__: nothing to lift wholesale
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(state, type(state).__slots__[0], None)
