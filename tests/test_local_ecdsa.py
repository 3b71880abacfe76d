"""tss.local for scheme "ecdsa-secp256k1": keygen, signing and the key lifecycle on DKLs23."""

from __future__ import annotations

import itertools
from functools import cache

import pytest
from coincurve import PublicKey
from eth_keys import keys as eth

from tss import local
from tss.bip32 import derive_public
from tss.curve import N, ecdsa_verify
from tss.errors import InputError
from tss.keyshare import KeyShare
from tss.signing import SigningOptions

DIGEST = bytes.fromhex("4f" * 32)


@cache
def keyring(t: int, n: int) -> tuple[KeyShare, ...]:
    return tuple(local.keygen("ecdsa-secp256k1", threshold=t, parties=n))


@pytest.mark.parametrize(("t", "n"), [(2, 2), (2, 3), (3, 5)], ids=str)
def test_keygen_then_quorums_sign(t: int, n: int) -> None:
    shares = keyring(t, n)
    assert len({s.public_key for s in shares}) == 1
    quorums = list(itertools.combinations(shares, t))
    for quorum in quorums if n <= 3 else quorums[:: len(quorums) - 1]:
        sig = local.sign(list(quorum), DIGEST)
        assert ecdsa_verify(DIGEST, shares[0].public_key, sig)
        assert int.from_bytes(sig[32:], "big") <= N // 2, "s must be low"


def test_recovery_id_recovers_the_ethereum_address() -> None:
    shares = keyring(2, 3)
    result = local.sign_recoverable(list(shares[1:]), DIGEST)
    recovered = PublicKey.from_signature_and_message(result.to_bytes65(), DIGEST, hasher=None)
    assert recovered.format() == shares[0].public_key
    # An independent implementation (eth-keys) recovers the same address.
    signature = eth.Signature(result.signature + bytes([result.recovery_id]))
    expected = eth.PublicKey.from_compressed_bytes(shares[0].public_key).to_checksum_address()
    assert signature.recover_public_key_from_msg_hash(DIGEST).to_checksum_address() == expected


def test_bip32_child_key_signatures() -> None:
    shares = keyring(2, 3)
    path = (44, 60, 0, 7)
    child = derive_public(shares[0].public_key, shares[0].chain_code, path)
    sig = local.sign(list(shares[:2]), DIGEST, SigningOptions(derivation_path=path))
    assert ecdsa_verify(DIGEST, child.public_key, sig)
    assert not ecdsa_verify(DIGEST, shares[0].public_key, sig)


def test_key_share_with_setup_round_trips() -> None:
    share = keyring(2, 3)[0]
    data = share.to_bytes()
    again = KeyShare.from_bytes(data)
    assert again == share and again.ecdsa is not None and share.ecdsa is not None
    assert again.ecdsa.to_bytes() == share.ecdsa.to_bytes()
    assert len(data) < 2 * 100 * 1024, "key shares stay well under 100 KiB per peer"
    assert share.secret_share_bytes.hex() not in repr(share)


def test_only_32_byte_digests_and_no_taproot() -> None:
    shares = list(keyring(2, 2))
    with pytest.raises(InputError):
        local.sign(shares, b"\x01" * 31)
    with pytest.raises(InputError):
        local.sign(shares, DIGEST, SigningOptions(taproot=True))


def test_import_keeps_the_address_and_export_returns_the_key() -> None:
    private_key = bytes.fromhex("b71c71a67e1177ad4e901695e1b4b9ee17ae16c6668d313eac2f96dbcda3f291")
    shares = local.import_key("ecdsa-secp256k1", private_key, threshold=2, parties=3)
    address = eth.PrivateKey(private_key).public_key.to_checksum_address()
    public_key = eth.PublicKey.from_compressed_bytes(shares[0].public_key)
    assert public_key.to_checksum_address() == address
    sig = local.sign_recoverable([shares[0], shares[2]], DIGEST)
    recovered = eth.Signature(sig.to_bytes65()).recover_public_key_from_msg_hash(DIGEST)
    assert recovered.to_checksum_address() == address
    assert local.export_key(shares[1:]) == private_key


def test_ecdsa_needs_threshold_two() -> None:
    with pytest.raises(InputError):
        local.keygen("ecdsa-secp256k1", threshold=1, parties=2)
