"""Import by reshare (tss.dealer.import_dealer + tss.reshare with a KeyMaterial dealer).

The key's holder is the sole party of a 1-of-1 keyring and re-deals the key to
the new parties: their shares combine to the original key, ECDSA holders get
their pairwise setups, and a dealer whose material does not fit is refused.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from coincurve import PublicKeyXOnly

from tests.lifecycle_support import run, seeded
from tss import local
from tss.curve import N, Point, ecdsa_verify
from tss.dealer import import_dealer
from tss.errors import InputError
from tss.export import offline_export
from tss.keyshare import Scheme
from tss.reshare import Reshare, ReshareOutput, ResharePlan, deal, holder_seats

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
DIGEST = bytes(range(32))
SID = bytes(range(32))
CHAIN = bytes(range(32, 64))  # the imported key's chain code


def _import(scheme: Scheme, t2: int, n2: int, *, dealer_stays: bool) -> list[ReshareOutput]:
    keyring, material = import_dealer(scheme, KEY, CHAIN)
    holders = holder_seats(1, {0: "importer"}, ["importer" if dealer_stays else "x", "y", "z"][:n2])
    plan = ResharePlan(SID, keyring, (0,), holders, t2)
    rand = seeded(5)
    return run([Reshare(plan, seat, material if seat == 0 else None, rand) for seat in plan.seats])


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
@pytest.mark.parametrize("dealer_stays", [True, False], ids=["dealer-stays", "dealer-leaves"])
def test_an_imported_key_is_reshared_to_new_parties(scheme: Scheme, dealer_stays: bool) -> None:
    outputs = _import(scheme, 2, 3, dealer_stays=dealer_stays)
    public_key = Point.base_mul(int.from_bytes(KEY, "big")).to_bytes()
    shares = [o.share for o in outputs if o.share is not None]
    assert [s.party_id for s in shares] == [0, 1, 2]
    for share in shares:
        assert (share.scheme, share.threshold, share.public_key, share.epoch) == (
            scheme, 2, public_key, 1,
        )  # fmt: skip
        assert share.chain_code == CHAIN  # carried to every new party inside the ceremony
        assert (share.ecdsa is not None) == (scheme == "ecdsa-secp256k1")
    # Any two new parties sign under the original key, and back up to it.
    signature = local.sign([shares[0], shares[2]], DIGEST)
    if scheme == "bip340":
        assert PublicKeyXOnly(public_key[1:]).verify(signature, DIGEST)
    else:
        assert ecdsa_verify(DIGEST, public_key, signature)
    assert offline_export(shares[1:]) == KEY


def test_the_dealer_material_fits_the_keyring() -> None:
    keyring, material = import_dealer("bip340", KEY, chain_code=bytes(range(32)))
    assert (keyring.threshold, keyring.parties, keyring.epoch) == (1, 1, 0)
    assert keyring.public_shares == (keyring.public_key,) and material.chain_code == bytes(
        range(32)
    )
    assert material.secret_share == int.from_bytes(KEY, "big")
    assert KEY.hex() not in repr(material) and str(material.secret_share) not in repr(material)
    with pytest.raises(InputError):
        import_dealer("bip340", bytes(32), CHAIN)  # zero is no key
    with pytest.raises(InputError):
        import_dealer("bip340", N.to_bytes(32, "big"), CHAIN)
    with pytest.raises(InputError):
        import_dealer("ed448", KEY, CHAIN)  # type: ignore[arg-type]
    with pytest.raises(InputError):  # a Solana keypair whose halves disagree
        import_dealer("ed25519", KEY + bytes(32), CHAIN)
    with pytest.raises(InputError):
        import_dealer("bip340", KEY, chain_code=b"short")


def test_material_that_does_not_fit_the_plan_is_refused() -> None:
    keyring, material = import_dealer("ecdsa-secp256k1", KEY, CHAIN)
    plan = ResharePlan(SID, keyring, (0,), (1, 2), 2)
    rand = seeded(1)
    wrong_secret = replace(material, secret_share=material.secret_share + 1)
    with pytest.raises(InputError, match="does not match"):
        Reshare(plan, 0, wrong_secret, rand)
    with pytest.raises(InputError, match="does not match"):
        deal(plan, wrong_secret, bytes(32))
    other_epoch = replace(material, epoch=1)
    with pytest.raises(InputError, match="keyring"):
        Reshare(plan, 0, other_epoch, rand)
    _, other_key = import_dealer("ecdsa-secp256k1", bytes(31) + b"\x07", CHAIN)
    with pytest.raises(InputError, match="keyring"):
        Reshare(plan, 0, other_key, rand)
    with pytest.raises(InputError):  # a new party brings nothing
        Reshare(plan, 1, material, rand)
    # ECDSA's new keyring still needs t' >= 2: no 1-of-n ECDSA keyring by import.
    with pytest.raises(InputError):
        ResharePlan(SID, keyring, (0,), (1, 2), 1)


def test_an_ed25519_seed_deals_its_rfc8032_key() -> None:
    from nacl.signing import SigningKey

    keyring, material = import_dealer("ed25519", KEY, CHAIN)
    assert keyring.public_key == bytes(SigningKey(KEY).verify_key)
    assert (keyring.scheme, keyring.threshold, material.public_shares) == (
        "ed25519", 1, (keyring.public_key,),
    )  # fmt: skip
    keypair = KEY + keyring.public_key  # the Solana keypair of the same seed
    assert import_dealer("ed25519", keypair, CHAIN)[0] == keyring
