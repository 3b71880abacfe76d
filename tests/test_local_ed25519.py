"""Ed25519 keyrings in tss.local: import (RFC 8032 seed, Solana keypair), signing, export.

Signatures are checked by libsodium (PyNaCl) and OpenSSL (``cryptography``) as
plain RFC 8032 signatures over the message bytes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.signing import SigningKey, VerifyKey

from tss import local
from tss.ceremony import run_in_memory
from tss.ed25519_keys import expanded_secret, scalar_from_seed, sign_expanded
from tss.errors import InputError, InvalidEncodingError, ProtocolError
from tss.group import ED25519
from tss.keyshare import KeyShare
from tss.signing import Bip340Signing, Ed25519Signing, SigningOptions, throwaway_host_keys


def _verify(public_key: bytes, msg: bytes, sig: bytes) -> None:
    VerifyKey(public_key).verify(msg, sig)
    Ed25519PublicKey.from_public_bytes(public_key).verify(sig, msg)


@pytest.mark.parametrize(("t", "n", "signers"), [(2, 3, [0, 2]), (3, 5, [4, 1, 2]), (2, 2, [0, 1])])
def test_import_seed_sign_export(t: int, n: int, signers: list[int]) -> None:
    seed = secrets.token_bytes(32)
    wallet = SigningKey(seed)
    shares = local.import_key("ed25519", seed, threshold=t, parties=n)
    assert {s.public_key for s in shares} == {bytes(wallet.verify_key)}
    msg = secrets.token_bytes(1000)  # the message itself, not a digest
    sig = local.sign([shares[i] for i in signers], msg)
    _verify(bytes(wallet.verify_key), msg, sig)
    exported = local.export_key(shares[:t])
    assert exported == expanded_secret(scalar_from_seed(seed))
    _verify(bytes(wallet.verify_key), b"after export", sign_expanded(exported, b"after export"))


def test_import_solana_keypair() -> None:
    wallet = SigningKey.generate()
    keypair = bytes(wallet) + bytes(wallet.verify_key)  # Solana's 64-byte secret key
    shares = local.import_key("ed25519", keypair, threshold=2, parties=3)
    assert shares[0].public_key == bytes(wallet.verify_key)
    sig = local.sign(shares[1:], b"transfer")
    _verify(shares[0].public_key, b"transfer", sig)


def test_mismatched_solana_keypair_refused() -> None:
    keypair = secrets.token_bytes(32) + bytes(SigningKey.generate().verify_key)
    with pytest.raises(InputError, match="does not belong"):
        local.import_key("ed25519", keypair, threshold=2, parties=3)
    with pytest.raises(InputError, match="32 bytes"):
        local.import_key("ed25519", bytes(31), threshold=2, parties=3)


def test_ed25519_key_share_round_trip_and_checks() -> None:
    shares = local.import_key("ed25519", secrets.token_bytes(32), threshold=2, parties=3)
    share = shares[1]
    assert KeyShare.from_bytes(share.to_bytes()) == share
    assert str(share.secret_share) not in repr(share)
    forged = share.to_bytes().replace(share.public_shares[1], share.public_shares[0])
    with pytest.raises(InvalidEncodingError):
        KeyShare.from_bytes(forged)


def test_ed25519_signing_refuses_tweaks_and_wrong_schemes() -> None:
    shares = local.import_key("ed25519", secrets.token_bytes(32), threshold=2, parties=2)
    keys = throwaway_host_keys(2, secrets.token_bytes)
    with pytest.raises(InputError, match="derivation"):
        Ed25519Signing(
            shares[0], [0, 1], b"m", b"sid", secrets.token_bytes,
            SigningOptions(derivation_path=(1,)), host_keys=keys[0],
        )  # fmt: skip
    with pytest.raises(InputError, match="bip340"):
        Bip340Signing(shares[0], [0, 1], bytes(32), b"sid", secrets.token_bytes, host_keys=keys[0])


class _ForgingSigner(Ed25519Signing):
    """Sends its signature share plus one: valid encoding, invalid share."""

    def _partial_signature(self, pubnonces: Mapping[int, bytes]) -> bytes:
        z = ED25519.decode_scalar(super()._partial_signature(pubnonces))
        return ED25519.encode_scalar(z + 1)


class _BadCommitmentSigner(Ed25519Signing):
    """Signs (with its host key) a commitment whose hiding point is of small order."""

    def _nonce(self) -> bytes:
        return bytes(32) + super()._nonce()[32:]


@pytest.mark.parametrize("cls", [_ForgingSigner, _BadCommitmentSigner])
def test_forged_signature_share_or_commitment_names_the_signer(
    cls: type[Ed25519Signing],
) -> None:
    """Forged share / small-order commitment in an Ed25519 signing ceremony: the
    signing aborts naming the forger (party 1) and no one else."""
    shares = local.import_key("ed25519", secrets.token_bytes(32), threshold=3, parties=3)
    keys = throwaway_host_keys(3, secrets.token_bytes)
    sid = secrets.token_bytes(16)
    parties = [
        (cls if s.party_id == 1 else Ed25519Signing)(
            s, [0, 1, 2], b"m", sid, secrets.token_bytes, host_keys=keys[s.party_id]
        )
        for s in shares
    ]
    with pytest.raises(ProtocolError) as e:
        run_in_memory(parties)
    assert e.value.culprits == (1,)


def test_what_ed25519_keyrings_cannot_do_yet_is_refused() -> None:
    """No DKG, reshare or refresh over edwards25519 yet: each refuses with a typed error
    instead of running the secp256k1 protocol under the ed25519 name."""
    with pytest.raises(InputError, match="ed25519"):
        local.keygen("ed25519", threshold=2, parties=3)
    shares = local.import_key("ed25519", secrets.token_bytes(32), threshold=2, parties=3)
    with pytest.raises(InputError, match="ed25519"):
        local.refresh(shares)
    with pytest.raises(InputError, match="ed25519"):
        local.reshare(shares[:2], threshold=2, parties=3)
