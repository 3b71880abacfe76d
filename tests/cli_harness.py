"""What the CLI tests share: the ``shardkeep`` command line run in this process, with none
of its settings taken from the environment, and its options for a development stack.

A test module imports the ``no_environment`` fixture by name (it is autouse there)
and lists it in its ``__all__``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from client.cli.devstack import DevStack
from client.cli.main import main

__all__ = ["no_environment", "shardkeep", "cli_options", "write_raw_digest_policy"]

# The settings the wallet commands read from SHARDKEEP_* variables.
_SETTINGS = ("HOST", "RELAY", "COORDINATOR_KEY", "ROOT", "STATE", "PASSCODE", "NEW_PASSCODE")


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _SETTINGS:
        monkeypatch.delenv(f"SHARDKEEP_{name}", raising=False)


def shardkeep(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Run the CLI; return (status, parsed JSON stdout or None, stderr)."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, json.loads(captured.out) if captured.out.strip() else None, captured.err


def cli_options(stack: DevStack, directory: Path) -> list[str]:
    """The wallet commands' options for ``stack``: its addresses, coordinator key and
    attestation root, a state directory and a passcode file under ``directory``, the
    fast key derivation tests may use, and JSON output."""
    passcode = directory / "passcode"
    passcode.write_text("a long passphrase for the CLI\n")
    return [
        "--host", stack.host_address, "--relay", stack.relay_address,
        "--coordinator-key", str(stack.directory / "coordinator.key"),
        "--root", str(stack.directory / "pki" / "root.pem"),
        "--state", str(directory / "state"), "--passcode-file", str(passcode),
        "--insecure-weak-kdf", "--json",
    ]  # fmt: skip


def write_raw_digest_policy(path: Path, name: str, approver: dict[str, Any], tag: str) -> None:
    """Write a policy file that allows raw digests (policy ``name``) with one approval by
    an authenticator of ``tag`` ("" for any), ``approver`` its only authenticator."""
    path.write_text(json.dumps({
        "version": 1,
        "authenticators": [approver],
        "policies": [{"name": name, "effect": "allow",
                      "condition": "activity.kind == 'SIGN_RAW_DIGEST'",
                      "consensus": {"min_approvals": 1, "tag": tag}}],
    }))  # fmt: skip
