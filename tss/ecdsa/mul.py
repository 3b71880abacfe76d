"""Two-party random vector OLE: DKLs23 Protocol 5.2 (eprint 2023/765), from DKLs19 Protocol 1.

Realises Functionality 3.5 (F_RVOLE(ell)) with ell = 2: Bob's input b is random
(chosen by the protocol, "random" VOLE), Alice inputs a = (a_1, a_2); Alice gets
c, Bob gets d with c_i + d_i = a_i * b (mod q). Two messages, matching rounds 1
and 2 of signing (DKLs23 §5.1):

1. Bob: beta <- {0,1}^xi, b = <g, beta> with the public gadget vector g (random
   elements of Z_q, xi = kappa + 2 lambda_s, so b is statistically uniform even
   if lambda_s bits of beta leak through a selective failure; DKLs19 §3).
   He starts the OT extension (``tss.ecdsa.ote``) with choice bits beta.
2. Alice: from the extension she has v0_j, v1_j (ell + rho scalars per OT j);
   c_i = -sum_j g_j v0_{j,i}. She samples the check pad a_hat and sends the
   correction a~_{j,i} = v0_{j,i} - v1_{j,i} + a_i (a_hat for the rho check
   columns). theta = RO(sid, a~) (Fiat-Shamir, over her committed message),
   eta = a_hat + sum_i theta_i a_i, mu = RO(sid, {v0_{j,ell} + sum_i theta_i v0_{j,i}}_j);
   she sends (a~, eta, mu) (mu as a hash, the §5.1 optimisation).
3. Bob: d_dot_{j,i} = v_{j,i} + beta_j a~_{j,i} (= v0_{j,i} + beta_j a_i), checks
   RO(sid, {d_dot_{j,ell} + sum_i theta_i d_dot_{j,i} - beta_j eta}_j) == mu (the
   check on the correlation: Alice used the same a_i in every OT), and outputs
   d_i = sum_j g_j d_dot_{j,i}.

A failed check is ``RvoleCheckError`` (blame Alice, burn the pair). Scalars in
Alice's reply must be canonical (< q).
"""

from __future__ import annotations

import hashlib
import hmac
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from tss.curve import N, tagged_hash
from tss.ecdsa import ote
from tss.ecdsa.params import ELL, OT_WIDTH, RHO, XI, XI_EXT_BYTES
from tss.errors import InputError, InternalError, InvalidEncodingError, ProtocolError
from tss.tags import DKLS_TAG_MUL_GADGET, DKLS_TAG_MUL_MU, DKLS_TAG_MUL_THETA, DKLS_TAG_OTE_SID

__all__ = [
    "BOB_MSG_BYTES",
    "ALICE_MSG_BYTES",
    "RvoleCheckError",
    "BobState",
    "gadget",
    "bob_round1",
    "alice_round2",
    "bob_finish",
]

BOB_MSG_BYTES = 32 + ote.EXTEND_MSG_BYTES
"""Bob's nonce || OT-extension message."""
ALICE_MSG_BYTES = 32 + 32 * XI * OT_WIDTH + 32 * RHO + 32
"""Alice's salt || a~ (xi rows of ell + rho scalars) || eta (rho scalars) || mu."""


if (ELL, RHO) != (2, 1):
    raise ImportError("the RVOLE loops below are written out for ell = 2 inputs and rho = 1 check")


class RvoleCheckError(ProtocolError):
    """Bob's check on Alice's correlation failed (DKLs23 Protocol 5.2): Alice cheated."""


@lru_cache(maxsize=1)
def gadget() -> tuple[int, ...]:
    """The public gadget vector g in Z_q^xi (nothing-up-my-sleeve: hashes of j)."""
    prefix = hashlib.sha256(DKLS_TAG_MUL_GADGET.encode()).digest() * 2
    return tuple(
        int.from_bytes(hashlib.shake_256(prefix + j.to_bytes(2, "big")).digest(48), "big") % N
        for j in range(XI)
    )


def _bits(data: bytes, count: int) -> list[int]:
    return [(data[j // 8] >> (j % 8)) & 1 for j in range(count)]


def _theta(sid: bytes, salt: bytes, a_tilde: bytes) -> list[int]:
    d = hashlib.shake_256(
        hashlib.sha256(DKLS_TAG_MUL_THETA.encode()).digest() * 2 + sid + salt + a_tilde
    ).digest(48 * ELL * RHO)
    return [int.from_bytes(d[48 * k : 48 * k + 48], "big") % N for k in range(ELL * RHO)]


def _mu(sid: bytes, values: Sequence[int]) -> bytes:
    return tagged_hash(DKLS_TAG_MUL_MU, sid + _pack(values))


def _dot(xs: Iterable[int], ys: Iterable[int]) -> int:
    """sum x_i * y_i, unreduced."""
    return sum(map(operator.mul, xs, ys))


def _pack(values: Iterable[int]) -> bytes:
    """Scalars as 32-byte big-endian strings, concatenated."""
    return b"".join([v.to_bytes(32, "big") for v in values])


@dataclass(frozen=True)
class BobState:
    """Bob's secrets between his two steps."""

    sid: bytes
    extension: ote.ReceiverExtension = field(repr=False)
    beta: bytes = field(repr=False)


def bob_round1(setup: ote.OteReceiverSetup, sid: bytes, rand: bytes) -> tuple[BobState, int, bytes]:
    """Bob's first message (Protocol 5.2 step 1) and his random input b.

    Arguments:
        setup: Bob's base-OT seeds for the pair (Bob = this party, Alice = peer).
        sid: the pair's session id (binds the signing session and the ordered pair).
        rand: 32 bytes of fresh randomness.

    Returns:
        (state, b, message of BOB_MSG_BYTES bytes).
    """
    if len(rand) != 32:
        raise InputError("rand must be 32 bytes")
    stream = hashlib.shake_256(b"bob" + sid + rand).digest(32 + XI_EXT_BYTES)
    nonce = stream[:32]
    beta = stream[32 : 32 + XI // 8]
    pad = stream[32 + XI // 8 :]
    b = sum(g for g, bit in zip(gadget(), _bits(beta, XI), strict=True) if bit) % N
    ote_sid = tagged_hash(DKLS_TAG_OTE_SID, sid + nonce)
    extension, msg = ote.receiver_extend(setup, ote_sid, beta, pad)
    return BobState(sid, extension, beta), b, nonce + msg


def alice_round2(
    setup: ote.OteSenderSetup, sid: bytes, msg: bytes, inputs: Sequence[int], rand: bytes
) -> tuple[tuple[int, ...], bytes]:
    """Alice's reply (Protocol 5.2 step 2) and her output shares c.

    Arguments:
        setup: Alice's base-OT outputs for the pair (Alice = this party, Bob = peer).
        sid: the pair's session id.
        msg: Bob's BOB_MSG_BYTES message.
        inputs: Alice's ell scalars (a_1, ..., a_ell).
        rand: 32 bytes of fresh randomness.

    Returns:
        (c, reply of ALICE_MSG_BYTES bytes) with c_i + d_i = a_i * b.

    Raises:
        InvalidEncodingError: Bob's message has the wrong length.
        OtConsistencyError: the OT-extension check failed (blame Bob, burn the pair).
    """
    if len(inputs) != ELL or len(rand) != 32:
        raise InputError("Alice needs ell inputs and 32 bytes of randomness")
    if len(msg) != BOB_MSG_BYTES:
        raise InvalidEncodingError("RVOLE message has the wrong length")
    ote_sid = tagged_hash(DKLS_TAG_OTE_SID, sid + msg[:32])
    stream = hashlib.shake_256(b"alice" + sid + rand).digest(32 + 48 * RHO)
    salt = stream[:32]
    a_hat = [int.from_bytes(stream[32 + 48 * k : 80 + 48 * k], "big") % N for k in range(RHO)]
    v0, v1 = ote.sender_extend(setup, ote_sid, msg[32:], salt)
    a = [x % N for x in inputs] + a_hat
    g = gadget()
    columns0 = list(zip(*v0, strict=True))  # column i: v0_{j,i} for every OT j
    c = tuple(-_dot(g, columns0[i]) % N for i in range(ELL))
    a0, a1, a2 = a
    a_tilde = _pack(
        value
        for (x0, x1, x2), (y0, y1, y2) in zip(v0, v1, strict=True)
        for value in ((x0 - y0 + a0) % N, (x1 - y1 + a1) % N, (x2 - y2 + a2) % N)
    )
    theta0, theta1 = _theta(sid, salt, a_tilde)
    eta = [(a2 + theta0 * a0 + theta1 * a1) % N]
    mu_values = [(x2 + theta0 * x0 + theta1 * x1) % N for x0, x1, x2 in v0]
    reply = salt + a_tilde + _pack(eta) + _mu(sid, mu_values)
    if len(reply) != ALICE_MSG_BYTES:
        raise InternalError("RVOLE reply length")
    return c, reply


def _scalars(data: bytes) -> list[int]:
    """The 32-byte big-endian scalars of ``data``; each must be canonical (< q)."""
    values = [int.from_bytes(data[k : k + 32], "big") for k in range(0, len(data), 32)]
    if values and max(values) >= N:
        raise InvalidEncodingError("scalar out of range")
    return values


def bob_finish(state: BobState, reply: bytes) -> tuple[int, ...]:
    """Bob checks Alice's correlation and outputs d (Protocol 5.2 step 3).

    Raises:
        InvalidEncodingError: wrong length or a non-canonical scalar.
        RvoleCheckError: the check on the correlation failed (blame Alice, burn the pair).
    """
    if len(reply) != ALICE_MSG_BYTES:
        raise InvalidEncodingError("RVOLE reply has the wrong length")
    salt = reply[:32]
    a_tilde_bytes = reply[32 : 32 + 32 * XI * OT_WIDTH]
    tail = reply[32 + 32 * XI * OT_WIDTH :]
    a_tilde = _scalars(a_tilde_bytes)
    eta = _scalars(tail[: 32 * RHO])
    mu = tail[32 * RHO :]
    theta0, theta1 = _theta(state.sid, salt, a_tilde_bytes)
    v = ote.receiver_outputs(state.extension, salt)
    beta = _bits(state.beta, XI)
    # d_dot_{j,i} = v_{j,i} + beta_j a~_{j,i}, left unreduced: every use below is mod q.
    d_dot = [
        (x0 + a_tilde[3 * j], x1 + a_tilde[3 * j + 1], x2 + a_tilde[3 * j + 2])
        if bit
        else (x0, x1, x2)
        for j, ((x0, x1, x2), bit) in enumerate(zip(v, beta, strict=True))
    ]
    (eta0,) = eta
    mu_values = [
        (x2 + theta0 * x0 + theta1 * x1 - (eta0 if bit else 0)) % N
        for (x0, x1, x2), bit in zip(d_dot, beta, strict=True)
    ]
    if not hmac.compare_digest(_mu(state.sid, mu_values), mu):
        raise RvoleCheckError("RVOLE check on the correlation failed")
    g = gadget()
    columns = list(zip(*d_dot, strict=True))
    return tuple(_dot(g, columns[i]) % N for i in range(ELL))
