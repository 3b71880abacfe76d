"""Device backups (client.sdk.device_backup): a key share plus the party identity signing with it.

Sans-IO: shares from ``tss.local``; weak Argon2id parameters keep it fast. The
host round trip and signing with the recovered device are in tests/test_sdk_e2e.py.
"""

from __future__ import annotations

import dataclasses
import secrets

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.errors import InvalidInput
from client.sdk.approvals import ApiKey
from client.sdk.device_backup import (
    DEVICE_BACKUP_FORMAT,
    RecoveredDevice,
    is_device_backup,
    make_device_backup,
    open_device_backup,
    open_identity,
    seal_identity,
)
from client.sdk.party import PartyIdentity
from client.storage.errors import DecryptionError, ShareFormatError, ShareMismatchError
from client.storage.shares import BackupBlob, insecure_test_params, make_backup
from shardkeep.policyset import Consensus, Policy, PolicySet
from tss import local
from tss.errors import InputError
from tss.keyshare import KeyShare

WALLET = "wallet-dev-1"
PASSCODE = "correct horse battery staple"
WEAK = {"params": insecure_test_params(), "insecure_allow_weak_kdf": True}


@pytest.fixture(scope="module")
def shares() -> list[KeyShare]:
    return local.keygen("bip340", threshold=2, parties=3)


def backup_of(share: KeyShare, identity: PartyIdentity, **extra: object) -> BackupBlob:
    options: dict[str, object] = {"wallet_id": WALLET, "passcode": PASSCODE, **WEAK, **extra}
    return make_device_backup(share, identity, **options)  # type: ignore[arg-type]


def open_(backup: BackupBlob, share: KeyShare, **extra: object) -> object:
    options: dict[str, object] = {
        "public_key": share.public_key,
        "epoch": share.epoch,
        "passcode": PASSCODE,
        "insecure_allow_weak_kdf": True,
        **extra,
    }
    return open_device_backup(backup, **options)  # type: ignore[arg-type]


def test_round_trip_with_passcode_and_owner_key(shares: list[KeyShare]) -> None:
    share, identity, owner = shares[1], PartyIdentity.generate(), Ed25519PrivateKey.generate()
    backup = backup_of(share, identity, owner_key=owner)
    assert is_device_backup(backup.blob)
    assert (backup.wallet_id, backup.party_id, backup.epoch) == (WALLET, 1, share.epoch)
    assert backup.backup_id.startswith("bk-")
    recovered = open_device_backup(
        backup,
        public_key=share.public_key,
        epoch=share.epoch,
        party_id=1,
        passcode=PASSCODE,
        insecure_allow_weak_kdf=True,
    )
    assert recovered.share == share and recovered.share.secret_share == share.secret_share
    assert recovered.identity.party_id == identity.party_id
    assert recovered.identity.hostseckey == identity.hostseckey
    assert recovered.identity.party == identity.party
    assert recovered.owner_key is not None
    assert recovered.owner_key.public_key().public_bytes_raw() == (
        owner.public_key().public_bytes_raw()
    )
    # Nothing secret prints.
    text = repr(recovered) + repr(backup)
    assert share.secret_share_bytes.hex() not in text and "hostseckey" not in text


def test_round_trip_with_a_wrapping_key(shares: list[KeyShare]) -> None:
    share, identity, key = shares[0], PartyIdentity.generate(), secrets.token_bytes(32)
    backup = make_device_backup(share, identity, wallet_id=WALLET, key=key)
    recovered = open_device_backup(backup, public_key=share.public_key, epoch=0, key=key)
    assert recovered.share == share and recovered.owner_key is None
    with pytest.raises(DecryptionError):
        open_device_backup(
            backup, public_key=share.public_key, epoch=0, key=secrets.token_bytes(32)
        )


def test_wrong_passcode_is_one_opaque_error(shares: list[KeyShare]) -> None:
    backup = backup_of(shares[0], PartyIdentity.generate())
    with pytest.raises(DecryptionError) as caught:
        open_(backup, shares[0], passcode="wrong")
    assert PASSCODE not in str(caught.value)


def test_identity_is_bound_to_its_share(shares: list[KeyShare]) -> None:
    identity = PartyIdentity.generate()
    sealed = seal_identity(identity, shares[0], wallet_id=WALLET)
    assert open_identity(sealed, shares[0], wallet_id=WALLET)[0].party_id == identity.party_id
    # Another party's share, another wallet, another epoch: nothing opens.
    for share, wallet in (
        (shares[1], WALLET),
        (shares[0], "wallet-other"),
        (dataclasses.replace(shares[0], epoch=1), WALLET),
    ):
        with pytest.raises(DecryptionError):
            open_identity(sealed, share, wallet_id=wallet)
    # Swapping the identity of party 0's backup into party 1's is caught.
    backup0, backup1 = backup_of(shares[0], identity), backup_of(shares[1], identity)
    kit0, kit1 = cbor2.loads(backup0.blob), cbor2.loads(backup1.blob)
    kit1["identity"] = kit0["identity"]
    swapped = dataclasses.replace(backup1, blob=cbor2.dumps(kit1))
    with pytest.raises(DecryptionError):
        open_(swapped, shares[1])


def test_tampering_is_detected(shares: list[KeyShare]) -> None:
    backup = backup_of(shares[0], PartyIdentity.generate())
    kit = cbor2.loads(backup.blob)
    for name in ("salt", "nonce", "ciphertext"):
        changed = dict(kit["identity"])
        changed[name] = bytes([changed[name][0] ^ 1]) + changed[name][1:]
        tampered = dataclasses.replace(backup, blob=cbor2.dumps({**kit, "identity": changed}))
        with pytest.raises(DecryptionError):
            open_(tampered, shares[0])


def test_host_record_and_caller_expectations_are_checked(shares: list[KeyShare]) -> None:
    backup = backup_of(shares[0], PartyIdentity.generate())
    with pytest.raises(ShareMismatchError):
        open_(dataclasses.replace(backup, party_id=2), shares[0])
    with pytest.raises(ShareMismatchError):
        open_(
            backup,
            shares[0],
            public_key=local.keygen("bip340", threshold=2, parties=2)[0].public_key,
        )
    with pytest.raises(ShareMismatchError):
        open_(backup, shares[0], party_id=1)
    with pytest.raises(ShareMismatchError):
        open_(backup, shares[0], epoch=1)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda kit: {**kit, "version": 2},
        lambda kit: {**kit, "extra": 1},
        lambda kit: {**kit, "share": "text"},
        lambda kit: {**kit, "identity": {"alg": "other"}},
        lambda kit: {**kit, "identity": {**kit["identity"], "alg": "rot13"}},
        lambda kit: {**kit, "identity": {**kit["identity"], "salt": b"short"}},
        lambda kit: {**kit, "identity": {**kit["identity"], "ciphertext": b"\x00" * 10}},
    ],
    ids=["version", "extra-field", "share-type", "identity-fields", "alg", "salt", "ciphertext"],
)
def test_malformed_device_backups(shares: list[KeyShare], mutate: object) -> None:
    backup = backup_of(shares[0], PartyIdentity.generate())
    kit = cbor2.loads(backup.blob)
    blob = cbor2.dumps(mutate(kit))  # type: ignore[operator]
    with pytest.raises(ShareFormatError):
        open_(dataclasses.replace(backup, blob=blob), shares[0])


def test_a_bare_share_backup_is_not_a_device_backup(shares: list[KeyShare]) -> None:
    bare = make_backup(shares[0], wallet_id=WALLET, passcode=PASSCODE, **WEAK)  # type: ignore[arg-type]
    assert not is_device_backup(bare.blob)
    assert cbor2.loads(bare.blob)["format"] != DEVICE_BACKUP_FORMAT
    with pytest.raises(ShareFormatError, match="identity"):
        open_(bare, shares[0])


def test_arguments_are_checked(shares: list[KeyShare]) -> None:
    identity = PartyIdentity.generate()
    with pytest.raises(InputError):
        make_device_backup(shares[0], identity, wallet_id=WALLET)  # neither passcode nor key
    with pytest.raises(InputError):
        make_device_backup(shares[0], identity, wallet_id="bad id!", key=b"\x01" * 32)
    with pytest.raises(InputError):
        seal_identity(identity, shares[0], wallet_id=WALLET, random=lambda n: b"\x00")


def a_policy_set(wallet_id: str = WALLET) -> PolicySet:
    owner = ApiKey.generate("owner")
    return PolicySet(
        wallet_id, 3, 2, (owner.authenticator("admin"),),
        (Policy("anything", "allow", "true", Consensus(1, "admin")),),
    )  # fmt: skip


def test_the_policy_set_round_trips_sealed(shares: list[KeyShare]) -> None:
    share, policy_set = shares[1], a_policy_set()
    backup = backup_of(share, PartyIdentity.generate(), policy_set=policy_set)
    decoded = cbor2.loads(backup.blob)
    assert decoded["version"] == 2
    assert policy_set.authenticators[0].public_key not in backup.blob  # encrypted
    recovered = open_(backup, share)
    assert isinstance(recovered, RecoveredDevice) and recovered.policy_set == policy_set
    plain = open_(backup_of(share, PartyIdentity.generate()), share)
    assert isinstance(plain, RecoveredDevice) and plain.policy_set is None
    assert cbor2.loads(backup_of(share, PartyIdentity.generate()).blob)["version"] == 1


def test_a_swapped_or_tampered_policy_set_does_not_open(shares: list[KeyShare]) -> None:
    """The host holds the backups: it can neither edit the sealed set nor move one from
    another backup of the same share into this one."""
    share = shares[1]
    backup = backup_of(share, PartyIdentity.generate(), policy_set=a_policy_set())
    other = backup_of(share, PartyIdentity.generate(), policy_set=a_policy_set())
    decoded = cbor2.loads(backup.blob)
    tampered = dict(decoded, policy_set=dict(decoded["policy_set"]))
    ciphertext = bytearray(tampered["policy_set"]["ciphertext"])
    ciphertext[0] ^= 1
    tampered["policy_set"]["ciphertext"] = bytes(ciphertext)
    swapped = dict(decoded, policy_set=cbor2.loads(other.blob)["policy_set"])
    dropped = {k: v for k, v in decoded.items() if k != "policy_set"}
    for blob, error in [(tampered, DecryptionError), (swapped, DecryptionError),
                        (dropped, ShareFormatError)]:  # fmt: skip
        with pytest.raises(error):
            open_(dataclasses.replace(backup, blob=cbor2.dumps(blob)), share)


def test_a_policy_set_of_another_wallet_is_refused(shares: list[KeyShare]) -> None:
    with pytest.raises(InvalidInput, match="another wallet"):
        backup_of(shares[0], PartyIdentity.generate(), policy_set=a_policy_set("wallet-other"))
