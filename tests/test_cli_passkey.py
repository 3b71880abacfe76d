"""A software passkey from the CLI against the real stack, each command its own process.

``policy new-passkey`` writes a passkey file (mode 0600) and prints its policy
entry (webauthn-es256 with its RP id and origin); a BIP-340 wallet is
created with a policy file that wants the passkey's approval for raw
digests; ``wallet sign --approver PASSKEY`` signs, twice, from two
processes: the file keeps the WebAuthn signature counter, so the second
assertion counts higher. The attack: a copy of the passkey file taken
before the second signature (a clone) approves with a counter the enclave
already saw, and is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.cli.devstack import DevStack
from tests.cli_harness import cli_options, write_raw_digest_policy
from tests.stack_harness import background_stack

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DIGEST = "c0ffee" * 10 + "0003"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("cli-passkey") / "run") as running:
        yield running


def shardkeep(*argv: str) -> tuple[int, Any, str]:
    """Run the CLI in a process of its own; its exit status, JSON output and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDKEEP_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", *argv],
        capture_output=True, text=True, timeout=300, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr


def test_a_passkey_file_approves_from_the_cli_and_its_clone_is_refused(
    stack: DevStack, tmp_path: Path
) -> None:
    passkey, policy_file = tmp_path / "phone.passkey", tmp_path / "policy.json"
    status, entry, err = shardkeep(
        "policy", "new-passkey", "--name", "phone", "--rp-id", "wallet.example",
        "--origin", "https://wallet.example", "--tag", "owner", "--out", str(passkey),
    )  # fmt: skip
    assert status == 0, err
    assert passkey.stat().st_mode & 0o077 == 0  # the owner's alone
    assert (entry["kind"], entry["rp_id"], entry["origin"], entry["tags"]) == (
        "webauthn-es256", "wallet.example", "https://wallet.example", ["owner"],
    )  # fmt: skip
    assert len(bytes.fromhex(entry["public_key"])) == 33
    write_raw_digest_policy(policy_file, "raw-with-phone", entry, tag="owner")
    common = cli_options(stack, tmp_path)
    status, created, err = shardkeep(
        "wallet", "create", "--scheme", "bip340", "--policy", str(policy_file), *common
    )
    assert status == 0, err
    sign = ["wallet", "sign", created["wallet_id"], "--digest", DIGEST,
            "--policy", str(policy_file), "--approver", str(passkey), *common]  # fmt: skip

    status, signed, err = shardkeep(*sign)
    assert status == 0, err
    assert len(bytes.fromhex(signed["signature"])) == 64
    clone = tmp_path / "clone.passkey"
    shutil.copy(passkey, clone)  # counter 1, as the enclave last saw it
    status, _, err = shardkeep(*sign)  # a new process: the counter came from the file
    assert status == 0, err
    assert json.loads(passkey.read_text())["sign_count"] == 2

    status, _, err = shardkeep(*sign[: -len(common) - 1], str(clone), *common)
    assert status == 1
    assert "approval by 'phone' refused" in err and "counter did not increase" in err


def test_a_bad_passkey_file_is_refused_before_any_ceremony(tmp_path: Path) -> None:
    broken = tmp_path / "broken.passkey"
    broken.write_text(json.dumps({"name": "phone", "kind": "webauthn-es256"}))
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps({
        "version": 1,
        "authenticators": [{"name": "k", "kind": "ed25519", "public_key": "01" * 32}],
        "policies": [{"name": "raw", "effect": "allow", "condition": "true",
                      "consensus": {"min_approvals": 1, "tag": ""}}],
    }))  # fmt: skip
    status, _, err = shardkeep(
        "wallet", "sign", "wallet-x", "--digest", DIGEST, "--policy", str(policy_file),
        "--approver", str(broken), "--state", str(tmp_path / "state"), "--json",
    )  # fmt: skip
    assert status == 2, err
    assert "is not a passkey file" in err
