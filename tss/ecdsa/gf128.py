"""GF(2^128) arithmetic for the OT-extension consistency check.

The check of KOS15 Fig. 10 (corrected version, after SoftSpokenOT, eprint
2022/192) multiplies challenge field elements chi_j by 128-bit blocks of each
column: a real field multiplication, not an XOR. No vetted Python library
exposes carry-less multiplication in GF(2^128) (``cryptography`` keeps GHASH
internal to AES-GCM), so it is written here, in two forms:

- ``mul``: schoolbook shift-and-add with reduction modulo
  x^128 + x^7 + x^2 + x + 1, for single products and as the test oracle;
- ``column_hash``: the same map applied to many columns at once. Multiplying by
  a fixed chi is GF(2)-linear, so ``sum_j chi_j * block_j`` for every column is
  one bit-matrix product over GF(2), done with numpy lookup tables (method of
  four Russians: one table of 256 XOR combinations per input byte).

Elements are Python ints whose bit k is the coefficient of x^k; a 16-byte block
is read little-endian, so bit k of the int is bit (k % 8) of byte k // 8, the
same order as ``numpy.unpackbits(..., bitorder="little")``.

Not constant time; the inputs are the receiver's masked columns and public
challenges (see the side-channel note in tss.curve).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tss.errors import InputError

__all__ = ["MODULUS_LOW", "mul", "mul_x", "column_hash"]

_MASK = (1 << 128) - 1
MODULUS_LOW = (1 << 7) | (1 << 2) | (1 << 1) | 1
"""The low terms of the reduction polynomial x^128 + x^7 + x^2 + x + 1."""


def mul_x(a: int) -> int:
    """``a * x`` in GF(2^128)."""
    a <<= 1
    if a >> 128:
        a = (a & _MASK) ^ MODULUS_LOW
    return a


def mul(a: int, b: int) -> int:
    """``a * b`` in GF(2^128) (carry-less product reduced mod the field polynomial)."""
    if not (0 <= a <= _MASK and 0 <= b <= _MASK):
        raise InputError("GF(2^128) elements are 128-bit integers")
    acc = 0
    while b:
        if b & 1:
            acc ^= a
        b >>= 1
        a = mul_x(a)
    return acc


def _multiplier_rows(chis: Sequence[int]) -> npt.NDArray[np.uint64]:
    """Row ``k + 128 j`` = ``chi_j * x^k`` as two little-endian 64-bit words."""
    rows = bytearray()
    for chi in chis:
        c = chi
        for _ in range(128):
            rows += c.to_bytes(16, "little")
            c = mul_x(c)
    return np.frombuffer(bytes(rows), dtype="<u8").reshape(-1, 2)


def _byte_tables(rows: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Four-Russians tables: T[w, g, b] = word w of the XOR of rows 8g + k for the
    bits k set in byte b. Words outermost, so each word's tables are one flat array."""
    groups = np.ascontiguousarray(rows.reshape(-1, 8, 2).transpose(2, 0, 1))
    table = np.zeros((2, groups.shape[1], 256), dtype=np.uint64)
    for k in range(8):  # the bytes with top bit k: those below 2^k, plus row 8g + k
        np.bitwise_xor(
            table[:, :, : 1 << k], groups[:, :, k : k + 1], out=table[:, :, 1 << k : 2 << k]
        )
    return table


def column_hash(columns: npt.NDArray[np.uint8], chis: Sequence[int]) -> npt.NDArray[np.uint8]:
    """Universal hash of each row of ``columns``: ``sum_j chi_j * block_j + block_m``.

    The linear map "multiply block j by chi_j and add" is applied byte by byte
    with precomputed tables (method of four Russians), all in numpy: one
    gather and one XOR reduction per 64-bit word, no BLAS (whose threads would
    double the CPU time). Hash all the rows that share ``chis`` in one call:
    the tables cost more than the rows.

    Arguments:
        columns: uint8 array of shape (n, 16 * (m + 1)); row i is one column of
            the OT-extension matrix, cut into m data blocks and one mask block.
        chis: the m challenge field elements.

    Returns:
        uint8 array of shape (n, 16): each hash as a 16-byte little-endian element.
    """
    m = len(chis)
    if columns.ndim != 2 or columns.shape[1] != 16 * (m + 1):
        raise InputError("columns must have m + 1 blocks of 16 bytes")
    table = _byte_tables(_multiplier_rows(chis)).reshape(2, -1)
    # Byte g of a row selects entry (g, byte) of the flat tables.
    index = columns[:, : 16 * m] + np.arange(0, 256 * 16 * m, 256, dtype=np.intp)
    product = np.stack([np.bitwise_xor.reduce(word[index], axis=1) for word in table], axis=1)
    mask = np.ascontiguousarray(columns[:, 16 * m :]).view("<u8")
    return np.ascontiguousarray(product ^ mask).view(np.uint8)
