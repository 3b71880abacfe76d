"""FROST(Ed25519, SHA-512), RFC 9591: known answers, interoperability, and blame.

Known answers: RFC 9591 Appendix E.1 (``rfc9591/frost-ed25519-sha512.json``) and
the Zcash Foundation's frost-ed25519 vectors (``zf-frost-ed25519/``), including
identifiers above 255 and an invalid element. Signatures from the per-signer
rounds verify with libsodium (PyNaCl) and OpenSSL (``cryptography``) as plain
RFC 8032 Ed25519 signatures.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.signing import VerifyKey

from tests.vectors import load_json
from tss import rfc9591
from tss.errors import (
    InputError,
    InvalidEncodingError,
    ProtocolError,
    SessionStateError,
    StateCopyError,
)
from tss.frost import InvalidContributionError
from tss.group import ED25519, EdPoint, L
from tss.rfc9591 import FROST_ED25519, Commitment, KeyMaterial
from tss.shamir import eval_point, poly_eval

SUITE = FROST_ED25519
G = ED25519

VECTOR_FILES = [
    "rfc9591/frost-ed25519-sha512.json",
    "zf-frost-ed25519/vectors.json",
    "zf-frost-ed25519/vectors-big-identifier.json",
]


def _scalar(hex_: str) -> int:
    return G.decode_scalar(bytes.fromhex(hex_))


def _point(hex_: str) -> EdPoint:
    return G.decode(bytes.fromhex(hex_))


def _group_key(kat: dict[str, Any]) -> str:
    inputs = kat["inputs"]
    return str(inputs.get("group_public_key") or inputs["verifying_key_key"])


def _commitments(kat: dict[str, Any]) -> list[Commitment[EdPoint]]:
    return [
        Commitment(
            o["identifier"],
            _point(o["hiding_nonce_commitment"]),
            _point(o["binding_nonce_commitment"]),
        )
        for o in kat["round_one_outputs"]["outputs"]
    ]


@pytest.mark.parametrize("path", VECTOR_FILES)
def test_known_answers(path: str) -> None:
    kat = load_json(path)
    inputs = kat["inputs"]
    assert kat["config"]["name"] == "FROST(Ed25519, SHA-512)"
    msg = bytes.fromhex(inputs["message"])
    secret = _scalar(inputs["group_secret_key"])
    pk = _point(_group_key(kat))
    assert G.base_mul(secret) == pk
    # Shares from the dealer's polynomial (RFC 9591 Appendix C.1).
    coeffs = [secret] + [_scalar(c) for c in inputs["share_polynomial_coefficients"]]
    shares = {}
    for entry in inputs["participant_shares"]:
        share = _scalar(entry["participant_share"])
        assert poly_eval(coeffs, entry["identifier"], order=L) == share
        shares[entry["identifier"]] = share
    # Round one: nonce_generate and commit from the given randomness.
    nonces = {}
    for out in kat["round_one_outputs"]["outputs"]:
        i = out["identifier"]
        (d, e), (big_d, big_e) = rfc9591.commit(
            SUITE,
            shares[i],
            bytes.fromhex(out["hiding_nonce_randomness"]),
            bytes.fromhex(out["binding_nonce_randomness"]),
        )
        assert (d, e) == (_scalar(out["hiding_nonce"]), _scalar(out["binding_nonce"]))
        assert G.encode(big_d).hex() == out["hiding_nonce_commitment"]
        assert G.encode(big_e).hex() == out["binding_nonce_commitment"]
        nonces[i] = (d, e)
    commitments = _commitments(kat)
    rho = rfc9591.compute_binding_factors(SUITE, pk, commitments, msg)
    for out in kat["round_one_outputs"]["outputs"]:
        assert rho[out["identifier"]] == _scalar(out["binding_factor"])
    # Round two: signature shares, each verified (section 5.4).
    z = {}
    for out in kat["round_two_outputs"]["outputs"]:
        i = out["identifier"]
        z[i] = rfc9591.sign(SUITE, i, shares[i], pk, nonces[i], msg, commitments)
        assert G.encode_scalar(z[i]).hex() == out["sig_share"]
    sess = rfc9591._session(SUITE, pk, commitments, msg)
    for c in commitments:
        assert rfc9591.verify_signature_share(
            SUITE, c.identifier, G.base_mul(shares[c.identifier]), c, z[c.identifier], sess
        )
    sig = rfc9591.aggregate(SUITE, sess.group_commitment, list(z.values()))
    assert sig.hex() == kat["final_output"]["sig"]
    assert _verifies(G.encode(pk), msg, sig)


def test_invalid_element_refused() -> None:
    invalid = bytes.fromhex(
        load_json("zf-frost-ed25519/elements.json")["elements"]["invalid_element"]
    )
    with pytest.raises(InvalidEncodingError):
        G.decode(invalid)


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("identity", b"\x01" + bytes(31)),
        ("small order (order 4)", bytes(32)),
        ("non-canonical y >= p", (2**255 - 19 + 1).to_bytes(32, "little")),
        ("not on the curve", (2).to_bytes(32, "little")),
        ("torsion component", None),
        ("short", bytes(31)),
    ],
)
def test_received_points_validated(name: str, encoding: bytes | None) -> None:
    if encoding is None:
        # A prime-order point plus the order-2 point (0, -1): on the curve, not in the subgroup.
        from nacl.bindings import crypto_core_ed25519_add

        order2 = (2**255 - 19 - 1).to_bytes(32, "little")
        encoding = crypto_core_ed25519_add(G.encode(G.base_mul(7)), order2)
    with pytest.raises(InvalidEncodingError):
        G.decode(encoding)


def test_scalars_validated() -> None:
    with pytest.raises(InvalidEncodingError):
        G.decode_scalar(L.to_bytes(32, "little"))
    assert G.decode_scalar((L - 1).to_bytes(32, "little")) == L - 1


def _verifies(pk: bytes, msg: bytes, sig: bytes) -> bool:
    VerifyKey(pk).verify(msg, sig)  # libsodium; raises BadSignatureError
    Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)  # OpenSSL; raises InvalidSignature
    return True


def _dealt(t: int, n: int) -> tuple[KeyMaterial, dict[int, int]]:
    coeffs = [secrets.randbelow(L - 1) + 1 for _ in range(t)]
    shares = {i: poly_eval(coeffs, eval_point(i), order=L) for i in range(n)}
    key = KeyMaterial(
        G.encode(G.base_mul(coeffs[0])),
        tuple(G.encode(G.base_mul(shares[i])) for i in range(n)),
        t,
    )
    return key, shares


def _round1(
    key: KeyMaterial, shares: dict[int, int], signers: list[int], msg: bytes
) -> tuple[dict[int, rfc9591.SignerState], dict[int, bytes]]:
    states, comms = {}, {}
    for i in signers:
        states[i], comms[i] = rfc9591.signer_round1(
            SUITE, i, shares[i], key, msg, secrets.token_bytes(64)
        )
    return states, comms


@pytest.mark.parametrize(("t", "n", "signers"), [(2, 3, [0, 2]), (3, 5, [1, 3, 4]), (1, 1, [0])])
def test_signer_rounds_make_standard_ed25519_signatures(t: int, n: int, signers: list[int]) -> None:
    key, shares = _dealt(t, n)
    msg = secrets.token_bytes(200)  # Ed25519 signs the message itself, of any length
    states, comms = _round1(key, shares, signers, msg)
    psigs = {i: rfc9591.signer_round2(states[i], signers, comms) for i in signers}
    sigs = {rfc9591.signer_aggregate(states[i], psigs) for i in signers}
    sigs.add(rfc9591.coordinator_aggregate(SUITE, key, msg, signers, comms, psigs))
    assert len(sigs) == 1
    assert _verifies(key.public_key, msg, sigs.pop())


def test_invalid_signature_share_names_its_signer() -> None:
    """Forged signature share: a signer sends z_i + 1; aggregation names it, not the others."""
    key, shares = _dealt(2, 3)
    msg, signers = b"pay 1 SOL", [0, 1, 2]
    states, comms = _round1(key, shares, signers, msg)
    psigs = {i: rfc9591.signer_round2(states[i], signers, comms) for i in signers}
    psigs[1] = G.encode_scalar(G.decode_scalar(psigs[1]) + 1)
    with pytest.raises(InvalidContributionError) as e:
        rfc9591.signer_aggregate(states[0], psigs)
    assert e.value.culprits == (1,) and e.value.contrib == "psig"
    psigs[2] = b"\xff" * 32  # out of range
    with pytest.raises(ProtocolError) as e2:
        rfc9591.coordinator_aggregate(SUITE, key, msg, signers, comms, psigs)
    assert e2.value.culprits == (1, 2)


def test_invalid_commitment_names_its_signer() -> None:
    """Small-order nonce commitment: a signer sends the identity as its hiding commitment."""
    key, shares = _dealt(2, 3)
    msg, signers = b"m", [0, 2]
    states, comms = _round1(key, shares, signers, msg)
    comms[2] = b"\x01" + bytes(31) + comms[2][32:]
    with pytest.raises(InvalidContributionError) as e:
        rfc9591.signer_round2(states[0], signers, comms)
    assert e.value.culprits == (2,) and e.value.contrib == "pubnonce"


def _torsioned(encoding: bytes) -> bytes:
    # The point plus the order-2 point (0, -1): on the curve, not in the subgroup.
    from nacl.bindings import crypto_core_ed25519_add

    return crypto_core_ed25519_add(encoding, (2**255 - 19 - 1).to_bytes(32, "little"))


@pytest.mark.parametrize(
    "bad_binding",
    [
        lambda e: b"\x01" + bytes(31),  # identity
        lambda e: bytes(32),  # small order
        lambda e: (2**255 - 19 + 1).to_bytes(32, "little"),  # non-canonical
        lambda e: (2).to_bytes(32, "little"),  # not on the curve
        _torsioned,
    ],
    ids=["identity", "small order", "non-canonical", "off the curve", "torsion component"],
)
def test_invalid_binding_commitment_names_its_signer(bad_binding: Any) -> None:
    """Invalid binding commitment E (checked by the multiplication rho * E): every
    signer and the coordinator name its signer; with a bad hiding commitment from
    another signer, both are named."""
    key, shares = _dealt(3, 4)
    msg, signers = b"m", [0, 2, 3]
    states, comms = _round1(key, shares, signers, msg)
    comms[2] = comms[2][:32] + bad_binding(comms[2][32:])
    with pytest.raises(InvalidContributionError) as e:
        rfc9591.signer_round2(states[0], signers, comms)
    assert e.value.culprits == (2,) and e.value.contrib == "pubnonce"
    psigs = {i: bytes(32) for i in signers}
    with pytest.raises(InvalidContributionError) as e:
        rfc9591.coordinator_aggregate(SUITE, key, msg, signers, comms, psigs)
    assert e.value.culprits == (2,)
    comms[0] = bytes(32) + comms[0][32:]
    with pytest.raises(ProtocolError) as e2:
        rfc9591.coordinator_aggregate(SUITE, key, msg, signers, comms, psigs)
    assert e2.value.culprits == (0, 2)
    with pytest.raises(ProtocolError) as e2:
        rfc9591.signer_round2(states[3], signers, comms)
    assert e2.value.culprits == (0, 2)


def test_nonce_reuse_refused() -> None:
    """Nonce reuse: round 2 run twice (or on a copy of the state) would leak the share."""
    key, shares = _dealt(2, 2)
    states, comms = _round1(key, shares, [0, 1], b"m")
    with pytest.raises(StateCopyError):
        copy.deepcopy(states[0])
    rfc9591.signer_round2(states[0], [0, 1], comms)
    assert states[0].consumed
    with pytest.raises(SessionStateError):
        rfc9591.signer_round2(states[0], [0, 1], comms)


def test_replaced_own_commitment_refused() -> None:
    key, shares = _dealt(2, 2)
    states, comms = _round1(key, shares, [0, 1], b"m")
    comms[0] = comms[1]
    with pytest.raises(ProtocolError):
        rfc9591.signer_round2(states[0], [0, 1], comms)


def test_bad_inputs() -> None:
    key, shares = _dealt(2, 3)
    with pytest.raises(InputError):
        rfc9591.signer_round1(SUITE, 0, shares[0], key, b"m", bytes(32))
    with pytest.raises(InputError):
        rfc9591.signer_round1(SUITE, 0, 0, key, b"m", bytes(64))
    states, comms = _round1(key, shares, [0, 1], b"m")
    with pytest.raises(InputError):
        rfc9591.signer_round2(states[0], [0], {0: comms[0]})  # below the threshold
