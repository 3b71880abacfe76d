"""Splitting a whole private key into a keyring (import; Shamir 1979 with Feldman-checkable shares).

The dealer is whoever holds the key being imported: after the split it must
erase the key. This is the only place a whole key becomes shares.
"""

from __future__ import annotations

from tss.ceremony import Random
from tss.curve import N, Point, int_from_bytes
from tss.errors import InputError
from tss.keygen import KeyMaterial
from tss.keyshare import default_chain_code
from tss.shamir import eval_point, poly_eval

__all__ = ["split_key"]


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
        chain_code: 32-byte BIP-32 chain code to keep (None: derived from the public key).
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
    if not 1 <= threshold <= parties <= 32:
        raise InputError("need 1 <= threshold <= parties <= 32")
    secret = int_from_bytes(private_key)
    coeffs = [secret] + [_random_scalar(rand) for _ in range(threshold - 1)]
    secret_shares = [poly_eval(coeffs, eval_point(i)) for i in range(parties)]
    public_shares = tuple(Point.base_mul(s).to_bytes() for s in secret_shares)
    public_key = Point.base_mul(secret).to_bytes()
    chain = default_chain_code(public_key) if chain_code is None else chain_code
    return [
        KeyMaterial(i, threshold, public_key, public_shares, s, chain, epoch)
        for i, s in enumerate(secret_shares)
    ]


def _random_scalar(rand: Random) -> int:
    # 64 bytes reduced mod n: bias below 2^-256.
    return int_from_bytes(rand(64)) % N
