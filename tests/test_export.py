"""Export (tss.export): online export to one designated party, offline export, and import."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from tests.lifecycle_support import bip340_keyring, run, seeded
from tests.vectors import load_json
from tss import local
from tss.ceremony import Message
from tss.curve import N, Point, schnorr_verify
from tss.dealer import split_key
from tss.errors import FaultyParticipantError, InputError, InvalidEncodingError
from tss.export import (
    SEALED_CONTRIBUTION_BYTES,
    Export,
    ExportOutput,
    ExportPlan,
    export_contribution,
    offline_export,
    open_sealed,
    seal_to,
)
from tss.keyshare import KeyShare, Scheme
from tss.reshare import PublicKeyring, Reshare, ResharePlan
from tss.shamir import lagrange_coefficient
from tss.signing import SigningOptions
from tss.taproot import taproot_output_key

KEY = 0x3C4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6E7F8091A2B
KEY_BYTES = KEY.to_bytes(32, "big")
SID = bytes(range(100, 132))
RECIPIENT = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
RECIPIENT_SK = RECIPIENT.private_bytes_raw()
RECIPIENT_PK = RECIPIENT.public_key().public_bytes_raw()


def _keyring(scheme: Scheme, t: int, n: int) -> list[KeyShare]:
    if scheme == "bip340":
        return bip340_keyring(KEY, t, n)
    return local.import_key(scheme, KEY_BYTES, threshold=t, parties=n)


def _export(
    shares: list[KeyShare], quorum: tuple[int, ...], recipient: int, tamper: Any = None
) -> tuple[list[ExportOutput], list[Message]]:
    """Run an export; returns every seat's output and every message as sent."""
    plan = ExportPlan(SID, PublicKeyring.from_share(shares[0]), quorum, recipient, RECIPIENT_PK)
    rand = seeded(7)
    ceremonies = [
        Export(
            plan,
            seat,
            shares[seat] if seat in quorum else None,
            rand,
            RECIPIENT_SK if seat == recipient else None,
        )
        for seat in plan.seats
    ]
    seen: list[Message] = []

    def observe(m: Message) -> bytes:
        seen.append(m)
        return m.payload if tamper is None else tamper(m)

    return run(ceremonies, observe), seen


### Online export


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_export_delivers_the_key_to_the_recipient_only(scheme: Scheme) -> None:
    shares = _keyring(scheme, 2, 3)
    outputs, seen = _export(shares, (0, 2), recipient=3)
    assert [o.private_key for o in outputs] == [None, None, KEY_BYTES]  # seats 0, 2, 3
    assert KEY_BYTES.hex() not in repr(outputs)
    # Only sealed contributions travel, one per quorum member, to the recipient.
    assert sorted(m.sender for m in seen) == [0, 2] and {m.recipient for m in seen} == {3}
    secrets_ = [KEY_BYTES] + [
        (lagrange_coefficient([0, 2], i) * shares[i].secret_share % N).to_bytes(32, "big")
        for i in (0, 2)
    ]
    for m in seen:
        assert len(m.payload) == SEALED_CONTRIBUTION_BYTES
        assert not any(s in m.payload for s in secrets_)


def test_export_to_a_member_of_the_quorum() -> None:
    shares = _keyring("bip340", 3, 5)
    outputs, seen = _export(shares, (0, 2, 4), recipient=4)
    assert [o.private_key for o in outputs] == [None, None, KEY_BYTES]
    assert sorted(m.sender for m in seen) == [0, 2]  # the recipient's own part never leaves it


def test_contributions_open_only_for_the_recipient_and_their_context() -> None:
    shares = _keyring("bip340", 2, 3)
    plan = ExportPlan(SID, PublicKeyring.from_share(shares[0]), (0, 1), 3, RECIPIENT_PK)
    sealed = export_contribution(plan, shares[0], bytes(32))
    w = lagrange_coefficient([0, 1], 0) * shares[0].secret_share % N
    assert open_sealed(RECIPIENT_SK, sealed, plan.context(0)) == w.to_bytes(32, "big")
    other = X25519PrivateKey.from_private_bytes(bytes(range(2, 34))).private_bytes_raw()
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    other_session = replace(plan, session_id=bytes(32))
    for key, blob, context in [
        (other, sealed, plan.context(0)),  # the relay, the host or another party
        (RECIPIENT_SK, sealed, plan.context(1)),  # attributed to another holder
        (RECIPIENT_SK, sealed, other_session.context(0)),  # replayed into another export
        (RECIPIENT_SK, tampered, plan.context(0)),
        (RECIPIENT_SK, sealed[:40], plan.context(0)),
    ]:
        with pytest.raises(InvalidEncodingError):
            open_sealed(key, blob, context)


def test_a_contribution_that_does_not_open_is_blamed() -> None:
    shares = _keyring("bip340", 2, 3)

    def garble(m: Message) -> bytes:
        return m.payload if m.sender != 1 else m.payload[:-1] + bytes([m.payload[-1] ^ 1])

    with pytest.raises(FaultyParticipantError, match="does not open") as e:
        _export(shares, (0, 1), recipient=5, tamper=garble)
    assert e.value.participant == 1


def test_a_wrong_but_well_sealed_contribution_is_blamed() -> None:
    shares = _keyring("bip340", 2, 3)
    plan = ExportPlan(SID, PublicKeyring.from_share(shares[0]), (0, 1), 5, RECIPIENT_PK)

    def lie(m: Message) -> bytes:
        if m.sender != 0:
            return m.payload
        w = open_sealed(RECIPIENT_SK, m.payload, plan.context(0))
        forged = (int.from_bytes(w, "big") + 1) % N
        return seal_to(RECIPIENT_PK, forged.to_bytes(32, "big"), plan.context(0), bytes(32))

    with pytest.raises(FaultyParticipantError, match="public share") as e:
        _export(shares, (0, 1), recipient=5, tamper=lie)
    assert e.value.participant == 0


def test_export_inputs_must_fit_the_plan() -> None:
    shares = _keyring("bip340", 2, 3)
    keyring = PublicKeyring.from_share(shares[0])
    with pytest.raises(InputError):  # fewer than t
        ExportPlan(SID, keyring, (1,), 3, RECIPIENT_PK)
    with pytest.raises(InputError):  # not ascending party ids
        ExportPlan(SID, keyring, (2, 0), 3, RECIPIENT_PK)
    with pytest.raises(InputError):  # a low-order X25519 key
        ExportPlan(SID, keyring, (0, 1), 3, bytes(32))
    bad = replace(keyring, public_key=shares[0].public_shares[0])
    with pytest.raises(InputError, match="interpolate"):
        ExportPlan(SID, bad, (0, 1), 3, RECIPIENT_PK)
    plan = ExportPlan(SID, keyring, (0, 1), 3, RECIPIENT_PK)
    rand = seeded(0)
    with pytest.raises(InputError):  # the recipient without its key
        Export(plan, 3, None, rand)
    with pytest.raises(InputError):  # a holder given the recipient's key
        Export(plan, 0, shares[0], rand, RECIPIENT_SK)
    with pytest.raises(InputError):  # a holder with another party's share
        Export(plan, 0, shares[1], rand)
    refreshed = local.refresh(shares)
    with pytest.raises(InputError):  # a share of another epoch
        export_contribution(plan, refreshed[0], bytes(32))


### Offline export


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_offline_export_from_backup_shares(scheme: Scheme) -> None:
    shares = _keyring(scheme, 2, 3)
    backups = [KeyShare.from_bytes(s.to_bytes()) for s in shares]
    for subset in ([backups[0], backups[2]], [backups[2], backups[1]], backups):
        assert offline_export(subset) == KEY_BYTES


def test_offline_export_refuses_bad_backups() -> None:
    shares = _keyring("bip340", 3, 5)
    with pytest.raises(InputError):
        offline_export(shares[:2])  # fewer than t
    with pytest.raises(InputError):
        offline_export([shares[0], shares[0], shares[1]])
    with pytest.raises(InputError):  # epochs do not mix
        offline_export([shares[0], shares[1], local.refresh(shares)[2]])
    # A backup set whose keyring record is corrupted (party 4's public share), even
    # though every given share matches its own public share.
    bad = list(shares[0].public_shares)
    bad[4] = (Point.from_bytes(bad[4]) + Point.base_mul(1)).to_bytes()
    corrupted = [replace(s, public_shares=tuple(bad)) for s in shares[:3]]
    with pytest.raises(InputError, match="inconsistent"):
        offline_export(corrupted)
    with pytest.raises(InputError):
        offline_export([])


### Sealing


def test_seal_to_is_hedged_and_bound_to_its_inputs() -> None:
    rand = bytes(32)
    a = seal_to(RECIPIENT_PK, b"one", b"ctx", rand)
    assert seal_to(RECIPIENT_PK, b"one", b"ctx", rand) == a  # deterministic given its inputs
    assert seal_to(RECIPIENT_PK, b"two", b"ctx", rand)[:32] != a[:32]  # fresh key per plaintext
    assert seal_to(RECIPIENT_PK, b"one", b"ctx", bytes([1]) * 32)[:32] != a[:32]
    assert open_sealed(RECIPIENT_SK, a, b"ctx") == b"one"
    with pytest.raises(InvalidEncodingError):
        open_sealed(RECIPIENT_SK, a, b"other")
    with pytest.raises(InputError):
        seal_to(RECIPIENT_PK, b"x", b"ctx", bytes(31))
    with pytest.raises(InputError):
        open_sealed(RECIPIENT_SK[:31], a, b"ctx")


### Import: the key's address does not change

WALLET = load_json("bip-0341-wallet-test-vectors.json")
KEY_PATH = WALLET["keyPathSpending"][0]


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=f"input{c['given']['txinIndex']}") for c in KEY_PATH["inputSpending"]],
)
def test_import_keeps_the_taproot_address(case: dict[str, Any]) -> None:
    given, inter = case["given"], case["intermediary"]
    private_key = bytes.fromhex(given["internalPrivkey"])
    merkle_root = bytes.fromhex(given["merkleRoot"]) if given["merkleRoot"] else None
    shares = local.import_key("bip340", private_key, threshold=2, parties=3)
    assert shares[0].public_key[1:].hex() == inter["internalPubkey"]
    output = taproot_output_key(shares[0].public_key[1:], merkle_root)
    spent = KEY_PATH["given"]["utxosSpent"][given["txinIndex"]]["scriptPubKey"]
    assert (b"\x51\x20" + output.output_key).hex() == spent  # the same P2TR address
    assert local.export_key(shares[1:]) == private_key


def test_import_keeps_the_ethereum_address() -> None:
    shares = local.import_key("ecdsa-secp256k1", KEY_BYTES, threshold=2, parties=3)
    uncompressed = Point.from_bytes(shares[0].public_key).to_uncompressed()
    address = to_checksum_address(keccak(uncompressed[1:])[-20:])
    assert address == Account.from_key(KEY_BYTES).address  # eth-account's own derivation
    assert offline_export(shares[:2]) == KEY_BYTES


def test_import_by_ceremony_from_the_importers_one_of_one_keyring() -> None:
    # A remote import: the key's holder deals its 1-of-1 keyring to the new
    # parties through a reshare, so every new holder checks its share against
    # Feldman commitments and the public key the owner announced.
    importer = split_key(KEY_BYTES, 1, 1, seeded(4))[0].key_share("bip340", None)
    plan = ResharePlan(SID, PublicKeyring.from_share(importer), (0,), (1, 2, 3), 2)
    rand = seeded(5)
    outputs = run(
        [Reshare(plan, 0, importer, rand)] + [Reshare(plan, s, None, rand) for s in (1, 2, 3)]
    )
    new = [o.share for o in outputs[1:] if o.share is not None]
    assert len(new) == 3 and new[0].public_key == importer.public_key
    assert local.export_key(new[1:]) == KEY_BYTES
    sig = local.sign(new[:2], bytes(32), SigningOptions(taproot=True))
    assert schnorr_verify(bytes(32), taproot_output_key(new[0].public_key[1:]).output_key, sig)
