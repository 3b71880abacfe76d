"""Import and offline export against the real stack (devkms, relay, enclave, host as processes).

- a known private key (the BIP-340 vector's; a known Ethereum key) imported
  into a 2-of-3 wallet with two devices and the server share keeps its public
  key (and address); a device and the server sign under the original key; the
  key comes from one of the devices (ECDSA) or from a party that leaves (bip340);
- two device shares alone (no host, relay or server) rebuild the original key;
- the same through ``shardkeep wallet import`` and ``wallet export --offline``
  (in process), the latter given no host or relay at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from coincurve import PublicKey
from eth_keys.datatypes import PrivateKey as EthPrivateKey

from client.chains.ethereum import wallet_address
from client.cli.devstack import DevStack
from client.cli.main import main
from client.cli.state import wallet_dir
from client.sdk.backups import offline_export
from client.sdk.party import PartyIdentity
from client.sdk.wallet import WalletClient, WalletError
from shardkeep.v1 import host_pb2, host_pb2_grpc
from tests.stack_harness import background_stack, run_with_client
from tests.vectors import load_csv
from tss.curve import schnorr_verify
from tss.errors import InputError
from tss.signing import RecoverableSignature

pytestmark = pytest.mark.slow
# The private key of the eth-account / web3.py documentation, and its address.
ETH_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
ETH_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
DIGEST = bytes.fromhex("5e" * 32)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("import") / "run") as running:
        yield running


def bip340_vector() -> dict[str, str]:
    """BIP-340 test vector 1 (a secret key with its x-only public key)."""
    (row,) = [r for r in load_csv("bip-0340-test-vectors.csv") if r["index"] == "1"]
    return row


def test_bip340_import_signs_under_the_original_key_and_exports_offline(stack: DevStack) -> None:
    vector = bip340_vector()
    key, xonly = bytes.fromhex(vector["secret key"]), bytes.fromhex(vector["public key"])

    async def body(client: WalletClient) -> None:
        devices = [PartyIdentity.generate(), PartyIdentity.generate()]
        # The key comes from a party that deals it and leaves (e.g. a migration host).
        importer = PartyIdentity.generate()
        wallet = await client.import_key("bip340", key, devices, threshold=2, importer=importer)
        assert wallet.public_key[1:] == xonly
        assert (wallet.threshold, len(wallet.parties), wallet.server_index) == (2, 3, 2)
        assert (wallet.epoch, sorted(wallet.shares)) == (1, [0, 1])
        signature = await client.sign(wallet, DIGEST, {1: devices[1]})
        assert isinstance(signature, bytes) and schnorr_verify(DIGEST, xonly, signature)
        # The host records the imported wallet as any other.
        async with grpc.aio.insecure_channel(stack.host_address) as channel:
            stub = host_pb2_grpc.HostStub(channel)  # type: ignore[no-untyped-call]
            stored = await stub.GetWallet(host_pb2.GetWalletRequest(wallet_id=wallet.wallet_id))
            assert (stored.public_key, stored.epoch, stored.threshold) == (
                wallet.public_key, 1, 2,
            )  # fmt: skip
        # Offline: the two device shares alone, no server.
        assert offline_export(list(wallet.shares.values()), public_key=wallet.public_key) == key
        with pytest.raises(InputError):  # one share is below the threshold
            offline_export([wallet.shares[0]])

        # Another key under the same wallet id: refused by the host.
        with pytest.raises(WalletError) as caught:
            await client.import_key(
                "bip340", bytes(31) + b"\x05", devices, threshold=2, wallet_id=wallet.wallet_id
            )
        assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS

    run_with_client(stack, body)


def test_ecdsa_import_keeps_the_ethereum_address(stack: DevStack) -> None:
    assert EthPrivateKey(ETH_KEY).public_key.to_checksum_address() == ETH_ADDRESS

    async def body(client: WalletClient) -> None:
        devices = [PartyIdentity.generate(), PartyIdentity.generate()]
        wallet = await client.import_key("ecdsa-secp256k1", ETH_KEY, devices, threshold=2)
        assert wallet_address(wallet) == ETH_ADDRESS
        original = EthPrivateKey(ETH_KEY).public_key.to_compressed_bytes()
        assert wallet.public_key == original
        for device in (0, 1):
            result = await client.sign(wallet, DIGEST, {device: devices[device]})
            assert isinstance(result, RecoverableSignature)
            recovered = PublicKey.from_signature_and_message(
                result.to_bytes65(), DIGEST, hasher=None
            )
            assert recovered.format() == original
        assert offline_export([wallet.shares[1], wallet.shares[0]]) == ETH_KEY

    run_with_client(stack, body)


### The CLI


def _options(stack: DevStack, state: Path, passcode: Path) -> list[str]:
    return [
        "--host", stack.host_address, "--relay", stack.relay_address,
        "--coordinator-key", str(stack.directory / "coordinator.key"),
        "--root", str(stack.directory / "pki" / "root.pem"),
        *_local(state, passcode),
    ]  # fmt: skip


def _local(state: Path, passcode: Path) -> list[str]:
    return [
        "--state",
        str(state),
        "--passcode-file",
        str(passcode),
        "--insecure-weak-kdf",
        "--json",
    ]


def _shardkeep(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, json.loads(captured.out) if captured.out.strip() else None, captured.err


def test_cli_import_sign_and_offline_export(
    stack: DevStack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HOST", "RELAY", "COORDINATOR_KEY", "ROOT", "STATE", "PASSCODE"):
        monkeypatch.delenv(f"SHARDKEEP_{name}", raising=False)
    passcode = tmp_path / "passcode"
    passcode.write_text("import passphrase\n")
    key_file = tmp_path / "key.hex"
    key_file.write_text("0x" + ETH_KEY.hex() + "\n")
    state = tmp_path / "state"
    online = _options(stack, state, passcode)

    status, imported, err = _shardkeep(
        capsys, "wallet", "import", "--allow-raw-digest", "--scheme", "ecdsa",
        "--key-file", str(key_file), "--local-parties", "2", *online,
    )  # fmt: skip
    assert status == 0, err
    assert "import: round" in err
    assert imported["ethereum_address"] == ETH_ADDRESS
    assert (imported["parties"], imported["threshold"], imported["local_parties"]) == (3, 2, [0, 1])
    assert imported["epoch"] == 1
    wallet_id, public_key = imported["wallet_id"], imported["public_key"]

    status, signed, err = _shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST.hex(), "--party", "1", *online
    )
    assert status == 0, err
    sig65 = bytes.fromhex(signed["signature"]) + bytes([signed["recovery_id"]])
    assert PublicKey.from_signature_and_message(sig65, DIGEST, hasher=None).format().hex() == (
        public_key
    )

    # Offline: the two share files, no host or relay options at all.
    epoch_files = wallet_dir(state, wallet_id) / "epoch-1"
    shares = [str(epoch_files / f"party-{i}.share") for i in (0, 1)]
    offline = _local(tmp_path / "unused", passcode)
    out = tmp_path / "exported.key"
    status, exported, err = _shardkeep(
        capsys, "wallet", "export", "--offline", *shares, "--out", str(out),
        "--public-key", public_key, *offline,
    )  # fmt: skip
    assert status == 0, err
    assert (exported["wallet_id"], exported["public_key"], exported["parties"]) == (
        wallet_id, public_key, [0, 1],
    )  # fmt: skip
    assert out.read_text() == ETH_KEY.hex() + "\n"
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)

    # Failures: one share is too few (exit 2), another key (exit 1), an existing file,
    # a wrong passcode (exit 1); nothing is written and no key reaches stderr.
    status, _, err = _shardkeep(
        capsys, "wallet", "export", "--offline", shares[0], "--out", str(tmp_path / "a"), *offline
    )
    assert status == 2 and "need at least 2 shares" in err
    status, _, err = _shardkeep(
        capsys, "wallet", "export", "--offline", *shares, "--out", str(tmp_path / "b"),
        "--public-key", "02" + "11" * 32, *offline,
    )  # fmt: skip
    assert status == 1 and "public key" in err
    status, _, err = _shardkeep(
        capsys, "wallet", "export", "--offline", *shares, "--out", str(out), *offline
    )
    assert status == 2 and "exists" in err
    wrong = tmp_path / "wrong"
    wrong.write_text("not it")
    status, _, err = _shardkeep(
        capsys, "wallet", "export", "--offline", *shares, "--out", str(tmp_path / "c"),
        *_local(tmp_path / "unused", wrong),
    )  # fmt: skip
    assert status == 1 and "cannot decrypt" in err
    assert not any((tmp_path / n).exists() for n in "abc")
    status, _, err = _shardkeep(
        capsys, "wallet", "export", wallet_id, "--offline", *shares, "--out", str(tmp_path / "d"),
        *offline,
    )  # fmt: skip
    assert status == 2 and "share files only" in err  # a WALLET and --offline

    # A key file that is not a hex key: exit 2, and the file's content is not echoed.
    key_file.write_text("not a key: secret-words\n")
    status, _, err = _shardkeep(
        capsys, "wallet", "import", "--key-file", str(key_file), *_options(stack, state, passcode)
    )
    assert status == 2 and "secret-words" not in err
