"""`shardkeep wallet address`, `wallet xpub` and `wallet sign-psbt` against the real stack.

The xpub is checked by deriving from it as a watch-only wallet would (BIP-32
public derivation, then BIP-86's key-path output): the addresses must be the
ones `wallet address` prints. A PSBT with inputs of the wallet (its key and a
child named by PSBT_IN_TAP_BIP32_DERIVATION), of another key, and with a
misdescribed spent output is signed, left and refused as BIP-371 says.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.chains.bitcoin import key_path_address, wallet_p2tr_address
from client.chains.descriptors import descriptor_checksum, wallet_descriptors
from client.chains.solana import b58decode
from client.chains.xpub import fingerprint, wallet_xpub
from client.cli.devstack import DevStack
from client.cli.main import main
from client.sdk.party import PartyIdentity
from client.sdk.wallet import Wallet, WalletClient
from shardkeep.chains.bech32 import segwit_address
from shardkeep.chains.bip341 import SIGHASH_ALL, p2tr_script
from shardkeep.chains.bitcoin_tx import OutPoint, Transaction, TxIn, TxOut
from shardkeep.chains.psbt import Psbt, PsbtMap, parse_psbt
from tests.cli_harness import no_environment
from tests.stack_harness import background_stack, run_with_client
from tests.test_xpub_address import decode_xpub
from tss.bip32 import derive_public
from tss.curve import schnorr_verify
from tss.taproot import taproot_output_key

__all__ = ["no_environment"]  # the fixture (tests.cli_harness)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("cli-btc") / "run") as running:
        yield running


def options(stack: DevStack, state: Path, passcode: Path) -> list[str]:
    return [
        "--host", stack.host_address, "--relay", stack.relay_address,
        "--coordinator-key", str(stack.directory / "coordinator.key"),
        "--root", str(stack.directory / "pki" / "root.pem"),
        "--state", str(state), "--insecure-weak-kdf", "--json",
        "--passcode-file", str(passcode),
    ]  # fmt: skip


def run(*argv: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    text = out.getvalue()
    return status, json.loads(text) if text.strip() else None, err.getvalue()


@pytest.fixture(scope="module")
def taproot(stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    directory = tmp_path_factory.mktemp("btc-state")
    passcode = directory / "passcode"
    passcode.write_text("taproot addresses and psbts\n")
    given = options(stack, directory / "state", passcode)
    status, created, err = run("wallet", "create", "--scheme", "bip340", *given)
    assert status == 0, err
    return given, str(created["wallet_id"])


def test_xpub_derives_the_addresses_the_wallet_prints(taproot: tuple[list[str], str]) -> None:
    given, wallet_id = taproot
    status, exported, err = run("wallet", "xpub", wallet_id, *given)
    assert status == 0, err
    assert exported["xpub"].startswith("xpub") and exported["path"] == "m"
    depth, parent, child_number, chain_code, master = decode_xpub(exported["xpub"])
    assert (depth, parent, child_number) == (0, b"\x00" * 4, 0)
    assert exported["master_fingerprint"] == fingerprint(master).hex()
    for branch, name in ((0, "receive_descriptor"), (1, "change_descriptor")):
        body, checksum = exported[name].split("#")
        assert body == f"tr([{fingerprint(master).hex()}]{exported['xpub']}/{branch}/*)"
        assert descriptor_checksum(body) == checksum  # the BIP-380-tested checksum

    for path in ((), (0, 5), (1, 0)):
        flags = ["--path", "/".join(map(str, path))] if path else []
        status, shown, err = run("wallet", "address", wallet_id, *flags, *given)
        assert status == 0, err
        internal = derive_public(master, chain_code, path).public_key[1:]
        assert shown["internal_key"] == internal.hex()
        assert shown["taproot_address"] == key_path_address(internal, "mainnet")
        assert shown["taproot_address"].startswith("bc1p")
    status, shown, err = run("wallet", "address", wallet_id, "--network", "regtest", *given)
    assert status == 0 and shown["taproot_address"].startswith("bcrt1p"), err
    # The wallet's own address is public: no passcode asked for; a child's needs the shares.
    no_passcode = given[: given.index("--passcode-file")]
    status, bare, err = run("wallet", "address", wallet_id, *no_passcode)
    assert status == 0, err
    assert bare["taproot_address"] == key_path_address(master[1:], "mainnet")
    status, _, err = run("wallet", "address", wallet_id, "--path", "0/5", *no_passcode)
    assert status == 2 and "passcode" in err

    # The xpub of a child is what a watch-only wallet derives there.
    status, child, err = run("wallet", "xpub", wallet_id, "--path", "0/5", *given)
    assert status == 0, err
    depth, parent, child_number, _, key = decode_xpub(child["xpub"])
    assert (depth, child_number) == (2, 5)
    assert key == derive_public(master, chain_code, (0, 5)).public_key
    assert parent == fingerprint(derive_public(master, chain_code, (0,)).public_key)


def spend_psbt(inputs: list[tuple[TxOut, list[tuple[bytes, bytes]]]]) -> Psbt:
    """A PSBT spending each (output, input fields) to one output."""
    tx = Transaction(
        2,
        tuple(TxIn(OutPoint(bytes([i + 1]) * 32, i)) for i in range(len(inputs))),
        (TxOut(90_000, b"\x00\x14" + b"\x33" * 20),),
    )
    maps = tuple(
        PsbtMap("input", ((b"\x01", spent.serialize()), *fields)) for spent, fields in inputs
    )
    return Psbt(PsbtMap("global", ((b"\x00", tx.serialize()),)), tx, maps, (PsbtMap("output", ()),))


def master_of(given: list[str], wallet_id: str) -> tuple[bytes, bytes]:
    status, exported, err = run("wallet", "xpub", wallet_id, *given)
    assert status == 0, err
    _, _, _, chain_code, master = decode_xpub(exported["xpub"])
    return master, chain_code


def test_sign_psbt_signs_the_wallets_key_path_inputs(
    taproot: tuple[list[str], str], tmp_path: Path
) -> None:
    given, wallet_id = taproot
    master, chain_code = master_of(given, wallet_id)
    child = derive_public(master, chain_code, (0, 5)).public_key[1:]
    root = master[1:]
    stranger = taproot_output_key(
        bytes.fromhex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    )
    origin = fingerprint(master) + (0).to_bytes(4, "little") + (5).to_bytes(4, "little")
    psbt = spend_psbt(
        [
            # A child key, named by its origin under the wallet's fingerprint.
            (
                TxOut(40_000, p2tr_script(taproot_output_key(child).output_key)),
                [(b"\x17", child), (b"\x16" + child, b"\x00" + origin)],
            ),
            # The wallet's own key, SIGHASH_ALL.
            (
                TxOut(30_000, p2tr_script(taproot_output_key(root).output_key)),
                [(b"\x17", root), (b"\x03", SIGHASH_ALL.to_bytes(4, "little"))],
            ),
            # Somebody else's key: left alone.
            (TxOut(25_000, p2tr_script(stranger.output_key)), []),
        ]
    )
    source = tmp_path / "unsigned.psbt"
    source.write_bytes(psbt.serialize())  # binary here; Base64 below
    status, result, err = run("wallet", "sign-psbt", wallet_id, str(source), "--finalize", *given)
    assert status == 0, err
    assert result["signed_inputs"] == [0, 1]
    assert result["skipped_inputs"] == {"2": "not a key-path input of this wallet"}
    assert result["transaction"] is None  # input 2 is not final
    assert result["outputs"] == [
        {
            "address": segwit_address("bc", 0, b"\x33" * 20),  # vector-tested encoder
            "script_pubkey": "0014" + "33" * 20,
            "amount_sat": 90_000,
        }
    ]
    assert result["fee_sat"] == 40_000 + 30_000 + 25_000 - 90_000
    signed = parse_psbt(result["psbt"])
    unsigned = parse_psbt(psbt.serialize())
    spent_keys = [taproot_output_key(child).output_key, taproot_output_key(root).output_key]
    for index, output_key in enumerate(spent_keys):
        final = signed.inputs[index].get(0x08)
        assert final is not None
        signature = final[2:]  # one witness item: count, length, signature
        assert len(signature) == (64 if index == 0 else 65)
        assert schnorr_verify(unsigned.key_path_sighash(index), output_key, signature[:64])
    assert signed.inputs[2] == unsigned.inputs[2]

    # Only the wallet's inputs: the finalised transaction comes out whole.
    mine = spend_psbt(
        [(TxOut(95_000, p2tr_script(taproot_output_key(root).output_key)), [(b"\x17", root)])]
    )
    source.write_text(mine.to_base64())
    out = tmp_path / "signed.psbt"
    status, result, err = run(
        "wallet", "sign-psbt", wallet_id, str(source), "--finalize", "--out", str(out), *given
    )
    assert status == 0, err
    # Without --json: one line per output, the fee beside.
    plain = [a for a in given if a != "--json"]
    source.write_text(mine.to_base64())
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        status = main(["wallet", "sign-psbt", wallet_id, str(source), *plain])
    assert status == 0
    lines = printed.getvalue().splitlines()
    assert "outputs:" in lines and "fee_sat: 5000" in lines
    address = segwit_address("bc", 0, b"\x33" * 20)
    assert f"  - address={address}, script_pubkey=0014{'33' * 20}, amount_sat=90000" in lines
    tx = Transaction.parse(bytes.fromhex(result["transaction"]))
    (signature,) = tx.inputs[0].witness
    sighash = parse_psbt(mine.serialize()).key_path_sighash(0)
    assert schnorr_verify(sighash, taproot_output_key(root).output_key, signature)
    assert parse_psbt(base64.b64decode(out.read_text())).extract() == tx


def test_a_psbt_misdescribing_the_spent_output_is_refused(
    taproot: tuple[list[str], str], tmp_path: Path
) -> None:
    given, wallet_id = taproot
    master, _ = master_of(given, wallet_id)
    root = master[1:]
    root_output = taproot_output_key(root).output_key
    other = taproot_output_key(
        bytes.fromhex("c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5")
    )
    source = tmp_path / "psbt"
    # The wallet's internal key on an output it does not make: signing would misauthorise.
    source.write_text(
        spend_psbt([(TxOut(100_000, p2tr_script(other.output_key)), [(b"\x17", root)])]).to_base64()
    )
    status, result, err = run("wallet", "sign-psbt", wallet_id, str(source), *given)
    assert (status, result) == (2, None)
    assert "input 0: its internal key does not make the output it spends" in err
    source.write_text(spend_psbt([(TxOut(100_000, p2tr_script(other.output_key)), [])]).to_base64())
    status, _, err = run("wallet", "sign-psbt", wallet_id, str(source), *given)
    assert status == 2 and "no input of this PSBT" in err
    # Outputs paying more than the inputs spend: refused before any ceremony.
    overspent = spend_psbt([(TxOut(89_999, p2tr_script(root_output)), [(b"\x17", root)])])
    source.write_text(overspent.to_base64())
    status, _, err = run("wallet", "sign-psbt", wallet_id, str(source), *given)
    assert status == 2 and "the outputs pay more than the inputs spend" in err
    assert "round" not in err
    source.write_text("cHNidP8=")  # the magic alone
    status, _, err = run("wallet", "sign-psbt", wallet_id, str(source), *given)
    assert status == 2 and "psbt: truncated" in err


def test_ecdsa_wallet_address_is_its_ethereum_address(stack: DevStack, tmp_path: Path) -> None:
    passcode = tmp_path / "passcode"
    passcode.write_text("an ethereum address\n")
    given = options(stack, tmp_path / "state", passcode)
    status, created, err = run("wallet", "create", "--scheme", "ecdsa", *given)
    assert status == 0, err
    status, shown, err = run("wallet", "address", created["wallet_id"], *given)
    assert status == 0, err
    assert shown["ethereum_address"] == created["ethereum_address"]
    status, _, err = run("wallet", "sign-psbt", created["wallet_id"], str(passcode), *given)
    assert status == 2 and "needs a bip340 wallet" in err


def test_ed25519_wallet_address_is_its_solana_address(stack: DevStack, tmp_path: Path) -> None:
    passcode = tmp_path / "passcode"
    passcode.write_text("a solana address\n")
    given = options(stack, tmp_path / "state", passcode)
    status, created, err = run("wallet", "create", "--scheme", "ed25519", *given)
    assert status == 0, err
    status, shown, err = run("wallet", "address", created["wallet_id"], *given)
    assert status == 0, err
    assert shown["solana_address"] == created["solana_address"]
    assert b58decode(shown["solana_address"]) == bytes.fromhex(created["public_key"])
    for refused in (["address", "--path", "0/1"], ["xpub"]):
        status, _, err = run("wallet", refused[0], created["wallet_id"], *refused[1:], *given)
        assert status == 2, err


def test_the_sdk_gives_the_same_addresses_descriptors_and_xpub(stack: DevStack) -> None:
    """client.chains.bitcoin, .xpub and .descriptors on a WalletClient's wallet."""

    async def body(client: WalletClient) -> Wallet:
        return await client.create_wallet("bip340", [PartyIdentity.generate()], threshold=2)

    created = run_with_client(stack, body)
    xpub = wallet_xpub(created, "testnet")
    depth, _, _, chain_code, master = decode_xpub(xpub, version="043587cf")
    assert (depth, master) == (0, created.public_key)
    child = derive_public(master, chain_code, (0, 5)).public_key[1:]
    assert wallet_p2tr_address(created, "testnet", derivation_path=(0, 5)) == key_path_address(
        child, "testnet"
    )
    receive, change = wallet_descriptors(created, "testnet")
    assert receive.startswith(f"tr([{fingerprint(master).hex()}]{xpub}/0/*)#")
    assert change.split("#")[0].endswith("/1/*)")
