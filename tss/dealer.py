"""Splitting a whole private key into a keyring (import; Shamir 1979 with Feldman-checkable shares).

The dealer is whoever holds the key being imported: after the split it must
erase the key. This is the only place a whole key becomes shares.

Two ways in: ``split_key`` deals a t-of-n keyring in one process (the dealer
sees every share: ``tss.local.import_key``); ``import_dealer`` makes the
key's holder the sole party of a 1-of-1 keyring, which ``tss.reshare``
re-deals to the new parties by ceremony, so each new party, the server share
included, receives only its own Feldman-checked share and the ECDSA pairwise
setups are made among the new holders (``client.sdk.wallet.WalletClient.import_key``).
"""

from __future__ import annotations

from typing import Any

from tss.ceremony import Random
from tss.curve import N, int_from_bytes
from tss.ed25519_keys import scalar_from_keypair, scalar_from_seed
from tss.errors import InputError, InternalError
from tss.group import ED25519, SECP256K1, Group
from tss.keygen import KeyMaterial
from tss.keyshare import Scheme
from tss.reshare import PublicKeyring
from tss.shamir import eval_point, poly_eval

__all__ = ["split_key", "split_secret", "import_dealer"]


def split_key(
    private_key: bytes,
    threshold: int,
    parties: int,
    rand: Random,
    chain_code: bytes | None = None,
    epoch: int = 0,
) -> list[KeyMaterial]:
    """Shamir-split a 32-byte private key into ``parties`` shares, any ``threshold`` of which sign.

    Arguments:
        private_key: 32 bytes, 0 < key < n.
        threshold: t, 1 <= t <= parties.
        parties: n <= 32.
        rand: fresh randomness for the polynomial's coefficients.
        chain_code: the key's 32-byte BIP-32 chain code, if it has one (None: 32
            bytes of ``rand``; never one derived from the public key, which
            would let anyone link the child keys).
        epoch: the keyring epoch the shares start at.

    Returns:
        Each party's shares (party ids 0..n-1); the public key is ``private_key * G``.
        ``KeyMaterial.key_share`` makes a bip340 key share of it; ECDSA keyrings
        first run ``EcdsaSetupCeremony``.

    Raises:
        InputError: a key out of range or bad t, n.
    """
    if len(private_key) != 32 or not 0 < int_from_bytes(private_key) < N:
        raise InputError("private key must be 32 bytes, 0 < key < n")
    return split_secret(int_from_bytes(private_key), threshold, parties, rand, chain_code, epoch)


def split_secret(
    secret: int,
    threshold: int,
    parties: int,
    rand: Random,
    chain_code: bytes | None = None,
    epoch: int = 0,
    group: Group[Any] = SECP256K1,
) -> list[KeyMaterial]:
    """``split_key`` of a secret scalar in any group (``tss.group``; Ed25519 keys).

    Raises:
        InputError: a secret out of range or bad t, n.
    """
    q = group.order
    if not 0 < secret < q:
        raise InputError("secret out of range")
    if not 1 <= threshold <= parties <= 32:
        raise InputError("need 1 <= threshold <= parties <= 32")
    coeffs = [secret] + [_random_scalar(rand, q) for _ in range(threshold - 1)]
    secret_shares = [poly_eval(coeffs, eval_point(i), order=q) for i in range(parties)]
    public_shares = tuple(group.encode(group.base_mul(s)) for s in secret_shares)
    public_key = group.encode(group.base_mul(secret))
    chain = rand(32) if chain_code is None else chain_code
    if len(chain) != 32:
        raise InputError("chain code must be 32 bytes")
    return [
        KeyMaterial(i, threshold, public_key, public_shares, s, chain, epoch)
        for i, s in enumerate(secret_shares)
    ]


def _random_scalar(rand: Random, order: int) -> int:
    # 64 bytes reduced mod the group order (n or L): bias below 2^-250.
    return int_from_bytes(rand(64)) % order


def import_dealer(
    scheme: Scheme, private_key: bytes, chain_code: bytes
) -> tuple[PublicKeyring, KeyMaterial]:
    """The 1-of-1 keyring of an imported key and its sole share: the dealer of an import by reshare.

    With t = 1 the sharing polynomial is the constant key, so the share is the
    key itself and the one public share is the public key. An ECDSA
    ``KeyShare`` cannot hold it (DKLs23 needs t >= 2), so the dealer brings the
    ``KeyMaterial`` to ``tss.reshare.Reshare``; the reshare's new threshold is
    the real one (at least 2 for ECDSA).

    Arguments:
        scheme: "bip340", "ecdsa-secp256k1" or "ed25519".
        private_key: secp256k1: 32 bytes, 0 < key < n. ed25519: an RFC 8032
            seed (32 bytes) or a Solana keypair (64 bytes: seed || public key,
            checked against each other); the keyring shares the seed's clamped
            scalar mod L (``tss.ed25519_keys``).
        chain_code: the key's 32-byte BIP-32 chain code if it has one, else 32
            fresh random bytes (the caller's: ``tss`` draws none here). The
            reshare carries it to the new parties inside their end-to-end
            channels, never in the request the host sees.

    Returns:
        The public keyring (epoch 0; the reshare's keyring is epoch 1) and the
        dealer's material (party 0; secret, never printed).

    Raises:
        InputError: unknown scheme, a key out of range or a bad chain code.
    """
    if scheme == "ed25519":
        secret = (
            scalar_from_keypair(private_key)
            if len(private_key) == 64
            else scalar_from_seed(private_key)
        )
        (material,) = split_secret(secret, 1, 1, _no_randomness, chain_code, group=ED25519)
    elif scheme in ("bip340", "ecdsa-secp256k1"):
        (material,) = split_key(private_key, 1, 1, _no_randomness, chain_code)
    else:
        raise InputError(f"no import by reshare for {scheme!r}")
    keyring = PublicKeyring(scheme, 1, material.public_key, material.public_shares, material.epoch)
    return keyring, material


def _no_randomness(n: int) -> bytes:
    # A degree-0 polynomial has no random coefficient.
    raise InternalError("a 1-of-1 split draws no randomness")
