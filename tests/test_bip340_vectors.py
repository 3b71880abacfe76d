"""BIP-340 test vectors (shared/vectors/bip-0340-test-vectors.csv, all 19 rows).

Every row is checked three ways: ``tss.curve.schnorr_verify`` (libsecp256k1), a
pure-Python verifier written from the BIP-340 text below (a test oracle only,
never used by the project), and, for rows with a secret key, libsecp256k1's
signer with the row's ``aux_rand`` must reproduce the row's signature.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from coincurve import PrivateKey
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

from tests.vectors import load_csv
from tss.curve import schnorr_verify

ROWS = load_csv("bip-0340-test-vectors.csv")

### Oracle: BIP-340 "Specification" in plain Python (None = the point at infinity)

_P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)
_Pt = tuple[int, int] | None
_Jac = tuple[int, int, int]  # (X, Y, Z) with x = X/Z^2, y = Y/Z^3; Z = 0 is infinity


def _jac_double(p: _Jac) -> _Jac:
    x, y, z = p
    if z == 0 or y == 0:
        return (1, 1, 0)
    ysq = y * y % _P
    s = 4 * x * ysq % _P
    m = 3 * x * x % _P
    nx = (m * m - 2 * s) % _P
    return nx, (m * (s - nx) - 8 * ysq * ysq) % _P, 2 * y * z % _P


def _jac_add(p: _Jac, q: _Jac) -> _Jac:
    if p[2] == 0:
        return q
    if q[2] == 0:
        return p
    z1sq, z2sq = p[2] * p[2] % _P, q[2] * q[2] % _P
    u1, u2 = p[0] * z2sq % _P, q[0] * z1sq % _P
    s1, s2 = p[1] * z2sq * q[2] % _P, q[1] * z1sq * p[2] % _P
    if u1 == u2:
        return _jac_double(p) if s1 == s2 else (1, 1, 0)
    h, r = (u2 - u1) % _P, (s2 - s1) % _P
    h2 = h * h % _P
    h3 = h * h2 % _P
    nx = (r * r - h3 - 2 * u1 * h2) % _P
    return nx, (r * (u1 * h2 - nx) - s1 * h3) % _P, h * p[2] * q[2] % _P


def _to_affine(p: _Jac) -> _Pt:
    if p[2] == 0:
        return None
    zinv = pow(p[2], -1, _P)
    return p[0] * zinv * zinv % _P, p[1] * zinv * zinv * zinv % _P


def _lin_comb(a: int, pa: tuple[int, int], b: int, pb: tuple[int, int]) -> _Pt:
    """a*PA + b*PB by double-and-add over both scalars (Shamir's trick)."""
    ja, jb = (pa[0], pa[1], 1), (pb[0], pb[1], 1)
    both = _jac_add(ja, jb)
    r: _Jac = (1, 1, 0)
    for i in reversed(range(256)):
        r = _jac_double(r)
        bits = ((a >> i) & 1, (b >> i) & 1)
        if bits == (1, 1):
            r = _jac_add(r, both)
        elif bits == (1, 0):
            r = _jac_add(r, ja)
        elif bits == (0, 1):
            r = _jac_add(r, jb)
    return _to_affine(r)


def _lift_x(x: int) -> _Pt:
    if x >= _P:
        return None
    y_sq = (pow(x, 3, _P) + 7) % _P
    y = pow(y_sq, (_P + 1) // 4, _P)
    if pow(y, 2, _P) != y_sq:
        return None
    return x, y if y % 2 == 0 else _P - y


def _tagged(tag: str, msg: bytes) -> bytes:
    t = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(t + t + msg).digest()


def oracle_verify(msg: bytes, pubkey: bytes, sig: bytes) -> bool:
    """BIP-340 Verify(pk, m, sig), step by step."""
    if len(pubkey) != 32 or len(sig) != 64:
        return False
    p = _lift_x(int.from_bytes(pubkey, "big"))
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if p is None or r >= _P or s >= _N:
        return False
    e = int.from_bytes(_tagged("BIP0340/challenge", sig[:32] + pubkey + msg), "big") % _N
    big_r = _lin_comb(s, _G, _N - e, p)
    return big_r is not None and big_r[1] % 2 == 0 and big_r[0] == r


### libsecp256k1 signing of any message length (coincurve's sign_schnorr takes 32 bytes)


def _libsecp256k1_sign(secret: bytes, msg: bytes, aux_rand: bytes) -> bytes:
    if len(msg) == 32:
        return bytes(PrivateKey(secret).sign_schnorr(msg, aux_rand))
    ctx = GLOBAL_CONTEXT.ctx
    keypair = ffi.new("secp256k1_keypair *")
    assert lib.secp256k1_keypair_create(ctx, keypair, secret) == 1
    extra = ffi.new("secp256k1_schnorrsig_extraparams *")
    extra.magic = [0xDA, 0x6F, 0xB3, 0x8C]  # SECP256K1_SCHNORRSIG_EXTRAPARAMS_MAGIC
    extra.noncefp = ffi.NULL  # default: BIP-340 nonce function
    aux = ffi.new("unsigned char[32]", aux_rand)
    extra.ndata = aux
    sig = ffi.new("unsigned char[64]")
    assert lib.secp256k1_schnorrsig_sign_custom(ctx, sig, msg, len(msg), keypair, extra) == 1
    return bytes(ffi.buffer(sig))


def _row_params() -> list[Any]:
    return [pytest.param(row, id=f"row{row['index']}") for row in ROWS]


def test_all_rows_present() -> None:
    assert [int(row["index"]) for row in ROWS] == list(range(19))


@pytest.mark.parametrize("row", _row_params())
def test_verify(row: dict[str, str]) -> None:
    pubkey = bytes.fromhex(row["public key"])
    msg = bytes.fromhex(row["message"])
    sig = bytes.fromhex(row["signature"])
    expected = row["verification result"] == "TRUE"
    assert schnorr_verify(msg, pubkey, sig) is expected
    assert oracle_verify(msg, pubkey, sig) is expected


@pytest.mark.parametrize("row", [p for p in _row_params() if p.values[0]["secret key"]])
def test_sign(row: dict[str, str]) -> None:
    secret = bytes.fromhex(row["secret key"])
    pubkey = bytes.fromhex(row["public key"])
    msg = bytes.fromhex(row["message"])
    expected = bytes.fromhex(row["signature"])
    assert PrivateKey(secret).public_key_xonly.format() == pubkey
    assert _libsecp256k1_sign(secret, msg, bytes.fromhex(row["aux_rand"])) == expected
    assert oracle_verify(msg, pubkey, expected)
