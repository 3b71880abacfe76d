"""`shardkeep wallet backup --all` against the real stack: every local party of every wallet
(or of one), each backup recoverable; a damaged wallet is skipped and said so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.cli.devstack import DevStack
from client.cli.state import wallet_dir
from tests.cli_harness import no_environment, shardkeep
from tests.stack_harness import background_stack

__all__ = ["no_environment"]  # the fixture (tests.cli_harness)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("cli-backup") / "run") as running:
        yield running


def test_backup_all_backs_up_every_local_party(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    passcode = tmp_path / "passcode"
    passcode.write_text("every party backed up\n")
    connection = [
        "--host", stack.host_address, "--relay", stack.relay_address,
        "--coordinator-key", str(stack.directory / "coordinator.key"),
        "--root", str(stack.directory / "pki" / "root.pem"),
    ]  # fmt: skip
    local = ["--passcode-file", str(passcode), "--insecure-weak-kdf", "--json"]
    state = ["--state", str(tmp_path / "desk")]
    created = {}
    for count in ("1", "2"):
        status, wallet, err = shardkeep(
            capsys, "wallet", "create", "--scheme", "bip340", "--local-parties", count,
            *connection, *state, *local,
        )  # fmt: skip
        assert status == 0, err
        created[wallet["wallet_id"]] = wallet
    one, two = created

    # One wallet with two local parties: --party or --all is needed, --all takes both.
    status, _, err = shardkeep(capsys, "wallet", "backup", two, *connection, *state, *local)
    assert status == 2 and "--all" in err
    status, result, err = shardkeep(
        capsys, "wallet", "backup", two, "--all", *connection, *state, *local
    )
    assert status == 0, err
    assert [(b["wallet_id"], b["party"]) for b in result["backups"]] == [(two, 0), (two, 1)]

    # Every wallet; a damaged one is skipped and named.
    status, broken, err = shardkeep(
        capsys, "wallet", "create", "--scheme", "bip340", *connection, *state, *local
    )
    assert status == 0, err
    next(wallet_dir(tmp_path / "desk", broken["wallet_id"]).rglob("party-0.share")).unlink()
    status, result, err = shardkeep(
        capsys, "wallet", "backup", "--all", *connection, *state, *local
    )
    assert status == 0, err
    assert sorted((b["wallet_id"], b["party"]) for b in result["backups"]) == sorted(
        [(one, 0), (two, 0), (two, 1)]
    )
    assert result["skipped_damaged"] == [f"{broken['wallet_id']} (party 0's share file is missing)"]

    # Each backup restores its party on a new machine.
    backup_of_party_1 = next(
        b for b in result["backups"] if (b["wallet_id"], b["party"]) == (two, 1)
    )
    status, recovered, err = shardkeep(
        capsys, "wallet", "recover", two, "--public-key", created[two]["public_key"],
        "--party", "1", "--backup-id", backup_of_party_1["backup_id"],
        *connection, "--state", str(tmp_path / "new-desk"), *local,
    )  # fmt: skip
    assert status == 0, err
    assert recovered["local_parties"] == [1]
