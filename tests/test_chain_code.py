"""The BIP-32 chain code: agreed at keygen from secret randomness, kept by every key change.

Before, a keyring's chain code was a hash of its public key, so the host (which
sees every public key) could derive every child key and link all of a
wallet's addresses. Now it comes from random contributions that travel only
inside the parties' end-to-end channels, and the host never sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cbor2
import pytest

from client.cli.devstack import running_stack
from client.sdk.party import PartyIdentity
from tests.lifecycle_support import bip340_keyring, join_dealing, run, seeded, split_dealing
from tests.stack_harness import RawDigestWalletClient
from tss import local
from tss.bip32 import derive_public
from tss.ceremony import Message
from tss.curve import ecdsa_verify, schnorr_verify, tagged_hash
from tss.dkg.chilldkg import hostpubkey_gen
from tss.equivocation import EquivocationError
from tss.errors import FaultyParticipantError, ProtocolError
from tss.keygen import ROUND1, Keygen, round1_hash
from tss.keyshare import KeyShare
from tss.reshare import PublicKeyring, Reshare, ResharePlan, holder_seats
from tss.signing import SigningOptions

OLD_TAG = "shardkeep/chaincode"  # the old derivation: tagged_hash(OLD_TAG, public key)
SID = bytes(range(32))
DIGEST = bytes(range(32))


def public_key_derived(public_key: bytes) -> bytes:
    return tagged_hash(OLD_TAG, public_key)


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_keygen_parties_agree_on_a_chain_code_not_derived_from_the_public_key(
    scheme: str,
) -> None:
    shares = local.keygen(scheme, threshold=2, parties=3)
    codes = {s.chain_code for s in shares}
    assert len(codes) == 1
    (code,) = codes
    assert code != public_key_derived(shares[0].public_key)
    again = local.keygen(scheme, threshold=2, parties=3)
    assert again[0].chain_code not in (code, public_key_derived(again[0].public_key))
    # Every signer derives the same child with it: a derived signature verifies.
    path = (0, 7)
    child = derive_public(shares[0].public_key, code, path).public_key
    signature = local.sign(shares[:2], DIGEST, SigningOptions(derivation_path=path))
    if scheme == "bip340":
        assert schnorr_verify(DIGEST, child[1:], signature)
    else:
        assert ecdsa_verify(DIGEST, child, signature)


def test_a_party_sending_different_contributions_is_named() -> None:
    """Attack: a party sends party 0 another chain code contribution than everyone else
    (validly signed: a malicious party signs what it sends), so that party 0 would derive
    other child addresses. The contributions are part of the signed, echoed round-1
    messages: party 0 and the others see two signatures of the equivocator and name it;
    nobody finishes with a chain code."""
    rand = seeded(3)
    hostseckeys = [rand(32) for _ in range(3)]
    hostpubkeys = [hostpubkey_gen(k) for k in hostseckeys]
    ceremonies = [
        Keygen("bip340", k, hostpubkeys, 2, rand, session_id=b"chain-code-test")
        for k in hostseckeys
    ]
    context = ceremonies[2].context

    def equivocate(m: Message) -> bytes:
        if m.round == 1 and m.sender == 2 and m.recipient == 0:
            message = bytes(32) + m.payload[32:-64]  # another contribution for party 0 only
            return (
                message
                + ROUND1.sign(hostseckeys[2], context, 2, round1_hash(message), bytes(32)).signature
            )
        return m.payload

    with pytest.raises(EquivocationError) as error:
        run(ceremonies, equivocate)
    assert error.value.culprits == (2,)


def test_chain_code_survives_refresh_and_reshare() -> None:
    shares = local.keygen("bip340", threshold=2, parties=3)
    code = shares[0].chain_code
    refreshed = local.refresh(shares)
    assert {s.chain_code for s in refreshed} == {code}
    reshared = local.reshare(refreshed[:2], threshold=3, parties=4)
    assert {s.chain_code for s in reshared} == {code}
    assert all(s.epoch == 2 for s in reshared)


def _reshare_2_of_2_to_new_parties(code: bytes) -> tuple[ResharePlan, list[KeyShare]]:
    old = bip340_keyring(0xC0DE, 2, 2, seed=4, chain_code=code)
    keyring = PublicKeyring.from_share(old[0])
    holders = holder_seats(2, {0: "a", 1: "b"}, ["a", "c", "d"])
    return ResharePlan(SID, keyring, (0, 1), holders, 2), old


def test_new_parties_get_the_chain_code_from_the_dealers_not_from_the_public_keyring() -> None:
    code = bytes(range(100, 132))
    plan, old = _reshare_2_of_2_to_new_parties(code)
    assert code not in plan.keyring.to_bytes()  # what the request (and the host) carries
    rand = seeded(5)
    outputs = run([Reshare(plan, s, old[s] if s < 2 else None, rand) for s in plan.seats])
    assert {o.share.chain_code for o in outputs if o.share is not None} == {code}


def test_a_dealer_sending_another_chain_code_is_caught() -> None:
    """Attack: a dealer sends new parties another chain code (their child addresses would
    differ from everyone else's). A dealer that receives it blames the sender; a new
    party cannot tell who lies and aborts without blame; nobody ends with two codes."""
    plan, old = _reshare_2_of_2_to_new_parties(bytes(range(32)))

    def lie_to(seat: int) -> Callable[[Message], bytes]:
        def tamper(m: Message) -> bytes:
            if m.round == 1 and m.sender == 1 and m.recipient == seat:
                points, _, sub = split_dealing(m.payload, 2)
                return join_dealing(points, bytes(32), sub)
            return m.payload

        return tamper

    def reshare(seed: int) -> list[Reshare]:
        return [Reshare(plan, s, old[s] if s < 2 else None, seeded(seed)) for s in plan.seats]

    with pytest.raises(FaultyParticipantError) as blamed:  # seat 0 is dealer a
        run(reshare(6), lie_to(0))
    assert blamed.value.culprits == (1,)
    with pytest.raises(ProtocolError, match="different chain codes") as aborted:
        run(reshare(7), lie_to(plan.holders[1]))
    assert aborted.value.culprits == ()


def test_version_1_key_shares_are_read_and_keep_their_chain_code() -> None:
    """A share written before (version 1, chain code = hash of the public key) still opens,
    with the chain code its addresses were derived from; it is written back as version 2."""
    share = bip340_keyring(0xBEEF, 2, 2, seed=8)[0]
    old_code = public_key_derived(share.public_key)
    legacy = replace(share, chain_code=old_code)
    fields = cbor2.loads(legacy.to_bytes())
    assert fields["version"] == 2
    fields["version"] = 1
    read = KeyShare.from_bytes(cbor2.dumps(fields))
    assert read == legacy and read.chain_code == old_code
    assert cbor2.loads(read.to_bytes())["version"] == 2


@pytest.mark.slow
def test_the_host_never_sees_the_chain_code(tmp_path: Path) -> None:
    """The chain code of a wallet made, reshared and imported through the service appears
    nowhere the host keeps: not in its database (sealed shares only), nor in any log."""

    async def main() -> list[bytes]:
        async with (
            running_stack(tmp_path / "run") as stack,
            RawDigestWalletClient(
                stack.host_address, stack.relay_address, stack.coordinator_key,
                root_certificate=stack.root_certificate,
            ) as wallets,
        ):  # fmt: skip
            phone, laptop = PartyIdentity.generate(), PartyIdentity.generate()
            wallet = await wallets.create_wallet("bip340", [phone], threshold=2)
            code = wallet.shares[0].chain_code
            wallet = await wallets.reshare(wallet, {0: phone}, [phone, laptop], threshold=2)
            assert {s.chain_code for s in wallet.shares.values()} == {code}
            child = SigningOptions(derivation_path=(3,))
            await wallets.sign(wallet, DIGEST, {1: laptop}, options=child)  # enclave agrees
            imported_code = bytes(range(7, 39))
            imported = await wallets.import_key(
                "bip340", bytes(31) + b"\x2a", [phone], threshold=2, chain_code=imported_code
            )
            assert imported.shares[0].chain_code == imported_code
            return [code, imported_code]

    codes = asyncio.run(main())
    kept = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name.startswith("host") for p in kept)
    for path in kept:
        data = path.read_bytes()
        for code in codes:
            assert code not in data and code.hex().encode() not in data, path.name
