"""`shardkeep wallet sign-message` and `sign-typed-data` against the real stack.

eth-account is the oracle: each signature must recover, in eth-account, to the
address `wallet create` printed. Typed data that cannot be signed as it is is
refused before the passcode is read or the host is called.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_keys.datatypes import PublicKey

from client.chains.ethereum import wallet_address
from client.chains.ethereum_messages import (
    MessageSignature,
    sign_personal_message,
    sign_typed_data,
)
from client.cli.devstack import DevStack
from client.cli.main import main
from client.sdk.party import PartyIdentity
from client.sdk.wallet import WalletClient
from shardkeep.chains.eth_messages import load_typed_data
from tests.cli_harness import no_environment, shardkeep
from tests.stack_harness import background_stack, run_with_client
from tests.test_eth_messages import MAIL, NESTED

__all__ = ["no_environment"]  # the fixture (tests.cli_harness)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("cli-eth") / "run") as running:
        yield running


@pytest.fixture(scope="module")
def passcode(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("passcode") / "passcode"
    path.write_text("messages typed and personal\n")
    return path


def options(stack: DevStack, state: Path, passcode: Path | None) -> list[str]:
    given = [
        "--host", stack.host_address, "--relay", stack.relay_address,
        "--coordinator-key", str(stack.directory / "coordinator.key"),
        "--root", str(stack.directory / "pki" / "root.pem"),
        "--state", str(state), "--insecure-weak-kdf", "--json",
    ]  # fmt: skip
    return given + (["--passcode-file", str(passcode)] if passcode is not None else [])


@dataclass(frozen=True)
class EcdsaWallet:
    state: Path
    wallet_id: str
    address: str  # as `wallet create` printed it


@pytest.fixture(scope="module")
def ecdsa_wallet(
    stack: DevStack, passcode: Path, tmp_path_factory: pytest.TempPathFactory
) -> EcdsaWallet:
    state = tmp_path_factory.mktemp("eth-state")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["wallet", "create", "--scheme", "ecdsa", *options(stack, state, passcode)])
    assert status == 0
    created = json.loads(out.getvalue())
    # eth-keys (under eth-account) spells the address of the printed public key the same.
    public_key = PublicKey.from_compressed_bytes(bytes.fromhex(created["public_key"]))
    assert created["ethereum_address"] == public_key.to_checksum_address()
    return EcdsaWallet(state, created["wallet_id"], created["ethereum_address"])


def test_sign_message_recovers_to_the_wallets_address(
    stack: DevStack,
    passcode: Path,
    ecdsa_wallet: EcdsaWallet,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    state, wallet_id, address = ecdsa_wallet.state, ecdsa_wallet.wallet_id, ecdsa_wallet.address
    given = options(stack, state, passcode)

    status, signed, err = shardkeep(
        capsys, "wallet", "sign-message", wallet_id, "--text", "Hello, shardkeep ♥", *given
    )
    assert status == 0, err
    assert signed["address"] == address
    signable = encode_defunct(text="Hello, shardkeep ♥")
    assert Account.recover_message(signable, signature=signed["signature"]) == address

    raw = bytes(range(256))
    (tmp_path / "message.bin").write_bytes(raw)
    for source in (["--hex", raw.hex()], ["--file", str(tmp_path / "message.bin")]):
        status, signed, err = shardkeep(
            capsys, "wallet", "sign-message", wallet_id, *source, *given
        )
        assert status == 0, err
        signable = encode_defunct(primitive=raw)
        assert Account.recover_message(signable, signature=signed["signature"]) == address


@pytest.mark.parametrize("document", [MAIL, NESTED], ids=["spec-mail", "nested-arrays"])
def test_sign_typed_data_recovers_to_the_wallets_address(
    stack: DevStack,
    passcode: Path,
    ecdsa_wallet: EcdsaWallet,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    document: dict[str, Any],
) -> None:
    state, wallet_id, address = ecdsa_wallet.state, ecdsa_wallet.wallet_id, ecdsa_wallet.address
    path = tmp_path / "typed.json"
    path.write_text(json.dumps(document))
    status, signed, err = shardkeep(
        capsys, "wallet", "sign-typed-data", wallet_id, str(path),
        *options(stack, state, passcode),
    )  # fmt: skip
    assert status == 0, err
    assert signed["primary_type"] == "Mail"
    signable = encode_typed_data(full_message=copy.deepcopy(document))
    assert Account.recover_message(signable, signature=signed["signature"]) == address


def test_bad_typed_data_is_refused_before_the_passcode(
    stack: DevStack,
    passcode: Path,
    ecdsa_wallet: EcdsaWallet,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    state, wallet_id = ecdsa_wallet.state, ecdsa_wallet.wallet_id
    document = copy.deepcopy(MAIL)
    document["message"]["to"]["note"] = "not in the type, so never signed"
    path = tmp_path / "typed.json"
    path.write_text(json.dumps(document))
    # No passcode given at all: the refusal comes first.
    status, out, err = shardkeep(
        capsys, "wallet", "sign-typed-data", wallet_id, str(path), *options(stack, state, None)
    )
    assert (status, out) == (2, None)
    assert "EIP-712 message.to:" in err and "note" in err


def test_messages_need_an_ecdsa_wallet(
    stack: DevStack, passcode: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    given = options(stack, tmp_path, passcode)
    status, wallet, err = shardkeep(capsys, "wallet", "create", "--scheme", "bip340", *given)
    assert status == 0, err
    status, _, err = shardkeep(
        capsys, "wallet", "sign-message", wallet["wallet_id"], "--text", "hi", *given
    )
    assert status == 2 and "needs an ecdsa wallet" in err


def test_the_sdk_signs_personal_messages_and_typed_data(stack: DevStack) -> None:
    """client.chains.ethereum_messages with a WalletClient: eth-account recovers the address."""

    async def body(client: WalletClient) -> tuple[str, MessageSignature, MessageSignature]:
        phone = PartyIdentity.generate()
        created = await client.create_wallet("ecdsa-secp256k1", [phone], threshold=2)
        personal = await sign_personal_message(client, created, b"hello from the SDK", {0: phone})
        typed = await sign_typed_data(
            client, created, load_typed_data(json.dumps(NESTED)), {0: phone}
        )
        return wallet_address(created), personal, typed

    address, personal, typed = run_with_client(stack, body)
    assert personal.address == typed.address == address
    signable = encode_defunct(primitive=b"hello from the SDK")
    assert Account.recover_message(signable, signature=personal.signature) == address
    signable = encode_typed_data(full_message=copy.deepcopy(NESTED))
    assert Account.recover_message(signable, signature=typed.signature) == address
