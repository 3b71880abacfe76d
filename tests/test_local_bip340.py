"""tss.local for scheme "bip340": keygen, signing and the key lifecycle, in one process."""

from __future__ import annotations

import itertools
from dataclasses import replace

import cbor2
import pytest
from coincurve import PublicKeyXOnly

from tss import local
from tss.errors import InputError, InvalidEncodingError
from tss.keyshare import KeyShare
from tss.signing import SigningOptions
from tss.taproot import taproot_output_key

DIGEST = bytes(range(32))


@pytest.mark.parametrize(("t", "n"), [(1, 1), (2, 2), (2, 3), (3, 5)], ids=str)
def test_keygen_then_every_quorum_signs(t: int, n: int) -> None:
    shares = local.keygen("bip340", threshold=t, parties=n)
    assert [s.party_id for s in shares] == list(range(n))
    assert len({s.public_key for s in shares}) == 1
    xonly = shares[0].public_key[1:]
    for quorum in itertools.combinations(shares, t):
        sig = local.sign(list(quorum), DIGEST)
        assert PublicKeyXOnly(xonly).verify(sig, DIGEST)


def test_more_than_threshold_signers_sign() -> None:
    shares = local.keygen("bip340", threshold=2, parties=3)
    sig = local.sign(shares, DIGEST)
    assert PublicKeyXOnly(shares[0].public_key[1:]).verify(sig, DIGEST)


def test_taproot_key_path_signature_verifies_under_output_key() -> None:
    shares = local.keygen("bip340", threshold=2, parties=3)
    sig = local.sign(shares[:2], DIGEST, SigningOptions(taproot=True))
    output = taproot_output_key(shares[0].public_key[1:])
    assert PublicKeyXOnly(output.output_key).verify(sig, DIGEST)
    assert not PublicKeyXOnly(shares[0].public_key[1:]).verify(sig, DIGEST)


def test_fewer_than_threshold_is_refused() -> None:
    shares = local.keygen("bip340", threshold=3, parties=5)
    with pytest.raises(InputError):
        local.sign(shares[:2], DIGEST)


def test_export_and_import_keep_the_public_key() -> None:
    shares = local.keygen("bip340", threshold=2, parties=3)
    key = local.export_key(shares[1:])
    imported = local.import_key("bip340", key, threshold=3, parties=5)
    assert {s.public_key for s in imported} == {shares[0].public_key}
    sig = local.sign(imported[2:], DIGEST)
    assert PublicKeyXOnly(shares[0].public_key[1:]).verify(sig, DIGEST)


def test_key_share_round_trips_and_hides_its_secret() -> None:
    share = local.keygen("bip340", threshold=2, parties=2)[1]
    again = KeyShare.from_bytes(share.to_bytes())
    assert again == share
    secret_hex = share.secret_share_bytes.hex()
    assert secret_hex not in repr(share) and str(share.secret_share) not in repr(share)


def test_key_share_rejects_tampering() -> None:
    share = local.keygen("bip340", threshold=2, parties=2)[0]
    fields = cbor2.loads(share.to_bytes())
    bad_secret = dict(fields, secret_share=(share.secret_share + 1).to_bytes(32, "big"))
    for data in (
        b"not cbor \xff",
        share.to_bytes() + b"\x00",
        cbor2.dumps(dict(fields, version=99)),
        cbor2.dumps(dict(fields, format="other")),
        cbor2.dumps(bad_secret),
        cbor2.dumps(dict(fields, public_key=b"\x02" + bytes(32))),
        cbor2.dumps(dict(fields, party_id=True)),
        cbor2.dumps({k: v for k, v in fields.items() if k != "epoch"}),
    ):
        with pytest.raises(InvalidEncodingError):
            KeyShare.from_bytes(data)


def test_shares_of_different_keyrings_or_epochs_do_not_mix() -> None:
    a = local.keygen("bip340", threshold=2, parties=2)
    b = local.keygen("bip340", threshold=2, parties=2)
    with pytest.raises(InputError):
        local.sign([a[0], b[1]], DIGEST)
    with pytest.raises(InputError):
        local.sign([a[0], replace(a[1], epoch=1)], DIGEST)


def test_unknown_scheme_and_bad_sizes() -> None:
    with pytest.raises(InputError):
        local.keygen("ed448", threshold=2, parties=2)
    with pytest.raises(InputError):
        local.keygen("bip340", threshold=3, parties=2)
    shares = local.keygen("bip340", threshold=1, parties=1)
    with pytest.raises(InputError):
        local.sign(shares, b"short")
