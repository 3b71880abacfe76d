"""``shardkeep policy`` and the wallet commands' ``--policy``/``--approver`` against the real stack.

An API key is made with ``policy new-key``; a BIP-340 wallet is created with
a policy file that wants its approval for raw digests; ``wallet sign``
without ``--approver`` is refused by the enclave, naming the policy; with
it, it signs. ``policy show`` prints the hash the approvals sign.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.cli.devstack import DevStack
from client.sdk.policy_files import load_policy_file
from shardkeep.policyset import policy_set_hash
from tests.cli_harness import cli_options, no_environment, shardkeep, write_raw_digest_policy
from tests.stack_harness import background_stack

__all__ = ["no_environment"]  # the fixture (tests.cli_harness)
pytestmark = pytest.mark.slow
DIGEST = "c0ffee" * 10 + "0002"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("cli-policy") / "run") as running:
        yield running


def test_sign_needs_the_approver_the_policy_file_names(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file, policy_file = tmp_path / "ops.key", tmp_path / "policy.json"
    status, entry, err = shardkeep(
        capsys, "policy", "new-key", "--name", "ops", "--kind", "p256", "--out", str(key_file)
    )
    assert status == 0, err
    assert key_file.stat().st_mode & 0o077 == 0  # the owner's alone
    write_raw_digest_policy(policy_file, "raw-with-ops", entry, tag="")
    common = cli_options(stack, tmp_path)

    status, created, err = shardkeep(
        capsys, "wallet", "create", "--scheme", "bip340", "--policy", str(policy_file), *common
    )
    assert status == 0, err
    wallet_id = created["wallet_id"]

    status, _, err = shardkeep(capsys, "wallet", "sign", wallet_id, "--digest", DIGEST, *common)
    assert status == 1 and "'raw-with-ops' matched with 0 of 1 approvals" in err
    # Without --policy the approvals sign the hash of the set the wallet's state keeps.
    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST, "--approver", str(key_file),
        *common,
    )  # fmt: skip
    assert status == 0, err
    assert len(bytes.fromhex(signed["signature"])) == 64
    status, signed, err = shardkeep(
        capsys, "wallet", "sign", wallet_id, "--digest", DIGEST, "--policy", str(policy_file),
        "--approver", str(key_file), *common,
    )  # fmt: skip
    assert status == 0, err
    assert len(bytes.fromhex(signed["signature"])) == 64

    status, shown, err = shardkeep(
        capsys, "policy", "show", str(policy_file), "--wallet", wallet_id
    )
    assert status == 0, err
    bound = dataclasses.replace(load_policy_file(policy_file), wallet_id=wallet_id, epoch=0)
    expected = policy_set_hash(bound)
    assert shown["policy_set_hash"] == expected.hex()


def test_policy_show_refuses_a_condition_the_enclave_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps({
        "version": 1,
        "authenticators": [{"name": "k", "kind": "ed25519", "public_key": "01" * 32}],
        "policies": [{"name": "typo", "effect": "allow", "condition": "activty.kind == 'X'",
                      "consensus": {"min_approvals": 1, "tag": ""}}],
    }))  # fmt: skip
    status, _, err = shardkeep(capsys, "policy", "show", str(policy_file))
    assert status == 2 and "typo: the condition names activty" in err
