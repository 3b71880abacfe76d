"""The SDK against the real stack (devkms, relay, enclave, host as processes).

- an EIP-1559 transaction signed by a 2-of-2 ECDSA wallet decodes with
  eth-account and recovers to the wallet's address (also for a BIP-32 child);
- a BIP-341 key-path spend signed by a 2-of-2 bip340 wallet verifies under the
  taproot output key;
- a device share backed up through the host (ciphertext only) is "lost",
  recovered on a new device with the passcode, and signs again.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from coincurve import PublicKey
from eth_account import Account
from eth_keys.datatypes import PublicKey as EthPublicKey

from client.chains.bitcoin import sign_key_path, wallet_output_key
from client.chains.ethereum import Eip1559Transaction, sign_transaction, wallet_address
from client.cli.devstack import DevStack
from client.sdk.approvals import ApiKey
from client.sdk.backups import (
    NoBackupError,
    backup_share,
    list_backups,
    recover_device,
    recover_from_backup,
    restore_wallet,
)
from client.sdk.party import PartyIdentity
from client.sdk.wallet import WalletClient, WalletError
from client.storage.errors import DecryptionError
from client.storage.shares import insecure_test_params
from shardkeep.chains.bip341 import (
    SIGHASH_ANYONECANPAY,
    SIGHASH_DEFAULT,
    SIGHASH_SINGLE,
    key_path_sighash,
    p2tr_script,
)
from shardkeep.chains.bitcoin_tx import OutPoint, Transaction, TxIn, TxOut
from shardkeep.policyset import Consensus, Policy, PolicySet
from tests.stack_harness import background_stack, run_with_client
from tss.bip32 import derive_public
from tss.curve import schnorr_verify
from tss.signing import RecoverableSignature

pytestmark = pytest.mark.slow
PASSCODE = "tr0ub4dor&3"
DIGEST = bytes.fromhex("c0ffee" * 10 + "0001")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("sdk") / "run") as running:
        yield running


def test_eip1559_transaction_recovers_to_the_wallet_address(stack: DevStack) -> None:
    async def body(client: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("ecdsa-secp256k1", [device], threshold=2)
        expected = EthPublicKey.from_compressed_bytes(wallet.public_key).to_checksum_address()
        assert wallet_address(wallet) == expected
        tx = Eip1559Transaction(
            chain_id=1,
            nonce=7,
            max_priority_fee_per_gas=2 * 10**9,
            max_fee_per_gas=40 * 10**9,
            gas=21_000,
            to=bytes.fromhex("d8da6bf26964af9d7eed9e03e53415d37aa96045"),
            value=12345 * 10**12,
        )
        signed = await sign_transaction(client, wallet, tx, {0: device})
        assert signed.raw[0] == 0x02
        assert Account.recover_transaction(signed.raw) == expected == signed.sender_address

        # A BIP-32 child of the wallet's key sends from its own address.
        path = (0, 5)
        child = derive_public(wallet.public_key, wallet.shares[0].chain_code, path).public_key
        child_address = EthPublicKey.from_compressed_bytes(child).to_checksum_address()
        signed_child = await sign_transaction(client, wallet, tx, {0: device}, derivation_path=path)
        assert Account.recover_transaction(signed_child.raw) == child_address != expected

    run_with_client(stack, body)


def test_taproot_key_path_spend_verifies_under_the_output_key(stack: DevStack) -> None:
    async def body(client: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [device], threshold=2)
        output_key = wallet_output_key(wallet)
        funding = TxOut(50_000, p2tr_script(output_key))
        foreign = TxOut(7_000, p2tr_script(b"\x11" * 32))
        tx = Transaction(
            version=2,
            inputs=(
                TxIn(OutPoint(b"\xaa" * 32, 1), sequence=0xFFFFFFFD),
                TxIn(OutPoint(b"\xbb" * 32, 0)),
            ),
            outputs=(TxOut(45_000, p2tr_script(b"\x22" * 32)), TxOut(11_000, b"\x6a")),
            locktime=850_000,
        )
        spent = (funding, foreign)

        witness = await sign_key_path(client, wallet, tx, spent, 0, {0: device})
        (signature,) = witness
        sighash = key_path_sighash(tx, spent, 0, SIGHASH_DEFAULT)
        assert schnorr_verify(sighash, output_key, signature)
        # Put in the transaction, the witness survives serialisation.
        signed_tx = Transaction(
            tx.version,
            (TxIn(tx.inputs[0].prevout, b"", 0xFFFFFFFD, witness), tx.inputs[1]),
            tx.outputs,
            tx.locktime,
        )
        assert Transaction.parse(signed_tx.serialize()).inputs[0].witness == witness

        # Another hash type, with an annex.
        hash_type, annex = SIGHASH_SINGLE | SIGHASH_ANYONECANPAY, b"\x50annex"
        witness = await sign_key_path(
            client, wallet, tx, spent, 0, {0: device}, hash_type=hash_type, annex=annex
        )
        assert witness[0][64] == hash_type and witness[1] == annex
        sighash = key_path_sighash(tx, spent, 0, hash_type, annex=annex)
        assert schnorr_verify(sighash, output_key, witness[0][:64])

        # An output that is not the wallet's is refused before any ceremony.
        with pytest.raises(ValueError, match="not this wallet's"):
            await sign_key_path(client, wallet, tx, spent, 1, {0: device})

    run_with_client(stack, body)


def test_backup_lose_recover_on_a_new_device_and_sign(stack: DevStack) -> None:
    weak = {"params": insecure_test_params(), "insecure_allow_weak_kdf": True}

    async def body(client: WalletClient) -> tuple[bytes, str]:
        old_device = PartyIdentity.generate()
        wallet = await client.create_wallet("ecdsa-secp256k1", [old_device], threshold=2)
        share = wallet.shares[0]
        async with grpc.aio.insecure_channel(stack.host_address) as channel:
            with pytest.raises(NoBackupError):
                await recover_from_backup(
                    channel, wallet_id=wallet.wallet_id, public_key=wallet.public_key,
                    passcode=PASSCODE, insecure_allow_weak_kdf=True,
                )  # fmt: skip
            stored = await backup_share(
                channel, share, wallet_id=wallet.wallet_id, passcode=PASSCODE,
                identity=old_device, owner_key=wallet.owner_key, **weak,  # type: ignore[arg-type]
            )  # fmt: skip
            listed = await list_backups(channel, wallet.wallet_id)
            assert [(e.backup_id, e.party_id, e.epoch) for e in listed] == [
                (stored.backup_id, 0, wallet.epoch)
            ]
        secret = share.secret_share_bytes
        public_key, wallet_id = wallet.public_key, wallet.wallet_id
        del wallet, share, old_device  # the device is lost

        # A new device knows the wallet id, its public key and the passcode.
        async with grpc.aio.insecure_channel(stack.host_address) as channel:
            with pytest.raises(DecryptionError):
                await recover_device(
                    channel, wallet_id=wallet_id, public_key=public_key, passcode="guess",
                    insecure_allow_weak_kdf=True,
                )  # fmt: skip
            recovered = await recover_device(
                channel, wallet_id=wallet_id, public_key=public_key, passcode=PASSCODE,
                insecure_allow_weak_kdf=True,
            )  # fmt: skip
            assert recovered.share.secret_share_bytes == secret
            only_share = await recover_from_backup(
                channel, wallet_id=wallet_id, public_key=public_key, party_id=0,
                passcode=PASSCODE, insecure_allow_weak_kdf=True,
            )  # fmt: skip
            assert only_share == recovered.share
            restored = await restore_wallet(client, channel, recovered, allow_raw_digest=True)
        assert restored.owner_key is not None
        result = await client.sign(restored, DIGEST, {0: recovered.identity})
        assert isinstance(result, RecoverableSignature)
        key = PublicKey.from_signature_and_message(result.to_bytes65(), DIGEST, hasher=None)
        assert key.format() == public_key
        return secret, stored.backup_id

    secret, backup_id = run_with_client(stack, body)
    # The host stored ciphertext only (SQLite's main file and its WAL).
    files = [stack.directory / "host.db", *sorted(stack.directory.glob("host.db-*"))]
    database = b"".join(path.read_bytes() for path in files)
    assert secret not in database and secret.hex().encode() not in database
    assert backup_id.encode() in database


def test_a_host_backup_carries_the_policy_set_and_the_restored_wallet_approves_under_it(
    stack: DevStack,
) -> None:
    """A wallet with a set of its own (one API key approves raw digests): the backup
    carries the set, so the restored wallet's approvals sign its hash, not the default's."""
    weak = {"params": insecure_test_params(), "insecure_allow_weak_kdf": True}
    raw_digests = "activity.kind == 'SIGN_RAW_DIGEST'"
    ops = ApiKey.generate("ops")
    own_set = PolicySet(
        "unbound", 0, 3, (ops.authenticator(),),
        (Policy("ops-signs-digests", "allow", raw_digests, Consensus(1)),),
    )  # fmt: skip

    async def body(client: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet(
            "ecdsa-secp256k1", [device], threshold=2, policy_set=own_set
        )
        assert wallet.policy_set is not None
        async with grpc.aio.insecure_channel(stack.host_address) as channel:
            await backup_share(
                channel, wallet.shares[0], wallet_id=wallet.wallet_id, passcode=PASSCODE,
                identity=device, owner_key=wallet.owner_key, policy_set=wallet.policy_set,
                **weak,  # type: ignore[arg-type]
            )  # fmt: skip
            recovered = await recover_device(
                channel, wallet_id=wallet.wallet_id, public_key=wallet.public_key,
                passcode=PASSCODE, insecure_allow_weak_kdf=True,
            )  # fmt: skip
            restored = await restore_wallet(client, channel, recovered)
        assert restored.policy_set is not None
        assert (restored.policy_set.version, restored.policy_set.authenticators) == (
            3,
            (ops.authenticator(),),
        )
        result = await client.sign(restored, DIGEST, {0: recovered.identity}, approvers=[ops])
        assert isinstance(result, RecoverableSignature)
        key = PublicKey.from_signature_and_message(result.to_bytes65(), DIGEST, hasher=None)
        assert key.format() == wallet.public_key

    run_with_client(stack, body)


def test_backups_of_an_unknown_wallet_are_refused(stack: DevStack) -> None:
    async def body(client: WalletClient) -> None:
        del client
        async with grpc.aio.insecure_channel(stack.host_address) as channel:
            with pytest.raises(WalletError) as caught:
                await list_backups(channel, "wallet-nope")
            assert caught.value.code == grpc.StatusCode.NOT_FOUND

    run_with_client(stack, body)
