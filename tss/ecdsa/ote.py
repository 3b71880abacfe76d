"""OT extension: KOS15 Fig. 10 with the corrected consistency check (SoftSpokenOT, k = 1).

Extends the kappa = 256 base OTs of a pair into XI correlated random OTs of
OT_WIDTH scalars each, as DKLs23 (eprint 2023/765) §5 requires for its RVOLE
(Functionality 5.1, "forced reuse": one batch of Bob's OTs carries all of
Alice's payload columns). The roles are reversed with respect to the base OTs:
the extension *sender* (Alice) was the base-OT receiver with choice bits Delta
and holds k_i^{Delta_i}; the extension *receiver* (Bob) holds k_i^0 and k_i^1.

Extension (KOS15 Fig. 10 "Extend", DKLs23 §5.1 Fiat-Shamir variant, one message):

- Bob picks choice bits x of XI_EXT bits (the first XI are his real choices, the
  rest random), expands t^b_i = PRG(k^b_i) and sends u_i = t^0_i ^ t^1_i ^ x.
- Consistency check, on the columns (the corrected KOS check, equal to
  SoftSpokenOT's subspace-VOLE check with k = 1): chi_1..chi_m in GF(2^128) are
  derived by Fiat-Shamir from the session id and u; Bob sends
  x~ = H(x) and t~_i = H(t^0_i) with H(v) = sum_j chi_j v_j + v_{m+1}.
- Alice computes q_i = t^{Delta_i}_i ^ Delta_i * u_i (= t^0_i ^ Delta_i * x) and
  checks H(q_i) == t~_i ^ Delta_i * x~ for every i, then transposes: row j of
  Q is t_j ^ x_j * Delta.
- "Transpose and randomise" (KOS15 Fig. 10, DKLs18 Protocol 9): Alice's random
  messages are v^0_j = RO(j, q_j) and v^1_j = RO(j, q_j ^ Delta), Bob's
  v^{x_j}_j = RO(j, t_j), each expanded to OT_WIDTH values in Z_q.

Session binding: every PRG expansion, challenge and row hash binds ``ote_sid``,
which the caller derives from the signing session, the ordered pair and a fresh
nonce of Bob's (so a repeated session id never repeats Bob's PRG output). The
row hash also binds a fresh nonce of Alice's (``salt``, sent with her RVOLE
reply): even if Bob replays an old extension message, Alice's OT messages are
new, so her masked inputs of two sessions cannot be subtracted. This salt is an
addition to the papers, which assume unique session ids.

A failed check is ``OtConsistencyError``: the caller must blame Bob and burn
the pair's setup (selective-failure attack on Delta, Taurus advisory
GHSA-7f6p-phw2-8253: each abort can leak a bit of Delta, so a setup is never
used again after one).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tss.ecdsa import gf128
from tss.ecdsa.params import CHECK_BLOCKS, KAPPA, KAPPA_BYTES, OT_WIDTH, XI, XI_EXT_BYTES
from tss.errors import InputError, InvalidEncodingError, ProtocolError
from tss.tags import DKLS_TAG_OTE_CHI, DKLS_TAG_OTE_PRG, DKLS_TAG_OTE_ROW

__all__ = [
    "EXTEND_MSG_BYTES",
    "OtConsistencyError",
    "OteSenderSetup",
    "OteReceiverSetup",
    "ReceiverExtension",
    "receiver_extend",
    "sender_extend",
    "receiver_outputs",
]

_U_BYTES = KAPPA * XI_EXT_BYTES
_CHECK_BYTES = 16
EXTEND_MSG_BYTES = _U_BYTES + _CHECK_BYTES + KAPPA * _CHECK_BYTES
"""u (kappa rows of XI_EXT bits) || x~ (16) || t~ (kappa * 16)."""

OtRows = list[tuple[int, ...]]
_INDEX = np.arange(XI, dtype=">u2").view(np.uint8).reshape(XI, 2)
_MASK256 = (1 << 256) - 1
if OT_WIDTH != 3:
    raise ImportError("_row_scalars unpacks exactly OT_WIDTH = 3 values")


def _prefix(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest() * 2


_PRG_PREFIX = _prefix(DKLS_TAG_OTE_PRG)
_CHI_PREFIX = _prefix(DKLS_TAG_OTE_CHI)
_ROW_PREFIX = _prefix(DKLS_TAG_OTE_ROW)


class OtConsistencyError(ProtocolError):
    """The OT-extension consistency check failed: the receiver cheated."""


@dataclass(frozen=True)
class OteSenderSetup:
    """Alice's side of a pair's base OTs: Delta (kappa bits) and k_i^{Delta_i}."""

    delta: bytes = field(repr=False)
    seeds: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.delta) != KAPPA_BYTES or len(self.seeds) != KAPPA * 32:
            raise InputError("OT-extension sender setup has the wrong size")


@dataclass(frozen=True)
class OteReceiverSetup:
    """Bob's side of a pair's base OTs: both seeds k_i^0, k_i^1 of every base OT."""

    seeds0: bytes = field(repr=False)
    seeds1: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seeds0) != KAPPA * 32 or len(self.seeds1) != KAPPA * 32:
            raise InputError("OT-extension receiver setup has the wrong size")


@dataclass(frozen=True)
class ReceiverExtension:
    """Bob's secrets between his extension message and his outputs."""

    ote_sid: bytes
    rows: bytes = field(repr=False)
    """The first XI rows of T^0 transposed, 32 bytes each."""


def _expand(seeds: bytes, ote_sid: bytes) -> npt.NDArray[np.uint8]:
    """PRG(k_i) for the kappa seeds: a (kappa, XI_EXT_BYTES) bit matrix."""
    base = hashlib.shake_256(_PRG_PREFIX + ote_sid)
    out = bytearray()
    for i in range(KAPPA):
        h = base.copy()
        h.update(i.to_bytes(2, "big") + seeds[32 * i : 32 * i + 32])
        out += h.digest(XI_EXT_BYTES)
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(KAPPA, XI_EXT_BYTES)


def _challenges(ote_sid: bytes, u: bytes) -> list[int]:
    """Fiat-Shamir chi_1..chi_m in GF(2^128) from the session and u (DKLs23 §5.1)."""
    stream = hashlib.shake_256(_CHI_PREFIX + ote_sid + u).digest(16 * CHECK_BLOCKS)
    return [int.from_bytes(stream[16 * j : 16 * j + 16], "little") for j in range(CHECK_BLOCKS)]


def _transpose_rows(matrix: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Bit-transpose (kappa, XI_EXT bits) -> first XI rows of kappa bits, 32 bytes each."""
    bits = np.unpackbits(matrix, axis=1, bitorder="little")
    return np.packbits(np.ascontiguousarray(bits.T[:XI]), axis=1, bitorder="little")


def _row_scalars(ote_sid: bytes, salt: bytes, rows: bytes) -> OtRows:
    """RO(j, row_j) expanded to OT_WIDTH 256-bit integers, for each 32-byte row.

    The integers are uniform in [0, 2^256) and stand for elements of Z_q: every
    consumer reduces mod q (statistical distance from uniform mod q < 2^-127),
    which saves a reduction per value here, in the hottest loop of signing.
    """
    base = hashlib.shake_256(_ROW_PREFIX + ote_sid + salt)
    count = len(rows) // 32
    # Every row's hash input, index_j || row_j, laid out in one buffer at once.
    inputs = np.empty((count, 34), dtype=np.uint8)
    inputs[:, :2] = _INDEX[:count]
    inputs[:, 2:] = np.frombuffer(rows, dtype=np.uint8).reshape(count, 32)
    data = memoryview(inputs.tobytes())
    copy, frm = base.copy, int.from_bytes
    out: OtRows = []
    for start in range(0, 34 * count, 34):
        h = copy()
        h.update(data[start : start + 34])
        v = frm(h.digest(32 * OT_WIDTH), "big")  # the three values, big-endian, in order
        out.append((v >> 512, (v >> 256) & _MASK256, v & _MASK256))
    return out


def receiver_extend(
    setup: OteReceiverSetup, ote_sid: bytes, choices: bytes, pad: bytes
) -> tuple[ReceiverExtension, bytes]:
    """Bob's extension message (KOS15 Fig. 10 "Extend" steps 1-3 and check step 2).

    Arguments:
        setup: Bob's base-OT seeds for this ordered pair.
        ote_sid: session id of this extension (binds the pair and Bob's nonce).
        choices: XI/8 bytes, Bob's choice bits (bit j little-endian = OT j).
        pad: (XI_EXT - XI)/8 fresh random bytes, the extra choice bits that mask x~.

    Returns:
        Bob's state and the EXTEND_MSG_BYTES message for Alice.
    """
    if len(choices) != XI // 8 or len(pad) != XI_EXT_BYTES - XI // 8:
        raise InputError("choices must be XI/8 bytes and pad (XI_EXT - XI)/8 bytes")
    x = np.frombuffer(choices + pad, dtype=np.uint8)
    t0 = _expand(setup.seeds0, ote_sid)
    t1 = _expand(setup.seeds1, ote_sid)
    u = (t0 ^ t1 ^ x[None, :]).tobytes()
    chis = _challenges(ote_sid, u)
    # x~ = H(x), then t~_i = H(t^0_i): one call, so the challenge tables are built once.
    checks = gf128.column_hash(np.vstack([x[None, :], t0]), chis)
    msg = u + checks.tobytes()
    return ReceiverExtension(ote_sid, _transpose_rows(t0).tobytes()), msg


def sender_extend(
    setup: OteSenderSetup, ote_sid: bytes, msg: bytes, salt: bytes
) -> tuple[OtRows, OtRows]:
    """Alice checks Bob's extension message and derives both random messages of each OT.

    Arguments:
        setup: Alice's base-OT outputs (Delta, k_i^{Delta_i}) for this ordered pair.
        ote_sid: the same session id Bob used.
        msg: Bob's EXTEND_MSG_BYTES message.
        salt: Alice's fresh 32-byte nonce, bound into the row hashes.

    Returns:
        (v0, v1): XI tuples of OT_WIDTH scalars each; Bob gets v{x_j}[j].

    Raises:
        InvalidEncodingError: wrong length.
        OtConsistencyError: the consistency check failed (blame Bob, burn the setup).
    """
    if len(msg) != EXTEND_MSG_BYTES:
        raise InvalidEncodingError("OT-extension message has the wrong length")
    u_bytes = msg[:_U_BYTES]
    u = np.frombuffer(u_bytes, dtype=np.uint8).reshape(KAPPA, XI_EXT_BYTES)
    x_check = np.frombuffer(msg[_U_BYTES : _U_BYTES + 16], dtype=np.uint8)
    t_check = np.frombuffer(msg[_U_BYTES + 16 :], dtype=np.uint8).reshape(KAPPA, 16)
    delta_bits = np.unpackbits(np.frombuffer(setup.delta, dtype=np.uint8), bitorder="little")
    select = delta_bits.astype(bool)[:, None]
    # q_i = t^{Delta_i}_i ^ Delta_i * u_i  (KOS15 Fig. 10, Extend step 4)
    q = _expand(setup.seeds, ote_sid) ^ np.where(select, u, np.uint8(0))
    chis = _challenges(ote_sid, u_bytes)
    expected = t_check ^ np.where(select, x_check[None, :], np.uint8(0))
    if not hmac.compare_digest(gf128.column_hash(q, chis).tobytes(), expected.tobytes()):
        raise OtConsistencyError("OT-extension consistency check failed")
    rows = _transpose_rows(q)
    delta_row = np.frombuffer(setup.delta, dtype=np.uint8)
    v0 = _row_scalars(ote_sid, salt, rows.tobytes())
    v1 = _row_scalars(ote_sid, salt, (rows ^ delta_row[None, :]).tobytes())
    return v0, v1


def receiver_outputs(state: ReceiverExtension, salt: bytes) -> OtRows:
    """Bob's messages v^{x_j}_j for the XI OTs, once Alice's salt is known."""
    return _row_scalars(state.ote_sid, salt, state.rows)
