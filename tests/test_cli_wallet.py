"""``shardkeep wallet ...`` in process (``client.cli.main.main``) against the real stack.

The story: create a 2-of-2 ECDSA wallet, sign a digest, back the device share
up through the host, lose the device's state, recover it into a new state
directory with the passcode, sign again; plus a bip340 taproot signature, the
listing, and the failure exits (wrong passcode, missing options, lifecycle
an export to an existing file) and the lifecycle: refresh, reshare, export.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey, PublicKey, PublicKeyXOnly

from client.cli.devstack import DevStack
from client.cli.state import load_wallet
from tests.cli_harness import no_environment, shardkeep
from tests.stack_harness import background_stack

__all__ = ["no_environment"]  # the fixture (tests.cli_harness)
pytestmark = pytest.mark.slow
DIGEST = "5e" * 32
DIGEST2 = "a7" * 32


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("cli") / "run") as running:
        yield running


def options(stack: DevStack, state: Path, passcode_file: Path) -> list[str]:
    return [
        "--host", stack.host_address, "--relay", stack.relay_address,
        "--coordinator-key", str(stack.directory / "coordinator.key"),
        "--root", str(stack.directory / "pki" / "root.pem"),
        "--state", str(state), "--passcode-file", str(passcode_file),
        "--insecure-weak-kdf", "--json",
    ]  # fmt: skip


def test_create_sign_backup_lose_recover_sign(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    passcode = tmp_path / "passcode"
    passcode.write_text("a long passphrase for the CLI\n")
    phone, new_phone = tmp_path / "phone", tmp_path / "new-phone"
    on_phone = options(stack, phone, passcode)

    status, created, err = shardkeep(
        capsys, "wallet", "create", "--allow-raw-digest", "--scheme", "ecdsa", *on_phone
    )
    assert status == 0, err
    assert "keygen: round" in err  # progress on stderr
    wallet_id, public_key = created["wallet_id"], bytes.fromhex(created["public_key"])
    assert (created["threshold"], created["parties"], created["local_parties"]) == (2, 2, [0])
    assert created["ethereum_address"].startswith("0x")
    # Only ciphertext and public data on disk.
    assert sorted(p.name for p in phone.rglob("*") if p.is_file()) == [
        "party-0.identity",
        "party-0.share",
        "wallet.json",
    ]

    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST, *on_phone
    )
    assert status == 0, err
    assert _ecdsa_recovers(signed, DIGEST) == public_key

    status, backed_up, err = shardkeep(capsys, "wallet", "backup", wallet_id, *on_phone)
    assert status == 0, err
    assert (backed_up["wallet_id"], backed_up["party"], backed_up["epoch"]) == (wallet_id, 0, 0)

    shutil.rmtree(phone)  # the phone is lost

    on_new_phone = options(stack, new_phone, passcode)
    status, recovered, err = shardkeep(
        capsys,
        "wallet",
        "recover",
        "--allow-raw-digest",
        wallet_id,
        "--public-key",
        public_key.hex(),
        *on_new_phone,
    )
    assert status == 0, err
    assert recovered["public_key"] == public_key.hex()
    assert recovered["local_parties"] == [0]
    assert recovered["ethereum_address"] == created["ethereum_address"]

    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST2, *on_new_phone
    )
    assert status == 0, err
    assert _ecdsa_recovers(signed, DIGEST2) == public_key

    # Recovering again over the restored wallet needs --force.
    status, _, err = shardkeep(
        capsys,
        "wallet",
        "recover",
        "--allow-raw-digest",
        wallet_id,
        "--public-key",
        public_key.hex(),
        *on_new_phone,
    )
    assert status == 2 and "--force" in err

    status, listed, _ = shardkeep(capsys, "wallet", "list", *on_new_phone)
    assert status == 0
    assert [w["wallet_id"] for w in listed["wallets"]] == [wallet_id]


def test_taproot_signature_and_failure_exits(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    passcode = tmp_path / "passcode"
    passcode.write_text("another passphrase")
    on_laptop = options(stack, tmp_path / "laptop", passcode)
    status, created, err = shardkeep(
        capsys,
        "wallet",
        "create",
        "--allow-raw-digest",
        "--scheme",
        "bip340",
        "--quiet",
        *on_laptop,
    )
    assert status == 0, err
    assert err == ""  # --quiet
    wallet_id = created["wallet_id"]

    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST, "--taproot", *on_laptop
    )
    assert status == 0, err
    assert signed["xonly_public_key"] == created["taproot_output_key"]
    assert PublicKeyXOnly(bytes.fromhex(signed["xonly_public_key"])).verify(
        bytes.fromhex(signed["signature"]), bytes.fromhex(DIGEST)
    )

    # A wrong passcode: exit 1, one opaque message, nothing on stdout.
    wrong = tmp_path / "wrong"
    wrong.write_text("not it")
    status, out, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST,
        *options(stack, tmp_path / "laptop", wrong),
    )  # fmt: skip
    assert (status, out) == (1, None)
    assert "cannot decrypt" in err and "not it" not in err

    # Usage errors: exit 2.
    status, _, err = shardkeep(
        capsys, "wallet", "create", "--state", str(tmp_path / "x"), "--passcode-file",
        str(passcode),
    )  # fmt: skip
    assert status == 2 and "--host" in err
    status, _, err = shardkeep(capsys, "wallet", "sign", "nope", "--digest", DIGEST, *on_laptop)
    assert status == 2 and "no wallet nope" in err and "wallet list" in err
    status, _, _ = shardkeep(capsys, "wallet", "sign", wallet_id, "--digest", "abcd", *on_laptop)
    assert status == 2
    status, _, err = shardkeep(
        capsys, "wallet", "export", wallet_id, "--out", str(passcode), *on_laptop
    )
    assert status == 2 and "exists" in err


def test_refresh_reshare_to_two_of_three_export(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    passcode = tmp_path / "passcode"
    passcode.write_text("lifecycle passphrase")
    on_desk = options(stack, tmp_path / "desk", passcode)
    status, created, err = shardkeep(
        capsys, "wallet", "create", "--allow-raw-digest", "--scheme", "bip340", *on_desk
    )
    assert status == 0, err
    wallet_id, public_key = created["wallet_id"], created["public_key"]

    status, refreshed, err = shardkeep(capsys, "wallet", "refresh", wallet_id, *on_desk)
    assert status == 0, err
    assert (refreshed["epoch"], refreshed["public_key"]) == (1, public_key)
    assert refreshed["backup_needed"] is True
    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST, *on_desk
    )
    assert status == 0, err
    assert signed["xonly_public_key"] == public_key[2:]
    assert PublicKeyXOnly(bytes.fromhex(public_key[2:])).verify(
        bytes.fromhex(signed["signature"]), bytes.fromhex(DIGEST)
    )

    # 2-of-2 -> 2-of-3 with two fresh local parties and the server share.
    status, reshared, err = shardkeep(
        capsys, "wallet", "reshare", wallet_id, "--local-parties", "2", *on_desk
    )
    assert status == 0, err
    assert (reshared["parties"], reshared["threshold"], reshared["local_parties"]) == (3, 2, [0, 1])
    assert (reshared["epoch"], reshared["public_key"]) == (2, public_key)
    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST2, "--party", "1", *on_desk
    )
    assert status == 0, err
    assert PublicKeyXOnly(bytes.fromhex(public_key[2:])).verify(
        bytes.fromhex(signed["signature"]), bytes.fromhex(DIGEST2)
    )

    # Export (owner-authorised) from a quorum of t: local party 0 and the server share.
    out = tmp_path / "exported.key"
    status, exported, err = shardkeep(
        capsys, "wallet", "export", wallet_id, "--out", str(out), *on_desk
    )
    assert status == 0, err
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)
    private_key = PrivateKey(bytes.fromhex(out.read_text().strip()))
    assert private_key.public_key.format().hex() == public_key == exported["public_key"]


def test_sign_after_an_enclave_restart_saves_the_new_pair_setup(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The enclave keeps its DKLs23 pair setups in memory only: after a restart the
    CLI's signature runs a pair setup, and the device's new side is saved with its share."""
    passcode = tmp_path / "passcode"
    passcode.write_text("a long passphrase for the CLI\n")
    state = tmp_path / "phone"
    on_phone = options(stack, state, passcode)
    status, created, err = shardkeep(
        capsys, "wallet", "create", "--allow-raw-digest", "--scheme", "ecdsa", *on_phone
    )
    assert status == 0, err
    wallet_id, public_key = created["wallet_id"], bytes.fromhex(created["public_key"])

    def saved_setup_id() -> bytes:
        loaded = load_wallet(
            state, wallet_id, passcode.read_text().rstrip("\r\n"), insecure_allow_weak_kdf=True
        )
        setup = loaded.wallet.shares[0].ecdsa
        assert setup is not None
        return setup.peer(1).setup_id

    keygen_id = saved_setup_id()
    asyncio.run(stack.restart("enclave"))
    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST, *on_phone
    )
    assert status == 0, err
    assert _ecdsa_recovers(signed, DIGEST) == public_key
    after_restart = saved_setup_id()
    assert after_restart != keygen_id  # a pair setup ran, and its result was saved
    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST2, *on_phone
    )
    assert status == 0, err
    assert _ecdsa_recovers(signed, DIGEST2) == public_key
    assert saved_setup_id() == after_restart  # the saved setup served: no new pair setup


def _ecdsa_recovers(signed: dict[str, Any], digest_hex: str) -> bytes:
    sig65 = bytes.fromhex(signed["signature"]) + bytes([signed["recovery_id"]])
    recovered = PublicKey.from_signature_and_message(sig65, bytes.fromhex(digest_hex), hasher=None)
    assert recovered.format().hex() == signed["public_key"]
    return bytes(recovered.format())
