"""BIP-32 non-hardened derivation of threshold keys, for both schemes (docs/architecture.md).

A keyring's child key is public derivation from its public key and chain code
(``tss.bip32.derive_public``); the signers sign for it with their shares
tweaked by the path's accumulated I_L. Checked against the BIP-32 test
vectors' non-hardened steps (each parent imported as a threshold keyring with
its chain code) and the BIP-341 wallet vectors' key-path tweaks.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest

from tests.lifecycle_support import bip340_keyring, run, seeded
from tests.vectors import load_json
from tss import local
from tss.bip32 import HARDENED, derive_public
from tss.curve import N, Point, ecdsa_verify, schnorr_verify
from tss.dealer import split_key
from tss.errors import InputError
from tss.keygen import EcdsaSetupCeremony
from tss.keyshare import KeyShare, Scheme
from tss.signing import SigningOptions
from tss.taproot import taproot_output_key

DIGEST = hashlib.sha256(b"derivation").digest()
SCHEMES: list[Scheme] = ["bip340", "ecdsa-secp256k1"]

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _xkey(s: str) -> tuple[bytes, bytes]:
    """(key data, chain code) of a Base58Check extended key (BIP-32 "Serialization format")."""
    num = 0
    for ch in s:
        num = num * 58 + _B58.index(ch)
    raw = num.to_bytes(82, "big")
    payload, checksum = raw[:-4], raw[-4:]
    assert hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] == checksum
    return payload[45:78], payload[13:45]


# BIP-32 "Test Vectors" (bitcoin/bips bip-0032.mediawiki), every step public
# derivation can take: (step, xprv of the parent, non-hardened path, xpub and
# xprv of the child). Transcribed here because tests/vectors does not vendor
# BIP-32; tests/test_frost_vectors.py checks the same xpub steps of CKDpub alone.
BIP32_STEPS = [
    (
        "v1 m/0H -> /1",
        "xprv9uHRZZhk6KAJC1avXpDAp4MDc3sQKNxDiPvvkX8Br5ngLNv1TxvUxt4cV1rGL5hj6KCesnDYUhd7oWgT11eZG7XnxHrnYeSvkzY7d2bhkJ7",
        [1],
        "xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ",
        "xprv9wTYmMFdV23N2TdNG573QoEsfRrWKQgWeibmLntzniatZvR9BmLnvSxqu53Kw1UmYPxLgboyZQaXwTCg8MSY3H2EU4pWcQDnRnrVA1xe8fs",
    ),
    (
        "v1 m/0H/1/2H -> /2",
        "xprv9z4pot5VBttmtdRTWfWQmoH1taj2axGVzFqSb8C9xaxKymcFzXBDptWmT7FwuEzG3ryjH4ktypQSAewRiNMjANTtpgP4mLTj34bhnZX7UiM",
        [2],
        "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV",
        "xprvA2JDeKCSNNZky6uBCviVfJSKyQ1mDYahRjijr5idH2WwLsEd4Hsb2Tyh8RfQMuPh7f7RtyzTtdrbdqqsunu5Mm3wDvUAKRHSC34sJ7in334",
    ),
    (
        "v1 m/0H/1/2H/2 -> /1000000000",
        "xprvA2JDeKCSNNZky6uBCviVfJSKyQ1mDYahRjijr5idH2WwLsEd4Hsb2Tyh8RfQMuPh7f7RtyzTtdrbdqqsunu5Mm3wDvUAKRHSC34sJ7in334",
        [1000000000],
        "xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy",
        "xprvA41z7zogVVwxVSgdKUHDy1SKmdb533PjDz7J6N6mV6uS3ze1ai8FHa8kmHScGpWmj4WggLyQjgPie1rFSruoUihUZREPSL39UNdE3BBDu76",
    ),
    (
        "v1 m/0H/1/2H -> /2/1000000000",
        "xprv9z4pot5VBttmtdRTWfWQmoH1taj2axGVzFqSb8C9xaxKymcFzXBDptWmT7FwuEzG3ryjH4ktypQSAewRiNMjANTtpgP4mLTj34bhnZX7UiM",
        [2, 1000000000],
        "xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy",
        "xprvA41z7zogVVwxVSgdKUHDy1SKmdb533PjDz7J6N6mV6uS3ze1ai8FHa8kmHScGpWmj4WggLyQjgPie1rFSruoUihUZREPSL39UNdE3BBDu76",
    ),
    (
        "v2 m -> /0",
        "xprv9s21ZrQH143K31xYSDQpPDxsXRTUcvj2iNHm5NUtrGiGG5e2DtALGdso3pGz6ssrdK4PFmM8NSpSBHNqPqm55Qn3LqFtT2emdEXVYsCzC2U",
        [0],
        "xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH",
        "xprv9vHkqa6EV4sPZHYqZznhT2NPtPCjKuDKGY38FBWLvgaDx45zo9WQRUT3dKYnjwih2yJD9mkrocEZXo1ex8G81dwSM1fwqWpWkeS3v86pgKt",
    ),
    (
        "v2 m/0/2147483647H -> /1",
        "xprv9wSp6B7kry3Vj9m1zSnLvN3xH8RdsPP1Mh7fAaR7aRLcQMKTR2vidYEeEg2mUCTAwCd6vnxVrcjfy2kRgVsFawNzmjuHc2YmYRmagcEPdU9",
        [1],
        "xpub6DF8uhdarytz3FWdA8TvFSvvAh8dP3283MY7p2V4SeE2wyWmG5mg5EwVvmdMVCQcoNJxGoWaU9DCWh89LojfZ537wTfunKau47EL2dhHKon",
        "xprv9zFnWC6h2cLgpmSA46vutJzBcfJ8yaJGg8cX1e5StJh45BBciYTRXSd25UEPVuesF9yog62tGAQtHjXajPPdbRCHuWS6T8XA2ECKADdw4Ef",
    ),
    (
        "v2 m/0/2147483647H/1/2147483646H -> /2",
        "xprvA1RpRA33e1JQ7ifknakTFpgNXPmW2YvmhqLQYMmrj4xJXXWYpDPS3xz7iAxn8L39njGVyuoseXzU6rcxFLJ8HFsTjSyQbLYnMpCqE2VbFWc",
        [2],
        "xpub6FnCn6nSzZAw5Tw7cgR9bi15UV96gLZhjDstkXXxvCLsUXBGXPdSnLFbdpq8p9HmGsApME5hQTZ3emM2rnY5agb9rXpVGyy3bdW6EEgAtqt",
        "xprvA2nrNbFZABcdryreWet9Ea4LvTJcGsqrMzxHx98MMrotbir7yrKCEXw7nadnHM8Dq38EGfSh6dqA9QWTyefMLEcBYJUuekgW4BYPJcr9E7j",
    ),
]


def _import(
    scheme: Scheme, private_key: bytes, chain_code: bytes, t: int, n: int
) -> list[KeyShare]:
    """Import a key as a threshold keyring that keeps the given BIP-32 chain code."""
    material = split_key(private_key, t, n, seeded(11), chain_code)
    if scheme == "bip340":
        return [m.key_share("bip340", None) for m in material]
    rand = seeded(12)
    return run([EcdsaSetupCeremony(m, bytes(32), rand) for m in material])


def _verifies(scheme: Scheme, public_key: bytes, sig: bytes) -> bool:
    if scheme == "bip340":
        return schnorr_verify(DIGEST, public_key[1:], sig)
    return ecdsa_verify(DIGEST, public_key, sig)


def _tweaked(shares: list[KeyShare], path: list[int]) -> list[KeyShare]:
    """The child keyring's shares: every secret share + tweak, every public share + tweak G."""
    child = derive_public(shares[0].public_key, shares[0].chain_code, path)
    tweak = int.from_bytes(child.tweak, "big")
    public_shares = tuple(
        (Point.from_bytes(p) + Point.base_mul(tweak)).to_bytes() for p in shares[0].public_shares
    )
    return [
        replace(
            s,
            public_key=child.public_key,
            public_shares=public_shares,
            secret_share=(s.secret_share + tweak) % N,
            chain_code=child.chain_code,
        )
        for s in shares
    ]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(
    ("parent", "path", "child_pub", "child_prv"),
    [pytest.param(*s[1:], id=s[0]) for s in BIP32_STEPS],
)
def test_bip32_vectors_for_threshold_keys(
    scheme: Scheme, parent: str, path: list[int], child_pub: str, child_prv: str
) -> None:
    parent_key, parent_chain = _xkey(parent)
    shares = _import(scheme, parent_key[1:], parent_chain, 2, 2)
    child_key, child_chain = _xkey(child_pub)
    child = derive_public(shares[0].public_key, shares[0].chain_code, path)
    assert (child.public_key, child.chain_code) == (child_key, child_chain)
    # The tweaked shares interpolate to the child's private key from the vector.
    child_secret = int.from_bytes(_xkey(child_prv)[0][1:], "big")
    tweaked = _tweaked(shares, path) if scheme == "bip340" else None
    if tweaked is not None:
        assert int.from_bytes(local.export_key(tweaked), "big") == child_secret
    parent_secret = int.from_bytes(local.export_key(shares), "big")
    assert (parent_secret + int.from_bytes(child.tweak, "big")) % N == child_secret
    # The parent keyring signs for the child with the derivation path.
    sig = local.sign(shares, DIGEST, SigningOptions(derivation_path=tuple(path)))
    assert _verifies(scheme, child_key, sig)
    assert not _verifies(scheme, shares[0].public_key, sig)


def test_signing_with_tweaked_shares_equals_signing_with_the_path() -> None:
    shares = bip340_keyring(0xC0FFEE, 2, 3)
    path = [7, 0, 42]
    child = derive_public(shares[0].public_key, shares[0].chain_code, path)
    tweaked = _tweaked(shares, path)
    assert {s.public_key for s in tweaked} == {child.public_key}
    for signers in ([0, 1], [1, 2]):
        direct = local.sign([tweaked[i] for i in signers], DIGEST)
        via_path = local.sign(
            [shares[i] for i in signers], DIGEST, SigningOptions(derivation_path=tuple(path))
        )
        assert schnorr_verify(DIGEST, child.public_key[1:], direct)
        assert schnorr_verify(DIGEST, child.public_key[1:], via_path)


WALLET = load_json("bip-0341-wallet-test-vectors.json")
KEY_PATH = WALLET["keyPathSpending"][0]["inputSpending"]


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=f"input{c['given']['txinIndex']}") for c in KEY_PATH]
)
def test_bip341_key_path_tweak_of_a_threshold_key(case: dict[str, Any]) -> None:
    given, inter = case["given"], case["intermediary"]
    private_key = bytes.fromhex(given["internalPrivkey"])
    merkle_root = bytes.fromhex(given["merkleRoot"]) if given["merkleRoot"] else None
    shares = local.import_key("bip340", private_key, threshold=2, parties=3)
    output = taproot_output_key(shares[0].public_key[1:], merkle_root)
    assert output.tweak.hex() == inter["tweak"]
    # BIP-341 taproot_tweak_seckey on the exported key gives the vector's tweaked key.
    d = int.from_bytes(local.export_key(shares[:2]), "big")
    if not Point.from_bytes(shares[0].public_key).has_even_y():
        d = N - d
    assert (d + int.from_bytes(output.tweak, "big")) % N == int(inter["tweakedPrivkey"], 16)
    sighash = bytes.fromhex(inter["sigHash"])
    options = SigningOptions(taproot=True, taproot_merkle_root=merkle_root)
    sig = local.sign(shares[1:], sighash, options)
    assert schnorr_verify(sighash, output.output_key, sig)


def test_bip32_then_taproot() -> None:
    shares = bip340_keyring(0xBADC0DE, 2, 3)
    path = (0, 5)
    child = derive_public(shares[0].public_key, shares[0].chain_code, path)
    output = taproot_output_key(child.public_key[1:])
    sig = local.sign(shares[:2], DIGEST, SigningOptions(derivation_path=path, taproot=True))
    assert schnorr_verify(DIGEST, output.output_key, sig)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_child_keys_survive_reshare_and_refresh(scheme: Scheme) -> None:
    key = (0xFEED).to_bytes(32, "big")
    shares = local.import_key(scheme, key, threshold=2, parties=2)
    path = (3, 1, 4)
    child = derive_public(shares[0].public_key, shares[0].chain_code, path).public_key
    refreshed = local.refresh(shares)
    assert derive_public(refreshed[0].public_key, refreshed[0].chain_code, path).public_key == child
    options = SigningOptions(derivation_path=path)
    assert _verifies(scheme, child, local.sign(refreshed, DIGEST, options))
    if scheme == "bip340":  # (the ECDSA setup of a bigger keyring is slow; bip340 covers it)
        reshared = local.reshare(refreshed, threshold=2, parties=3)
        assert _verifies(scheme, child, local.sign(reshared[1:], DIGEST, options))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_hardened_paths_are_refused(scheme: Scheme) -> None:
    shares = (
        bip340_keyring(0xABC, 2, 2)
        if scheme == "bip340"
        else local.import_key(scheme, (0xABC).to_bytes(32, "big"), threshold=2, parties=2)
    )
    with pytest.raises(InputError):
        local.sign(shares, DIGEST, SigningOptions(derivation_path=(HARDENED,)))
