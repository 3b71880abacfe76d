"""RFC 9591 FROST(secp256k1, SHA-256) known-answer test of the shared arithmetic.

The RFC's ciphersuite (section 6.5) differs from BIP 445 in its hashes and
encodings, so its hash functions are written here as a test-only oracle
(RFC 9380 ``expand_message_xmd`` with SHA-256 and ``hash_to_field``). What the
test pins down is the arithmetic both share, done with ``tss.curve`` and
``tss.shamir``: shares from the dealer's polynomial, Lagrange coefficients (RFC
identifier k is our 0-based participant k - 1), nonce commitments, binding
factors, the group commitment, signature shares and the final signature
(shared/vectors/rfc9591/frost-secp256k1-sha256.json = RFC 9591 Appendix E).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.vectors import load_json
from tss.curve import N, Point, point_sum, scalar_to_bytes
from tss.shamir import eval_point, lagrange_coefficient, poly_eval

KAT = load_json("rfc9591/frost-secp256k1-sha256.json")
CONTEXT = b"FROST-secp256k1-SHA256-v1"

### Oracle: RFC 9380 section 5.3.1 and RFC 9591 section 6.5


def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """RFC 9380 expand_message_xmd with SHA-256 (b_in_bytes = 32, s_in_bytes = 64)."""
    ell = -(-len_in_bytes // 32)
    assert ell <= 255 and len_in_bytes <= 65535 and len(dst) <= 255
    dst_prime = dst + bytes([len(dst)])
    msg_prime = bytes(64) + msg + len_in_bytes.to_bytes(2, "big") + b"\x00" + dst_prime
    b0 = hashlib.sha256(msg_prime).digest()
    blocks = [hashlib.sha256(b0 + b"\x01" + dst_prime).digest()]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, blocks[-1], strict=True))
        blocks.append(hashlib.sha256(mixed + bytes([i]) + dst_prime).digest())
    return b"".join(blocks)[:len_in_bytes]


def _hash_to_scalar(msg: bytes, label: bytes) -> int:
    # hash_to_field(msg, 1) over Z_n with L = 48 (RFC 9591 H1, H2, H3 for secp256k1).
    return int.from_bytes(expand_message_xmd(msg, CONTEXT + label, 48), "big") % N


def h1(m: bytes) -> int:
    return _hash_to_scalar(m, b"rho")


def h2(m: bytes) -> int:
    return _hash_to_scalar(m, b"chal")


def h3(m: bytes) -> int:
    return _hash_to_scalar(m, b"nonce")


def h4(m: bytes) -> bytes:
    return hashlib.sha256(CONTEXT + b"msg" + m).digest()


def h5(m: bytes) -> bytes:
    return hashlib.sha256(CONTEXT + b"com" + m).digest()


### Vector plumbing


def _int(value: str) -> int:
    return int(value, 16)


def _participant(identifier: int) -> int:
    """Our 0-based participant index of an RFC 9591 identifier (evaluation point)."""
    return identifier - 1


def _round_one() -> list[dict[str, Any]]:
    return list(KAT["round_one_outputs"]["outputs"])


def _share(identifier: int) -> int:
    for entry in KAT["inputs"]["participant_shares"]:
        if entry["identifier"] == identifier:
            return _int(entry["participant_share"])
    raise KeyError(identifier)


def _commitment_list() -> list[tuple[int, Point, Point]]:
    return [
        (
            out["identifier"],
            Point.from_bytes(bytes.fromhex(out["hiding_nonce_commitment"])),
            Point.from_bytes(bytes.fromhex(out["binding_nonce_commitment"])),
        )
        for out in sorted(_round_one(), key=lambda o: o["identifier"])
    ]


def _binding_factor_input(identifier: int) -> bytes:
    # RFC 9591 section 4.4 compute_binding_factors.
    encoded = b"".join(
        scalar_to_bytes(i) + d.to_bytes() + e.to_bytes() for i, d, e in _commitment_list()
    )
    group_pk = bytes.fromhex(KAT["inputs"]["group_public_key"])
    msg = bytes.fromhex(KAT["inputs"]["message"])
    return group_pk + h4(msg) + h5(encoded) + scalar_to_bytes(identifier)


def _group_commitment() -> Point:
    # RFC 9591 section 4.5: sum of D_i + rho_i * E_i.
    return point_sum(
        term for i, d, e in _commitment_list() for term in (d, e * h1(_binding_factor_input(i)))
    )


def _challenge(r: Point) -> int:
    group_pk = bytes.fromhex(KAT["inputs"]["group_public_key"])
    return h2(r.to_bytes() + group_pk + bytes.fromhex(KAT["inputs"]["message"]))


### Tests


@pytest.mark.parametrize(
    ("msg", "length", "expected"),
    [
        (b"", 0x20, "68a985b87eb6b46952128911f2a4412bbc302a9d759667f87f7a21d803f07235"),
        (b"abc", 0x20, "d8ccab23b5985ccea865c6c97b6e5b8350e794e603b4b97902f53a8a0d605615"),
        (
            b"abcdef0123456789",
            0x20,
            "eff31487c770a893cfb36f912fbfcbff40d5661771ca4b2cb4eafe524333f5c1",
        ),
        (
            b"abc",
            0x80,
            "abba86a6129e366fc877aab32fc4ffc70120d8996c88aee2fe4b32d6c7b6437a"
            "647e6c3163d40b76a73cf6a5674ef1d890f95b664ee0afa5359a5c4e07985635"
            "bbecbac65d747d3d2da7ec2b8221b17b0ca9dc8a1ac1c07ea6a1e60583e2cb00"
            "058e77b7b72a298425cd1b941ad4ec65e8afc50303a22c0f99b0509b4c895f40",
        ),
    ],
    ids=["empty-32", "abc-32", "abcdef-32", "abc-128"],
)
def test_expand_message_xmd_oracle(msg: bytes, length: int, expected: str) -> None:
    # RFC 9380 Appendix K.1, DST "QUUX-V01-CS02-with-expander-SHA256-128".
    dst = b"QUUX-V01-CS02-with-expander-SHA256-128"
    assert expand_message_xmd(msg, dst, length).hex() == expected


def test_config() -> None:
    assert KAT["config"]["name"] == "FROST(secp256k1, SHA-256)"
    assert KAT["inputs"]["participant_list"] == [1, 3]


def test_group_key_and_shares_from_polynomial() -> None:
    secret = _int(KAT["inputs"]["group_secret_key"])
    coeffs = [secret] + [_int(c) for c in KAT["inputs"]["share_polynomial_coefficients"]]
    pk = bytes.fromhex(KAT["inputs"]["group_public_key"])
    assert Point.base_mul(secret).to_bytes() == pk
    for entry in KAT["inputs"]["participant_shares"]:
        x = eval_point(_participant(entry["identifier"]))
        assert x == entry["identifier"]
        assert poly_eval(coeffs, x) == _int(entry["participant_share"])


def test_lagrange_coefficients_recover_the_secret() -> None:
    signers = [_participant(i) for i in KAT["inputs"]["participant_list"]]
    lambdas = {p: lagrange_coefficient(signers, p) for p in signers}
    # RFC 9591 section 4.2 derive_interpolating_value for identifiers {1, 3}: 3/2 and -1/2.
    assert lambdas[0] == 3 * pow(2, -1, N) % N
    assert lambdas[2] == -pow(2, -1, N) % N
    shares = {p: _share(p + 1) for p in signers}
    secret = _int(KAT["inputs"]["group_secret_key"])
    assert sum(lambdas[p] * shares[p] for p in signers) % N == secret


@pytest.mark.parametrize("out", _round_one(), ids=lambda o: f"id{o['identifier']}")
def test_nonces_and_commitments(out: dict[str, Any]) -> None:
    share = scalar_to_bytes(_share(out["identifier"]))
    for kind in ("hiding", "binding"):
        # RFC 9591 section 4.1 nonce_generate(secret) = H3(random_bytes || secret).
        nonce = h3(bytes.fromhex(out[f"{kind}_nonce_randomness"]) + share)
        assert nonce == _int(out[f"{kind}_nonce"])
        assert Point.base_mul(nonce).to_bytes().hex() == out[f"{kind}_nonce_commitment"]


@pytest.mark.parametrize("out", _round_one(), ids=lambda o: f"id{o['identifier']}")
def test_binding_factors(out: dict[str, Any]) -> None:
    rho_input = _binding_factor_input(out["identifier"])
    assert rho_input.hex() == out["binding_factor_input"]
    assert h1(rho_input) == _int(out["binding_factor"])


@pytest.mark.parametrize(
    "out", KAT["round_two_outputs"]["outputs"], ids=lambda o: f"id{o['identifier']}"
)
def test_signature_shares(out: dict[str, Any]) -> None:
    identifier = out["identifier"]
    r1 = {o["identifier"]: o for o in _round_one()}[identifier]
    c = _challenge(_group_commitment())
    signers = [_participant(i) for i in KAT["inputs"]["participant_list"]]
    lam = lagrange_coefficient(signers, _participant(identifier))
    rho = _int(r1["binding_factor"])
    # RFC 9591 section 5.2 sign: z_i = d_i + e_i * rho_i + lambda_i * s_i * c.
    z = (_int(r1["hiding_nonce"]) + _int(r1["binding_nonce"]) * rho) % N
    z = (z + lam * _share(identifier) * c) % N
    assert z == _int(out["sig_share"])
    # RFC 9591 section 5.4 verify_signature_share: z_i*G == D_i + rho_i*E_i + c*lambda_i*PK_i.
    comm = {i: (d, e) for i, d, e in _commitment_list()}[identifier]
    pk_i = Point.base_mul(_share(identifier))
    assert Point.base_mul(z) == point_sum([comm[0], comm[1] * rho, pk_i * (c * lam)])


def test_final_signature() -> None:
    r = _group_commitment()
    z = sum(_int(o["sig_share"]) for o in KAT["round_two_outputs"]["outputs"]) % N
    sig = bytes.fromhex(KAT["final_output"]["sig"])
    assert r.to_bytes() + scalar_to_bytes(z) == sig
    # RFC 9591 Appendix C verification: z*G == R + c*PK.
    pk = Point.from_bytes(bytes.fromhex(KAT["inputs"]["group_public_key"]))
    assert Point.base_mul(z) == r + pk * _challenge(r)
