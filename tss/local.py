"""All parties of a ceremony in one process: for tests, benchmarks and examples.

Each function builds one ceremony object per party, the very objects the
enclave and the client SDK drive over the relay, and routes their messages in
memory. Randomness comes from the OS (``secrets``), the one place in ``tss``
that draws it itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from tss.ceremony import run_in_memory
from tss.dealer import split_key, split_secret
from tss.dkg.chilldkg import hostpubkey_gen
from tss.ed25519_keys import scalar_from_keypair, scalar_from_seed
from tss.errors import InputError, InternalError
from tss.export import exported_key
from tss.group import ED25519
from tss.keygen import EcdsaSetupCeremony, Keygen
from tss.keyshare import SCHEMES, KeyShare, Scheme
from tss.reshare import PublicKeyring, Reshare, ReshareOutput, ResharePlan
from tss.shamir import interpolate_at_zero
from tss.signing import (
    NO_OPTIONS,
    Bip340Signing,
    EcdsaSigning,
    Ed25519Signing,
    RecoverableSignature,
    SigningOptions,
    throwaway_host_keys,
)

__all__ = ["keygen", "sign", "sign_recoverable", "reshare", "refresh", "export_key", "import_key"]


def _random(n: int) -> bytes:
    return secrets.token_bytes(n)


def _check_scheme(scheme: str) -> Scheme:
    if scheme not in SCHEMES:
        raise InputError(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return scheme


def keygen(scheme: str, *, threshold: int, parties: int) -> list[KeyShare]:
    """Run a distributed key generation among ``parties`` parties.

    ChillDKG in the scheme's group (``tss.keygen``); no party ever holds the key.

    Arguments:
        scheme: "bip340", "ecdsa-secp256k1" or "ed25519".
        threshold: t, the number of parties needed to sign (1 <= t <= parties).
        parties: n (<= 32 for bip340 and ed25519, <= 16 for ecdsa-secp256k1).

    Returns:
        One key share per party, ``shares[i].party_id == i``, all with the same
        ``public_key`` (33-byte compressed secp256k1, or the 32-byte RFC 8032
        key for ed25519).

    Raises:
        InputError: unknown scheme or bad t, n.
    """
    scheme = _check_scheme(scheme)
    if not 1 <= threshold <= parties <= 32:
        raise InputError("need 1 <= threshold <= parties <= 32")
    hostseckeys = [_random(32) for _ in range(parties)]
    hostpubkeys = [hostpubkey_gen(sk) for sk in hostseckeys]
    session_id = _random(32)
    return run_in_memory(
        [
            Keygen(scheme, sk, hostpubkeys, threshold, _random, session_id=session_id)
            for sk in hostseckeys
        ]
    )


def sign(shares: Sequence[KeyShare], digest: bytes, options: SigningOptions = NO_OPTIONS) -> bytes:
    """Sign with the given key shares (at least the threshold, all of one keyring).

    Arguments:
        shares: the signing parties' key shares.
        digest: the 32-byte message digest (BIP-340 signs it as the message);
            for ed25519 the message itself, any bytes (Ed25519 hashes it).
        options: BIP-32 derivation path and, for bip340, the BIP-341 taproot tweak.

    Returns:
        64 bytes: r || s with low s for ECDSA; a BIP-340 signature for bip340;
        an RFC 8032 signature for ed25519.

    Raises:
        InputError: fewer shares than the threshold, mixed keyrings or epochs,
            or (bip340, ECDSA) a digest that is not 32 bytes.
    """
    first = _same_keyring(shares)
    if first.scheme != "ed25519" and len(digest) != 32:
        raise InputError("digest must be 32 bytes")
    if first.scheme == "ecdsa-secp256k1":
        return sign_recoverable(shares, digest, options).signature
    signers = [s.party_id for s in shares]
    session_id = _random(32)
    # The parties exist only for this run, so do their host keys.
    host_keys = throwaway_host_keys(len(first.public_shares), _random)
    frost = Ed25519Signing if first.scheme == "ed25519" else Bip340Signing
    return run_in_memory(
        [
            frost(s, signers, digest, session_id, _random, options, host_keys=host_keys[s.party_id])
            for s in shares
        ]
    )[0]


def sign_recoverable(
    shares: Sequence[KeyShare], digest: bytes, options: SigningOptions = NO_OPTIONS
) -> RecoverableSignature:
    """ECDSA signing that also returns the recovery id (as ``sign`` for ecdsa-secp256k1).

    Raises:
        InputError: as ``sign``, or a bip340 keyring.
    """
    first = _same_keyring(shares)
    if first.scheme != "ecdsa-secp256k1" or len(digest) != 32:
        raise InputError("sign_recoverable needs an ecdsa-secp256k1 keyring and a 32-byte digest")
    signers = [s.party_id for s in shares]
    session_id = _random(32)
    return run_in_memory(
        [EcdsaSigning(s, signers, digest, session_id, _random, options) for s in shares]
    )[0]


def reshare(shares: Sequence[KeyShare], *, threshold: int, parties: int) -> list[KeyShare]:
    """Re-deal a keyring to ``parties`` new parties with ``threshold``, keeping its public key.

    The given shares (at least the old threshold) deal; the new parties are
    fresh ones: old party i sits at seat i and new party j at seat n + j
    (``tss.reshare``). Old shares stay valid until discarded, but never combine
    with the new ones (the epoch goes up by one).

    Arguments:
        shares: the dealing quorum's key shares (one keyring and epoch).
        threshold: t' of the new keyring.
        parties: n' of the new keyring.

    Returns:
        One key share per new party, ``new[j].party_id == j``, all with the old
        ``public_key`` and chain code and epoch + 1.

    Raises:
        InputError: too few or mixed shares, or bad t', n' (ECDSA needs t' >= 2).
    """
    first = _same_keyring(shares)
    plan = ResharePlan(
        _random(32),
        PublicKeyring.from_share(first),
        dealers=tuple(sorted(s.party_id for s in shares)),
        holders=tuple(first.parties + j for j in range(parties)),
        threshold=threshold,
    )
    dealers = [Reshare(plan, s.party_id, s, _random) for s in shares]
    holders = [Reshare(plan, seat, None, _random) for seat in plan.holders]
    return _new_shares(run_in_memory(dealers + holders)[len(dealers) :])


def refresh(shares: Sequence[KeyShare]) -> list[KeyShare]:
    """Give every party of a keyring fresh secret shares of the same key (zero-sharing).

    Arguments:
        shares: every party's key share (one keyring and epoch).

    Returns:
        New key shares in party-id order: same public key, threshold and
        parties, new public shares, epoch + 1. Old and new shares do not combine.

    Raises:
        InputError: not every party's share, mixed shares, or a 1-of-n keyring
            (whose shares are the key itself).
    """
    first = _same_keyring(shares)
    if sorted(s.party_id for s in shares) != list(range(first.parties)):
        raise InputError("a refresh needs every party's share")
    plan = ResharePlan.refresh(PublicKeyring.from_share(first), _random(32))
    ordered = sorted(shares, key=lambda s: s.party_id)
    return _new_shares(run_in_memory([Reshare(plan, s.party_id, s, _random) for s in ordered]))


def _new_shares(outputs: Sequence[ReshareOutput]) -> list[KeyShare]:
    new = [o.share for o in outputs if o.share is not None]
    if len(new) != len(outputs):
        raise InternalError("a new holder finished without a key share")
    return new


def export_key(shares: Sequence[KeyShare]) -> bytes:
    """Reconstruct the private key from at least t shares (test and offline use).

    Returns:
        secp256k1: the 32-byte private key. ed25519: the 64-byte RFC 8032
        expanded secret (scalar || prefix, ``tss.ed25519_keys``): a keyring
        holds no seed, so no seed or Solana keypair can be exported.

    Raises:
        InputError: too few shares, or shares of different keyrings.
        InternalError: the shares do not reconstruct the keyring's public key.
    """
    first = _same_keyring(shares)
    group = first.group
    secret = interpolate_at_zero({s.party_id: s.secret_share for s in shares}, order=group.order)
    if group.encode(group.base_mul(secret)) != first.public_key:
        raise InternalError("reconstructed key does not match the public key")
    return exported_key(first.scheme, secret)


def import_key(scheme: str, private_key: bytes, *, threshold: int, parties: int) -> list[KeyShare]:
    """Split an existing private key into a t-of-n keyring with the same public key.

    ``private_key`` is 32 bytes for secp256k1; for ed25519 an RFC 8032 seed (32
    bytes) or a Solana keypair (64 bytes: seed || public key).

    Raises:
        InputError: unknown scheme, a key out of range or of the wrong length,
            a Solana keypair whose halves disagree, or bad t, n.
    """
    scheme = _check_scheme(scheme)
    if scheme == "ed25519":
        secret = (
            scalar_from_keypair(private_key)
            if len(private_key) == 64
            else scalar_from_seed(private_key)
        )
        dealt = split_secret(secret, threshold, parties, _random, group=ED25519)
        return [m.key_share("ed25519", None) for m in dealt]
    if scheme == "ecdsa-secp256k1" and threshold < 2:
        raise InputError("ECDSA keyrings need a threshold of at least 2")
    material = split_key(private_key, threshold, parties, _random)
    if scheme == "bip340":
        return [m.key_share("bip340", None) for m in material]
    session_id = _random(32)
    return run_in_memory([EcdsaSetupCeremony(m, session_id, _random) for m in material])


def _same_keyring(shares: Sequence[KeyShare]) -> KeyShare:
    if not shares:
        raise InputError("no key shares given")
    first = shares[0]
    if len(shares) < first.threshold:
        raise InputError(f"need at least {first.threshold} shares, got {len(shares)}")
    if len({s.party_id for s in shares}) != len(shares):
        raise InputError("the same party's share was given twice")
    for s in shares[1:]:
        if (s.scheme, s.public_key, s.public_shares, s.epoch) != (
            first.scheme, first.public_key, first.public_shares, first.epoch,
        ):  # fmt: skip
            raise InputError("shares belong to different keyrings or epochs")
    return first
