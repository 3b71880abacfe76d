"""Ed25519 keyrings in tss.local: import (RFC 8032 seed, Solana keypair), signing, export.

Signatures are checked by libsodium (PyNaCl) and OpenSSL (``cryptography``) as
plain RFC 8032 signatures over the message bytes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nacl.bindings import crypto_core_ed25519_add
from nacl.signing import SigningKey, VerifyKey

from tss import local
from tss.ceremony import Message, run_in_memory
from tss.ed25519_keys import expanded_secret, scalar_from_seed, sign_expanded
from tss.errors import InputError, InvalidEncodingError, ProtocolError
from tss.export import ExportPlan, export_contribution, export_finalize, offline_export
from tss.group import ED25519
from tss.keyshare import KeyShare
from tss.reshare import PublicKeyring, Reshare, ResharePlan
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


class _TorsionedBindingSigner(Ed25519Signing):
    """Signs a commitment whose binding point has an order-2 component."""

    def _nonce(self) -> bytes:
        commitment = super()._nonce()
        order2 = (2**255 - 19 - 1).to_bytes(32, "little")
        return commitment[:32] + crypto_core_ed25519_add(commitment[32:], order2)


@pytest.mark.parametrize("cls", [_ForgingSigner, _BadCommitmentSigner, _TorsionedBindingSigner])
def test_forged_signature_share_or_commitment_names_the_signer(
    cls: type[Ed25519Signing],
) -> None:
    """Forged share / small-order hiding or torsioned binding commitment in an
    Ed25519 signing ceremony: the signing aborts naming the forger (party 1) and
    no one else."""
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


@pytest.mark.parametrize(("t", "n"), [(1, 1), (2, 3), (3, 5)])
def test_keygen_by_dkg_signs_for_libsodium(t: int, n: int) -> None:
    """keygen runs ChillDKG over edwards25519: every t-subset signs for the same
    RFC 8032 key, verified by libsodium and OpenSSL; the shares are Shamir shares
    of its discrete log (checked by reconstructing once, as only a test may)."""
    shares = local.keygen("ed25519", threshold=t, parties=n)
    assert [s.party_id for s in shares] == list(range(n))
    assert {(s.scheme, s.public_key, s.threshold) for s in shares} == {
        ("ed25519", shares[0].public_key, t)
    }
    _verify(shares[0].public_key, b"first", local.sign(shares[:t], b"first"))
    _verify(shares[0].public_key, b"last", local.sign(shares[n - t :], b"last"))
    secret = int.from_bytes(local.export_key(shares[:t])[:32], "little")
    assert ED25519.encode(ED25519.base_mul(secret)) == shares[0].public_key


def test_reshare_and_refresh_keep_the_key() -> None:
    seed = secrets.token_bytes(32)
    public_key = bytes(SigningKey(seed).verify_key)
    old = local.import_key("ed25519", seed, threshold=2, parties=3)
    new = local.reshare([old[0], old[2]], threshold=3, parties=5)
    assert {s.public_key for s in new} == {public_key} and new[0].epoch == 1
    _verify(public_key, b"after reshare", local.sign(new[1:4], b"after reshare"))
    fresh = local.refresh(new)
    assert fresh[0].public_shares != new[0].public_shares
    _verify(public_key, b"after refresh", local.sign(fresh[2:], b"after refresh"))
    with pytest.raises(InputError):  # old and new epochs never combine
        local.sign([new[0], fresh[1], fresh[2]], b"m")
    assert local.export_key(fresh[:3]) == expanded_secret(scalar_from_seed(seed))


def test_export_to_a_recipient_and_offline() -> None:
    seed = secrets.token_bytes(32)
    shares = local.import_key("ed25519", seed, threshold=2, parties=3)
    recipient = X25519PrivateKey.generate()
    plan = ExportPlan(
        secrets.token_bytes(32),
        PublicKeyring.from_share(shares[0]),
        (0, 1),
        7,
        recipient.public_key().public_bytes_raw(),
    )
    sealed = {i: export_contribution(plan, shares[i], secrets.token_bytes(32)) for i in (0, 1)}
    key = export_finalize(plan, recipient.private_bytes_raw(), sealed)
    assert key == expanded_secret(scalar_from_seed(seed)) == offline_export(shares[1:])
    _verify(shares[0].public_key, b"exported", sign_expanded(key, b"exported"))


def test_a_forged_reshare_dealing_names_the_dealer() -> None:
    """Forged dealing: a dealer's sub-share for a new holder is off by one; the holder
    names that dealer and keeps no share."""
    old = local.import_key("ed25519", secrets.token_bytes(32), threshold=2, parties=2)
    plan = ResharePlan(
        secrets.token_bytes(32),
        PublicKeyring.from_share(old[0]),
        dealers=(0, 1),
        holders=(2, 3, 4),
        threshold=2,
    )

    class Forger(Reshare):
        def _start(self) -> list[Message]:
            return [self._forge(m) if m.recipient == 2 else m for m in super()._start()]

        @staticmethod
        def _forge(m: Message) -> Message:
            sub = (int.from_bytes(m.payload[-32:], "big") + 1) % ED25519.order
            return Message(
                m.round, m.sender, m.recipient, m.payload[:-32] + sub.to_bytes(32, "big")
            )

    parties = [
        Forger(plan, 0, old[0], secrets.token_bytes),
        Reshare(plan, 1, old[1], secrets.token_bytes),
    ]
    parties += [Reshare(plan, seat, None, secrets.token_bytes) for seat in plan.holders]
    with pytest.raises(ProtocolError) as e:
        run_in_memory(parties)
    assert e.value.culprits == (0,)


def test_an_ed25519_share_round_trips_through_the_encrypted_container() -> None:
    from client.storage.shares import decrypt_share, encrypt_share, insecure_test_params

    share = local.import_key("ed25519", secrets.token_bytes(32), threshold=2, parties=2)[0]
    sealed = encrypt_share(
        share, "correct horse battery staple", wallet_id="w1",
        params=insecure_test_params(), insecure_allow_weak_kdf=True,
    )  # fmt: skip
    opened = decrypt_share(sealed, "correct horse battery staple", insecure_allow_weak_kdf=True)
    assert opened.share == share and opened.metadata.scheme == "ed25519"


def test_the_sdk_names_every_scheme_and_refuses_others_before_any_call() -> None:
    from client.sdk.wallet import _service_scheme

    assert _service_scheme("bip340") == "SCHEME_BIP340"
    assert _service_scheme("ed25519") == "SCHEME_ED25519"
    with pytest.raises(InputError, match="does not take 'ed448'"):
        _service_scheme("ed448")  # type: ignore[arg-type]
