"""``shardkeep dev up|status|down`` as a user runs them: processes of their own, printed variables.

The story: ``dev up --tls`` starts the stack in the background and prints
``export`` lines; the CLI, given only that environment, creates a wallet and
signs; a device enrolls at the coordinator with a printed code; ``dev down``
leaves no process of the stack running. Also: the supervisor killed outright
(its processes are still stopped by pid), a recycled pid that names another
process (never signalled), and a directory ``dev up`` did not make (refused).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from coincurve import PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.cli.devstate import RECORD, StackRecord, alive, ours, read_record, stop_stack
from client.cli.main import main
from client.sdk.device import Device
from client.sdk.party import PartyIdentity
from client.sdk.transport import Transport

DIGEST = "3c" * 32
TIMEOUT_S = 180


def shardkeep(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m client.cli`` as its own process, as a shell would."""
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *argv],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
    )  # fmt: skip


def exports(printed: str) -> dict[str, str]:
    """The variables of the ``export NAME=VALUE`` lines (the rest are shell comments)."""
    variables: dict[str, str] = {}
    for line in printed.splitlines():
        if line.startswith("#"):
            continue
        words = shlex.split(line)
        assert words[0] == "export" and len(words) == 2, line
        name, _, value = words[1].partition("=")
        variables[name] = value
    return variables


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SHARDKEEP_")}


def all_pids(record: StackRecord) -> list[int]:
    return [record.supervisor, *record.pids.values()]


@pytest.mark.slow
def test_dev_up_environment_creates_and_signs_then_down_leaves_no_process(tmp_path: Path) -> None:
    directory = tmp_path / "dev"
    up = shardkeep("dev", "up", "--tls", "--dir", str(directory))
    assert up.returncode == 0, up.stderr
    record = read_record(directory)
    assert record is not None
    try:
        printed = exports(up.stdout)
        assert printed == record.environment
        assert {"SHARDKEEP_HOST", "SHARDKEEP_SERVER_CA", "SHARDKEEP_API_TOKEN_FILE"} <= set(printed)
        assert "--api-token-file" in up.stdout  # the same settings, as flags
        assert "devices trust SHARDKEEP_SERVER_CA" in up.stdout
        # Only what `dev up` printed, plus the passcode, reaches the wallet commands.
        passcode = tmp_path / "passcode"
        passcode.write_text("a passphrase for the dev stack\n")
        env = clean_environment() | printed
        local = ["--passcode-file", str(passcode), "--insecure-weak-kdf", "--json", "--quiet"]
        created = shardkeep("wallet", "create", "--allow-raw-digest", *local, env=env)
        assert created.returncode == 0, created.stderr
        wallet = json.loads(created.stdout)
        assert len(list(Path(printed["SHARDKEEP_STATE"]).rglob("wallet.json"))) == 1
        signed = shardkeep(
            "wallet", "sign", wallet["wallet_id"], "--digest", DIGEST, *local, env=env
        )
        assert signed.returncode == 0, signed.stderr
        result = json.loads(signed.stdout)
        sig65 = bytes.fromhex(result["signature"]) + bytes([result["recovery_id"]])
        recovered = PublicKey.from_signature_and_message(sig65, bytes.fromhex(DIGEST), hasher=None)
        assert recovered.format().hex() == wallet["public_key"]

        # A device reaches the coordinator with the CA alone and a printed one-time code.
        assert record.enrollment_codes is not None
        code = record.enrollment_codes.read_text().split()[0]
        asyncio.run(_enroll(record, Path(printed["SHARDKEEP_SERVER_CA"]), code))

        status = shardkeep("dev", "status", "--json", "--dir", str(directory))
        assert status.returncode == 0, status.stderr
        processes = json.loads(status.stdout)["processes"]
        assert sorted(processes) == ["coordinator", "devkms", "enclave", "host", "relay"]
        assert all(p["running"] for p in processes.values())

        again = shardkeep("dev", "up", "--tls", "--dir", str(directory))
        assert again.returncode == 0 and "already running" in again.stderr
        assert read_record(directory) == record  # nothing new started
    finally:
        down = shardkeep("dev", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert [pid for pid in all_pids(record) if alive(pid)] == []
    assert not (directory / RECORD).exists()
    assert shardkeep("dev", "status", "--dir", str(directory)).returncode == 1


async def _enroll(record: StackRecord, server_ca: Path, code: str) -> None:
    async with Device(
        record.addresses["coordinator"],
        record.addresses["relay"],
        identity=PartyIdentity.generate(),
        device_key=Ed25519PrivateKey.generate(),
        owner_key=Ed25519PrivateKey.generate(),
        transport=Transport.from_files(server_ca=server_ca),
        timeout=30,
    ) as device:
        await device.enroll(code)


@pytest.mark.slow
def test_down_stops_what_a_killed_supervisor_left_behind(tmp_path: Path) -> None:
    directory = tmp_path / "dev"
    up = shardkeep("dev", "up", "--dir", str(directory))
    assert up.returncode == 0, up.stderr
    record = read_record(directory)
    assert record is not None
    os.kill(record.supervisor, signal.SIGKILL)  # no chance to stop its processes
    try:
        status = shardkeep("dev", "status", "--dir", str(directory))
        assert status.returncode == 0, status.stderr  # orphaned, but still serving
    finally:
        down = shardkeep("dev", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert [pid for pid in all_pids(record) if alive(pid)] == []


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    """A stale record whose pids now name unrelated processes: ``dev down`` leaves them alone."""
    directory = tmp_path / "dev"
    directory.mkdir()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = StackRecord(directory, bystander.pid, {"host": bystander.pid}, {}, {})
        assert not ours(bystander.pid, directory)
        assert stop_stack(stale, grace=1.0) == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_dev_up_refuses_a_directory_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "projects"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own file\n")
    assert main(["dev", "up", "--dir", str(mine)]) == 2
    assert "was not made by `shardkeep dev up`" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_status_and_down_without_a_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev", "status", "--dir", str(tmp_path)]) == 1
    assert "no dev stack is running" in capsys.readouterr().err
    assert main(["dev", "down", "--dir", str(tmp_path)]) == 0
