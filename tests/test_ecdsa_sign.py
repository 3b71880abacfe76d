"""DKLs23 signing end to end: t-of-n signer sets, verification three ways, presigning."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle

import pytest
from coincurve import PublicKey
from eth_keys import keys as eth  # type: ignore[attr-defined]

from tests.test_ecdsa_support import dealer_keygen, deliver, rand32, run_setup, run_sign
from tss import ecdsa
from tss.curve import N, ecdsa_verify
from tss.ecdsa.setup import UNKNOWN_SETUP_ID, EcdsaSetup
from tss.errors import InputError, InvalidEncodingError, PairSetupError, SessionStateError

DIGEST = hashlib.sha256(b"shardkeep dkls23").digest()


def _check_signature(public_key: bytes, digest: bytes, sig: ecdsa.RecoverableSignature) -> None:
    r, s = int.from_bytes(sig.signature[:32], "big"), int.from_bytes(sig.signature[32:], "big")
    assert 0 < r < N and 0 < s <= N // 2  # low s
    assert ecdsa_verify(digest, public_key, sig.signature)
    recovered = PublicKey.from_signature_and_message(sig.to_bytes65(), digest, hasher=None)
    assert recovered.format() == public_key
    # Ethereum: the address recovered from (v, r, s) over the 32-byte digest.
    assert sig.recovery_id in (0, 1)
    eth_sig = eth.Signature(vrs=(sig.recovery_id, r, s))
    expected = eth.PublicKey.from_compressed_bytes(public_key).to_checksum_address()
    assert eth_sig.recover_public_key_from_msg_hash(digest).to_checksum_address() == expected


@pytest.fixture(scope="module")
def keyring_2_of_3() -> tuple[list, list[EcdsaSetup]]:  # type: ignore[type-arg]
    shares = dealer_keygen(2, 3, seed=3)
    return shares, run_setup(shares, session=3)


def test_sign_2_of_2() -> None:
    shares = dealer_keygen(2, 2, seed=2)
    setups = run_setup(shares, session=2)
    sigs = run_sign(shares, setups, [0, 1], DIGEST)
    assert sigs[0] == sigs[1]
    _check_signature(shares[0].public_key, DIGEST, sigs[0])


@pytest.mark.parametrize("signers", [[0, 1], [0, 2], [1, 2], [0, 1, 2]], ids=str)
def test_sign_2_of_3_every_signer_set(keyring_2_of_3, signers) -> None:  # type: ignore[no-untyped-def]
    shares, setups = keyring_2_of_3
    digest = hashlib.sha256(bytes(signers)).digest()
    sigs = run_sign(shares, setups, signers, digest, session=sum(signers))
    assert len(set(sigs.values())) == 1
    _check_signature(shares[0].public_key, digest, sigs[signers[0]])


def test_sign_3_of_5() -> None:
    shares = dealer_keygen(3, 5, seed=5)
    setups = run_setup(shares, session=5)
    for n, signers in enumerate([[0, 2, 4], [1, 3, 4]]):
        digest = hashlib.sha256(b"3-of-5" + bytes([n])).digest()
        sigs = run_sign(shares, setups, signers, digest, session=n)
        _check_signature(shares[0].public_key, digest, sigs[signers[0]])


def test_presign_then_online(keyring_2_of_3) -> None:  # type: ignore[no-untyped-def]
    shares, setups = keyring_2_of_3
    ids, sid = [0, 2], rand32("presign-sid")
    st1, out1 = {}, {}
    for i in ids:
        st1[i], out1[i] = ecdsa.sign_round1(setups[i], shares[i], ids, sid, rand32("ps", i))
    st2, out2 = {}, {}
    for i in ids:
        st2[i], out2[i] = ecdsa.sign_round2(st1[i], deliver(out1, i))
    presigs = {i: ecdsa.presign_finish(st2[i], deliver(out2, i)) for i in ids}
    assert presigs[0].big_r == presigs[2].big_r
    partial, msgs = {}, {}
    for i in ids:
        partial[i], msgs[i] = ecdsa.presign_partial(presigs[i], DIGEST)
    sig = ecdsa.sign_combine(partial[0], {2: msgs[2]})
    _check_signature(shares[0].public_key, DIGEST, sig)
    # Presignatures and states are strictly single use.
    with pytest.raises(SessionStateError):
        ecdsa.presign_partial(presigs[0], hashlib.sha256(b"other").digest())
    with pytest.raises(SessionStateError):
        ecdsa.sign_combine(partial[0], {2: msgs[2]})
    with pytest.raises(SessionStateError):
        ecdsa.sign_round2(st1[0], deliver(out1, 0))
    with pytest.raises(SessionStateError):
        ecdsa.presign_finish(st2[0], deliver(out2, 0))


def test_digest_checks(keyring_2_of_3) -> None:  # type: ignore[no-untyped-def]
    shares, setups = keyring_2_of_3
    sid = rand32("digest-sid")
    for bad in (b"", b"x" * 31, b"x" * 33, "x" * 32):
        with pytest.raises(InputError):
            ecdsa.sign_round1(setups[0], shares[0], [0, 1], sid, rand32("r"), bad)  # type: ignore[arg-type]
    ids = [0, 1]
    st1, out1 = {}, {}
    for i in ids:
        st1[i], out1[i] = ecdsa.sign_round1(setups[i], shares[i], ids, sid, rand32("d", i), DIGEST)
    st2, out2 = {}, {}
    for i in ids:
        st2[i], out2[i] = ecdsa.sign_round2(st1[i], deliver(out1, i))
    presig = ecdsa.presign_finish(st2[0], deliver(out2, 0))
    with pytest.raises(InputError):
        ecdsa.presign_partial(presig, hashlib.sha256(b"not the bound digest").digest())
    with pytest.raises(InputError):
        ecdsa.presign_partial(presig, DIGEST[:16])


def test_signer_set_checks(keyring_2_of_3) -> None:  # type: ignore[no-untyped-def]
    shares, setups = keyring_2_of_3
    sid, rand = rand32("set-sid"), rand32("set")
    for signers in ([0], [1, 2], [1, 0], [0, 0, 1], [0, 3]):
        with pytest.raises(InputError):
            ecdsa.sign_round1(setups[0], shares[0], signers, sid, rand)
    with pytest.raises(InputError):  # setup of another party
        ecdsa.sign_round1(setups[1], shares[0], [0, 1], sid, rand)
    with pytest.raises(InputError):
        ecdsa.sign_round1(setups[0], shares[0], [0, 1], sid[:31], rand)


def test_setup_serialisation_round_trip(keyring_2_of_3) -> None:  # type: ignore[no-untyped-def]
    shares, setups = keyring_2_of_3
    data = setups[1].to_bytes()
    assert len(data) < 2 * 100 * 1024  # 24,673 bytes per peer
    decoded = EcdsaSetup.from_bytes(data)
    assert decoded.to_bytes() == data and decoded.index == 1 and decoded.burned == frozenset()
    assert "redacted" in repr(decoded) and data[40:80].hex() not in repr(decoded)
    decoded.mark_burned(2)
    again = EcdsaSetup.from_bytes(decoded.to_bytes())
    assert again.burned == {2} and again.is_burned(2) and not again.is_burned(0)
    # A decoded setup signs.
    restored = [EcdsaSetup.from_bytes(s.to_bytes()) for s in setups]
    sigs = run_sign(shares, restored, [0, 1], DIGEST, session=77)
    _check_signature(shares[0].public_key, DIGEST, sigs[0])
    for bad in (data[:-1], b"X" + data[1:], data[:8] + b"\x03" + data[9:], data + b"\x00"):
        with pytest.raises(InvalidEncodingError):
            EcdsaSetup.from_bytes(bad)


def _version1(setup: EcdsaSetup) -> bytes:
    """The earlier encoding: every peer, no count, no setup ids."""
    data = setup.to_bytes()
    head, body = data[:8] + b"\x01" + data[9:47], data[48:]
    out, pos = bytearray(head), 0
    while pos < len(body):
        out += body[pos : pos + 1] + body[pos + 33 : pos + 33 + 24640]
        pos += 33 + 24640
    return bytes(out)


def test_version_1_setups_still_decode_with_unknown_setup_ids(keyring_2_of_3) -> None:  # type: ignore[no-untyped-def]
    shares, setups = keyring_2_of_3
    old = [EcdsaSetup.from_bytes(_version1(s)) for s in setups]
    assert all(s.peer(j).setup_id == UNKNOWN_SETUP_ID for s in old for j in s.held)
    assert all(s.peer(j).setup_id != UNKNOWN_SETUP_ID for s in setups for j in s.held)
    sigs = run_sign(shares, old, [0, 2], DIGEST, session=78)
    _check_signature(shares[0].public_key, DIGEST, sigs[0])


def test_pair_setup_ids_agree_and_setups_without_pairs_refuse(keyring_2_of_3) -> None:  # type: ignore[no-untyped-def]
    shares, setups = keyring_2_of_3
    assert setups[0].peer(1).setup_id == setups[1].peer(0).setup_id
    assert setups[0].peer(1).setup_id != setups[0].peer(2).setup_id
    stripped = setups[0].restricted(())
    assert stripped.held == frozenset() and EcdsaSetup.from_bytes(stripped.to_bytes()).held == set()
    with pytest.raises(PairSetupError) as missing:
        ecdsa.sign_round1(stripped, shares[0], [0, 1], bytes(32), bytes(32))
    assert missing.value.peer == 1
    with pytest.raises(SessionStateError):
        copy.copy(setups[0].peer(1))
    with pytest.raises(SessionStateError):
        pickle.dumps(setups[0].peer(1))


def test_signatures_differ_per_session(keyring_2_of_3) -> None:  # type: ignore[no-untyped-def]
    shares, setups = keyring_2_of_3
    a = run_sign(shares, setups, [0, 1], DIGEST, session=40)[0]
    b = run_sign(shares, setups, [0, 1], DIGEST, session=41)[0]
    assert a.signature[:32] != b.signature[:32]  # fresh R each session
    assert len({a.signature, b.signature}) == 2


def test_inconsistent_key_material_is_rejected() -> None:
    shares = dealer_keygen(2, 3, seed=8)
    other = dealer_keygen(2, 3, seed=18)
    bad_pk = dataclasses.replace(shares[0], public_key=other[0].public_key)
    with pytest.raises(InputError):
        ecdsa.setup_round1(bad_pk, rand32("sid"), rand32("r"))
    with pytest.raises(InputError):
        ecdsa.setup_round1(shares[0], rand32("sid")[:16], rand32("r"))
