"""``shardkeep wallet`` key changes that are interrupted never lose the wallet (real stack).

The attacks: a phone that loses the server's last message of a refresh, and a
device whose disk is full (ENOSPC) or whose Argon2id step is interrupted while
it saves the new shares. Each test runs the CLI in process against real
relay, host and enclave processes, with the fault injected through the SDK's
relay client (``tests.fault_harness``) or the state's writer
(``client.cli.state.StateIO``), then uses the wallet again through the CLI only.
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coincurve import PublicKey, PublicKeyXOnly

from client.cli import wallet_run as cli_wallet_run
from client.cli.devstack import DevStack
from client.cli.state import REAL_IO, StateIO, StateKeyStore, wallet_dir
from client.sdk.wallet import WalletClient
from tests.cli_harness import no_environment, shardkeep
from tests.fault_harness import Fault, FaultPlan, FaultyRelay
from tests.stack_harness import background_stack

__all__ = ["no_environment"]  # the fixture (tests.cli_harness)
pytestmark = pytest.mark.slow
DIGEST = "3c" * 32


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("resume") / "run") as running:
        yield running


def options(stack: DevStack, state: Path, passcode_file: Path) -> list[str]:
    return [
        "--host", stack.host_address, "--relay", stack.relay_address,
        "--coordinator-key", str(stack.directory / "coordinator.key"),
        "--root", str(stack.directory / "pki" / "root.pem"),
        "--state", str(state), "--passcode-file", str(passcode_file),
        "--insecure-weak-kdf", "--json", "--timeout", "8",
    ]  # fmt: skip


def with_faulty_relay(monkeypatch: pytest.MonkeyPatch, stack: DevStack, plan: FaultPlan) -> None:
    """The CLI's SDK client talks to the relay through the fault-injecting shim."""
    real_client = cli_wallet_run._Context.client

    def client(self: cli_wallet_run._Context) -> WalletClient:
        honest = real_client(self)
        return WalletClient(
            self.args.host, self.args.relay, honest._coordinator,
            root_certificate=honest._root, timeout=self.args.timeout,
            relay=FaultyRelay.to(stack.relay_address, plan, honest._coordinator),
        )  # fmt: skip

    monkeypatch.setattr(cli_wallet_run._Context, "client", client)


def with_state_io(monkeypatch: pytest.MonkeyPatch, io: StateIO) -> None:
    """The CLI's key store writes through ``io``."""
    real_store = cli_wallet_run._Context.store

    def store(self: cli_wallet_run._Context) -> StateKeyStore:
        honest = real_store(self)
        return StateKeyStore(
            honest.state, honest.passcode, honest.params,
            insecure_allow_weak_kdf=honest.insecure_allow_weak_kdf, io=io,
        )  # fmt: skip

    monkeypatch.setattr(cli_wallet_run._Context, "store", store)


def verifies(scheme: str, signed: dict[str, Any], public_key: str) -> bool:
    digest = bytes.fromhex(DIGEST)
    if scheme == "bip340":
        key = PublicKeyXOnly(bytes.fromhex(signed["xonly_public_key"]))
        return bool(key.verify(bytes.fromhex(signed["signature"]), digest))
    sig65 = bytes.fromhex(signed["signature"]) + bytes([signed["recovery_id"]])
    recovered = PublicKey.from_signature_and_message(sig65, digest, hasher=None)
    return bool(recovered.format().hex() == public_key)


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa"])
def test_refresh_last_server_message_lost_cli_resumes(
    stack: DevStack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    scheme: str,
) -> None:
    """Attack: the phone loses the server's last message of a refresh (its certificate
    signature); the host commits the new epoch. Before, the phone had no new share and
    the server refused the old one for ever. Now the refresh fails with a typed error,
    the new share is pending on disk, and ``wallet resume`` (bip340) or the next
    ``wallet sign`` (ecdsa) fetches the certificate, promotes the share and signs."""
    passcode = tmp_path / "passcode"
    passcode.write_text("resume passphrase")
    state = tmp_path / "phone"
    on_phone = options(stack, state, passcode)
    status, created, err = shardkeep(
        capsys, "wallet", "create", "--allow-raw-digest", "--scheme", scheme, *on_phone
    )
    assert status == 0, err
    wallet_id = created["wallet_id"]
    description = json.loads((wallet_dir(state, wallet_id) / "wallet.json").read_text())
    phone_id = description["parties"][0]["party_id"]

    rounds = 3 if scheme == "bip340" else 4  # the last round: certificate signatures
    plan = FaultPlan(Fault("drop", (rounds, "server", "device0")), stack.kill, delay_s=0)
    plan.roles = {phone_id: "device0"}
    with monkeypatch.context() as patched:
        with_faulty_relay(patched, stack, plan)
        status, out, err = shardkeep(capsys, "wallet", "refresh", wallet_id, *on_phone)
    assert plan.fired
    assert (status, out) == (1, None)
    assert "interrupted after the new shares were saved" in err
    assert (wallet_dir(state, wallet_id) / "pending.json").exists()

    if scheme == "bip340":
        status, resumed, err = shardkeep(capsys, "wallet", "resume", wallet_id, *on_phone)
        assert status == 0, err
        assert resumed == {"wallet_id": wallet_id, "key_change": "committed", "epoch": 1}
    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST, *on_phone
    )
    assert status == 0, err
    assert verifies(scheme, signed, created["public_key"])
    assert not (wallet_dir(state, wallet_id) / "pending.json").exists()
    status, listed, _ = shardkeep(capsys, "wallet", "list", *on_phone)
    assert [w["epoch"] for w in listed["wallets"]] == [1]


def test_refresh_save_fails_cli_keeps_the_old_share(
    stack: DevStack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Attack: the disk is full (ENOSPC) while the CLI saves a refresh's new shares. Before,
    the old share was gone and the server refused it. Now the device never agrees to the
    new epoch, nothing is pending, and the wallet signs at the old epoch. (An interrupt in
    the Argon2id step is tests/test_cli_state_crash.py's: in process it would stop pytest.)"""
    passcode = tmp_path / "passcode"
    passcode.write_text("full disk passphrase")
    state = tmp_path / "laptop"
    on_laptop = options(stack, state, passcode)
    status, created, err = shardkeep(
        capsys, "wallet", "create", "--allow-raw-digest", "--scheme", "bip340", *on_laptop
    )
    assert status == 0, err
    wallet_id = created["wallet_id"]

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as patched:
        with_state_io(patched, StateIO(encrypt=REAL_IO.encrypt, write=full))
        status, out, err = shardkeep(capsys, "wallet", "refresh", wallet_id, *on_laptop)
    assert (status, out) == (1, None)
    assert "saving the new shares failed" in err and "old ones are intact" in err
    assert not (wallet_dir(state, wallet_id) / "pending.json").exists()
    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST, *on_laptop
    )
    assert status == 0, err
    assert verifies("bip340", signed, created["public_key"])
    status, listed, _ = shardkeep(capsys, "wallet", "list", *on_laptop)
    assert [w["epoch"] for w in listed["wallets"]] == [0]


def test_refresh_without_certificate_is_discarded_after_its_deadline(
    stack: DevStack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server never gets the phone's agreement, so the enclave never signs and nobody
    can hold a certificate: the host drops the epoch at once. The phone saved its new
    share as pending; ``wallet resume`` keeps it while the ceremony could still be
    stored (undecided), then discards it after the deadline; the old epoch signs
    throughout."""
    passcode = tmp_path / "passcode"
    passcode.write_text("deadline passphrase")
    state = tmp_path / "phone"
    on_phone = options(stack, state, passcode)
    status, created, err = shardkeep(
        capsys, "wallet", "create", "--allow-raw-digest", "--scheme", "bip340", *on_phone
    )
    assert status == 0, err
    wallet_id = created["wallet_id"]
    description = json.loads((wallet_dir(state, wallet_id) / "wallet.json").read_text())
    plan = FaultPlan(Fault("drop", (2, "device0", "server")), stack.kill, delay_s=0)
    plan.roles = {description["parties"][0]["party_id"]: "device0"}
    with monkeypatch.context() as patched:
        with_faulty_relay(patched, stack, plan)
        status, _, err = shardkeep(capsys, "wallet", "refresh", wallet_id, *on_phone)
    assert plan.fired and status == 1
    assert "interrupted after the new shares were saved" in err
    pending = json.loads((wallet_dir(state, wallet_id) / "pending.json").read_text())
    deadline = pending["change"]["deadline_unix"]

    status, resumed, err = shardkeep(capsys, "wallet", "resume", wallet_id, *on_phone)
    assert status == 0, err
    assert resumed["key_change"] == "undecided" and resumed["epoch"] == 0
    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST, *on_phone
    )
    assert status == 0 and verifies("bip340", signed, created["public_key"]), err

    time.sleep(max(0.0, deadline - time.time() + 1))
    status, resumed, err = shardkeep(capsys, "wallet", "resume", wallet_id, *on_phone)
    assert status == 0, err
    assert resumed == {"wallet_id": wallet_id, "key_change": "discarded", "epoch": 0}
    assert sorted(p.name for p in wallet_dir(state, wallet_id).iterdir()) == [
        "epoch-0",
        "wallet.json",
    ]
    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST, *on_phone
    )
    assert status == 0 and verifies("bip340", signed, created["public_key"]), err
    status, refreshed, err = shardkeep(capsys, "wallet", "refresh", wallet_id, *on_phone)
    assert status == 0 and refreshed["epoch"] == 1, err  # the host holds nothing pending


def test_an_interrupted_policy_change_resumes_and_the_cli_keeps_the_new_set(
    stack: DevStack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``wallet refresh --new-policy`` loses the server's last message; ``wallet resume``
    commits it, and the wallet's state keeps the new set: a key only the new set names
    approves ``wallet sign`` without any --policy."""
    passcode = tmp_path / "passcode"
    passcode.write_text("resume passphrase")
    state = tmp_path / "phone"
    on_phone = options(stack, state, passcode)
    keys = {name: tmp_path / f"{name}.key" for name in ("old", "new")}
    entries = {}
    for name, key in keys.items():
        status, entries[name], err = shardkeep(
            capsys, "policy", "new-key", "--name", name, "--tag", "owner", "--out", str(key)
        )
        assert status == 0, err
    for version, name in ((1, "old"), (2, "new")):
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "version": version,
            "authenticators": [entries[name]],
            "policies": [{"name": "owner", "effect": "allow",
                          "condition": "activity.kind == 'SIGN_RAW_DIGEST' || "
                                       "activity.kind == 'SET_POLICY'",
                          "consensus": {"min_approvals": 1, "tag": "owner"}}],
        }))  # fmt: skip
    status, created, err = shardkeep(
        capsys, "wallet", "create", "--scheme", "bip340", "--policy",
        str(tmp_path / "old.json"), *on_phone,
    )  # fmt: skip
    assert status == 0, err
    wallet_id = created["wallet_id"]
    description = json.loads((wallet_dir(state, wallet_id) / "wallet.json").read_text())
    plan = FaultPlan(Fault("drop", (3, "server", "device0")), stack.kill, delay_s=0)
    plan.roles = {description["parties"][0]["party_id"]: "device0"}
    with monkeypatch.context() as patched:
        with_faulty_relay(patched, stack, plan)
        status, _, err = shardkeep(
            capsys, "wallet", "refresh", wallet_id, "--new-policy", str(tmp_path / "new.json"),
            "--approver", str(keys["old"]), *on_phone,
        )  # fmt: skip
    assert plan.fired and status == 1
    assert "interrupted after the new shares were saved" in err

    status, resumed, err = shardkeep(capsys, "wallet", "resume", wallet_id, *on_phone)
    assert status == 0, err
    assert resumed == {"wallet_id": wallet_id, "key_change": "committed", "epoch": 1}
    sign = ["wallet", "sign", wallet_id, "--digest", DIGEST, "--approver"]
    status, signed, err = shardkeep(capsys, *sign, str(keys["new"]), *on_phone)
    assert status == 0, err
    assert verifies("bip340", signed, created["public_key"])
    status, _, err = shardkeep(capsys, *sign, str(keys["old"]), *on_phone)
    assert status == 1 and "approval by 'old' refused" in err
