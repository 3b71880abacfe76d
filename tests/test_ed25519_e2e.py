"""Ed25519 wallets through the real service (devkms, relay, enclave, host as processes).

A 2-of-2 ed25519 wallet made by keygen with the server share signs Solana
transactions (legacy and v0) that ``solders`` verifies; a refresh and a
reshare keep its address; an export gives the expanded secret (a key born in a
DKG has no seed); a Solana keypair imported with the server share keeps its
address. A message the service is asked to sign is the message itself, never a
digest.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from nacl.signing import SigningKey, VerifyKey
from solders.keypair import Keypair
from solders.transaction import VersionedTransaction

from client.chains import solana
from client.cli.devstack import DevStack
from client.cli.main import main
from client.cli.state import wallet_dir
from client.sdk.approvals import SoftwarePasskey
from client.sdk.backups import backup_share, recover_device, restore_wallet
from client.sdk.party import PartyIdentity
from client.sdk.wallet import Wallet, WalletClient, WalletError
from client.storage.shares import insecure_test_params
from shardkeep.policyset import Consensus, Policy, PolicySet
from shardkeep.v1 import host_pb2, host_pb2_grpc
from tests.stack_harness import background_stack, run_with_client
from tss.ed25519_keys import sign_expanded
from tss.errors import InputError
from tss.export import offline_export
from tss.group import ED25519

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("ed25519") / "run") as running:
        yield running


def transfer(wallet: Wallet, version: str | int) -> bytes:
    payer = wallet.public_key
    instructions = [solana.sol_transfer(payer, secrets.token_bytes(32), 1_000_000)]
    return solana.compile_message(payer, instructions, secrets.token_bytes(32), version)  # type: ignore[arg-type]


def assert_solders_verifies(raw: bytes, wallet: Wallet) -> None:
    parsed = VersionedTransaction.from_bytes(raw)
    assert parsed.verify_with_results() == [True]
    assert str(parsed.message.account_keys[0]) == solana.address(wallet.public_key)


def test_keygen_sign_refresh_reshare_export(stack: DevStack) -> None:
    async def body(client: WalletClient) -> None:
        phone = PartyIdentity.generate()
        wallet = await client.create_wallet("ed25519", [phone], threshold=2)
        assert wallet.scheme == "ed25519" and len(wallet.public_key) == 32
        address = solana.address(wallet.public_key)

        # Solana: a SOL transfer in a legacy and in a v0 message, signed with the server.
        for version in ("legacy", 0):
            raw = await solana.sign_transaction(
                client, wallet, transfer(wallet, version), {0: phone}
            )
            assert_solders_verifies(raw, wallet)
        # Any message bytes (Ed25519 signs the message, not a digest).
        long_message = secrets.token_bytes(3000)
        signature = await client.sign(wallet, long_message, {0: phone})
        assert isinstance(signature, bytes)
        VerifyKey(wallet.public_key).verify(long_message, signature)

        # The host records the wallet with its 32-byte key.
        async with grpc.aio.insecure_channel(stack.host_address) as channel:
            stub = host_pb2_grpc.HostStub(channel)  # type: ignore[no-untyped-call]
            stored = await stub.GetWallet(host_pb2.GetWalletRequest(wallet_id=wallet.wallet_id))
            assert (stored.public_key, stored.scheme) == (wallet.public_key, 3)

        # Refresh: new shares of the same key.
        refreshed = await client.refresh(wallet, {0: phone})
        assert refreshed.public_key == wallet.public_key and refreshed.epoch == 1
        assert refreshed.shares[0].secret_share != wallet.shares[0].secret_share
        raw = await solana.sign_transaction(client, refreshed, transfer(refreshed, 0), {0: phone})
        assert_solders_verifies(raw, refreshed)

        # Reshare to 2-of-3 with a backup device; the backup signs with the server alone.
        backup = PartyIdentity.generate()
        reshared = await client.reshare(refreshed, {0: phone}, [phone, backup], threshold=2)
        assert solana.address(reshared.public_key) == address
        raw = await solana.sign_transaction(
            client, reshared, transfer(reshared, "legacy"), {1: backup}
        )
        assert_solders_verifies(raw, reshared)
        # The two devices alone, without the server share.
        message = transfer(reshared, 0)
        signature = await client.sign(reshared, message, {0: phone, 1: backup}, with_server=False)
        assert isinstance(signature, bytes)
        VerifyKey(reshared.public_key).verify(message, signature)

        # Export: the 64-byte expanded secret (scalar || prefix), no seed exists.
        exported = await client.export(reshared, {1: backup}, phone)
        assert len(exported) == 64
        scalar = int.from_bytes(exported[:32], "little")
        assert ED25519.encode(ED25519.base_mul(scalar)) == reshared.public_key
        VerifyKey(reshared.public_key).verify(
            b"after export", sign_expanded(exported, b"after export")
        )
        assert offline_export(list(reshared.shares.values())) == exported

    run_with_client(stack, body)


def test_a_solana_keypair_imported_with_the_server_keeps_its_address(stack: DevStack) -> None:
    keypair = Keypair()
    seed = bytes(keypair)[:32]
    assert bytes(SigningKey(seed).verify_key) == bytes(keypair.pubkey())

    async def body(client: WalletClient) -> None:
        devices = [PartyIdentity.generate(), PartyIdentity.generate()]
        wallet = await client.import_key("ed25519", bytes(keypair), devices, threshold=2)
        assert solana.address(wallet.public_key) == str(keypair.pubkey())
        assert (wallet.epoch, wallet.server_index) == (1, 2)
        raw = await solana.sign_transaction(client, wallet, transfer(wallet, 0), {1: devices[1]})
        assert_solders_verifies(raw, wallet)

    run_with_client(stack, body)


def test_bad_messages_are_refused_before_any_call(stack: DevStack) -> None:
    """An empty or oversized message, a Solana message whose fee payer is not the
    wallet, and a Solana message for a bip340 wallet: typed errors, no ceremony."""

    async def body(client: WalletClient) -> None:
        phone = PartyIdentity.generate()
        wallet = await client.create_wallet("ed25519", [phone], threshold=2)
        with pytest.raises(InputError):
            await client.sign(wallet, b"", {0: phone})
        with pytest.raises(InputError):
            await client.sign(wallet, bytes(65537), {0: phone})
        foreign = solana.compile_message(
            secrets.token_bytes(32),
            [solana.sol_transfer(wallet.public_key, secrets.token_bytes(32), 1)],
            secrets.token_bytes(32),
        )
        with pytest.raises(solana.SolanaError, match="fee payer"):
            await solana.sign_transaction(client, wallet, foreign, {0: phone})
        bip340 = await client.create_wallet("bip340", [phone], threshold=2)
        with pytest.raises(solana.SolanaError, match="ed25519 wallets"):
            await solana.sign_transaction(client, bip340, transfer(wallet, 0), {0: phone})

    run_with_client(stack, body)


### The CLI


def _shardkeep(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, json.loads(captured.out) if captured.out.strip() else None, captured.err


def test_cli_solana_wallet_create_sign_import_and_export(
    stack: DevStack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HOST", "RELAY", "COORDINATOR_KEY", "ROOT", "STATE", "PASSCODE"):
        monkeypatch.delenv(f"SHARDKEEP_{name}", raising=False)
    passcode = tmp_path / "passcode"
    passcode.write_text("solana passphrase\n")
    local = ["--state", str(tmp_path / "state"), "--passcode-file", str(passcode)]
    local += ["--insecure-weak-kdf", "--json"]
    online = [
        "--host", stack.host_address, "--relay", stack.relay_address,
        "--coordinator-key", str(stack.directory / "coordinator.key"),
        "--root", str(stack.directory / "pki" / "root.pem"), *local,
    ]  # fmt: skip

    status, created, err = _shardkeep(
        capsys, "wallet", "create", "--scheme", "ed25519", "--local-parties", "2",
        "--allow-raw-digest", *online,
    )  # fmt: skip
    assert status == 0, err
    public_key = bytes.fromhex(created["public_key"])
    assert created["solana_address"] == solana.address(public_key)
    message = solana.compile_message(
        public_key,
        [solana.sol_transfer(public_key, secrets.token_bytes(32), 5)],
        secrets.token_bytes(32),
    )
    status, signed, err = _shardkeep(
        capsys, "wallet", "sign", created["wallet_id"], "--message", message.hex(), *online
    )
    assert status == 0, err
    VerifyKey(public_key).verify(message, bytes.fromhex(signed["signature"]))
    # sign-solana: the wire transaction (base64) solders verifies, its signature in base58.
    status, sent, err = _shardkeep(
        capsys, "wallet", "sign-solana", created["wallet_id"], "--message", message.hex(), *online
    )
    assert status == 0, err
    parsed = VersionedTransaction.from_bytes(base64.b64decode(sent["transaction"]))
    assert parsed.verify_with_results() == [True]
    assert str(parsed.signatures[0]) == sent["signature"]
    foreign = solana.compile_message(
        secrets.token_bytes(32), [solana.sol_transfer(public_key, public_key, 1)], bytes(32)
    )
    status, _, err = _shardkeep(
        capsys, "wallet", "sign-solana", created["wallet_id"], "--message", foreign.hex(), *online
    )
    assert status != 0 and "fee payer" in err
    # A digest is refused for an ed25519 wallet (Ed25519 signs the message itself).
    status, _, err = _shardkeep(
        capsys, "wallet", "sign", created["wallet_id"], "--digest", "00" * 32, *online
    )
    assert status == 2 and "--message" in err

    # Export says plainly that the file is the expanded secret, not a seed.
    out = tmp_path / "exported.key"
    status, exported, err = _shardkeep(
        capsys, "wallet", "export", created["wallet_id"], "--out", str(out), *online
    )
    assert status == 0, err
    assert "expanded secret" in exported["note"] and "seed" in exported["note"]
    expanded = bytes.fromhex(out.read_text())
    assert len(expanded) == 64
    VerifyKey(public_key).verify(b"m", sign_expanded(expanded, b"m"))
    # Offline, from the two local share files alone, checked against the 32-byte key.
    epoch_files = wallet_dir(tmp_path / "state", created["wallet_id"]) / "epoch-0"
    shares = [str(epoch_files / f"party-{i}.share") for i in (0, 1)]
    offline_out = tmp_path / "offline.key"
    status, offline, err = _shardkeep(
        capsys, "wallet", "export", "--offline", *shares, "--out", str(offline_out),
        "--public-key", public_key.hex(), *local,
    )  # fmt: skip
    assert status == 0, err
    assert "expanded secret" in offline["note"]
    assert bytes.fromhex(offline_out.read_text()) == expanded

    # Import a Solana keypair in solana-keygen's JSON format: the address is kept.
    keypair = Keypair()
    key_file = tmp_path / "id.json"
    key_file.write_text(json.dumps(list(bytes(keypair))))
    status, imported, err = _shardkeep(
        capsys, "wallet", "import", "--scheme", "solana", "--key-file", str(key_file), *online
    )
    assert status == 0, err
    assert imported["solana_address"] == str(keypair.pubkey())
    # A malformed keypair file: exit 2, its content never echoed.
    key_file.write_text("[1, 2, 3, 999]")
    status, _, err = _shardkeep(
        capsys, "wallet", "import", "--scheme", "ed25519", "--key-file", str(key_file), *online
    )
    assert status == 2 and "999" not in err


def test_the_server_share_checks_solana_transfers_against_the_wallet_policy(
    stack: DevStack,
) -> None:
    """A Solana wallet whose policy allows, with the owner's passkey, only SOL transfers
    of at most 5 SOL to one friend: the server share parses each message itself, signs
    the allowed one and refuses a larger one, one to a stranger and a raw message."""
    friend = secrets.token_bytes(32)
    passkey = SoftwarePasskey("owner-passkey", "wallet.example", "https://wallet.example")
    condition = (
        "activity.kind == 'SIGN_SOLANA_MESSAGE'"
        f" && solana.tx.transfers.all(t, t.to == '{solana.address(friend)}')"
        " && solana.tx.program_ids.all(p, p == '11111111111111111111111111111111')"
        " && solana.tx.transfer_total <= 5000000000"
    )
    policies = PolicySet(
        "solana-policy", 0, 1, (passkey.authenticator("owner"),),
        (Policy("friends-only", "allow", condition, Consensus(1)),),
    )  # fmt: skip

    def pay(wallet: Wallet, to: bytes, lamports: int) -> bytes:
        payer = wallet.public_key
        instructions = [solana.sol_transfer(payer, to, lamports)]
        return solana.compile_message(payer, instructions, secrets.token_bytes(32), 0)

    async def body(client: WalletClient) -> None:
        phone = PartyIdentity.generate()
        wallet = await client.create_wallet("ed25519", [phone], threshold=2, policy_set=policies)
        raw = await solana.sign_transaction(
            client, wallet, pay(wallet, friend, 10**9), {0: phone}, approvers=[passkey]
        )
        assert_solders_verifies(raw, wallet)
        for message in (pay(wallet, friend, 6 * 10**9), pay(wallet, secrets.token_bytes(32), 1)):
            with pytest.raises(WalletError, match="no allow policy"):
                await solana.sign_transaction(
                    client, wallet, message, {0: phone}, approvers=[passkey]
                )
        with pytest.raises(WalletError, match="SIGN_RAW_MESSAGE is signed only where"):
            await client.sign(wallet, pay(wallet, friend, 1), {0: phone}, approvers=[passkey])

    run_with_client(stack, body)


def test_a_lost_solana_device_is_recovered_from_its_backup_and_signs(stack: DevStack) -> None:
    """The device's ed25519 share and identity, backed up through the host (ciphertext
    only), restore the wallet on a new device, which signs a Solana transfer again."""
    passcode = "correct horse battery staple"

    async def body(client: WalletClient) -> None:
        old_device = PartyIdentity.generate()
        wallet = await client.create_wallet("ed25519", [old_device], threshold=2)
        async with grpc.aio.insecure_channel(stack.host_address) as channel:
            await backup_share(
                channel, wallet.shares[0], wallet_id=wallet.wallet_id, passcode=passcode,
                identity=old_device, owner_key=wallet.owner_key, params=insecure_test_params(),
                insecure_allow_weak_kdf=True,
            )  # fmt: skip
        public_key, wallet_id = wallet.public_key, wallet.wallet_id
        del wallet, old_device  # the device is lost

        async with grpc.aio.insecure_channel(stack.host_address) as channel:
            recovered = await recover_device(
                channel, wallet_id=wallet_id, public_key=public_key, passcode=passcode,
                insecure_allow_weak_kdf=True,
            )  # fmt: skip
            restored = await restore_wallet(client, channel, recovered, allow_raw_digest=True)
        assert restored.public_key == public_key and restored.scheme == "ed25519"
        message = transfer(restored, 0)
        raw = await solana.sign_transaction(client, restored, message, {0: recovered.identity})
        assert_solders_verifies(raw, restored)

    run_with_client(stack, body)
